"""VaultIdentity under Pulumi mocks: the captured resource graph, resource by resource."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import rpc
from pulumi.runtime.settings import set_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.errors import ConfigError
from components.mockrun import Captured, CapturingMonitor, Graph, PassportMocks
from components.platform_model import Platform
from components.render.vault import plan_vault
from components.vault import VaultIdentity, VaultIdentityArgs
from tests.conftest import ROOT, STACKS
from tests.unit.test_vault_render import TD, agent, db, dev_values, make_platform, repo_platform, vault_grant

COMPONENT = "agentpassport:vault:VaultIdentity"
JWT_ROLE = "vault:jwt/authBackendRole:AuthBackendRole"
CERT_ROLE = "vault:index/certAuthBackendRole:CertAuthBackendRole"
POLICY = "vault:index/policy:Policy"
DB_ROLE = "vault:database/secretBackendRole:SecretBackendRole"
CONNECTION = "vault:database/secretBackendConnection:SecretBackendConnection"
MOUNT = "vault:index/mount:Mount"
ENDPOINT = "vault:generic/endpoint:Endpoint"
PASSWORD = "initial-admin-password-9f2c"
BUNDLE = "-----BEGIN CERTIFICATE-----\nTRUSTBUNDLE\n-----END CERTIFICATE-----\n"
SECRET_SIG = rpc._special_secret_sig


def run_vault(
    platform: Platform, secrets: dict[str, str] | None = None, bundle: str | None = None
) -> Graph:
    """Register VaultIdentity alone under mocks, with ``secrets`` as secret stack config."""
    values = {f"agent-passport:{k}": v for k, v in (secrets or {"dbMainPassword": PASSWORD}).items()}
    pulumi.runtime.set_all_config(values, list(values))
    monitor = CapturingMonitor(PassportMocks())
    set_root_resource(None)  # type: ignore[arg-type]
    pmocks.set_mocks(monitor.mocks, project="agent-passport", stack="dev", preview=False, monitor=monitor)
    args = VaultIdentityArgs(platform=platform, trust_bundle_pem=bundle)

    def program() -> None:
        VaultIdentity("vault", args)

    _sync_await(run_pulumi_func(program))
    return Graph(resources=monitor.captured, outputs={}, stack="dev")


def by_name(graph: Graph, type_: str) -> dict[str, Captured]:
    return {r.name: r for r in graph.of_type(type_)}


def walk_plain(value: Any) -> Iterator[Any]:
    """Every value reachable without entering a secret."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == SECRET_SIG:
            return
        for v in value.values():
            yield from walk_plain(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk_plain(v)
    else:
        yield value


@pytest.fixture(scope="module")
def repo_graph() -> Graph:
    return run_vault(repo_platform())


def test_every_child_is_parented_to_the_component(repo_graph: Graph) -> None:
    (component,) = repo_graph.of_type(COMPONENT)
    assert component.name == "vault"
    others = [r for r in repo_graph.resources if r is not component]
    assert others and all(r.parent == component.urn for r in others)
    assert all(r.name.startswith("vault-") for r in others)


def test_one_jwt_role_per_agent_bound_to_exactly_its_spiffe_id(repo_graph: Graph) -> None:
    roles = by_name(repo_graph, JWT_ROLE)
    platform = repo_platform()
    assert set(roles) == {f"vault-{a.name}-login" for a in platform.active_agents}
    for a in platform.active_agents:
        inputs = roles[f"vault-{a.name}-login"].inputs
        assert inputs == {
            "backend": "spiffe-jwt",
            "roleName": f"agent-{a.name}",
            "roleType": "jwt",
            "userClaim": "sub",
            "boundSubject": a.identity.spiffe_id,
            "boundAudiences": list(a.identity.jwt_audiences),
            "tokenPolicies": [f"agent-{a.name}"],
            "tokenNoDefaultPolicy": True,
            "tokenTtl": 900,
            "tokenMaxTtl": 1800,
            "tokenType": "service",
        }
    subjects = [r.inputs["boundSubject"] for r in roles.values()]
    assert len(set(subjects)) == len(subjects)
    assert roles["vault-report-summarizer-login"].inputs["boundAudiences"] == ["vault", "sts.amazonaws.com"]


def test_jwt_backend_trusts_spires_keys_and_issuer(repo_graph: Graph) -> None:
    (backend,) = repo_graph.of_type("vault:jwt/authBackend:AuthBackend")
    inputs = backend.inputs
    assert inputs["path"] == "spiffe-jwt"
    assert inputs["type"] == "jwt"
    assert inputs["jwksUrl"] == f"https://oidc-discovery.{TD}/keys"
    assert inputs["boundIssuer"] == f"https://oidc-discovery.{TD}"
    assert "oidcDiscoveryUrl" not in inputs
    assert inputs["jwtSupportedAlgs"] == ["ES256", "ES384", "RS256"]
    assert inputs["tune"] == {"defaultLeaseTtl": "900s", "maxLeaseTtl": "1800s", "tokenType": "service",
                              "auditNonHmacRequestKeys": ["role"]}


def test_one_policy_per_agent_with_the_rendered_hcl(repo_graph: Graph) -> None:
    policies = by_name(repo_graph, POLICY)
    plan = plan_vault(repo_platform())
    assert {n: (p.inputs["name"], p.inputs["policy"]) for n, p in policies.items()} == {
        f"vault-{a.agent}-policy": (f"agent-{a.agent}", a.policy_hcl) for a in plan.agents}


def test_database_mount_has_explicit_lease_ttls(repo_graph: Graph) -> None:
    (mount,) = repo_graph.of_type(MOUNT)
    assert mount.inputs == {
        "path": "db-main",
        "type": "database",
        "description": "Agent Passport: dynamic credentials on database cluster main",
        "defaultLeaseTtlSeconds": 300,
        "maxLeaseTtlSeconds": 600,
        "auditNonHmacResponseKeys": ["username"],
    }


def test_database_roles_carry_the_manifests_ttls_within_limits(repo_graph: Graph) -> None:
    roles = by_name(repo_graph, DB_ROLE)
    assert set(roles) == {"vault-agent-cortex-db-main-incidents", "vault-invoice-processor-db-main-billing"}
    cortex = roles["vault-agent-cortex-db-main-incidents"].inputs
    assert (cortex["backend"], cortex["name"], cortex["dbName"]) == (
        "db-main", "agent-cortex-main-incidents", "incidents")
    assert cortex["creationStatements"][-1] == (
        'GRANT SELECT ON TABLE "public"."incidents", "public"."alerts" TO "{{name}}";')
    assert cortex["revocationStatements"][-1] == 'DROP ROLE IF EXISTS "{{name}}";'
    limit = 600  # limits.maxDbCredentialTtl and the mount's maxLeaseTtl in dev
    for role in roles.values():
        assert (role.inputs["defaultTtl"], role.inputs["maxTtl"]) == (300, 600)
        assert role.inputs["maxTtl"] <= limit


def test_connection_password_arrives_only_as_a_secret(repo_graph: Graph) -> None:
    conns = by_name(repo_graph, CONNECTION)
    assert set(conns) == {"vault-db-main-incidents", "vault-db-main-billing"}
    for conn in conns.values():
        assert PASSWORD not in json.dumps(list(walk_plain(conn.inputs)))
        block = conn.inputs["postgresql"]
        assert block[rpc._special_sig_key] == SECRET_SIG
        assert block["value"]["passwordWo"] == PASSWORD
        assert "password" not in block["value"]  # the write-only field, never the stored one
        assert conn.inputs["verifyConnection"] is True
    incidents = conns["vault-db-main-incidents"].inputs
    assert incidents["allowedRoles"] == ["agent-cortex-main-incidents"]
    assert incidents["rootRotationStatements"] == ["ALTER ROLE \"{{username}}\" WITH PASSWORD '{{password}}';"]
    value = incidents["postgresql"]["value"]
    assert (value["username"], value["passwordWoVersion"], value["passwordAuthentication"]) == (
        "vault_incidents", 1, "scram-sha-256")
    for r in repo_graph.resources:
        if r.type != CONNECTION:
            assert PASSWORD not in json.dumps(r.inputs, default=str)


def test_root_is_rotated_right_after_configuration(repo_graph: Graph) -> None:
    endpoints = by_name(repo_graph, ENDPOINT)
    assert set(endpoints) == {"vault-db-main-incidents-rotate-root-v1", "vault-db-main-billing-rotate-root-v1"}
    rotate = endpoints["vault-db-main-incidents-rotate-root-v1"].inputs
    assert rotate["path"] == "db-main/rotate-root/incidents"
    assert (rotate["disableRead"], rotate["disableDelete"]) == (True, True)
    # the path comes from the connection's outputs: the rotation waits for the connection
    conn = by_name(repo_graph, CONNECTION)["vault-db-main-incidents"]
    assert conn.urn in endpoints["vault-db-main-incidents-rotate-root-v1"].dependencies


def test_audit_device_writes_json_to_stdout(repo_graph: Graph) -> None:
    (audit,) = repo_graph.of_type("vault:index/audit:Audit")
    assert audit.inputs["type"] == "file"
    assert audit.inputs["path"] == "agent-passport-file"
    assert audit.inputs["options"] == {"file_path": "stdout", "format": "json", "hmac_accessor": "true",
                                       "log_raw": "false"}


def test_suspended_agent_gets_nothing(tmp_path: Path) -> None:
    graph = run_vault(make_platform(tmp_path, [
        agent("alpha", db("incidents")), agent("beta", db("billing"), vault_grant("kv/data/b"), suspended=True)]))
    names = [r.name for r in graph.resources]
    assert not [n for n in names if "-beta-" in f"{n}-"]
    assert set(by_name(graph, JWT_ROLE)) == {"vault-alpha-login"}
    assert set(by_name(graph, POLICY)) == {"vault-alpha-policy"}
    assert set(by_name(graph, DB_ROLE)) == {"vault-alpha-db-main-incidents"}
    assert by_name(graph, CONNECTION)["vault-db-main-billing"].inputs["allowedRoles"] == []


def test_cert_auth_binds_the_uri_san_and_the_trust_bundle(tmp_path: Path) -> None:
    platform = make_platform(tmp_path, [agent("alpha", dnsNames=["alpha.agents.svc"]), agent("beta", suspended=True)],
                             dev_values(auth="cert"))
    graph = run_vault(platform, bundle=BUNDLE)
    assert not graph.of_type(JWT_ROLE)
    assert not graph.of_type("vault:jwt/authBackend:AuthBackend")
    (backend,) = graph.of_type("vault:index/authBackend:AuthBackend")
    assert (backend.inputs["type"], backend.inputs["path"]) == ("cert", "spiffe-cert")
    (role,) = graph.of_type(CERT_ROLE)
    assert role.name == "vault-alpha-login"
    assert role.inputs == {
        "backend": "spiffe-cert",
        "name": "agent-alpha",
        "displayName": "agent-alpha",
        "certificate": BUNDLE,
        "allowedUriSans": [f"spiffe://{TD}/ns/agents/sa/alpha"],
        "tokenPolicies": ["agent-alpha"],
        "tokenNoDefaultPolicy": True,
        "tokenTtl": 900,
        "tokenMaxTtl": 1800,
        "tokenType": "service",
    }


def test_cert_auth_without_a_trust_bundle_is_a_config_error(tmp_path: Path) -> None:
    platform = make_platform(tmp_path, [agent("alpha", dnsNames=["alpha.agents.svc"])], dev_values(auth="cert"))
    with pytest.raises(ConfigError, match=r"agent-passport:vault.auth: cert auth needs the trust bundle"):
        run_vault(platform)


def test_missing_admin_password_secret_is_a_config_error(tmp_path: Path) -> None:
    platform = make_platform(tmp_path, [agent("alpha", db("incidents"))])
    with pytest.raises(ConfigError) as info:
        run_vault(platform, secrets={"somethingElse": "x"})
    (problem,) = info.value.problems
    assert problem.field == "agent-passport:vault.databases.main.passwordSecret"
    assert "pulumi config set --secret dbMainPassword" in problem.message


def test_socket_audit_and_batch_tokens(tmp_path: Path) -> None:
    values = dev_values(audit={"type": "socket", "address": "fluent-bit.logging:5170"}, tokenType="batch",
                        tokenTtl="10m", tokenMaxTtl="10m")
    graph = run_vault(make_platform(tmp_path, [agent("alpha")], values))
    (audit,) = graph.of_type("vault:index/audit:Audit")
    assert (audit.inputs["type"], audit.inputs["path"]) == ("socket", "agent-passport-socket")
    assert audit.inputs["options"]["address"] == "fluent-bit.logging:5170"
    assert audit.inputs["options"]["socket_type"] == "tcp"
    (role,) = graph.of_type(JWT_ROLE)
    assert (role.inputs["tokenType"], role.inputs["tokenTtl"], role.inputs["tokenMaxTtl"]) == ("batch", 600, 600)


def test_a_new_password_version_rotates_again(tmp_path: Path) -> None:
    values = dev_values()
    values["vault"]["databases"]["main"]["admins"]["incidents"]["passwordVersion"] = 3
    graph = run_vault(make_platform(tmp_path, [agent("alpha", db("incidents"))], values))
    assert set(by_name(graph, ENDPOINT)) == {"vault-db-main-incidents-rotate-root-v3",
                                             "vault-db-main-billing-rotate-root-v1"}
    conn = by_name(graph, CONNECTION)["vault-db-main-incidents"]
    assert conn.inputs["postgresql"]["value"]["passwordWoVersion"] == 3


# --------------------------------------------------------------------------- the real program


def _wired() -> bool:
    return "VaultIdentity(" in (ROOT / "components/platform.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("stack", STACKS)
def test_program_composes_vault_per_stack(stack: str, stack_graph: Callable[[str], Graph]) -> None:
    if not _wired():
        pytest.skip("VaultIdentity is not composed into AgentPassport yet (components/platform.py [vault])")
    graph = stack_graph(stack)
    (component,) = graph.of_type(COMPONENT)
    assert component.name == "agent-passport-vault"
    root = graph.by_urn(component.parent)
    assert root is not None and root.type == "agentpassport:index:AgentPassport"
    bom = graph.outputs["identityBom"]["agents"]
    active = {name: a["spiffeId"] for name, a in bom.items() if not a["suspended"]}
    roles = [r for r in graph.of_type(JWT_ROLE) if r.parent == component.urn]
    assert sorted((r.inputs["roleName"], r.inputs["boundSubject"]) for r in roles) == sorted(
        (f"agent-{name}", spiffe) for name, spiffe in active.items())
    policies = [r for r in graph.of_type(POLICY) if r.parent == component.urn]
    assert sorted(p.inputs["name"] for p in policies) == sorted(f"agent-{n}" for n in active)
    for role in (r for r in graph.of_type(DB_ROLE) if r.parent == component.urn):
        assert role.inputs["maxTtl"] <= 600
    (mount,) = [r for r in graph.of_type(MOUNT) if r.parent == component.urn]
    assert mount.inputs["maxLeaseTtlSeconds"] == 600
