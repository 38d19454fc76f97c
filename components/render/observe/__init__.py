"""Identity health: scrape targets, alert rules, fleet dashboard, log pipeline, anomaly rules.

Pure: a :class:`~components.platform_model.Platform` in, Kubernetes objects (dicts), JSON and
text out; deterministic (sorted, no clock). The component in :mod:`components.observe`
registers the Kubernetes objects; ``passport render`` writes all of it for review.

Metric names are the ones the engines really export:

* SPIRE (``hashicorp/go-metrics`` Prometheus sink, service names ``spire_server`` /
  ``spire_agent``): keys joined with ``_``, RPC call counters carry a ``status`` label with the
  gRPC code name (``OK``, ``PermissionDenied``, ...), e.g.
  ``spire_server_server_ca_sign_x509_svid``, ``spire_server_rpc_agent_v1_agent_attest_agent``,
  ``spire_server_manager_x509_ca_rotate_expiration``,
  ``spire_agent_manager_sync_fetch_svids_updates``.
* Vault/OpenBao (``/v1/sys/metrics?format=prometheus``): ``vault_secret_lease_creation``
  (labels ``secret_engine``, ``mount_point``, ``creation_ttl``), ``vault_token_creation``
  (``auth_method``, ``mount_point``, ...).
* Envoy ext_authz (``cluster.<target>.ext_authz.{ok,denied,error}`` ->
  ``envoy_cluster_ext_authz_denied`` ...), opa-envoy-plugin ``error_counter``.
* Linkerd identity controller: ``issuer_cert_ttl_seconds``.

Neither OPA nor Envoy nor Vault label their metrics with the caller, so everything "per
agent" that metrics cannot see is a log rule over the ECS documents the ingest pipeline
produces (``spiffe_id``, ``trace.id``, ``event.action``, ``event.outcome``).

The package (everything is re-exported here):

* :mod:`.common` — scrape job names, the pods the monitors select, object metadata;
* :mod:`.metrics` — PodMonitors, scrape annotations and plain Prometheus scrape configs;
* :mod:`.alerts` — alert and recording rules;
* :mod:`.dashboard` — the fleet dashboard;
* :mod:`.logs` — the log pipeline to ECS (Elasticsearch ingest pipeline or Logstash);
* :mod:`.anomaly` — per-agent anomaly (detection) rules over the ECS documents;
* :mod:`.certificates` — certificate expiry from PEM;
* this module — the objects the component registers and the artifacts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from components.platform_model import Platform
from components.render.observe.alerts import (
    Alert,
    alerts,
    prometheus_rule,
    recording_rules,
    renewal_window_seconds,
    rule_groups,
    runbook_anchor,
    spire_ca_min_remaining_seconds,
)
from components.render.observe.anomaly import (
    anomaly_rules,
    detection_rules_ndjson,
    http_allowed,
    kql_literal,
    kql_quote,
    kql_wildcard,
    vault_allowed_paths,
)
from components.render.observe.certificates import (
    certificate_not_after,
    pem_not_after,
)
from components.render.observe.common import (
    DASHBOARD_FILE,
    DASHBOARD_UID,
    ECS_VERSION,
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
    SPIRE_AGENT_DAEMONSET,
    SPIRE_AGENT_POD_LABELS,
    SPIRE_SERVER_POD_LABELS,
    VAULT_SELF_PATHS,
    common_labels,
)
from components.render.observe.dashboard import (
    dashboard,
    dashboard_configmap,
    dashboard_queries,
)
from components.render.observe.logs import (
    RAW,
    ingest_pipeline,
    logstash_config,
)
from components.render.observe.metrics import (
    gateway_namespaces,
    pod_monitors,
    prometheus_scrape_configs,
    scrape_annotations,
    scrape_targets,
)
from components.render.yamlout import dump_json, dump_yaml
from components.shard import stack_scope

# --------------------------------------------------------------------------- objects and artifacts


def observe_objects(platform: Platform, certificate_expiries: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Kubernetes objects the IdentityHealth component registers (same dicts as rendered)."""
    obs = platform.config.observe
    objs: list[dict[str, Any]] = []
    if obs.prometheus_operator:
        objs.extend(pod_monitors(platform))
        objs.append(prometheus_rule(platform, certificate_expiries))
    if obs.dashboard:
        objs.append(dashboard_configmap(platform))
    return objs


def observe_artifacts(platform: Platform) -> Iterable[Any]:
    """``kubernetes/observe/*.yaml`` and ``observe/*`` for ``passport render``."""
    from components.render.artifacts import Artifact, kubernetes_artifacts

    if not platform.config.subsystems.observe or stack_scope(platform.config) == "agents":
        return []  # a shard: the base watches the whole fleet
    out: list[Artifact] = kubernetes_artifacts("observe", observe_objects(platform))
    logs = platform.config.observe.logs
    out.append(Artifact("observe/prometheus-rules.yaml", dump_yaml({"groups": rule_groups(platform)})))
    out.append(Artifact("observe/prometheus-scrape-configs.yaml", dump_yaml(prometheus_scrape_configs(platform))))
    out.append(Artifact("observe/dashboard.json", dump_json(dashboard(platform))))
    if logs.kind == "elasticsearch":
        out.append(Artifact("observe/ingest-pipeline.json", dump_json(ingest_pipeline(platform))))
    else:
        out.append(Artifact("observe/logstash.conf", logstash_config(platform)))
    out.append(Artifact("observe/anomaly-rules.json", dump_json(anomaly_rules(platform))))
    out.append(Artifact("observe/detection-rules.ndjson", detection_rules_ndjson(platform)))
    return out


__all__ = [
    "DASHBOARD_FILE",
    "DASHBOARD_UID",
    "ECS_VERSION",
    "GATEWAY_POD_LABEL",
    "GATEWAY_SERVICE_LABEL",
    "JOB_LINKERD_IDENTITY",
    "JOB_OPA",
    "JOB_SPIRE_AGENT",
    "JOB_SPIRE_SERVER",
    "JOB_VAULT",
    "LINKERD_IDENTITY_ADMIN_PORT",
    "LINKERD_IDENTITY_POD_LABELS",
    "MONITORING_API",
    "RAW",
    "SPIRE_AGENT_DAEMONSET",
    "SPIRE_AGENT_POD_LABELS",
    "SPIRE_SERVER_POD_LABELS",
    "VAULT_SELF_PATHS",
    "Alert",
    "alerts",
    "anomaly_rules",
    "certificate_not_after",
    "common_labels",
    "dashboard",
    "dashboard_configmap",
    "dashboard_queries",
    "detection_rules_ndjson",
    "gateway_namespaces",
    "http_allowed",
    "ingest_pipeline",
    "kql_literal",
    "kql_quote",
    "kql_wildcard",
    "logstash_config",
    "observe_artifacts",
    "observe_objects",
    "pem_not_after",
    "pod_monitors",
    "prometheus_rule",
    "prometheus_scrape_configs",
    "recording_rules",
    "renewal_window_seconds",
    "rule_groups",
    "runbook_anchor",
    "scrape_annotations",
    "scrape_targets",
    "spire_ca_min_remaining_seconds",
    "vault_allowed_paths",
]
