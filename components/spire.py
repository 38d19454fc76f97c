"""SPIRE on Kubernetes: server (+ controller manager, OIDC discovery), agents, registrations.

The objects are rendered by :mod:`components.render.spire` (pure); these components only add
what exists at deploy time (upstream CA material from :class:`~components.trust.TrustDomain`,
the datastore connection string from a secret config key) and register everything with
:func:`components.kube.kube_object`. Ordering between the components follows data: objects
of the agents and registrations reference the server's Namespace / Deployment through
Outputs, so they are created after it without ``depends_on``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.config import NAMESPACE
from components.errors import ConfigError, Problem
from components.kube import kube_object, object_key
from components.labels import MANAGED_BY, NAME_LABEL
from components.render import spire as render
from components.render.spire import SpirePlan
from components.shard import Scope, deploys_agents, deploys_shared
from components.trust import TrustDomain


def _with_namespace(
    obj: Mapping[str, Any],
    namespace: pulumi.Input[str] | None,
    annotations: Mapping[str, pulumi.Input[str]] | None = None,
) -> dict[str, Any]:
    """A copy of ``obj`` whose namespace / annotations are Outputs (dependency by data)."""
    meta = dict(obj.get("metadata") or {})
    if namespace is not None and "namespace" in meta:
        meta["namespace"] = namespace
    if annotations:
        meta["annotations"] = {**dict(meta.get("annotations") or {}), **annotations}
    return {**obj, "metadata": meta}


@dataclass(frozen=True)
class SpireServerArgs:
    """Inputs of :class:`SpireServer`."""

    plan: SpirePlan
    """The validated SPIRE plan (``Plans.spire``): the objects to register and the settings."""
    trust: TrustDomain
    """The CA hierarchy SPIRE's UpstreamAuthority signs under."""


class SpireServer(pulumi.ComponentResource):
    """SPIRE server with spire-controller-manager, its RBAC and config, and the OIDC discovery provider."""

    namespace: pulumi.Output[str]
    """Namespace of SPIRE (created here)."""
    server_address: str
    """In-cluster DNS name agents dial (``spire-server.<ns>.svc``)."""
    server_workload: pulumi.Output[str]
    """Name of the server StatefulSet/Deployment (registrations wait for it)."""
    jwt_issuer: str
    """The ``iss`` of every JWT-SVID; the OIDC discovery provider serves it."""
    jwks_url: str
    """``<jwtIssuer>/keys``: what Vault JWT auth and AWS OIDC federation fetch keys from."""
    bundle_configmap: str
    """ConfigMap (in :attr:`namespace`) SPIRE keeps the trust bundle in (key ``bundle.crt``)."""

    def __init__(self, name: str, args: SpireServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:spire:SpireServer", name, None, opts)
        plan = args.plan
        cfg = plan.config
        objects = list(plan.server_objects)
        ns_obj = objects[0]
        assert ns_obj["kind"] == "Namespace"
        ns = kube_object(f"{name}-{object_key(ns_obj)}", ns_obj, self)
        self.namespace = ns.metadata.apply(lambda m: m["name"] if isinstance(m, dict) else m.name)  # type: ignore[attr-defined]
        extra = self._deploy_time_objects(plan, args.trust)
        workload: pulumi.CustomResource | None = None
        for obj in [*extra, *objects[1:], *plan.webhook_objects]:
            key = object_key(obj)
            if obj["kind"] == "ValidatingWebhookConfiguration":
                # typed class (components.kube maps the common kinds only)
                k8s.admissionregistration.v1.ValidatingWebhookConfiguration(
                    f"{name}-{key}",
                    metadata=obj["metadata"],
                    webhooks=obj["webhooks"],
                    opts=pulumi.ResourceOptions(parent=self),
                )
                continue
            res = kube_object(f"{name}-{key}", _with_namespace(obj, self.namespace), self)
            if obj["kind"] in ("StatefulSet", "Deployment") and obj["metadata"]["name"] == render.SERVER:
                workload = res
        assert workload is not None
        self.server_workload = workload.metadata.apply(  # type: ignore[attr-defined]
            lambda m: m["name"] if isinstance(m, dict) else m.name
        )
        self.server_address = render.server_address(cfg)
        self.jwt_issuer = cfg.jwt_issuer
        self.jwks_url = f"{cfg.jwt_issuer}/keys"
        self.bundle_configmap = render.BUNDLE_CONFIGMAP
        self.register_outputs(
            {
                "namespace": self.namespace,
                "serverAddress": self.server_address,
                "jwtIssuer": self.jwt_issuer,
                "jwksUrl": self.jwks_url,
            }
        )

    @staticmethod
    def _deploy_time_objects(plan: SpirePlan, trust: TrustDomain) -> list[dict[str, Any]]:
        """Upstream CA material / PCA ARN and the datastore connection string, as Outputs."""
        cfg = plan.config
        ns = cfg.spire.namespace
        out: list[dict[str, Any]] = []
        meta = {"namespace": ns, "labels": {NAME_LABEL: render.SERVER, **MANAGED_BY}}
        if cfg.trust.upstream == "tls":
            assert trust.upstream_key_pem is not None
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": render.UPSTREAM_CONFIGMAP, **meta},
                    "data": {"chain.pem": trust.upstream_chain_pem, "bundle.pem": trust.trust_bundle_pem},
                }
            )
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": render.UPSTREAM_KEY_SECRET, **meta},
                    "type": "Opaque",
                    "stringData": {"key.pem": pulumi.Output.secret(trust.upstream_key_pem)},
                }
            )
        elif cfg.trust.upstream == "aws-pca":
            assert trust.aws_pca_arn is not None
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": render.UPSTREAM_CONFIGMAP, **meta},
                    "data": {"pca-arn": trust.aws_pca_arn},
                }
            )
        ref = cfg.spire.datastore_connection_secret
        if cfg.spire.datastore == "postgres" and ref is not None:
            conn = pulumi.Config(NAMESPACE).get_secret(ref)
            if conn is None:
                # Reported as an error diagnostic (the update fails) rather than raised: secret
                # values are set per machine, and the mock-graph harness runs without them.
                problem = Problem(
                    plan.config_file,
                    None,
                    f"{NAMESPACE}:spire.datastoreConnectionSecret",
                    f"names secret {ref!r}, which is not set; run `pulumi config set --secret {ref} "
                    "'dbname=spire host=... user=... password=... sslmode=verify-full'`",
                )
                pulumi.log.error(ConfigError([problem]).report())
                return out
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": render.DATASTORE_SECRET, **meta},
                    "type": "Opaque",
                    "stringData": {"connection-string": conn},
                }
            )
        return out


@dataclass(frozen=True)
class SpireAgentsArgs:
    """Inputs of :class:`SpireAgents`."""

    plan: SpirePlan
    """The validated SPIRE plan (``Plans.spire``)."""
    server: SpireServer
    """The server the agents attest to (its namespace orders creation)."""


class SpireAgents(pulumi.ComponentResource):
    """SPIRE agent DaemonSet (k8s_psat, k8s workload attestor, SDS) and the SPIFFE CSI driver."""

    csi_driver: str
    """CSI driver name workloads mount the Workload API with (``csi.spiffe.io``)."""
    socket_dir: str
    """Directory the CSI volume exposes; the socket inside is :attr:`socket_name`."""
    socket_name: str
    """Workload API (and SDS) socket file name."""

    def __init__(self, name: str, args: SpireAgentsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:spire:SpireAgents", name, None, opts)
        for obj in args.plan.agent_objects:
            kube_object(f"{name}-{object_key(obj)}", _with_namespace(obj, args.server.namespace), self)
        self.csi_driver = render.CSI_DRIVER
        self.socket_dir = render.SOCKET_DIR
        self.socket_name = render.SOCKET_NAME
        self.register_outputs(
            {
                "csiDriver": self.csi_driver,
                "socketDir": self.socket_dir,
                "socketName": self.socket_name,
            }
        )


@dataclass(frozen=True)
class RegistrationsArgs:
    """Inputs of :class:`Registrations`."""

    plan: SpirePlan
    """The validated SPIRE plan (``Plans.spire``); only active agents have registrations."""
    server: SpireServer | None
    """The server whose controller manager reconciles the registrations (None in a shard: the
    base stack runs it)."""
    scope: Scope = "all"
    """``all``: agents' and Agent Passport's own; ``agents``: a shard's agents only; ``shared``:
    Agent Passport's own only (a base)."""
    server_workload: pulumi.Input[str] | None = None
    """The server workload's name when ``server`` is None (read from the base stack)."""


class Registrations(pulumi.ComponentResource):
    """One ClusterSPIFFEID (pods) or ClusterStaticEntry pair (VMs, Windows hosts) per active agent."""

    spiffe_ids: dict[str, str]
    """Agent name -> the SPIFFE ID registered for it (active agents only)."""

    def __init__(self, name: str, args: RegistrationsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:spire:Registrations", name, None, opts)
        plan = args.plan
        workload = args.server.server_workload if args.server is not None else args.server_workload
        after = {render.SERVER_ANNOTATION: workload} if workload is not None else {}
        self.spiffe_ids = {}
        for agent in plan.agent_registrations if deploys_agents(args.scope) else ():
            for obj in agent.objects:
                role = obj["metadata"]["name"].split(".", 1)[0]  # agent | node
                kube_object(
                    f"{name}-{agent.agent}-{obj['kind'].lower()}-{role}", _with_namespace(obj, None, after), self
                )
            self.spiffe_ids[agent.agent] = agent.spiffe_id
        for obj in plan.passport_registrations if deploys_shared(args.scope) else ():
            kube_object(f"{name}-{object_key(obj)}", _with_namespace(obj, None, after), self)
        self.register_outputs({"spiffeIds": self.spiffe_ids})
