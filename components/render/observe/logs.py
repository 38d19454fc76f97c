"""The log pipeline: Vault, OPA, Envoy and SPIRE logs to ECS documents (Elasticsearch ingest pipeline
or Logstash).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jinja2

from components.platform_model import Platform
from components.render.credentials import (
    QUERY_MASK_PATTERN,
    QUERY_MASK_REPLACEMENT_JAVA,
    QUERY_MASK_REPLACEMENT_RUBY,
)
from components.render.observe.common import ECS_VERSION

# --------------------------------------------------------------------------- log pipeline (ECS)


def _proc(kind: str, cond: str | None = None, **body: Any) -> dict[str, Any]:
    if cond is not None:
        body["if"] = cond
    return {kind: dict(sorted(body.items()))}


RAW = "agentpassport.raw"
"""Where both pipelines put the parsed JSON log line; removed once mapped."""


@dataclass(frozen=True)
class Rename:
    """One field moved from the raw log line (``agentpassport.raw.<source>``) to its ECS field."""

    source: str
    """Dotted path in the raw log line."""
    target: str
    """Dotted ECS (or ``agentpassport.*``) field."""
    logstash: bool = True
    """False: only the ingest pipeline maps it (the Logstash filter leaves it out)."""


FIELD_RENAMES: dict[str, tuple[Rename, ...]] = {
    # Vault audit device (file/socket JSON)
    "vault.audit": (
        Rename("type", "agentpassport.vault.log_type"),
        Rename("request.path", "url.path"),
        Rename("request.operation", "agentpassport.vault.operation"),
        Rename("request.remote_address", "source.ip"),
        Rename("request.id", "agentpassport.vault.request_id"),
        Rename("auth.metadata.role", "agentpassport.vault.role"),
        Rename("auth.display_name", "user.name"),
        Rename("response.data.username", "agentpassport.database.user"),
        Rename("error", "error.message"),
        Rename("request.headers.traceparent", "agentpassport.traceparent"),
    ),
    # OPA decision logs (opa-envoy-plugin, console or HTTP upload)
    "opa.decision": (
        Rename("decision_id", "event.id"),
        Rename("input.attributes.source.principal", "spiffe_id"),
        Rename("input.attributes.destination.principal", "agentpassport.destination.spiffe_id"),
        Rename("input.attributes.source.address.socketAddress.address", "source.ip"),
        Rename("input.attributes.request.http.method", "http.request.method"),
        Rename("input.parsed_path", "agentpassport.opa.parsed_path", logstash=False),
        Rename("input.attributes.request.http.path", "url.original"),
        Rename("input.attributes.request.http.headers.traceparent", "agentpassport.traceparent"),
        Rename("input.attributes.request.http.headers.x-request-id", "http.request.id"),
    ),
    # Envoy gateway access log (the ingest pipeline only: the Logstash filter has no Envoy branch)
    "envoy.access": (
        Rename("spiffe_id", "spiffe_id", logstash=False),
        Rename("method", "http.request.method", logstash=False),
        Rename("path", "url.original", logstash=False),
        Rename("status", "http.response.status_code", logstash=False),
        Rename("request_id", "http.request.id", logstash=False),
        Rename("authz_reason", "event.reason", logstash=False),
        Rename("traceparent", "agentpassport.traceparent", logstash=False),
    ),
    # SPIRE server and agent logs (log_format json); "msg" becomes "message" (overriding it)
    "spire": (
        Rename("spiffe_id", "spiffe_id"),
        Rename("entry_id", "agentpassport.spire.entry_id"),
        Rename("level", "log.level"),
        Rename("subsystem_name", "agentpassport.spire.subsystem"),
        Rename("caller_id", "agentpassport.spire.caller_id"),
        Rename("method", "agentpassport.spire.method"),
    ),
}
"""The field renames of each dataset, in order: the one table both the ingest pipeline
(:func:`ingest_pipeline`) and the Logstash filter (:func:`logstash_config`) are built from."""


def _renames(dataset: str, cond: str) -> list[dict[str, Any]]:
    """The ingest pipeline's rename processors of one dataset."""
    return [_proc("rename", cond, field=f"{RAW}.{r.source}", target_field=r.target, ignore_missing=True)
            for r in FIELD_RENAMES[dataset]]


def _logstash_ref(dotted: str) -> str:
    """A Logstash field reference: ``a.b`` -> ``[a][b]``; a top-level field stays bare."""
    parts = dotted.split(".")
    return parts[0] if len(parts) == 1 else "".join(f"[{p}]" for p in parts)
_IS_VAULT = "ctx.agentpassport?.raw?.type != null && ctx.agentpassport?.raw?.request != null"
_IS_OPA = "ctx.agentpassport?.raw?.decision_id != null"
_IS_ENVOY = "ctx.agentpassport?.raw?.duration_ms != null && ctx.agentpassport?.raw?.request_id != null"
_IS_SPIRE = "ctx.agentpassport?.raw?.msg != null && ctx.agentpassport?.raw?.level != null"


def _ds(name: str) -> str:
    return f"ctx.event?.dataset == '{name}'"


def _mask_query(field: str) -> dict[str, Any]:
    """A gsub masking credential query parameters (:mod:`components.render.credentials`) in ``field``."""
    return _proc("gsub", None, field=field, pattern=QUERY_MASK_PATTERN, replacement=QUERY_MASK_REPLACEMENT_JAVA,
                 ignore_missing=True)


def ingest_pipeline(platform: Platform) -> dict[str, Any]:
    """Elasticsearch ingest pipeline: SPIRE, Vault audit and OPA decision logs to ECS.

    Input documents carry the raw JSON log line in ``message`` (Filebeat/Elastic Agent
    container input). Output: ``@timestamp``, ``event.dataset``, ``event.action``,
    ``event.outcome``, ``spiffe_id``, ``trace.id``, ``source.ip``, ``url.path``,
    ``http.request.method``, ``agentpassport.agent``, ``agentpassport.database.user``.
    Conditions use only null-safe field access, ``==``/``!=``, ``&&``/``||`` and
    ``startsWith`` so they stay readable (and the tests evaluate them).
    """
    cfg = platform.config
    jwt_prefix = f"{cfg.vault.jwt_mount}-"
    vault, opa, spire, envoy = _ds("vault.audit"), _ds("opa.decision"), _ds("spire"), _ds("envoy.access")
    p: list[dict[str, Any]] = [
        _proc("set", field="ecs.version", value=ECS_VERSION),
        # credentials in query strings (?access_token=...) never reach the index: masked in the raw line
        # before anything is copied or parsed from it (event.original, url.original, message)
        _mask_query("message"),
        _proc("set", "ctx.message != null", field="event.original", copy_from="message", ignore_empty_value=True),
        _mask_query("event.original"),
        _proc("json", "ctx.message != null", field="message", target_field=RAW, ignore_failure=True),
        _proc("set", _IS_VAULT, field="event.dataset", value="vault.audit"),
        _proc("set", _IS_OPA, field="event.dataset", value="opa.decision"),
        _proc("set", _IS_ENVOY, field="event.dataset", value="envoy.access"),
        _proc("set", _IS_SPIRE + " && ctx.event?.dataset == null", field="event.dataset", value="spire"),
        _proc("set", "ctx.event?.dataset != null", field="event.kind", value="event"),
        _proc("set", "ctx.event?.dataset != null", field="event.stack", value=platform.stack),
        _proc("set", "ctx.event?.dataset != null", field="agentpassport.trust_domain", value=cfg.trust_domain),
        # ---- Vault audit device (file/socket JSON)
        _proc("date", vault, field=f"{RAW}.time", formats=["ISO8601"], ignore_failure=True),
        *_renames("vault.audit", vault),
        # JWT logins: the token's display name is "<mount>-<sub>", and sub is the SPIFFE ID.
        _proc("gsub", f"{vault} && ctx.user?.name != null && ctx.user.name.startsWith('{jwt_prefix}spiffe://')",
              field="user.name", pattern="^" + re.escape(jwt_prefix), replacement="", target_field="spiffe_id"),
        _proc("gsub", f"{vault} && ctx.agentpassport?.vault?.role != null "
                      "&& ctx.agentpassport.vault.role.startsWith('agent-')",
              field="agentpassport.vault.role", pattern="^agent-", replacement="", target_field="agentpassport.agent"),
        _proc("set", vault, field="event.action", value="vault-{{{agentpassport.vault.operation}}}"),
        _proc("set", f"{vault} && ctx.url?.path != null && ctx.url.path.contains('/creds/')",
              field="event.action", value="vault-database-credentials"),
        _proc("set", f"{vault} && ctx.url?.path != null && ctx.url.path.startsWith('auth/') "
                     "&& ctx.url.path.endsWith('/login')",
              field="event.action", value="vault-login"),
        _proc("set", f"{vault} && ctx.agentpassport?.vault?.log_type == 'response' && ctx.error?.message == null",
              field="event.outcome", value="success"),
        _proc("set", f"{vault} && ctx.error?.message != null", field="event.outcome", value="failure"),
        _proc("set", f"{vault} && ctx.event?.outcome == null", field="event.outcome", value="unknown"),
        # ---- OPA decision logs (opa-envoy-plugin, console or HTTP upload)
        _proc("date", opa, field=f"{RAW}.timestamp", formats=["ISO8601"], ignore_failure=True),
        *_renames("opa.decision", opa),
        _proc("set", f"{opa} && ctx.url?.original != null", field="url.path", copy_from="url.original"),
        _proc("gsub", f"{opa} && ctx.url?.path != null", field="url.path", pattern="\\?.*$", replacement=""),
        # The policy's result is either a boolean or an object with "allowed" (and headers).
        _proc("rename", f"{opa} && ctx.agentpassport?.raw?.result instanceof Map",
              field=f"{RAW}.result.allowed", target_field="agentpassport.opa.allowed", ignore_missing=True),
        _proc("rename", f"{opa} && ctx.agentpassport?.raw?.result instanceof Boolean",
              field=f"{RAW}.result", target_field="agentpassport.opa.allowed"),
        _proc("rename", f"{opa} && ctx.agentpassport?.raw?.result instanceof Map", field=f"{RAW}.result.reason",
              target_field="event.reason", ignore_missing=True),
        _proc("set", opa, field="event.action", value="authorization-check"),
        _proc("set", f"{opa} && ctx.agentpassport?.opa?.allowed == true", field="event.outcome", value="success"),
        _proc("set", f"{opa} && ctx.agentpassport?.opa?.allowed != true", field="event.outcome", value="failure"),
        # ---- Envoy gateway access log (the API call; OPA's reason and the agent ride along)
        _proc("date", envoy, field=f"{RAW}.time", formats=["ISO8601"], ignore_failure=True),
        *_renames("envoy.access", envoy),
        _proc("rename", f"{envoy} && ctx.agentpassport?.raw?.agent != null && ctx.agentpassport.raw.agent != '-'",
              field=f"{RAW}.agent", target_field="agentpassport.agent"),
        _proc("set", f"{envoy} && ctx.url?.original != null", field="url.path", copy_from="url.original"),
        _proc("gsub", f"{envoy} && ctx.url?.path != null", field="url.path", pattern="\\?.*$", replacement=""),
        _proc("set", envoy, field="event.action", value="gateway-request"),
        _proc("set", f"{envoy} && ctx.agentpassport?.raw?.authz_allowed == true", field="event.outcome",
              value="success"),
        _proc("set", f"{envoy} && ctx.agentpassport?.raw?.authz_allowed != true", field="event.outcome",
              value="failure"),
        # ---- SPIRE server and agent logs (log_format json)
        _proc("date", spire, field=f"{RAW}.time", formats=["ISO8601"], ignore_failure=True),
        *_renames("spire", spire),
        _proc("rename", spire, field=f"{RAW}.msg", target_field="message", ignore_missing=True, override=True),
        _proc("set", spire, field="event.action", value="spire-log"),
        _proc("set", f"{spire} && ctx.message == 'Creating X509-SVID'", field="event.action",
              value="x509-svid-created"),
        _proc("set", f"{spire} && ctx.message == 'Renewing X509-SVID'", field="event.action",
              value="x509-svid-renewed"),
        _proc("set", f"{spire} && (ctx.event?.action == 'x509-svid-created' "
                     "|| ctx.event?.action == 'x509-svid-renewed')",
              field="event.outcome", value="success"),
        _proc("set", f"{spire} && ctx.agentpassport?.raw?.type == 'audit' "
                     "&& ctx.agentpassport?.raw?.status == 'error'",
              field="event.outcome", value="failure"),
        _proc("set", f"{spire} && ctx.agentpassport?.raw?.type == 'audit' "
                     "&& ctx.agentpassport?.raw?.status == 'success'",
              field="event.outcome", value="success"),
        # ---- W3C trace context: traceparent = version-traceid-spanid-flags
        _proc("dissect", "ctx.agentpassport?.traceparent != null", field="agentpassport.traceparent",
              pattern="%{?version}-%{trace.id}-%{span.id}-%{?flags}", ignore_failure=True),
        # url.original comes from the masked line; masked again in case the shipper set it itself
        _mask_query("url.original"),
        _proc("remove", None, field=[RAW, "agentpassport.traceparent"], ignore_missing=True),
    ]
    return {
        "description": f"Agent Passport ({platform.stack}): SPIRE, Vault audit and OPA decision logs to ECS "
                       "with spiffe_id, trace.id, event.action and event.outcome",
        "processors": p,
        "on_failure": [
            _proc("set", None, field="event.kind", value="pipeline_error"),
            _proc("set", None, field="error.message", value="{{ _ingest.on_failure_message }}"),
        ],
    }


def logstash_config(platform: Platform) -> str:
    """The same mapping as :func:`ingest_pipeline` as a Logstash filter (stacks with Logstash),
    from the template ``templates/logstash.conf.j2`` and :data:`FIELD_RENAMES`."""
    cfg = platform.config
    jwt_prefix = f"{cfg.vault.jwt_mount}-"
    renames = {dataset: [(_logstash_ref(f"{RAW}.{r.source}"), _logstash_ref(r.target)) for r in table if r.logstash]
               for dataset, table in FIELD_RENAMES.items()}
    return _TEMPLATES.get_template(LOGSTASH_TEMPLATE).render(
        stack=platform.stack,
        ecs_version=ECS_VERSION,
        jwt_prefix=re.escape(jwt_prefix),
        renames=renames,
        query_mask=(QUERY_MASK_PATTERN, QUERY_MASK_REPLACEMENT_RUBY),
        trust_domain=cfg.trust_domain,
        index_pattern=cfg.observe.logs.index_pattern,
        index_prefix=cfg.observe.logs.index_pattern.rstrip("*").rstrip("-"),
    )


LOGSTASH_TEMPLATE = "logstash.conf.j2"
# Logstash, not HTML: nothing to escape; every value is ours (names, patterns) or a validated
# config value (trust domain, index pattern, mount path).
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("components.render", "templates"),
    autoescape=False,  # noqa: S701
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
