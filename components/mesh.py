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

from components.ca import Ca, CaBuilder, VaultMount
from components.kube import kube_objects
from components.labels import LINKERD_ANCHOR_TAG
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
        if p.custody == "cert-manager":
            self._cert_manager(name, p)
            return

        build = CaBuilder(self, p.custody, region=p.aws_region)
        # The issuer's key is pulumi-tls's whatever the anchors' custody: it goes to the cluster.
        issuer_key_pem = build.private_key(f"{name}-issuer-key", p.issuer.key)
        issuer_csr = build.request(f"{name}-issuer-csr", issuer_key_pem, p.issuer)
        anchors: dict[str, Ca] = {gen: self._anchor(build, name, p, gen) for gen in p.anchor_generations}
        issuer_pem = build.sign(f"{name}-issuer", anchors[p.signing_anchor], issuer_csr, p.issuer)
        anchor_pems = {gen: ca.certificate_pem for gen, ca in anchors.items()}

        ordered = [anchor_pems[g] for g in p.anchor_generations]
        bundle = pulumi.Output.all(*ordered).apply(
            lambda pems: trust_bundle([*(x for x in pems if x), *p.extra_anchors_pem]))
        ns = p.control_plane_namespace
        issuer_crt: pulumi.Output[str] = pulumi.Output.secret(issuer_pem)
        issuer_key_secret: pulumi.Output[str] = pulumi.Output.secret(issuer_key_pem)
        issuer_ca: pulumi.Output[str] = pulumi.Output.secret(anchor_pems[p.signing_anchor])
        kube_objects(name, [
            control_plane_namespace(p),
            trust_roots_configmap(ns, bundle),
            # Only the issuer's key enters the cluster; no anchor key ever does.
            issuer_secret(ns, crt=issuer_crt, key=issuer_key_secret, ca=issuer_ca),
        ], self)

        self.trust_anchor_pems = anchor_pems
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

    # ----------------------------------------------------------------------- anchors

    @staticmethod
    def _anchor(build: CaBuilder, name: str, p: LinkerdIdentityProfile, gen: str) -> Ca:
        """One anchor generation, its key with the custodian: pulumi-tls (in state), Vault PKI (a
        mount per generation) or AWS Private CA (a ROOT CA per generation)."""
        anchor = p.anchor(gen)
        return build.root(
            f"{name}-anchor-{gen}", anchor,
            vault_mount=VaultMount(
                f"{name}-anchor-{gen}-mount", p.vault_mount(gen),
                f"Linkerd trust anchor {gen} (Agent Passport); signs only the identity issuer",
                default_lease_ttl_seconds=p.issuer_validity_hours * 3600,
                max_lease_ttl_seconds=p.anchor_validity_hours * 3600,
            ),
            vault_issuer=f"linkerd-{gen}",
            pca_name=f"{name}-anchor-{gen}-pca", pca_install_name=f"{name}-anchor-{gen}-install",
            # the issuer lives longer than SHORT_LIVED_CERTIFICATE's 7 days
            pca_usage_mode="GENERAL_PURPOSE", pca_tags={LINKERD_ANCHOR_TAG: gen},
        )


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
