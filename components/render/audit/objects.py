"""The collector's Kubernetes objects: namespace, ServiceAccount, config, DaemonSet, registration."""

from __future__ import annotations

from typing import Any

from components.config import StackConfig
from components.labels import NAME_LABEL, PART_OF_LABEL
from components.platform_model import Platform
from components.render.audit.collector import aws_shared_config, collector_config, spiffe_helper_config
from components.render.audit.common import (
    AWS_CONFIG_FILE,
    COLLECTOR,
    CONFIG_DIR,
    CONFIG_FILE,
    NODE_ENV,
    POD_LOGS,
    PSEUDONYM_ENV,
    SPIFFE_HELPER_FILE,
    SPIRE_API,
    STATE_DIR,
    SVID_DIR,
    WORKLOAD_API_DIR,
    AuditTarget,
    audit_target,
)
from components.render.yamlout import dump_yaml

# --------------------------------------------------------------------------- Kubernetes objects


def _labels() -> dict[str, str]:
    return {NAME_LABEL: COLLECTOR, PART_OF_LABEL: "agent-passport"}


def _meta(cfg: StackConfig, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": cfg.audit.namespace, "labels": _labels(), **extra}


def collector_configmap(platform: Platform, target: AuditTarget) -> dict[str, Any]:
    cfg = platform.config
    data = {CONFIG_FILE: dump_yaml(collector_config(platform, target))}
    if cfg.audit.credentials == "roles-anywhere":
        data[AWS_CONFIG_FILE] = aws_shared_config(target, cfg)
        data[SPIFFE_HELPER_FILE] = spiffe_helper_config()
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(cfg, COLLECTOR), "data": data}


def cluster_spiffe_id(cfg: StackConfig) -> dict[str, Any]:
    """The collector's registration (roles-anywhere): namespace and ServiceAccount from the pod."""
    return {
        "apiVersion": SPIRE_API,
        "kind": "ClusterSPIFFEID",
        "metadata": {"name": f"agentpassport.audit-collector.{cfg.audit.namespace}", "labels": _labels()},
        "spec": {
            "className": cfg.spire.class_name,
            "spiffeIDTemplate": ("spiffe://" + cfg.trust_domain + "/ns/{{ .PodMeta.Namespace }}"
                                 "/sa/{{ .PodSpec.ServiceAccountName }}"),
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cfg.audit.namespace}},
            "podSelector": {"matchLabels": {NAME_LABEL: COLLECTOR}},
        },
    }


def daemonset(platform: Platform, target: AuditTarget, config_hash: str = "") -> dict[str, Any]:
    cfg = platform.config
    a = cfg.audit
    env: list[dict[str, Any]] = [
        {"name": NODE_ENV, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "AWS_REGION", "value": target.region},
    ]
    if a.pseudonym_key_secret:
        env.append({"name": PSEUDONYM_ENV, "valueFrom": {"secretKeyRef": {"name": f"{COLLECTOR}-pseudonym",
                                                                          "key": "key"}}})
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "pod-logs", "mountPath": POD_LOGS, "readOnly": True},
        {"name": "state", "mountPath": STATE_DIR},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": COLLECTOR}},
        {"name": "pod-logs", "hostPath": {"path": POD_LOGS, "type": "Directory"}},
        {"name": "state", "hostPath": {"path": STATE_DIR, "type": "DirectoryOrCreate"}},
    ]
    containers: list[dict[str, Any]] = []
    if a.credentials == "roles-anywhere":
        env.append({"name": "AWS_CONFIG_FILE", "value": f"{CONFIG_DIR}/{AWS_CONFIG_FILE}"})
        mounts.append({"name": "svid", "mountPath": SVID_DIR, "readOnly": True})
        volumes += [
            {"name": "svid", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            {"name": "spiffe-workload-api", "csi": {"driver": "csi.spiffe.io", "readOnly": True}},
        ]
        containers.append({
            "name": "spiffe-helper",
            "image": a.spiffe_helper_image,
            "args": ["-config", f"{CONFIG_DIR}/{SPIFFE_HELPER_FILE}"],
            "volumeMounts": [
                {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                {"name": "svid", "mountPath": SVID_DIR},
                {"name": "spiffe-workload-api", "mountPath": WORKLOAD_API_DIR, "readOnly": True},
            ],
            "securityContext": _restricted(run_as_root=False),
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        })
    collector = {
        "name": "collector",
        "image": a.image,
        "args": [f"--config={CONFIG_DIR}/{CONFIG_FILE}"],
        "env": env,
        "volumeMounts": mounts,
        # reads root-owned 0640 pod logs: root, but no capability, no escalation, read-only root fs
        "securityContext": _restricted(run_as_root=True),
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    }
    containers.insert(0, collector)
    annotations = {"linkerd.io/inject": "disabled"}
    if config_hash:
        annotations["agentpassport.dev/config-hash"] = config_hash
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(cfg, COLLECTOR),
        "spec": {
            "selector": {"matchLabels": {NAME_LABEL: COLLECTOR}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": _labels(), "annotations": annotations},
                "spec": {
                    "serviceAccountName": COLLECTOR,
                    "automountServiceAccountToken": False,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],
                    "containers": containers,
                    "volumes": volumes,
                },
            },
        },
    }


def _restricted(run_as_root: bool) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    ctx |= {"runAsUser": 0, "runAsNonRoot": False} if run_as_root else {"runAsUser": 65532, "runAsNonRoot": True}
    return ctx


def audit_objects(platform: Platform, target: AuditTarget | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object of the pipeline, in apply order."""
    cfg = platform.config
    target = target or audit_target(cfg)
    sa_meta = _meta(cfg, COLLECTOR)
    if cfg.audit.credentials == "irsa":
        sa_meta["annotations"] = {"eks.amazonaws.com/role-arn": target.role_arn}
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": cfg.audit.namespace, "labels": _labels(),
                      "annotations": {"linkerd.io/inject": "disabled"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": sa_meta, "automountServiceAccountToken": False},
        collector_configmap(platform, target),
        daemonset(platform, target),
    ]
    if cfg.audit.credentials == "roles-anywhere":
        objects.insert(0, cluster_spiffe_id(cfg))
    return objects
