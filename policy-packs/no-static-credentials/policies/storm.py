"""Storm controls: SPIRE's rate limits stay on, and every Vault login path and database mount is
behind a rate-limit quota (resource policy spire-rate-limits-on, stack policy
vault-rate-limit-quotas).
"""

from __future__ import annotations

import json
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs, StackValidationArgs

from .tokens import T
from .values import UNKNOWN, _cfg, _props, _resources, _schema, as_dict

# spire-rate-limits-on --------------------------------------------------------------------------

SERVER_CONF_KEY = "server.conf"
RATE_LIMITS = ("attestation", "signing")


def _server_conf(data: dict[str, Any]) -> dict[str, Any] | None:
    text = data.get(SERVER_CONF_KEY)
    if not isinstance(text, str):
        return None
    try:
        conf = json.loads(text)
    except ValueError:
        return None  # HCL, or not a SPIRE config this policy can read
    return conf if isinstance(conf, dict) else None


def _spire_rate_limits_on(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != T.K8S_CONFIGMAP:
        return
    conf = _server_conf(as_dict(_props(args).get("data")))
    if conf is None or not isinstance(conf.get("server"), dict):
        return
    limits = conf["server"].get("ratelimit")
    if limits is None:
        return  # SPIRE's defaults: both on
    off = [k for k in RATE_LIMITS if not isinstance(limits, dict) or limits.get(k) is False]
    if off:
        report(f"SPIRE server config {args.name!r} turns off the {' and '.join(off)} rate limit "
               f"(server.ratelimit): a cold start or a runaway agent can then take the whole server", None)


# vault-rate-limit-quotas -----------------------------------------------------------------------

QUOTAS_SCHEMA = _schema(maxRate={
    "type": "number", "default": 1000,
    "description": "Highest rate (requests per interval per client IP) a guarding quota may allow.",
})
AUTH_BACKENDS = (T.VAULT_AUTH_BACKEND, T.VAULT_JWT_AUTH_BACKEND)
GUARDED_AUTH_TYPES = ("jwt", "cert")


def _covers(quota_path: Any, path: str) -> bool:
    """Whether a quota on ``quota_path`` (mount, mount + suffix, ``*`` glob) applies to
    requests under ``path``."""
    if not isinstance(quota_path, str):
        return quota_path is UNKNOWN  # cannot tell during preview: never a violation
    q = quota_path.strip("/")
    if q == "":
        return True  # the global quota
    if q.endswith("*"):
        q = q[:-1].rstrip("/")
    return path == q or path.startswith(q + "/")


def _vault_rate_limit_quotas(args: StackValidationArgs, report: ReportViolation) -> None:
    max_rate = _cfg(args, QUOTAS_SCHEMA)["maxRate"]
    resources = _resources(args, {*AUTH_BACKENDS, T.VAULT_MOUNT, T.VAULT_QUOTA_RATE_LIMIT})
    quotas = [r for r in resources if r.type == T.VAULT_QUOTA_RATE_LIMIT]
    guarding = []
    for q in quotas:
        rate = q.props.get("rate")
        if isinstance(rate, int | float) and rate > max_rate:
            report(f"rate-limit quota {q.name!r} allows {rate:g} requests per interval per client, above "
                   f"the pack's maxRate ({max_rate:g}): it would not stop a storm", q.urn)
        else:
            guarding.append(q)
    targets: list[tuple[str, str, str]] = []
    for r in resources:
        path = r.props.get("path")
        if not isinstance(path, str):
            continue
        if r.type in AUTH_BACKENDS and r.props.get("type", "jwt") in GUARDED_AUTH_TYPES:
            targets.append((r.urn, f"login path auth/{path.strip('/')}/login", f"auth/{path.strip('/')}/login"))
        elif r.type == T.VAULT_MOUNT and r.props.get("type") == "database":
            targets.append((r.urn, f"database mount {path.strip('/')}/creds", f"{path.strip('/')}/creds"))
    for urn, what, path in targets:
        if not any(_covers(q.props.get("path", ""), path) for q in guarding):
            report(f"the {what} has no rate-limit quota: a cold start or a retry loop reaches Vault and the "
                   f"database unthrottled", urn)
