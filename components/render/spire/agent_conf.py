"""SPIRE agents' configuration: the Kubernetes DaemonSet's agent.conf and the host agents' (VMs,
Windows hosts).
"""

from __future__ import annotations

from typing import Any

from components.platform_model import Platform
from components.render.spire.names import (
    AGENT_BUNDLE_DIR,
    AGENT_DATA_DIR,
    AGENT_HEALTH_PORT,
    AGENT_METRICS_PORT,
    AGENT_TOKEN_AUDIENCE,
    AGENT_TOKEN_DIR,
    BUNDLE_KEY,
    SDS_ALL_BUNDLES,
    SDS_DEFAULT_BUNDLE,
    SDS_DEFAULT_SVID,
    SERVER_PORT,
    SOCKET_PATH,
    _plugin,
    server_address,
)

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
