"""The ECS mapping as OpenTelemetry Transformation Language statements (the transform processor).

Mask credentials in the raw line, parse it, build the ECS document from the rename table the
Elasticsearch and Logstash pipelines share (:data:`components.render.observe.logs.FIELD_RENAMES`)
plus the WORM-only fields, and make the document the record's body.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from components.platform_model import Platform
from components.render.audit.common import DATASET_ATTR, DATASETS, MASKED, PSEUDONYM_ENV, REDACTED
from components.render.credentials import QUERY_MASK_PATTERN, QUERY_MASK_REPLACEMENT_JAVA
from components.render.observe.common import ECS_VERSION
from components.render.observe.logs import FIELD_RENAMES, Rename
from components.render.rego import gateway_services

CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-vault-token",
                      "x-api-key", "x-amz-security-token")
CREDENTIAL_KEYS = ("password", "passwd", "secret", "token", "client_secret", "access_token", "refresh_token",
                   "id_token", "api_key", "apikey", "private_key", "secret_key", "session_token",
                   "aws_secret_access_key", "aws_session_token")
"""JSON keys whose string (or list of strings) value is a credential wherever they appear."""
_NAMES = "|".join(re.escape(h) for h in (*CREDENTIAL_HEADERS, *CREDENTIAL_KEYS))
_STR = r'"(?:[^"\\]|\\.)*"'
"""A JSON string."""
_ESC_STR = r'\\"(?:[^"\\]|\\[^"])*\\"'
"""A JSON string inside a JSON string (``\"...\"``: a document logged as text)."""
MASK_PATTERNS: tuple[tuple[str, str], ...] = (
    # "authorization": "Bearer abc" or ["Basic xyz"], "password": "..."  (JSON, any case)
    #   -> "authorization": "[masked]"  (a key with an object value, e.g. Vault's "secret", is kept)
    (rf'(?i)("(?:{_NAMES})"\s*:\s*)(?:{_STR}|\[\s*(?:{_STR}\s*(?:,\s*{_STR}\s*)*)?\])',
     '$1"' + MASKED + '"'),
    # the same inside an escaped JSON string: {\"authorization\":\"Basic xyz\"}
    (rf'(?i)(\\"(?:{_NAMES})\\"\s*:\s*)(?:{_ESC_STR}|\[\s*(?:{_ESC_STR}\s*(?:,\s*{_ESC_STR}\s*)*)?\])',
     '$1\\"' + MASKED + '\\"'),
    # OPA's parsed_query (every query parameter, as lists): the whole object
    (r'("parsed_query"\s*:\s*)\{(?:[^{}"]|' + _STR + r')*\}', '$1"' + MASKED + '"'),
    # ?access_token=abc&... / \u0026api_key=... (Go's JSON escapes &) in any URL or path
    (QUERY_MASK_PATTERN, QUERY_MASK_REPLACEMENT_JAVA),
    # authorization=Bearer abc / Authorization: Basic xyz (text)
    (r"(?i)((?:" + "|".join(re.escape(h) for h in CREDENTIAL_HEADERS) + r")\s*[=:]\s*)[^\s,;\"}]+(\s+[^\s,;\"}]+)?",
     "$1" + MASKED),
    # password=hunter2 / secret: abc (text; one word, so what follows is kept)
    (r"(?i)(\b(?:" + "|".join(re.escape(k) for k in CREDENTIAL_KEYS) + r")\s*[=:]\s*)[^\s,;&\"}]+",
     "$1" + MASKED),
    # a bearer token anywhere else
    (r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}", "$1" + MASKED),
)
"""Credentials masked in every raw line before it is parsed or stored (regex, replacement)."""

EXTRA_RENAMES: dict[str, tuple[Rename, ...]] = {
    "vault.audit": (
        Rename("auth.entity_id", "agentpassport.vault.entity_id"),
        Rename("response.secret.lease_id", "agentpassport.vault.lease_id"),
        Rename("request.mount_type", "agentpassport.vault.mount_type"),
    ),
    "spire": (
        Rename("agent_id", "agentpassport.spire.agent_id"),
        Rename("node_attestor_type", "agentpassport.spire.attestor"),
        Rename("request_id", "agentpassport.spire.request_id"),
        Rename("status", "agentpassport.spire.status"),
        Rename("type", "agentpassport.spire.log_type"),
    ),
}
"""Fields only the WORM pipeline keeps (the chain login -> entity -> lease -> database user,
and attestation)."""

PERSON_PATHS = r"^(auth/[^/]+/(?:login|users|user|groups)|identity/(?:entity|entity-alias|group)/name)/.+$"
"""Vault paths whose last segments name a person (userpass, ldap, okta, radius; identity by name)."""

SPIRE_ACTIONS = {
    "Agent attestation request completed": "node-attested",
    "Signed X509 SVID": "x509-svid-signed",
    "Signed JWT SVID": "jwt-svid-signed",
    "Creating X509-SVID": "x509-svid-created",
    "Renewing X509-SVID": "x509-svid-renewed",
}
"""SPIRE log messages -> event.action (anything else: spire-log)."""


# --------------------------------------------------------------------------- OTTL


def ottl_str(text: str) -> str:
    """An OTTL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _path(root: str, dotted: str | Sequence[str]) -> str:
    parts = dotted.split(".") if isinstance(dotted, str) else list(dotted)
    return root + "".join(f"[{ottl_str(p)}]" for p in parts)


def doc(dotted: str) -> str:
    """A field of the ECS document being built (``log.cache["doc"]...``)."""
    return _path('log.cache["doc"]', dotted)


def raw(dotted: str) -> str:
    """A field of the parsed log line (``log.cache["raw"]...``)."""
    return _path('log.cache["raw"]', dotted)


def _ds(dataset: str) -> str:
    return f'{doc("event.dataset")} == {ottl_str(dataset)}'


def _renames(dataset: str) -> list[str]:
    cond = _ds(dataset)
    table = (*FIELD_RENAMES.get(dataset, ()), *EXTRA_RENAMES.get(dataset, ()))
    return [f"set({doc(r.target)}, {raw(r.source)}) where {cond} and {raw(r.source)} != nil" for r in table]


def _mesh_identities(platform: Platform) -> list[tuple[str, str]]:
    """Linkerd mesh identity -> SPIFFE ID of every active agent and gateway."""
    pairs: dict[str, str] = {}
    for agent in platform.active_agents:
        lid = agent.identity.linkerd_identity
        if lid is not None:
            pairs[lid] = agent.identity.spiffe_id
    if platform.config.subsystems.authz:
        for service in gateway_services(platform):
            gw = platform.gateway(service)
            pairs[gw.linkerd_identity] = gw.spiffe_id
    return sorted(pairs.items())


def log_statements(platform: Platform) -> list[str]:
    """The transform processor's statements (log context), in order: mask, parse, map, emit."""
    cfg = platform.config
    jwt_prefix = re.escape(f"{cfg.vault.jwt_mount}-")
    vault, opa, envoy, spire, linkerd = (_ds(DATASETS[s]) for s in ("vault", "opa", "envoy", "spire", "linkerd"))
    s: list[str] = []
    # ---- credentials never get further than this: masked in the raw line first
    for pattern, replacement in MASK_PATTERNS:
        s.append(f"replace_pattern(log.body, {ottl_str(pattern)}, {ottl_str(replacement)}) where IsString(log.body)")
    s += [
        f'set(log.cache["raw"], ParseJSON(log.body)) where IsString(log.body) '
        f'and IsMatch(log.body, {ottl_str("^[{]")})',
        f'set({doc("@timestamp")}, FormatTime(log.time, {ottl_str("%Y-%m-%dT%H:%M:%S.%fZ")}))',
        f"set({doc('ecs.version')}, {ottl_str(ECS_VERSION)})",
        f'set({doc("event.dataset")}, resource.attributes[{ottl_str(DATASET_ATTR)}])',
        f"set({doc('event.kind')}, \"event\")",
        f"set({doc('event.stack')}, {ottl_str(platform.stack)})",
        f"set({doc('agentpassport.trust_domain')}, {ottl_str(cfg.trust_domain)})",
        f'set({doc("host.name")}, resource.attributes["host.name"]) where resource.attributes["host.name"] != nil',
        f'set({doc("kubernetes.namespace")}, resource.attributes["k8s.namespace.name"]) '
        'where resource.attributes["k8s.namespace.name"] != nil',
        f'set({doc("kubernetes.pod.name")}, resource.attributes["k8s.pod.name"]) '
        'where resource.attributes["k8s.pod.name"] != nil',
        f'set({doc("container.name")}, resource.attributes["k8s.container.name"]) '
        'where resource.attributes["k8s.container.name"] != nil',
        # the masked line itself, but not Vault's (its mapped fields are the record; a human's name
        # in display_name must not reach WORM storage)
        f"set({doc('event.original')}, log.body) where IsString(log.body) and not ({vault})",
    ]
    for dataset in DATASETS.values():
        s += _renames(dataset)
    # ---- Vault audit device: login -> entity -> lease -> database user
    spiffe_login = f"IsMatch({doc('user.name')}, {ottl_str('^' + jwt_prefix + 'spiffe://')})"
    s += [
        f"set({doc('@timestamp')}, {raw('time')}) where {vault} and {raw('time')} != nil",
        f"set({doc('spiffe_id')}, {doc('user.name')}) where {vault} and {doc('user.name')} != nil and {spiffe_login}",
        f"replace_pattern({doc('spiffe_id')}, {ottl_str('^' + jwt_prefix)}, \"\") where {vault} "
        f"and {doc('spiffe_id')} != nil",
    ]
    if cfg.audit.pseudonym_key_secret:
        key = f'"${{env:{PSEUDONYM_ENV}}}"'
        pseudonym = f'Concat(["pseudonym-", SHA256(Concat([{key}, {doc("user.name")}], ":"))], "")'
        s.append(f"set({doc('user.name')}, {pseudonym}) where {vault} and {doc('user.name')} != nil "
                 f"and not {spiffe_login}")
    else:
        s.append(f"set({doc('user.name')}, {ottl_str(REDACTED)}) where {vault} and {doc('user.name')} != nil "
                 f"and not {spiffe_login}")
    s += [
        f"set({doc('agentpassport.agent')}, {doc('agentpassport.vault.role')}) where {vault} "
        f"and {doc('agentpassport.vault.role')} != nil and IsMatch({doc('agentpassport.vault.role')}, \"^agent-\")",
        f"replace_pattern({doc('agentpassport.agent')}, \"^agent-\", \"\") where {vault} "
        f"and {doc('agentpassport.agent')} != nil",
        f"set({doc('event.action')}, Concat([\"vault-\", {doc('agentpassport.vault.operation')}], \"\")) "
        f"where {vault} and {doc('agentpassport.vault.operation')} != nil",
        f"set({doc('event.action')}, \"vault-database-credentials\") where {vault} and {doc('url.path')} != nil "
        f"and IsMatch({doc('url.path')}, \"/creds/\")",
        f"set({doc('event.action')}, \"vault-login\") where {vault} and {doc('url.path')} != nil "
        f"and IsMatch({doc('url.path')}, \"^auth/[^/]+/login(/.*)?$\")",
        # userpass/ldap logins and user admin name the person in the path (auth/userpass/login/<name>)
        f"replace_pattern({doc('url.path')}, {ottl_str(PERSON_PATHS)}, {ottl_str('$1/' + REDACTED)}) "
        f"where {vault} and {doc('url.path')} != nil",
        f"set({doc('event.outcome')}, \"success\") where {vault} and {doc('agentpassport.vault.log_type')} == "
        f"\"response\" and {doc('error.message')} == nil",
        f"set({doc('event.outcome')}, \"failure\") where {vault} and {doc('error.message')} != nil",
        f"set({doc('event.outcome')}, \"unknown\") where {vault} and {doc('event.outcome')} == nil",
    ]
    # ---- OPA decision logs (already masked by the gateway's mask.rego) and Envoy access logs
    s += [
        f"set({doc('@timestamp')}, {raw('timestamp')}) where {opa} and {raw('timestamp')} != nil",
        f"set({doc('agentpassport.opa.allowed')}, {raw('result.allowed')}) where {opa} and IsMap({raw('result')})",
        f"set({doc('event.reason')}, {raw('result.reason')}) where {opa} and IsMap({raw('result')}) "
        f"and {raw('result.reason')} != nil",
        f"set({doc('agentpassport.opa.allowed')}, {raw('result')}) where {opa} and IsBool({raw('result')})",
        f"set({doc('event.action')}, \"authorization-check\") where {opa}",
        f"set({doc('event.outcome')}, \"success\") where {opa} and {doc('agentpassport.opa.allowed')} == true",
        f"set({doc('event.outcome')}, \"failure\") where {opa} and {doc('event.outcome')} == nil",
        f"set({doc('@timestamp')}, {raw('time')}) where {envoy} and {raw('time')} != nil",
        f"set({doc('agentpassport.agent')}, {raw('agent')}) where {envoy} and {raw('agent')} != nil "
        f"and {raw('agent')} != \"-\"",
        f"set({doc('event.action')}, \"gateway-request\") where {envoy}",
        f"set({doc('event.outcome')}, \"success\") where {envoy} and ({raw('authz_allowed')} == true "
        f"or {raw('authz_allowed')} == \"true\")",
        f"set({doc('event.outcome')}, \"failure\") where {envoy} and {doc('event.outcome')} == nil",
        f"set({doc('url.path')}, {doc('url.original')}) where ({opa} or {envoy}) and {doc('url.original')} != nil",
        f"replace_pattern({doc('url.path')}, \"[?].*\", \"\") where ({opa} or {envoy}) and {doc('url.path')} != nil",
    ]
    # ---- SPIRE server (log_format json): attestation, SVID issuance, its audit log
    s += [
        f"set({doc('@timestamp')}, {raw('time')}) where {spire} and {raw('time')} != nil",
        f"set({doc('message')}, {raw('msg')}) where {spire} and {raw('msg')} != nil",
        f"set({doc('event.action')}, \"spire-log\") where {spire}",
    ]
    for message, action in SPIRE_ACTIONS.items():
        s.append(f"set({doc('event.action')}, {ottl_str(action)}) where {spire} "
                 f"and {doc('message')} == {ottl_str(message)}")
    s += [
        f"set({doc('event.outcome')}, \"success\") where {spire} and {doc('event.action')} != \"spire-log\"",
        f"set({doc('event.outcome')}, \"failure\") where {spire} and {raw('type')} == \"audit\" "
        f"and {raw('status')} == \"error\"",
        f"set({doc('event.outcome')}, \"success\") where {spire} and {raw('type')} == \"audit\" "
        f"and {raw('status')} == \"success\"",
    ]
    # ---- Linkerd proxy: "Request denied" / "Connection denied" (text or json log format)
    client_id = r'client_id: Some\(ClientId\(Name\(\\?"(?P<client_id>[^"\\]+)'
    s += [
        f"set({doc('event.action')}, \"mesh-authorization-denied\") where {linkerd}",
        f"set({doc('event.outcome')}, \"failure\") where {linkerd}",
        f"set({doc('message')}, \"Request denied\") where {linkerd} and IsMatch(log.body, \"Request denied\")",
        f"set({doc('message')}, \"Connection denied\") where {linkerd} and IsMatch(log.body, \"Connection denied\")",
        f'set(log.cache["lk"], ExtractPatterns(log.body, {ottl_str(client_id)})) where {linkerd}',
        f'set({doc("agentpassport.mesh.client_id")}, log.cache["lk"]["client_id"]) where {linkerd} '
        'and log.cache["lk"]["client_id"] != nil',
    ]
    for name, field, target in (("ip", r"client\.ip", "source.ip"),
                                ("server", r"server\.name", "agentpassport.mesh.server"),
                                ("route", r"route\.name", "agentpassport.mesh.route")):
        pattern = field + r'"?[=:]"?(?P<v>[^\s",}]+)'
        s += [
            f'set(log.cache["lk_{name}"], ExtractPatterns(log.body, {ottl_str(pattern)})) where {linkerd}',
            f'set({doc(target)}, log.cache["lk_{name}"]["v"]) where {linkerd} and log.cache["lk_{name}"]["v"] != nil',
        ]
    for lid, spiffe_id in _mesh_identities(platform):
        s.append(f"set({doc('spiffe_id')}, {ottl_str(spiffe_id)}) where {linkerd} "
                 f"and {doc('agentpassport.mesh.client_id')} == {ottl_str(lid)}")
    # ---- W3C trace context: traceparent = version-traceid-spanid-flags
    tp = doc("agentpassport.traceparent")
    s += [
        f'set(log.cache["tp"], ExtractPatterns({tp}, '
        f'{ottl_str("^[0-9a-f]{2}-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-[0-9a-f]{2}$")})) where {tp} != nil',
        f'set({doc("trace.id")}, log.cache["tp"]["trace"]) where log.cache["tp"]["trace"] != nil',
        f'set({doc("span.id")}, log.cache["tp"]["span"]) where log.cache["tp"]["span"] != nil',
        f'delete_key({doc("agentpassport")}, "traceparent") where {tp} != nil',
        # ---- the record is the ECS document (one JSON line in the object)
        'set(log.body, log.cache["doc"])',
    ]
    return s
