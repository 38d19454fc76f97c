"""Pure Vault rendering: policy HCL (parsed with python-hcl2), SQL statements, the plan's checks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from components.config import build_stack_config, read_stack_file, stack_file
from components.errors import ConfigError, ManifestError
from components.manifest.loader import load_manifests
from components.manifest.models import DatabasePrivilege
from components.platform_model import Platform, build_platform
from components.render.vault import (
    ADMIN_CONNECTION_LIMIT,
    ADMIN_MAX_OPEN_CONNECTIONS,
    MYSQL_USERNAME_TEMPLATE,
    POSTGRES_USERNAME_TEMPLATE,
    UnknownPrivilege,
    UnsafeIdentifier,
    mysql_statements,
    path_matches,
    pattern_reaches,
    plan_vault,
    postgres_statements,
    quote_mysql,
    quote_pg,
    render_policy,
    vault_artifacts,
)
from tests.conftest import ROOT

TD = "dev.agentpassport.internal"
ADMINS = {"incidents": {"username": "vault_incidents"}, "billing": {"username": "vault_billing"}}


# --------------------------------------------------------------------------- helpers


def agent(name: str, *grants: dict[str, Any], suspended: bool = False, **identity: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "platform": {"kubernetes": {"namespace": "agents", "serviceAccount": name}},
        "grants": list(grants),
    }
    if identity:
        spec["identity"] = identity
    if suspended:
        spec |= {"suspended": True, "suspendedReason": "INC-1234"}
    return {"apiVersion": "passport.agentpassport.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": name, "team": "t", "owner": "oncall@acme-corp.net"}, "spec": spec}


def db(database: str, *allow: str, cluster: str = "main", engine: str = "postgres",
       tables: list[str] | None = None, schema: str = "public", **ttl: str) -> dict[str, Any]:
    privilege: dict[str, Any] = {"allow": list(allow or ("select",)), "schema": schema}
    if tables:
        privilege["tables"] = tables
    return {"database": {"cluster": cluster, "engine": engine, "database": database,
                         "privileges": [privilege], **ttl}}


def vault_grant(path: str, *caps: str) -> dict[str, Any]:
    return {"vault": {"path": path, "capabilities": list(caps or ("read",))}}


def dev_values(**vault_changes: Any) -> dict[str, Any]:
    """The dev stack's config values, its database cluster given per-database admins."""
    values, _, _ = read_stack_file(stack_file("dev", ROOT))
    values = copy.deepcopy(values)
    values["vault"]["databases"]["main"]["admins"] = copy.deepcopy(ADMINS)
    for key, value in vault_changes.items():
        values["vault"][key] = value
    return values


def make_platform(tmp_path: Path, agents: list[dict[str, Any]], values: dict[str, Any] | None = None) -> Platform:
    folder = tmp_path / "agents"
    folder.mkdir(parents=True, exist_ok=True)
    for a in agents:
        (folder / f"{a['metadata']['name']}.yaml").write_text(yaml.safe_dump(a, sort_keys=False))
    cfg = build_stack_config(values or dev_values(), "stacks/Pulumi.dev.yaml")
    return build_platform(cfg, load_manifests([folder]), "dev", "stacks/Pulumi.dev.yaml")


def repo_platform(values: dict[str, Any] | None = None) -> Platform:
    cfg = build_stack_config(values or dev_values(), "stacks/Pulumi.dev.yaml")
    return build_platform(cfg, load_manifests([ROOT / "agents"]), "dev", "stacks/Pulumi.dev.yaml")


def cert_ready_agents(folder: Path) -> Path:
    """A copy of the repository's manifests under ``folder`` where every agent has a DNS name of
    its own (cert auth names the Vault entity after the SVID's CN, SPIRE's first DNS name)."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in sorted((ROOT / "agents").glob("*.yaml")):
        docs = list(yaml.safe_load_all(source.read_text()))
        for doc in docs:
            if doc and doc.get("kind") == "Agent":
                name = doc["metadata"]["name"]
                doc["spec"].setdefault("identity", {}).setdefault("dnsNames", [f"{name}.agents.svc"])
        (folder / source.name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return folder


def cert_platform(folder: Path, values: dict[str, Any] | None = None) -> Platform:
    """The repository's agents (with DNS names) on the dev stack with cert auth."""
    cfg = build_stack_config(values or dev_values(auth="cert"), "stacks/Pulumi.dev.yaml")
    return build_platform(cfg, load_manifests([cert_ready_agents(folder)]), "dev", "stacks/Pulumi.dev.yaml")


def policy_paths(hcl: str) -> dict[str, list[str]]:
    """Parse a policy with python-hcl2: {path: capabilities}."""
    parsed = {k: v for k, v in hcl2.loads(hcl).items() if not k.startswith("__")}
    assert set(parsed) <= {"path"}, "a policy holds path blocks only"
    out: dict[str, list[str]] = {}
    for block in parsed.get("path", []):
        for key, body in block.items():
            assert {k for k in body if not k.startswith("__")} == {"capabilities"}
            out[key.strip('"')] = [c.strip('"') for c in body["capabilities"]]
    return out


# --------------------------------------------------------------------------- policies


def test_policy_holds_exactly_the_agents_credentials_and_grants(tmp_path: Path) -> None:
    platform = make_platform(tmp_path, [
        agent("alpha", db("incidents", tables=["alerts"]), vault_grant("secret/data/alpha/*", "read", "list")),
        agent("beta", db("billing", "select", "insert")),
    ])
    plan = plan_vault(platform)
    policies = {a.agent: policy_paths(a.policy_hcl) for a in plan.agents}
    assert policies == {
        "alpha": {"db-main/creds/alpha-main-incidents": ["read"], "secret/data/alpha/*": ["read", "list"]},
        "beta": {"db-main/creds/beta-main-billing": ["read"]},
    }
    assert {a.agent: a.policy_name for a in plan.agents} == {"alpha": "agent-alpha", "beta": "agent-beta"}


def test_policy_merges_repeated_paths_in_canonical_order(tmp_path: Path) -> None:
    platform = make_platform(tmp_path, [agent(
        "alpha", vault_grant("kv/data/x", "list", "read"), vault_grant("kv/data/x", "update", "create"))])
    (plan,) = plan_vault(platform).agents
    assert policy_paths(plan.policy_hcl) == {"kv/data/x": ["create", "read", "update", "list"]}
    assert plan.policy_hcl.count('path "kv/data/x"') == 1


def test_repository_policies_parse_and_are_deterministic() -> None:
    first, second = plan_vault(repo_platform()), plan_vault(repo_platform())
    assert [a.policy_hcl for a in first.agents] == [a.policy_hcl for a in second.agents]
    by_agent = {a.agent: policy_paths(a.policy_hcl) for a in first.agents}
    assert by_agent == {
        "agent-cortex": {"db-main/creds/agent-cortex-main-incidents": ["read"]},
        "invoice-processor": {"db-main/creds/invoice-processor-main-billing": ["read"]},
        "ledger-sync": {"secret/data/finance/ledger-sync": ["read"]},
        "report-summarizer": {},
    }
    cortex = next(a for a in first.agents if a.agent == "agent-cortex").policy_hcl
    assert cortex.startswith(f"# Vault policy of agent agent-cortex (spiffe://{TD}/ns/agents/sa/agent-cortex).")


@pytest.mark.parametrize("path", ['a"b', "a b", "a/${x}", "a\nb"])
def test_policy_refuses_paths_it_cannot_quote(path: str) -> None:
    with pytest.raises(ValueError, match="policy path"):
        render_policy("a", "spiffe://td/a", "a.yaml", {path: ["read"]})


@pytest.mark.parametrize("cap", ["sudo", "deny", "root"])
def test_policy_refuses_capabilities_outside_the_vocabulary(cap: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        render_policy("a", "spiffe://td/a", "a.yaml", {"kv/data/a": ["read", cap]})


# --------------------------------------------------------------------------- globs


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("secret/data/x", "secret/data/x", True),
    ("secret/data/x", "secret/data/xy", False),
    ("secret/data/x*", "secret/data/xy/z", True),
    ("secret/+/x", "secret/a/x", True),
    ("secret/+/x", "secret/a/b/x", False),
    ("db*", "db-main/creds/a-main-incidents", True),
    ("+/creds/*", "db-main/creds/a-main-incidents", True),
    ("db-main/creds/b*", "db-main/creds/a-main-incidents", False),
])
def test_path_matches(pattern: str, path: str, expected: bool) -> None:
    assert path_matches(pattern, path) is expected


@pytest.mark.parametrize(("pattern", "prefix", "expected"), [
    ("s*", "sys/", True),
    ("a*", "auth/", True),
    ("+/x", "sys/", True),
    ("+", "sys/", False),
    ("secret/*", "sys/", False),
    ("secret/data/*", "secret/", True),
    ("p*", "pki", True),
])
def test_pattern_reaches(pattern: str, prefix: str, expected: bool) -> None:
    assert pattern_reaches(pattern, prefix) is expected


@pytest.mark.parametrize(("path", "reason"), [
    ("db*", "matches db-main/creds/beta-main-billing, the database credentials of agent 'beta'"),
    ("db-*", "matches db-main/creds/beta-main-billing"),
    ("s*", "'s*' is a glob that reaches 'sys/'"),
    ("a*", "reaches 'auth/'"),
    ("i*", "reaches 'identity/'"),
])
def test_vault_grant_globs_cannot_reach_other_agents_or_managed_paths(
    tmp_path: Path, path: str, reason: str
) -> None:
    with pytest.raises(ManifestError) as info:
        make_platform_and_plan(tmp_path, [agent("alpha", vault_grant(path)), agent("beta", db("billing"))])
    (problem,) = info.value.problems
    assert problem.file.endswith("agents/alpha.yaml")
    assert problem.field == "spec.grants[0].vault.path"
    assert problem.line is not None
    assert reason in problem.message


def make_platform_and_plan(tmp_path: Path, agents: list[dict[str, Any]], values: dict[str, Any] | None = None) -> None:
    plan_vault(make_platform(tmp_path, agents, values))


def test_suspended_agents_credentials_stay_protected(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="credentials of agent 'beta'"):
        make_platform_and_plan(tmp_path, [
            agent("alpha", vault_grant("db*")), agent("beta", db("billing"), suspended=True)])


# --------------------------------------------------------------------------- plan checks


def test_suspended_agents_get_no_role_policy_or_database_role(tmp_path: Path) -> None:
    platform = make_platform(tmp_path, [
        agent("alpha", db("incidents")), agent("beta", db("billing"), suspended=True)])
    plan = plan_vault(platform)
    assert [a.agent for a in plan.agents] == ["alpha"]
    assert [r.name for r in plan.database_roles] == ["alpha-main-incidents"]
    # the suspended agent's connection stays (Vault alone knows its rotated admin password)
    assert {(c.name, c.allowed_roles) for c in plan.connections} == {
        ("billing", ()), ("incidents", ("alpha-main-incidents",))}
    paths = sorted(a.path for a in vault_artifacts(platform))
    assert paths == ["vault/policies/alpha.hcl", "vault/sql/admin-main-billing.sql",
                     "vault/sql/admin-main-incidents.sql", "vault/sql/alpha-main-incidents.sql"]


def test_database_role_ttls_come_from_the_grant(tmp_path: Path) -> None:
    platform = make_platform(tmp_path, [
        agent("alpha", db("incidents")), agent("beta", db("billing", ttl="2m", maxTtl="7m"))])
    roles = {r.name: (r.default_ttl, r.max_ttl) for r in plan_vault(platform).database_roles}
    assert roles == {"alpha-main-incidents": (300, 600), "beta-main-billing": (120, 420)}


def test_grant_longer_than_the_mount_allows_is_refused(tmp_path: Path) -> None:
    values = dev_values()
    values["vault"]["databases"]["main"] |= {"defaultTtl": "2m", "maxLeaseTtl": "5m"}
    with pytest.raises(ManifestError) as info:
        make_platform_and_plan(tmp_path, [agent("alpha", db("incidents", maxTtl="10m"))], values)
    (problem,) = info.value.problems
    assert problem.field == "spec.grants[0].database.maxTtl"
    assert "above the maxLeaseTtl (5m) of cluster 'main'" in problem.message


def test_colliding_database_role_names_are_refused(tmp_path: Path) -> None:
    # "a-main" + "main" + "x"  and  "a" + "main" + "main_x"  both give a-main-main-x
    with pytest.raises(ManifestError) as info:
        make_platform_and_plan(tmp_path, [agent("a-main", db("x")), agent("a", db("main_x"))])
    (problem,) = info.value.problems
    assert "'a-main-main-x' on cluster 'main' is also produced by agent" in problem.message


def test_two_grants_on_one_database_must_be_merged(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="merge both into one grant"):
        make_platform_and_plan(tmp_path, [agent("a", db("x", "select"), db("x", "insert"))])


def test_shared_postgres_admin_with_root_rotation_is_refused(tmp_path: Path) -> None:
    values = dev_values()
    del values["vault"]["databases"]["main"]["admins"]
    with pytest.raises(ConfigError) as info:
        make_platform_and_plan(tmp_path, [agent("a", db("incidents")), agent("b", db("billing"))], values)
    (problem,) = info.value.problems
    assert problem.file == "stacks/Pulumi.dev.yaml"
    assert problem.field == "agent-passport:vault.databases.main.admins"
    assert "share the admin user 'vault_admin'" in problem.message
    values["vault"]["databases"]["main"]["rotateRoot"] = False  # then sharing is harmless
    plan_vault(make_platform(tmp_path, [agent("a", db("incidents")), agent("b", db("billing"))], values))


def test_connections_per_postgres_database_with_their_admins(tmp_path: Path) -> None:
    plan = plan_vault(make_platform(tmp_path, [agent("a", db("incidents")), agent("b", db("billing"))]))
    conns = {c.name: c for c in plan.connections}
    assert set(conns) == {"billing", "incidents"}
    inc = conns["incidents"]
    assert inc.username == "vault_incidents"
    assert inc.password_secret == "dbMainPassword"
    assert inc.password_field == "agent-passport:vault.databases.main.passwordSecret"
    assert inc.connection_url == "postgresql://{{username}}:{{password}}@127.0.0.1:15432/incidents?sslmode=disable"
    assert inc.root_rotation_statements == ("ALTER ROLE \"{{username}}\" WITH PASSWORD '{{password}}';",)
    assert inc.allowed_roles == ("a-main-incidents",)
    assert [(m.path, m.default_lease_ttl, m.max_lease_ttl) for m in plan.mounts] == [("db-main", 300, 600)]


def test_mysql_cluster_has_one_connection_and_refuses_truncate(tmp_path: Path) -> None:
    values = dev_values()
    values["vault"]["databases"]["shop"] = {
        "engine": "mysql", "host": "mysql.internal", "port": 3306, "database": "mysql",
        "username": "vault_admin", "passwordSecret": "dbShopPassword"}
    plan = plan_vault(make_platform(tmp_path, [
        agent("a", db("orders", cluster="shop", engine="mysql")),
        agent("b", db("carts", "select", "delete", cluster="shop", engine="mysql", tables=["cart"]))], values))
    (conn,) = [c for c in plan.connections if c.cluster == "shop"]
    assert (conn.name, conn.allowed_roles) == ("server", ("a-shop-orders", "b-shop-carts"))
    assert conn.connection_url == "{{username}}:{{password}}@tcp(mysql.internal:3306)/?tls=true"
    assert conn.username_template == MYSQL_USERNAME_TEMPLATE
    with pytest.raises(ManifestError) as info:
        make_platform_and_plan(tmp_path / "x", [
            agent("c", db("orders", "truncate", cluster="shop", engine="mysql"))], values)
    (problem,) = info.value.problems
    assert problem.field == "spec.grants[0].database.privileges[0].allow"
    assert "TRUNCATE needs DROP" in problem.message


# --------------------------------------------------------------------------- SQL


def _priv(allow: list[str], tables: list[str] | None = None, schema: str = "public") -> DatabasePrivilege:
    """Bypass the model's validation, as a hostile or future caller could."""
    return DatabasePrivilege.model_construct(allow=allow, schema_=schema, tables=tables or [])  # type: ignore[arg-type]


def test_postgres_statements() -> None:
    s = postgres_statements("incidents", [_priv(["select"], ["incidents", "alerts"])])
    assert s.creation == (
        "CREATE ROLE \"{{name}}\" WITH LOGIN NOINHERIT PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        'GRANT CONNECT ON DATABASE "incidents" TO "{{name}}";',
        'GRANT USAGE ON SCHEMA "public" TO "{{name}}";',
        'GRANT SELECT ON TABLE "public"."incidents", "public"."alerts" TO "{{name}}";',
    )
    assert s.revocation == (
        'REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA "public" FROM "{{name}}";',
        'REVOKE USAGE ON SCHEMA "public" FROM "{{name}}";',
        'REVOKE CONNECT ON DATABASE "incidents" FROM "{{name}}";',
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';",
        'DROP ROLE IF EXISTS "{{name}}";',
    )


def test_postgres_whole_schema_and_several_privileges() -> None:
    s = postgres_statements("billing", [_priv(["select", "insert", "update"], schema="billing")],
                            terminate_sessions=False)
    assert 'GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA "billing" TO "{{name}}";' in s.creation
    assert not any("pg_terminate_backend" in r for r in s.revocation)


def test_mysql_statements() -> None:
    s = mysql_statements("shop", [_priv(["select", "delete"], ["cart"]), _priv(["select"])])
    assert s.creation == (
        "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';",
        "GRANT SELECT, DELETE ON `shop`.`cart` TO '{{name}}'@'%';",
        "GRANT SELECT ON `shop`.* TO '{{name}}'@'%';",
    )
    assert s.revocation == ("REVOKE ALL PRIVILEGES, GRANT OPTION FROM '{{name}}'@'%';",
                            "DROP USER IF EXISTS '{{name}}'@'%';")


@pytest.mark.parametrize(("name", "pg", "my"), [
    ("plain", '"plain"', "`plain`"),
    ('we"ird', '"we""ird"', '`we"ird`'),
    ("back`tick", '"back`tick"', "`back``tick`"),
    ("it's -- x", '"it\'s -- x"', "`it's -- x`"),
    ('""', '""""""', '`""`'),
])
def test_identifier_quoting(name: str, pg: str, my: str) -> None:
    assert quote_pg(name) == pg
    assert quote_mysql(name) == my


@pytest.mark.parametrize("name", [
    'x"; DROP TABLE users; --', "a;b", "{{password}}", "x}}", "a\x00b", "a\nb", "", "x" * 65,
])
def test_hostile_identifiers_are_refused(name: str) -> None:
    with pytest.raises(UnsafeIdentifier):
        quote_pg(name)
    with pytest.raises(UnsafeIdentifier):
        postgres_statements("db", [_priv(["select"], [name])])
    with pytest.raises(UnsafeIdentifier):
        mysql_statements(name if name else "", [_priv(["select"])])


def test_hostile_but_quotable_identifier_stays_one_identifier() -> None:
    s = postgres_statements("db", [_priv(["select"], ['t" TO public, "x'], schema='s"x')])
    assert 'GRANT SELECT ON TABLE "s""x"."t"" TO public, ""x" TO "{{name}}";' in s.creation


@pytest.mark.parametrize("privilege", ["drop", "all", "SELECT", "select; drop", "grant option", "usage"])
def test_unknown_privileges_are_refused(privilege: str) -> None:
    with pytest.raises(UnknownPrivilege, match="not in the privilege vocabulary"):
        postgres_statements("db", [_priv([privilege])])
    with pytest.raises(UnknownPrivilege):
        mysql_statements("db", [_priv([privilege])])


def test_mysql_has_no_truncate_privilege() -> None:
    with pytest.raises(UnknownPrivilege, match="TRUNCATE needs DROP"):
        mysql_statements("db", [_priv(["truncate"])])


def test_username_templates_name_the_example_agents() -> None:
    """The templates keep 40 (PostgreSQL) / 21 (MySQL) characters of the role name: for every
    example agent's database role, the kept part still names the agent."""
    assert POSTGRES_USERNAME_TEMPLATE == (
        '{{ printf "v-%s-%s" (.RoleName | truncate 40) (random 20) | truncate 63 }}')
    assert MYSQL_USERNAME_TEMPLATE == '{{ printf "v-%s-%s" (.RoleName | truncate 21) (random 8) | truncate 32 }}'
    roles = [(a.name, a.identity.database_role(g)) for a in repo_platform().active_agents
             for _, g in a.grants_of("database")]
    assert [r for _, r in roles] == ["agent-cortex-main-incidents", "invoice-processor-main-billing"]
    for agent, role in roles:
        assert role[:40].startswith(agent)
        assert role[:21].startswith(agent)


def test_sql_artifact_has_creation_and_revocation() -> None:
    artifacts = {a.path: a.content for a in vault_artifacts(repo_platform())}
    assert sorted(artifacts) == [
        "vault/policies/agent-cortex.hcl", "vault/policies/invoice-processor.hcl",
        "vault/policies/ledger-sync.hcl", "vault/policies/report-summarizer.hcl",
        "vault/sql/admin-main-billing.sql", "vault/sql/admin-main-incidents.sql",
        "vault/sql/agent-cortex-main-incidents.sql", "vault/sql/invoice-processor-main-billing.sql",
    ]
    sql = artifacts["vault/sql/invoice-processor-main-billing.sql"]
    creation, revocation = sql.split("-- revocation_statements\n")
    assert 'GRANT SELECT ON TABLE "billing"."invoices", "billing"."invoice_lines" TO "{{name}}";' in creation
    assert revocation.strip().endswith('DROP ROLE IF EXISTS "{{name}}";')
    assert "default TTL 5m, max TTL 10m" in sql


def test_cert_auth_needs_a_dns_name_per_active_agent(tmp_path: Path) -> None:
    """Vault's cert method names the entity alias after the SVID's Subject CN (SPIRE: the first
    DNS name); without one OpenBao answers every login with 'missing name in alias'."""
    platform = make_platform(tmp_path, [
        agent("alpha"),
        agent("beta", dnsNames=["beta.agents.svc"]),
        agent("delta", suspended=True),
    ], dev_values(auth="cert"))
    with pytest.raises(ManifestError) as info:
        plan_vault(platform)
    report = info.value.report()
    assert "alpha.yaml" in report and "spec.identity.dnsNames: this stack's Vault uses cert auth" in report
    assert "dnsNames: [alpha.agents.svc]" in report
    assert "beta" not in report and "delta" not in report
    assert len(info.value.problems) == 1
    # jwt auth does not care
    plan_vault(make_platform(tmp_path / "jwt", [agent("alpha")], dev_values()))
    # the repository's agents with a DNS name each: fine
    assert plan_vault(cert_platform(tmp_path / "ok")).auth == "cert"


def test_cert_auth_refuses_two_agents_with_one_first_dns_name(tmp_path: Path) -> None:
    """They would log in as one Vault entity. (The plan says so; where the platform model
    already refuses any DNS name shared between agents, it says so first.)"""
    with pytest.raises(ManifestError, match=r"'shared\.agents\.svc' is (also the first|already a) DNS name of "
                                            r"agent 'beta'"):
        plan_vault(make_platform(tmp_path, [
            agent("beta", dnsNames=["shared.agents.svc"]),
            agent("gamma", dnsNames=["shared.agents.svc", "gamma.agents.svc"]),
        ], dev_values(auth="cert")))


def test_admin_setup_caps_vaults_connections_and_grants_only_what_the_grants_use() -> None:
    artifacts = {a.path: a.content for a in vault_artifacts(repo_platform())}
    sql = artifacts["vault/sql/admin-main-billing.sql"]
    assert 'CREATE ROLE "vault_billing" LOGIN CREATEROLE CONNECTION LIMIT 8 PASSWORD' in sql
    assert ADMIN_CONNECTION_LIMIT == 2 * ADMIN_MAX_OPEN_CONNECTIONS == 8
    assert 'GRANT USAGE ON SCHEMA "billing" TO "vault_billing" WITH GRANT OPTION;' in sql
    assert 'GRANT SELECT ON ALL TABLES IN SCHEMA "billing" TO "vault_billing" WITH GRANT OPTION;' in sql
    assert 'REVOKE CONNECT ON DATABASE "billing" FROM PUBLIC;' in sql


def test_quotas_guard_the_login_path_and_every_database_mount(tmp_path: Path) -> None:
    values = dev_values()
    values["capacity"] = {"instancesPerNode": 300, "startupWindow": "30s"}
    platform = make_platform(tmp_path, [agent("alpha", db("incidents"), db("billing"))], values)
    quotas = {q.key: q for q in plan_vault(platform).quotas}
    assert sorted(quotas) == ["creds-main", "login"]
    assert (quotas["login"].path, quotas["login"].rate) == ("auth/spiffe-jwt/login", 20.0)  # 2 x 300 / 30
    assert (quotas["creds-main"].path, quotas["creds-main"].rate) == ("db-main/creds/*", 40.0)  # two grants
