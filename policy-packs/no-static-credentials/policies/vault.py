"""Resource policies on Vault: no stored database password, explicit and bounded TTLs, no token or
AppRole auth, no static AWS keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .secrets import _URL_CREDENTIALS, credential_name, literal_value
from .tokens import DB_ENGINE_BLOCKS, DB_MOUNT_LISTS, VAULT_LOGIN_ROLES, T
from .values import (
    UNKNOWN,
    _cfg,
    _duration,
    _limit,
    _props,
    _schema,
    agent_of,
    agent_prefix,
    as_dict,
    as_list,
    human,
    seconds,
)

# vault-no-stored-db-password -------------------------------------------------------


def _connection_findings(block: Mapping[str, Any]) -> list[str]:
    found = []
    password = block.get("password")
    if isinstance(password, str) and password:
        found.append("password is stored in state (use passwordWo + passwordWoVersion)")
    elif password is UNKNOWN:
        found.append("password is set (its value is stored in state; use passwordWo)")
    url = block.get("connectionUrl")
    if isinstance(url, str):
        for m in _URL_CREDENTIALS.finditer(url):
            if m.group(2) not in ("{{password}}", "{{ password }}"):
                found.append("connectionUrl embeds a literal password (use {{password}})")
    return found


def _vault_no_stored_db_password(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in (T.VAULT_DB_CONNECTION, T.VAULT_DB_MOUNT):
        return
    props = _props(args)
    findings: list[str] = []
    if args.resource_type == T.VAULT_DB_CONNECTION:
        for engine in DB_ENGINE_BLOCKS:
            block = props.get(engine)
            if isinstance(block, dict):
                findings += [f"{engine}: {f}" for f in _connection_findings(block)]
        for key, value in as_dict(props.get("data")).items():
            if credential_name(key, ()) and literal_value(value):
                findings.append(f"data.{key} holds a literal credential")
    else:
        for engine in DB_MOUNT_LISTS:
            for i, block in enumerate(as_list(props.get(engine))):
                if isinstance(block, dict):
                    findings += [f"{engine}[{i}]: {f}" for f in _connection_findings(block)]
    if findings:
        report(f"database connection {args.name!r}: " + "; ".join(findings), None)


# vault-explicit-ttls ---------------------------------------------------------------

EXPLICIT_TTLS_SCHEMA = _schema(exemptMountTypes={
    "type": "array", "items": {"type": "string"}, "default": ["kv", "kv-v2", "generic", "cubbyhole"],
    "description": "Secrets engine types that issue no leases and need no TTLs.",
})


def _missing(props: Mapping[str, Any], *keys: str) -> list[str]:
    out = []
    for key in keys:
        value = props.get(key)
        if value is UNKNOWN:
            continue
        secs = seconds(value)
        if secs is None or secs <= 0:
            out.append(key)
    return out


def _vault_explicit_ttls(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    props: dict[str, Any]
    if t == T.VAULT_MOUNT:
        props = _props(args)
        if props.get("type") in _cfg(args, EXPLICIT_TTLS_SCHEMA)["exemptMountTypes"]:
            return
        missing = _missing(props, "defaultLeaseTtlSeconds", "maxLeaseTtlSeconds")
        what = f"mount {props.get('path', args.name)!r}"
    elif t == T.VAULT_DB_MOUNT:
        props = _props(args)
        missing = _missing(props, "defaultLeaseTtlSeconds", "maxLeaseTtlSeconds")
        what = f"database mount {props.get('path', args.name)!r}"
    elif t == T.VAULT_DB_ROLE:
        props = _props(args)
        missing = _missing(props, "defaultTtl", "maxTtl")
        what = f"database role {props.get('name', args.name)!r}"
    elif t in VAULT_LOGIN_ROLES:
        props = _props(args)
        missing = _missing(props, "tokenTtl", "tokenMaxTtl")
        what = f"auth role {props.get('roleName') or props.get('name') or args.name!r}"
    elif t == T.VAULT_PKI_ROLE:
        props = _props(args)
        missing = _missing(props, "ttl", "maxTtl")
        what = f"PKI role {props.get('name', args.name)!r}"
    else:
        return
    if missing:
        report(f"{agent_prefix(agent_of(t, args.name, props))}{what} has no explicit "
               f"{' / '.join(missing)}: Vault would fall back to its 768h system default", None)


# vault-credential-ttl-limits -------------------------------------------------------

CREDENTIAL_TTL_SCHEMA = _schema(
    maxDbCredentialTtl=_duration("10m", "Longest database credential lease (role maxTtl, "
                                        "database mount maxLeaseTtlSeconds)."),
    maxVaultTokenTtl=_duration("15m", "Longest Vault token TTL an agent login role may issue."),
    maxVaultTokenMaxTtl=_duration("1h", "Longest Vault token max TTL (renewals included)."),
)


def _over(props: Mapping[str, Any], key: str, limit: float) -> str | None:
    secs = seconds(props.get(key))
    if secs is not None and secs > limit:
        return f"{key} {human(secs)} exceeds {human(limit)}"
    return None


def _vault_credential_ttl_limits(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    if t not in (T.VAULT_DB_ROLE, T.VAULT_DB_MOUNT, T.VAULT_MOUNT) and t not in VAULT_LOGIN_ROLES:
        return
    props = _props(args)
    cfg = _cfg(args, CREDENTIAL_TTL_SCHEMA)
    db = _limit(cfg, "maxDbCredentialTtl")
    problems: list[str | None] = []
    if t == T.VAULT_DB_ROLE:
        problems += [_over(props, "defaultTtl", db), _over(props, "maxTtl", db)]
    elif t == T.VAULT_DB_MOUNT or (t == T.VAULT_MOUNT and props.get("type") == "database"):
        problems += [_over(props, "defaultLeaseTtlSeconds", db), _over(props, "maxLeaseTtlSeconds", db)]
    elif t in VAULT_LOGIN_ROLES:
        problems += [
            _over(props, "tokenTtl", _limit(cfg, "maxVaultTokenTtl")),
            _over(props, "tokenMaxTtl", _limit(cfg, "maxVaultTokenMaxTtl")),
            _over(props, "tokenExplicitMaxTtl", _limit(cfg, "maxVaultTokenMaxTtl")),
        ]
        period = seconds(props.get("tokenPeriod"))
        if period:
            problems.append("tokenPeriod makes tokens periodic: renewable forever")
    found = [p for p in problems if p]
    if found:
        report(f"{agent_prefix(agent_of(t, args.name, props))}{args.name!r}: " + "; ".join(found), None)


# vault-no-token-or-approle-auth ------------------------------------------------------


def _vault_no_token_auth(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    if t == T.VAULT_AUTH_BACKEND:
        props = _props(args)
        if props.get("type") in ("approle", "userpass"):
            report(f"auth backend {args.name!r} of type {props.get('type')} logs in with a stored "
                   "secret", None)
        return
    kinds = {
        T.VAULT_TOKEN: "a Vault token minted by the program",
        T.VAULT_TOKEN_ROLE: "a token-auth role",
        T.VAULT_APPROLE_ROLE: "an AppRole role",
        T.VAULT_APPROLE_SECRET_ID: "an AppRole secret id",
    }
    if t in kinds:
        props = _props(args)
        report(f"{agent_prefix(agent_of(t, args.name, props))}{args.name!r} is {kinds[t]}: a "
               "bearer secret that has to be stored and handed to the agent", None)


# vault-aws-no-static-keys -----------------------------------------------------------


def _vault_aws_no_static_keys(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in (T.VAULT_AWS_SECRET_BACKEND, T.VAULT_AWS_AUTH_CLIENT):
        return
    props = _props(args)
    keys = [k for k in ("accessKey", "secretKey", "secretKeyWo") if props.get(k) not in (None, "")]
    if keys:
        report(f"{args.name!r} configures Vault's AWS access with static IAM keys "
               f"({', '.join(keys)})", None)
