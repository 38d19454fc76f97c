"""Trust section: the CA hierarchy every identity chains to."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from components.config.base import Section
from components.durations import Duration


class AwsPcaSettings(Section):
    """AWS Private CA as the upstream authority (the CA key never leaves AWS)."""

    mode: Literal["root", "subordinate"] = Field(
        default="subordinate",
        description="root: a new PCA root; subordinate: a PCA subordinate CA signed by an "
        "existing root (issue its certificate out of band, then set certificateArn).",
    )
    existing_arn: str | None = Field(
        default=None, description="Use an existing ACM PCA CA by ARN instead of creating one."
    )
    usage_mode: Literal["GENERAL_PURPOSE", "SHORT_LIVED_CERTIFICATE"] = Field(
        default="SHORT_LIVED_CERTIFICATE",
        description="PCA usage mode; SHORT_LIVED_CERTIFICATE is cheaper for ≤7-day certificates.",
    )


class VaultPkiSettings(Section):
    """Vault PKI as the upstream authority (the key stays inside Vault)."""

    root_mount: str = Field(default="pki-root", description="Mount path of the root PKI engine.")
    intermediate_mount: str = Field(
        default="pki-spire", description="Mount path of the intermediate SPIRE signs with."
    )
    role: str = Field(
        default="spire-upstream",
        description="Name of the Vault policy allowing SPIRE to sign its CA under the intermediate "
        "(<intermediateMount>/root/sign-intermediate), and of the Kubernetes auth role SPIRE's "
        "UpstreamAuthority logs in with.",
    )
    k8s_auth_mount: str = Field(
        default="kubernetes",
        description="Vault Kubernetes auth mount SPIRE's server logs in at. Its role (named like "
        "`role`) must bind the SPIRE server's ServiceAccount to the `role` policy (docs/trust.md).",
    )


class TrustConfig(Section):
    """Root and intermediate CAs."""

    upstream: Literal["tls", "aws-pca", "vault-pki", "spire"] = Field(
        default="tls",
        description="Who holds the signing keys. tls: pulumi-tls keys in Pulumi state (dev "
        "only); aws-pca: AWS Private CA; vault-pki: Vault's PKI engine; spire: SPIRE is its own "
        "root (no UpstreamAuthority; its KeyManager holds the key, spire.keyManager) and rotates "
        "it every spire.caTtl, so no CA key or certificate ever passes through Pulumi. Strict "
        "stacks refuse tls.",
    )
    key_algorithm: Literal["ecdsa-p256", "ecdsa-p384", "rsa-3072"] = Field(
        default="ecdsa-p256", description="Key algorithm of the root and intermediates."
    )
    organization: str = Field(default="Agent Passport", description="Subject O of the CA certificates.")
    root_lifetime: Duration = Field(default="3650d", description="Validity of the root CA.")
    intermediate_lifetime: Duration = Field(
        default="365d", description="Validity of the intermediate CA (must be shorter than the root)."
    )
    early_renewal: Duration = Field(
        default="720h",
        description="Re-issue certificates this long before they expire (pulumi-tls "
        "early_renewal_hours), so a `pulumi up` in that window rotates them.",
    )
    aws_pca: AwsPcaSettings = Field(default_factory=AwsPcaSettings, description="Settings for upstream aws-pca.")
    vault_pki: VaultPkiSettings = Field(
        default_factory=VaultPkiSettings, description="Settings for upstream vault-pki."
    )
    previous_roots: list[str] = Field(
        default_factory=list,
        description="Root CA certificates (PEM, one per entry) of the trust domain before a root "
        "rotation, still trusted beside the current root by every consumer that pins the bundle "
        "(Vault cert auth's certificate, one IAM Roles Anywhere trust anchor each, SPIRE's upstream "
        "bundle) while SVIDs signed under them are alive. Hazard: remove an entry only after the "
        "new root's SPIRE CA has been active for the longest X.509-SVID TTL (`passport ca status` "
        "says when); remove it at once if that root's key is compromised.",
    )

    @model_validator(mode="after")
    def _previous_roots_are_single_certificates(self) -> Self:
        for i, pem in enumerate(self.previous_roots):
            count = pem.count("-----BEGIN CERTIFICATE-----")
            if count != 1:
                raise ValueError(f"previousRoots[{i}] must hold exactly one PEM certificate (found {count})")
        return self
