"""The SPIRE server's Kubernetes objects: namespace, RBAC, config, the server workload (+ controller
manager), the OIDC discovery provider and the webhook.
"""

from __future__ import annotations

from typing import Any

from components.labels import MANAGED_BY, NAME_LABEL
from components.platform_model import Platform
from components.render.spire.names import (
    _RESTRICTED,
    BUNDLE_CONFIGMAP,
    CONTROLLER,
    CONTROLLER_CONFIG_DIR,
    CONTROLLER_CONFIG_FILE,
    CONTROLLER_HEALTH_PORT,
    CRD_GROUP,
    CRD_VERSION,
    CSI_DRIVER,
    DATASTORE_SECRET,
    DB_CONNECTION_ENV,
    OIDC,
    OIDC_HEALTH_PORT,
    OIDC_PORT,
    PCA_ARN_ENV,
    SERVER,
    SERVER_CONFIG_DIR,
    SERVER_DATA_DIR,
    SERVER_HEALTH_PORT,
    SERVER_METRICS_PORT,
    SERVER_PORT,
    SERVER_SOCKET_DIR,
    SOCKET_DIR,
    UPSTREAM_CONFIGMAP,
    UPSTREAM_DIR,
    UPSTREAM_KEY_SECRET,
    VAULT_TOKEN_AUDIENCE,
    VAULT_TOKEN_DIR,
    WEBHOOK,
    WEBHOOK_PORT,
    _configmap,
    _image,
    _labels,
    _meta,
    _probe,
    needs_expand_env,
)
from components.render.spire.server_conf import controller_manager_config, oidc_config, server_config
from components.render.yamlout import dump_json, dump_yaml


def server_objects(platform: Platform) -> list[dict[str, Any]]:
    """Namespace, RBAC, ConfigMaps, Services, the server workload (+ controller manager) and OIDC.

    Objects holding deploy-time values (upstream key/chain, PCA ARN, DB connection string)
    are built by :func:`upstream_objects` / the component, not here.
    """
    cfg = platform.config
    sp = cfg.spire
    ns = sp.namespace
    sel = {NAME_LABEL: SERVER}
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": {**MANAGED_BY, "pod-security.kubernetes.io/enforce": "privileged"}},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(SERVER, ns, SERVER)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(f"{ns}-{SERVER}", None, SERVER),
            "rules": [
                # k8s_psat: TokenReview of agent tokens, node and pod lookups for selectors
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["get"]},
                # spire-controller-manager (sidecar, same ServiceAccount)
                {
                    "apiGroups": [""],
                    "resources": ["namespaces", "nodes", "pods", "endpoints"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["admissionregistration.k8s.io"],
                    "resources": ["validatingwebhookconfigurations"],
                    "verbs": ["get", "list", "patch", "watch"],
                },
                {
                    "apiGroups": [CRD_GROUP],
                    "resources": ["clusterfederatedtrustdomains", "clusterspiffeids", "clusterstaticentries"],
                    "verbs": ["get", "list", "patch", "update", "watch"],
                },
                {
                    "apiGroups": [CRD_GROUP],
                    "resources": [
                        "clusterfederatedtrustdomains/status",
                        "clusterspiffeids/status",
                        "clusterstaticentries/status",
                    ],
                    "verbs": ["get", "patch", "update"],
                },
                {
                    "apiGroups": [CRD_GROUP],
                    "resources": [
                        "clusterfederatedtrustdomains/finalizers",
                        "clusterspiffeids/finalizers",
                        "clusterstaticentries/finalizers",
                    ],
                    "verbs": ["update"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(f"{ns}-{SERVER}", None, SERVER),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{ns}-{SERVER}"},
            "subjects": [{"kind": "ServiceAccount", "name": SERVER, "namespace": ns}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(SERVER, ns, SERVER),
            "rules": [
                # k8sbundle notifier keeps the agents' bootstrap bundle current
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [BUNDLE_CONFIGMAP],
                    "verbs": ["get", "patch"],
                },
                # controller-manager leader election
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                },
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(SERVER, ns, SERVER),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SERVER},
            "subjects": [{"kind": "ServiceAccount", "name": SERVER, "namespace": ns}],
        },
        _configmap(BUNDLE_CONFIGMAP, ns, SERVER, {}),
        _configmap(SERVER, ns, SERVER, {"server.conf": dump_json(server_config(platform))}),
        _configmap(
            CONTROLLER, ns, CONTROLLER, {CONTROLLER_CONFIG_FILE: dump_yaml(controller_manager_config(platform))}
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(SERVER, ns, SERVER),
            "spec": {
                "type": "ClusterIP",
                "selector": sel,
                "ports": [{"name": "grpc", "port": SERVER_PORT, "targetPort": "grpc", "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(f"{CONTROLLER}-webhook", ns, CONTROLLER),
            "spec": {
                "type": "ClusterIP",
                "selector": sel,
                "ports": [{"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}],
            },
        },
        server_workload(platform),
    ]
    if sp.replicas > 1:
        objs.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": _meta(SERVER, ns, SERVER),
                "spec": {"minAvailable": sp.replicas - 1 if sp.replicas > 2 else 1, "selector": {"matchLabels": sel}},
            }
        )
    objs += oidc_objects(platform)
    return objs


def server_workload(platform: Platform) -> dict[str, Any]:
    """StatefulSet (sqlite3, one replica with a volume) or Deployment (postgres, HA)."""
    cfg = platform.config
    sp = cfg.spire
    ns = sp.namespace
    sel = {NAME_LABEL: SERVER}
    args = ["-config", f"{SERVER_CONFIG_DIR}/server.conf"]
    if needs_expand_env(cfg):
        args.append("-expandEnv")
    env: list[dict[str, Any]] = []
    if sp.datastore == "postgres":
        env.append(
            {
                "name": DB_CONNECTION_ENV,
                "valueFrom": {"secretKeyRef": {"name": DATASTORE_SECRET, "key": "connection-string"}},
            }
        )
    if cfg.trust.upstream == "aws-pca":
        env.append(
            {"name": PCA_ARN_ENV, "valueFrom": {"configMapKeyRef": {"name": UPSTREAM_CONFIGMAP, "key": "pca-arn"}}}
        )
    mounts = [
        {"name": "config", "mountPath": SERVER_CONFIG_DIR, "readOnly": True},
        {"name": "data", "mountPath": SERVER_DATA_DIR},
        {"name": "server-socket", "mountPath": SERVER_SOCKET_DIR},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": SERVER}},
        {"name": "server-socket", "emptyDir": {}},
        {"name": "controller-config", "configMap": {"name": CONTROLLER}},
    ]
    if cfg.trust.upstream == "tls":
        mounts.append({"name": "upstream", "mountPath": UPSTREAM_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "upstream",
                "projected": {
                    "sources": [
                        {"configMap": {"name": UPSTREAM_CONFIGMAP}},
                        {"secret": {"name": UPSTREAM_KEY_SECRET}},
                    ]
                },
            }
        )
    elif cfg.trust.upstream == "vault-pki":
        mounts.append({"name": "vault-token", "mountPath": VAULT_TOKEN_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "vault-token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "path": VAULT_TOKEN_AUDIENCE,
                                "audience": VAULT_TOKEN_AUDIENCE,
                                "expirationSeconds": 600,
                            }
                        }
                    ]
                },
            }
        )
    ha = sp.datastore == "postgres"
    if ha:  # state lives in postgres; the disk KeyManager's keys are per replica
        volumes.append({"name": "data", "emptyDir": {}})
    server = {
        "name": SERVER,
        "image": _image(SERVER, sp.version),
        "args": args,
        "ports": [
            {"name": "grpc", "containerPort": SERVER_PORT},
            {"name": "health", "containerPort": SERVER_HEALTH_PORT},
            {"name": "metrics", "containerPort": SERVER_METRICS_PORT},
        ],
        "livenessProbe": _probe("/live", "health", 15),
        "readinessProbe": _probe("/ready", "health"),
        "volumeMounts": mounts,
        "securityContext": _RESTRICTED,
        **({"env": env} if env else {}),
    }
    controller = {
        "name": CONTROLLER,
        "image": _image(CONTROLLER, sp.controller_manager_version),
        "args": [f"--config={CONTROLLER_CONFIG_DIR}/{CONTROLLER_CONFIG_FILE}"],
        "ports": [
            {"name": "webhook", "containerPort": WEBHOOK_PORT},
            {"name": "healthz", "containerPort": CONTROLLER_HEALTH_PORT},
        ],
        "livenessProbe": _probe("/healthz", "healthz", 15),
        "readinessProbe": _probe("/readyz", "healthz"),
        "volumeMounts": [
            {"name": "server-socket", "mountPath": SERVER_SOCKET_DIR, "readOnly": True},
            {"name": "controller-config", "mountPath": CONTROLLER_CONFIG_DIR, "readOnly": True},
        ],
        "securityContext": _RESTRICTED,
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": SERVER,
        "shareProcessNamespace": True,
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000, "runAsNonRoot": True},
        "containers": [server, controller],
        "volumes": volumes,
    }
    if sp.replicas > 1:
        pod_spec["affinity"] = {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": sel},
                        },
                    }
                ]
            }
        }
    template = {"metadata": {"labels": _labels(SERVER)}, "spec": pod_spec}
    if ha:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(SERVER, ns, SERVER),
            "spec": {
                "replicas": sp.replicas,
                "selector": {"matchLabels": sel},
                "template": template,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            },
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(SERVER, ns, SERVER),
        "spec": {
            "replicas": 1,
            "serviceName": SERVER,
            "selector": {"matchLabels": sel},
            "template": template,
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
            ],
        },
    }


def oidc_objects(platform: Platform) -> list[dict[str, Any]]:
    """The OIDC discovery provider: Deployment + Service + config, JWKS via the Workload API."""
    cfg = platform.config
    sp = cfg.spire
    ns = sp.namespace
    sel = {NAME_LABEL: OIDC}
    replicas = 2 if sp.replicas > 1 else 1
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(OIDC, ns, OIDC),
            "automountServiceAccountToken": False,
        },
        _configmap(OIDC, ns, OIDC, {"oidc-discovery-provider.conf": dump_json(oidc_config(platform))}),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(OIDC, ns, OIDC),
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": sel},
                "template": {
                    "metadata": {"labels": _labels(OIDC)},
                    "spec": {
                        "serviceAccountName": OIDC,
                        "automountServiceAccountToken": False,  # keys come from the Workload API only
                        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True},
                        "containers": [
                            {
                                "name": OIDC,
                                "image": _image(OIDC, sp.version),
                                "args": ["-config", "/run/spire/oidc/oidc-discovery-provider.conf"],
                                "ports": [
                                    {"name": "http", "containerPort": OIDC_PORT},
                                    {"name": "health", "containerPort": OIDC_HEALTH_PORT},
                                ],
                                "livenessProbe": _probe("/live", "health", 15),
                                "readinessProbe": _probe("/ready", "health"),
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/run/spire/oidc", "readOnly": True},
                                    {"name": "workload-api", "mountPath": SOCKET_DIR, "readOnly": True},
                                ],
                                "securityContext": _RESTRICTED,
                            }
                        ],
                        "volumes": [
                            {"name": "config", "configMap": {"name": OIDC}},
                            {"name": "workload-api", "csi": {"driver": CSI_DRIVER, "readOnly": True}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(OIDC, ns, OIDC),
            "spec": {
                "type": "ClusterIP",
                "selector": sel,
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            },
        },
    ]


def webhook_objects(platform: Platform) -> list[dict[str, Any]]:
    """The controller manager's webhook configuration, unless spire.controllerManagerWebhook is off."""
    return [webhook_configuration(platform)] if platform.config.spire.controller_manager_webhook else []


def webhook_configuration(platform: Platform) -> dict[str, Any]:
    """ValidatingWebhookConfiguration the controller manager serves and keeps the CA bundle of."""
    ns = platform.config.spire.namespace
    hooks = []
    for kind, plural in (
        ("clusterspiffeid", "clusterspiffeids"),
        ("clusterfederatedtrustdomain", "clusterfederatedtrustdomains"),
    ):
        hooks.append(
            {
                "name": f"v{kind}.kb.io",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {
                    "service": {
                        "name": f"{CONTROLLER}-webhook",
                        "namespace": ns,
                        "path": f"/validate-spire-spiffe-io-v1alpha1-{kind}",
                    }
                },
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "rules": [
                    {
                        "apiGroups": [CRD_GROUP],
                        "apiVersions": [CRD_VERSION],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [plural],
                    }
                ],
            }
        )
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": _meta(WEBHOOK, None, CONTROLLER),
        "webhooks": hooks,
    }
