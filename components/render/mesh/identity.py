"""Linkerd's identity: the trust anchor + issuer certificate profile, its stack problems, and the
objects that hand the certificates to Linkerd (control-plane namespace, trust roots, issuer Secret,
or cert-manager's).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from components.config import NAMESPACE, StackConfig
from components.durations import seconds
from components.errors import ConfigError, Problem
from components.labels import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from components.render.mesh.names import (
    INJECT_ANNOTATION,
    ISSUER_SECRET,
    TRUST_ROOTS_CONFIGMAP,
    TRUST_ROOTS_KEY,
)
from components.render.trust import KEY_SPECS, CaProfile, KeySpec

# --------------------------------------------------------------------------- identity profile

CA_USES = ("cert_signing", "crl_signing")
"""pulumi-tls allowed_uses of the anchor and the issuer: keyCertSign + cRLSign (step's CA profiles)."""


LINKERD_KEY = KEY_SPECS["ecdsa-p256"]
"""Linkerd requires ECDSA P-256 keys of its anchors and issuer."""

Custody = Literal["tls", "vault-pki", "aws-pca", "cert-manager"]
"""Who holds the Linkerd trust anchors' keys (mesh.anchorCustody)."""


@dataclass(frozen=True)
class LinkerdIdentityProfile:
    """The trust anchor(s) and issuer Linkerd's identity controller needs, independent of keys."""

    control_plane_namespace: str
    cluster_domain: str
    organization: str
    anchor_generations: tuple[str, ...]
    signing_anchor: str
    anchor_validity_hours: int
    issuer_validity_hours: int
    issuer_early_renewal_hours: int
    extra_anchors_pem: tuple[str, ...]
    cni_enabled: bool
    custody: Custody = "tls"
    """Who holds the anchors' keys (the issuer key is pulumi-tls's unless cert-manager issues it)."""
    cert_manager_namespace: str = "cert-manager"
    vault_pki_mount: str = "pki-linkerd"
    aws_region: str = "us-east-1"
    issuer_rotation: str = "1"
    key: KeySpec = LINKERD_KEY
    """Key algorithm of the anchors and the issuer (Linkerd requires ECDSA P-256)."""
    anchor_path_length: int = 1
    issuer_path_length: int = 0
    ca_uses: tuple[str, ...] = CA_USES

    @property
    def ecdsa_curve(self) -> str | None:
        """The key's curve as pulumi-tls names it."""
        return self.key.tls_ecdsa_curve

    @property
    def anchor_common_name(self) -> str:
        return f"root.{self.control_plane_namespace}.{self.cluster_domain}"

    @property
    def issuer_common_name(self) -> str:
        return f"identity.{self.control_plane_namespace}.{self.cluster_domain}"

    def anchor_unit(self, generation: str) -> str:
        """Subject OU that tells anchor generations apart (their CN is Linkerd's fixed name)."""
        return f"linkerd trust anchor {generation}"

    @property
    def issuer_unit(self) -> str:
        """Subject OU of the issuer; changing ``mesh.issuerRotation`` changes it and so re-issues it."""
        return f"linkerd identity issuer {self.issuer_rotation}"

    def vault_mount(self, generation: str) -> str:
        return f"{self.vault_pki_mount}-{generation}"

    @property
    def anchor_validity_days(self) -> int:
        return self.anchor_validity_hours // 24

    @property
    def issuer_validity_days(self) -> int:
        return self.issuer_validity_hours // 24

    def anchor(self, generation: str) -> CaProfile:
        """The CA profile of one trust anchor generation (self-signed)."""
        return CaProfile(
            common_name=self.anchor_common_name, organization=self.organization, key=self.key,
            path_length=self.anchor_path_length, validity_hours=self.anchor_validity_hours,
            allowed_uses=self.ca_uses, unit=self.anchor_unit(generation), cn_in_sans=False,
        )

    @property
    def issuer(self) -> CaProfile:
        """The CA profile of the identity issuer (signed by the signing anchor)."""
        return CaProfile(
            common_name=self.issuer_common_name, organization=self.organization, key=self.key,
            path_length=self.issuer_path_length, validity_hours=self.issuer_validity_hours,
            allowed_uses=self.ca_uses, unit=self.issuer_unit,
            early_renewal_hours=self.issuer_early_renewal_hours, cn_in_sans=False,
        )


def _extra_anchor_problem(index: int, pem: str) -> str | None:
    """Why an extra trust anchor cannot go into Linkerd's bundle, or None."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        cert = x509.load_pem_x509_certificate(pem.strip().encode())
    except ValueError as exc:
        return f"extraTrustAnchorsPem[{index}] is not a PEM certificate ({exc})"
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if not ca:
        return f"extraTrustAnchorsPem[{index}] ({cert.subject.rfc4514_string()}) is not a CA certificate"
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return (f"extraTrustAnchorsPem[{index}] ({cert.subject.rfc4514_string()}) does not use an ECDSA "
                "P-256 key, which Linkerd requires of trust anchors")
    return None


def anchor_custody(cfg: StackConfig) -> Custody:
    """mesh.anchorCustody, defaulting to the trust domain's own key custody (trust.upstream;
    cert-manager when SPIRE is its own root, so that no key of the stack sits in Pulumi state)."""
    if cfg.mesh.anchor_custody is not None:
        return cfg.mesh.anchor_custody
    return "cert-manager" if cfg.trust.upstream == "spire" else cfg.trust.upstream


def linkerd_identity_problems(cfg: StackConfig, file: str) -> list[Problem]:
    """Stack-config problems of the Linkerd identity that the generic checks do not cover."""
    m = cfg.mesh
    out: list[Problem] = []

    def p(key: str, message: str) -> None:
        out.append(Problem(file, None, f"{NAMESPACE}:mesh.{key}", message))

    for key, value in (("trustAnchorLifetime", m.trust_anchor_lifetime), ("issuerLifetime", m.issuer_lifetime),
                       ("issuerEarlyRenewal", m.issuer_early_renewal)):
        if seconds(value) % 3600:
            p(key, f"{value} is not a whole number of hours; certificate lifetimes are set in hours (e.g. 2160h)")
    if seconds(m.issuer_lifetime) >= seconds(m.trust_anchor_lifetime):
        p("issuerLifetime", f"{m.issuer_lifetime} is not shorter than trustAnchorLifetime "
                            f"({m.trust_anchor_lifetime}): the issuer must expire before its anchor")
    if seconds(m.issuer_early_renewal) >= seconds(m.issuer_lifetime):
        p("issuerEarlyRenewal", f"{m.issuer_early_renewal} is not shorter than issuerLifetime "
                                f"({m.issuer_lifetime}): the issuer would be re-issued on every `pulumi up`")
    custody = anchor_custody(cfg)
    if custody == "aws-pca":
        for key, value in (("trustAnchorLifetime", m.trust_anchor_lifetime), ("issuerLifetime", m.issuer_lifetime)):
            if seconds(value) % 86400:
                p(key, f"{value} is not a whole number of days, which AWS Private CA needs (anchorCustody aws-pca)")
        if seconds(m.trust_anchor_lifetime) > 10 * 365 * 86400:
            p("trustAnchorLifetime", "AWS Private CA roots are limited to 10 years here; shorten trustAnchorLifetime")
    for i, pem in enumerate(m.extra_trust_anchors_pem):
        problem = _extra_anchor_problem(i, pem)
        if problem:
            p(f"extraTrustAnchorsPem[{i}]", problem)
    return out


def linkerd_identity_profile(cfg: StackConfig, file: str = "stack configuration") -> LinkerdIdentityProfile:
    """The validated certificate profile of a stack; raises ConfigError listing every problem."""
    problems = linkerd_identity_problems(cfg, file)
    if problems:
        raise ConfigError(problems)
    return _identity_profile(cfg)


def _identity_profile(cfg: StackConfig) -> LinkerdIdentityProfile:
    m = cfg.mesh
    return LinkerdIdentityProfile(
        control_plane_namespace=m.control_plane_namespace,
        cluster_domain=m.cluster_domain,
        organization=cfg.trust.organization,
        anchor_generations=tuple(m.trust_anchors),
        signing_anchor=m.signing_anchor,
        anchor_validity_hours=seconds(m.trust_anchor_lifetime) // 3600,
        issuer_validity_hours=seconds(m.issuer_lifetime) // 3600,
        issuer_early_renewal_hours=seconds(m.issuer_early_renewal) // 3600,
        extra_anchors_pem=tuple(m.extra_trust_anchors_pem),
        cni_enabled=m.cni_enabled,
        custody=anchor_custody(cfg),
        cert_manager_namespace=m.cert_manager_namespace,
        vault_pki_mount=m.vault_pki_mount,
        aws_region=cfg.aws.region,
        issuer_rotation=m.issuer_rotation,
    )


def trust_bundle(pems: Iterable[str]) -> str:
    """Linkerd's ``ca-bundle.crt``: every anchor once, in order, each block newline-terminated."""
    seen: list[str] = []
    for pem in pems:
        block = pem.strip()
        if block and block not in seen:
            seen.append(block)
    return "".join(f"{b}\n" for b in seen)


def _control_plane_labels(namespace: str) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        "linkerd.io/control-plane-component": "identity",
        "linkerd.io/control-plane-ns": namespace,
    }


def control_plane_namespace(profile: LinkerdIdentityProfile) -> dict[str, Any]:
    """Linkerd's own namespace, labelled as the linkerd-control-plane chart labels it."""
    ns = profile.control_plane_namespace
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ns,
            "annotations": {INJECT_ANNOTATION: "disabled"},
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY_VALUE,
                "config.linkerd.io/admission-webhooks": "disabled",
                "linkerd.io/control-plane-ns": ns,
                "linkerd.io/is-control-plane": "true",
                "pod-security.kubernetes.io/enforce": "restricted" if profile.cni_enabled else "privileged",
            },
        },
    }


V = TypeVar("V")


def cert_manager_identity_objects(profile: LinkerdIdentityProfile) -> list[dict[str, Any]]:
    """Linkerd's identity from cert-manager (anchorCustody cert-manager), as Linkerd documents it
    for production: cert-manager makes each anchor generation (self-signed; its key is kept across
    renewals, so chains stay valid) and issues the identity issuer from the signing anchor,
    renewing it ``issuerEarlyRenewal`` before it expires; trust-manager writes every anchor (and
    extraTrustAnchorsPem) into ``linkerd-identity-trust-roots``. No key passes through Pulumi."""
    p = profile
    cm_ns, ns = p.cert_manager_namespace, p.control_plane_namespace
    labels = {MANAGED_BY_LABEL: MANAGED_BY_VALUE}
    self_signed = "linkerd-trust-anchor-selfsigned"
    objects: list[dict[str, Any]] = [{
        "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
        "metadata": {"name": self_signed, "namespace": cm_ns, "labels": labels},
        "spec": {"selfSigned": {}},
    }]
    for gen in p.anchor_generations:
        objects.append({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": f"linkerd-trust-anchor-{gen}", "namespace": cm_ns, "labels": labels},
            "spec": {
                "secretName": f"linkerd-trust-anchor-{gen}",
                "isCA": True,
                "commonName": p.anchor_common_name,
                "subject": {"organizations": [p.organization], "organizationalUnits": [p.anchor_unit(gen)]},
                "duration": f"{p.anchor_validity_hours}h",
                # A renewal keeps the key: issuers (and proxies' leaves) chained to it stay valid.
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Never"},
                "usages": ["cert sign", "crl sign"],
                "issuerRef": {"name": self_signed, "kind": "Issuer", "group": "cert-manager.io"},
            },
        })
    objects += [
        {
            "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
            "metadata": {"name": "linkerd-trust-anchor", "labels": labels},
            "spec": {"ca": {"secretName": f"linkerd-trust-anchor-{p.signing_anchor}"}},
        },
        {
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": ISSUER_SECRET, "namespace": ns, "labels": _control_plane_labels(ns)},
            "spec": {
                "secretName": ISSUER_SECRET,
                "isCA": True,
                "commonName": p.issuer_common_name,
                "dnsNames": [p.issuer_common_name],
                "subject": {"organizations": [p.organization], "organizationalUnits": [p.issuer_unit]},
                "duration": f"{p.issuer_validity_hours}h",
                "renewBefore": f"{p.issuer_early_renewal_hours}h",
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "usages": ["cert sign", "crl sign", "server auth", "client auth"],
                "issuerRef": {"name": "linkerd-trust-anchor", "kind": "ClusterIssuer", "group": "cert-manager.io"},
            },
        },
        {
            "apiVersion": "trust.cert-manager.io/v1alpha1", "kind": "Bundle",
            "metadata": {"name": TRUST_ROOTS_CONFIGMAP, "labels": labels},
            "spec": {
                "sources": [
                    *({"secret": {"name": f"linkerd-trust-anchor-{gen}", "key": "tls.crt"}}
                      for gen in p.anchor_generations),
                    *({"inLine": pem.strip() + "\n"} for pem in p.extra_anchors_pem),
                ],
                "target": {
                    "configMap": {"key": TRUST_ROOTS_KEY},
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                },
            },
        },
    ]
    return objects


def trust_roots_configmap(namespace: str, bundle: V) -> dict[str, Any]:
    """The ``linkerd-identity-trust-roots`` ConfigMap (``bundle`` may be a deploy-time value)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": TRUST_ROOTS_CONFIGMAP, "namespace": namespace, "labels": _control_plane_labels(namespace)},
        "data": {TRUST_ROOTS_KEY: bundle},
    }


def issuer_secret(namespace: str, crt: V, key: V, ca: V) -> dict[str, Any]:
    """The ``linkerd-identity-issuer`` Secret (scheme kubernetes.io/tls); values are deploy-time secrets."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": ISSUER_SECRET, "namespace": namespace, "labels": _control_plane_labels(namespace)},
        "type": "kubernetes.io/tls",
        "stringData": {"ca.crt": ca, "tls.crt": crt, "tls.key": key},
    }
