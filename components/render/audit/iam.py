"""The collector's IAM role: append-only permissions, one trusted principal per credential kind."""

from __future__ import annotations

from typing import Any

from components.config import StackConfig
from components.render.audit.common import COLLECTOR
from components.render.aws import POLICY_VERSION, issuer_condition_prefix, roles_anywhere_trust_policy

# --------------------------------------------------------------------------- identity and IAM


def collector_spiffe_id(cfg: StackConfig) -> str:
    """The collector's own SPIFFE ID (roles-anywhere): one registration, like any agent."""
    return f"spiffe://{cfg.trust_domain}/ns/{cfg.audit.namespace}/sa/{COLLECTOR}"


def collector_role_name(stack: str) -> str:
    return f"agentpassport-{stack}-audit-collector"[:64]


def collector_policy(bucket: str, prefix: str, stack: str, kms_key_arn: str | None, region: str) -> dict[str, Any]:
    """Append-only: PutObject under the stack's prefix, nothing else (no read, delete, retention
    or governance bypass).

    With the bucket's KMS key: kms:GenerateDataKey for every object, and kms:Decrypt, which S3
    asks for on the caller's behalf in a multipart upload (the exporter's uploader splits objects
    above 8 MiB: each part is encrypted under the data key S3 decrypts again). Both only through
    S3 in the bucket's region (kms:ViaService), so the role cannot decrypt anything directly.
    """
    statements: list[dict[str, Any]] = [{
        "Sid": "WriteAuditObjects",
        "Effect": "Allow",
        "Action": ["s3:PutObject"],
        "Resource": [f"arn:aws:s3:::{bucket}/{prefix}/{stack}/*"],
    }]
    if kms_key_arn is not None:
        via_s3 = {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}
        statements.append({"Sid": "EncryptWithAuditKey", "Effect": "Allow",
                           "Action": ["kms:GenerateDataKey"], "Resource": [kms_key_arn]})
        statements.append({"Sid": "MultipartUploadWithAuditKey", "Effect": "Allow",
                           "Action": ["kms:Decrypt"], "Resource": [kms_key_arn], "Condition": via_s3})
    return {"Version": POLICY_VERSION, "Statement": statements}


def irsa_trust_policy(provider_arn: str, namespace: str) -> dict[str, Any]:
    issuer = issuer_condition_prefix("https://" + provider_arn.split(":oidc-provider/", 1)[1])
    return {
        "Version": POLICY_VERSION,
        "Statement": [{
            "Sid": "AgentPassportAuditIrsa",
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {f"{issuer}:sub": f"system:serviceaccount:{namespace}:{COLLECTOR}",
                                           f"{issuer}:aud": "sts.amazonaws.com"}},
        }],
    }


def pod_identity_trust_policy(cluster: str, namespace: str) -> dict[str, Any]:
    return {
        "Version": POLICY_VERSION,
        "Statement": [{
            "Sid": "AgentPassportAuditPodIdentity",
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": {"StringEquals": {"aws:RequestTag/eks-cluster-name": cluster,
                                           "aws:RequestTag/kubernetes-namespace": namespace,
                                           "aws:RequestTag/kubernetes-service-account": COLLECTOR}},
        }],
    }


def collector_trust_policy(cfg: StackConfig, trust_anchor_arn: str) -> dict[str, Any]:
    a = cfg.audit
    if a.credentials == "irsa":
        assert a.eks_oidc_provider_arn is not None
        return irsa_trust_policy(a.eks_oidc_provider_arn, a.namespace)
    if a.credentials == "pod-identity":
        assert a.eks_cluster_name is not None
        return pod_identity_trust_policy(a.eks_cluster_name, a.namespace)
    return roles_anywhere_trust_policy(collector_spiffe_id(cfg), trust_anchor_arn)
