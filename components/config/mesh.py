"""Mesh section: Linkerd namespaces, authorization policy and the identity trust anchor + issuer."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from components.config.base import Section
from components.durations import Duration

AnchorGeneration = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,14}[a-z0-9])?$"),
    Field(description="Name of one generation of the Linkerd trust anchor (lowercase letters, digits, '-')."),
]

PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


InboundPolicy = Literal["deny", "all-authenticated", "cluster-authenticated", "all-unauthenticated"]
STRICT_INBOUND_POLICIES: tuple[InboundPolicy, ...] = ("deny", "all-authenticated")
"""The default inbound policies a strict stack may build namespaces with (checked by
:func:`components.config.strict_problems`, the rule's one home)."""


class MeshConfig(Section):
    """Linkerd strict mTLS settings."""

    default_inbound_policy: InboundPolicy = Field(
        default="deny",
        description="Namespace default inbound policy. Strict stacks accept only deny or "
        "all-authenticated; unauthenticated values are refused there.",
    )
    cluster_domain: str = Field(default="cluster.local", description="Kubernetes cluster domain.")
    control_plane_namespace: str = Field(
        default="linkerd",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Namespace of Linkerd's control plane, where the trust roots ConfigMap "
        "(linkerd-identity-trust-roots) and the issuer Secret (linkerd-identity-issuer) are "
        "created. Install the linkerd-control-plane chart there with identity.externalCA=true "
        "and identity.issuer.scheme=kubernetes.io/tls.",
    )
    cni_enabled: bool = Field(
        default=False,
        description="Linkerd runs with its CNI plugin. Off: the control-plane namespace is "
        "labelled pod-security 'privileged' because linkerd-init needs NET_ADMIN; on: 'restricted'.",
    )
    trust_anchor_lifetime: Duration = Field(default="3650d", description="Linkerd trust anchor validity.")
    issuer_lifetime: Duration = Field(
        default="2160h", description="Linkerd identity issuer validity (shorter than the anchor)."
    )
    issuer_early_renewal: Duration = Field(
        default="720h",
        description="Re-issue the identity issuer this long before it expires: a `pulumi up` "
        "in that window rotates it (same anchor, so no restart is needed). Shorter than "
        "issuerLifetime.",
    )
    trust_anchors: list[AnchorGeneration] = Field(
        default_factory=lambda: ["g1"],
        min_length=1,
        max_length=2,
        description="Generations of the trust anchor this stack creates (ECDSA P-256, key in "
        "Pulumi state only), all of them in the trust bundle. One normally; two while rotating "
        "(add the new generation, restart workloads, switch issuerAnchor, remove the old one). "
        "Renaming an entry creates a new anchor.",
    )
    issuer_anchor: AnchorGeneration | None = Field(
        default=None,
        description="Which of trustAnchors signs the identity issuer. Default: the first. "
        "Changing it re-issues the issuer under that anchor.",
    )
    anchor_custody: Literal["tls", "vault-pki", "aws-pca", "cert-manager"] | None = Field(
        default=None,
        description="Who holds each trust anchor's private key. tls: pulumi-tls, the key is "
        "kept (encrypted) in Pulumi state; vault-pki: a Vault PKI mount per generation "
        "(<vaultPkiMount>-<generation>), the key never leaves Vault; aws-pca: an AWS Private CA "
        "root per generation (GENERAL_PURPOSE, billed monthly), the key never leaves the HSM. "
        "cert-manager: cert-manager makes each anchor (self-signed, key kept across renewals) "
        "in certManagerNamespace and issues and renews the identity issuer itself, trust-manager "
        "publishes the bundle; no key passes through Pulumi. Default: follows trust.upstream "
        "(cert-manager for upstream spire). Except with cert-manager, the issuer key is generated "
        "by pulumi-tls, since Linkerd's identity controller needs it.",
    )
    cert_manager_namespace: str = Field(
        default="cert-manager",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="anchorCustody cert-manager: cert-manager's cluster resource namespace, where "
        "the anchors' Secrets live; trust-manager must use it as its trust namespace.",
    )
    vault_pki_mount: str = Field(
        default="pki-linkerd",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,60}$",
        description="Mount path prefix of the Linkerd anchors with anchorCustody vault-pki.",
    )
    issuer_rotation: str = Field(
        default="1",
        pattern=r"^[A-Za-z0-9._-]{1,32}$",
        description="Change this value to re-issue the identity issuer at the next `pulumi up`. "
        "Needed with anchorCustody vault-pki or aws-pca, which cannot renew early; with tls, "
        "issuerEarlyRenewal does it on its own.",
    )
    extra_trust_anchors_pem: list[str] = Field(
        default_factory=list,
        description="Additional trust anchor certificates (PEM) kept in the bundle during an "
        "anchor rotation (see docs: add new anchor, wait, switch issuer, remove old).",
    )

    @property
    def signing_anchor(self) -> str:
        """The trust anchor generation that signs the issuer."""
        return self.issuer_anchor or self.trust_anchors[0]

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if len(set(self.trust_anchors)) != len(self.trust_anchors):
            raise ValueError("trustAnchors lists a generation twice; list each once")
        if self.issuer_anchor is not None and self.issuer_anchor not in self.trust_anchors:
            raise ValueError(
                f"issuerAnchor {self.issuer_anchor!r} is not one of trustAnchors "
                f"({', '.join(self.trust_anchors)}); the issuer must chain to an anchor in the bundle"
            )
        for i, pem in enumerate(self.extra_trust_anchors_pem):
            if pem.count(PEM_CERTIFICATE) != 1:
                raise ValueError(
                    f"extraTrustAnchorsPem[{i}] must hold exactly one PEM certificate "
                    f"(found {pem.count(PEM_CERTIFICATE)} '{PEM_CERTIFICATE}' blocks)"
                )
        return self
