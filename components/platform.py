"""AgentPassport: the root component composing every subsystem for one stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from components.authz import AuthzGateway, AuthzGatewayArgs
from components.aws import AuditTrail, AuditTrailArgs, AwsFederation, AwsFederationArgs
from components.mesh import LinkerdIdentity, LinkerdIdentityArgs, MeshNamespace, mesh_namespace_args
from components.observe import IdentityHealth, IdentityHealthArgs
from components.platform_model import Platform
from components.render.authz import validate_authz
from components.render.aws import validate_aws
from components.render.rego import gateway_services
from components.render.windows import validate_windows
from components.spire import (
    Registrations,
    RegistrationsArgs,
    SpireAgents,
    SpireAgentsArgs,
    SpireServer,
    SpireServerArgs,
)
from components.trust import TrustDomain, TrustDomainArgs
from components.vault import VaultIdentity, VaultIdentityArgs
from components.windows import GmsaAgents, GmsaAgentsArgs


@dataclass(frozen=True)
class AgentPassportArgs:
    """Inputs of the root component."""

    platform: Platform
    """The validated platform (stack config + this environment's agents)."""


class AgentPassport(pulumi.ComponentResource):
    """Everything Agent Passport deploys for one stack, composed per stack config."""

    summary: pulumi.Output[dict[str, Any]]
    """Non-secret facts other stacks and tools read (trust bundle, issuer, endpoints)."""

    trust: TrustDomain
    """The CA hierarchy (always present)."""

    def __init__(self, name: str, args: AgentPassportArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:index:AgentPassport", name, None, opts)
        platform = args.platform
        on = platform.config.subsystems
        if on.windows:
            validate_windows(platform)  # [windows] every problem before the first resource registers
        if on.aws:
            validate_aws(platform)  # [aws] every problem before the first resource registers
        # Composition, in dependency order.
        # [trust]   TrustDomain (always) -> `trust`
        trust = TrustDomain(
            f"{name}-trust", TrustDomainArgs(platform=platform), pulumi.ResourceOptions(parent=self)
        )
        self.trust = trust
        # [spire]   SpireServer, SpireAgents, Registrations (if on.spire)
        if on.spire:
            self.spire_server = SpireServer(f"{name}-spire-server", SpireServerArgs(platform=platform, trust=trust),
                                            pulumi.ResourceOptions(parent=self))
            self.spire_agents = SpireAgents(f"{name}-spire-agents",
                                            SpireAgentsArgs(platform=platform, server=self.spire_server),
                                            pulumi.ResourceOptions(parent=self))
            self.spire_registrations = Registrations(
                f"{name}-spire-registrations", RegistrationsArgs(platform=platform, server=self.spire_server),
                pulumi.ResourceOptions(parent=self))
        # [mesh]    LinkerdIdentity + MeshNamespace per namespace (if on.mesh)
        if on.mesh:
            LinkerdIdentity(f"{name}-linkerd-identity", LinkerdIdentityArgs.from_platform(platform),
                            pulumi.ResourceOptions(parent=self))
            for ns_args in mesh_namespace_args(platform):
                MeshNamespace(f"{name}-mesh-{ns_args.namespace}", ns_args, pulumi.ResourceOptions(parent=self))
        # [authz]   AuthzGateway per gateway service (if on.authz)
        if on.authz:
            validate_authz(platform)  # every gateway's problems, before any gateway registers
            for svc in gateway_services(platform):
                AuthzGateway(f"{name}-authz-{svc.name}", AuthzGatewayArgs(platform=platform, service=svc.name),
                             pulumi.ResourceOptions(parent=self))
        # [vault]   VaultIdentity (if on.vault)
        if on.vault:
            VaultIdentity(f"{name}-vault",
                          VaultIdentityArgs(platform=platform, trust_bundle_pem=trust.trust_bundle_pem),
                          pulumi.ResourceOptions(parent=self))
        # [windows] GmsaAgents (if on.windows)
        if on.windows:
            GmsaAgents(f"{name}-windows", GmsaAgentsArgs(platform=platform, deliver_with_ssm=on.aws),
                       pulumi.ResourceOptions(parent=self))
        # [aws]     AwsFederation, AuditTrail (if on.aws)
        if on.aws:
            AwsFederation(f"{name}-aws", AwsFederationArgs(
                platform=platform, trust_bundle_pem=trust.trust_bundle_pem, aws_pca_arn=trust.aws_pca_arn,
            ), pulumi.ResourceOptions(parent=self))
            AuditTrail(f"{name}-audit", AuditTrailArgs(platform=platform), pulumi.ResourceOptions(parent=self))
        # [observe] IdentityHealth (if on.observe)
        if on.observe:
            self.observe = IdentityHealth(f"{name}-observe", IdentityHealthArgs(
                platform=platform,
                certificate_pems={"upstream-chain": trust.upstream_chain_pem, "trust-bundle": trust.trust_bundle_pem},
            ), pulumi.ResourceOptions(parent=self))
        summary: dict[str, Any] = {
            "agents": len(platform.active_agents),
            "suspended": [a.name for a in platform.suspended_agents],
            "trustBundlePem": trust.trust_bundle_pem,
        }
        if platform.config.subsystems.spire:
            summary["spire"] = {"jwtIssuer": self.spire_server.jwt_issuer, "jwksUrl": self.spire_server.jwks_url,
                                "serverAddress": self.spire_server.server_address}
        self.summary = pulumi.Output.from_input(summary)
        self.register_outputs({"summary": self.summary})
