"""Authz section: Envoy + OPA gateways."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from components.config.base import Section
from components.durations import Duration

OPA_GRPC_PORT = 9191
"""opa-envoy-plugin's ext_authz gRPC server inside the gateway pod (127.0.0.1 only)."""
OPA_API_PORT = 8181
"""OPA's REST API inside the gateway pod (127.0.0.1 only: nothing may push policy or data)."""
OPA_DIAGNOSTIC_PORT = 8282
"""OPA's /health endpoint, for the kubelet's probes."""
ENVOY_ADMIN_PORT = 9901
"""Envoy's admin interface inside the gateway pod (127.0.0.1 only)."""
RESERVED_GATEWAY_PORTS = {
    OPA_GRPC_PORT: "OPA's ext_authz gRPC server",
    OPA_API_PORT: "OPA's REST API",
    OPA_DIAGNOSTIC_PORT: "OPA's health endpoint",
    ENVOY_ADMIN_PORT: "Envoy's admin interface",
}
EGRESS_HOST_PLACEHOLDERS = frozenset({"gateway", "service", "namespace", "clusterDomain"})


class AuthzConfig(Section):
    """Per-request authorization gateway settings."""

    envoy_image: str = Field(default="envoyproxy/envoy:v1.36.2", description="Envoy image.")
    opa_image: str = Field(
        default="openpolicyagent/opa:1.10.1-envoy", description="OPA with the Envoy ext_authz plugin."
    )
    gateway_port: int = Field(
        default=8443,
        ge=1,
        le=65535,
        description="mTLS port every gateway listens on: agents call "
        "gw-<service>.<namespace>.svc:<port> with their X.509-SVID. Not 8181, 8282, 9191 or "
        "9901, which OPA and Envoy's admin interface use inside the gateway pod.",
    )
    decision_logs: bool = Field(default=True, description="Emit OPA decision logs (console) for audit.")
    request_timeout: Duration = Field(
        default="60s",
        description="Longest a request may take through the gateway, backend response "
        "included (Envoy route timeout; Envoy's own default is 15s). Streaming gRPC calls "
        "longer than this are cut.",
    )
    egress_port: int = Field(
        default=15001,
        ge=1024,
        le=65535,
        description="Loopback port (127.0.0.1 only) of the Envoy egress proxy on the hosts of VM "
        "and Windows agents with http grants: the agent calls http://127.0.0.1:<port> with the "
        "Host header naming the service, and the proxy originates mTLS with the agent's "
        "X.509-SVID to the service's gateway (docs/authz.md, 'Callers outside the mesh').",
    )
    egress_gateway_host: str = Field(
        default="{gateway}.{namespace}.svc.{clusterDomain}",
        pattern=r"^[a-z0-9.{}A-Z-]{1,253}$",
        description="Host name the egress proxies of agents outside the mesh connect to, per "
        "service, on gatewayPort: a template with {gateway}, {service}, {namespace} and "
        "{clusterDomain}. The default is the gateway's in-cluster name, which a host outside the "
        "cluster resolves only through a DNS forwarder; set it to the gateways' external names "
        "(a load balancer in front of each gateway Service). The gateway's SPIFFE ID is "
        "verified whatever the name.",
    )
    replicas: int = Field(
        default=2,
        ge=1,
        le=20,
        description="Gateway pods per protected service. Requests to the service fail closed "
        "while no gateway pod is ready, so keep at least 2 where the service matters; with 2 "
        "or more a PodDisruptionBudget keeps one running through node drains.",
    )

    @field_validator("egress_gateway_host")
    @classmethod
    def _known_placeholders(cls, template: str) -> str:
        for name in re.findall(r"\{([^}]*)\}", template):
            if name not in EGRESS_HOST_PLACEHOLDERS:
                raise ValueError(f"unknown placeholder {{{name}}}; use {', '.join(sorted(EGRESS_HOST_PLACEHOLDERS))}")
        if template.count("{") != template.count("}"):
            raise ValueError("unbalanced braces")
        return template

    @field_validator("gateway_port")
    @classmethod
    def _free_port(cls, port: int) -> int:
        if port in RESERVED_GATEWAY_PORTS:
            taken = ", ".join(str(p) for p in sorted(RESERVED_GATEWAY_PORTS))
            raise ValueError(
                f"{port} is taken by {RESERVED_GATEWAY_PORTS[port]} inside every gateway pod; "
                f"choose another port (reserved: {taken})"
            )
        return port
