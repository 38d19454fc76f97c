"""AWS section: federation (no access keys) and the WORM audit trail."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from components.config.base import Section

KMS_KEY_ARN = r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[A-Za-z0-9/_-]+$"


class AuditBucketConfig(Section):
    """S3 bucket with Object Lock (COMPLIANCE mode) for the identity audit trail.

    There is deliberately no switch to turn Object Lock off: the bucket is created with it
    and nobody, including the account root, can delete or shorten a locked object version.
    """

    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=36500,
        description="COMPLIANCE-mode default retention of every object version, in days. "
        "Default: audit.retention (set it there; when both are set they must agree). "
        "Hazard: it can be raised later but locked versions can never be deleted early, "
        "not even by the account root; size it with your records policy.",
    )
    kms_key_arn: str | None = Field(
        default=None,
        pattern=KMS_KEY_ARN,
        description="Existing KMS key (ARN) for SSE-KMS. Default: a new key with yearly "
        "automatic rotation.",
    )
    transition_to_glacier_days: int = Field(
        default=90, ge=1, description="Age in days at which objects move to S3 Glacier Flexible Retrieval."
    )
    bucket_prefix: str = Field(
        default="agentpassport-audit-",
        pattern=r"^[a-z0-9][a-z0-9.-]{0,36}$",
        description="Prefix of the bucket's generated name (at most 37 characters).",
    )


class AwsConfig(Section):
    """AWS federation settings."""

    region: str = Field(
        default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$", description="AWS region."
    )
    federation: Literal["roles-anywhere", "oidc"] = Field(
        default="roles-anywhere",
        description="roles-anywhere: X.509-SVIDs via IAM Roles Anywhere; oidc: JWT-SVIDs via "
        "an IAM OIDC provider for SPIRE's discovery URL.",
    )
    oidc_audience: str = Field(
        default="sts.amazonaws.com",
        pattern=r"^[A-Za-z0-9._:/-]{1,255}$",
        description="Audience (aud) of JWT-SVIDs presented to AWS (federation oidc). Agents "
        "with aws grants must list it in spec.identity.jwtAudiences.",
    )
    audit_bucket: AuditBucketConfig = Field(default_factory=AuditBucketConfig, description="Audit trail bucket.")
