"""Which subsystems a stack deploys."""

from __future__ import annotations

from pydantic import Field

from components.config.base import Section


class Subsystems(Section):
    """Switch subsystems on or off per stack."""

    spire: bool = Field(default=True, description="SPIRE server, agents, registrations.")
    mesh: bool = Field(default=True, description="Linkerd namespaces and policy.")
    authz: bool = Field(default=True, description="Envoy + OPA gateways.")
    vault: bool = Field(default=True, description="Vault auth, database engine, policies, audit.")
    windows: bool = Field(default=True, description="gMSA DSC and credential specs.")
    aws: bool = Field(default=False, description="AWS federation and audit bucket (needs AWS credentials).")
    observe: bool = Field(default=True, description="Monitoring, alerts and dashboards.")
    audit: bool = Field(default=False, description="The collector DaemonSet shipping SPIRE, Vault, OPA, "
                        "Envoy and Linkerd audit logs into the WORM bucket (docs/audit.md).")
