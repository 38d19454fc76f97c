"""SPIRE's names, ports, paths and images, the SPIFFE IDs of SPIRE itself, and the helpers every SPIRE
object is built with.
"""

from __future__ import annotations

from typing import Any

from components.config import StackConfig
from components.durations import seconds
from components.labels import MANAGED_BY, NAME_LABEL, PART_OF_LABEL

# --------------------------------------------------------------------------- names & paths

SERVER = "spire-server"
AGENT = "spire-agent"
CONTROLLER = "spire-controller-manager"
OIDC = "spire-oidc-discovery-provider"
CSI_DRIVER = "csi.spiffe.io"
CSI_DAEMONSET = "spiffe-csi-driver"
BUNDLE_CONFIGMAP = "spire-bundle"
BUNDLE_KEY = "bundle.crt"
UPSTREAM_CONFIGMAP = "spire-server-upstream"
UPSTREAM_KEY_SECRET = "spire-server-upstream-key"
DATASTORE_SECRET = "spire-server-datastore"
WEBHOOK = "spire-controller-manager-webhook"

SERVER_PORT = 8081
SERVER_HEALTH_PORT = 8080
SERVER_METRICS_PORT = 9988
AGENT_HEALTH_PORT = 9982
AGENT_METRICS_PORT = 9989
CONTROLLER_HEALTH_PORT = 8083
CONTROLLER_METRICS_PORT = 8082
WEBHOOK_PORT = 9443
OIDC_PORT = 8080
OIDC_HEALTH_PORT = 8008

SERVER_CONFIG_DIR = "/run/spire/server/config"
SERVER_DATA_DIR = "/run/spire/server/data"
SERVER_SOCKET_DIR = "/tmp/spire-server/private"  # noqa: S108 - SPIRE's default, an emptyDir here
SERVER_SOCKET = f"{SERVER_SOCKET_DIR}/api.sock"
UPSTREAM_DIR = "/run/spire/upstream"
VAULT_TOKEN_DIR = "/var/run/secrets/tokens"
VAULT_TOKEN_AUDIENCE = "vault"
CONTROLLER_CONFIG_DIR = "/run/spire/controller-manager"
CONTROLLER_CONFIG_FILE = "controller-manager-config.yaml"

AGENT_CONFIG_DIR = "/run/spire/agent/config"
AGENT_DATA_DIR = "/run/spire/agent/data"
AGENT_BUNDLE_DIR = "/run/spire/bundle"
AGENT_TOKEN_DIR = "/var/run/secrets/tokens"
AGENT_TOKEN_AUDIENCE = "spire-server"
SOCKET_DIR = "/run/spire/agent-sockets"
"""Directory holding the Workload API socket; the CSI driver mounts it into workloads."""
SOCKET_NAME = "spire-agent.sock"
SOCKET_PATH = f"{SOCKET_DIR}/{SOCKET_NAME}"

SDS_DEFAULT_SVID = "default"
SDS_DEFAULT_BUNDLE = "ROOTCA"
SDS_ALL_BUNDLES = "ALL"

PCA_ARN_ENV = "SPIRE_UPSTREAM_PCA_ARN"
DB_CONNECTION_ENV = "SPIRE_DB_CONNECTION"
PCA_CA_TEMPLATE = "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen0/V1"

CRD_GROUP = "spire.spiffe.io"
CRD_VERSION = "v1alpha1"

IMAGES = {
    SERVER: "ghcr.io/spiffe/spire-server",
    AGENT: "ghcr.io/spiffe/spire-agent",
    OIDC: "ghcr.io/spiffe/oidc-discovery-provider",
    CONTROLLER: "ghcr.io/spiffe/spire-controller-manager",
    CSI_DAEMONSET: "ghcr.io/spiffe/spiffe-csi-driver",
    "node-driver-registrar": "registry.k8s.io/sig-storage/csi-node-driver-registrar",
}


def go_duration(text: str) -> str:
    """A manifest/stack duration ('1d', '90m') as Go's time.ParseDuration accepts it ('24h', '1h30m')."""
    total = seconds(text)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s else "")
    return out or "0s"


def trust_domain_id(cfg: StackConfig, path: str = "") -> str:
    return f"spiffe://{cfg.trust_domain}{path}"


def server_id(cfg: StackConfig) -> str:
    """SPIRE server's own SPIFFE ID: the parent of node alias entries."""
    return trust_domain_id(cfg, "/spire/server")


def node_alias_id(cfg: StackConfig, agent: str) -> str:
    """Stable node alias of the machines one VM / Windows host agent runs on."""
    return trust_domain_id(cfg, f"/node/{agent}")


def oidc_spiffe_id(cfg: StackConfig) -> str:
    return trust_domain_id(cfg, f"/ns/{cfg.spire.namespace}/sa/{OIDC}")


def server_address(cfg: StackConfig) -> str:
    return f"{SERVER}.{cfg.spire.namespace}.svc"


def needs_expand_env(cfg: StackConfig) -> bool:
    return cfg.spire.datastore == "postgres" or cfg.trust.upstream == "aws-pca"


def _labels(component: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {NAME_LABEL: component, PART_OF_LABEL: "spire", **MANAGED_BY, **(extra or {})}


def _meta(name: str, namespace: str | None, component: str, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = _labels(component)
    meta.update(extra)
    return meta


def _image(kind: str, version: str) -> str:
    return f"{IMAGES[kind]}:{version}"


def _plugin(name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    return [{name: {"plugin_data": data}}]


# --------------------------------------------------------------------------- Kubernetes objects


def _configmap(name: str, ns: str, component: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, ns, component), "data": data}


def _probe(path: str, port: int | str, delay: int = 5) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "initialDelaySeconds": delay, "periodSeconds": 10}


_RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
