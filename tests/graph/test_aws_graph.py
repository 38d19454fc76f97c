"""AwsFederation and AuditTrail in the real program's resource graph (mocks): no IAM user or
access key in any stack, one SPIFFE ID per role trust policy, and an audit bucket that always
has Object Lock in COMPLIANCE mode."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from components.aws import AuditTrail, AuditTrailArgs
from components.config import stack_file, stack_runtime_config
from components.errors import ConfigError, PassportError
from components.mockrun import Captured, Graph, run_program
from components.platform_model import Platform, load_platform

ROOT = Path(__file__).resolve().parents[2]
STACKS = ("dev", "staging", "prod")
FEDERATION = "agentpassport:aws:AwsFederation"
AUDIT = "agentpassport:aws:AuditTrail"
ROLE = "aws:iam/role:Role"
ANCHOR = "aws:rolesanywhere/trustAnchor:TrustAnchor"
PROFILE = "aws:rolesanywhere/profile:Profile"
OIDC = "aws:iam/openIdConnectProvider:OpenIdConnectProvider"
BUCKET = "aws:s3/bucket:Bucket"
FORBIDDEN = {
    "aws:iam/accessKey:AccessKey",
    "aws:iam/user:User",
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    "aws:iam/userLoginProfile:UserLoginProfile",
    "aws:iam/serviceSpecificCredential:ServiceSpecificCredential",
    "aws:iam/signingCertificate:SigningCertificate",
    "aws:iam/sshKey:SshKey",
}


def _one(graph: Graph, type_: str) -> Captured:
    (r,) = graph.of_type(type_)
    return r


def _spiffe_values(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _spiffe_values(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _spiffe_values(v)]
    return [obj] if isinstance(obj, str) and obj.startswith("spiffe://") else []


def _expected_roles(platform: Platform) -> dict[str, str]:
    """IAM role name -> SPIFFE ID for every active agent's aws grant."""
    return {a.identity.aws_role_name(g.role): a.identity.spiffe_id
            for a in platform.active_agents for _, g in a.grants_of("aws")}


@pytest.mark.parametrize("stack", STACKS)
def test_no_iam_user_or_access_key_in_any_stack(stack_graph: Callable[[str], Graph], stack: str) -> None:
    graph = stack_graph(stack)
    assert {r.type for r in graph.resources} & FORBIDDEN == set()
    assert not [r for r in graph.resources if r.type.startswith("aws:iam/user")]


def test_dev_has_no_aws(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("dev")
    assert graph.of_type(FEDERATION) == [] and graph.of_type(AUDIT) == []
    assert [r.type for r in graph.resources if r.type.startswith("aws:")] == []


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_each_role_trusts_exactly_one_spiffe_id(stack_graph: Callable[[str], Graph], stack: str) -> None:
    graph = stack_graph(stack)
    federation = _one(graph, FEDERATION)
    anchor = _one(graph, ANCHOR)
    roles = [r for r in graph.of_type(ROLE) if r.parent == federation.urn]
    # the only other role is the pipeline's own (CiFederation, tests/unit/test_ci.py)
    assert {graph.by_urn(r.parent).type for r in graph.of_type(ROLE) if r not in roles} <= {  # type: ignore[union-attr]
        "agentpassport:ci:CiFederation"}
    expected = _expected_roles(load_platform(stack))
    assert expected  # report-summarizer's reports grant
    assert {r.inputs["name"]: None for r in roles}.keys() == expected.keys()
    for role in roles:
        assert role.parent == federation.urn
        policy = json.loads(role.inputs["assumeRolePolicy"])
        assert _spiffe_values(policy) == [expected[role.inputs["name"]]]
        (statement,) = policy["Statement"]
        assert statement["Principal"] == {"Service": "rolesanywhere.amazonaws.com"}
        assert statement["Action"] == ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"]
        assert statement["Condition"]["ArnEquals"] == {"aws:SourceArn": f"arn:aws:mock:us-east-1:123456789012:"
                                                                        f"trustanchor/{anchor.inputs['name']}"}
        assert statement["Condition"]["StringEquals"] == {"aws:PrincipalTag/x509SAN/URI": expected[role.inputs["name"]]}
        assert role.inputs["maxSessionDuration"] == 3600
        assert anchor.urn in role.dependencies


def test_prod_anchor_is_the_aws_private_ca(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("prod")
    anchor = _one(graph, ANCHOR)
    # the trust domain's CA (Linkerd's anchors are Private CAs of their own in prod)
    pca = graph.named("agent-passport-trust-pca")
    assert pca.type == "aws:acmpca/certificateAuthority:CertificateAuthority"
    assert anchor.inputs["source"] == {"sourceType": "AWS_ACM_PCA", "sourceData": {
        "acmPcaArn": f"arn:aws:mock:us-east-1:123456789012:certificateauthority/{pca.name}"}}
    assert anchor.inputs["enabled"] is True


def test_staging_anchor_is_the_trust_bundle(stack_graph: Callable[[str], Graph]) -> None:
    anchor = _one(stack_graph("staging"), ANCHOR)
    assert anchor.inputs["source"]["sourceType"] == "CERTIFICATE_BUNDLE"
    pem = anchor.inputs["source"]["sourceData"]["x509CertificateData"]
    assert pem.startswith("-----BEGIN CERTIFICATE-----")


def test_profile_bounds_sessions_and_lists_the_roles(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("prod")
    profile = _one(graph, PROFILE)
    assert profile.inputs["durationSeconds"] == 3600
    assert profile.inputs["roleArns"] == ["arn:aws:mock:us-east-1:123456789012:role/report-summarizer-reports"]
    assert profile.inputs["acceptRoleSessionName"] is False
    assert profile.parent == _one(graph, FEDERATION).urn


def test_inline_policy_attached_to_the_role(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("prod")
    (inline,) = graph.of_type("aws:iam/rolePolicy:RolePolicy")
    assert inline.name == "agent-passport-aws-report-summarizer-reports-inline"
    assert inline.inputs["role"] == "agent-passport-aws-report-summarizer-reports-role-id"
    policy = json.loads(inline.inputs["policy"])
    assert [s["Action"] for s in policy["Statement"]] == [["s3:GetObject", "s3:ListBucket"], ["s3:PutObject"]]
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])


def test_audit_bucket_is_worm(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("prod")
    audit = _one(graph, AUDIT)
    root = graph.by_urn(audit.parent)
    assert root is not None and root.type == "agentpassport:index:AgentPassport"
    bucket = _one(graph, BUCKET)
    children = {r.type: r for r in graph.children_of(audit.urn)}
    assert set(children) == {
        BUCKET, "aws:kms/key:Key", "aws:s3/bucketVersioning:BucketVersioning",
        "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "aws:s3/bucketPolicy:BucketPolicy",
    }
    assert bucket.inputs["objectLockEnabled"] is True
    assert bucket.inputs["forceDestroy"] is False
    lock = children["aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration"]
    assert lock.inputs["bucket"] == f"{bucket.name}-id"
    assert lock.inputs["rule"] == {"defaultRetention": {"mode": "COMPLIANCE", "days": 365}}
    versioning = children["aws:s3/bucketVersioning:BucketVersioning"]
    assert versioning.inputs["versioningConfiguration"] == {"status": "Enabled"}
    pab = children["aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"]
    assert [pab.inputs[k] for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                    "restrictPublicBuckets")] == [True, True, True, True]
    key = children["aws:kms/key:Key"]
    assert key.inputs["enableKeyRotation"] is True
    (sse,) = children["aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
                      ].inputs["rules"]
    assert sse["applyServerSideEncryptionByDefault"] == {
        "sseAlgorithm": "aws:kms", "kmsMasterKeyId": f"arn:aws:mock:us-east-1:123456789012:key/{key.name}"}
    policy = json.loads(children["aws:s3/bucketPolicy:BucketPolicy"].inputs["policy"])
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    lifecycle = children["aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"]
    assert lifecycle.inputs["rules"][0]["transitions"] == [{"days": 90, "storageClass": "GLACIER"}]


def test_every_bucket_in_every_stack_has_object_lock(stack_graph: Callable[[str], Graph]) -> None:
    for stack in STACKS:
        graph = stack_graph(stack)
        locks = graph.of_type("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")
        for bucket in graph.of_type(BUCKET) + graph.of_type("aws:s3/bucketV2:BucketV2"):
            assert bucket.inputs.get("objectLockEnabled") is True, (stack, bucket.name)
            assert [lk.inputs["rule"]["defaultRetention"]["mode"] for lk in locks
                    if lk.inputs["bucket"] == f"{bucket.name}-id"] == ["COMPLIANCE"]


def test_audit_trail_cannot_be_built_without_object_lock() -> None:
    platform = load_platform("prod")
    broken_bucket = platform.config.aws.audit_bucket.model_construct(retention_days=0)
    cfg = platform.config.model_copy(update={"aws": platform.config.aws.model_copy(
        update={"audit_bucket": broken_bucket})})
    broken = Platform(platform.stack, cfg, platform.config_file, platform.agents, platform.services)
    with pytest.raises(ConfigError) as err:
        AuditTrailArgs(platform=broken)
    assert err.value.problems[0].field == "agent-passport:aws.auditBucket.retentionDays"
    assert err.value.problems[0].file == "stacks/Pulumi.prod.yaml"
    assert "object_lock" not in AuditTrail.__init__.__code__.co_varnames  # no parameter to turn it off


# --------------------------------------------------------------------------- variants


def _variant(tmp_path: Path, stack: str, agents: list[dict[str, Any]] | None = None, **overrides: Any) -> Graph:
    agents_dir = tmp_path / "agents"
    shutil.copytree(ROOT / "agents", agents_dir)
    for doc in agents or []:
        (agents_dir / f"{doc['metadata']['name']}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    config, secrets = stack_runtime_config(stack_file(stack, ROOT))
    config["agent-passport:agentsDir"] = str(agents_dir)
    for key, value in overrides.items():
        config[f"agent-passport:{key}"] = json.dumps(value)
    return run_program(stack, ROOT, config, secrets)


def test_oidc_federation(tmp_path: Path) -> None:
    aws = {"region": "us-east-1", "federation": "oidc", "auditBucket": {"retentionDays": 400}}
    # the bucket's own retentionDays must agree with audit.retention (the one place it is set)
    graph = _variant(tmp_path, "prod", aws=aws, audit={"retention": "400d"})
    assert graph.of_type(ANCHOR) == [] and graph.of_type(PROFILE) == []
    provider = _one(graph, OIDC)
    assert provider.inputs["url"] == "https://oidc-discovery.prod.agents.acme-corp.net"
    assert provider.inputs["clientIdLists"] == ["sts.amazonaws.com"]
    (role,) = graph.of_type(ROLE)
    (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {"Federated": f"arn:aws:mock:us-east-1:123456789012:"
                                                   f"openidconnectprovider/{provider.name}"}
    assert statement["Condition"] == {"StringEquals": {
        "oidc-discovery.prod.agents.acme-corp.net:sub": "spiffe://prod.agents.acme-corp.net/vm/report-summarizer",
        "oidc-discovery.prod.agents.acme-corp.net:aud": "sts.amazonaws.com"}}
    lock = _one(graph, "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")
    assert lock.inputs["rule"]["defaultRetention"] == {"mode": "COMPLIANCE", "days": 400}


REPORT = yaml.safe_load((ROOT / "agents" / "report-summarizer.yaml").read_text(encoding="utf-8"))


def _report_like(name: str, uid: int) -> dict[str, Any]:
    """A copy of report-summarizer under another name and Unix uid (a copy with the same tags and
    uid would be the same workload to SPIRE, which the platform refuses)."""
    doc: dict[str, Any] = json.loads(json.dumps(REPORT))
    doc["metadata"]["name"] = name
    doc["spec"]["platform"]["vm"]["workloadSelectors"] = [f"unix:uid:{uid}"]
    return doc


def test_suspended_agent_gets_no_role(tmp_path: Path) -> None:
    second = _report_like("report-archiver", 1002)
    second["spec"]["suspended"] = True
    second["spec"]["suspendedReason"] = "INC-12: SVID private key exposed"
    short = _report_like("report-indexer", 1003)
    short["spec"]["grants"][0]["aws"]["sessionDuration"] = "15m"
    graph = _variant(tmp_path, "prod", [second, short])
    names = sorted(r.inputs["name"] for r in graph.of_type(ROLE))
    assert names == ["report-indexer-reports", "report-summarizer-reports"]
    assert not [r for r in graph.resources if "report-archiver" in r.name]
    profiles = {p.inputs["durationSeconds"]: p.inputs["roleArns"] for p in graph.of_type(PROFILE)}
    assert profiles == {
        900: ["arn:aws:mock:us-east-1:123456789012:role/report-indexer-reports"],
        3600: ["arn:aws:mock:us-east-1:123456789012:role/report-summarizer-reports"],
    }


def test_manifest_errors_stop_the_program_before_any_resource(tmp_path: Path) -> None:
    aws = {"region": "us-east-1", "federation": "oidc"}
    no_audience = _report_like("report-mailer", 1004)
    no_audience["spec"]["identity"]["jwtAudiences"] = ["vault"]
    with pytest.raises((pulumi.RunError, PassportError), match=r"report-mailer\.yaml.*jwtAudiences"):
        _variant(tmp_path, "prod", [no_audience], aws=aws)
