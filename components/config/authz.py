"""Authz section: Envoy + OPA gateways."""

from __future__ import annotations

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
    replicas: int = Field(
        default=2,
        ge=1,
        le=20,
        description="Gateway pods per protected service. Requests to the service fail closed "
        "while no gateway pod is ready, so keep at least 2 where the service matters; with 2 "
        "or more a PodDisruptionBudget keeps one running through node drains.",
    )

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
