"""AuthzGateway: the Envoy + OPA gateway in front of one protected service.

Linkerd's proxy has no ext_authz hook, so per-request policy (method, path, headers, time)
runs in an Envoy gateway: Envoy terminates mTLS with the gateway's X.509-SVID from the SPIRE
agent (SDS), requires a client SVID of the trust domain, and asks OPA (opa-envoy-plugin, same
pod, loopback gRPC) about every request, failing closed. Everything registered here is
rendered by :mod:`components.render.authz`, so ``passport render`` shows exactly what is
deployed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi

from components.kube import kube_objects, object_key
from components.render.authz import GatewayPlan


@dataclass(frozen=True)
class AuthzGatewayArgs:
    """Inputs of :class:`AuthzGateway`."""

    gateway: GatewayPlan
    """The validated gateway (``AuthzPlan.gateways`` of :func:`components.compile.compile`)."""
    namespaces: Mapping[str, pulumi.Resource] = field(default_factory=dict)
    """Namespaces this stack creates (MeshNamespace), by name: objects in them are created after."""


class AuthzGateway(pulumi.ComponentResource):
    """Deployment (Envoy + OPA), Service, ConfigMaps and SPIRE registration of one gateway."""

    gateway_name: pulumi.Output[str]
    """Deployment, ServiceAccount and Service name (``gw-<service>``)."""
    namespace: pulumi.Output[str]
    spiffe_id: pulumi.Output[str]
    """The gateway's own SPIFFE ID (its server certificate's URI SAN)."""
    address: pulumi.Output[str]
    """Where agents send requests: ``gw-<service>.<namespace>.svc:<port>`` (mTLS)."""
    principals: pulumi.Output[list[str]]
    """SPIFFE IDs with a data entry (active agents granted calls to the service)."""

    def __init__(self, name: str, args: AuthzGatewayArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:authz:AuthzGateway", name, None, opts)
        plan = args.gateway
        gw = plan.identity
        objects: list[Mapping[str, Any]] = list(plan.objects)
        created = kube_objects(name, objects, self, args.namespaces)
        deployment = created[object_key(next(o for o in objects if o["kind"] == "Deployment"))]

        self.gateway_name = pulumi.Output.from_input(gw.name)
        self.namespace = pulumi.Output.from_input(gw.namespace)
        self.spiffe_id = pulumi.Output.from_input(gw.spiffe_id)
        self.address = deployment.id.apply(lambda _: plan.address)
        self.principals = pulumi.Output.from_input(list(plan.principals))
        self.register_outputs({
            "gatewayName": self.gateway_name,
            "namespace": self.namespace,
            "spiffeId": self.spiffe_id,
            "address": self.address,
            "principals": self.principals,
        })


@dataclass(frozen=True)
class GatewayDataArgs:
    """Inputs of :class:`GatewayData`."""

    configmaps: tuple[Mapping[str, Any], ...]
    """A shard's validated data ConfigMaps (``AuthzPlan.shard_configmaps``)."""


class GatewayData(pulumi.ComponentResource):
    """A shard's OPA data: one ConfigMap per gateway its agents call, which the base stack's
    gateway of that service mounts (optional) and OPA merges under ``agentpassport.shards``."""

    configmaps: pulumi.Output[list[str]]
    """``<namespace>/<name>`` of every ConfigMap written."""

    def __init__(self, name: str, args: GatewayDataArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:authz:GatewayData", name, None, opts)
        objects = list(args.configmaps)
        kube_objects(name, objects, self)
        self.configmaps = pulumi.Output.from_input(
            [f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in objects])
        self.register_outputs({"configmaps": self.configmaps})
