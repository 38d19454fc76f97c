"""Limits section: ceilings manifests must respect, also enforced by the policy pack."""

from __future__ import annotations

from pydantic import Field

from components.config.base import Section
from components.durations import Duration


class Limits(Section):
    """Upper bounds for lifetimes in this stack."""

    max_x509_svid_ttl: Duration = Field(default="1h", description="Longest X.509-SVID TTL a manifest may ask for.")
    max_jwt_svid_ttl: Duration = Field(default="15m", description="Longest JWT-SVID TTL (raise only deliberately).")
    max_db_credential_ttl: Duration = Field(default="10m", description="Longest database credential max TTL.")
    max_aws_session_duration: Duration = Field(default="1h", description="Longest AWS role session.")
    max_leaf_lifetime: Duration = Field(default="24h", description="Longest leaf certificate lifetime.")
    max_gmsa_password_interval_days: int = Field(
        default=1, ge=1, le=3650,
        description="Longest gMSA password interval (windows.gmsaPasswordIntervalDays) the policy "
        "pack accepts, in days.",
    )
    max_resources: int = Field(default=5000, ge=1, description="Resource ceiling for one stack.")
