"""What every part of the audit pipeline shares: names, paths, datasets, the target, the validation,
the sources."""

from __future__ import annotations

from dataclasses import dataclass

from components.config import StackConfig
from components.config.audit import CONTRIB_IMAGE, SOURCES
from components.errors import ConfigError, Problem
from components.platform_model import Platform
from components.render import credentials

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
MASKED = credentials.MASKED
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
