"""Audit section: the log pipeline that ships the identity system's audit logs into WORM storage.

``subsystems.audit`` turns it on. The collector (OpenTelemetry Collector: filelog receiver ->
transform -> awss3exporter) runs as a DaemonSet, reads the container logs of the SPIRE server,
Vault, the gateways' OPA and Envoy and the Linkerd proxies on each node, maps them to the ECS
fields of docs/observe.md and writes them into the Object Lock bucket (docs/audit.md).

It never holds a key: on EKS it gets its AWS session from IRSA or EKS Pod Identity, elsewhere
from IAM Roles Anywhere with its own X.509-SVID.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from components.config.base import SecretRef, Section
from components.durations import Duration, seconds

DAY = 86400
CONTRIB_IMAGE = "otel/opentelemetry-collector-contrib:0.165.0"
ROLE_ARN = r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]+$"
ROLES_ANYWHERE_ARN = r"^arn:aws[a-z-]*:rolesanywhere:[a-z0-9-]+:\d{12}:(trust-anchor|profile)/[A-Za-z0-9-]+$"
OIDC_PROVIDER_ARN = r"^arn:aws[a-z-]*:iam::\d{12}:oidc-provider/[A-Za-z0-9./_-]+$"
SOURCES = ("spire", "vault", "opa", "envoy", "linkerd")
Source = Literal["spire", "vault", "opa", "envoy", "linkerd"]


class AuditSources(Section):
    """Which container log files each source is read from (globs on the node).

    Unset: the default for this stack (docs/audit.md lists them); an empty list turns the
    source off. Paths are kubelet container logs: ``/var/log/pods/<ns>_<pod>_<uid>/<container>/N.log``.
    """

    spire: list[str] | None = Field(
        default=None,
        description="SPIRE server logs (attestation, SVID issuance, audit log). Default: the "
        "spire-server container in spire.namespace.",
    )
    vault: list[str] | None = Field(
        default=None,
        description="Vault's file audit device on stdout (vault.audit.path: stdout). Default: "
        "the vault container in audit.vaultNamespace. Only audit entries are shipped.",
    )
    opa: list[str] | None = Field(
        default=None,
        description="OPA decision logs of the gateways (masked by the gateway's mask.rego). "
        "Default: every gw-* pod's opa container.",
    )
    envoy: list[str] | None = Field(
        default=None,
        description="Envoy access logs of the gateways. Default: every gw-* pod's envoy container.",
    )
    linkerd: list[str] | None = Field(
        default=None,
        description="Linkerd proxy logs; only authorization denials are shipped. Default: "
        "every linkerd-proxy container.",
    )


class AuditConfig(Section):
    """Where audit logs land and how long they stay (docs/audit.md)."""

    retention: Duration = Field(
        default="365d",
        description="Object Lock COMPLIANCE retention of every audit object, and the age at which "
        "a lifecycle rule deletes it (whole days). Hazard: a locked version can never be deleted "
        "earlier, not even by the account root.",
    )
    namespace: str = Field(
        default="agentpassport-audit",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Namespace of the collector DaemonSet.",
    )
    image: str = Field(
        default=CONTRIB_IMAGE,
        min_length=1,
        description="Collector image: any OpenTelemetry Collector 0.165 with the filelog receiver, "
        "transform and batch processors, file_storage and awss3 exporter (contrib has them; "
        "scripts/bootstrap/ocb/otelcol-audit.yaml builds exactly those).",
    )
    bucket: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="An existing Object Lock bucket. Default: this stack's audit bucket "
        "(subsystems.aws), which is required then.",
    )
    prefix: str = Field(
        default="agentpassport",
        pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$",
        description="First key segment; objects land under <prefix>/<stack>/<source>/year=/month=/day=/.",
    )
    region: str | None = Field(
        default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$", description="Bucket region (default aws.region)."
    )
    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(/.*)?$",
        description="S3 endpoint, for an S3-compatible store with Object Lock (default: AWS). "
        "Strict stacks accept only https.",
    )
    credentials: Literal["roles-anywhere", "irsa", "pod-identity"] = Field(
        default="roles-anywhere",
        description="How the collector gets its AWS session, never from a key: roles-anywhere "
        "(its own X.509-SVID, any cluster), irsa (EKS IAM Roles for Service Accounts) or "
        "pod-identity (EKS Pod Identity).",
    )
    eks_cluster_name: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$",
        description="EKS cluster of the Pod Identity association (credentials: pod-identity).",
    )
    eks_oidc_provider_arn: str | None = Field(
        default=None,
        pattern=OIDC_PROVIDER_ARN,
        description="The EKS cluster's IAM OIDC provider (credentials: irsa).",
    )
    role_arn: str | None = Field(
        default=None,
        pattern=ROLE_ARN,
        description="An existing role for the collector. Default: the program creates one "
        "(subsystems.aws), allowed only s3:PutObject under the stack's prefix.",
    )
    trust_anchor_arn: str | None = Field(
        default=None,
        pattern=ROLES_ANYWHERE_ARN,
        description="Roles Anywhere trust anchor (default: the stack's, subsystems.aws).",
    )
    profile_arn: str | None = Field(
        default=None,
        pattern=ROLES_ANYWHERE_ARN,
        description="Roles Anywhere profile (default: one the program creates, subsystems.aws).",
    )
    vault_namespace: str = Field(
        default="vault",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Namespace of the Vault pods whose stdout audit device is read.",
    )
    pseudonym_key_secret: SecretRef | None = Field(
        default=None,
        description="Secret stack config key with a key for pseudonyms: human user names in "
        "Vault's audit log become HMAC-like SHA-256 pseudonyms under it. Unset: they are "
        "replaced by 'redacted'. Either way no name reaches the WORM bucket (docs/audit.md).",
    )
    sources: AuditSources = Field(default_factory=AuditSources, description="Log files per source.")
    cloud_trail: bool = Field(
        default=False,
        description="Also a CloudTrail trail (every region, log file validation) of the account's IAM, "
        "Roles Anywhere and KMS management events into the same bucket under cloudtrail/ "
        "(subsystems.aws; the bucket's retention and lifecycle apply).",
    )
    batch_timeout: Duration = Field(
        default="60s",
        description="Longest a line waits on the node before its object is written (one object "
        "per source, node and batch).",
    )
    spiffe_helper_image: str = Field(
        default="ghcr.io/spiffe/spiffe-helper:0.11.0",
        min_length=1,
        description="credentials roles-anywhere: the sidecar that writes the collector's X.509-SVID "
        "to a memory volume and renews it.",
    )
    signing_helper_path: str = Field(
        default="/usr/local/bin/aws_signing_helper",
        pattern=r"^/[A-Za-z0-9._/-]+$",
        description="credentials roles-anywhere: where the collector image carries AWS's "
        "aws_signing_helper. The SDK runs it as credential_process on every refresh, so it reads "
        "the SVID spiffe-helper just renewed (its `serve` mode reads the files only at start). "
        "The upstream contrib image lacks it: roles-anywhere needs an image of your own (docs/audit.md).",
    )

    @property
    def retention_days(self) -> int:
        return seconds(self.retention) // DAY

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if seconds(self.retention) % DAY or seconds(self.retention) < DAY:
            raise ValueError(f"retention {self.retention!r}: Object Lock counts whole days; write it in days (365d)")
        if seconds(self.retention) > 36500 * DAY:
            raise ValueError("retention above 100 years (36500d) is refused by S3 Object Lock")
        if self.trust_anchor_arn is not None and ":trust-anchor/" not in self.trust_anchor_arn:
            raise ValueError("trustAnchorArn must be a Roles Anywhere trust-anchor ARN")
        if self.profile_arn is not None and ":profile/" not in self.profile_arn:
            raise ValueError("profileArn must be a Roles Anywhere profile ARN")
        if seconds(self.batch_timeout) > 3600:
            raise ValueError("batchTimeout above 1h keeps audit lines on the node too long; use 60s")
        return self
