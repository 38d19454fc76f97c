"""AWS section: federation and the WORM audit trail."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from components.config.base import Section


class AuditBucketConfig(Section):
    """S3 bucket with Object Lock for the identity audit trail."""

    retention_days: int = Field(default=365, ge=1, le=36500, description="COMPLIANCE-mode retention.")
    kms_key_arn: str | None = Field(default=None, description="Existing KMS key; default: a new key.")
    transition_to_glacier_days: int = Field(default=90, ge=1, description="Lifecycle transition age.")


class AwsConfig(Section):
    """AWS federation settings."""

    region: str = Field(default="us-east-1", description="AWS region.")
    federation: Literal["roles-anywhere", "oidc"] = Field(
        default="roles-anywhere",
        description="roles-anywhere: X.509-SVIDs via IAM Roles Anywhere; oidc: JWT-SVIDs via "
        "an IAM OIDC provider for SPIRE's discovery URL.",
    )
    audit_bucket: AuditBucketConfig = Field(default_factory=AuditBucketConfig, description="Audit trail bucket.")
