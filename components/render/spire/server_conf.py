"""The SPIRE server's configuration (server.conf as JSON), the controller manager's and the OIDC
discovery provider's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from components.config import StackConfig
from components.platform_model import Platform
from components.render.spire.names import (
    AGENT,
    AGENT_TOKEN_AUDIENCE,
    BUNDLE_CONFIGMAP,
    BUNDLE_KEY,
    CONTROLLER,
    CONTROLLER_HEALTH_PORT,
    CONTROLLER_METRICS_PORT,
    CRD_GROUP,
    CRD_VERSION,
    DB_CONNECTION_ENV,
    OIDC,
    OIDC_HEALTH_PORT,
    OIDC_PORT,
    PCA_ARN_ENV,
    PCA_CA_TEMPLATE,
    SERVER_DATA_DIR,
    SERVER_HEALTH_PORT,
    SERVER_METRICS_PORT,
    SERVER_PORT,
    SERVER_SOCKET,
    SOCKET_PATH,
    UPSTREAM_DIR,
    VAULT_TOKEN_AUDIENCE,
    VAULT_TOKEN_DIR,
    WEBHOOK,
    _plugin,
    go_duration,
)

# --------------------------------------------------------------------------- server.conf


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
            # SPIRE 1.15 throttles node attestation to 1/s and X.509 / JWT signing to 500/s each
            # per caller IP (fixed figures; only on or off). Hazard: agents reaching the server
            # through a source-NATing load balancer share one IP, and so one budget.
            "ratelimit": {"attestation": True, "signing": True},
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
