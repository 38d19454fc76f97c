"""AgentPassport: the root component composing every subsystem for one stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from components.audit import AuditPipeline, AuditPipelineArgs
from components.authz import AuthzGateway, AuthzGatewayArgs, GatewayData, GatewayDataArgs
from components.aws import AuditTrail, AuditTrailArgs, AwsFederation, AwsFederationArgs
from components.ci import CiFederation, CiFederationArgs
from components.compile import Plans
from components.egress import EgressProxies, EgressProxiesArgs
from components.mesh import (
    LinkerdIdentity,
    LinkerdIdentityArgs,
    MeshCallers,
    MeshCallersArgs,
    MeshNamespace,
    mesh_namespace_args,
)
from components.observe import IdentityHealth, IdentityHealthArgs
from components.render.ci import plan_ci
from components.shard import SHARED_OUTPUT, deploys_shared
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

    plans: Plans
    """The stack, validated: the platform and one plan per subsystem (:func:`components.compile.compile`)."""


class AgentPassport(pulumi.ComponentResource):
    """Everything Agent Passport deploys for one stack, composed per stack config."""

    summary: pulumi.Output[dict[str, Any]]
    """Non-secret facts other stacks and tools read (trust bundle, issuer, endpoints)."""

    trust: TrustDomain | None
    """The CA hierarchy (None in a shard: the base stack holds it)."""

    def __init__(self, name: str, args: AgentPassportArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:index:AgentPassport", name, None, opts)
        plans = args.plans
        platform = plans.platform
        on = platform.config.subsystems
        # [shard]   What this stack deploys, decided once: standalone "all"; a base "shared" (every
        #           piece naming no agent, for the whole fleet); a shard "agents" (its agents' pieces,
        #           reading the base's outputs through a StackReference).
        scope = plans.scope
        shared = deploys_shared(scope)
        base = None
        if not shared:
            assert platform.config.shard.base_stack is not None
            ref = pulumi.StackReference(f"{name}-base", stack_name=platform.config.shard.base_stack,
                                        opts=pulumi.ResourceOptions(parent=self))
            base = ref.get_output("outputs").apply(lambda o: dict((o or {}).get(SHARED_OUTPUT) or {}))

        def from_base(key: str) -> pulumi.Output[Any]:
            assert base is not None
            return base.apply(lambda b: b.get(key))

        if shared:
            # [ci] its settings' problems before the first resource registers (not yet part of
            #      components.compile: the CI federation landed beside the compile step)
            plan_ci(platform.config, platform.stack, platform.config_file)
        # Composition, in dependency order.
        # [trust]   TrustDomain (always, but in a shard) -> `trust`
        trust = TrustDomain(
            f"{name}-trust", TrustDomainArgs(platform=platform, profile=plans.trust),
            pulumi.ResourceOptions(parent=self)
        ) if plans.trust is not None else None
        self.trust = trust
        bundle: pulumi.Input[str] = trust.trust_bundle_pem if trust is not None else from_base("trustBundlePem")
        # [spire]   SpireServer, SpireAgents, Registrations (if on.spire)
        if plans.spire is not None:
            spire = plans.spire
            server = None
            if shared:
                server = self.spire_server = SpireServer(
                    f"{name}-spire-server", SpireServerArgs(plan=spire, trust=trust),  # type: ignore[arg-type]
                    pulumi.ResourceOptions(parent=self))
                self.spire_agents = SpireAgents(f"{name}-spire-agents",
                                                SpireAgentsArgs(plan=spire, server=server),
                                                pulumi.ResourceOptions(parent=self))
            self.spire_registrations = Registrations(
                f"{name}-spire-registrations",
                RegistrationsArgs(plan=spire, server=server, scope=scope,
                                  server_workload=None if shared else from_base("spireServerWorkload")),
                pulumi.ResourceOptions(parent=self))
        # [mesh]    LinkerdIdentity + MeshNamespace per namespace (if on.mesh); a shard: MeshCallers
        namespaces: dict[str, pulumi.Resource] = {}  # created here: other objects in them wait for them
        if plans.mesh is not None:
            if plans.mesh.identity is not None:
                LinkerdIdentity(f"{name}-linkerd-identity", LinkerdIdentityArgs(plans.mesh.identity),
                                pulumi.ResourceOptions(parent=self))
                for ns_args in mesh_namespace_args(plans.mesh):
                    meshed = MeshNamespace(f"{name}-mesh-{ns_args.namespace}", ns_args,
                                           pulumi.ResourceOptions(parent=self))
                    namespaces[ns_args.namespace] = meshed.namespace_resource
            else:
                callers = MeshCallersArgs.from_plan(plans.mesh)
                if callers.objects:
                    MeshCallers(f"{name}-mesh-callers", callers, pulumi.ResourceOptions(parent=self))
        # [authz]   AuthzGateway per gateway service (if on.authz); a shard: GatewayData
        if plans.authz is not None:
            if shared:
                for gw in plans.authz.gateways:
                    AuthzGateway(f"{name}-authz-{gw.service.name}",
                                 AuthzGatewayArgs(gateway=gw, namespaces=namespaces),
                                 pulumi.ResourceOptions(parent=self))
            elif plans.authz.shard_configmaps:
                GatewayData(f"{name}-authz-data", GatewayDataArgs(configmaps=plans.authz.shard_configmaps),
                            pulumi.ResourceOptions(parent=self))
        # [vault]   VaultIdentity (if on.vault)
        if on.vault:
            VaultIdentity(f"{name}-vault",
                          VaultIdentityArgs(platform=platform, trust_bundle_pem=bundle, scope=scope),
                          pulumi.ResourceOptions(parent=self))
        # [windows] GmsaAgents (if on.windows; not in a base)
        if plans.windows is not None:
            GmsaAgents(f"{name}-windows", GmsaAgentsArgs(platform=platform, plan=plans.windows,
                                                         deliver_with_ssm=on.aws, namespaces=namespaces),
                       pulumi.ResourceOptions(parent=self))
        # [egress]  EgressProxies (VM and Windows agents with http grants; not in a base)
        if plans.egress is not None and plans.egress.proxies:
            EgressProxies(f"{name}-egress", EgressProxiesArgs(platform=platform, plan=plans.egress,
                                                              deliver_with_ssm=on.aws),
                          pulumi.ResourceOptions(parent=self))
        # [aws]     AwsFederation (if on.aws), AuditTrail (not in a shard)
        aws: AwsFederation | None = None
        trail: AuditTrail | None = None
        if plans.aws is not None:
            oidc = platform.config.aws.federation == "oidc"
            aws = AwsFederation(f"{name}-aws", AwsFederationArgs(
                platform=platform, plan=plans.aws, trust_bundle_pem=bundle,
                aws_pca_arn=trust.aws_pca_arn if trust is not None else None, scope=scope,
                principal_arn=None if shared else from_base("awsOidcProviderArn" if oidc else "awsTrustAnchorArn"),
                principal_arns=None if shared or oidc else from_base("awsTrustAnchorArns"),
            ), pulumi.ResourceOptions(parent=self))
            if shared:
                trail = AuditTrail(f"{name}-audit", AuditTrailArgs(platform=platform),
                                   pulumi.ResourceOptions(parent=self))
        # [audit]   AuditPipeline (if on.audit; not in a shard): the collector writing into the trail
        if plans.audit is not None:
            AuditPipeline(f"{name}-audit-logs", AuditPipelineArgs(
                platform=platform, target=plans.audit,
                bucket_name=trail.bucket_name if trail is not None else None,
                kms_key_arn=trail.kms_key_arn if trail is not None else None,
                trust_anchor_arn=aws.trust_anchor_arn if aws is not None else None,
            ), pulumi.ResourceOptions(parent=self))
        # [ci]      CiFederation (if ci.github is set; not in a shard): the pipeline's OIDC login
        if platform.config.ci.enabled and shared:
            CiFederation(f"{name}-ci", CiFederationArgs(platform=platform), pulumi.ResourceOptions(parent=self))
        # [observe] IdentityHealth (if on.observe; not in a shard)
        if on.observe and trust is not None:
            self.observe = IdentityHealth(f"{name}-observe", IdentityHealthArgs(
                platform=platform,
                certificate_pems={} if trust.profile.upstream == "spire" else
                {"upstream-chain": trust.upstream_chain_pem, "trust-bundle": trust.trust_bundle_pem},
            ), pulumi.ResourceOptions(parent=self))
        summary: dict[str, Any] = {
            "agents": len(platform.active_agents),
            "suspended": [a.name for a in platform.suspended_agents],
            "trustBundlePem": bundle,
        }
        if on.spire and shared:
            summary["spire"] = {"jwtIssuer": self.spire_server.jwt_issuer, "jwksUrl": self.spire_server.jwks_url,
                                "serverAddress": self.spire_server.server_address}
        if scope == "shared":
            # What shards read through pulumi.StackReference (non-secret only).
            summary[SHARED_OUTPUT] = {
                "trustBundlePem": bundle,
                **({"spireServerWorkload": self.spire_server.server_workload} if on.spire else {}),
                **({"awsTrustAnchorArn": aws.trust_anchor_arn} if aws and aws.trust_anchor_arn else {}),
                **({"awsTrustAnchorArns": aws.trust_anchor_arns} if aws and aws.trust_anchor_arns else {}),
                **({"awsOidcProviderArn": aws.oidc_provider_arn} if aws and aws.oidc_provider_arn else {}),
            }
        self.summary = pulumi.Output.from_input(summary)
        self.register_outputs({"summary": self.summary})
