"""Authz section: Envoy + OPA gateways."""

from __future__ import annotations

from pydantic import Field

from components.config.base import Section


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
    replicas: int = Field(
        default=2,
        ge=1,
        le=20,
        description="Gateway pods per protected service. Requests to the service fail closed "
        "while no gateway pod is ready, so keep at least 2 where the service matters; with 2 "
        "or more a PodDisruptionBudget keeps one running through node drains.",
    )
