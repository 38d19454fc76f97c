"""Vault section: auth backends, database clusters, audit."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from components.config.base import SecretRef, Section
from components.durations import Duration, seconds

MAX_TOKEN_TTL_SECONDS = 15 * 60
"""Agents' Vault tokens live at most 15 minutes (they log in again with a fresh SVID)."""
MAX_TOKEN_MAX_TTL_SECONDS = 60 * 60
"""Upper bound of token_max_ttl: renewals can never stretch a token past one hour."""

MountPath = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([a-z0-9_-]{0,62}[a-z0-9])?$"),
    Field(description="A Vault mount path: one segment of lowercase letters, digits, '-' and '_'."),
]
HostName = Annotated[
    str,
    StringConstraints(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$"),
    Field(description="A DNS name, an IPv4 address, or an IPv6 address in brackets."),
]
DbUser = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"),
    Field(description="A database user name: letters, digits and '_', not starting with a digit."),
]


class DatabaseAdmin(Section):
    """Vault's admin user for one database of a PostgreSQL cluster."""

    username: DbUser = Field(description="Admin user of this database's connection.")
    password_secret: SecretRef | None = Field(
        default=None,
        description="Secret config key holding its initial password. Default: the cluster's "
        "passwordSecret (Vault rotates each admin's password right after setup, so sharing "
        "the initial one only matters until the first `pulumi up`).",
    )
    password_version: int = Field(
        default=1,
        ge=1,
        description="Bump after resetting the admin's password out of band: the new initial "
        "password is sent to Vault (write-only) and rotated again.",
    )


class DatabaseCluster(Section):
    """A database Vault mints credentials for."""

    engine: Literal["postgres", "mysql"] = Field(description="Database engine.")
    host: HostName = Field(description="Hostname Vault connects to.")
    port: int = Field(ge=1, le=65535, description="Port Vault connects to.")
    database: str = Field(
        default="postgres",
        description="Database the MySQL connection opens (PostgreSQL opens one connection per "
        "granted database, because table privileges can only be granted from inside the "
        "database that holds the tables).",
    )
    username: DbUser = Field(description="Vault's admin user (its password is rotated by Vault after setup).")
    password_secret: SecretRef = Field(description="Secret config key holding the admin's initial password.")
    password_version: int = Field(
        default=1,
        ge=1,
        description="Bump after resetting the admin's password out of band: Vault's provider "
        "sends write-only passwords only when this version changes, so a rotated password is "
        "never overwritten by the stale initial one.",
    )
    admins: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")], DatabaseAdmin
    ] = Field(
        default_factory=dict,
        description="PostgreSQL only: a separate admin per database (key: database name). "
        "Needed when one cluster serves several granted databases and rotateRoot is on: "
        "PostgreSQL roles are cluster-wide, so rotating one shared admin's password from one "
        "connection would lock the other connections out.",
    )
    tls: bool = Field(default=True, description="Require TLS to the database (sslmode=require / tls=true).")
    default_ttl: Duration = Field(default="5m", description="Default lease TTL of the mount.")
    max_lease_ttl: Duration = Field(
        default="10m", description="Explicit max lease TTL of the mount (Vault's default is 768h)."
    )
    rotate_root: bool = Field(
        default=True, description="Rotate the admin password right after configuration (Vault then alone knows it)."
    )
    terminate_sessions: bool = Field(
        default=True,
        description="PostgreSQL: revocation also terminates the expired user's open sessions "
        "(DROP ROLE alone leaves them running). The admin needs the pg_signal_backend role.",
    )

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if seconds(self.default_ttl) > seconds(self.max_lease_ttl):
            raise ValueError(f"defaultTtl {self.default_ttl} is longer than maxLeaseTtl {self.max_lease_ttl}")
        if self.admins and self.engine != "postgres":
            raise ValueError("admins is for PostgreSQL clusters; a MySQL cluster has one connection")
        return self


class AuditConfig(Section):
    """Vault audit device."""

    type: Literal["file", "socket"] = Field(default="file", description="file (path below) or socket (address).")
    path: str = Field(default="stdout", description="File path, or stdout for the container log.")
    address: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$",
        description="host:port of the log shipper (socket).",
    )
    socket_type: Literal["tcp", "udp", "unix"] = Field(
        default="tcp", description="Socket type of the socket device (tcp keeps entries in order and complete)."
    )

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if self.type == "socket" and self.address is None:
            raise ValueError("a socket audit device needs an address (host:port of the log shipper)")
        if self.type == "file" and self.address is not None:
            raise ValueError("address is for socket audit devices; remove it or set type: socket")
        return self


class VaultConfig(Section):
    """How agents authenticate to Vault and what Vault serves them."""

    address: str = Field(default="http://127.0.0.1:8200", description="Vault API address (the provider's).")
    auth: Literal["jwt", "cert"] = Field(
        default="jwt", description="jwt: JWT-SVIDs against SPIRE's OIDC discovery; cert: X.509-SVID TLS auth."
    )
    jwt_mount: MountPath = Field(default="spiffe-jwt", description="Mount path of the JWT auth backend.")
    cert_mount: MountPath = Field(default="spiffe-cert", description="Mount path of the cert auth backend.")
    jwks_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="JWKS URL of SPIRE's OIDC provider; default: <spire.jwtIssuer>/keys. Used "
        "instead of OIDC discovery where Vault cannot reach the discovery document.",
    )
    jwks_ca_pem: str | None = Field(
        default=None,
        description="PEM CA bundle that signs the JWKS endpoint's TLS certificate, when it is "
        "not publicly trusted (default: the system roots).",
    )
    token_ttl: Duration = Field(default="15m", description="Vault token TTL after login (≤15m).")
    token_max_ttl: Duration = Field(default="30m", description="Vault token max TTL after login (≤1h).")
    token_type: Literal["service", "batch"] = Field(
        default="service",
        description="service: revocable tokens whose database leases are revoked with them "
        "(the kill switch works at once); batch: cheaper, unrevocable tokens for very large "
        "fleets (a revoked agent keeps its token until it expires, at most tokenTtl).",
    )
    databases: dict[
        Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")], DatabaseCluster
    ] = Field(
        default_factory=dict,
        description="Database clusters by name (grants refer to these names); each gets the "
        "mount db-<name>.",
    )
    audit: AuditConfig = Field(default_factory=AuditConfig, description="Audit device.")

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if seconds(self.token_max_ttl) > MAX_TOKEN_MAX_TTL_SECONDS:
            raise ValueError(f"tokenMaxTtl {self.token_max_ttl} is above 1h; agents log in again instead")
        if self.jwt_mount == self.cert_mount:
            raise ValueError("jwtMount and certMount must differ")
        return self
