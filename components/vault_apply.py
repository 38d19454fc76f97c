"""The Vault plan applied through hvac: the second applier of :func:`components.render.vault.plan_vault`.

:class:`components.vault.VaultIdentity` turns a :class:`VaultPlan` into pulumi-vault resources;
this module turns the *same* plan into the Vault API writes those resources stand for and sends
them with `hvac <https://hvac.readthedocs.io>`_. It exists for what cannot run the Pulumi Vault
provider plugin: the end-to-end tests on a real OpenBao, and a dev machine configuring its local
OpenBao (``python -m components.vault_apply --stack dev``).

:func:`plan_writes` is pure: one :class:`VaultWrite` per API call, each naming the Pulumi
resource it stands for (the same name :class:`VaultIdentity` registers), in dependency order.
``tests/unit/test_vault_apply.py`` captures the pulumi-vault resources' inputs under the project's
mocks, translates them to the API calls the provider makes for them and checks, field by field,
that they are exactly these writes — so what the e2e tests prove of this applier holds for
``pulumi up``.

:func:`apply_writes` sends them, as Pulumi would on a first ``up`` and as an update would on a
later one: an auth method, secrets engine or audit device that is already enabled is tuned
instead of enabled again; a database connection that already exists is updated *without* the
admin password and not rotated again (Pulumi's write-only password is likewise sent only on
create, so Vault's rotated password is never overwritten by the stale initial one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import hvac
import hvac.exceptions

from components.render.vault import (
    ADMIN_MAX_OPEN_CONNECTIONS,
    JWT_SUPPORTED_ALGS,
    AgentVaultPlan,
    ConnectionPlan,
    VaultPlan,
)
from components.shard import Scope, deploys_agents, deploys_shared

COMPONENT = "agent-passport-vault"
"""The VaultIdentity component's name in the program (resource names start with it)."""

PLUGIN_NAMES: Mapping[str, str] = {"postgres": "postgresql-database-plugin", "mysql": "mysql-database-plugin"}
"""The database plugin the provider selects for its ``postgresql`` / ``mysql`` block."""

CLEAR_REQUEST_KEYS = ("role",)
"""Kept out of HMAC in the audit log of the auth mount: the role an agent asks for."""
CLEAR_RESPONSE_KEYS = ("username",)
"""Kept out of HMAC in the audit log of a database mount: the generated database user."""
MAX_OPEN_CONNECTIONS = ADMIN_MAX_OPEN_CONNECTIONS

WriteKind = Literal["enable-auth", "tune-auth", "enable-mount", "enable-audit", "write", "connection", "action"]


@dataclass(frozen=True)
class VaultWrite:
    """One Vault API write (``POST /v1/<path>``) and the Pulumi resource it stands for.

    ``kind`` says how :func:`apply_writes` treats an object that already exists: ``enable-*``
    (``sys/auth``, ``sys/mounts``, ``sys/audit``) are skipped or tuned, ``connection`` is sent
    without its ``password``, ``action`` (rotate-root) runs only right after its connection was
    created; ``write`` and ``tune-auth`` are plain upserts.
    """

    resource: str
    kind: WriteKind
    path: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class ApplySecrets:
    """What the Pulumi program takes from outside the plan."""

    passwords: Mapping[str, str] = field(default_factory=dict)
    """Secret config key (``ConnectionPlan.password_secret``) -> the admin's initial password."""
    trust_bundle_pem: str | None = None
    """The trust domain's CA bundle (cert auth only): ``TrustDomain.trust_bundle_pem``."""


class ApplyError(RuntimeError):
    """Vault refused a write, or an input the plan needs is missing."""


# --------------------------------------------------------------------------- the writes


def _token_fields(plan: VaultPlan, agent: AgentVaultPlan) -> dict[str, Any]:
    return {
        "token_policies": [agent.policy_name],
        "token_no_default_policy": True,
        "token_ttl": plan.token_ttl,
        "token_max_ttl": plan.token_max_ttl,
        "token_type": plan.token_type,
    }


def _login_role(plan: VaultPlan, agent: AgentVaultPlan, name: str, secrets: ApplySecrets) -> VaultWrite:
    resource = f"{name}-{agent.agent}-login"
    if plan.auth == "jwt":
        return VaultWrite(resource, "write", f"auth/{plan.auth_mount}/role/{agent.role}", {
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_subject": agent.spiffe_id,
            "bound_audiences": list(agent.audiences),
            **_token_fields(plan, agent),
        })
    if not secrets.trust_bundle_pem:
        raise ApplyError("cert auth needs the trust bundle of the TrustDomain (ApplySecrets.trust_bundle_pem)")
    return VaultWrite(resource, "write", f"auth/{plan.auth_mount}/certs/{agent.role}", {
        "certificate": secrets.trust_bundle_pem,
        "allowed_uri_sans": [agent.spiffe_id],
        "display_name": agent.role,
        **_token_fields(plan, agent),
    })


def _auth_backend(plan: VaultPlan, name: str) -> list[VaultWrite]:
    resource = f"{name}-{plan.auth}"
    description = ("Agent Passport: agents log in with JWT-SVIDs from SPIRE" if plan.auth == "jwt"
                   else "Agent Passport: agents log in with X.509-SVIDs over mutual TLS")
    writes = [
        VaultWrite(resource, "enable-auth", f"sys/auth/{plan.auth_mount}",
                   {"type": plan.auth, "description": description}),
        VaultWrite(resource, "tune-auth", f"sys/auth/{plan.auth_mount}/tune", {
            "default_lease_ttl": f"{plan.token_ttl}s",
            "max_lease_ttl": f"{plan.token_max_ttl}s",
            "token_type": plan.token_type,
            "audit_non_hmac_request_keys": list(CLEAR_REQUEST_KEYS),
        }),
    ]
    if plan.auth == "jwt":
        config: dict[str, Any] = {
            "jwks_url": plan.jwks_url,
            "bound_issuer": plan.jwt_issuer,
            "jwt_supported_algs": list(JWT_SUPPORTED_ALGS),
        }
        if plan.jwks_ca_pem is not None:
            config["jwks_ca_pem"] = plan.jwks_ca_pem
        writes.append(VaultWrite(resource, "write", f"auth/{plan.auth_mount}/config", config))
    return writes


def _connection(conn: ConnectionPlan, name: str, secrets: ApplySecrets) -> list[VaultWrite]:
    password = secrets.passwords.get(conn.password_secret)
    if password is None:
        raise ApplyError(f"no initial password for secret {conn.password_secret!r} "
                         f"({conn.password_field}, admin {conn.username})")
    resource = f"{name}-db-{conn.cluster}-{conn.name}"
    writes = [VaultWrite(resource, "connection", f"{conn.mount}/config/{conn.name}", {
        "plugin_name": PLUGIN_NAMES[conn.engine],
        "allowed_roles": list(conn.allowed_roles),
        "verify_connection": True,
        "root_rotation_statements": list(conn.root_rotation_statements),
        "connection_url": conn.connection_url,
        "username": conn.username,
        "password": password,
        "username_template": conn.username_template,
        **({"password_authentication": "scram-sha-256"} if conn.engine == "postgres" else {}),
        "max_open_connections": MAX_OPEN_CONNECTIONS,
    })]
    if conn.rotate_root:
        writes.append(VaultWrite(f"{resource}-rotate-root-v{conn.password_version}", "action",
                                 f"{conn.mount}/rotate-root/{conn.name}", {}))
    return writes


def plan_writes(
    plan: VaultPlan, secrets: ApplySecrets, *, name: str = COMPONENT, scope: Scope = "all"
) -> list[VaultWrite]:
    """Every Vault API write :class:`VaultIdentity` ``name`` stands for, in dependency order (pure).

    ``scope`` as in ``VaultIdentityArgs``: ``shared`` (auth backend, mounts, connections, audit),
    ``agents`` (login roles, policies, database roles), ``all`` (both).
    """
    shared, per_agent = deploys_shared(scope), deploys_agents(scope)
    writes: list[VaultWrite] = []
    if shared:
        # first, so the rest of the setup is audited too
        writes.append(VaultWrite(f"{name}-audit", "enable-audit", f"sys/audit/agent-passport-{plan.audit_type}", {
            "type": plan.audit_type,
            "description": "Agent Passport: every request and response, secrets HMAC'd",
            "options": dict(plan.audit_options),
        }))
        writes += _auth_backend(plan, name)
    for agent in plan.agents if per_agent else ():
        writes.append(VaultWrite(f"{name}-{agent.agent}-policy", "write", f"sys/policies/acl/{agent.policy_name}",
                                 {"policy": agent.policy_hcl}))
        writes.append(_login_role(plan, agent, name, secrets))
    if shared:
        for m in plan.mounts:
            writes.append(VaultWrite(f"{name}-db-{m.cluster}", "enable-mount", f"sys/mounts/{m.path}", {
                "type": "database",
                "description": f"Agent Passport: dynamic credentials on database cluster {m.cluster}",
                "config": {
                    "default_lease_ttl": m.default_lease_ttl,
                    "max_lease_ttl": m.max_lease_ttl,
                    "audit_non_hmac_response_keys": list(CLEAR_RESPONSE_KEYS),
                },
            }))
        for conn in plan.connections:
            writes += _connection(conn, name, secrets)
        for q in plan.quotas:
            writes.append(VaultWrite(f"{name}-quota-{q.key}", "write", f"sys/quotas/rate-limit/{q.name}",
                                     {"path": q.path, "rate": q.rate, "interval": q.interval}))
    for role in plan.database_roles if per_agent else ():
        writes.append(VaultWrite(f"{name}-{role.agent}-db-{role.cluster}-{role.connection}", "write",
                                 f"{role.mount}/roles/{role.name}", {
                                     "db_name": role.connection,
                                     "creation_statements": list(role.statements.creation),
                                     "revocation_statements": list(role.statements.revocation),
                                     "default_ttl": role.default_ttl,
                                     "max_ttl": role.max_ttl,
                                 }))
    return writes


# --------------------------------------------------------------------------- sending them


@dataclass(frozen=True)
class Applied:
    """What :func:`apply_writes` did with one write: ``sent``, ``tuned``, ``kept`` or ``skipped``."""

    write: VaultWrite
    outcome: Literal["sent", "tuned", "kept", "skipped"]
    detail: str = ""


def _table(client: hvac.Client, path: str) -> dict[str, Any]:
    """A ``sys/auth`` / ``sys/mounts`` / ``sys/audit`` listing: ``{"<path>/": {...}}``."""
    resp = cast(dict[str, Any], client.read(path) or {})
    table = resp.get("data") if isinstance(resp.get("data"), dict) else resp
    return {k: v for k, v in cast(dict[str, Any], table).items() if isinstance(v, dict)}


def _send(client: hvac.Client, write: VaultWrite, path: str, data: Mapping[str, Any]) -> None:
    try:
        client.write_data(path, data=dict(data))
    except hvac.exceptions.VaultError as exc:
        raise ApplyError(f"{write.resource}: Vault refused POST {path}: {exc}") from None


def apply_writes(client: hvac.Client, writes: Sequence[VaultWrite]) -> list[Applied]:
    """Send ``writes`` in order through ``client`` (an authenticated hvac client). Idempotent."""
    done: list[Applied] = []
    created_connections: set[str] = set()
    auths, mounts, audits = _table(client, "sys/auth"), _table(client, "sys/mounts"), _table(client, "sys/audit")
    for w in writes:
        if w.kind in ("enable-auth", "enable-mount", "enable-audit"):
            table = {"enable-auth": auths, "enable-mount": mounts, "enable-audit": audits}[w.kind]
            mount_path = w.path.split("/", 2)[2]
            existing = table.get(f"{mount_path}/")
            if existing is None:
                _send(client, w, w.path, w.data)
                done.append(Applied(w, "sent"))
                continue
            if existing.get("type") != w.data["type"]:
                raise ApplyError(f"{w.resource}: {w.path} is already a {existing.get('type')!r} "
                                 f"mount, not {w.data['type']!r}")
            if w.kind == "enable-mount":
                tune = {**cast(Mapping[str, Any], w.data["config"]), "description": w.data["description"]}
                _send(client, w, f"{w.path}/tune", tune)
                done.append(Applied(w, "tuned"))
            elif w.kind == "enable-audit" and existing.get("options") != w.data["options"]:
                raise ApplyError(f"{w.resource}: audit device {mount_path} exists with options "
                                 f"{existing.get('options')}, not {w.data['options']}; disable it first")
            else:
                done.append(Applied(w, "kept", "already enabled"))
        elif w.kind == "connection":
            if client.read(w.path) is None:
                _send(client, w, w.path, w.data)
                created_connections.add(w.path)
                done.append(Applied(w, "sent"))
            else:  # Vault merges the update; its (rotated) admin password stays
                _send(client, w, w.path, {k: v for k, v in w.data.items() if k != "password"})
                done.append(Applied(w, "sent", "updated without the admin password"))
        elif w.kind == "action":
            mount, _, conn = w.path.partition("/rotate-root/")
            if f"{mount}/config/{conn}" in created_connections:
                _send(client, w, w.path, w.data)
                done.append(Applied(w, "sent"))
            else:
                done.append(Applied(w, "skipped", "connection existed: its admin password was rotated before"))
        else:
            _send(client, w, w.path, w.data)
            done.append(Applied(w, "sent"))
    return done


def apply_plan(
    client: hvac.Client, plan: VaultPlan, secrets: ApplySecrets, *, name: str = COMPONENT, scope: Scope = "all"
) -> list[Applied]:
    """:func:`plan_writes` then :func:`apply_writes`."""
    return apply_writes(client, plan_writes(plan, secrets, name=name, scope=scope))


def redacted(writes: Iterable[VaultWrite]) -> list[dict[str, Any]]:
    """The writes as JSON-able dicts with admin passwords replaced (for printing)."""
    out = []
    for w in writes:
        data = {k: ("<redacted>" if k == "password" else v) for k, v in w.data.items()}
        out.append({"resource": w.resource, "kind": w.kind, "path": w.path, "data": data})
    return out


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m components.vault_apply --stack dev``: configure a Vault/OpenBao from the plan.

    Address and token from ``VAULT_ADDR`` / ``VAULT_TOKEN`` (``scripts/local-services env``);
    admin passwords from ``AP_SECRET_<secret name>`` variables (what ``pulumi config --secret``
    holds for the Pulumi applier). ``--print`` only prints the writes (passwords redacted).
    """
    from components.platform_model import load_platform
    from components.render.vault import plan_vault

    parser = argparse.ArgumentParser(prog="python -m components.vault_apply", description=main.__doc__)
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--print", action="store_true", dest="print_only", help="print the writes; send nothing")
    parser.add_argument("--jwks-url", help="the JWKS of a running SPIRE OIDC discovery provider, instead of the "
                        "stack's vault.jwksUrl (Vault fetches it when the backend is configured)")
    args = parser.parse_args(argv)
    plan = plan_vault(load_platform(args.stack))
    if args.jwks_url:
        plan = dataclasses.replace(plan, jwks_url=args.jwks_url)
    passwords = {c.password_secret: os.environ.get(f"AP_SECRET_{c.password_secret}", "") for c in plan.connections}
    secrets = ApplySecrets(passwords={k: v for k, v in passwords.items() if v or args.print_only})
    try:
        writes = plan_writes(plan, secrets)
        if args.print_only:
            print(json.dumps(redacted(writes), indent=2))
            return 0
        addr, token = os.environ.get("VAULT_ADDR", ""), os.environ.get("VAULT_TOKEN", "")
        if not addr or not token:
            raise ApplyError("set VAULT_ADDR and VAULT_TOKEN (scripts/local-services env)")
        client = hvac.Client(url=addr, token=token, timeout=30)
        for a in apply_writes(client, writes):
            print(f"{a.outcome:8} {a.write.path}  ({a.write.resource}){'  ' + a.detail if a.detail else ''}")
    except ApplyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "COMPONENT",
    "Applied",
    "ApplyError",
    "ApplySecrets",
    "VaultWrite",
    "apply_plan",
    "apply_writes",
    "plan_writes",
    "redacted",
]
