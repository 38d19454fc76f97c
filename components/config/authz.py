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
    gateway_port: int = Field(default=8443, ge=1, le=65535, description="mTLS port the gateway listens on.")
    decision_logs: bool = Field(default=True, description="Emit OPA decision logs (console) for audit.")
