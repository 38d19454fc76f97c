"""The SPIRE agents' Kubernetes objects: the DaemonSet, its RBAC and config, and the SPIFFE CSI driver."""

from __future__ import annotations

from typing import Any

from components.capacity import agent_rollout, estimate
from components.labels import NAME_LABEL
from components.platform_model import Platform
from components.render.spire.agent_conf import agent_config
from components.render.spire.names import (
    AGENT,
    AGENT_BUNDLE_DIR,
    AGENT_CONFIG_DIR,
    AGENT_DATA_DIR,
    AGENT_HEALTH_PORT,
    AGENT_METRICS_PORT,
    AGENT_TOKEN_AUDIENCE,
    AGENT_TOKEN_DIR,
    BUNDLE_CONFIGMAP,
    CSI_DAEMONSET,
    CSI_DRIVER,
    SOCKET_DIR,
    _configmap,
    _image,
    _labels,
    _meta,
    _probe,
)
from components.render.yamlout import dump_json


def agent_objects(platform: Platform) -> list[dict[str, Any]]:
    """Agent DaemonSet + RBAC + config, and the SPIFFE CSI driver (csi.spiffe.io)."""
    cfg = platform.config
    sp = cfg.spire
    ns = sp.namespace
    sel = {NAME_LABEL: AGENT}
    csi_sel = {NAME_LABEL: CSI_DAEMONSET}
    node_name = {"name": "MY_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    # a restarted agent has its node's SVIDs all signed again: roll as many nodes at a time as
    # the servers re-sign within the cold-start threshold, spaced by the time one node takes
    rollout = agent_rollout(estimate(platform))
    agent_ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(AGENT, ns, AGENT),
        "spec": {
            "selector": {"matchLabels": sel},
            "updateStrategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"maxUnavailable": rollout.max_unavailable}},
            "minReadySeconds": rollout.min_ready_seconds,
            "template": {
                "metadata": {"labels": _labels(AGENT)},
                "spec": {
                    "serviceAccountName": AGENT,
                    "hostPID": True,  # the k8s workload attestor resolves callers' PIDs to pods
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [
                        {
                            "name": AGENT,
                            "image": _image(AGENT, sp.version),
                            "args": ["-config", f"{AGENT_CONFIG_DIR}/agent.conf"],
                            "env": [node_name],
                            "ports": [
                                {"name": "health", "containerPort": AGENT_HEALTH_PORT},
                                {"name": "metrics", "containerPort": AGENT_METRICS_PORT},
                            ],
                            "livenessProbe": _probe("/live", "health", 15),
                            "readinessProbe": _probe("/ready", "health"),
                            "volumeMounts": [
                                {"name": "config", "mountPath": AGENT_CONFIG_DIR, "readOnly": True},
                                {"name": "bundle", "mountPath": AGENT_BUNDLE_DIR, "readOnly": True},
                                {"name": "token", "mountPath": AGENT_TOKEN_DIR, "readOnly": True},
                                {"name": "data", "mountPath": AGENT_DATA_DIR},
                                {"name": "sockets", "mountPath": SOCKET_DIR},
                            ],
                            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
                        }
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": AGENT}},
                        {"name": "bundle", "configMap": {"name": BUNDLE_CONFIGMAP}},
                        {
                            "name": "token",
                            "projected": {
                                "sources": [
                                    {
                                        "serviceAccountToken": {
                                            "path": AGENT_TOKEN_AUDIENCE,
                                            "audience": AGENT_TOKEN_AUDIENCE,
                                            "expirationSeconds": 7200,
                                        }
                                    }
                                ]
                            },
                        },
                        {"name": "data", "emptyDir": {}},
                        {"name": "sockets", "hostPath": {"path": SOCKET_DIR, "type": "DirectoryOrCreate"}},
                    ],
                },
            },
        },
    }
    csi_ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(CSI_DAEMONSET, ns, CSI_DAEMONSET),
        "spec": {
            "selector": {"matchLabels": csi_sel},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": _labels(CSI_DAEMONSET)},
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [
                        {
                            "name": CSI_DAEMONSET,
                            "image": _image(CSI_DAEMONSET, sp.csi_driver_version),
                            "args": [
                                "-workload-api-socket-dir",
                                "/spire-agent-socket",
                                "-plugin-name",
                                CSI_DRIVER,
                                "-csi-socket-path",
                                "/spiffe-csi/csi.sock",
                            ],
                            "env": [node_name],
                            "volumeMounts": [
                                {"name": "sockets", "mountPath": "/spire-agent-socket", "readOnly": True},
                                {"name": "csi-socket-dir", "mountPath": "/spiffe-csi"},
                                {
                                    "name": "mountpoint-dir",
                                    "mountPath": "/var/lib/kubelet/pods",
                                    "mountPropagation": "Bidirectional",
                                },
                            ],
                            # Bidirectional mount propagation requires a privileged container.
                            "securityContext": {"privileged": True, "readOnlyRootFilesystem": True},
                        },
                        {
                            "name": "node-driver-registrar",
                            "image": _image("node-driver-registrar", sp.node_driver_registrar_version),
                            "args": [
                                "-csi-address",
                                "/spiffe-csi/csi.sock",
                                "-kubelet-registration-path",
                                f"/var/lib/kubelet/plugins/{CSI_DRIVER}/csi.sock",
                            ],
                            "volumeMounts": [
                                {"name": "csi-socket-dir", "mountPath": "/spiffe-csi"},
                                {"name": "kubelet-plugin-registration-dir", "mountPath": "/registration"},
                            ],
                            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
                        },
                    ],
                    "volumes": [
                        {"name": "sockets", "hostPath": {"path": SOCKET_DIR, "type": "DirectoryOrCreate"}},
                        {
                            "name": "csi-socket-dir",
                            "hostPath": {"path": f"/var/lib/kubelet/plugins/{CSI_DRIVER}", "type": "DirectoryOrCreate"},
                        },
                        {"name": "mountpoint-dir", "hostPath": {"path": "/var/lib/kubelet/pods", "type": "Directory"}},
                        {
                            "name": "kubelet-plugin-registration-dir",
                            "hostPath": {"path": "/var/lib/kubelet/plugins_registry", "type": "Directory"},
                        },
                    ],
                },
            },
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(AGENT, ns, AGENT)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(f"{ns}-{AGENT}", None, AGENT),
            "rules": [{"apiGroups": [""], "resources": ["pods", "nodes", "nodes/proxy"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(f"{ns}-{AGENT}", None, AGENT),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{ns}-{AGENT}"},
            "subjects": [{"kind": "ServiceAccount", "name": AGENT, "namespace": ns}],
        },
        _configmap(AGENT, ns, AGENT, {"agent.conf": dump_json(agent_config(platform))}),
        agent_ds,
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "CSIDriver",
            "metadata": _meta(CSI_DRIVER, None, CSI_DAEMONSET),
            "spec": {
                "attachRequired": False,
                "podInfoOnMount": True,
                "fsGroupPolicy": "None",
                "volumeLifecycleModes": ["Ephemeral"],
            },
        },
        csi_ds,
    ]
