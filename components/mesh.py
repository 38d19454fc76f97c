"""Linkerd: strict-mTLS namespaces, per-service authorization policy, the identity anchor + issuer.

* :class:`LinkerdIdentity` — the trust anchor generation(s) (ECDSA P-256; keys held by
  pulumi-tls, Vault PKI or AWS Private CA, following the trust domain's custody) and the
  identity issuer, the ``linkerd-identity-trust-roots`` ConfigMap (the bundle) and the
  ``linkerd-identity-issuer`` Secret (kubernetes.io/tls) in Linkerd's namespace. No anchor key
  ever reaches a Kubernetes object; only the issuer's key does.
* :class:`MeshNamespace` — one per namespace hosting agents or the services they call: the
  Namespace (``linkerd.io/inject: enabled``, the stack's default inbound policy) and the
  ``policy.linkerd.io`` objects of the services there, as planned by
  :func:`components.render.mesh.mesh_plan`.

The objects are rendered by :mod:`components.render.mesh` and registered unchanged through
:func:`components.kube.kube_objects`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_tls as tls

from components.kube import kube_objects
from components.render.mesh import (
    LinkerdIdentityProfile,
    MeshPlan,
    NamespacePlan,
    cert_manager_identity_objects,
    control_plane_namespace,
    issuer_secret,
    namespace_object,
    trust_bundle,
    trust_roots_configmap,
)

# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class LinkerdIdentityArgs:
    """Inputs of :class:`LinkerdIdentity`."""

    profile: LinkerdIdentityProfile
    """The validated certificate profile (``MeshPlan.identity`` of :func:`components.compile.compile`)."""


class LinkerdIdentity(pulumi.ComponentResource):
    """Linkerd's identity trust anchor(s) and issuer, handed to the control plane.

    The anchors' keys stay with their custodian (``mesh.anchorCustody``, by default the trust
    domain's: pulumi-tls in dev, Vault PKI or AWS Private CA elsewhere); only the issuer's key,
    which Linkerd's identity controller signs with, is generated here and enters the cluster.
    """

    trust_anchor_pems: dict[str, pulumi.Output[str]]
    """Certificate of each anchor generation (public)."""
    trust_bundle_pem: pulumi.Output[str]
    """The ``ca-bundle.crt`` Linkerd's proxies trust: every generation plus extraTrustAnchorsPem."""
    issuer_cert_pem: pulumi.Output[str]
    """The identity issuer certificate (public)."""

    def __init__(self, name: str, args: LinkerdIdentityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:mesh:LinkerdIdentity", name, None, opts)
        p = args.profile
        child = pulumi.ResourceOptions(parent=self)
        if p.custody == "cert-manager":
            self._cert_manager(name, p)
            return

        issuer_key = tls.PrivateKey(f"{name}-issuer-key", algorithm="ECDSA", ecdsa_curve=p.ecdsa_curve, opts=child)
        issuer_csr = tls.CertRequest(
            f"{name}-issuer-csr",
            private_key_pem=issuer_key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=p.issuer_common_name, organization=p.organization,
                                               organizational_unit=p.issuer_unit),
            opts=child,
        )
        if p.custody == "tls":
            anchors, issuer_pem = self._tls(name, p, issuer_csr.cert_request_pem)
        elif p.custody == "vault-pki":
            anchors, issuer_pem = self._vault_pki(name, p, issuer_csr.cert_request_pem)
        else:
            anchors, issuer_pem = self._aws_pca(name, p, issuer_csr.cert_request_pem)

        ordered = [anchors[g] for g in p.anchor_generations]
        bundle = pulumi.Output.all(*ordered).apply(
            lambda pems: trust_bundle([*(x for x in pems if x), *p.extra_anchors_pem]))
        ns = p.control_plane_namespace
        issuer_crt: pulumi.Output[str] = pulumi.Output.secret(issuer_pem)
        issuer_key_pem: pulumi.Output[str] = pulumi.Output.secret(issuer_key.private_key_pem)
        issuer_ca: pulumi.Output[str] = pulumi.Output.secret(anchors[p.signing_anchor])
        kube_objects(name, [
            control_plane_namespace(p),
            trust_roots_configmap(ns, bundle),
            # Only the issuer's key enters the cluster; no anchor key ever does.
            issuer_secret(ns, crt=issuer_crt, key=issuer_key_pem, ca=issuer_ca),
        ], self)

        self.trust_anchor_pems = anchors
        self.trust_bundle_pem = bundle
        self.issuer_cert_pem = issuer_pem
        self.register_outputs({
            "trustAnchorPems": self.trust_anchor_pems,
            "trustBundlePem": self.trust_bundle_pem,
            "issuerCertPem": self.issuer_cert_pem,
            "anchorCustody": p.custody,
        })

    # ----------------------------------------------------------------------- cert-manager (keys in-cluster)

    def _cert_manager(self, name: str, p: LinkerdIdentityProfile) -> None:
        """cert-manager issues and renews everything; Pulumi holds only the object definitions."""
        kube_objects(name, [control_plane_namespace(p), *cert_manager_identity_objects(p)], self)
        # The certificates exist only in the cluster (cert-manager Secrets, trust-manager's
        # ConfigMap): nothing to export but where they are.
        self.trust_anchor_pems = {}
        self.trust_bundle_pem = pulumi.Output.from_input("")
        self.issuer_cert_pem = pulumi.Output.from_input("")
        self.register_outputs({
            "anchorCustody": p.custody,
            "issuerSecret": f"{p.control_plane_namespace}/linkerd-identity-issuer",
            "anchorSecrets": [f"{p.cert_manager_namespace}/linkerd-trust-anchor-{g}" for g in p.anchor_generations],
        })

    # ----------------------------------------------------------------------- tls (keys in state)

    def _tls(self, name: str, p: LinkerdIdentityProfile,
             csr: pulumi.Output[str]) -> tuple[dict[str, pulumi.Output[str]], pulumi.Output[str]]:
        child = pulumi.ResourceOptions(parent=self)
        keys: dict[str, tls.PrivateKey] = {}
        certs: dict[str, tls.SelfSignedCert] = {}
        for gen in p.anchor_generations:
            keys[gen] = tls.PrivateKey(f"{name}-anchor-{gen}-key", algorithm="ECDSA", ecdsa_curve=p.ecdsa_curve,
                                       opts=child)
            certs[gen] = tls.SelfSignedCert(
                f"{name}-anchor-{gen}",
                private_key_pem=keys[gen].private_key_pem,
                is_ca_certificate=True,
                max_path_length=p.anchor_path_length,
                validity_period_hours=p.anchor_validity_hours,
                allowed_uses=list(p.ca_uses),
                set_subject_key_id=True,
                subject=tls.SelfSignedCertSubjectArgs(
                    common_name=p.anchor_common_name, organization=p.organization,
                    organizational_unit=p.anchor_unit(gen),
                ),
                opts=child,
            )
        signer = p.signing_anchor
        issuer = tls.LocallySignedCert(
            f"{name}-issuer",
            cert_request_pem=csr,
            ca_private_key_pem=keys[signer].private_key_pem,
            ca_cert_pem=certs[signer].cert_pem,
            is_ca_certificate=True,
            max_path_length=p.issuer_path_length,
            validity_period_hours=p.issuer_validity_hours,
            early_renewal_hours=p.issuer_early_renewal_hours,
            allowed_uses=list(p.ca_uses),
            set_subject_key_id=True,
            opts=child,
        )
        return {g: c.cert_pem for g, c in certs.items()}, issuer.cert_pem

    # ----------------------------------------------------------------------- vault-pki (keys in Vault)

    def _vault_pki(self, name: str, p: LinkerdIdentityProfile,
                   csr: pulumi.Output[str]) -> tuple[dict[str, pulumi.Output[str]], pulumi.Output[str]]:
        import pulumi_vault as vault
        import pulumi_vault.pkisecret as pki

        child = pulumi.ResourceOptions(parent=self)
        mounts: dict[str, vault.Mount] = {}
        anchors: dict[str, pulumi.Output[str]] = {}
        for gen in p.anchor_generations:
            mounts[gen] = vault.Mount(
                f"{name}-anchor-{gen}-mount",
                path=p.vault_mount(gen),
                type="pki",
                description=f"Linkerd trust anchor {gen} (Agent Passport); signs only the identity issuer",
                default_lease_ttl_seconds=p.issuer_validity_hours * 3600,
                max_lease_ttl_seconds=p.anchor_validity_hours * 3600,
                opts=child,
            )
            root = pki.SecretBackendRootCert(
                f"{name}-anchor-{gen}",
                backend=mounts[gen].path,
                type="internal",  # the key is generated in Vault and never exported
                common_name=p.anchor_common_name,
                organization=p.organization,
                ou=p.anchor_unit(gen),
                key_type="ec",
                key_bits=256,
                max_path_length=p.anchor_path_length,
                exclude_cn_from_sans=True,
                ttl=f"{p.anchor_validity_hours}h",
                issuer_name=f"linkerd-{gen}",
                opts=child,
            )
            anchors[gen] = root.certificate
        issuer = pki.SecretBackendRootSignIntermediate(
            f"{name}-issuer",
            backend=mounts[p.signing_anchor].path,
            csr=csr,
            common_name=p.issuer_common_name,
            organization=p.organization,
            ou=p.issuer_unit,
            max_path_length=p.issuer_path_length,
            exclude_cn_from_sans=True,
            ttl=f"{p.issuer_validity_hours}h",
            # Depend on the signing anchor's certificate, not just its mount: Vault must hold the root first.
            issuer_ref=pulumi.Output.all(anchors[p.signing_anchor]).apply(lambda _: f"linkerd-{p.signing_anchor}"),
            opts=child,
        )
        return anchors, issuer.certificate

    # ----------------------------------------------------------------------- aws-pca (keys in the HSM)

    def _aws_pca(self, name: str, p: LinkerdIdentityProfile,
                 csr: pulumi.Output[str]) -> tuple[dict[str, pulumi.Output[str]], pulumi.Output[str]]:
        from pulumi_aws import acmpca

        child = pulumi.ResourceOptions(parent=self)
        active: dict[str, pulumi.Output[str]] = {}
        anchors: dict[str, pulumi.Output[str]] = {}
        for gen in p.anchor_generations:
            ca = acmpca.CertificateAuthority(
                f"{name}-anchor-{gen}-pca",
                type="ROOT",
                usage_mode="GENERAL_PURPOSE",  # the issuer lives longer than SHORT_LIVED_CERTIFICATE's 7 days
                key_storage_security_standard="FIPS_140_2_LEVEL_3_OR_HIGHER",
                certificate_authority_configuration=acmpca.CertificateAuthorityCertificateAuthorityConfigurationArgs(
                    key_algorithm="EC_prime256v1",
                    signing_algorithm="SHA256WITHECDSA",
                    subject=acmpca.CertificateAuthorityCertificateAuthorityConfigurationSubjectArgs(
                        common_name=p.anchor_common_name[:64], organization=p.organization[:64],
                        organizational_unit=p.anchor_unit(gen)[:64],
                    ),
                ),
                permanent_deletion_time_in_days=30,
                region=p.aws_region,
                tags={"agentpassport.dev/linkerd-anchor": gen},
                opts=child,
            )
            cert = acmpca.Certificate(
                f"{name}-anchor-{gen}",
                certificate_authority_arn=ca.arn,
                certificate_signing_request=ca.certificate_signing_request,
                signing_algorithm="SHA256WITHECDSA",
                template_arn="arn:aws:acm-pca:::template/RootCACertificate/V1",
                validity=acmpca.CertificateValidityArgs(type="DAYS", value=str(p.anchor_validity_days)),
                region=p.aws_region,
                opts=child,
            )
            installed = acmpca.CertificateAuthorityCertificate(
                f"{name}-anchor-{gen}-install",
                certificate_authority_arn=ca.arn,
                certificate=cert.certificate,
                region=p.aws_region,
                opts=child,
            )
            # The CA can only sign once its own certificate is installed: take the ARN from there.
            active[gen] = installed.certificate_authority_arn
            anchors[gen] = cert.certificate
        issuer = acmpca.Certificate(
            f"{name}-issuer",
            certificate_authority_arn=active[p.signing_anchor],
            certificate_signing_request=csr,
            signing_algorithm="SHA256WITHECDSA",
            template_arn="arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen0/V1",
            validity=acmpca.CertificateValidityArgs(type="DAYS", value=str(p.issuer_validity_days)),
            region=p.aws_region,
            opts=child,
        )
        return anchors, issuer.certificate


# --------------------------------------------------------------------------- namespaces


@dataclass(frozen=True)
class MeshNamespaceArgs:
    """Inputs of :class:`MeshNamespace`."""

    namespace: str
    """The namespace's name."""
    default_inbound_policy: str
    """``config.linkerd.io/default-inbound-policy`` of the namespace (a strict stack's plan holds
    only deny or all-authenticated: :func:`components.config.strict_problems`)."""
    objects: tuple[Mapping[str, Any], ...] = ()
    """Rendered ``policy.linkerd.io`` objects in this namespace."""
    agents: tuple[str, ...] = ()
    """Meshed agents whose pods run here."""
    services: tuple[str, ...] = ()
    """Called services whose pods run here."""

    @staticmethod
    def from_plan(plan: NamespacePlan) -> MeshNamespaceArgs:
        return MeshNamespaceArgs(
            namespace=plan.namespace,
            default_inbound_policy=plan.default_inbound_policy,
            objects=plan.objects,
            agents=plan.agents,
            services=plan.services,
        )


class MeshNamespace(pulumi.ComponentResource):
    """A Linkerd-injected namespace with a default inbound policy and its services' policy objects."""

    namespace: pulumi.Output[str]
    """The namespace's name, once the Namespace exists."""
    namespace_resource: pulumi.Resource
    """The Namespace object: what other components' objects in this namespace are created after."""

    def __init__(self, name: str, args: MeshNamespaceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        for obj in args.objects:
            if obj["metadata"].get("namespace") != args.namespace:
                raise ValueError(f"{obj['kind']} {obj['metadata']['name']} is not in namespace {args.namespace}")
        super().__init__("agentpassport:mesh:MeshNamespace", name, None, opts)
        created = kube_objects(name, [namespace_object(args.namespace, args.default_inbound_policy),
                                      *args.objects], self)
        self.namespace_resource = created[f"namespace-{args.namespace}"]
        self.namespace = self.namespace_resource.id.apply(lambda _: args.namespace)
        self.register_outputs({"namespace": self.namespace, "agents": list(args.agents),
                               "services": list(args.services)})


def mesh_namespace_args(plan: MeshPlan) -> list[MeshNamespaceArgs]:
    """One MeshNamespaceArgs per meshed namespace of a validated plan (none for a shard); logs the
    plan's warnings."""
    for warning in plan.warnings:
        pulumi.log.warn(warning)
    return [MeshNamespaceArgs.from_plan(ns) for ns in plan.namespaces]


# --------------------------------------------------------------------------- a shard's callers


@dataclass(frozen=True)
class MeshCallersArgs:
    """Inputs of :class:`MeshCallers`."""

    objects: tuple[Mapping[str, Any], ...]
    """A shard's rendered policy objects (``MeshPlan.shard_objects``)."""

    @staticmethod
    def from_plan(plan: MeshPlan) -> MeshCallersArgs:
        return MeshCallersArgs(plan.shard_objects)


class MeshCallers(pulumi.ComponentResource):
    """A shard's Linkerd objects: its agents' MeshTLSAuthentications, AuthorizationPolicies and
    HTTPRoutes, in namespaces (with Servers) the base stack owns; every name carries the shard."""

    def __init__(self, name: str, args: MeshCallersArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        for obj in args.objects:
            if obj["kind"] in ("Namespace", "Server"):
                raise ValueError(f"{obj['kind']} {obj['metadata']['name']} is the base stack's, not a shard's")
        super().__init__("agentpassport:mesh:MeshCallers", name, None, opts)
        kube_objects(name, list(args.objects), self)
        self.register_outputs({"objects": len(args.objects)})
