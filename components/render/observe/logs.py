"""The log pipeline: Vault, OPA, Envoy and SPIRE logs to ECS documents (Elasticsearch ingest pipeline
or Logstash).
"""

from __future__ import annotations

import re
from typing import Any

from components.platform_model import Platform
from components.render.observe.common import ECS_VERSION

# --------------------------------------------------------------------------- log pipeline (ECS)


def _proc(kind: str, cond: str | None = None, **body: Any) -> dict[str, Any]:
    if cond is not None:
        body["if"] = cond
    return {kind: dict(sorted(body.items()))}


RAW = "agentpassport.raw"
_IS_VAULT = "ctx.agentpassport?.raw?.type != null && ctx.agentpassport?.raw?.request != null"
_IS_OPA = "ctx.agentpassport?.raw?.decision_id != null"
_IS_ENVOY = "ctx.agentpassport?.raw?.duration_ms != null && ctx.agentpassport?.raw?.request_id != null"
_IS_SPIRE = "ctx.agentpassport?.raw?.msg != null && ctx.agentpassport?.raw?.level != null"


def _ds(name: str) -> str:
    return f"ctx.event?.dataset == '{name}'"


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
        _proc("set", "ctx.message != null", field="event.original", copy_from="message", ignore_empty_value=True),
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
        _proc("rename", vault, field=f"{RAW}.type", target_field="agentpassport.vault.log_type", ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.request.path", target_field="url.path", ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.request.operation", target_field="agentpassport.vault.operation",
              ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.request.remote_address", target_field="source.ip", ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.request.id", target_field="agentpassport.vault.request_id",
              ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.auth.metadata.role", target_field="agentpassport.vault.role",
              ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.auth.display_name", target_field="user.name", ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.response.data.username", target_field="agentpassport.database.user",
              ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.error", target_field="error.message", ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.request.headers.traceparent", target_field="agentpassport.traceparent",
              ignore_missing=True),
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
        _proc("rename", opa, field=f"{RAW}.decision_id", target_field="event.id", ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.attributes.source.principal", target_field="spiffe_id",
              ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.attributes.destination.principal",
              target_field="agentpassport.destination.spiffe_id", ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.attributes.source.address.socketAddress.address",
              target_field="source.ip", ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.attributes.request.http.method",
              target_field="http.request.method", ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.parsed_path", target_field="agentpassport.opa.parsed_path",
              ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.attributes.request.http.path", target_field="url.original",
              ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.attributes.request.http.headers.traceparent",
              target_field="agentpassport.traceparent", ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.attributes.request.http.headers.x-request-id",
              target_field="http.request.id", ignore_missing=True),
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
        _proc("rename", envoy, field=f"{RAW}.spiffe_id", target_field="spiffe_id", ignore_missing=True),
        _proc("rename", envoy, field=f"{RAW}.method", target_field="http.request.method", ignore_missing=True),
        _proc("rename", envoy, field=f"{RAW}.path", target_field="url.original", ignore_missing=True),
        _proc("rename", envoy, field=f"{RAW}.status", target_field="http.response.status_code", ignore_missing=True),
        _proc("rename", envoy, field=f"{RAW}.request_id", target_field="http.request.id", ignore_missing=True),
        _proc("rename", envoy, field=f"{RAW}.authz_reason", target_field="event.reason", ignore_missing=True),
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
        _proc("rename", spire, field=f"{RAW}.spiffe_id", target_field="spiffe_id", ignore_missing=True),
        _proc("rename", spire, field=f"{RAW}.entry_id", target_field="agentpassport.spire.entry_id",
              ignore_missing=True),
        _proc("rename", spire, field=f"{RAW}.level", target_field="log.level", ignore_missing=True),
        _proc("rename", spire, field=f"{RAW}.subsystem_name", target_field="agentpassport.spire.subsystem",
              ignore_missing=True),
        _proc("rename", spire, field=f"{RAW}.caller_id", target_field="agentpassport.spire.caller_id",
              ignore_missing=True),
        _proc("rename", spire, field=f"{RAW}.method", target_field="agentpassport.spire.method", ignore_missing=True),
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
    """The same mapping as :func:`ingest_pipeline` as a Logstash filter (stacks with Logstash)."""
    cfg = platform.config
    jwt_prefix = f"{cfg.vault.jwt_mount}-"
    idx = cfg.observe.logs.index_pattern.rstrip("*").rstrip("-")
    return f"""# Agent Passport ({platform.stack}): SPIRE, Vault audit and OPA decision logs to ECS.
# Generated by `passport render`; input and output blocks are yours (beats/http/socket in,
# elasticsearch out). See docs/observe.md.
filter {{
  json {{ source => "message" target => "[agentpassport][raw]" skip_on_invalid_json => true }}
  mutate {{ add_field => {{ "[ecs][version]" => "{ECS_VERSION}" "[event][stack]" => "{platform.stack}" }} }}
  if [agentpassport][raw][type] and [agentpassport][raw][request] {{
    mutate {{ add_field => {{ "[event][dataset]" => "vault.audit" "[event][kind]" => "event" }} }}
    date {{ match => ["[agentpassport][raw][time]", "ISO8601"] }}
    mutate {{
      rename => {{
        "[agentpassport][raw][type]" => "[agentpassport][vault][log_type]"
        "[agentpassport][raw][request][path]" => "[url][path]"
        "[agentpassport][raw][request][operation]" => "[agentpassport][vault][operation]"
        "[agentpassport][raw][request][remote_address]" => "[source][ip]"
        "[agentpassport][raw][request][id]" => "[agentpassport][vault][request_id]"
        "[agentpassport][raw][auth][metadata][role]" => "[agentpassport][vault][role]"
        "[agentpassport][raw][auth][display_name]" => "[user][name]"
        "[agentpassport][raw][response][data][username]" => "[agentpassport][database][user]"
        "[agentpassport][raw][error]" => "[error][message]"
        "[agentpassport][raw][request][headers][traceparent]" => "[agentpassport][traceparent]"
      }}
    }}
    if [user][name] =~ /^{re.escape(jwt_prefix)}spiffe:\\/\\// {{
      mutate {{ copy => {{ "[user][name]" => "spiffe_id" }} }}
      mutate {{ gsub => ["spiffe_id", "^{re.escape(jwt_prefix)}", ""] }}
    }}
    if [agentpassport][vault][role] =~ /^agent-/ {{
      mutate {{ copy => {{ "[agentpassport][vault][role]" => "[agentpassport][agent]" }} }}
      mutate {{ gsub => ["[agentpassport][agent]", "^agent-", ""] }}
    }}
    if [url][path] =~ /\\/creds\\// {{
      mutate {{ add_field => {{ "[event][action]" => "vault-database-credentials" }} }}
    }} else if [url][path] =~ /^auth\\/.*\\/login$/ {{
      mutate {{ add_field => {{ "[event][action]" => "vault-login" }} }}
    }} else {{
      mutate {{ add_field => {{ "[event][action]" => "vault-%{{[agentpassport][vault][operation]}}" }} }}
    }}
    if [error][message] {{
      mutate {{ add_field => {{ "[event][outcome]" => "failure" }} }}
    }} else if [agentpassport][vault][log_type] == "response" {{
      mutate {{ add_field => {{ "[event][outcome]" => "success" }} }}
    }} else {{
      mutate {{ add_field => {{ "[event][outcome]" => "unknown" }} }}
    }}
  }} else if [agentpassport][raw][decision_id] {{
    mutate {{
      add_field => {{
        "[event][dataset]" => "opa.decision" "[event][kind]" => "event" "[event][action]" => "authorization-check"
      }}
    }}
    date {{ match => ["[agentpassport][raw][timestamp]", "ISO8601"] }}
    mutate {{
      rename => {{
        "[agentpassport][raw][decision_id]" => "[event][id]"
        "[agentpassport][raw][input][attributes][source][principal]" => "spiffe_id"
        "[agentpassport][raw][input][attributes][destination][principal]" => "[agentpassport][destination][spiffe_id]"
        "[agentpassport][raw][input][attributes][source][address][socketAddress][address]" => "[source][ip]"
        "[agentpassport][raw][input][attributes][request][http][method]" => "[http][request][method]"
        "[agentpassport][raw][input][attributes][request][http][path]" => "[url][original]"
        "[agentpassport][raw][input][attributes][request][http][headers][traceparent]" => "[agentpassport][traceparent]"
        "[agentpassport][raw][input][attributes][request][http][headers][x-request-id]" => "[http][request][id]"
      }}
    }}
    if [url][original] {{
      grok {{ match => {{ "[url][original]" => "^%{{URIPATH:[url][path]}}(?:\\?%{{GREEDYDATA:[url][query]}})?$" }} }}
    }}
    if [agentpassport][raw][result] == "true" or [agentpassport][raw][result][allowed] == "true" {{
      mutate {{ add_field => {{ "[event][outcome]" => "success" }} }}
    }} else {{
      mutate {{ add_field => {{ "[event][outcome]" => "failure" }} }}
    }}
  }} else if [agentpassport][raw][msg] and [agentpassport][raw][level] {{
    mutate {{ add_field => {{ "[event][dataset]" => "spire" "[event][kind]" => "event" }} }}
    date {{ match => ["[agentpassport][raw][time]", "ISO8601"] }}
    mutate {{
      rename => {{
        "[agentpassport][raw][spiffe_id]" => "spiffe_id"
        "[agentpassport][raw][entry_id]" => "[agentpassport][spire][entry_id]"
        "[agentpassport][raw][level]" => "[log][level]"
        "[agentpassport][raw][subsystem_name]" => "[agentpassport][spire][subsystem]"
        "[agentpassport][raw][caller_id]" => "[agentpassport][spire][caller_id]"
        "[agentpassport][raw][method]" => "[agentpassport][spire][method]"
      }}
    }}
    if [agentpassport][raw][msg] == "Creating X509-SVID" {{
      mutate {{ add_field => {{ "[event][action]" => "x509-svid-created" "[event][outcome]" => "success" }} }}
    }} else if [agentpassport][raw][msg] == "Renewing X509-SVID" {{
      mutate {{ add_field => {{ "[event][action]" => "x509-svid-renewed" "[event][outcome]" => "success" }} }}
    }} else {{
      mutate {{ add_field => {{ "[event][action]" => "spire-log" }} }}
      if [agentpassport][raw][type] == "audit" and [agentpassport][raw][status] == "error" {{
        mutate {{ add_field => {{ "[event][outcome]" => "failure" }} }}
      }}
    }}
  }}
  if [agentpassport][traceparent] {{
    dissect {{
      mapping => {{ "[agentpassport][traceparent]" => "%{{?version}}-%{{[trace][id]}}-%{{[span][id]}}-%{{?flags}}" }}
    }}
  }}
  mutate {{
    add_field => {{ "[agentpassport][trust_domain]" => "{cfg.trust_domain}" }}
    remove_field => ["[agentpassport][raw]", "[agentpassport][traceparent]"]
  }}
}}
# Send the result to indices matching {cfg.observe.logs.index_pattern} (e.g. "{idx}-%{{+YYYY.MM.dd}}").
"""
