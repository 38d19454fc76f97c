"""Vault section: auth backends, database clusters, audit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from components.config.base import SecretRef, Section
from components.durations import Duration


class DatabaseCluster(Section):
    """A database Vault mints credentials for."""

    engine: Literal["postgres", "mysql"] = Field(description="Database engine.")
    host: str = Field(description="Hostname Vault connects to.")
    port: int = Field(ge=1, le=65535, description="Port Vault connects to.")
    database: str = Field(default="postgres", description="Database Vault's admin connection opens.")
    username: str = Field(description="Vault's admin user (its password is rotated by Vault after setup).")
    password_secret: SecretRef = Field(description="Secret config key holding the admin's initial password.")
    tls: bool = Field(default=True, description="Require TLS to the database (sslmode=require / tls=true).")
    default_ttl: Duration = Field(default="5m", description="Default lease TTL of the mount.")
    max_lease_ttl: Duration = Field(
        default="10m", description="Explicit max lease TTL of the mount (Vault's default is 768h)."
    )
    rotate_root: bool = Field(
        default=True, description="Rotate the admin password right after configuration (Vault then alone knows it)."
    )


class AuditConfig(Section):
    """Vault audit device."""

    type: Literal["file", "socket"] = Field(default="file", description="file (path below) or socket (address).")
    path: str = Field(default="stdout", description="File path, or stdout for the container log.")
    address: str | None = Field(default=None, description="host:port of the log shipper (socket).")


class VaultConfig(Section):
    """How agents authenticate to Vault and what Vault serves them."""

    address: str = Field(default="http://127.0.0.1:8200", description="Vault API address (the provider's).")
    auth: Literal["jwt", "cert"] = Field(
        default="jwt", description="jwt: JWT-SVIDs against SPIRE's OIDC discovery; cert: X.509-SVID TLS auth."
    )
    jwt_mount: str = Field(default="spiffe-jwt", description="Mount path of the JWT auth backend.")
    cert_mount: str = Field(default="spiffe-cert", description="Mount path of the cert auth backend.")
    jwks_url: str | None = Field(
        default=None,
        description="JWKS URL of SPIRE's OIDC provider; default: <spire.jwtIssuer>/keys. Used "
        "instead of OIDC discovery where Vault cannot reach the discovery document.",
    )
    token_ttl: Duration = Field(default="15m", description="Vault token TTL after login (≤15m).")
    token_max_ttl: Duration = Field(default="30m", description="Vault token max TTL after login.")
    databases: dict[str, DatabaseCluster] = Field(
        default_factory=dict, description="Database clusters by name (grants refer to these names)."
    )
    audit: AuditConfig = Field(default_factory=AuditConfig, description="Audit device.")
