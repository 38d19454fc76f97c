"""AuditPipeline: the collector DaemonSet that ships audit logs into the WORM bucket, and its AWS role.

Registers, from the pure :mod:`components.render.audit`:

* with ``subsystems.aws`` and no ``audit.roleArn``: the collector's IAM role, allowed only
  ``s3:PutObject`` under ``<prefix>/<stack>/`` of the bucket (and the audit KMS key), trusting
  IRSA (the cluster's OIDC provider, the collector's ServiceAccount), EKS Pod Identity (plus the
  association) or IAM Roles Anywhere (the stack's trust anchor, the collector's SPIFFE ID; plus a
  one-hour profile);
* the Kubernetes objects: the namespace, the ServiceAccount, the collector config, the DaemonSet
  and, for roles-anywhere, the collector's own ClusterSPIFFEID.

No access key is created or read anywhere; the policy pack refuses a collector config with one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi

from components.kube import kube_objects
from components.platform_model import Platform
from components.render.audit import (
    COLLECTOR,
    AuditTarget,
    audit_objects,
    collector_configmap,
    collector_policy,
    collector_role_name,
    collector_trust_policy,
)


@dataclass(frozen=True)
class AuditPipelineArgs:
    """Inputs of :class:`AuditPipeline`."""

    platform: Platform
    """The validated platform; its ``audit`` section decides everything."""

    target: AuditTarget
    """The compiled target (``Plans.audit``): what config says, placeholders for what is created here."""

    bucket_name: pulumi.Input[str] | None = None
    """The stack's Object Lock bucket (AuditTrail); None: ``audit.bucket``."""

    kms_key_arn: pulumi.Input[str] | None = None
    """The bucket's KMS key (AuditTrail), for the role's kms:GenerateDataKey and kms:Decrypt (through S3)."""

    trust_anchor_arn: pulumi.Input[str] | None = None
    """The stack's Roles Anywhere trust anchor (AwsFederation); None: ``audit.trustAnchorArn``."""


class AuditPipeline(pulumi.ComponentResource):
    """OpenTelemetry Collector DaemonSet -> ECS documents -> S3 Object Lock, with no static key."""

    role_arn: pulumi.Output[str]
    """The role the collector's sessions are for."""

    bucket: pulumi.Output[str]
    """Where the documents land."""

    prefix: pulumi.Output[str]
    """Key prefix of this stack's documents (``<prefix>/<stack>/``)."""

    def __init__(self, name: str, args: AuditPipelineArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:audit:AuditPipeline", name, None, opts)
        platform = args.platform
        cfg = platform.config
        a = cfg.audit
        child = pulumi.ResourceOptions(parent=self)
        static = args.target
        bucket = pulumi.Output.from_input(args.bucket_name if args.bucket_name is not None else static.bucket)
        key: pulumi.Output[str | None] = pulumi.Output.from_input(args.kms_key_arn)
        anchor = pulumi.Output.from_input(
            a.trust_anchor_arn if a.trust_anchor_arn is not None
            else args.trust_anchor_arn if args.trust_anchor_arn is not None else static.trust_anchor_arn or "")
        role_arn: pulumi.Output[str]
        profile_arn: pulumi.Output[str] = pulumi.Output.from_input(a.profile_arn or "")
        if a.role_arn is not None:
            role_arn = pulumi.Output.from_input(a.role_arn)
        else:
            role_arn, created_profile = self._role(name, platform, bucket, key, anchor, static.region, child)
            if created_profile is not None and a.profile_arn is None:
                profile_arn = created_profile

        def target(v: list[Any]) -> AuditTarget:
            return AuditTarget(bucket=v[0], region=static.region, kms_key_arn=v[1], role_arn=v[2],
                               trust_anchor_arn=v[3], profile_arn=v[4])

        resolved = pulumi.Output.all(bucket, key, role_arn, anchor, profile_arn).apply(target)
        objects = audit_objects(platform, static)
        for obj in objects:
            if obj["kind"] == "ConfigMap":
                obj["data"] = resolved.apply(lambda t: collector_configmap(platform, t)["data"])
            elif obj["kind"] == "ServiceAccount" and a.credentials == "irsa":
                obj["metadata"]["annotations"] = {"eks.amazonaws.com/role-arn": role_arn}
            elif obj["kind"] == "DaemonSet":
                # a new config rolls the pods (the collector reads its config only at start)
                pod_meta = obj["spec"]["template"]["metadata"]
                pod_meta["annotations"] = {**pod_meta["annotations"], "agentpassport.dev/config-hash": resolved.apply(
                    lambda t: hashlib.sha256(json.dumps(collector_configmap(platform, t)["data"],
                                                        sort_keys=True).encode()).hexdigest()[:16])}
        self.resources = kube_objects(name, objects, self)
        self.role_arn = role_arn
        self.bucket = bucket
        self.prefix = pulumi.Output.from_input(f"{a.prefix}/{platform.stack}/")
        self.register_outputs({"roleArn": self.role_arn, "bucket": self.bucket, "prefix": self.prefix})

    def _role(self, name: str, platform: Platform, bucket: pulumi.Output[str], key: pulumi.Output[str | None],
              anchor: pulumi.Output[str], region: str,
              child: pulumi.ResourceOptions) -> tuple[pulumi.Output[str], pulumi.Output[str] | None]:
        from pulumi_aws import eks, iam, rolesanywhere

        cfg = platform.config
        a = cfg.audit
        tags = {"agentpassport:stack": platform.stack, "agentpassport:purpose": "audit-collector"}
        role = iam.Role(
            f"{name}-role",
            name=collector_role_name(platform.stack),
            description=f"Agent Passport audit collector ({platform.stack}): writes audit logs, nothing else",
            assume_role_policy=anchor.apply(lambda arn: json.dumps(collector_trust_policy(cfg, arn), sort_keys=True)),
            max_session_duration=3600,
            force_detach_policies=True,
            tags=tags,
            opts=child,
        )
        iam.RolePolicy(
            f"{name}-role-inline",
            name="agentpassport-audit-write",
            role=role.id,
            policy=pulumi.Output.all(bucket, key).apply(
                lambda v: json.dumps(collector_policy(v[0], a.prefix, platform.stack, v[1], region), sort_keys=True)),
            opts=child,
        )
        profile_arn: pulumi.Output[str] | None = None
        if a.credentials == "roles-anywhere" and a.profile_arn is None:
            profile = rolesanywhere.Profile(
                f"{name}-profile",
                name=f"agentpassport-{platform.stack}-audit-collector",
                enabled=True,
                duration_seconds=3600,
                accept_role_session_name=False,
                role_arns=[role.arn],
                tags=tags,
                opts=child,
            )
            profile_arn = profile.arn
        if a.credentials == "pod-identity":
            assert a.eks_cluster_name is not None
            eks.PodIdentityAssociation(
                f"{name}-pod-identity",
                cluster_name=a.eks_cluster_name,
                namespace=a.namespace,
                service_account=COLLECTOR,
                role_arn=role.arn,
                tags=tags,
                opts=child,
            )
        return role.arn, profile_arn
