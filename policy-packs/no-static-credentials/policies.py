"""Agent Passport's policies: no static credentials, short lifetimes, one identity per agent.

Importing this module has no side effects: it defines the policies and the list
:data:`POLICIES`. ``__main__.py`` hands that list to ``PolicyPack`` (which starts the analyzer
server for ``pulumi preview --policy-pack``); ``passport check`` calls the very same objects'
``validate`` functions on a graph captured under mocks.

Conventions
-----------
* Resource inputs arrive camelCase, as the engine gives them to policies.
* Every limit is a config property with a default (``PolicyConfigSchema``); a policy reads
  ``{**defaults, **args.get_config()}``, so the pack behaves the same whether or not the engine
  filled in the schema defaults. Enforcement levels are configurable per policy as usual.
* Violations about one agent start with ``agent <name>: `` so reports can group them by the
  agent's manifest. Agents are recognised by the ``agentpassport.dev/agent`` label, by their
  name as a whole dash-separated token in a resource name, and by their SPIFFE ID.
* Values unknown during preview are treated as "cannot tell": they never cause a violation.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

PACK_NAME = "no-static-credentials"
AGENT_LABEL = "agentpassport.dev/agent"
GATEWAY_LABEL = "agentpassport.dev/gateway"
BOM_KEY = "identityBom"


class T:
    """Resource type tokens, named once (checked against the installed provider SDKs)."""

    STACK = "pulumi:pulumi:Stack"
    # AWS
    IAM_ACCESS_KEY = "aws:iam/accessKey:AccessKey"
    IAM_USER = "aws:iam/user:User"
    IAM_LOGIN_PROFILE = "aws:iam/userLoginProfile:UserLoginProfile"
    IAM_ROLE = "aws:iam/role:Role"
    SSM_DOCUMENT = "aws:ssm/document:Document"
    SSM_ASSOCIATION = "aws:ssm/association:Association"
    S3_OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
    PCA = "aws:acmpca/certificateAuthority:CertificateAuthority"
    # Kubernetes built-ins
    K8S_SECRET = "kubernetes:core/v1:Secret"
    K8S_CONFIGMAP = "kubernetes:core/v1:ConfigMap"
    K8S_NAMESPACE = "kubernetes:core/v1:Namespace"
    K8S_SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
    K8S_SERVICE = "kubernetes:core/v1:Service"
    K8S_POD = "kubernetes:core/v1:Pod"
    K8S_DEPLOYMENT = "kubernetes:apps/v1:Deployment"
    K8S_STATEFULSET = "kubernetes:apps/v1:StatefulSet"
    K8S_DAEMONSET = "kubernetes:apps/v1:DaemonSet"
    K8S_JOB = "kubernetes:batch/v1:Job"
    K8S_CRONJOB = "kubernetes:batch/v1:CronJob"
    # Kubernetes custom resources (apiextensions.CustomResource: kubernetes:<group>/<version>:<Kind>)
    CLUSTER_SPIFFE_ID = "kubernetes:spire.spiffe.io/v1alpha1:ClusterSPIFFEID"
    CLUSTER_STATIC_ENTRY = "kubernetes:spire.spiffe.io/v1alpha1:ClusterStaticEntry"
    LINKERD_SERVER = "kubernetes:policy.linkerd.io/v1beta3:Server"
    LINKERD_AUTHZ_POLICY = "kubernetes:policy.linkerd.io/v1alpha1:AuthorizationPolicy"
    LINKERD_MESH_TLS_AUTHN = "kubernetes:policy.linkerd.io/v1alpha1:MeshTLSAuthentication"
    GMSA_CREDSPEC = "kubernetes:windows.k8s.io/v1:GMSACredentialSpec"
    GMSA_CREDSPEC_V1ALPHA1 = "kubernetes:windows.k8s.io/v1alpha1:GMSACredentialSpec"
    # Vault
    VAULT_DB_CONNECTION = "vault:database/secretBackendConnection:SecretBackendConnection"
    VAULT_DB_ROLE = "vault:database/secretBackendRole:SecretBackendRole"
    VAULT_DB_MOUNT = "vault:database/secretsMount:SecretsMount"
    VAULT_MOUNT = "vault:index/mount:Mount"
    VAULT_AUTH_BACKEND = "vault:index/authBackend:AuthBackend"
    VAULT_JWT_ROLE = "vault:jwt/authBackendRole:AuthBackendRole"
    VAULT_CERT_ROLE = "vault:index/certAuthBackendRole:CertAuthBackendRole"
    VAULT_APPROLE_ROLE = "vault:appRole/authBackendRole:AuthBackendRole"
    VAULT_APPROLE_SECRET_ID = "vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId"
    VAULT_TOKEN = "vault:index/token:Token"
    VAULT_TOKEN_ROLE = "vault:tokenauth/authBackendRole:AuthBackendRole"
    VAULT_AWS_SECRET_BACKEND = "vault:aws/secretBackend:SecretBackend"
    VAULT_AWS_AUTH_CLIENT = "vault:aws/authBackendClient:AuthBackendClient"
    VAULT_PKI_ROLE = "vault:pkiSecret/secretBackendRole:SecretBackendRole"
    VAULT_PKI_ROOT_CERT = "vault:pkiSecret/secretBackendRootCert:SecretBackendRootCert"
    VAULT_PKI_INTERMEDIATE_CSR = (
        "vault:pkiSecret/secretBackendIntermediateCertRequest:SecretBackendIntermediateCertRequest"
    )
    VAULT_POLICY = "vault:index/policy:Policy"
    # TLS
    TLS_PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
    TLS_SELF_SIGNED_CERT = "tls:index/selfSignedCert:SelfSignedCert"
    TLS_LOCALLY_SIGNED_CERT = "tls:index/locallySignedCert:LocallySignedCert"


WORKLOADS = frozenset({
    T.K8S_POD, T.K8S_DEPLOYMENT, T.K8S_STATEFULSET, T.K8S_DAEMONSET, T.K8S_JOB, T.K8S_CRONJOB,
})
GMSA_CREDSPECS = frozenset({T.GMSA_CREDSPEC, T.GMSA_CREDSPEC_V1ALPHA1})
REGISTRATIONS = frozenset({T.CLUSTER_SPIFFE_ID, T.CLUSTER_STATIC_ENTRY})
TLS_CERTS = frozenset({T.TLS_SELF_SIGNED_CERT, T.TLS_LOCALLY_SIGNED_CERT})
VAULT_LOGIN_ROLES = frozenset({T.VAULT_JWT_ROLE, T.VAULT_CERT_ROLE})
DB_ENGINE_BLOCKS = (
    "postgresql", "mysql", "mysqlRds", "mysqlAurora", "mysqlLegacy", "mssql", "oracle", "redshift",
    "hana", "mongodb", "mongodbatlas", "snowflake", "redis", "redisElasticache", "elasticsearch",
    "couchbase", "cassandra", "influxdb",
)
DB_MOUNT_LISTS = (
    "postgresqls", "mysqls", "mysqlRds", "mysqlAuroras", "mysqlLegacies", "mssqls", "oracles",
    "redshifts", "hanas", "mongodbs", "mongodbatlas", "snowflakes", "redis", "redisElasticaches",
    "elasticsearches", "couchbases", "cassandras", "influxdbs",
)


# --------------------------------------------------------------------------- plain values


class _Unknown:
    """A value the engine does not know yet (preview)."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN: Any = _Unknown()


def plain(value: Any) -> Any:
    """Copy policy props (unknown-checking proxies) into dicts/lists; unknowns become UNKNOWN."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key in value:
            try:
                out[key] = plain(value[key])
            except UnknownValueError:
                out[key] = UNKNOWN
        return out
    if isinstance(value, Sequence):
        items: list[Any] = []
        for i in range(len(value)):
            try:
                items.append(plain(value[i]))
            except UnknownValueError:
                items.append(UNKNOWN)
        return items
    return value


def dig(value: Any, *path: str | int) -> Any:
    """``value[p0][p1]...`` or None when any step is missing, unknown or of the wrong shape."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(value, list) or step >= len(value):
                return None
            value = value[step]
        else:
            if not isinstance(value, dict):
                return None
            value = value.get(step)
        if value is UNKNOWN:
            return None
    return value


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def strings(value: Any) -> Iterator[str]:
    """Every string inside a value (dict values and list items, recursively)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


# --------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_DURATION_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w))+$")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600,
                 "d": 86400, "w": 604800}


def seconds(value: Any) -> float | None:
    """Seconds in a duration: an int (seconds), digits, or Go/Vault/ours ("90s", "1h30m", "30d")."""
    if value is None or value is UNKNOWN or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    if not _DURATION_WHOLE.match(text):
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def human(secs: float) -> str:
    """``2592000`` -> ``30d``; ``5400`` -> ``90m``."""
    whole = round(secs)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


# --------------------------------------------------------------------------- attribution


def labels_of(props: Mapping[str, Any]) -> dict[str, Any]:
    """Object labels, falling back to a workload's pod template labels."""
    meta = as_dict(props.get("metadata"))
    found = dict(as_dict(meta.get("labels")))
    template = as_dict(dig(props, "spec", "template", "metadata", "labels"))
    for k, v in template.items():
        found.setdefault(k, v)
    return found


def name_tokens(name: str) -> Iterator[str]:
    """Every run of whole dash-separated tokens in a name (``a-b-c``: a, a-b, a-b-c, b, ...)."""
    parts = name.split("-")
    for i in range(len(parts)):
        for j in range(i + 1, len(parts) + 1):
            yield "-".join(parts[i:j])


def agent_of(
    resource_type: str,
    name: str,
    props: Mapping[str, Any],
    agents: Iterable[str] = (),
    spiffe_ids: Mapping[str, str] | None = None,
) -> str | None:
    """The agent a resource belongs to, if any.

    In order: the ``agentpassport.dev/agent`` label; the SPIFFE ID a registration issues;
    the longest agent name that appears as whole dash-separated tokens in the resource name
    (or its ``metadata.name``).
    """
    label = labels_of(props).get(AGENT_LABEL)
    if isinstance(label, str) and label:
        return label
    if spiffe_ids and resource_type in REGISTRATIONS:
        issued = registration_spiffe_id(resource_type, props)
        owner = next((a for a, sid in spiffe_ids.items() if sid == issued), None)
        if owner is not None:
            return owner
    known = set(agents)
    if not known:
        return None
    best: str | None = None
    meta_name = dig(props, "metadata", "name")
    for candidate in (name, meta_name if isinstance(meta_name, str) else ""):
        for token in name_tokens(candidate):
            if token in known and (best is None or len(token) > len(best)):
                best = token
    return best


def registration_spiffe_id(resource_type: str, props: Mapping[str, Any]) -> str | None:
    """The literal SPIFFE ID a SPIRE registration issues (None for templates or unknowns)."""
    if resource_type == T.CLUSTER_SPIFFE_ID:
        value = dig(props, "spec", "spiffeIDTemplate")
    elif resource_type == T.CLUSTER_STATIC_ENTRY:
        value = dig(props, "spec", "spiffeID")
    else:
        return None
    if not isinstance(value, str) or "{{" in value:
        return None
    return value


def is_node_entry(resource_type: str, props: Mapping[str, Any]) -> bool:
    """A SPIRE node (alias) entry: parented to the server, it names hosts, not workloads."""
    parent = dig(props, "spec", "parentID")
    return resource_type == T.CLUSTER_STATIC_ENTRY and isinstance(parent, str) and parent.endswith("/spire/server")


def find_bom(resources: Iterable[PolicyResource]) -> dict[str, Any] | None:
    """The identity bill of materials the program exports (stack output ``identityBom``).

    Stack policies see the Stack resource with its outputs; a component that registers the
    same key as an output is accepted too.
    """
    for r in resources:
        if r.resource_type != T.STACK and not r.resource_type.startswith("agentpassport:"):
            continue
        try:
            bom = plain(r.props.get(BOM_KEY))
        except UnknownValueError:
            continue
        if isinstance(bom, dict) and isinstance(bom.get("agents"), dict):
            return bom
    return None


def stack_of(urn: str) -> str:
    """``urn:pulumi:<stack>::<project>::...`` -> ``<stack>``."""
    head = urn.split("::", 1)[0]
    return head.split(":", 2)[2] if head.count(":") >= 2 else ""


def agent_prefix(agent: str | None) -> str:
    return f"agent {agent}: " if agent else ""


# --------------------------------------------------------------------------- config


def _schema(**properties: dict[str, Any]) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties=properties)


def _duration(default: str, description: str) -> dict[str, Any]:
    return {"type": "string", "pattern": r"^(\d+[smhd])+$", "default": default,
            "description": description}


def config_of(policy_schema: PolicyConfigSchema | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """Schema defaults overlaid with the configured values."""
    defaults = {k: v["default"] for k, v in (policy_schema.properties if policy_schema else {}).items()
                if "default" in v}
    return {**defaults, **dict(given)}


def _limit(cfg: Mapping[str, Any], key: str) -> float:
    value = seconds(cfg[key])
    if value is None:
        raise ValueError(f"policy config {key}={cfg[key]!r} is not a duration such as 15m or 24h")
    return value


# --------------------------------------------------------------------------- literal credentials

_AWS_KEY_ID = re.compile(r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
_PEM_PRIVATE = re.compile(r"-----BEGIN ((RSA|EC|DSA|OPENSSH|ENCRYPTED) )?PRIVATE KEY-----")
_KNOWN_TOKENS = re.compile(
    r"(ghp_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|hv[sb]\.[A-Za-z0-9_-]{20,}|sk-[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{35}"
    r"|glpat-[A-Za-z0-9_-]{20})"
)
_SCRIPT_ASSIGNMENT = re.compile(
    r"(?i)(\$?[A-Za-z0-9_-]*(?:password|passwd|secret|token|api_?key|access_?key)"
    r"[A-Za-z0-9_-]*)\s*[:=]\s*([\"'])(?!\$|\{\{|\$\{)([^\"'\r\n]{4,})\2"
)
_SECURE_STRING = re.compile(
    r"(?i)ConvertTo-SecureString\s+(?:-String\s+)?([\"'])[^\"'\r\n]+\1\s+(?:-AsPlainText|-Force)"
)
_CLI_SECRET_FLAG = re.compile(r"(?i)(--?(?:password|passwd|secret|token|api-?key)[= ])(?![$\"'{])(\S{4,})")
_URL_CREDENTIALS = re.compile(r"(?:^|://)([^:/@\s]+):([^@\s/]+)@", re.IGNORECASE)
"""user:password@ in a connection URL: ``scheme://user:pw@host`` or a Go DSN ``user:pw@tcp(host)``."""
_REFERENCE = re.compile(r"^(\$\(|\$\{|\{\{|/|file://|arn:|vault:|secretsmanager:|ssm:|env:|ref\+)")
_TOKENISH = re.compile(r"^[A-Za-z0-9+/=_-]+$")


def shannon_entropy(text: str) -> float:
    """Bits per character."""
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def credential_name(name: str, ignored_suffixes: Sequence[str]) -> bool:
    """``DB_PASSWORD``, ``api-token``, ``OPENAI_API_KEY`` — but not ``TOKEN_PATH``."""
    upper = name.upper().replace("-", "_").replace(".", "_")
    if any(upper.endswith(s.upper()) for s in ignored_suffixes):
        return False
    if re.search(r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|APIKEY|API_KEY|CREDENTIAL|PRIVATE_?KEY", upper):
        return True
    return upper.endswith("_KEY") or upper == "KEY"


def literal_value(value: Any) -> str | None:
    """A literal string that could be a credential (not a reference, flag or number)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or text.lower() in ("true", "false", "yes", "no", "none", "null", "changeme-not-used"):
        return None
    if _REFERENCE.match(text) or text.isdigit():
        return None
    return text


def high_entropy(text: str, cfg: Mapping[str, Any]) -> bool:
    """A single random-looking token (API key, secret) rather than words or identifiers."""
    if len(text) < int(cfg["minEntropyLength"]) or not _TOKENISH.match(text):
        return False
    classes = sum(bool(re.search(p, text)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]"))
    return classes >= 2 and shannon_entropy(text) >= float(cfg["entropyThreshold"])


def text_findings(text: str) -> list[str]:
    """Credential patterns inside free text (scripts, configs, documents)."""
    found: list[str] = []
    if _AWS_KEY_ID.search(text):
        found.append("an AWS access key id")
    if _PEM_PRIVATE.search(text):
        found.append("a PEM private key")
    token = _KNOWN_TOKENS.search(text)
    if token:
        found.append(f"an API token ({token.group(0)[:6]}...)")
    for m in _SCRIPT_ASSIGNMENT.finditer(text):
        found.append(f"a literal assigned to {m.group(1)}")
    if _SECURE_STRING.search(text):
        found.append("ConvertTo-SecureString of a literal")
    for m in _CLI_SECRET_FLAG.finditer(text):
        found.append(f"a literal passed to {m.group(1).strip('= ')}")
    for m in _URL_CREDENTIALS.finditer(text):
        if m.group(2) not in ("{{password}}", "{{ password }}"):
            found.append("credentials embedded in a URL")
    return sorted(set(found))


def keyed_findings(key: str, value: Any, cfg: Mapping[str, Any]) -> list[str]:
    """Findings for one named value (env var, ConfigMap key, SSM parameter)."""
    text = literal_value(value)
    if text is None:
        return []
    found = text_findings(text)
    if credential_name(key, cfg["ignoredNameSuffixes"]) and len(text) >= int(cfg["minLiteralLength"]):
        found.append(f"{key} is set to a literal")
    elif "\n" not in text and high_entropy(text, cfg):
        found.append(f"{key} holds a high-entropy literal")
    return found


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> dict[str, Any]:
    if resource_type == T.K8S_POD:
        return as_dict(props.get("spec"))
    if resource_type == T.K8S_CRONJOB:
        return as_dict(dig(props, "spec", "jobTemplate", "spec", "template", "spec"))
    return as_dict(dig(props, "spec", "template", "spec"))


def containers(spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in as_list(spec.get(key)):
            if isinstance(c, dict):
                yield c


# --------------------------------------------------------------------------- resource policies

Validate = Callable[[ResourceValidationArgs, ReportViolation], None]


def _props(args: ResourceValidationArgs) -> dict[str, Any]:
    props: dict[str, Any] = plain(args.props)
    return props


def _cfg(args: ResourceValidationArgs | StackValidationArgs, schema: PolicyConfigSchema) -> dict[str, Any]:
    return config_of(schema, args.get_config())


# no-iam-access-keys ------------------------------------------------------------


def _no_iam_access_keys(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != T.IAM_ACCESS_KEY:
        return
    props = _props(args)
    user = props.get("user")
    who = f" for IAM user {user!r}" if isinstance(user, str) else ""
    report(f"{agent_prefix(agent_of(args.resource_type, args.name, props))}IAM access key "
           f"{args.name!r}{who} is a long-lived static credential", None)


# no-iam-users -----------------------------------------------------------------

NO_IAM_USERS_SCHEMA = _schema(allowedUsers={
    "type": "array", "items": {"type": "string"}, "default": [],
    "description": "IAM user names this pack tolerates (e.g. a break-glass user managed here).",
})


def _no_iam_users(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in (T.IAM_USER, T.IAM_LOGIN_PROFILE):
        return
    props = _props(args)
    cfg = _cfg(args, NO_IAM_USERS_SCHEMA)
    user = props.get("name") if args.resource_type == T.IAM_USER else props.get("user")
    if isinstance(user, str) and user in cfg["allowedUsers"]:
        return
    what = "IAM user" if args.resource_type == T.IAM_USER else "console login profile"
    report(f"{agent_prefix(agent_of(args.resource_type, args.name, props))}{what} {args.name!r} "
           "gives a workload a long-lived identity with passwords or keys", None)


# no-service-account-token-secrets ------------------------------------------------


def _no_sa_token_secrets(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != T.K8S_SECRET:
        return
    props = _props(args)
    if props.get("type") != "kubernetes.io/service-account-token":
        return
    sa = dig(props, "metadata", "annotations", "kubernetes.io/service-account.name")
    whose = f" for ServiceAccount {sa!r}" if isinstance(sa, str) else ""
    report(f"{agent_prefix(agent_of(args.resource_type, args.name, props))}Secret {args.name!r} "
           f"of type kubernetes.io/service-account-token{whose} holds a token that never expires",
           None)


# no-automounted-token-with-spiffe ------------------------------------------------


def uses_spiffe(spec: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    """Pods that get SPIFFE identities: the SPIFFE CSI volume, the socket env var, our labels."""
    if AGENT_LABEL in labels or GATEWAY_LABEL in labels:
        return True
    for v in as_list(spec.get("volumes")):
        if dig(v, "csi", "driver") == "csi.spiffe.io":
            return True
    for c in containers(spec):
        for e in as_list(c.get("env")):
            if isinstance(e, dict) and e.get("name") == "SPIFFE_ENDPOINT_SOCKET":
                return True
    return False


def _no_automounted_token(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == T.K8S_SERVICE_ACCOUNT:
        props = _props(args)
        agent = as_dict(dig(props, "metadata", "labels")).get(AGENT_LABEL)
        if agent and props.get("automountServiceAccountToken") is not False:
            report(f"agent {agent}: ServiceAccount {args.name!r} leaves "
                   "automountServiceAccountToken on", None)
        return
    if args.resource_type not in WORKLOADS:
        return
    props = _props(args)
    spec = pod_spec(args.resource_type, props)
    if not spec or not uses_spiffe(spec, labels_of(props)):
        return
    if spec.get("automountServiceAccountToken") is UNKNOWN:
        return
    if spec.get("automountServiceAccountToken") is not False:
        report(f"{agent_prefix(agent_of(args.resource_type, args.name, props))}pods of "
               f"{args.name!r} use SPIFFE identities but still mount a Kubernetes "
               "ServiceAccount token (automountServiceAccountToken is not false)", None)


# no-literal-credentials ----------------------------------------------------------

LITERALS_SCHEMA = _schema(
    entropyThreshold={"type": "number", "default": 4.0, "minimum": 0,
                      "description": "Shannon entropy (bits/char) above which a single token "
                                     "counts as a random secret."},
    minEntropyLength={"type": "integer", "default": 20, "minimum": 8,
                      "description": "Shortest token the entropy test looks at."},
    minLiteralLength={"type": "integer", "default": 4, "minimum": 1,
                      "description": "Shortest literal a credential-named variable may not hold."},
    ignoredNameSuffixes={
        "type": "array", "items": {"type": "string"},
        "default": ["_FILE", "_PATH", "_DIR", "_URL", "_ADDR", "_NAME", "_REF", "_ARN", "_MOUNT",
                    "_ROLE", "_AUDIENCE", "_TTL", "_ENDPOINT", "_SOCKET", "_TYPE", "_MODE",
                    "_HEADER", "_ID_CLAIM"],
        "description": "Names ending like this hold references or settings, not credentials.",
    },
)


def _no_literal_credentials(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    if t not in WORKLOADS and t not in (T.K8S_CONFIGMAP, T.SSM_DOCUMENT, T.SSM_ASSOCIATION, T.S3_OBJECT):
        return
    props = _props(args)
    cfg = _cfg(args, LITERALS_SCHEMA)
    findings: list[str] = []
    if t in WORKLOADS:
        for c in containers(pod_spec(t, props)):
            cname = c.get("name", "?")
            for e in as_list(c.get("env")):
                if isinstance(e, dict) and isinstance(e.get("name"), str) and "value" in e:
                    findings += [f"container {cname}: {f}" for f in keyed_findings(e["name"], e["value"], cfg)]
            for arg in [*as_list(c.get("command")), *as_list(c.get("args"))]:
                if isinstance(arg, str):
                    findings += [f"container {cname} arguments: {f}" for f in text_findings(arg)]
    elif t == T.K8S_CONFIGMAP:
        for key, value in sorted(as_dict(props.get("data")).items()):
            findings += [f"data[{key}]: {f}" for f in keyed_findings(key, value, cfg)]
    elif t == T.SSM_ASSOCIATION:
        for key, value in sorted(as_dict(props.get("parameters")).items()):
            findings += [f"parameter {key}: {f}" for f in keyed_findings(key, value, cfg)]
    elif t == T.SSM_DOCUMENT:
        content = props.get("content")
        if isinstance(content, str):
            findings += [f"document content: {f}" for f in text_findings(content)]
    elif t == T.S3_OBJECT:
        object_key, body = props.get("key"), props.get("content")
        if (isinstance(object_key, str) and object_key.lower().endswith((".ps1", ".psm1", ".mof"))
                and isinstance(body, str)):
            findings += [f"script {object_key}: {f}" for f in text_findings(body)]
    if findings:
        report(f"{agent_prefix(agent_of(t, args.name, props))}{args.name!r} contains "
               + "; ".join(sorted(set(findings))), None)


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


# leaf-lifetime-limit ----------------------------------------------------------------

LEAF_SCHEMA = _schema(maxLeafLifetime=_duration("24h", "Longest validity of a leaf certificate."))


def _leaf_lifetime(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in TLS_CERTS:
        return
    props = _props(args)
    if props.get("isCaCertificate") is True or props.get("isCaCertificate") is UNKNOWN:
        return
    hours = props.get("validityPeriodHours")
    if not isinstance(hours, int | float) or isinstance(hours, bool):
        return
    limit = _limit(_cfg(args, LEAF_SCHEMA), "maxLeafLifetime")
    if hours * 3600 > limit:
        report(f"{agent_prefix(agent_of(args.resource_type, args.name, props))}leaf certificate "
               f"{args.name!r} is valid for {human(hours * 3600)}, above {human(limit)}", None)


# svid-ttl-limits ---------------------------------------------------------------------

SVID_SCHEMA = _schema(
    maxX509SvidTtl=_duration("1h", "Longest X.509-SVID TTL a registration may ask for."),
    maxJwtSvidTtl=_duration("15m", "Longest JWT-SVID TTL a registration may ask for."),
    caTtl=_duration("24h", "SPIRE's CA TTL (ca_ttl): X.509-SVIDs may live at most caTtl/6."),
)


def _svid_ttl_limits(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    if t not in REGISTRATIONS:
        return
    props = _props(args)
    cfg = _cfg(args, SVID_SCHEMA)
    x509_key, jwt_key = ("ttl", "jwtTtl") if t == T.CLUSTER_SPIFFE_ID else ("x509SVIDTTL", "jwtSVIDTTL")
    spec = as_dict(props.get("spec"))
    problems = []
    x509 = seconds(spec.get(x509_key))
    if x509 is not None:
        limit, ca = _limit(cfg, "maxX509SvidTtl"), _limit(cfg, "caTtl")
        if x509 > limit:
            problems.append(f"X.509-SVID TTL {human(x509)} exceeds the limit of {human(limit)}")
        if x509 * 6 > ca:
            problems.append(f"X.509-SVID TTL {human(x509)} exceeds caTtl/6 ({human(ca)}/6 = "
                            f"{human(ca / 6)}), so SPIRE could not rotate its CA in time")
    jwt = seconds(spec.get(jwt_key))
    if jwt is not None and jwt > _limit(cfg, "maxJwtSvidTtl"):
        problems.append(f"JWT-SVID TTL {human(jwt)} exceeds the limit of "
                        f"{human(_limit(cfg, 'maxJwtSvidTtl'))}")
    if problems:
        report(f"{agent_prefix(agent_of(t, args.name, props))}registration {args.name!r}: "
               + "; ".join(problems), None)


# rsa-key-size -------------------------------------------------------------------------

RSA_SCHEMA = _schema(minRsaBits={"type": "integer", "default": 2048, "minimum": 1024,
                                 "description": "Smallest RSA modulus accepted."})


def _rsa_key_size(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    if t not in (T.TLS_PRIVATE_KEY, T.VAULT_PKI_ROLE, T.VAULT_PKI_ROOT_CERT,
                 T.VAULT_PKI_INTERMEDIATE_CSR, T.PCA):
        return
    props = _props(args)
    minimum = int(_cfg(args, RSA_SCHEMA)["minRsaBits"])
    bits: Any = None
    if t == T.TLS_PRIVATE_KEY and props.get("algorithm") == "RSA":
        bits = props.get("rsaBits") or 2048  # the provider's default
    elif t in (T.VAULT_PKI_ROLE, T.VAULT_PKI_ROOT_CERT, T.VAULT_PKI_INTERMEDIATE_CSR) and props.get("keyType") == "rsa":
        bits = props.get("keyBits") or 2048  # 0 / unset means Vault's default, 2048
    if isinstance(bits, float) and bits.is_integer():  # numbers travel as JSON numbers
        bits = int(bits)
    elif t == T.PCA:
        algo = dig(props, "certificateAuthorityConfiguration", "keyAlgorithm")
        match = re.fullmatch(r"RSA_(\d+)", algo) if isinstance(algo, str) else None
        bits = int(match.group(1)) if match else None
    if isinstance(bits, int) and bits < minimum:
        report(f"{args.name!r} uses a {bits}-bit RSA key, below {minimum}", None)


# linkerd-default-inbound-policy -----------------------------------------------------------

INBOUND_SCHEMA = _schema(allowedPolicies={
    "type": "array", "items": {"type": "string"},
    "default": ["deny", "all-authenticated", "cluster-authenticated"],
    "description": "Default inbound policies meshed namespaces and Servers may use.",
})
INBOUND_ANNOTATION = "config.linkerd.io/default-inbound-policy"


def _linkerd_inbound(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    if t not in (T.K8S_NAMESPACE, T.LINKERD_SERVER):
        return
    props = _props(args)
    allowed = _cfg(args, INBOUND_SCHEMA)["allowedPolicies"]
    if t == T.LINKERD_SERVER:
        policy = dig(props, "spec", "accessPolicy")
        if isinstance(policy, str) and policy not in allowed:
            report(f"Server {args.name!r} sets accessPolicy {policy}", None)
        return
    annotations = as_dict(dig(props, "metadata", "annotations"))
    if annotations.get("linkerd.io/inject") != "enabled":
        return
    policy = annotations.get(INBOUND_ANNOTATION)
    if policy is UNKNOWN:
        return
    if policy is None:
        report(f"meshed namespace {args.name!r} has no {INBOUND_ANNOTATION} annotation, so "
               "Linkerd's cluster default (all-unauthenticated unless changed) applies", None)
    elif policy not in allowed:
        report(f"meshed namespace {args.name!r} sets {INBOUND_ANNOTATION}={policy}", None)


# gmsa-no-stored-credentials -----------------------------------------------------------------

GMSA_SCHEMA = _schema(allowStoredCredentials={
    "type": "boolean", "default": False,
    "description": "Tolerate credspecs whose CCG plugin reads a stored credential (non-domain-"
                   "joined hosts). Literal credentials in PluginInput are refused regardless.",
})


def _gmsa_no_stored_credentials(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in GMSA_CREDSPECS:
        return
    props = _props(args)
    host = dig(props, "credspec", "ActiveDirectoryConfig", "HostAccountConfig")
    if not isinstance(host, dict):
        return
    plugin_input = host.get("PluginInput")
    who = agent_prefix(agent_of(args.resource_type, args.name, props))
    if isinstance(plugin_input, str) and (text_findings(plugin_input) or re.search(
            r"(?i)password|[^\s:\\/]+\\[^\s:]+:[^\s]+", plugin_input)):
        report(f"{who}credspec {args.name!r} carries a literal credential in HostAccountConfig."
               "PluginInput", None)
        return
    if not _cfg(args, GMSA_SCHEMA)["allowStoredCredentials"]:
        report(f"{who}credspec {args.name!r} has a HostAccountConfig: its CCG plugin retrieves "
               "the gMSA with a stored domain-user credential", None)


# --------------------------------------------------------------------------- stack policies


@dataclass(frozen=True)
class Res:
    """A stack resource with plain props."""

    type: str
    name: str
    urn: str
    props: dict[str, Any]
    dependencies: tuple[str, ...]


def _resources(args: StackValidationArgs, types: Iterable[str] | None = None) -> list[Res]:
    wanted = set(types) if types is not None else None
    out = []
    for r in args.resources:
        if wanted is not None and r.resource_type not in wanted:
            continue
        out.append(Res(r.resource_type, r.name, r.urn, plain(r.props),
                       tuple(d.urn for d in r.dependencies)))
    return out


# one-identity-per-agent ----------------------------------------------------------------------


def _owner(r: Res, agents: Iterable[str], spiffe_ids: Mapping[str, str]) -> str:
    labels = labels_of(r.props)
    if isinstance(labels.get(AGENT_LABEL), str):
        return str(labels[AGENT_LABEL])
    if isinstance(labels.get(GATEWAY_LABEL), str):
        return f"gateway {labels[GATEWAY_LABEL]}"
    agent = agent_of(r.type, r.name, r.props, agents, spiffe_ids)
    return agent if agent is not None else f"registration {r.name}"


# SPIRE selectors of which a node or a workload has exactly one value (mirrors
# components.platform_model): entries asking for different values of one never match the same
# workload; every other selector can hold several values and keeps nothing apart.
EXCLUSIVE_NODE_SELECTORS = ("aws_iid:region", "aws_iid:az", "aws_iid:instance:id", "aws_iid:image:id",
                            "aws_iid:iamrole")
EXCLUSIVE_WORKLOAD_SELECTORS = ("unix:uid", "unix:user", "unix:gid", "unix:group", "unix:path", "unix:sha256",
                                "systemd:id", "systemd:fragment_path", "windows:user_name", "windows:user_sid",
                                "docker:image_id", "k8s:ns", "k8s:sa", "k8s:pod-uid", "k8s:pod-name",
                                "k8s:node-name")
WORKLOAD_ATTESTOR_OS = {"unix": "unix", "systemd": "unix", "docker": "unix", "k8s": "unix", "windows": "windows"}


def exclusive_selector_values(node_selectors: Iterable[str],
                              workload_selectors: Iterable[str]) -> dict[str, str] | None:
    """``{selector type: value}`` of one static entry's single-valued selectors (None: it asks
    for two values of one, so nothing matches it). ``aws_iid:tag:<key>:<value>`` is split at its
    last ':' (tag keys such as ``agentpassport:role`` hold colons; values are assumed not to)."""
    out: dict[str, str] = {}
    ok = True
    for side, selectors, exclusive in (("node", node_selectors, EXCLUSIVE_NODE_SELECTORS),
                                       ("workload", workload_selectors, EXCLUSIVE_WORKLOAD_SELECTORS)):
        for sel in selectors:
            found: list[tuple[str, str]] = []
            if side == "node" and sel.startswith("aws_iid:tag:") and ":" in sel[len("aws_iid:tag:"):]:
                key, _, value = sel.rpartition(":")
                found.append((f"node:{key}", value))
            kind = next((e for e in exclusive if sel.startswith(e + ":")), None)
            if kind is not None:
                value = sel[len(kind) + 1:]
                found.append((f"{side}:{kind}", value.lower() if kind.startswith("windows:") else value))
            if side == "workload" and sel.split(":", 1)[0] in WORKLOAD_ATTESTOR_OS:
                found.append(("workload:os", WORKLOAD_ATTESTOR_OS[sel.split(":", 1)[0]]))
            for key, value in found:
                ok = out.setdefault(key, value) == value and ok
    return out if ok else None


def first_compatible(entries: Sequence[Mapping[str, str] | None]) -> dict[int, int]:
    """For each entry j, the first i < j one workload can match together with it (linear split
    on the most shared single-valued selector; mirrors components.platform_model)."""
    best: dict[int, int] = {}
    _split([(i, dict(e)) for i, e in enumerate(entries) if e is not None], best)
    return best


def _split(items: list[tuple[int, dict[str, str]]], best: dict[int, int]) -> None:
    if len(items) < 2:
        return
    counts = Counter(k for _, e in items for k in e)
    shared = [k for k, n in counts.items() if n >= 2]
    if not shared:
        first = min(i for i, _ in items)
        for i, _ in items:
            if i != first and best.get(i, i) > first:
                best[i] = first
        return
    key = max(shared, key=lambda k: (counts[k], k))
    groups: dict[str, list[tuple[int, dict[str, str]]]] = {}
    loose: list[tuple[int, dict[str, str]]] = []
    for i, e in items:
        value = e.pop(key, None)
        (loose if value is None else groups.setdefault(value, [])).append((i, e))
    for group in groups.values():
        _split([(i, dict(e)) for i, e in group + loose], best)


def _pod_account(r: Res) -> tuple[str | None, str | None]:
    """(namespace, ServiceAccount) a ClusterSPIFFEID selects; None where it selects any."""
    spec = as_dict(r.props.get("spec"))
    ns = dig(spec, "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name")
    sa = None
    for t in as_list(spec.get("workloadSelectorTemplates")):
        if isinstance(t, str) and t.startswith("k8s:ns:") and "{{" not in t:
            ns = t[len("k8s:ns:"):]
        elif isinstance(t, str) and t.startswith("k8s:sa:") and "{{" not in t:
            sa = t[len("k8s:sa:"):]
    return (ns if isinstance(ns, str) else None), sa


@dataclass
class _Platform:
    """What the graph's own (non-agent) workloads use: ServiceAccounts, namespaces, services."""

    accounts: dict[tuple[str, str], str] = field(default_factory=dict)  # (ns, sa) -> what
    namespaces: dict[str, str] = field(default_factory=dict)  # ns -> what
    services: dict[tuple[str, str], str] = field(default_factory=dict)  # (name, ns) -> what

    def account(self, ns: str | None, sa: str | None) -> str | None:
        if ns is None:
            return None
        if ns in self.namespaces:
            return self.namespaces[ns]
        if sa is None:
            return next((w for (n, _), w in sorted(self.accounts.items()) if n == ns), None)
        return self.accounts.get((ns, sa))

    def dns(self, name: str) -> str | None:
        """The platform workload or service a DNS name belongs to, if any."""
        labels = name.lower().rstrip(".").split(".")
        if len(labels) == 1:
            return next((w for (n, _), w in sorted(self.services.items()) if n == labels[0]), None)
        for k in range(len(labels) - 1):
            rest = labels[k + 2:]
            if rest and rest[0] != "svc":
                continue
            hit = self.services.get((labels[k], labels[k + 1]))
            if hit is not None:
                return hit
            if rest and labels[k + 1] in self.namespaces:
                return self.namespaces[labels[k + 1]]
        return None


def _platform_of(args: StackValidationArgs) -> _Platform:
    plat = _Platform()
    for r in args.resources:
        t = r.resource_type
        if t not in WORKLOADS and t not in (T.K8S_SERVICE_ACCOUNT, T.K8S_NAMESPACE, T.K8S_SERVICE,
                                            T.LINKERD_SERVER):
            continue
        p = plain(r.props)
        labels = labels_of(p)
        if AGENT_LABEL in labels:
            continue
        meta = as_dict(p.get("metadata"))
        ns, name = meta.get("namespace"), meta.get("name") or r.name
        if t == T.K8S_NAMESPACE:
            if as_dict(meta.get("labels")).get("linkerd.io/is-control-plane") == "true":
                plat.namespaces.setdefault(str(name), f"Linkerd's control-plane namespace {name}")
            continue
        if not isinstance(ns, str):
            continue
        if t == T.K8S_SERVICE:
            plat.services.setdefault((str(name), ns), f"Service {ns}/{name}")
        elif t == T.LINKERD_SERVER:
            service = labels.get("agentpassport.dev/service")
            if isinstance(service, str):
                plat.services.setdefault((service, ns), f"service {service!r}")
        elif t == T.K8S_SERVICE_ACCOUNT:
            plat.accounts.setdefault((ns, str(name)), f"ServiceAccount {ns}/{name} of {r.name!r}")
        else:
            sa = pod_spec(t, p).get("serviceAccountName") or "default"
            plat.accounts.setdefault((ns, str(sa)), f"ServiceAccount {ns}/{sa} of {r.name!r}")
            if labels.get("app.kubernetes.io/part-of") == "spire":
                plat.namespaces.setdefault(ns, f"SPIRE's namespace {ns}")
    return plat


def _selector_collisions(regs: Sequence[tuple[Res, str, str | None]], agents: Mapping[str, Any],
                         statics: Sequence[Res], plat: _Platform, report: ReportViolation) -> None:
    """Registrations of two agents that one workload satisfies, or that select the platform's
    own ServiceAccounts or claim its DNS names (the platform model's rule, on the graph)."""
    pods: dict[str, list[tuple[str | None, str, Res]]] = {}
    dns: dict[str, tuple[str, Res]] = {}
    for r, owner, _ in sorted(regs, key=lambda x: x[0].name):
        if owner not in agents:
            continue
        if r.type == T.CLUSTER_SPIFFE_ID:
            ns, sa = _pod_account(r)
            taken = plat.account(ns, sa)
            if taken is not None:
                report(f"agent {owner}: registration {r.name!r} selects pods running as "
                       f"{ns}/{sa or '*'}, which is the platform's ({taken})", r.urn)
            elif ns is not None:
                for other_sa, other, other_r in pods.get(ns, []):
                    if other != owner and (sa is None or other_sa is None or sa == other_sa):
                        report(f"agent {owner}: registration {r.name!r} selects ServiceAccount {ns}/{sa or '*'}, "
                               f"as registration {other_r.name!r} of agent {other} does: its pods get both SVIDs "
                               "whatever their labels and one Linkerd identity", r.urn)
                        break
                pods.setdefault(ns, []).append((sa, owner, r))
        names = dig(r.props, "spec", "dnsNameTemplates" if r.type == T.CLUSTER_SPIFFE_ID else "dnsNames")
        for name in as_list(names):
            if not isinstance(name, str) or "{{" in name:
                continue
            taken = plat.dns(name)
            labels = name.lower().rstrip(".").split(".")
            key = ".".join(labels[:labels.index("svc") + 1]) if "svc" in labels[2:] else ".".join(labels)
            if taken is not None:
                report(f"agent {owner}: registration {r.name!r} claims DNS name {name}, a name of {taken}", r.urn)
            elif dns.setdefault(key, (owner, r))[0] != owner:
                report(f"agent {owner}: registration {r.name!r} claims DNS name {name}, as registration "
                       f"{dns[key][1].name!r} of agent {dns[key][0]} does", r.urn)
    nodes = {registration_spiffe_id(r.type, r.props): r for r in statics if is_node_entry(r.type, r.props)}
    entries: list[tuple[Res, str]] = []
    values: list[Mapping[str, str] | None] = []
    for r, owner, _ in sorted(regs, key=lambda x: x[0].name):
        node = nodes.get(dig(r.props, "spec", "parentID"))
        if r.type != T.CLUSTER_STATIC_ENTRY or owner not in agents or node is None:
            continue  # join_token entries hang off an alias the operator hands out per host
        node_selectors = [s for s in as_list(dig(node.props, "spec", "selectors")) if isinstance(s, str)]
        workload = [s for s in as_list(dig(r.props, "spec", "selectors")) if isinstance(s, str)]
        entries.append((r, owner))
        values.append(exclusive_selector_values(node_selectors, workload))
    for j, i in sorted(first_compatible(values).items()):
        (r, owner), (other_r, other) = entries[j], entries[i]
        if owner != other:
            report(f"agent {owner}: one host process can match both registration {r.name!r} and registration "
                   f"{other_r.name!r} of agent {other} (no single-valued selector differs), so it would hold "
                   "both identities", r.urn)


def _identity_names(agents: Mapping[str, Any], plat: _Platform, report: ReportViolation) -> None:
    """From the bill of materials, active and suspended agents alike: one mesh identity per
    agent, and none of the platform's ServiceAccounts."""
    mesh: dict[str, str] = {}
    for agent, raw in sorted(agents.items()):
        info = as_dict(raw)
        accounts = []
        identity = info.get("meshIdentity")
        if isinstance(identity, str) and ".serviceaccount." in identity:
            sa, ns = identity.split(".")[:2]
            accounts.append((ns, sa))
            first = mesh.setdefault(identity, agent)
            if first != agent:
                report(f"agent {agent}: its mesh identity {identity} is also agent {first}'s: Linkerd cannot tell "
                       "them apart and suspending one leaves its access to the other", None)
        m = re.fullmatch(r"spiffe://[^/]+/ns/([^/]+)/sa/([^/]+)", str(info.get("spiffeId") or ""))
        if m:
            accounts.append((m.group(1), m.group(2)))
        for ns, sa in dict.fromkeys(accounts):
            taken = plat.account(ns, sa)
            if taken is not None:
                report(f"agent {agent}: runs as {ns}/{sa}, which is the platform's ({taken})", None)


def _one_identity(args: StackValidationArgs, report: ReportViolation) -> None:
    bom = find_bom(args.resources)
    agents = as_dict(bom.get("agents")) if bom else {}
    spiffe_ids = {a: str(v.get("spiffeId")) for a, v in agents.items() if isinstance(v, dict)}
    everything = _resources(args, REGISTRATIONS)
    agent_ids = {sid: a for a, sid in spiffe_ids.items()}
    for r in everything:
        sid = registration_spiffe_id(r.type, r.props)
        if is_node_entry(r.type, r.props) and sid in agent_ids:
            report(f"agent {agent_ids[sid]}: node entry {r.name!r} gives whole hosts the agent's "
                   f"identity {sid}", r.urn)
    regs = [(r, _owner(r, agents, spiffe_ids), registration_spiffe_id(r.type, r.props))
            for r in everything if not is_node_entry(r.type, r.props)]
    owners_of: dict[str, set[str]] = {}
    ids_of: dict[str, set[str]] = {}
    for _, owner, sid in regs:
        ids_of.setdefault(owner, set())
        if sid is not None:
            owners_of.setdefault(sid, set()).add(owner)
            ids_of[owner].add(sid)
    for r, owner, sid in regs:
        who = agent_prefix(owner if owner in agents else None)
        if sid is not None and len(owners_of[sid]) > 1:
            report(f"{who}SPIFFE ID {sid} is issued to {len(owners_of[sid])} workloads "
                   f"({', '.join(sorted(owners_of[sid]))}); every identity must be unique", r.urn)
        if owner in agents:
            if as_dict(agents[owner]).get("suspended") is True:
                report(f"{who}is suspended but registration {r.name!r} still issues it an "
                       "identity", r.urn)
            elif sid is not None and sid != spiffe_ids[owner]:
                report(f"{who}registration {r.name!r} issues {sid}, not the agent's identity "
                       f"{spiffe_ids[owner]}", r.urn)
        elif bom is not None and not owner.startswith(("gateway ", "registration ")):
            report(f"registration {r.name!r} is labelled for agent {owner!r}, which has no "
                   "manifest in this stack", r.urn)
    for owner, ids in sorted(ids_of.items()):
        if owner not in agents and len(ids) > 1:
            report(f"{owner} has {len(ids)} identities ({', '.join(sorted(ids))})", None)
    shared = Counter(spiffe_ids.values())
    for agent, sid in sorted(spiffe_ids.items()):
        if shared[sid] > 1:
            report(f"agent {agent}: its SPIFFE ID {sid} is also another agent's", None)
    plat = _platform_of(args)
    _selector_collisions(regs, agents, everything, plat, report)
    _identity_names(agents, plat, report)
    for agent, raw in sorted(agents.items()):
        info = as_dict(raw)
        if info.get("suspended") is True or "spire" not in as_list(info.get("subsystems")):
            continue
        if agent not in ids_of:
            report(f"agent {agent}: has no SPIRE registration issuing {spiffe_ids.get(agent)}", None)


# resource-count-ceiling ----------------------------------------------------------------------

COUNT_SCHEMA = _schema(maxResources={"type": "integer", "default": 5000, "minimum": 1,
                                     "description": "Most resources one stack may hold."})


def _resource_count(args: StackValidationArgs, report: ReportViolation) -> None:
    limit = int(_cfg(args, COUNT_SCHEMA)["maxResources"])
    count = sum(1 for r in args.resources if r.resource_type != T.STACK)
    if count > limit:
        report(f"the stack holds {count} resources, above the ceiling of {limit}; split it into "
               "shards", None)


# grants-enforced -----------------------------------------------------------------------------


def _tokens(*texts: str) -> set[str]:
    """Every run of whole dash-separated tokens in the words of some texts."""
    found: set[str] = set()
    for text in texts:
        for word in re.split(r"[^a-z0-9-]+", text.lower()):
            if word:
                found.update(name_tokens(word))
    return found


Key = tuple[str, str]  # (namespace, name) of a namespaced object


@dataclass
class _Enforcement:
    """What the stack deploys that can enforce grants, indexed once per evaluation."""

    authn_by_identity: dict[str, set[Key]] = field(default_factory=dict)  # Linkerd identity -> authns
    authn_by_account: dict[Key, set[Key]] = field(default_factory=dict)  # (namespace, SA) -> authns
    targets_by_authn: dict[Key, list[set[str]]] = field(default_factory=dict)  # authn -> policy tokens
    gateways: set[str] = field(default_factory=set)
    data_texts: list[str] = field(default_factory=list)
    data_by_service: dict[str, list[str]] = field(default_factory=dict)
    db_roles: set[str] = field(default_factory=set)  # Vault database role names
    iam_roles: set[str] = field(default_factory=set)
    vault_policies: dict[str, str] = field(default_factory=dict)  # Vault policy name -> HCL

    def data_for(self, service: str) -> list[str]:
        """ConfigMap data mentioning a service (computed once per service)."""
        if service not in self.data_by_service:
            self.data_by_service[service] = [t for t in self.data_texts if service in t]
        return self.data_by_service[service]


def _index(args: StackValidationArgs) -> _Enforcement:
    ix = _Enforcement()
    for r in args.resources:
        t = r.resource_type
        if t not in (T.LINKERD_MESH_TLS_AUTHN, T.LINKERD_AUTHZ_POLICY, T.K8S_CONFIGMAP, T.VAULT_DB_ROLE,
                     T.IAM_ROLE, T.VAULT_POLICY) and t not in WORKLOADS:
            continue
        p = plain(r.props)
        key = (str(dig(p, "metadata", "namespace") or ""), str(dig(p, "metadata", "name") or r.name))
        if t == T.LINKERD_MESH_TLS_AUTHN:
            for identity in as_list(dig(p, "spec", "identities")):
                if isinstance(identity, str) and identity != "*":
                    ix.authn_by_identity.setdefault(identity, set()).add(key)
            for ref in as_list(dig(p, "spec", "identityRefs")):
                if isinstance(ref, dict) and ref.get("kind") == "ServiceAccount" and ref.get("name"):
                    account = (str(ref.get("namespace") or key[0]), str(ref["name"]))
                    ix.authn_by_account.setdefault(account, set()).add(key)
        elif t == T.LINKERD_AUTHZ_POLICY:
            tokens = _tokens(r.name, key[1], str(dig(p, "spec", "targetRef", "name") or ""))
            service = labels_of(p).get("agentpassport.dev/service")
            if isinstance(service, str):
                tokens.add(service)
            for ref in as_list(dig(p, "spec", "requiredAuthenticationRefs")):
                if isinstance(ref, dict) and ref.get("kind") == "MeshTLSAuthentication":
                    authn = (str(ref.get("namespace") or key[0]), str(ref.get("name")))
                    ix.targets_by_authn.setdefault(authn, []).append(tokens)
        elif t in WORKLOADS:
            gw = labels_of(p).get(GATEWAY_LABEL)
            if isinstance(gw, str):
                ix.gateways.add(gw)
        elif t == T.K8S_CONFIGMAP:
            ix.data_texts.append("\n".join(strings(p.get("data"))))
        elif t == T.VAULT_DB_ROLE:
            ix.db_roles.add(str(p.get("name") or r.name))
        elif t == T.IAM_ROLE:
            ix.iam_roles.add(str(p.get("name") or r.name))
        elif t == T.VAULT_POLICY:
            ix.vault_policies[str(p.get("name") or r.name)] = str(p.get("policy") or "")
    return ix


def _mesh_enforces(ix: _Enforcement, mesh_identity: str, service: str) -> bool:
    """A Linkerd AuthorizationPolicy about the service requires an authn naming the identity."""
    sa, _, rest = mesh_identity.partition(".")
    namespace = rest.split(".", 1)[0]
    authns = ix.authn_by_identity.get(mesh_identity, set()) | ix.authn_by_account.get((namespace, sa), set())
    return any(service in tokens for authn in authns for tokens in ix.targets_by_authn.get(authn, []))


def _http_problem(ix: _Enforcement, info: Mapping[str, Any], grant: Mapping[str, Any]) -> str | None:
    service = str(grant.get("service"))
    subsystems = as_list(info.get("subsystems"))
    points: list[str] = []
    missing: list[str] = []
    if "mesh" in subsystems and isinstance(info.get("meshIdentity"), str):
        if _mesh_enforces(ix, str(info["meshIdentity"]), service):
            points.append("linkerd")
        else:
            missing.append("no Linkerd AuthorizationPolicy for the service requires a "
                           f"MeshTLSAuthentication naming {info['meshIdentity']}")
    if "authz" in subsystems and service in ix.gateways:
        sid = str(info.get("spiffeId"))
        if any(sid in text for text in ix.data_for(service)):
            points.append("opa")
        else:
            missing.append(f"the gateway of {service} has no OPA data naming {sid}")
    if missing:
        return f"http grant to {service}: " + "; ".join(missing)
    if not points:
        return f"http grant to {service} is enforced nowhere (no Linkerd policy, no OPA gateway)"
    return None


def _grants_enforced(args: StackValidationArgs, report: ReportViolation) -> None:
    bom = find_bom(args.resources)
    if bom is None:
        args.not_applicable("the stack exports no identityBom")
        return
    ix = _index(args)
    for agent, raw in sorted(as_dict(bom.get("agents")).items()):
        info = as_dict(raw)
        if info.get("suspended") is True:
            continue
        subsystems = as_list(info.get("subsystems"))
        for raw_grant in as_list(info.get("grants")):
            grant = as_dict(raw_grant)
            kind = grant.get("kind")
            problem: str | None = None
            if kind == "http":
                problem = _http_problem(ix, info, grant)
            elif kind == "database" and "vault" in subsystems:
                # the role name components.identity.AgentIdentity.database_role derives
                role = f"{agent}-{grant.get('cluster')}-{grant.get('database')}".lower().replace("_", "-")
                if role not in ix.db_roles:
                    problem = (f"database grant on {grant.get('cluster')}/{grant.get('database')} has "
                               f"no Vault database role {role}")
            elif kind == "aws" and "aws" in subsystems:
                role = f"{agent}-{grant.get('role')}"[:64]
                if role not in ix.iam_roles:
                    problem = f"aws grant {grant.get('role')!r} has no IAM role {role}"
            elif kind == "vault" and "vault" in subsystems:
                path = str(grant.get("path"))
                policy = ix.vault_policies.get(f"agent-{agent}", "")
                if f'path "{path}"' not in policy:
                    problem = f"vault grant on {path} is not a path of the agent's Vault policy agent-{agent}"
            if problem:
                report(f"agent {agent}: {problem}", None)


# no-state-root-key-in-prod --------------------------------------------------------------------

ROOT_KEY_SCHEMA = _schema(productionStacks={
    "type": "array", "items": {"type": "string"}, "default": ["^prod"],
    "description": "Regular expressions matching production stack names.",
})


def _no_state_root_key(args: StackValidationArgs, report: ReportViolation) -> None:
    patterns = _cfg(args, ROOT_KEY_SCHEMA)["productionStacks"]
    resources = _resources(args, {T.TLS_PRIVATE_KEY, T.TLS_SELF_SIGNED_CERT})
    keys = {r.urn: r for r in resources if r.type == T.TLS_PRIVATE_KEY}
    for cert in resources:
        if cert.type != T.TLS_SELF_SIGNED_CERT or cert.props.get("isCaCertificate") is not True:
            continue
        stack = stack_of(cert.urn)
        if not any(re.search(p, stack) for p in patterns):
            continue
        key = next((keys[d] for d in cert.dependencies if d in keys), None)
        target = key or cert
        report(f"root CA {cert.name!r} of production stack {stack} is signed by "
               f"{'tls PrivateKey ' + repr(key.name) if key else 'a key'} kept in Pulumi state", target.urn)


# ca-chain-lifetimes -----------------------------------------------------------------------------


def _ca_chain_lifetimes(args: StackValidationArgs, report: ReportViolation) -> None:
    certs = {r.urn: r for r in _resources(args, TLS_CERTS)}
    for cert in certs.values():
        if cert.type != T.TLS_LOCALLY_SIGNED_CERT:
            continue
        hours = cert.props.get("validityPeriodHours")
        if not isinstance(hours, int | float):
            continue
        for dep in cert.dependencies:
            issuer = certs.get(dep)
            if issuer is None or issuer.props.get("isCaCertificate") is not True:
                continue
            parent_hours = issuer.props.get("validityPeriodHours")
            if isinstance(parent_hours, int | float) and hours >= parent_hours:
                what = "Linkerd issuer" if "linkerd" in cert.name.lower() else "certificate"
                report(f"{what} {cert.name!r} ({human(hours * 3600)}) outlives or matches its "
                       f"issuer {issuer.name!r} ({human(parent_hours * 3600)})", cert.urn)


# --------------------------------------------------------------------------- the policies


def _resource(name: str, description: str, remediation: str, validate: Validate,
              schema: PolicyConfigSchema | None = None,
              severity: Severity = Severity.HIGH) -> ResourceValidationPolicy:
    return ResourceValidationPolicy(
        name=name, description=description, validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY, config_schema=schema, severity=severity,
        remediation_steps=remediation, tags=["agent-passport"],
    )


def _stack(name: str, description: str, remediation: str,
           validate: Callable[[StackValidationArgs, ReportViolation], None],
           schema: PolicyConfigSchema | None = None,
           severity: Severity = Severity.HIGH) -> StackValidationPolicy:
    return StackValidationPolicy(
        name=name, description=description, validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY, config_schema=schema, severity=severity,
        remediation_steps=remediation, tags=["agent-passport"],
    )


POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    _resource(
        "no-iam-access-keys",
        "No IAM access keys: they are long-lived static credentials.",
        "Give the agent an aws grant: it assumes an IAM role with its X.509-SVID (IAM Roles "
        "Anywhere) or JWT-SVID (OIDC federation) and gets session credentials that expire.",
        _no_iam_access_keys, severity=Severity.CRITICAL,
    ),
    _resource(
        "no-iam-users",
        "No IAM users or console login profiles for workloads.",
        "Agents assume IAM roles through federation (aws grants); humans sign in through SSO.",
        _no_iam_users, NO_IAM_USERS_SCHEMA,
    ),
    _resource(
        "no-service-account-token-secrets",
        "No Secrets of type kubernetes.io/service-account-token (tokens that never expire).",
        "Use projected, audience-bound ServiceAccount tokens (the kubelet rotates them) or the "
        "agent's SPIFFE identity.",
        _no_sa_token_secrets, severity=Severity.CRITICAL,
    ),
    _resource(
        "no-automounted-token-with-spiffe",
        "Pods that use SPIFFE identities (and agent ServiceAccounts) do not automount a "
        "Kubernetes API token.",
        "Set automountServiceAccountToken: false on the pod spec / ServiceAccount; Linkerd and "
        "SPIRE use projected tokens of their own.",
        _no_automounted_token, severity=Severity.MEDIUM,
    ),
    _resource(
        "no-literal-credentials",
        "No literal credentials in container env, ConfigMaps, SSM documents or DSC scripts.",
        "Reference credentials instead: env valueFrom (secretKeyRef), Vault dynamic secrets, "
        "SSM SecureString parameters or Secrets Manager ARNs, gMSA for Windows services.",
        _no_literal_credentials, LITERALS_SCHEMA, severity=Severity.CRITICAL,
    ),
    _resource(
        "vault-no-stored-db-password",
        "Vault database connections keep no password in Pulumi state.",
        "Pass the admin password through the write-only passwordWo (+ passwordWoVersion) from "
        "a secret stack config key, use {{username}}:{{password}} in connectionUrl, and let Vault "
        "rotate the root credential.",
        _vault_no_stored_db_password, severity=Severity.CRITICAL,
    ),
    _resource(
        "vault-explicit-ttls",
        "Vault roles and mounts set explicit TTLs.",
        "Set defaultTtl/maxTtl on database roles, tokenTtl/tokenMaxTtl on login roles, "
        "defaultLeaseTtlSeconds/maxLeaseTtlSeconds on mounts, ttl/maxTtl on PKI roles.",
        _vault_explicit_ttls, EXPLICIT_TTLS_SCHEMA,
    ),
    _resource(
        "vault-credential-ttl-limits",
        "Vault credentials and tokens stay within the configured lifetimes.",
        "Shorten the TTLs (manifest grants' ttl/maxTtl, stack vault.tokenTtl/tokenMaxTtl) or "
        "raise the limit deliberately in the policy config.",
        _vault_credential_ttl_limits, CREDENTIAL_TTL_SCHEMA,
    ),
    _resource(
        "vault-no-token-or-approle-auth",
        "Agents do not authenticate to Vault with tokens or AppRole secrets.",
        "Agents log in with their SPIFFE identity: JWT-SVIDs (jwt auth) or X.509-SVIDs (cert auth).",
        _vault_no_token_auth, severity=Severity.CRITICAL,
    ),
    _resource(
        "vault-aws-no-static-keys",
        "Vault's AWS engines use no static IAM access keys.",
        "Use plugin workload identity federation (identityTokenAudience + roleArn) or the "
        "instance/pod role Vault runs with.",
        _vault_aws_no_static_keys, severity=Severity.CRITICAL,
    ),
    _resource(
        "leaf-lifetime-limit",
        "Leaf certificates live no longer than the configured limit.",
        "Issue short-lived leaves (SPIRE SVIDs, cert-manager) instead of long-lived certificates.",
        _leaf_lifetime, LEAF_SCHEMA,
    ),
    _resource(
        "svid-ttl-limits",
        "SPIRE registrations ask for SVID TTLs within the limits and at most caTtl/6.",
        "Lower spec.identity.x509SvidTtl / jwtSvidTtl in the agent's manifest.",
        _svid_ttl_limits, SVID_SCHEMA,
    ),
    _resource(
        "rsa-key-size",
        "RSA keys are at least the configured size.",
        "Use ECDSA P-256 (recommended) or RSA with at least 2048 bits (3072 for CAs).",
        _rsa_key_size, RSA_SCHEMA,
    ),
    _resource(
        "linkerd-default-inbound-policy",
        "Meshed namespaces and Linkerd Servers default to deny or authenticated-only inbound traffic.",
        "Annotate the namespace config.linkerd.io/default-inbound-policy: deny (stack "
        "mesh.defaultInboundPolicy) and grant calls explicitly with http grants.",
        _linkerd_inbound, INBOUND_SCHEMA,
    ),
    _resource(
        "gmsa-no-stored-credentials",
        "gMSA credential specs do not depend on stored credentials.",
        "Run Windows pods on domain-joined nodes so the gMSA password is retrieved by the host; "
        "Active Directory rotates it and nobody stores it.",
        _gmsa_no_stored_credentials, GMSA_SCHEMA,
    ),
    _stack(
        "one-identity-per-agent",
        "Every agent has exactly one identity and SPIFFE IDs are unique.",
        "Give each agent its own ServiceAccount or spec.identity.spiffePath; remove stray "
        "registrations; suspended agents get none.",
        _one_identity, severity=Severity.CRITICAL,
    ),
    _stack(
        "grants-enforced",
        "Every grant is enforced somewhere: Linkerd and OPA for http, a Vault role for "
        "database, an IAM role for aws, a Vault policy for vault.",
        "Turn on the subsystem that enforces the grant kind in the stack config, or give the "
        "service a gateway (spec.gateway) so an http grant's conditions are checked.",
        _grants_enforced,
    ),
    _stack(
        "resource-count-ceiling",
        "A stack holds at most the configured number of resources.",
        "Split agents into stack shards (agentsDir / labels) so each preview stays fast.",
        _resource_count, COUNT_SCHEMA, severity=Severity.LOW,
    ),
    _stack(
        "no-state-root-key-in-prod",
        "Production root CAs are not signed by a tls PrivateKey kept in Pulumi state.",
        "Use trust.upstream aws-pca or vault-pki so the root key never leaves the HSM/Vault.",
        _no_state_root_key, ROOT_KEY_SCHEMA, severity=Severity.CRITICAL,
    ),
    _stack(
        "ca-chain-lifetimes",
        "No certificate (the Linkerd issuer included) outlives the CA that signed it.",
        "Shorten the issuer (stack mesh.issuerLifetime, trust.intermediateLifetime) or lengthen "
        "the anchor; rotate the issuer before its anchor expires.",
        _ca_chain_lifetimes,
    ),
]


def policy_named(name: str) -> ResourceValidationPolicy | StackValidationPolicy:
    return next(p for p in POLICIES if p.name == name)
