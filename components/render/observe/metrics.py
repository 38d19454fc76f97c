"""Scraping: PodMonitors (Prometheus Operator), scrape annotations and plain Prometheus scrape configs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from components.labels import SCRAPE_JOB_LABEL
from components.platform_model import Platform
from components.render import spire as spire_render
from components.render.authz import OPA_DIAGNOSTIC_PORT
from components.render.observe.common import (
    GATEWAY_POD_LABEL,
    GATEWAY_SERVICE_LABEL,
    JOB_LINKERD_IDENTITY,
    JOB_OPA,
    JOB_SPIRE_AGENT,
    JOB_SPIRE_SERVER,
    JOB_VAULT,
    LINKERD_IDENTITY_ADMIN_PORT,
    LINKERD_IDENTITY_POD_LABELS,
    MONITORING_API,
    SPIRE_AGENT_POD_LABELS,
    SPIRE_SERVER_POD_LABELS,
    _meta,
)
from components.render.rego import gateway_services

# --------------------------------------------------------------------------- scraping


def _job_relabel(job: str) -> list[dict[str, Any]]:
    """Fixed job name, plus pod, namespace and node as target labels."""
    return [
        {"action": "replace", "targetLabel": "job", "replacement": job},
        {"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"},
    ]


def _pod_monitor(
    platform: Platform, name: str, namespaces: list[str], match_labels: Mapping[str, str],
    endpoints: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": MONITORING_API,
        "kind": "PodMonitor",
        "metadata": _meta(platform, name),
        "spec": {
            "namespaceSelector": {"matchNames": sorted(set(namespaces))},
            "selector": {"matchLabels": dict(sorted(match_labels.items()))},
            "podMetricsEndpoints": endpoints,
        },
    }


def _endpoint(platform: Platform, port: int, path: str, job: str, extra_relabel: list[dict[str, Any]] | None = None,
              params: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    ep: dict[str, Any] = {
        "portNumber": port,
        "path": path,
        "interval": platform.config.observe.scrape_interval,
        "relabelings": _job_relabel(job) + list(extra_relabel or []),
    }
    if params:
        ep["params"] = {k: list(v) for k, v in sorted(params.items())}
    return ep


def gateway_namespaces(platform: Platform) -> list[str]:
    """Namespaces of the Envoy + OPA gateways the authz component deploys."""
    return sorted({s.manifest.spec.namespace for s in gateway_services(platform)})


def scrape_targets(platform: Platform) -> list[dict[str, Any]]:
    """What Prometheus scrapes, independent of how: name, job, namespaces, pod labels, port, path."""
    cfg = platform.config
    obs = cfg.observe
    on = cfg.subsystems
    out: list[dict[str, Any]] = []
    if on.spire:
        out.append({"name": "spire-server", "job": JOB_SPIRE_SERVER, "namespaces": [cfg.spire.namespace],
                    "labels": SPIRE_SERVER_POD_LABELS, "port": spire_render.SERVER_METRICS_PORT,
                    "path": "/metrics"})
        out.append({"name": "spire-agent", "job": JOB_SPIRE_AGENT, "namespaces": [cfg.spire.namespace],
                    "labels": SPIRE_AGENT_POD_LABELS, "port": spire_render.AGENT_METRICS_PORT,
                    "path": "/metrics"})
    gw_ns = gateway_namespaces(platform)
    if on.authz and gw_ns:
        # Envoy's admin interface (its stats) is bound to 127.0.0.1 in the gateway pods, so
        # only OPA's diagnostic port (/health, /metrics on 0.0.0.0) is scrapable.
        labels = dict([GATEWAY_POD_LABEL])
        out.append({"name": "gateway-opa", "job": JOB_OPA, "namespaces": gw_ns, "labels": labels,
                    "port": OPA_DIAGNOSTIC_PORT, "path": "/metrics"})
    if on.mesh:
        out.append({"name": "linkerd-identity", "job": JOB_LINKERD_IDENTITY, "namespaces": [obs.linkerd_namespace],
                    "labels": LINKERD_IDENTITY_POD_LABELS, "port": LINKERD_IDENTITY_ADMIN_PORT, "path": "/metrics"})
    return out


def pod_monitors(platform: Platform) -> list[dict[str, Any]]:
    """One PodMonitor per scrape target (prometheus-operator)."""
    gateway_label = "__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", GATEWAY_SERVICE_LABEL)
    out = []
    for t in scrape_targets(platform):
        extra = []
        if t["job"] == JOB_OPA:
            extra = [{"action": "replace", "sourceLabels": [gateway_label], "targetLabel": "gateway"}]
        ep = _endpoint(platform, t["port"], t["path"], t["job"], extra)
        out.append(_pod_monitor(platform, f"agentpassport-{t['name']}", t["namespaces"], t["labels"], [ep]))
    return out


def scrape_annotations(platform: Platform) -> dict[str, dict[str, str]]:
    """Pod annotations for Prometheus setups without the operator (documented in docs/observe.md)."""
    return {
        t["name"]: {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(t["port"]),
            "prometheus.io/path": t["path"],
            SCRAPE_JOB_LABEL: t["job"],
        }
        for t in scrape_targets(platform)
    }


def prometheus_scrape_configs(platform: Platform) -> dict[str, Any]:
    """Plain Prometheus ``scrape_configs``: Vault always (it may run outside the cluster); the
    Kubernetes pods too when the stack does not use prometheus-operator."""
    cfg = platform.config
    configs: list[dict[str, Any]] = []
    if cfg.subsystems.vault:
        scheme, _, host = cfg.vault.address.partition("://")
        configs.append({
            "job_name": JOB_VAULT,
            "metrics_path": "/v1/sys/metrics",
            "params": {"format": ["prometheus"]},
            "scheme": scheme or "https",
            # Vault needs unauthenticated_metrics_access on its listener, or a token file here.
            "static_configs": [{"targets": [host.rstrip("/")]}],
        })
    if not cfg.observe.prometheus_operator:
        for t in scrape_targets(platform):
            keep = [{"source_labels": ["__meta_kubernetes_namespace"], "regex": "|".join(sorted(set(t["namespaces"]))),
                     "action": "keep"}]
            for k, v in sorted(t["labels"].items()):
                name = "__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", k)
                keep.append({"source_labels": [name], "regex": re.escape(v), "action": "keep"})
            keep.append({"source_labels": ["__meta_kubernetes_pod_container_port_number"], "regex": str(t["port"]),
                         "action": "keep"})
            configs.append({
                "job_name": t["job"],
                "metrics_path": t["path"],
                "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": sorted(set(t["namespaces"]))}}],
                "relabel_configs": [
                    *keep,
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                    {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
                    {"source_labels": ["__meta_kubernetes_pod_label_agentpassport_dev_gateway"],
                     "target_label": "gateway"},
                ],
            })
    return {"scrape_configs": configs}
