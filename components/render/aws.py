"""AWS federation and audit trail: IAM policy documents and settings, as plain dicts.

Pure: a :class:`~components.platform_model.Platform` in, JSON-ready dicts out, no pulumi.
No function here can produce an IAM user or an access key: agents reach AWS only through
short-lived sessions bound to their one SPIFFE ID (X.509-SVID via IAM Roles Anywhere, or
JWT-SVID via an IAM OIDC provider).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from components.config import StackConfig
from components.config.aws import AuditBucketConfig
from components.durations import seconds
from components.errors import ConfigError, Problem, input_error
from components.manifest.loader import format_loc
from components.manifest.models import AwsGrant
from components.platform_model import Platform, ResolvedAgent
from components.render.artifacts import Artifact
from components.render.yamlout import dump_json
from components.shard import stack_scope

POLICY_VERSION = "2012-10-17"
ROLES_ANYWHERE_PRINCIPAL = "rolesanywhere.amazonaws.com"
ROLES_ANYWHERE_ACTIONS = ("sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession")
SPIFFE_URI_TAG = "aws:PrincipalTag/x509SAN/URI"
AWS_MIN_ROLE_MAX_SESSION = 3600  # IAM: a role's MaxSessionDuration is 1h..12h
TRUST_ANCHOR_PLACEHOLDER = "{{trustAnchorArn}}"
OIDC_PROVIDER_PLACEHOLDER = "{{oidcProviderArn}}"


@dataclass(frozen=True)
class AwsRole:
    """One IAM role: one aws grant of one active agent."""

    agent: ResolvedAgent
    index: int
    grant: AwsGrant

    @property
    def name(self) -> str:
        return self.agent.identity.aws_role_name(self.grant.role)

    @property
    def spiffe_id(self) -> str:
        return self.agent.identity.spiffe_id

    @property
    def session_seconds(self) -> int:
        return seconds(self.grant.session_duration)

    @property
    def max_session_duration(self) -> int:
        """IAM's MaxSessionDuration (at least 1h, AWS's floor); Roles Anywhere profiles and
        the requested duration bound the session to the grant's own duration."""
        return max(AWS_MIN_ROLE_MAX_SESSION, self.session_seconds)

    @property
    def loc(self) -> tuple[str | int, ...]:
        return ("spec", "grants", self.index, "aws")


def aws_roles(platform: Platform) -> list[AwsRole]:
    """Every aws grant of every active agent (suspended agents get no IAM role), by role name."""
    roles = [AwsRole(a, i, g) for a in platform.active_agents for i, g in a.grants_of("aws")]
    return sorted(roles, key=lambda r: r.name)


def issuer_condition_prefix(issuer: str) -> str:
    """IAM's condition-key prefix for an OIDC provider: the issuer URL without ``https://``."""
    parsed = urlparse(issuer)
    return (parsed.netloc + parsed.path).rstrip("/")


# --------------------------------------------------------------------------- validation


def aws_problems(platform: Platform) -> list[Problem]:
    cfg = platform.config
    out: list[Problem] = []
    seen: dict[str, AwsRole] = {}
    for r in aws_roles(platform):
        src = r.agent.source
        first = seen.setdefault(r.name, r)
        if first is not r:
            out.append(Problem(src.file, src.line_of((*r.loc, "role")), format_loc((*r.loc, "role")),
                               f"IAM role name {r.name!r} is already used by agent {first.agent.name!r}; "
                               "choose another role name"))
        if cfg.aws.federation == "oidc" and cfg.aws.oidc_audience not in r.agent.identity.jwt_audiences:
            loc = ("spec", "identity", "jwtAudiences")
            out.append(Problem(src.file, src.line_of(loc), format_loc(loc),
                               f"stack {cfg.environment} federates to AWS with JWT-SVIDs for audience "
                               f"{cfg.aws.oidc_audience!r}; add it to jwtAudiences (the agent has aws grants)"))
    if cfg.aws.federation == "oidc" and not cfg.jwt_issuer.startswith("https://"):
        out.append(Problem(platform.config_file, None, "agent-passport:spire.jwtIssuer",
                           f"{cfg.jwt_issuer!r}: AWS accepts only https:// OIDC issuers"))
    return out


def validate_aws(platform: Platform) -> None:
    """Raise every problem :func:`aws_problems` finds (ManifestError, ConfigError, or both)."""
    problems = aws_problems(platform)
    if problems:
        raise input_error(problems, [platform.config_file])


@dataclass(frozen=True)
class AwsPlan:
    """The AWS part of a stack, validated (:func:`compile_aws`): one IAM role per active agent's aws grant."""

    roles: tuple[AwsRole, ...]


def compile_aws(platform: Platform) -> AwsPlan:
    """The AWS plan of a stack; raises every problem first."""
    validate_aws(platform)
    return AwsPlan(tuple(aws_roles(platform)))


# --------------------------------------------------------------------------- IAM documents


def roles_anywhere_trust_policy(spiffe_id: str, trust_anchor_arn: str | list[str]) -> dict[str, Any]:
    """Only IAM Roles Anywhere, only for certificates from our anchor, only for one SPIFFE ID.

    During a root rotation (``trust.previousRoots``) ``trust_anchor_arn`` lists the current
    anchor and one per previous root: a certificate from any of them is accepted.
    """
    if isinstance(trust_anchor_arn, list) and len(trust_anchor_arn) == 1:
        trust_anchor_arn = trust_anchor_arn[0]
    return {
        "Version": POLICY_VERSION,
        "Statement": [{
            "Sid": "AgentPassportRolesAnywhere",
            "Effect": "Allow",
            "Principal": {"Service": ROLES_ANYWHERE_PRINCIPAL},
            "Action": list(ROLES_ANYWHERE_ACTIONS),
            "Condition": {
                "StringEquals": {SPIFFE_URI_TAG: spiffe_id},
                "ArnEquals": {"aws:SourceArn": trust_anchor_arn},
            },
        }],
    }


def web_identity_trust_policy(spiffe_id: str, provider_arn: str, issuer: str, audience: str) -> dict[str, Any]:
    """Only JWT-SVIDs from our issuer, whose ``sub`` is the agent's SPIFFE ID, for ``audience``."""
    prefix = issuer_condition_prefix(issuer)
    return {
        "Version": POLICY_VERSION,
        "Statement": [{
            "Sid": "AgentPassportWebIdentity",
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {f"{prefix}:sub": spiffe_id, f"{prefix}:aud": audience}},
        }],
    }


def previous_anchor_key(pem: str) -> str:
    """A stable short name for the Roles Anywhere trust anchor of one previous root (its
    certificate's SHA-256, so reordering trust.previousRoots renames nothing)."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(pem.strip().encode()).public_bytes(Encoding.DER)
    return hashlib.sha256(der).hexdigest()[:12]


def trust_policy(role: AwsRole, cfg: StackConfig, principal_arn: str | list[str]) -> dict[str, Any]:
    """The role's trust policy for the stack's federation; ``principal_arn`` is the trust
    anchor(s) (roles-anywhere) or the OIDC provider (oidc)."""
    if cfg.aws.federation == "oidc":
        assert isinstance(principal_arn, str)
        return web_identity_trust_policy(role.spiffe_id, principal_arn, cfg.jwt_issuer, cfg.aws.oidc_audience)
    return roles_anywhere_trust_policy(role.spiffe_id, principal_arn)


def inline_policy(grant: AwsGrant) -> dict[str, Any] | None:
    """The grant's statements as an identity policy (always Allow; actions never ``svc:*``)."""
    if not grant.statements:
        return None
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {"Sid": f"Grant{i}", "Effect": "Allow", "Action": list(s.actions), "Resource": list(s.resources)}
            for i, s in enumerate(grant.statements)
        ],
    }


def policy_attachment_key(arn: str) -> str:
    """A stable, name-safe key for a managed policy ARN (its path and name)."""
    tail = arn.split(":", 5)[-1]
    tail = tail.removeprefix("policy/")
    return re.sub(r"[^A-Za-z0-9-]+", "-", tail).strip("-").lower()


def profile_durations(roles: Iterable[AwsRole]) -> dict[int, list[AwsRole]]:
    """Roles grouped by session duration: one Roles Anywhere profile per duration, so each
    role's sessions last at most its grant's sessionDuration (a profile's durationSeconds
    caps the sessions it vends; IAM's own floor for a role is one hour)."""
    groups: dict[int, list[AwsRole]] = {}
    for r in roles:
        groups.setdefault(r.session_seconds, []).append(r)
    return dict(sorted(groups.items()))


# --------------------------------------------------------------------------- audit trail


def audit_bucket_policy(bucket_arn: str, kms_key_arn: str) -> dict[str, Any]:
    """TLS only; an upload may not choose another encryption or KMS key than ours (one that
    chooses none is encrypted with ours by the bucket's default)."""
    objects = f"{bucket_arn}/*"
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, objects],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {
                # Uploads that name an encryption must name ours; uploads that name none get the
                # bucket's default (SSE-KMS with our key). Requiring the header would lock out
                # writers that cannot send it, such as the collector's awss3exporter.
                "Sid": "DenyOtherEncryption",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": objects,
                "Condition": {
                    "StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"},
                    "Null": {"s3:x-amz-server-side-encryption": "false"},
                },
            },
            {
                "Sid": "DenyOtherKmsKey",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": objects,
                "Condition": {
                    "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": kms_key_arn},
                    "Null": {"s3:x-amz-server-side-encryption-aws-kms-key-id": "false"},
                },
            },
        ],
    }


CLOUDTRAIL_PRINCIPAL = "cloudtrail.amazonaws.com"
CLOUDTRAIL_PREFIX = "cloudtrail"


def account_of(arn: str) -> str:
    """The account ID field of an ARN (``arn:partition:service:region:ACCOUNT:resource``)."""
    return arn.split(":")[4]


def trail_name(stack: str) -> str:
    return f"agentpassport-{stack}"


def trail_arn(region: str, account: str, stack: str) -> str:
    return f"arn:aws:cloudtrail:{region}:{account}:trail/{trail_name(stack)}"


def cloudtrail_bucket_statements(bucket_arn: str, trail: str, account: str) -> list[dict[str, Any]]:
    """What CloudTrail needs of the audit bucket: its ACL, and writing under cloudtrail/AWSLogs/<account>/,
    only for this stack's trail."""
    source = {"StringEquals": {"aws:SourceArn": trail}}
    return [
        {"Sid": "CloudTrailAclCheck", "Effect": "Allow", "Principal": {"Service": CLOUDTRAIL_PRINCIPAL},
         "Action": "s3:GetBucketAcl", "Resource": bucket_arn, "Condition": source},
        {"Sid": "CloudTrailWrite", "Effect": "Allow", "Principal": {"Service": CLOUDTRAIL_PRINCIPAL},
         "Action": "s3:PutObject", "Resource": f"{bucket_arn}/{CLOUDTRAIL_PREFIX}/AWSLogs/{account}/*",
         "Condition": {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control", "aws:SourceArn": trail}}},
    ]


def audit_key_policy(account: str, trail: str) -> dict[str, Any]:
    """The audit key's policy when CloudTrail writes with it: the account administers it through IAM
    (the default key policy), CloudTrail may encrypt for this stack's trail only."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {"Sid": "AccountAdministersThroughIam", "Effect": "Allow",
             "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "kms:*", "Resource": "*"},
            {"Sid": "CloudTrailEncrypts", "Effect": "Allow", "Principal": {"Service": CLOUDTRAIL_PRINCIPAL},
             "Action": ["kms:GenerateDataKey*", "kms:DescribeKey"], "Resource": "*",
             "Condition": {"StringEquals": {"aws:SourceArn": trail},
                           "StringLike": {"kms:EncryptionContext:aws:cloudtrail:arn":
                                          f"arn:aws:cloudtrail:*:{account}:trail/*"}}},
        ],
    }


def audit_retention_days(bucket: AuditBucketConfig, default_days: int) -> int:
    """The bucket's retention: ``aws.auditBucket.retentionDays`` if set, else ``audit.retention``."""
    return bucket.retention_days if bucket.retention_days is not None else default_days


def audit_object_lock_rule(bucket: AuditBucketConfig, config_file: str = "", default_days: int = 365) -> dict[str, Any]:
    """COMPLIANCE mode: no one, not even the account root, deletes a version before it expires."""
    days = audit_retention_days(bucket, default_days)
    if not isinstance(days, int) or days < 1:
        raise ConfigError([Problem(config_file, None, "agent-passport:aws.auditBucket.retentionDays",
                                   "the audit trail needs an Object Lock retention of at least 1 day")])
    return {"default_retention": {"mode": "COMPLIANCE", "days": days}}


def audit_lifecycle_rules(bucket: AuditBucketConfig, default_days: int = 365) -> list[dict[str, Any]]:
    """Cheaper storage with age, and deletion once the retention is over (the GDPR half).

    A version's Object Lock ends ``days`` after it was written; the lifecycle then puts a delete
    marker on it, removes the now noncurrent version a day later (S3 refuses that while the lock
    holds, so this can never cut a retention short) and finally the orphaned delete marker.
    """
    days = audit_retention_days(bucket, default_days)
    retention: dict[str, Any] = {
        "id": "retention",
        "status": "Enabled",
        "filter": {"prefix": ""},
        "expiration": {"days": days},
        "noncurrent_version_expiration": {"noncurrent_days": 1},
    }
    if bucket.transition_to_glacier_days < days:
        retention["transitions"] = [{"days": bucket.transition_to_glacier_days, "storage_class": "GLACIER"}]
    return [
        retention,
        {
            "id": "expired-delete-markers",
            "status": "Enabled",
            "filter": {"prefix": ""},
            "expiration": {"expired_object_delete_marker": True},
        },
        {
            "id": "abort-incomplete-uploads",
            "status": "Enabled",
            "filter": {"prefix": ""},
            "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
        },
    ]


# --------------------------------------------------------------------------- artifacts


def aws_artifacts(platform: Platform) -> Iterable[Artifact]:
    """``aws/<role>-trust-policy.json`` per role; the anchor/provider ARN is known only at
    deploy time and appears as a placeholder."""
    if not platform.config.subsystems.aws or stack_scope(platform.config) == "shared":
        return []  # a base's anchor/provider and audit bucket are not rendered; roles are its shards'
    return plan_artifacts(platform, compile_aws(platform))


def plan_artifacts(platform: Platform, plan: AwsPlan) -> list[Artifact]:
    """``aws/<role>-trust-policy.json`` (+ ``-policy.json``) per role of the plan."""
    placeholder = (OIDC_PROVIDER_PLACEHOLDER if platform.config.aws.federation == "oidc"
                   else TRUST_ANCHOR_PLACEHOLDER)
    out = []
    for r in plan.roles:
        trust = trust_policy(r, platform.config, placeholder)
        out.append(Artifact(f"aws/{r.name}-trust-policy.json", dump_json(trust)))
        policy = inline_policy(r.grant)
        if policy is not None:
            out.append(Artifact(f"aws/{r.name}-policy.json", dump_json(policy)))
    return out
