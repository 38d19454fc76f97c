"""The audit log pipeline, the pure half: collector config, Kubernetes objects, IAM documents.

A :class:`~components.platform_model.Platform` in, dicts and text out; no pulumi. The collector is
the OpenTelemetry Collector (``file_log`` receiver -> ``transform`` -> ``batch`` -> ``awss3``):

* one ``file_log`` receiver per source reads the kubelet's container log files on the node
  (``container`` operator: CRI/docker format, Kubernetes metadata from the path), drops lines
  that are not audit records (``filter`` operator) and tags its records with their dataset;
* ``transform/ecs`` masks credentials in the raw line, parses JSON, and builds one ECS document
  per line from the same rename table the Elasticsearch and Logstash pipelines use
  (:data:`components.render.observe.logs.FIELD_RENAMES`), keyed by ``spiffe_id`` and ``trace.id``;
* ``awss3/worm`` writes the documents, one JSON line each (``body`` marshaler), gzip-compressed,
  under ``<prefix>/<stack>/<dataset>/year=YYYY/month=MM/day=DD/hour=HH/`` in the Object Lock
  bucket, whose default retention locks every object (COMPLIANCE).

The config never carries a key: the AWS SDK takes its session from IRSA, EKS Pod Identity or
``credential_process`` (IAM Roles Anywhere with the collector's SVID). The policy pack refuses a
collector config with ``access_key``/``secret_key`` or key variables (``audit-collector-no-keys``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from components.config import StackConfig
from components.config.audit import CONTRIB_IMAGE, SOURCES
from components.errors import ConfigError, Problem
from components.labels import NAME_LABEL, PART_OF_LABEL
from components.platform_model import Platform
from components.render.artifacts import Artifact, kubernetes_artifacts
from components.render.aws import POLICY_VERSION, issuer_condition_prefix, roles_anywhere_trust_policy
from components.render.observe.common import ECS_VERSION
from components.render.observe.logs import FIELD_RENAMES, Rename
from components.render.rego import gateway_services
from components.render.yamlout import dump_json, dump_yaml
from components.shard import stack_scope

SUBSYSTEM = "audit"
COLLECTOR = "agentpassport-audit-collector"
"""Name of the DaemonSet, its ServiceAccount, ConfigMap and pod label."""
SPIRE_API = "spire.spiffe.io/v1alpha1"
CONFIG_DIR = "/etc/agentpassport-audit"
CONFIG_FILE = "config.yaml"
AWS_CONFIG_FILE = "aws-config"
SPIFFE_HELPER_FILE = "spiffe-helper.conf"
STATE_DIR = "/var/lib/agentpassport-audit"
"""Node directory of the file_storage extension: read offsets and the send queue survive restarts."""
SVID_DIR = "/svid"
WORKLOAD_API_DIR = "/spiffe-workload-api"
POD_LOGS = "/var/log/pods"
S3_PARTITION = "year=%Y/month=%m/day=%d/hour=%H"
DATASET_ATTR = "agentpassport.dataset"
PSEUDONYM_ENV = "AUDIT_PSEUDONYM_KEY"
NODE_ENV = "K8S_NODE_NAME"
ROLE_ARN_PLACEHOLDER = "{{collectorRoleArn}}"
PROFILE_ARN_PLACEHOLDER = "{{rolesAnywhereProfileArn}}"
TRUST_ANCHOR_PLACEHOLDER = "{{trustAnchorArn}}"
BUCKET_PLACEHOLDER = "{{auditBucket}}"
KMS_KEY_PLACEHOLDER = "{{auditKmsKeyArn}}"
MASKED = "[masked]"
REDACTED = "redacted"

DATASETS: dict[str, str] = {
    "spire": "spire",
    "vault": "vault.audit",
    "opa": "opa.decision",
    "envoy": "envoy.access",
    "linkerd": "linkerd.authz",
}
"""Source -> ECS event.dataset (also the key segment under the stack's prefix)."""

KEEP_LINES: dict[str, str | None] = {
    "spire": None,  # the server logs at its configured level; all of it is audit-relevant
    "vault": r'"type":\s*"(request|response)"',
    "opa": r'"decision_id":',
    "envoy": r'"duration_ms":',
    "linkerd": r"(Request|Connection) denied",
}
"""Per source: a line is shipped only if it matches (None: every line)."""

CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-vault-token",
                      "x-api-key", "x-amz-security-token")
MASK_PATTERNS: tuple[tuple[str, str], ...] = (
    # "authorization": "Bearer abc"  (JSON, any case) -> "authorization": "[masked]"
    (r'(?i)("(?:' + "|".join(re.escape(h) for h in CREDENTIAL_HEADERS) + r')"\s*:\s*)"(?:[^"\\]|\\.)*"',
     '$1"' + MASKED + '"'),
    # authorization=Bearer abc / Authorization: Basic xyz (text)
    (r"(?i)((?:" + "|".join(re.escape(h) for h in CREDENTIAL_HEADERS) + r")\s*[=:]\s*)[^\s,;\"}]+(\s+[^\s,;\"}]+)?",
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

SPIRE_ACTIONS = {
    "Agent attestation request completed": "node-attested",
    "Signed X509 SVID": "x509-svid-signed",
    "Signed JWT SVID": "jwt-svid-signed",
    "Creating X509-SVID": "x509-svid-created",
    "Renewing X509-SVID": "x509-svid-renewed",
}
"""SPIRE log messages -> event.action (anything else: spire-log)."""


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class AuditTarget:
    """Where the collector writes, as the renderers need it; ARNs the program creates at deploy time
    are placeholders in rendered artifacts and Outputs in the component."""

    bucket: str
    region: str
    kms_key_arn: str | None = None
    role_arn: str | None = None
    trust_anchor_arn: str | None = None
    profile_arn: str | None = None


def audit_problems(cfg: StackConfig, config_file: str) -> list[Problem]:
    """Every setting that would leave the pipeline without a bucket, a session or a collector."""
    a = cfg.audit
    out: list[Problem] = []

    def p(field: str, message: str) -> None:
        out.append(Problem(config_file, None, f"agent-passport:audit.{field}", message))

    if not cfg.subsystems.audit:
        return out
    own_aws = cfg.subsystems.aws
    if a.bucket is None and not own_aws:
        p("bucket", "name the Object Lock bucket the collector writes to, or turn on subsystems.aws "
                    "so the stack creates it")
    if a.role_arn is None and not own_aws:
        p("roleArn", "name the collector's IAM role, or turn on subsystems.aws so the stack creates it")
    if a.credentials == "roles-anywhere":
        if a.image == CONTRIB_IMAGE:
            p("image", f"credentials roles-anywhere runs aws_signing_helper inside the collector, which "
                       f"{CONTRIB_IMAGE} lacks; name an image that has it at signingHelperPath "
                       "(docs/audit.md), or use irsa / pod-identity on EKS")
        if not own_aws and (a.trust_anchor_arn is None or a.profile_arn is None):
            p("trustAnchorArn", "roles-anywhere without subsystems.aws needs trustAnchorArn and profileArn")
        if own_aws and cfg.aws.federation != "roles-anywhere" and a.trust_anchor_arn is None:
            p("credentials", "roles-anywhere needs a trust anchor: aws.federation roles-anywhere, "
                             "or name trustAnchorArn")
        if not cfg.subsystems.spire:
            p("credentials", "roles-anywhere uses the collector's SVID: turn on subsystems.spire")
    if a.credentials == "pod-identity" and a.eks_cluster_name is None:
        p("eksClusterName", "credentials pod-identity needs the EKS cluster name (the association names it)")
    if a.credentials == "irsa" and a.eks_oidc_provider_arn is None and a.role_arn is None:
        p("eksOidcProviderArn", "credentials irsa needs the cluster's IAM OIDC provider (the role trusts "
                                "it) or an existing roleArn")
    if cfg.is_strict and a.endpoint is not None and not a.endpoint.startswith("https://"):
        p("endpoint", f"{a.endpoint!r} is not https: strict stacks send audit logs over TLS only")
    return out


def validate_audit(cfg: StackConfig, config_file: str) -> None:
    problems = audit_problems(cfg, config_file)
    if problems:
        raise ConfigError(problems)


def compile_audit(platform: Platform) -> AuditTarget:
    """The pipeline's target, validated (:func:`components.compile.compile`)."""
    validate_audit(platform.config, platform.config_file)
    return audit_target(platform.config)


def audit_target(cfg: StackConfig) -> AuditTarget:
    """The target as far as config knows it (placeholders for what the program creates)."""
    a = cfg.audit
    return AuditTarget(
        bucket=a.bucket or BUCKET_PLACEHOLDER,
        region=a.region or cfg.aws.region,
        kms_key_arn=None if a.bucket else KMS_KEY_PLACEHOLDER,
        role_arn=a.role_arn or ROLE_ARN_PLACEHOLDER,
        trust_anchor_arn=a.trust_anchor_arn or TRUST_ANCHOR_PLACEHOLDER,
        profile_arn=a.profile_arn or PROFILE_ARN_PLACEHOLDER,
    )


# --------------------------------------------------------------------------- sources


def source_globs(platform: Platform) -> dict[str, list[str]]:
    """The log files each source reads (kubelet layout ``/var/log/pods/<ns>_<pod>_<uid>/<container>/``);
    a source with no files is off."""
    cfg = platform.config
    src = cfg.audit.sources
    defaults: dict[str, list[str]] = {
        "spire": [f"{POD_LOGS}/{cfg.spire.namespace}_spire-server-*/spire-server/*.log"]
        if cfg.subsystems.spire else [],
        "vault": [f"{POD_LOGS}/{cfg.audit.vault_namespace}_*/vault/*.log"] if cfg.subsystems.vault else [],
        "opa": [f"{POD_LOGS}/*_gw-*/opa/*.log"] if cfg.subsystems.authz else [],
        "envoy": [f"{POD_LOGS}/*_gw-*/envoy/*.log"] if cfg.subsystems.authz else [],
        "linkerd": [f"{POD_LOGS}/*/linkerd-proxy/*.log"] if cfg.subsystems.mesh else [],
    }
    out = {}
    for name in SOURCES:
        given = getattr(src, name)
        globs = list(given) if given is not None else defaults[name]
        if globs:
            out[name] = globs
    return out


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
        f"and IsMatch({doc('url.path')}, \"^auth/.+/login$\")",
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


def _escape_dollars(text: str) -> str:
    """The collector expands ``${...}`` in its config; ``$$`` is a literal ``$``."""
    return re.sub(r"\$(?!\{env:)", "$$", text)


# --------------------------------------------------------------------------- collector config


def collector_config(platform: Platform, target: AuditTarget, *, endpoint: str | None = None,
                     state_dir: str = STATE_DIR, telemetry_host: str = "0.0.0.0",  # noqa: S104 (pod network)
                     telemetry_port: int = 8888) -> dict[str, Any]:
    """The collector's configuration (``config.yaml``). ``endpoint`` overrides ``audit.endpoint``
    (tests point it at an S3 on 127.0.0.1); nothing here is a credential."""
    cfg = platform.config
    a = cfg.audit
    globs = source_globs(platform)
    receivers: dict[str, Any] = {}
    for source, include in globs.items():
        operators: list[dict[str, Any]] = [{"type": "container", "id": "container"}]
        keep = KEEP_LINES[source]
        if keep is not None:
            operators.append({"type": "filter", "id": "audit-lines-only",
                              "expr": f"not (body matches {_expr_str(keep)})"})
        receivers[f"file_log/{source}"] = {
            "include": include,
            "start_at": "beginning",
            "include_file_path": True,  # the container operator reads namespace, pod and container from it
            "storage": "file_storage",
            "operators": operators,
            "resource": {DATASET_ATTR: DATASETS[source], "host.name": f"${{env:{NODE_ENV}}}"},
        }
    endpoint = endpoint or a.endpoint
    uploader: dict[str, Any] = {
        "region": target.region,
        "s3_bucket": target.bucket,
        "s3_base_prefix": f"{a.prefix}/{platform.stack}",
        "s3_prefix": "other",
        "s3_partition_format": S3_PARTITION,
        "s3_partition_timezone": "UTC",
        "file_prefix": f"${{env:{NODE_ENV}}}_",
        "unique_key_func_name": "uuidv7",
        "compression": "gzip",
        "retry_mode": "standard",
        "retry_max_attempts": 10,
    }
    if endpoint is not None:
        uploader |= {"endpoint": endpoint, "s3_force_path_style": True}
    statements = [_escape_dollars(st) for st in log_statements(platform)]
    return {
        "extensions": {"file_storage": {"directory": state_dir, "create_directory": True}},
        "receivers": receivers,
        "processors": {
            "transform/ecs": {"error_mode": "ignore", "log_statements": [{"context": "log", "statements": statements}]},
            "batch": {"timeout": a.batch_timeout, "send_batch_size": 5000, "send_batch_max_size": 10000},
        },
        "exporters": {
            "awss3/worm": {
                "s3uploader": uploader,
                "marshaler": "body",
                "resource_attrs_to_s3": {"s3_prefix": DATASET_ATTR},
                # never give up on a batch: audit lines wait on the node's disk until S3 takes them
                "retry_on_failure": {"enabled": True, "max_elapsed_time": "0s"},
                "sending_queue": {"enabled": True, "storage": "file_storage"},
            },
        },
        "service": {
            "extensions": ["file_storage"],
            "pipelines": {"logs": {"receivers": sorted(receivers), "processors": ["transform/ecs", "batch"],
                                   "exporters": ["awss3/worm"]}},
            "telemetry": {
                "logs": {"level": "info", "encoding": "json"},
                "metrics": {"level": "basic", "readers": [{"pull": {"exporter": {"prometheus": {
                    "host": telemetry_host, "port": telemetry_port}}}}]},
            },
        },
    }


def _expr_str(text: str) -> str:
    """An expr-lang string literal (the stanza filter operator's language)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def aws_shared_config(target: AuditTarget, cfg: StackConfig) -> str:
    """``AWS_CONFIG_FILE`` for roles-anywhere: the SDK runs aws_signing_helper as credential_process
    on each refresh, with the SVID files spiffe-helper keeps current. No key is in it."""
    helper = cfg.audit.signing_helper_path
    return (
        "[default]\n"
        f"region = {target.region}\n"
        f"credential_process = {helper} credential-process"
        f" --certificate {SVID_DIR}/svid.pem --private-key {SVID_DIR}/svid_key.pem"
        f" --trust-anchor-arn {target.trust_anchor_arn} --profile-arn {target.profile_arn}"
        f" --role-arn {target.role_arn}\n"
    )


def spiffe_helper_config() -> str:
    return (
        f'agent_address = "{WORKLOAD_API_DIR}/spire-agent.sock"\n'
        f'cert_dir = "{SVID_DIR}"\n'
        'svid_file_name = "svid.pem"\n'
        'svid_key_file_name = "svid_key.pem"\n'
        'svid_bundle_file_name = "bundle.pem"\n'
        "daemon_mode = true\n"
    )


# --------------------------------------------------------------------------- identity and IAM


def collector_spiffe_id(cfg: StackConfig) -> str:
    """The collector's own SPIFFE ID (roles-anywhere): one registration, like any agent."""
    return f"spiffe://{cfg.trust_domain}/ns/{cfg.audit.namespace}/sa/{COLLECTOR}"


def collector_role_name(stack: str) -> str:
    return f"agentpassport-{stack}-audit-collector"[:64]


def collector_policy(bucket: str, prefix: str, stack: str, kms_key_arn: str | None) -> dict[str, Any]:
    """Append-only: PutObject under the stack's prefix, nothing else (no read, delete, retention
    or governance bypass)."""
    statements: list[dict[str, Any]] = [{
        "Sid": "WriteAuditObjects",
        "Effect": "Allow",
        "Action": ["s3:PutObject"],
        "Resource": [f"arn:aws:s3:::{bucket}/{prefix}/{stack}/*"],
    }]
    if kms_key_arn is not None:
        statements.append({"Sid": "EncryptWithAuditKey", "Effect": "Allow",
                           "Action": ["kms:GenerateDataKey"], "Resource": [kms_key_arn]})
    return {"Version": POLICY_VERSION, "Statement": statements}


def irsa_trust_policy(provider_arn: str, namespace: str) -> dict[str, Any]:
    issuer = issuer_condition_prefix("https://" + provider_arn.split(":oidc-provider/", 1)[1])
    return {
        "Version": POLICY_VERSION,
        "Statement": [{
            "Sid": "AgentPassportAuditIrsa",
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {f"{issuer}:sub": f"system:serviceaccount:{namespace}:{COLLECTOR}",
                                           f"{issuer}:aud": "sts.amazonaws.com"}},
        }],
    }


def pod_identity_trust_policy(cluster: str, namespace: str) -> dict[str, Any]:
    return {
        "Version": POLICY_VERSION,
        "Statement": [{
            "Sid": "AgentPassportAuditPodIdentity",
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": {"StringEquals": {"aws:RequestTag/eks-cluster-name": cluster,
                                           "aws:RequestTag/kubernetes-namespace": namespace,
                                           "aws:RequestTag/kubernetes-service-account": COLLECTOR}},
        }],
    }


def collector_trust_policy(cfg: StackConfig, trust_anchor_arn: str) -> dict[str, Any]:
    a = cfg.audit
    if a.credentials == "irsa":
        assert a.eks_oidc_provider_arn is not None
        return irsa_trust_policy(a.eks_oidc_provider_arn, a.namespace)
    if a.credentials == "pod-identity":
        assert a.eks_cluster_name is not None
        return pod_identity_trust_policy(a.eks_cluster_name, a.namespace)
    return roles_anywhere_trust_policy(collector_spiffe_id(cfg), trust_anchor_arn)


# --------------------------------------------------------------------------- Kubernetes objects


def _labels() -> dict[str, str]:
    return {NAME_LABEL: COLLECTOR, PART_OF_LABEL: "agent-passport"}


def _meta(cfg: StackConfig, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": cfg.audit.namespace, "labels": _labels(), **extra}


def collector_configmap(platform: Platform, target: AuditTarget) -> dict[str, Any]:
    cfg = platform.config
    data = {CONFIG_FILE: dump_yaml(collector_config(platform, target))}
    if cfg.audit.credentials == "roles-anywhere":
        data[AWS_CONFIG_FILE] = aws_shared_config(target, cfg)
        data[SPIFFE_HELPER_FILE] = spiffe_helper_config()
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(cfg, COLLECTOR), "data": data}


def cluster_spiffe_id(cfg: StackConfig) -> dict[str, Any]:
    """The collector's registration (roles-anywhere): namespace and ServiceAccount from the pod."""
    return {
        "apiVersion": SPIRE_API,
        "kind": "ClusterSPIFFEID",
        "metadata": {"name": f"agentpassport.audit-collector.{cfg.audit.namespace}", "labels": _labels()},
        "spec": {
            "className": cfg.spire.class_name,
            "spiffeIDTemplate": ("spiffe://" + cfg.trust_domain + "/ns/{{ .PodMeta.Namespace }}"
                                 "/sa/{{ .PodSpec.ServiceAccountName }}"),
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cfg.audit.namespace}},
            "podSelector": {"matchLabels": {NAME_LABEL: COLLECTOR}},
        },
    }


def daemonset(platform: Platform, target: AuditTarget, config_hash: str = "") -> dict[str, Any]:
    cfg = platform.config
    a = cfg.audit
    env: list[dict[str, Any]] = [
        {"name": NODE_ENV, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "AWS_REGION", "value": target.region},
    ]
    if a.pseudonym_key_secret:
        env.append({"name": PSEUDONYM_ENV, "valueFrom": {"secretKeyRef": {"name": f"{COLLECTOR}-pseudonym",
                                                                          "key": "key"}}})
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "pod-logs", "mountPath": POD_LOGS, "readOnly": True},
        {"name": "state", "mountPath": STATE_DIR},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": COLLECTOR}},
        {"name": "pod-logs", "hostPath": {"path": POD_LOGS, "type": "Directory"}},
        {"name": "state", "hostPath": {"path": STATE_DIR, "type": "DirectoryOrCreate"}},
    ]
    containers: list[dict[str, Any]] = []
    if a.credentials == "roles-anywhere":
        env.append({"name": "AWS_CONFIG_FILE", "value": f"{CONFIG_DIR}/{AWS_CONFIG_FILE}"})
        mounts.append({"name": "svid", "mountPath": SVID_DIR, "readOnly": True})
        volumes += [
            {"name": "svid", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            {"name": "spiffe-workload-api", "csi": {"driver": "csi.spiffe.io", "readOnly": True}},
        ]
        containers.append({
            "name": "spiffe-helper",
            "image": a.spiffe_helper_image,
            "args": ["-config", f"{CONFIG_DIR}/{SPIFFE_HELPER_FILE}"],
            "volumeMounts": [
                {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                {"name": "svid", "mountPath": SVID_DIR},
                {"name": "spiffe-workload-api", "mountPath": WORKLOAD_API_DIR, "readOnly": True},
            ],
            "securityContext": _restricted(run_as_root=False),
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        })
    collector = {
        "name": "collector",
        "image": a.image,
        "args": [f"--config={CONFIG_DIR}/{CONFIG_FILE}"],
        "env": env,
        "volumeMounts": mounts,
        # reads root-owned 0640 pod logs: root, but no capability, no escalation, read-only root fs
        "securityContext": _restricted(run_as_root=True),
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    }
    containers.insert(0, collector)
    annotations = {"linkerd.io/inject": "disabled"}
    if config_hash:
        annotations["agentpassport.dev/config-hash"] = config_hash
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(cfg, COLLECTOR),
        "spec": {
            "selector": {"matchLabels": {NAME_LABEL: COLLECTOR}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": _labels(), "annotations": annotations},
                "spec": {
                    "serviceAccountName": COLLECTOR,
                    "automountServiceAccountToken": False,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],
                    "containers": containers,
                    "volumes": volumes,
                },
            },
        },
    }


def _restricted(run_as_root: bool) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    ctx |= {"runAsUser": 0, "runAsNonRoot": False} if run_as_root else {"runAsUser": 65532, "runAsNonRoot": True}
    return ctx


def audit_objects(platform: Platform, target: AuditTarget | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object of the pipeline, in apply order."""
    cfg = platform.config
    target = target or audit_target(cfg)
    sa_meta = _meta(cfg, COLLECTOR)
    if cfg.audit.credentials == "irsa":
        sa_meta["annotations"] = {"eks.amazonaws.com/role-arn": target.role_arn}
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": cfg.audit.namespace, "labels": _labels(),
                      "annotations": {"linkerd.io/inject": "disabled"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": sa_meta, "automountServiceAccountToken": False},
        collector_configmap(platform, target),
        daemonset(platform, target),
    ]
    if cfg.audit.credentials == "roles-anywhere":
        objects.insert(0, cluster_spiffe_id(cfg))
    return objects


# --------------------------------------------------------------------------- queries and artifacts


def athena_table(platform: Platform, bucket: str) -> str:
    """An Athena table over the stack's objects (partition projection by dataset and day)."""
    a = platform.config.audit
    location = f"s3://{bucket}/{a.prefix}/{platform.stack}/"
    name = re.sub(r"[^a-z0-9_]", "_", f"agentpassport_audit_{platform.stack}")
    datasets = ",".join(DATASETS.values())
    return f"""-- Agent Passport audit trail of stack {platform.stack} (docs/audit.md). Generated; do not edit.
CREATE EXTERNAL TABLE IF NOT EXISTS {name} (
  `@timestamp` string,
  spiffe_id string,
  trace struct<id:string>,
  span struct<id:string>,
  event struct<dataset:string, action:string, outcome:string, reason:string, kind:string, original:string>,
  message string,
  url struct<path:string, original:string>,
  http struct<request:struct<method:string, id:string>, response:struct<status_code:string>>,
  source struct<ip:string>,
  `user` struct<name:string>,
  agentpassport struct<agent:string, destination:struct<spiffe_id:string>,
    vault:struct<role:string, operation:string, entity_id:string, lease_id:string, request_id:string>,
    database:struct<`user`:string>, opa:struct<allowed:boolean>,
    spire:struct<entry_id:string, agent_id:string, caller_id:string, method:string, status:string>,
    mesh:struct<client_id:string, server:string, route:string>>
)
PARTITIONED BY (dataset string, year string, month string, day string, hour string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION '{location}'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dataset.type' = 'enum',
  'projection.dataset.values' = '{datasets}',
  'projection.year.type' = 'integer', 'projection.year.range' = '2024,2100',
  'projection.month.type' = 'integer', 'projection.month.range' = '1,12', 'projection.month.digits' = '2',
  'projection.day.type' = 'integer', 'projection.day.range' = '1,31', 'projection.day.digits' = '2',
  'projection.hour.type' = 'integer', 'projection.hour.range' = '0,23', 'projection.hour.digits' = '2',
  'storage.location.template' = '{location}${{dataset}}/year=${{year}}/month=${{month}}/day=${{day}}/hour=${{hour}}/'
);
"""


def audit_artifacts(platform: Platform) -> Iterable[Artifact]:
    """``kubernetes/audit/*.yaml``, ``audit/collector.yaml`` and IAM documents, ``audit/athena.sql``."""
    cfg = platform.config
    if not cfg.subsystems.audit or stack_scope(cfg) == "agents":
        return []
    target = compile_audit(platform)
    out = kubernetes_artifacts(SUBSYSTEM, audit_objects(platform, target))
    out.append(Artifact("audit/collector.yaml", dump_yaml(collector_config(platform, target))))
    policy = collector_policy(target.bucket, cfg.audit.prefix, platform.stack, target.kms_key_arn)
    out.append(Artifact("audit/collector-policy.json", dump_json(policy)))
    out.append(Artifact("audit/collector-trust-policy.json",
                        dump_json(collector_trust_policy(cfg, target.trust_anchor_arn or TRUST_ANCHOR_PLACEHOLDER))))
    out.append(Artifact("audit/athena.sql", athena_table(platform, target.bucket)))
    return out
