"""AWS: federation without access keys (AwsFederation) and the WORM audit trail (AuditTrail).

AwsFederation never creates an IAM user or an access key. Agents obtain short-lived
sessions with their SVIDs: IAM Roles Anywhere (X.509-SVID; the trust anchor is the
TrustDomain's bundle, or its AWS Private CA) or, per stack, an IAM OIDC provider for SPIRE's
discovery URL (JWT-SVID). Every role trusts exactly one SPIFFE ID. The policy documents come
from the pure renderer :mod:`components.render.aws`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import pulumi
from pulumi_aws import cloudtrail, iam, kms, rolesanywhere, s3

from components.config import StackConfig
from components.config.aws import AuditBucketConfig
from components.errors import ConfigError, Problem
from components.platform_model import Platform
from components.render.aws import (
    CLOUDTRAIL_PREFIX,
    AwsPlan,
    AwsRole,
    account_of,
    audit_bucket_policy,
    audit_key_policy,
    audit_lifecycle_rules,
    audit_object_lock_rule,
    cloudtrail_bucket_statements,
    inline_policy,
    policy_attachment_key,
    previous_anchor_key,
    profile_durations,
    trail_arn,
    trail_name,
    trust_policy,
)
from components.render.trust import pem_blocks
from components.shard import Scope, deploys_agents, deploys_shared


def _tags(platform: Platform, **extra: str) -> dict[str, str]:
    return {"agentpassport:stack": platform.stack, **extra}


@dataclass(frozen=True)
class AwsFederationArgs:
    """Inputs of :class:`AwsFederation`."""

    platform: Platform
    """The validated platform (stack name, AWS and trust settings)."""

    plan: AwsPlan
    """The validated roles: one per active agent's aws grant (``Plans.aws``)."""

    trust_bundle_pem: pulumi.Input[str] | None = None
    """PEM bundle of the TrustDomain's CA (Roles Anywhere CERTIFICATE_BUNDLE source)."""

    aws_pca_arn: pulumi.Input[str] | None = None
    """ARN of the TrustDomain's AWS Private CA (AWS_ACM_PCA source); set when the stack's
    trust.upstream is aws-pca."""

    scope: Scope = "all"
    """``shared`` (a base): the trust anchor or OIDC provider only; ``agents`` (a shard): the
    roles, and Roles Anywhere profiles listing them, trusting ``principal_arn``; ``all``: both."""

    principal_arn: pulumi.Input[str] | None = None
    """A shard's trust anchor / OIDC provider ARN, read from the base stack."""

    principal_arns: pulumi.Input[list[str] | None] | None = None
    """A shard during a root rotation: every trust anchor of the base (``awsTrustAnchorArns``:
    the current one and one per ``trust.previousRoots`` entry); None or empty otherwise."""


class AwsFederation(pulumi.ComponentResource):
    """IAM Roles Anywhere (or OIDC) federation: one role per active agent's aws grant."""

    trust_anchor_arn: pulumi.Output[str] | None
    """The Roles Anywhere trust anchor (None with federation oidc)."""

    trust_anchor_arns: pulumi.Output[list[str]] | None
    """During a root rotation: the current anchor and one per previous root (None otherwise)."""

    oidc_provider_arn: pulumi.Output[str] | None
    """The IAM OIDC provider (None with federation roles-anywhere)."""

    profile_arns: pulumi.Output[dict[str, str]]
    """Session duration in seconds (as text) -> Roles Anywhere profile ARN."""

    role_arns: pulumi.Output[dict[str, str]]
    """IAM role name -> ARN."""

    def __init__(self, name: str, args: AwsFederationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:aws:AwsFederation", name, None, opts)
        platform = args.platform
        cfg = platform.config
        self.trust_anchor_arn = None
        self.trust_anchor_arns = None
        self.oidc_provider_arn = None
        principal: pulumi.Output[str]
        principals: pulumi.Output[list[str]] | None = None
        if not deploys_shared(args.scope):
            if args.principal_arn is None:
                raise ConfigError([Problem(platform.config_file, None, "agent-passport:shard.baseStack",
                                           "a shard needs the base stack's trust anchor / OIDC provider ARN")])
            principal = pulumi.Output.from_input(args.principal_arn)
            if args.principal_arns is not None:  # the base's anchors during a root rotation, if any
                principals = pulumi.Output.all(principal, args.principal_arns).apply(
                    lambda p: list(p[1]) if p[1] else [p[0]])
        elif cfg.aws.federation == "oidc":
            provider = iam.OpenIdConnectProvider(
                f"{name}-oidc",
                url=cfg.jwt_issuer,
                client_id_lists=[cfg.aws.oidc_audience],
                tags=_tags(platform),
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.oidc_provider_arn = provider.arn
            principal = provider.arn
        else:
            anchor = rolesanywhere.TrustAnchor(
                f"{name}-anchor",
                name=f"agentpassport-{platform.stack}",
                enabled=True,
                source=self._anchor_source(platform, args),
                tags=_tags(platform),
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.trust_anchor_arn = anchor.arn
            principal = anchor.arn
            # A root rotation (trust.previousRoots): one more anchor per previous root, and every
            # role accepts certificates from each until the operator removes the old root.
            previous = [rolesanywhere.TrustAnchor(
                f"{name}-anchor-previous-{previous_anchor_key(pem)}",
                name=f"agentpassport-{platform.stack}-previous-{previous_anchor_key(pem)}",
                enabled=True,
                source=rolesanywhere.TrustAnchorSourceArgs(
                    source_type="CERTIFICATE_BUNDLE",
                    source_data=rolesanywhere.TrustAnchorSourceSourceDataArgs(x509_certificate_data=pem.strip() + "\n"),
                ),
                tags=_tags(platform),
                opts=pulumi.ResourceOptions(parent=self),
            ) for pem in cfg.trust.previous_roots]
            if previous:
                principals = pulumi.Output.all(anchor.arn, *(a.arn for a in previous)).apply(list)
                self.trust_anchor_arns = principals

        roles = list(args.plan.roles) if deploys_agents(args.scope) else []
        role_arns: dict[str, pulumi.Output[str]] = {}
        for r in roles:
            policy = (principals or principal.apply(lambda arn: [arn])).apply(_trust_policy_json(r, cfg))
            role = iam.Role(
                f"{name}-{r.name}-role",
                name=r.name,
                description=f"Agent Passport: agent {r.agent.name}, grant {r.grant.role} "
                f"({r.spiffe_id})"[:1000],
                assume_role_policy=policy,
                max_session_duration=r.max_session_duration,
                force_detach_policies=True,
                tags=_tags(platform, **{"agentpassport:agent": r.agent.name,
                                        "agentpassport:team": r.agent.identity.team}),
                opts=pulumi.ResourceOptions(parent=self),
            )
            statements = inline_policy(r.grant)
            if statements is not None:
                iam.RolePolicy(
                    f"{name}-{r.name}-inline",
                    name="agentpassport-grant",
                    role=role.id,
                    policy=json.dumps(statements, sort_keys=True),
                    opts=pulumi.ResourceOptions(parent=self),
                )
            for arn in r.grant.managed_policy_arns:
                iam.RolePolicyAttachment(
                    f"{name}-{r.name}-{policy_attachment_key(arn)}",
                    role=role.name,
                    policy_arn=arn,
                    opts=pulumi.ResourceOptions(parent=self),
                )
            role_arns[r.name] = role.arn

        profile_arns: dict[str, pulumi.Output[str]] = {}
        if cfg.aws.federation == "roles-anywhere":
            # A profile lists the roles it vends, so it lives with them (in a shard: named with it).
            for duration, members in profile_durations(roles).items():
                profile = rolesanywhere.Profile(
                    f"{name}-profile-{duration}s",
                    name=f"agentpassport-{platform.stack}-{duration}s",
                    enabled=True,
                    duration_seconds=duration,
                    accept_role_session_name=False,
                    role_arns=[role_arns[m.name] for m in members],
                    tags=_tags(platform),
                    opts=pulumi.ResourceOptions(parent=self),
                )
                profile_arns[str(duration)] = profile.arn

        self.role_arns = _output_map(role_arns)
        self.profile_arns = _output_map(profile_arns)
        self.register_outputs({
            "trustAnchorArn": self.trust_anchor_arn,
            "trustAnchorArns": self.trust_anchor_arns,
            "oidcProviderArn": self.oidc_provider_arn,
            "profileArns": self.profile_arns,
            "roleArns": self.role_arns,
        })

    @staticmethod
    def _anchor_source(platform: Platform, args: AwsFederationArgs) -> rolesanywhere.TrustAnchorSourceArgs:
        if platform.config.trust.upstream == "aws-pca" and args.aws_pca_arn is not None:
            return rolesanywhere.TrustAnchorSourceArgs(
                source_type="AWS_ACM_PCA",
                source_data=rolesanywhere.TrustAnchorSourceSourceDataArgs(acm_pca_arn=args.aws_pca_arn),
            )
        if args.trust_bundle_pem is None:
            raise ConfigError([Problem(platform.config_file, None, "agent-passport:aws.federation",
                                       "roles-anywhere needs the trust domain's CA bundle or AWS Private CA; "
                                       "deploy the trust subsystem or use federation oidc")])
        # The current root alone: a previous root (trust.previousRoots) gets its own anchor.
        current = pulumi.Output.from_input(args.trust_bundle_pem).apply(lambda b: (pem_blocks(b) or [b])[0])
        return rolesanywhere.TrustAnchorSourceArgs(
            source_type="CERTIFICATE_BUNDLE",
            source_data=rolesanywhere.TrustAnchorSourceSourceDataArgs(x509_certificate_data=current),
        )


def _trust_policy_json(role: AwsRole, cfg: StackConfig) -> Callable[[list[str]], str]:
    def render(principal_arns: list[str]) -> str:
        arns: str | list[str] = principal_arns[0] if len(principal_arns) == 1 else principal_arns
        return json.dumps(trust_policy(role, cfg, arns), sort_keys=True)

    return render


def _output_map(values: dict[str, pulumi.Output[str]]) -> pulumi.Output[dict[str, str]]:
    if not values:
        return pulumi.Output.from_input({})
    return pulumi.Output.all(**values).apply(lambda d: dict(sorted(d.items())))


# --------------------------------------------------------------------------- audit trail


@dataclass(frozen=True)
class AuditTrailArgs:
    """Inputs of :class:`AuditTrail`.

    There is no way to ask for a bucket without Object Lock: the bucket is always created
    with it, and a retention below one day is refused here.
    """

    platform: Platform
    """The validated platform (stack name, aws.auditBucket settings)."""

    def __post_init__(self) -> None:
        # raises ConfigError for a retention < 1 day
        audit_object_lock_rule(self.bucket, self.platform.config_file, self.retention_days)

    @property
    def bucket(self) -> AuditBucketConfig:
        return self.platform.config.aws.audit_bucket

    @property
    def retention_days(self) -> int:
        """``audit.retention`` in days (the bucket's own retentionDays, when set, must agree)."""
        return self.platform.config.audit.retention_days


class AuditTrail(pulumi.ComponentResource):
    """S3 bucket with Object Lock (COMPLIANCE), versioning, no public access, SSE-KMS,
    lifecycle and a TLS-only policy: where SPIRE, Vault and OPA/Envoy audit logs land."""

    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]
    trail_arn: pulumi.Output[str] | None
    """The CloudTrail trail writing under cloudtrail/ (``audit.cloudTrail``), else None."""

    def __init__(self, name: str, args: AuditTrailArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:aws:AuditTrail", name, None, opts)
        platform = args.platform
        settings = args.bucket
        lock_rule = audit_object_lock_rule(settings, platform.config_file, args.retention_days)
        child = pulumi.ResourceOptions(parent=self)

        if settings.kms_key_arn is None:
            key = kms.Key(
                f"{name}-key",
                description=f"Agent Passport audit trail ({platform.stack})",
                enable_key_rotation=True,
                deletion_window_in_days=30,
                tags=_tags(platform),
                opts=child,
            )
            key_arn: pulumi.Output[str] = key.arn
        else:
            key_arn = pulumi.Output.from_input(settings.kms_key_arn)

        bucket = s3.Bucket(
            f"{name}-bucket",
            bucket_prefix=settings.bucket_prefix,
            object_lock_enabled=True,  # only possible at creation; never optional here
            force_destroy=False,
            tags=_tags(platform, **{"agentpassport:purpose": "audit-trail"}),
            opts=child,
        )
        s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration={"status": "Enabled"},
            opts=child,
        )
        s3.BucketObjectLockConfiguration(
            f"{name}-object-lock",
            bucket=bucket.id,
            object_lock_enabled="Enabled",
            rule=s3.BucketObjectLockConfigurationRuleArgs(
                default_retention=s3.BucketObjectLockConfigurationRuleDefaultRetentionArgs(
                    mode=lock_rule["default_retention"]["mode"], days=lock_rule["default_retention"]["days"],
                ),
            ),
            opts=child,
        )
        s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[{
                "apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms", "kms_master_key_id": key_arn},
                "bucket_key_enabled": True,
            }],
            opts=child,
        )
        s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=cast("list[Any]", audit_lifecycle_rules(settings, args.retention_days)),
            opts=child,
        )
        trail = platform.config.audit.cloud_trail
        region = platform.config.aws.region

        def bucket_policy(v: list[str]) -> str:
            doc = audit_bucket_policy(v[0], v[1])
            if trail:
                account = account_of(v[1])
                doc["Statement"] += cloudtrail_bucket_statements(v[0], trail_arn(region, account, platform.stack),
                                                                 account)
            return json.dumps(doc, sort_keys=True)

        policy = s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket.id,
            policy=pulumi.Output.all(bucket.arn, key_arn).apply(bucket_policy),
            opts=child,
        )
        self.trail_arn = None
        if trail:
            after: list[pulumi.Resource] = [policy]
            if settings.kms_key_arn is None:  # our key: let CloudTrail encrypt with it (a given key: yours)
                after.append(kms.KeyPolicy(
                    f"{name}-key-policy",
                    key_id=key_arn,
                    policy=key_arn.apply(lambda arn: json.dumps(
                        audit_key_policy(account_of(arn), trail_arn(region, account_of(arn), platform.stack)),
                        sort_keys=True)),
                    opts=child,
                ))
            created = cloudtrail.Trail(
                f"{name}-cloudtrail",
                name=trail_name(platform.stack),
                s3_bucket_name=bucket.id,
                s3_key_prefix=CLOUDTRAIL_PREFIX,
                kms_key_id=key_arn,
                is_multi_region_trail=True,
                include_global_service_events=True,  # IAM and STS events are global
                enable_log_file_validation=True,
                tags=_tags(platform),
                opts=pulumi.ResourceOptions(parent=self, depends_on=after),
            )
            self.trail_arn = created.arn
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.kms_key_arn = key_arn
        self.register_outputs({
            "bucketName": self.bucket_name,
            "bucketArn": self.bucket_arn,
            "kmsKeyArn": self.kms_key_arn,
            "trailArn": self.trail_arn,
        })
