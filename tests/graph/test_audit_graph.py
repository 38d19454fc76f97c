"""AuditPipeline in the real program's resource graph (mocks): the collector writes into the stack's
own Object Lock bucket with a role that may only append, and its config holds no key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from components.check import evaluate, policies
from components.config import stack_file, stack_runtime_config
from components.mockrun import Graph, run_program
from components.render.audit import COLLECTOR

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = "agentpassport:audit:AuditPipeline"
ROLE = "aws:iam/role:Role"
POLICY = "aws:iam/rolePolicy:RolePolicy"
PROFILE = "aws:rolesanywhere/profile:Profile"
ASSOCIATION = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
PROVIDER = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC123"


def _prod(**overrides: Any) -> Graph:
    config, secrets = stack_runtime_config(stack_file("prod", ROOT))
    subsystems = json.loads(config["agent-passport:subsystems"])
    config["agent-passport:subsystems"] = json.dumps({**subsystems, "audit": True})
    for key, value in overrides.items():
        config[f"agent-passport:{key}"] = json.dumps(value)
    return run_program("prod", ROOT, config, secrets)


def _collector_role(graph: Graph) -> Any:
    (role,) = [r for r in graph.of_type(ROLE) if r.inputs.get("name") == "agentpassport-prod-audit-collector"]
    return role


def test_irsa_collector_appends_to_the_stacks_own_bucket() -> None:
    graph = _prod(audit={"credentials": "irsa", "eksOidcProviderArn": PROVIDER})
    (pipeline,) = graph.of_type(PIPELINE)
    children = {r.type for r in graph.children_of(pipeline.urn)}
    assert {ROLE, POLICY, "kubernetes:apps/v1:DaemonSet", "kubernetes:core/v1:ConfigMap",
            "kubernetes:core/v1:ServiceAccount", "kubernetes:core/v1:Namespace"} <= children
    assert PROFILE not in children and ASSOCIATION not in children
    role = _collector_role(graph)
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Federated": PROVIDER}
    (inline,) = [p for p in graph.of_type(POLICY) if p.inputs.get("name") == "agentpassport-audit-write"]
    statements = json.loads(inline.inputs["policy"])["Statement"]
    assert [s["Action"] for s in statements] == [["s3:PutObject"], ["kms:GenerateDataKey"], ["kms:Decrypt"]]
    assert statements[2]["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
    bucket = statements[0]["Resource"][0]
    assert bucket.startswith("arn:aws:s3:::") and bucket.endswith("/agentpassport/prod/*")
    (cm,) = [r for r in graph.of_type("kubernetes:core/v1:ConfigMap")
             if r.inputs["metadata"]["name"] == COLLECTOR]
    conf = yaml.safe_load(cm.inputs["data"]["config.yaml"])
    uploader = conf["exporters"]["awss3/worm"]["s3uploader"]
    assert uploader["s3_bucket"] not in ("", "{{auditBucket}}")  # the AuditTrail's bucket, resolved
    assert "access_key" not in uploader
    (sa,) = [r for r in graph.of_type("kubernetes:core/v1:ServiceAccount")
             if r.inputs["metadata"]["name"] == COLLECTOR]
    assert sa.inputs["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(
        ":role/agentpassport-prod-audit-collector")  # the created role (mock ARN)
    violations = [v for v in evaluate(graph, {}, policies()) if v.policy.name == "audit-collector-no-keys"]
    assert violations == []


def test_pod_identity_adds_the_association_and_roles_anywhere_a_profile() -> None:
    graph = _prod(audit={"credentials": "pod-identity", "eksClusterName": "prod-eks"})
    (assoc,) = graph.of_type(ASSOCIATION)
    assert assoc.inputs["serviceAccount"] == COLLECTOR and assoc.inputs["clusterName"] == "prod-eks"
    trust = json.loads(_collector_role(graph).inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}

    graph = _prod(audit={"credentials": "roles-anywhere", "image": "registry.acme/otelcol-audit:0.165.0"})
    profiles = [p for p in graph.of_type(PROFILE) if p.inputs.get("name") == "agentpassport-prod-audit-collector"]
    assert len(profiles) == 1 and profiles[0].inputs["durationSeconds"] == 3600
    trust = json.loads(_collector_role(graph).inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Condition"]["StringEquals"] == {
        "aws:PrincipalTag/x509SAN/URI":
            "spiffe://prod.agents.acme-corp.net/ns/agentpassport-audit/sa/agentpassport-audit-collector"}
    registrations = [r for r in graph.of_type("kubernetes:spire.spiffe.io/v1alpha1:ClusterSPIFFEID")
                     if r.inputs["metadata"]["name"].startswith("agentpassport.audit-collector")]
    assert len(registrations) == 1
    # the whole pack on the stack with the collector: nothing about it (its SPIFFE ID is its own,
    # its pods mount no token)
    about = [v for v in evaluate(graph, {}, policies()) if "audit" in f"{v.urn} {v.message}"]
    assert about == []


def test_cloudtrail_into_the_same_bucket_under_its_own_prefix() -> None:
    irsa = {"credentials": "irsa", "eksOidcProviderArn": PROVIDER}
    graph = _prod(audit={**irsa, "cloudTrail": True})
    (trail,) = graph.of_type("aws:cloudtrail/trail:Trail")
    assert trail.inputs["s3KeyPrefix"] == "cloudtrail" and trail.inputs["name"] == "agentpassport-prod"
    assert trail.inputs["isMultiRegionTrail"] and trail.inputs["includeGlobalServiceEvents"]
    assert trail.inputs["enableLogFileValidation"]
    (bucket,) = graph.of_type("aws:s3/bucket:Bucket")
    assert trail.inputs["s3BucketName"] == f"{bucket.name}-id"
    (policy,) = graph.of_type("aws:s3/bucketPolicy:BucketPolicy")
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    write = statements["CloudTrailWrite"]
    assert write["Principal"] == {"Service": "cloudtrail.amazonaws.com"}
    assert write["Resource"].endswith("/cloudtrail/AWSLogs/123456789012/*")
    assert write["Condition"]["StringEquals"]["aws:SourceArn"] == (
        "arn:aws:cloudtrail:us-east-1:123456789012:trail/agentpassport-prod")
    assert {"DenyInsecureTransport", "DenyOtherEncryption", "DenyOtherKmsKey"} <= set(statements)
    (key_policy,) = graph.of_type("aws:kms/keyPolicy:KeyPolicy")
    sids = [s["Sid"] for s in json.loads(key_policy.inputs["policy"])["Statement"]]
    assert sids == ["AccountAdministersThroughIam", "CloudTrailEncrypts"]
    assert _prod(audit=irsa).of_type("aws:cloudtrail/trail:Trail") == []  # off by default
