"""Linkerd: strict-mTLS namespaces, per-service authorization policy, the identity anchor + issuer.

* :class:`LinkerdIdentity` — the trust anchor generation(s) and the identity issuer (ECDSA
  P-256, pulumi-tls), the ``linkerd-identity-trust-roots`` ConfigMap (the bundle) and the
  ``linkerd-identity-issuer`` Secret (kubernetes.io/tls) in Linkerd's namespace. The anchor's
  private key stays in Pulumi state (a secret): no Kubernetes object ever receives it.
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
from components.platform_model import Platform
from components.render.mesh import (
    LinkerdIdentityProfile,
    NamespacePlan,
    check_inbound_policy,
    control_plane_namespace,
    issuer_secret,
    linkerd_identity_profile,
    mesh_plan,
    namespace_object,
    trust_bundle,
    trust_roots_configmap,
)

# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class LinkerdIdentityArgs:
    """Inputs of :class:`LinkerdIdentity`."""

    profile: LinkerdIdentityProfile
    """The validated certificate profile (:func:`components.render.mesh.linkerd_identity_profile`)."""

    @staticmethod
    def from_platform(platform: Platform) -> LinkerdIdentityArgs:
        return LinkerdIdentityArgs(linkerd_identity_profile(platform.config, platform.config_file))


class LinkerdIdentity(pulumi.ComponentResource):
    """Linkerd's identity trust anchor(s) and issuer, handed to the control plane."""

    trust_anchor_pems: dict[str, pulumi.Output[str]]
    """Certificate of each anchor generation (public)."""
    trust_bundle_pem: pulumi.Output[str]
    """The ``ca-bundle.crt`` Linkerd's proxies trust: every generation plus extraTrustAnchorsPem."""
    issuer_cert_pem: pulumi.Output[str]
    """The identity issuer certificate (public)."""
    issuer_expires_at: pulumi.Output[str]
    """RFC 3339 end of the issuer's validity; a `pulumi up` within issuerEarlyRenewal re-issues it."""

    def __init__(self, name: str, args: LinkerdIdentityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:mesh:LinkerdIdentity", name, None, opts)
        p = args.profile
        child = pulumi.ResourceOptions(parent=self)

        anchor_keys: dict[str, tls.PrivateKey] = {}
        anchors: dict[str, tls.SelfSignedCert] = {}
        for gen in p.anchor_generations:
            anchor_keys[gen] = tls.PrivateKey(f"{name}-anchor-{gen}-key", algorithm="ECDSA",
                                              ecdsa_curve=p.ecdsa_curve, opts=child)
            anchors[gen] = tls.SelfSignedCert(
                f"{name}-anchor-{gen}",
                private_key_pem=anchor_keys[gen].private_key_pem,
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

        issuer_key = tls.PrivateKey(f"{name}-issuer-key", algorithm="ECDSA", ecdsa_curve=p.ecdsa_curve, opts=child)
        issuer_csr = tls.CertRequest(
            f"{name}-issuer-csr",
            private_key_pem=issuer_key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=p.issuer_common_name, organization=p.organization),
            opts=child,
        )
        signer = p.signing_anchor
        issuer = tls.LocallySignedCert(
            f"{name}-issuer",
            cert_request_pem=issuer_csr.cert_request_pem,
            ca_private_key_pem=anchor_keys[signer].private_key_pem,
            ca_cert_pem=anchors[signer].cert_pem,
            is_ca_certificate=True,
            max_path_length=p.issuer_path_length,
            validity_period_hours=p.issuer_validity_hours,
            early_renewal_hours=p.issuer_early_renewal_hours,
            allowed_uses=list(p.ca_uses),
            set_subject_key_id=True,
            opts=child,
        )

        ordered = [anchors[g].cert_pem for g in p.anchor_generations]
        bundle = pulumi.Output.all(*ordered).apply(lambda pems: trust_bundle([*pems, *p.extra_anchors_pem]))
        ns = p.control_plane_namespace
        issuer_crt: pulumi.Output[str] = pulumi.Output.secret(issuer.cert_pem)
        issuer_key_pem: pulumi.Output[str] = pulumi.Output.secret(issuer_key.private_key_pem)
        issuer_ca: pulumi.Output[str] = pulumi.Output.secret(anchors[signer].cert_pem)
        kube_objects(name, [
            control_plane_namespace(p),
            trust_roots_configmap(ns, bundle),
            # Only the issuer's key enters the cluster; the anchor's never does.
            issuer_secret(ns, crt=issuer_crt, key=issuer_key_pem, ca=issuer_ca),
        ], self)

        self.trust_anchor_pems = {g: c.cert_pem for g, c in anchors.items()}
        self.trust_bundle_pem = bundle
        self.issuer_cert_pem = issuer.cert_pem
        self.issuer_expires_at = issuer.validity_end_time
        self.register_outputs({
            "trustAnchorPems": self.trust_anchor_pems,
            "trustBundlePem": self.trust_bundle_pem,
            "issuerCertPem": self.issuer_cert_pem,
            "issuerExpiresAt": self.issuer_expires_at,
        })


# --------------------------------------------------------------------------- namespaces


@dataclass(frozen=True)
class MeshNamespaceArgs:
    """Inputs of :class:`MeshNamespace`."""

    namespace: str
    """The namespace's name."""
    default_inbound_policy: str
    """``config.linkerd.io/default-inbound-policy`` of the namespace."""
    strict: bool
    """The stack is strict: only deny or all-authenticated may be built."""
    config_file: str
    """Stack file, for the error a refused policy raises."""
    objects: tuple[Mapping[str, Any], ...] = ()
    """Rendered ``policy.linkerd.io`` objects in this namespace."""
    agents: tuple[str, ...] = ()
    """Meshed agents whose pods run here."""
    services: tuple[str, ...] = ()
    """Called services whose pods run here."""

    @staticmethod
    def from_plan(plan: NamespacePlan, platform: Platform) -> MeshNamespaceArgs:
        return MeshNamespaceArgs(
            namespace=plan.namespace,
            default_inbound_policy=plan.default_inbound_policy,
            strict=platform.config.is_strict,
            config_file=platform.config_file,
            objects=plan.objects,
            agents=plan.agents,
            services=plan.services,
        )


class MeshNamespace(pulumi.ComponentResource):
    """A Linkerd-injected namespace with a default inbound policy and its services' policy objects."""

    namespace: pulumi.Output[str]
    """The namespace's name, once the Namespace exists."""

    def __init__(self, name: str, args: MeshNamespaceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        # Guard before anything is registered: a strict stack never builds an unauthenticated default,
        # whatever path the args came from (the stack-config check refuses it earlier too).
        check_inbound_policy(args.default_inbound_policy, args.strict, args.config_file)
        for obj in args.objects:
            if obj["metadata"].get("namespace") != args.namespace:
                raise ValueError(f"{obj['kind']} {obj['metadata']['name']} is not in namespace {args.namespace}")
        super().__init__("agentpassport:mesh:MeshNamespace", name, None, opts)
        created = kube_objects(name, [namespace_object(args.namespace, args.default_inbound_policy),
                                      *args.objects], self)
        self.namespace = created[f"namespace-{args.namespace}"].id.apply(lambda _: args.namespace)
        self.register_outputs({"namespace": self.namespace, "agents": list(args.agents),
                               "services": list(args.services)})


def mesh_namespace_args(platform: Platform) -> list[MeshNamespaceArgs]:
    """One MeshNamespaceArgs per meshed namespace; raises ManifestError before anything is registered."""
    plan = mesh_plan(platform)
    for warning in plan.warnings:
        pulumi.log.warn(warning)
    return [MeshNamespaceArgs.from_plan(ns, platform) for ns in plan.namespaces]
