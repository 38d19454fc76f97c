"""CiFederation: the project's pipeline logs in with GitHub's OIDC token, never a stored secret.

Registers, from the pure :func:`components.render.ci.plan_ci`:

* with ``subsystems.vault``: a JWT auth backend for ``https://token.actions.githubusercontent.com``
  at its own mount (``jwt-github``), one role bound to the repository and its refs (and pull
  requests if asked) with ≤15-minute tokens, and its read-only policy;
* with ``subsystems.aws``: GitHub's IAM OIDC provider (unless an existing one is named) and a
  role trusting only the repository's subjects for ``sts.amazonaws.com``, one-hour sessions,
  with at most the state-bucket / secrets-key permissions a preview needs.

Nothing is registered when ``ci.github`` is unset (the default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_vault as vault
import pulumi_vault.jwt as vault_jwt
from pulumi_aws import iam

from components.platform_model import Platform
from components.render.ci import GITHUB_JWT_ALGS, CiAwsPlan, CiVaultPlan, aws_trust_policy, plan_ci

CI_LOGIN_RATE = 5.0
"""Logins per second per client IP on the pipeline's JWT mount (a rate-limit quota)."""


@dataclass(frozen=True)
class CiFederationArgs:
    """Inputs of :class:`CiFederation`."""

    platform: Platform
    """The validated platform; its ``ci`` section decides everything."""


class CiFederation(pulumi.ComponentResource):
    """GitHub Actions -> Vault JWT role and AWS web-identity role for one stack's pipeline."""

    vault_mount: pulumi.Output[str] | None
    """Mount path of GitHub's JWT auth backend (None without Vault)."""
    vault_role: pulumi.Output[str] | None
    """Role the workflow logs in with (None without Vault)."""
    aws_role_arn: pulumi.Output[str] | None
    """ARN the workflow assumes (``role-to-assume``; None without AWS)."""

    def __init__(self, name: str, args: CiFederationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:ci:CiFederation", name, None, opts)
        platform = args.platform
        plan = plan_ci(platform.config, platform.stack, platform.config_file)
        child = pulumi.ResourceOptions(parent=self)
        self.vault_mount = self.vault_role = self.aws_role_arn = None
        if plan is not None and plan.vault is not None:
            self.vault_mount, self.vault_role = self._vault(name, plan.vault, plan.repository, child)
        if plan is not None and plan.aws is not None:
            self.aws_role_arn = self._aws(name, plan.aws, plan.repository, platform.stack, child)
        self.register_outputs({
            "vaultMount": self.vault_mount,
            "vaultRole": self.vault_role,
            "awsRoleArn": self.aws_role_arn,
        })

    def _vault(self, name: str, p: CiVaultPlan, repository: str,
               child: pulumi.ResourceOptions) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        backend = vault_jwt.AuthBackend(
            f"{name}-vault-jwt",
            path=p.mount,
            type="jwt",
            description=f"Agent Passport: the pipeline of {repository} logs in with GitHub Actions' OIDC token",
            oidc_discovery_url=p.issuer,
            bound_issuer=p.issuer,
            jwt_supported_algs=list(GITHUB_JWT_ALGS),
            tune=vault_jwt.AuthBackendTuneArgs(default_lease_ttl=f"{p.token_ttl}s",
                                               max_lease_ttl=f"{p.token_max_ttl}s",
                                               token_type="service",
                                               audit_non_hmac_request_keys=["role"]),
            opts=child,
        )
        # the pipeline logs in a few times per run: a retry loop must not reach Vault unthrottled; the
        # agent-passport- prefix is what AgentPassportVaultQuotaRejecting selects (name=~"agent-passport-.*")
        vault.QuotaRateLimit(f"{name}-vault-quota", name=f"agent-passport-{p.policy_name}-login",
                             path=backend.path.apply(lambda path: f"auth/{path or p.mount}/login"),
                             rate=CI_LOGIN_RATE, interval=1, opts=child)
        policy = vault.Policy(f"{name}-vault-policy", name=p.policy_name, policy=p.policy_hcl, opts=child)
        role = vault_jwt.AuthBackendRole(
            f"{name}-vault-role",
            backend=backend.path,
            role_name=p.role,
            role_type="jwt",
            user_claim=p.user_claim,
            bound_audiences=list(p.bound_audiences),
            bound_claims=dict(p.bound_claims),
            bound_claims_type="string",
            claim_mappings=dict(p.claim_mappings),
            token_policies=[policy.name],
            token_no_default_policy=True,
            token_ttl=p.token_ttl,
            token_max_ttl=p.token_max_ttl,
            token_type="service",
            opts=child,
        )
        return backend.path.apply(lambda path: path or p.mount), role.role_name

    def _aws(self, name: str, p: CiAwsPlan, repository: str, stack: str,
             child: pulumi.ResourceOptions) -> pulumi.Output[str]:
        tags = {"agentpassport:stack": stack, "agentpassport:ci": repository}
        provider_arn: pulumi.Output[str]
        if p.existing_provider_arn is not None:
            provider_arn = pulumi.Output.from_input(p.existing_provider_arn)
        else:
            provider = iam.OpenIdConnectProvider(
                f"{name}-github-oidc",
                url=p.provider_url,
                client_id_lists=[p.audience],
                tags=tags,
                opts=child,
            )
            provider_arn = provider.arn
        subjects = list(p.subjects)
        role = iam.Role(
            f"{name}-role",
            name=p.role_name,
            description=f"Agent Passport: the pipeline of {repository} (GitHub OIDC, preview only)",
            assume_role_policy=provider_arn.apply(lambda arn: json.dumps(aws_trust_policy(arn, subjects),
                                                                         sort_keys=True)),
            max_session_duration=p.max_session_duration,
            force_detach_policies=True,
            tags=tags,
            opts=child,
        )
        if p.policy is not None:
            iam.RolePolicy(
                f"{name}-role-inline",
                name="agentpassport-ci-preview",
                role=role.id,
                policy=json.dumps(p.policy, sort_keys=True),
                opts=child,
            )
        return role.arn
