"""The hvac applier and the pulumi-vault resources say the same thing, field by field.

The pulumi-vault provider plugin cannot be had here, so ``pulumi up`` cannot run against the real
OpenBao. Instead: the program (and ``VaultIdentity`` alone, for cert auth) runs under the
project's mocks, which capture every pulumi-vault resource's inputs exactly as the provider
would receive them; :func:`provider_writes` turns each resource into the Vault API writes the
provider makes for it (terraform-provider-vault's mapping: ``sys/auth/<path>`` + its tune + the
backend config, ``sys/mounts/<path>``, ``<mount>/config/<conn>`` with the ``postgresql`` block
flattened and the write-only password as ``password``, ...), and these must equal
:func:`components.vault_apply.plan_writes` — same resources, same paths, same fields, same
values. An input the translation does not know fails the test, so a new field on either side
cannot slip past. The e2e tests (tests/e2e/test_vault_chain_e2e.py) then prove the writes on a
real OpenBao.

What this cannot cover: fields the provider sends on its own (its defaults for inputs the
program leaves unset, e.g. ``max_idle_connections``) — the program sets none that matter here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from pulumi.runtime import rpc

from components.mockrun import Captured, Graph
from components.platform_model import load_platform
from components.render.vault import plan_vault
from components.shard import stack_scope
from components.vault_apply import (
    COMPONENT,
    ApplyError,
    ApplySecrets,
    VaultWrite,
    apply_writes,
    plan_writes,
    redacted,
)
from tests.graph.test_vault_graph import BUNDLE, PASSWORD, run_vault
from tests.unit.test_vault_render import agent, cert_platform, db, dev_values, make_platform, repo_platform

MOCK_SECRET = "mock-secret-value"  # what components.config.stack_runtime_config gives every secret


def _plain(value: Any) -> Any:
    """Secrets unwrapped (the provider sees their values), numbers as the API takes them."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return _plain(value["value"])
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _take(inputs: dict[str, Any], allowed: set[str], r: Captured) -> dict[str, Any]:
    """The inputs, snake_cased; any input outside ``allowed`` fails (a field nobody mapped)."""
    unknown = set(inputs) - allowed
    assert not unknown, f"{r.type} {r.name}: inputs {sorted(unknown)} have no place in the translation"
    return {_snake(k): v for k, v in inputs.items()}


TOKEN_FIELDS = {"tokenPolicies", "tokenNoDefaultPolicy", "tokenTtl", "tokenMaxTtl", "tokenType"}


def _auth_backend(r: Captured, inputs: dict[str, Any], config_fields: set[str]) -> list[VaultWrite]:
    f = _take(inputs, {"path", "type", "description", "tune", *config_fields}, r)
    tune = _take(f.pop("tune"), {"defaultLeaseTtl", "maxLeaseTtl", "tokenType", "auditNonHmacRequestKeys"}, r)
    path = f.pop("path")
    writes = [VaultWrite(r.name, "enable-auth", f"sys/auth/{path}", {"type": f.pop("type"),
                                                                     "description": f.pop("description")}),
              VaultWrite(r.name, "tune-auth", f"sys/auth/{path}/tune", tune)]
    if f:  # the jwt backend's config
        writes.append(VaultWrite(r.name, "write", f"auth/{path}/config", f))
    return writes


def _jwt_backend(r: Captured, inputs: dict[str, Any]) -> list[VaultWrite]:
    return _auth_backend(r, inputs, {"jwksUrl", "jwksCaPem", "boundIssuer", "jwtSupportedAlgs"})


def _cert_backend(r: Captured, inputs: dict[str, Any]) -> list[VaultWrite]:
    assert inputs["type"] == "cert"
    return _auth_backend(r, inputs, set())


def _jwt_role(r: Captured, inputs: dict[str, Any]) -> list[VaultWrite]:
    f = _take(inputs, {"backend", "roleName", "roleType", "userClaim", "boundSubject", "boundAudiences",
                       *TOKEN_FIELDS}, r)
    return [VaultWrite(r.name, "write", f"auth/{f.pop('backend')}/role/{f.pop('role_name')}", f)]


def _cert_role(r: Captured, inputs: dict[str, Any]) -> list[VaultWrite]:
    f = _take(inputs, {"backend", "name", "displayName", "certificate", "allowedUriSans", *TOKEN_FIELDS}, r)
    return [VaultWrite(r.name, "write", f"auth/{f.pop('backend')}/certs/{f.pop('name')}", f)]


def _policy(r: Captured, inputs: dict[str, Any]) -> list[VaultWrite]:
    f = _take(inputs, {"name", "policy"}, r)
    return [VaultWrite(r.name, "write", f"sys/policies/acl/{f.pop('name')}", f)]


def _mount(r: Captured, inputs: dict[str, Any]) -> list[VaultWrite]:
    f = _take(inputs, {"path", "type", "description", "defaultLeaseTtlSeconds", "maxLeaseTtlSeconds",
                       "auditNonHmacResponseKeys"}, r)
    config = {"default_lease_ttl": f.pop("default_lease_ttl_seconds"),
              "max_lease_ttl": f.pop("max_lease_ttl_seconds"),
              "audit_non_hmac_response_keys": f.pop("audit_non_hmac_response_keys")}
    return [VaultWrite(r.name, "enable-mount", f"sys/mounts/{f.pop('path')}", {**f, "config": config})]


PLUGINS = {"postgresql": "postgresql-database-plugin", "mysql": "mysql-database-plugin"}


def _connection(r: Captured, inputs: dict[str, Any]) -> list[VaultWrite]:
    f = _take(inputs, {"backend", "name", "allowedRoles", "verifyConnection", "rootRotationStatements", *PLUGINS}, r)
    (engine,) = [k for k in PLUGINS if k in f]
    block = _take(f.pop(engine), {"connectionUrl", "username", "passwordWo", "passwordWoVersion",
                                  "usernameTemplate", "passwordAuthentication", "maxOpenConnections"}, r)
    block["password"] = block.pop("password_wo")
    del block["password_wo_version"]  # the provider's own trigger for re-sending the password; not sent
    path = f"{f.pop('backend')}/config/{f.pop('name')}"
    return [VaultWrite(r.name, "connection", path, {"plugin_name": PLUGINS[engine], **f, **block})]


def _db_role(r: Captured, inputs: dict[str, Any]) -> list[VaultWrite]:
    f = _take(inputs, {"backend", "name", "dbName", "creationStatements", "revocationStatements",
                       "defaultTtl", "maxTtl"}, r)
    return [VaultWrite(r.name, "write", f"{f.pop('backend')}/roles/{f.pop('name')}", f)]


def _endpoint(r: Captured, inputs: dict[str, Any]) -> list[VaultWrite]:
    f = _take(inputs, {"path", "dataJson", "disableRead", "disableDelete"}, r)
    assert (f["disable_read"], f["disable_delete"]) == (True, True), "an action, never read nor deleted"
    return [VaultWrite(r.name, "action", f["path"], json.loads(f["data_json"]))]


def _audit(r: Captured, inputs: dict[str, Any]) -> list[VaultWrite]:
    f = _take(inputs, {"path", "type", "description", "options"}, r)
    return [VaultWrite(r.name, "enable-audit", f"sys/audit/{f.pop('path')}", f)]


def _quota(r: Captured, inputs: dict[str, Any]) -> list[VaultWrite]:
    f = _take(inputs, {"name", "path", "rate", "interval"}, r)
    return [VaultWrite(r.name, "write", f"sys/quotas/rate-limit/{f.pop('name')}", f)]


TRANSLATIONS: Mapping[str, Callable[[Captured, dict[str, Any]], list[VaultWrite]]] = {
    "vault:jwt/authBackend:AuthBackend": _jwt_backend,
    "vault:index/authBackend:AuthBackend": _cert_backend,
    "vault:jwt/authBackendRole:AuthBackendRole": _jwt_role,
    "vault:index/certAuthBackendRole:CertAuthBackendRole": _cert_role,
    "vault:index/policy:Policy": _policy,
    "vault:index/mount:Mount": _mount,
    "vault:database/secretBackendConnection:SecretBackendConnection": _connection,
    "vault:database/secretBackendRole:SecretBackendRole": _db_role,
    "vault:generic/endpoint:Endpoint": _endpoint,
    "vault:index/audit:Audit": _audit,
    "vault:index/quotaRateLimit:QuotaRateLimit": _quota,
}


def provider_writes(graph: Graph) -> list[VaultWrite]:
    """Every pulumi-vault resource of the VaultIdentity component as the API writes the provider
    makes for it (the TrustDomain's Vault PKI, in staging, is not the plan's)."""
    components = {r.urn for r in graph.of_type("agentpassport:vault:VaultIdentity")}
    out: list[VaultWrite] = []
    for r in graph.resources:
        if r.parent not in components:
            continue
        assert r.type in TRANSLATIONS, f"{r.type} ({r.name}) has no translation: add it here and to vault_apply"
        out += TRANSLATIONS[r.type](r, _plain(r.inputs))
    return out


def _by_key(writes: list[VaultWrite]) -> dict[tuple[str, str], VaultWrite]:
    keyed = {(w.resource, w.path): w for w in writes}
    assert len(keyed) == len(writes), "one write per (resource, path)"
    return keyed


def assert_equivalent(pulumi_side: list[VaultWrite], hvac_side: list[VaultWrite]) -> None:
    ours, theirs = _by_key(hvac_side), _by_key(pulumi_side)
    assert sorted(ours) == sorted(theirs), "the same resources write the same paths"
    for key, w in theirs.items():
        mine = ours[key]
        assert mine.kind == w.kind, key
        assert set(mine.data) == set(w.data), f"{key}: fields differ"
        for name, value in w.data.items():
            assert mine.data[name] == value, f"{key} field {name}: hvac {mine.data[name]!r} != pulumi {value!r}"


@pytest.mark.parametrize("stack", ["dev", "staging", "prod", "prod-base", "prod-shard-0", "prod-shard-1"])
def test_the_program_and_the_hvac_applier_write_the_same(stack: str, stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph(stack)
    platform = load_platform(stack)
    plan = plan_vault(platform)
    secrets = ApplySecrets(passwords={c.password_secret: MOCK_SECRET for c in plan.connections})
    pulumi_side = provider_writes(graph)
    assert pulumi_side or not platform.config.subsystems.vault
    names = {r.name for r in graph.resources if r.type == "agentpassport:vault:VaultIdentity"}
    assert names <= {COMPONENT}
    hvac_side = plan_writes(plan, secrets, name=COMPONENT, scope=stack_scope(platform.config)) if names else []
    assert_equivalent(pulumi_side, hvac_side)


def test_dev_stack_writes_cover_every_piece_of_the_plan(stack_graph: Callable[[str], Graph]) -> None:
    """The comparison is not vacuous: every kind of object is in it, with its key fields."""
    writes = provider_writes(stack_graph("dev"))
    paths = {w.path: w for w in writes}
    assert {w.kind for w in writes} == {"enable-auth", "tune-auth", "enable-mount", "enable-audit", "write",
                                        "connection", "action"}
    role = paths["auth/spiffe-jwt/role/agent-agent-cortex"].data
    assert role["bound_subject"] == "spiffe://dev.agentpassport.internal/ns/agents/sa/agent-cortex"
    assert role["token_policies"] == ["agent-agent-cortex"]
    conn = paths["db-main/config/incidents"].data
    assert (conn["username"], conn["password"]) == ("vault_incidents", MOCK_SECRET)
    assert paths["db-main/roles/agent-cortex-main-incidents"].data["default_ttl"] == 300
    assert paths["sys/mounts/db-main"].data["config"]["max_lease_ttl"] == 600
    assert "db-main/rotate-root/incidents" in paths
    assert paths["sys/quotas/rate-limit/agent-passport-login"].data == {
        "path": "auth/spiffe-jwt/login", "rate": 4, "interval": 1}
    assert paths["sys/quotas/rate-limit/agent-passport-creds-main"].data["path"] == "db-main/creds/*"


def test_cert_auth_writes_the_same(tmp_path: Path) -> None:
    platform = cert_platform(tmp_path)
    graph = run_vault(platform, bundle=BUNDLE)
    hvac_side = plan_writes(plan_vault(platform), ApplySecrets({"dbMainPassword": PASSWORD}, BUNDLE), name="vault")
    pulumi_side = provider_writes(graph)
    assert any(w.path == "auth/spiffe-cert/certs/agent-agent-cortex" for w in pulumi_side)
    assert_equivalent(pulumi_side, hvac_side)


def test_variants_write_the_same() -> None:
    """A JWKS CA, batch tokens, no root rotation and a socket audit device change both sides alike."""
    values = dev_values(jwksCaPem=BUNDLE, tokenType="batch",
                        audit={"type": "socket", "address": "127.0.0.1:9090", "socketType": "tcp"})
    values["vault"]["databases"]["main"]["rotateRoot"] = False
    platform = repo_platform(values)
    graph = run_vault(platform)
    hvac_side = plan_writes(plan_vault(platform), ApplySecrets({"dbMainPassword": PASSWORD}), name="vault")
    assert not any(w.kind == "action" for w in hvac_side)
    assert_equivalent(provider_writes(graph), hvac_side)


def test_missing_inputs_are_refused_and_passwords_are_redacted_for_printing(tmp_path: Path) -> None:
    plan = plan_vault(repo_platform())
    with pytest.raises(ApplyError, match="no initial password for secret 'dbMainPassword'"):
        plan_writes(plan, ApplySecrets())
    cert = plan_vault(cert_platform(tmp_path))
    with pytest.raises(ApplyError, match="cert auth needs the trust bundle"):
        plan_writes(cert, ApplySecrets({"dbMainPassword": "x"}))
    printed = json.dumps(redacted(plan_writes(plan, ApplySecrets({"dbMainPassword": "s3cr3t-pw"}))))
    assert "s3cr3t-pw" not in printed and "<redacted>" in printed


class RecordingClient:
    """Stands in for hvac.Client: records what apply_writes sends; ``existing`` is Vault's state."""

    def __init__(self, existing: dict[str, Any] | None = None) -> None:
        self.existing = existing or {}
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def read(self, path: str) -> Any:
        return self.existing.get(path)

    def write_data(self, path: str, *, data: dict[str, Any]) -> None:
        self.sent.append((path, data))


def test_on_a_fresh_vault_the_applier_sends_exactly_the_planned_writes() -> None:
    writes = plan_writes(plan_vault(repo_platform()), ApplySecrets({"dbMainPassword": PASSWORD}))
    client = RecordingClient()
    applied = apply_writes(client, writes)  # type: ignore[arg-type]
    assert client.sent == [(w.path, dict(w.data)) for w in writes]
    assert {a.outcome for a in applied} == {"sent"}


def test_on_a_configured_vault_the_applier_tunes_keeps_and_never_resends_the_admin_password() -> None:
    writes = plan_writes(plan_vault(repo_platform()), ApplySecrets({"dbMainPassword": PASSWORD}))
    audit = next(w for w in writes if w.kind == "enable-audit")
    client = RecordingClient({
        "sys/auth": {"data": {"spiffe-jwt/": {"type": "jwt"}}},
        "sys/mounts": {"data": {"db-main/": {"type": "database"}}},
        "sys/audit": {"data": {"agent-passport-file/": {"type": "file", "options": audit.data["options"]}}},
        "db-main/config/incidents": {"data": {}},
        "db-main/config/billing": {"data": {}},
    })
    outcomes = {(a.write.path, a.outcome) for a in apply_writes(client, writes)}  # type: ignore[arg-type]
    assert {("sys/auth/spiffe-jwt", "kept"), ("sys/audit/agent-passport-file", "kept"),
            ("sys/mounts/db-main", "tuned"), ("db-main/rotate-root/incidents", "skipped")} <= outcomes
    sent = dict(client.sent)
    assert "sys/auth/spiffe-jwt" not in sent and "db-main/rotate-root/incidents" not in sent
    assert sent["sys/mounts/db-main/tune"]["max_lease_ttl"] == 600
    assert "password" not in sent["db-main/config/incidents"]
    assert PASSWORD not in json.dumps(client.sent)
    wrong = RecordingClient({"sys/auth": {"data": {"spiffe-jwt/": {"type": "approle"}}}})
    with pytest.raises(ApplyError, match="already a 'approle' mount"):
        apply_writes(wrong, writes)  # type: ignore[arg-type]


def test_a_mysql_cluster_writes_the_same(tmp_path: Path) -> None:
    values = dev_values()
    values["vault"]["databases"]["shop"] = {
        "engine": "mysql", "host": "mysql.internal", "port": 3306, "database": "mysql",
        "username": "vault_admin", "passwordSecret": "dbShopPassword"}
    platform = make_platform(tmp_path, [agent("a", db("orders", cluster="shop", engine="mysql")),
                                        agent("b", db("incidents"))], values)
    secrets = {"dbMainPassword": PASSWORD, "dbShopPassword": "shop-initial-pw"}
    graph = run_vault(platform, secrets)
    hvac_side = plan_writes(plan_vault(platform), ApplySecrets(secrets), name="vault")
    shop = next(w for w in hvac_side if w.path == "db-shop/config/server")
    assert (shop.data["plugin_name"], shop.data["password"]) == ("mysql-database-plugin", "shop-initial-pw")
    assert "password_authentication" not in shop.data
    assert_equivalent(provider_writes(graph), hvac_side)
