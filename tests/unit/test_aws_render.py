"""Pure tests of the AWS renderer: trust policies (one SPIFFE ID each), inline policies,
session bounds, the audit bucket's Object Lock, lifecycle and policy, and the artifacts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.config.aws import AuditBucketConfig
from components.errors import ConfigError, ManifestError
from components.platform_model import Platform, ResolvedAgent, load_platform
from components.render.aws import (
    OIDC_PROVIDER_PLACEHOLDER,
    TRUST_ANCHOR_PLACEHOLDER,
    AwsRole,
    audit_bucket_policy,
    audit_lifecycle_rules,
    audit_object_lock_rule,
    aws_artifacts,
    aws_problems,
    aws_roles,
    inline_policy,
    issuer_condition_prefix,
    policy_attachment_key,
    profile_durations,
    roles_anywhere_trust_policy,
    trust_policy,
    validate_aws,
    web_identity_trust_policy,
)

SPIFFE = "spiffe://prod.agents.acme-corp.net/vm/report-summarizer"
ANCHOR = "arn:aws:rolesanywhere:us-east-1:111122223333:trust-anchor/0f1e2d3c"


@pytest.fixture(scope="module")
def prod() -> Platform:
    return load_platform("prod")


def _with_config(platform: Platform, **aws: Any) -> Platform:
    cfg = platform.config.model_copy(update={"aws": platform.config.aws.model_copy(update=aws)})
    return Platform(platform.stack, cfg, platform.config_file, platform.agents, platform.services)


def _with_agent(platform: Platform, agent: ResolvedAgent) -> Platform:
    agents = (*tuple(a for a in platform.agents if a.name != agent.name), agent)
    return Platform(platform.stack, platform.config, platform.config_file, agents, platform.services)


def _modified(agent: ResolvedAgent, name: str | None = None, **spec: Any) -> ResolvedAgent:
    m = agent.manifest
    m = m.model_copy(update={"spec": m.spec.model_copy(update=spec)})
    ident = agent.identity
    if name is not None:
        m = m.model_copy(update={"metadata": m.metadata.model_copy(update={"name": name})})
        ident = type(ident)(**{**ident.__dict__, "name": name, "spiffe_path": f"/vm/{name}"})
    source = type(agent.source)(f"agents/{m.metadata.name}.yaml", 1, {}, manifest=m)
    return ResolvedAgent(source, ident)


def _values(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _values(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _values(v)]
    return [obj] if isinstance(obj, str) else []


def test_roles_anywhere_trust_policy_exact() -> None:
    assert roles_anywhere_trust_policy(SPIFFE, ANCHOR) == {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AgentPassportRolesAnywhere",
            "Effect": "Allow",
            "Principal": {"Service": "rolesanywhere.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"],
            "Condition": {
                "StringEquals": {"aws:PrincipalTag/x509SAN/URI": SPIFFE},
                "ArnEquals": {"aws:SourceArn": ANCHOR},
            },
        }],
    }


def test_web_identity_trust_policy_exact() -> None:
    provider = "arn:aws:iam::111122223333:oidc-provider/oidc-discovery.prod.agents.acme-corp.net"
    policy = web_identity_trust_policy(SPIFFE, provider, "https://oidc-discovery.prod.agents.acme-corp.net/",
                                       "sts.amazonaws.com")
    assert policy["Statement"] == [{
        "Sid": "AgentPassportWebIdentity",
        "Effect": "Allow",
        "Principal": {"Federated": provider},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {
            "oidc-discovery.prod.agents.acme-corp.net:sub": SPIFFE,
            "oidc-discovery.prod.agents.acme-corp.net:aud": "sts.amazonaws.com",
        }},
    }]


def test_issuer_condition_prefix_keeps_paths() -> None:
    assert issuer_condition_prefix("https://issuer.example.net/spire/") == "issuer.example.net/spire"
    assert issuer_condition_prefix("https://issuer.example.net") == "issuer.example.net"


def test_each_role_trusts_exactly_its_agents_spiffe_id(prod: Platform) -> None:
    (role,) = aws_roles(prod)
    assert role.name == "report-summarizer-reports"
    assert role.spiffe_id == SPIFFE
    for federation, principal in (("roles-anywhere", ANCHOR), ("oidc", "arn:aws:iam::1:oidc-provider/x")):
        platform = _with_config(prod, federation=federation)
        policy = trust_policy(role, platform.config, principal)
        assert [v for v in _values(policy) if v.startswith("spiffe://")] == [SPIFFE]
        assert len(policy["Statement"]) == 1
        assert policy["Statement"][0]["Effect"] == "Allow"


def test_inline_policy_from_statements(prod: Platform) -> None:
    (role,) = aws_roles(prod)
    assert inline_policy(role.grant) == {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Grant0", "Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
             "Resource": ["arn:aws:s3:::acme-nightly-reports", "arn:aws:s3:::acme-nightly-reports/*"]},
            {"Sid": "Grant1", "Effect": "Allow", "Action": ["s3:PutObject"],
             "Resource": ["arn:aws:s3:::acme-nightly-reports/summaries/*"]},
        ],
    }
    assert inline_policy(role.grant.model_copy(update={"statements": []})) is None


def test_session_bounds(prod: Platform) -> None:
    (role,) = aws_roles(prod)
    assert role.session_seconds == 3600 and role.max_session_duration == 3600
    short = AwsRole(role.agent, role.index, role.grant.model_copy(update={"session_duration": "15m"}))
    assert short.session_seconds == 900
    assert short.max_session_duration == 3600  # IAM's floor; the profile bounds the session to 15m
    groups = profile_durations([role, short])
    assert list(groups) == [900, 3600]
    assert groups[900] == [short] and groups[3600] == [role]


def test_policy_attachment_key() -> None:
    assert policy_attachment_key("arn:aws:iam::aws:policy/ReadOnlyAccess") == "readonlyaccess"
    assert policy_attachment_key("arn:aws:iam::111122223333:policy/team/Reports_Reader") == "team-reports-reader"


def test_suspended_agents_get_no_role(prod: Platform) -> None:
    agent = prod.agent("report-summarizer")
    assert agent is not None
    suspended = _modified(agent, suspended=True, suspended_reason="INC-9: leaked SVID")
    assert aws_roles(_with_agent(prod, suspended)) == []


def test_oidc_requires_the_aws_audience(prod: Platform) -> None:
    agent = prod.agent("report-summarizer")
    assert agent is not None
    ident = type(agent.identity)(**{**agent.identity.__dict__, "jwt_audiences": ("vault",)})
    platform = _with_config(_with_agent(prod, ResolvedAgent(agent.source, ident)), federation="oidc")
    (problem,) = aws_problems(platform)
    assert problem.file == "agents/report-summarizer.yaml"
    assert problem.field == "spec.identity.jwtAudiences"
    assert problem.line is not None
    assert "sts.amazonaws.com" in problem.message
    with pytest.raises(ManifestError):
        validate_aws(platform)
    # roles-anywhere does not use JWT audiences
    assert aws_problems(_with_config(platform, federation="roles-anywhere")) == []


def test_colliding_role_names_are_refused(prod: Platform) -> None:
    agent = prod.agent("report-summarizer")
    assert agent is not None
    twin = _modified(agent, name="report")
    twin_grants = [g.model_copy(update={"aws": g.aws.model_copy(update={"role": "summarizer-reports"})})
                   for g in twin.manifest.spec.grants if g.aws is not None]
    twin = _modified(twin, grants=twin_grants)
    problems = aws_problems(_with_agent(prod, twin))
    assert [(p.field, "report-summarizer-reports" in p.message) for p in problems] == [
        ("spec.grants[0].aws.role", True)]


def test_audit_object_lock_is_compliance_and_never_off() -> None:
    assert audit_object_lock_rule(AuditBucketConfig()) == {"default_retention": {"mode": "COMPLIANCE", "days": 365}}
    assert audit_object_lock_rule(AuditBucketConfig(retention_days=2555))["default_retention"]["days"] == 2555
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        AuditBucketConfig(retention_days=0)
    with pytest.raises(ConfigError) as err:
        audit_object_lock_rule(AuditBucketConfig.model_construct(retention_days=0), "stacks/Pulumi.prod.yaml")
    assert err.value.problems[0].field == "agent-passport:aws.auditBucket.retentionDays"
    assert "objectLock" not in " ".join(AuditBucketConfig.model_fields)  # no switch to turn it off
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        AuditBucketConfig.model_validate({"objectLockEnabled": False})


def test_audit_bucket_policy_denies_insecure_transport_and_other_encryption() -> None:
    bucket = "arn:aws:s3:::agentpassport-audit-x"
    key = "arn:aws:kms:us-east-1:111122223333:key/abc"
    policy = audit_bucket_policy(bucket, key)
    deny_tls, deny_sse, deny_key = policy["Statement"]
    assert deny_tls == {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                        "Resource": [bucket, f"{bucket}/*"],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    # an upload naming another encryption or key is denied; one naming none gets the bucket default
    # (SSE-KMS with our key): the collector's awss3exporter sends no encryption header
    assert deny_sse["Condition"] == {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"},
                                     "Null": {"s3:x-amz-server-side-encryption": "false"}}
    assert deny_key["Condition"] == {
        "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": key},
        "Null": {"s3:x-amz-server-side-encryption-aws-kms-key-id": "false"}}
    assert all(s["Effect"] == "Deny" for s in policy["Statement"])


def test_audit_lifecycle_moves_to_glacier_and_deletes_after_retention() -> None:
    rules = audit_lifecycle_rules(AuditBucketConfig(transition_to_glacier_days=30), 365)
    retention, markers, uploads = rules
    assert retention["transitions"] == [{"days": 30, "storage_class": "GLACIER"}]
    # the GDPR half: deleted once the Object Lock retention is over, never before (S3 refuses that)
    assert retention["expiration"] == {"days": 365}
    assert retention["noncurrent_version_expiration"] == {"noncurrent_days": 1}
    assert markers["expiration"] == {"expired_object_delete_marker": True}
    assert uploads["abort_incomplete_multipart_upload"] == {"days_after_initiation": 7}
    assert all(r["status"] == "Enabled" and r["filter"] == {"prefix": ""} for r in rules)
    # the bucket's own retentionDays wins when set; no Glacier transition at or past deletion
    short = audit_lifecycle_rules(AuditBucketConfig(retention_days=60), 365)[0]
    assert short["expiration"] == {"days": 60} and "transitions" not in short
    assert audit_object_lock_rule(AuditBucketConfig(), "", 400)["default_retention"]["days"] == 400


def test_artifacts(prod: Platform) -> None:
    arts = {a.path: a.content for a in aws_artifacts(prod)}
    assert sorted(arts) == ["aws/report-summarizer-reports-policy.json",
                            "aws/report-summarizer-reports-trust-policy.json"]
    trust = json.loads(arts["aws/report-summarizer-reports-trust-policy.json"])
    assert trust == roles_anywhere_trust_policy(SPIFFE, TRUST_ANCHOR_PLACEHOLDER)
    oidc = {a.path: a.content for a in aws_artifacts(_with_config(prod, federation="oidc"))}
    assert OIDC_PROVIDER_PLACEHOLDER in oidc["aws/report-summarizer-reports-trust-policy.json"]
    assert list(aws_artifacts(load_platform("dev"))) == []  # dev has no AWS
