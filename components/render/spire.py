"""SPIRE as data: server.conf, agent.conf, Kubernetes objects and registrations (pure, no pulumi).

SPIRE reads JSON as HCL, so the configurations are dicts dumped as JSON — plugin names and
keys spelled exactly as in SPIRE's documentation (doc/spire_server.md, doc/spire_agent.md,
doc/plugin_*). Plugin sections use SPIRE's list form (``"DataStore": [{"sql": {...}}]``),
which keeps plugin order explicit.

Values that only exist at deploy time never appear in these files: the postgres connection
string and the AWS Private CA ARN are read from the environment (``spire-server -expandEnv``,
``${SPIRE_DB_CONNECTION}`` / ``${SPIRE_UPSTREAM_PCA_ARN}``), filled from a Secret and a
ConfigMap the component creates. So the reviewed file and the deployed one are identical.

Registrations (spire-controller-manager, ``spire.spiffe.io/v1alpha1``):

* Kubernetes agents and Windows agents with ``pod``: one ``ClusterSPIFFEID`` each, whose
  ``spiffeIDTemplate`` is the agent's SPIFFE ID literally (a template without actions
  evaluates to itself), restricted to the agent's namespace, pod labels and — through
  ``workloadSelectorTemplates`` — its ServiceAccount;
* VM agents and Windows host agents: ``ClusterStaticEntry`` objects. aws_iid: a node alias
  entry (parent: the SPIRE server, selectors: region + instance tags) and the agent's entry
  parented to that alias. join_token: only the agent's entry, parented to the alias the
  operator names when minting the token (``spire-server token generate -spiffeID <alias>``).

Only ``platform.active_agents`` get registrations: a suspended agent has none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from components.config import NAMESPACE, StackConfig
from components.durations import seconds
from components.errors import Problem, input_error
from components.platform_model import Platform, ResolvedAgent
from components.render.yamlout import dump_json, dump_yaml
from components.shard import Scope, deploys_agents, deploys_shared, stack_scope

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
AGENT_LABEL = "agentpassport.dev/agent"
MANAGED_BY = {"app.kubernetes.io/managed-by": "agent-passport"}

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
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/part-of": "spire", **MANAGED_BY, **(extra or {})}


def _meta(name: str, namespace: str | None, component: str, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = _labels(component)
    meta.update(extra)
    return meta


def _image(kind: str, version: str) -> str:
    return f"{IMAGES[kind]}:{version}"


# --------------------------------------------------------------------------- validation


def spire_problems(platform: Platform) -> list[Problem]:
    """Everything wrong with the SPIRE settings and the agents' registrations; empty if fine."""
    cfg = platform.config
    sp = cfg.spire
    file = platform.config_file
    out: list[Problem] = []

    def cp(field: str, message: str) -> None:
        out.append(Problem(file, None, f"{NAMESPACE}:{field}", message))

    if len(cfg.trust_domain) > 255:
        cp("trustDomain", "a SPIFFE trust domain has at most 255 characters")
    if seconds(sp.default_jwt_svid_ttl) > seconds(cfg.limits.max_jwt_svid_ttl):
        cp(
            "spire.defaultJwtSvidTtl",
            f"{sp.default_jwt_svid_ttl} is above limits.maxJwtSvidTtl "
            f"({cfg.limits.max_jwt_svid_ttl}); JWT-SVIDs are bearer tokens, keep them short",
        )
    if seconds(sp.default_x509_svid_ttl) > seconds(cfg.limits.max_x509_svid_ttl):
        cp(
            "spire.defaultX509SvidTtl",
            f"{sp.default_x509_svid_ttl} is above limits.maxX509SvidTtl ({cfg.limits.max_x509_svid_ttl})",
        )
    # caTtl/6 and caTtl < trust.intermediateLifetime are stack-config rules
    # (components.config.lifetime_problems): they refuse the stack before anything renders.
    if sp.replicas > 1 and sp.datastore != "postgres":
        cp("spire.replicas", f"{sp.replicas} replicas need datastore postgres: sqlite3 cannot be shared")
    if sp.datastore == "postgres" and sp.datastore_connection_secret is None:
        cp(
            "spire.datastoreConnectionSecret",
            "datastore postgres needs the name of a secret config key "
            "holding the connection string (pulumi config set --secret <name> ...)",
        )
    issuer = urlparse(cfg.jwt_issuer)
    if issuer.scheme not in ("https", "http") or not issuer.hostname:
        cp("spire.jwtIssuer", f"{cfg.jwt_issuer!r} is not an absolute URL (https://host[/path])")
    elif issuer.scheme != "https" and cfg.is_strict:
        cp("spire.jwtIssuer", "strict stacks serve the OIDC issuer over https (Vault and AWS fetch its keys)")
    elif issuer.query or issuer.fragment or issuer.path.endswith("/"):
        cp("spire.jwtIssuer", f"{cfg.jwt_issuer!r}: no query, fragment or trailing '/' in an issuer URL")
    for agent in platform.active_agents:
        out.extend(_agent_problems(platform, agent))
    return out


def _agent_problems(platform: Platform, agent: ResolvedAgent) -> list[Problem]:
    out: list[Problem] = []
    src = agent.source

    def mp(loc: tuple[str | int, ...], message: str) -> None:
        from components.manifest.loader import format_loc

        out.append(Problem(src.file, src.line_of(loc), format_loc(loc), message))

    # Reserved SPIFFE paths (/spire/, /node/) are refused by the platform model for every stack.
    vm = agent.manifest.spec.platform.vm
    if vm is not None and vm.attestation == "aws_iid" and not vm.aws_instance_tags and not vm.node_selectors:
        mp(
            ("spec", "platform", "vm"),
            "aws_iid attestation without awsInstanceTags or nodeSelectors would "
            "give this identity to every EC2 instance in the region; add the instances' tags",
        )
    return out


def check(platform: Platform) -> None:
    """Raise every problem :func:`spire_problems` finds (ConfigError, ManifestError, or both: InputError)."""
    problems = spire_problems(platform)
    if problems:
        raise input_error(problems, [platform.config_file])


# --------------------------------------------------------------------------- server.conf


def _plugin(name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    return [{name: {"plugin_data": data}}]


def upstream_plugin(cfg: StackConfig) -> tuple[str, dict[str, Any]] | None:
    """SPIRE UpstreamAuthority plugin name and plugin_data for the stack's trust upstream
    (None for upstream spire: SPIRE is then its own root)."""
    t = cfg.trust
    if t.upstream == "spire":
        return None
    if t.upstream == "tls":
        return "disk", {
            "cert_file_path": f"{UPSTREAM_DIR}/chain.pem",
            "key_file_path": f"{UPSTREAM_DIR}/key.pem",
            "bundle_file_path": f"{UPSTREAM_DIR}/bundle.pem",
        }
    if t.upstream == "aws-pca":
        from components.render.trust import KEY_SPECS

        return "aws_pca", {
            "region": cfg.aws.region,
            "certificate_authority_arn": f"${{{PCA_ARN_ENV}}}",
            "ca_signing_template_arn": PCA_CA_TEMPLATE,
            "signing_algorithm": KEY_SPECS[t.key_algorithm].pca_signing_algorithm,
        }
    return "vault", {
        "vault_addr": cfg.vault.address,
        "pki_mount_point": t.vault_pki.intermediate_mount,
        "k8s_auth": {
            "k8s_auth_mount_point": t.vault_pki.k8s_auth_mount,
            "k8s_auth_role_name": t.vault_pki.role,
            "token_path": f"{VAULT_TOKEN_DIR}/{VAULT_TOKEN_AUDIENCE}",
        },
    }


def key_manager(cfg: StackConfig) -> list[dict[str, Any]]:
    """The server's KeyManager: its CA and JWT keys on the data volume, or in AWS KMS."""
    if cfg.spire.key_manager == "aws_kms":
        return _plugin("aws_kms", {"region": cfg.aws.region,
                                   "key_identifier_file": f"{SERVER_DATA_DIR}/aws-kms-key-id"})
    return _plugin("disk", {"keys_path": f"{SERVER_DATA_DIR}/keys.json"})


def node_attestations(platform: Platform) -> list[str]:
    """Node attestors the server needs: k8s_psat always, plus what active VM/Windows agents use."""
    used = {"k8s_psat"}
    for agent in platform.active_agents:
        p = agent.manifest.spec.platform
        if p.vm is not None:
            used.add(p.vm.attestation)
        elif p.windows is not None and p.windows.pod is None:
            used.add("aws_iid")
    order = ("k8s_psat", "aws_iid", "join_token")
    return [a for a in order if a in used]


def server_config(platform: Platform) -> dict[str, Any]:
    """SPIRE server configuration (server.conf as JSON)."""
    cfg = platform.config
    sp = cfg.spire
    ns = sp.namespace
    if sp.datastore == "postgres":
        datastore = {"database_type": "postgres", "connection_string": f"${{{DB_CONNECTION_ENV}}}"}
    else:
        datastore = {"database_type": "sqlite3", "connection_string": f"{SERVER_DATA_DIR}/datastore.sqlite3"}
    upstream = upstream_plugin(cfg)
    attestors: list[dict[str, Any]] = []
    for kind in node_attestations(platform):
        if kind == "k8s_psat":
            attestors += _plugin(
                "k8s_psat",
                {
                    "clusters": [
                        {
                            cfg.spire_cluster_name: {
                                "service_account_allow_list": [f"{ns}:{AGENT}"],
                                "audience": [AGENT_TOKEN_AUDIENCE],
                            }
                        }
                    ]
                },
            )
        else:
            attestors += _plugin(kind, {})
    return {
        "server": {
            "bind_address": "0.0.0.0",  # noqa: S104 - inside the pod; the Service fronts it
            "bind_port": str(SERVER_PORT),
            "trust_domain": cfg.trust_domain,
            "data_dir": SERVER_DATA_DIR,
            "socket_path": SERVER_SOCKET,
            "log_level": sp.log_level,
            "log_format": "json",
            "audit_log_enabled": True,
            "ca_key_type": sp.ca_key_type,
            "ca_ttl": go_duration(sp.ca_ttl),
            "default_x509_svid_ttl": go_duration(sp.default_x509_svid_ttl),
            "default_jwt_svid_ttl": go_duration(sp.default_jwt_svid_ttl),
            "jwt_issuer": cfg.jwt_issuer,
        },
        "plugins": {
            "DataStore": _plugin("sql", datastore),
            "KeyManager": key_manager(cfg),
            "NodeAttestor": attestors,
            **({"UpstreamAuthority": _plugin(*upstream)} if upstream is not None else {}),
            "Notifier": _plugin(
                "k8sbundle",
                {
                    "namespace": ns,
                    "config_map": BUNDLE_CONFIGMAP,
                    "config_map_key": BUNDLE_KEY,
                },
            ),
        },
        "health_checks": {
            "listener_enabled": True,
            "bind_address": "0.0.0.0",  # noqa: S104 - probes come from the kubelet
            "bind_port": str(SERVER_HEALTH_PORT),
            "live_path": "/live",
            "ready_path": "/ready",
        },
        "telemetry": {"Prometheus": {"host": "0.0.0.0", "port": SERVER_METRICS_PORT}},  # noqa: S104
    }


# --------------------------------------------------------------------------- agent.conf


def agent_config(platform: Platform) -> dict[str, Any]:
    """SPIRE agent configuration for the Kubernetes DaemonSet (agent.conf as JSON)."""
    cfg = platform.config
    sp = cfg.spire
    return {
        "agent": {
            "data_dir": AGENT_DATA_DIR,
            "log_level": sp.log_level,
            "log_format": "json",
            "server_address": server_address(cfg),
            "server_port": str(SERVER_PORT),
            "socket_path": SOCKET_PATH,
            "trust_bundle_path": f"{AGENT_BUNDLE_DIR}/{BUNDLE_KEY}",
            "trust_domain": cfg.trust_domain,
            "sds": {
                "default_svid_name": SDS_DEFAULT_SVID,
                "default_bundle_name": SDS_DEFAULT_BUNDLE,
                "default_all_bundles_name": SDS_ALL_BUNDLES,
                "disable_spiffe_cert_validation": False,
            },
        },
        "plugins": {
            "NodeAttestor": _plugin(
                "k8s_psat",
                {
                    "cluster": cfg.spire_cluster_name,
                    "token_path": f"{AGENT_TOKEN_DIR}/{AGENT_TOKEN_AUDIENCE}",
                },
            ),
            "KeyManager": _plugin("memory", {}),
            "WorkloadAttestor": _plugin(
                "k8s",
                {
                    "node_name_env": "MY_NODE_NAME",
                    "skip_kubelet_verification": sp.skip_kubelet_verification,
                },
            ),
        },
        "health_checks": {
            "listener_enabled": True,
            "bind_address": "0.0.0.0",  # noqa: S104 - probes come from the kubelet
            "bind_port": str(AGENT_HEALTH_PORT),
            "live_path": "/live",
            "ready_path": "/ready",
        },
        "telemetry": {"Prometheus": {"host": "0.0.0.0", "port": AGENT_METRICS_PORT}},  # noqa: S104
    }


# --------------------------------------------------------------------------- VM / Windows host agents

VM_DATA_DIR = "/var/lib/spire/agent"
VM_BUNDLE = "/etc/spire/agent/bundle.crt"
VM_JOIN_TOKEN = "/etc/spire/agent/join-token"
WINDOWS_DATA_DIR = "C:\\ProgramData\\spire\\agent"
WINDOWS_BUNDLE = "C:\\ProgramData\\spire\\agent\\bundle.crt"


def host_agent_kinds(platform: Platform) -> list[str]:
    """Host agent configurations the active agents need: vm-aws_iid, vm-join_token, windows."""
    kinds: set[str] = set()
    for agent in platform.active_agents:
        p = agent.manifest.spec.platform
        if p.vm is not None:
            kinds.add(f"vm-{p.vm.attestation}")
        elif p.windows is not None and p.windows.pod is None:
            kinds.add("windows")
    return sorted(kinds)


def host_agent_config(platform: Platform, kind: str) -> dict[str, Any]:
    """agent.conf for SPIRE agents outside Kubernetes (VMs, Windows hosts).

    The bootstrap bundle is the TrustDomain's trust bundle (SPIRE's bundle is the upstream
    root), copied to the host by its provisioning; join tokens come from
    ``spire-server token generate -spiffeID <node alias>`` (docs/spire.md).
    """
    cfg = platform.config
    address = cfg.spire.vm_server_address or f"{server_address(cfg)}:{SERVER_PORT}"
    host, _, port = address.rpartition(":")
    windows = kind == "windows"
    agent: dict[str, Any] = {
        "data_dir": WINDOWS_DATA_DIR if windows else VM_DATA_DIR,
        "log_level": cfg.spire.log_level,
        "log_format": "json",
        "server_address": host,
        "server_port": port,
        "trust_bundle_path": WINDOWS_BUNDLE if windows else VM_BUNDLE,
        "trust_domain": cfg.trust_domain,
    }
    if not windows:
        agent["socket_path"] = SOCKET_PATH
    if kind == "vm-join_token":
        agent["join_token_file"] = VM_JOIN_TOKEN
    attestor = "join_token" if kind == "vm-join_token" else "aws_iid"
    return {
        "agent": agent,
        "plugins": {
            "NodeAttestor": _plugin(attestor, {}),
            "KeyManager": _plugin("disk", {"directory": agent["data_dir"]}),
            "WorkloadAttestor": _plugin("windows" if windows else "unix", {}),
        },
    }


# --------------------------------------------------------------------------- controller manager & OIDC


def controller_manager_config(platform: Platform) -> dict[str, Any]:
    """spire-controller-manager's ControllerManagerConfig (owns only entries of our className)."""
    cfg = platform.config
    return {
        "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
        "kind": "ControllerManagerConfig",
        "metrics": {"bindAddress": f"0.0.0.0:{CONTROLLER_METRICS_PORT}"},
        "health": {"healthProbeBindAddress": f"0.0.0.0:{CONTROLLER_HEALTH_PORT}"},
        "leaderElection": {
            "leaderElect": True,
            "resourceName": f"{cfg.spire.class_name}-{CONTROLLER}",
            "resourceNamespace": cfg.spire.namespace,
        },
        "validatingWebhookConfigurationName": WEBHOOK,
        "clusterName": cfg.spire_cluster_name,
        "clusterDomain": cfg.mesh.cluster_domain,
        "trustDomain": cfg.trust_domain,
        "ignoreNamespaces": ["kube-system", "kube-public"],
        "spireServerSocketPath": SERVER_SOCKET,
        "className": cfg.spire.class_name,
        "watchClassless": False,
        "logLevel": cfg.spire.log_level.lower(),
    }


def oidc_config(platform: Platform) -> dict[str, Any]:
    """OIDC discovery provider: JWKS at <jwtIssuer>/keys from the agent's Workload API.

    It serves plain HTTP inside the cluster; TLS for the public issuer host is terminated in
    front of it (ingress / load balancer), so the discovery document still says https.
    """
    cfg = platform.config
    issuer = urlparse(cfg.jwt_issuer)
    svc = f"{OIDC}.{cfg.spire.namespace}"
    conf: dict[str, Any] = {
        "domains": [issuer.hostname or "", svc, f"{svc}.svc", f"{svc}.svc.{cfg.mesh.cluster_domain}"],
        "jwt_issuer": cfg.jwt_issuer,
        "jwks_uri": f"{cfg.jwt_issuer}/keys",
        "insecure_addr": f":{OIDC_PORT}",
        "set_key_use": True,
        "log_level": cfg.spire.log_level.lower(),
        "log_format": "JSON",
        "workload_api": {"socket_path": SOCKET_PATH, "trust_domain": cfg.trust_domain},
        "health_checks": {"bind_port": str(OIDC_HEALTH_PORT), "ready_path": "/ready", "live_path": "/live"},
    }
    if issuer.path:
        conf["server_path_prefix"] = issuer.path
    return conf


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


def server_objects(platform: Platform) -> list[dict[str, Any]]:
    """Namespace, RBAC, ConfigMaps, Services, the server workload (+ controller manager) and OIDC.

    Objects holding deploy-time values (upstream key/chain, PCA ARN, DB connection string)
    are built by :func:`upstream_objects` / the component, not here.
    """
    cfg = platform.config
    sp = cfg.spire
    ns = sp.namespace
    sel = {"app.kubernetes.io/name": SERVER}
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
    sel = {"app.kubernetes.io/name": SERVER}
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
    sel = {"app.kubernetes.io/name": OIDC}
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


def agent_objects(platform: Platform) -> list[dict[str, Any]]:
    """Agent DaemonSet + RBAC + config, and the SPIFFE CSI driver (csi.spiffe.io)."""
    cfg = platform.config
    sp = cfg.spire
    ns = sp.namespace
    sel = {"app.kubernetes.io/name": AGENT}
    csi_sel = {"app.kubernetes.io/name": CSI_DAEMONSET}
    node_name = {"name": "MY_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    agent_ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(AGENT, ns, AGENT),
        "spec": {
            "selector": {"matchLabels": sel},
            "updateStrategy": {"type": "RollingUpdate"},
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


# --------------------------------------------------------------------------- registrations


SERVER_ANNOTATION = "agentpassport.dev/spire-server"
"""Names the server workload a registration belongs to. The component sets it from the
workload's Output so registrations are created after the server and its CRDs' controller."""


def _cr(kind: str, name: str, agent: str | None, spec: dict[str, Any]) -> dict[str, Any]:
    labels = dict(MANAGED_BY)
    if agent is not None:
        labels[AGENT_LABEL] = agent
    return {
        "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
        "kind": kind,
        "metadata": {"name": name, "labels": labels, "annotations": {SERVER_ANNOTATION: SERVER}},
        "spec": spec,
    }


def _spiffeid_spec(
    cfg: StackConfig,
    spiffe_id: str,
    namespace: str,
    service_account: str,
    pod_labels: dict[str, str],
    ttl: str | None = None,
    jwt_ttl: str | None = None,
    dns_names: Iterable[str] = (),
    hint: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "className": cfg.spire.class_name,
        "spiffeIDTemplate": spiffe_id,
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchLabels": dict(sorted(pod_labels.items()))},
        # Pods selected by labels must also run as the ServiceAccount: SPIRE checks these at attestation.
        "workloadSelectorTemplates": [f"k8s:ns:{namespace}", f"k8s:sa:{service_account}"],
    }
    if ttl is not None:
        spec["ttl"] = go_duration(ttl)
    if jwt_ttl is not None:
        spec["jwtTtl"] = go_duration(jwt_ttl)
    dns = list(dns_names)
    if dns:
        spec["dnsNameTemplates"] = dns
    if hint is not None:
        spec["hint"] = hint
    return spec


def agent_registrations(platform: Platform, agent: ResolvedAgent) -> list[dict[str, Any]]:
    """The registration objects of one agent (empty for a suspended agent)."""
    if agent.suspended:
        return []
    cfg = platform.config
    ident = agent.identity
    spec = agent.manifest.spec
    p = spec.platform
    name = agent.name
    if p.kubernetes is not None or (p.windows is not None and p.windows.pod is not None):
        assert ident.namespace is not None and ident.service_account is not None
        labels = dict(p.kubernetes.pod_labels) if p.kubernetes is not None else {}
        return [
            _cr(
                "ClusterSPIFFEID",
                f"agent.{name}",
                name,
                _spiffeid_spec(
                    cfg,
                    ident.spiffe_id,
                    ident.namespace,
                    ident.service_account,
                    labels,
                    ttl=ident.x509_svid_ttl,
                    jwt_ttl=ident.jwt_svid_ttl,
                    dns_names=spec.identity.dns_names,
                    hint=name,
                ),
            )
        ]
    alias = node_alias_id(cfg, name)
    objs: list[dict[str, Any]] = []
    if p.vm is not None:
        workload_selectors = list(p.vm.workload_selectors)
        attestation = p.vm.attestation
        if attestation == "aws_iid":
            assert p.vm.aws_region is not None
            node = [f"aws_iid:region:{p.vm.aws_region}"]
            node += [f"aws_iid:tag:{k}:{v}" for k, v in sorted(p.vm.aws_instance_tags.items())]
            node += list(p.vm.node_selectors)
    else:
        assert p.windows is not None
        attestation = "aws_iid"
        tags = p.windows.ssm_target_tags or {"agentpassport:host-group": p.windows.host_group}
        node = [f"aws_iid:region:{cfg.aws.region}"] + [f"aws_iid:tag:{k}:{v}" for k, v in sorted(tags.items())]
        workload_selectors = [f"windows:user_name:{cfg.windows.netbios_domain}\\{p.windows.gmsa_account}$"]
    if attestation == "aws_iid":
        objs.append(
            _cr(
                "ClusterStaticEntry",
                f"node.{name}",
                name,
                {
                    "className": cfg.spire.class_name,
                    "spiffeID": alias,
                    "parentID": server_id(cfg),
                    "selectors": sorted(set(node)),
                },
            )
        )
    entry: dict[str, Any] = {
        "className": cfg.spire.class_name,
        "spiffeID": ident.spiffe_id,
        "parentID": alias,
        "selectors": sorted(set(workload_selectors)),
        "x509SVIDTTL": go_duration(ident.x509_svid_ttl),
        "jwtSVIDTTL": go_duration(ident.jwt_svid_ttl),
        "hint": name,
    }
    if spec.identity.dns_names:
        entry["dnsNames"] = list(spec.identity.dns_names)
    objs.append(_cr("ClusterStaticEntry", f"agent.{name}", name, entry))
    return objs


def platform_registrations(platform: Platform) -> list[dict[str, Any]]:
    """Registrations the platform itself needs: the OIDC discovery provider's identity."""
    cfg = platform.config
    return [
        _cr(
            "ClusterSPIFFEID",
            f"platform.{OIDC}",
            None,
            _spiffeid_spec(
                cfg, oidc_spiffe_id(cfg), cfg.spire.namespace, OIDC, {"app.kubernetes.io/name": OIDC}, hint=OIDC
            ),
        )
    ]


def registration_objects(platform: Platform, scope: Scope = "all") -> list[dict[str, Any]]:
    """Every registration of the stack, agents in name order, then the platform's own
    (a shard: only its agents'; a base: only the platform's)."""
    out: list[dict[str, Any]] = []
    if deploys_agents(scope):
        for agent in platform.active_agents:
            out += agent_registrations(platform, agent)
    return out + (platform_registrations(platform) if deploys_shared(scope) else [])


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class AgentRegistrations:
    """One active agent's registration objects."""

    agent: str
    spiffe_id: str
    objects: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class SpirePlan:
    """Everything SPIRE deploys for one stack, validated (:func:`compile_spire`).

    The server, webhook and agent objects exist for stacks that deploy the shared pieces (not a
    shard); registrations are planned for every active agent and for the platform itself, and each
    consumer takes those of its scope (:func:`components.shard.deploys_agents` / ``deploys_shared``).
    """

    config: StackConfig
    config_file: str
    scope: Scope
    server_objects: tuple[dict[str, Any], ...]
    webhook_objects: tuple[dict[str, Any], ...]
    agent_objects: tuple[dict[str, Any], ...]
    agent_registrations: tuple[AgentRegistrations, ...]
    platform_registrations: tuple[dict[str, Any], ...]

    def registration_objects(self, scope: Scope | None = None) -> list[dict[str, Any]]:
        """Agents' registrations in name order, then the platform's own, as ``scope`` deploys them."""
        scope = self.scope if scope is None else scope
        out = [o for r in self.agent_registrations for o in r.objects] if deploys_agents(scope) else []
        return out + (list(self.platform_registrations) if deploys_shared(scope) else [])


def compile_spire(platform: Platform) -> SpirePlan:
    """The SPIRE plan of a stack; raises every problem :func:`spire_problems` finds."""
    check(platform)
    scope = stack_scope(platform.config)
    shared = deploys_shared(scope)
    return SpirePlan(
        config=platform.config,
        config_file=platform.config_file,
        scope=scope,
        server_objects=tuple(server_objects(platform)) if shared else (),
        webhook_objects=tuple(webhook_objects(platform)) if shared else (),
        agent_objects=tuple(agent_objects(platform)) if shared else (),
        agent_registrations=tuple(
            AgentRegistrations(a.name, a.identity.spiffe_id, tuple(agent_registrations(platform, a)))
            for a in platform.active_agents),
        platform_registrations=tuple(platform_registrations(platform)),
    )


# --------------------------------------------------------------------------- artifacts


def spire_artifacts(platform: Platform) -> list[Any]:
    """The SPIRE artifacts of a stack (validated first); nothing when subsystems.spire is off."""
    if not platform.config.subsystems.spire:
        return []
    return plan_artifacts(platform, compile_spire(platform))


def plan_artifacts(platform: Platform, plan: SpirePlan) -> list[Any]:
    """``spire/server.conf``, ``spire/agent.conf``, ``spire/oidc-discovery-provider.conf`` and
    ``kubernetes/spire/*.yaml`` (objects holding deploy-time secrets/ARNs are not rendered)."""
    from components.render.artifacts import Artifact, kubernetes_artifacts

    if not deploys_shared(plan.scope):  # a shard: its agents' registrations only
        return kubernetes_artifacts("spire", plan.registration_objects())
    objects = [
        *plan.server_objects,
        *plan.webhook_objects,
        *plan.agent_objects,
        *plan.registration_objects(),
    ]
    return [
        Artifact("spire/server.conf", dump_json(server_config(platform))),
        Artifact("spire/agent.conf", dump_json(agent_config(platform))),
        Artifact("spire/oidc-discovery-provider.conf", dump_json(oidc_config(platform))),
        Artifact("spire/controller-manager-config.yaml", dump_yaml(controller_manager_config(platform))),
        *(
            Artifact(f"spire/agent-{kind}.conf", dump_json(host_agent_config(platform, kind)))
            for kind in host_agent_kinds(platform)
        ),
        *kubernetes_artifacts("spire", objects),
    ]
