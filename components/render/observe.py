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
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from components.durations import format_duration, seconds
from components.platform_model import Platform, ResolvedAgent
from components.render import spire as spire_render
from components.render.authz import OPA_DIAGNOSTIC_PORT
from components.render.rego import gateway_services
from components.render.vault import database_mount
from components.render.yamlout import dump_json, dump_yaml
from components.shard import stack_scope

MONITORING_API = "monitoring.coreos.com/v1"
ECS_VERSION = "8.17.0"
DASHBOARD_UID = "agentpassport-identity"
DASHBOARD_FILE = "agentpassport-identity.json"

# Scrape jobs: the monitors relabel ``job`` to these names so every rule can select on them.
JOB_SPIRE_SERVER = "agentpassport-spire-server"
JOB_SPIRE_AGENT = "agentpassport-spire-agent"
JOB_OPA = "agentpassport-opa"
JOB_LINKERD_IDENTITY = "agentpassport-linkerd-identity"
JOB_VAULT = "agentpassport-vault"

# Pods the monitors select: the labels and ports the SPIRE and authz renderers give them.
SPIRE_SERVER_POD_LABELS = {"app.kubernetes.io/name": spire_render.SERVER}
SPIRE_AGENT_POD_LABELS = {"app.kubernetes.io/name": spire_render.AGENT}
SPIRE_AGENT_DAEMONSET = spire_render.AGENT
GATEWAY_POD_LABEL = ("app.kubernetes.io/name", "agentpassport-gateway")
GATEWAY_SERVICE_LABEL = "agentpassport.dev/gateway"
LINKERD_IDENTITY_POD_LABELS = {"linkerd.io/control-plane-component": "identity"}
LINKERD_IDENTITY_ADMIN_PORT = 9990

# gRPC codes that are not rejections: clients closing Workload API streams end them Canceled.
_NOT_REJECTED = "OK|Canceled"

# Vault paths every agent token may use besides its grants (its own token and leases).
VAULT_SELF_PATHS = (
    "auth/token/lookup-self",
    "auth/token/renew-self",
    "auth/token/revoke-self",
    "sys/leases/lookup",
    "sys/leases/renew",
)


def common_labels(platform: Platform) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "agent-passport", "app.kubernetes.io/component": "observe"}


def _meta(platform: Platform, name: str, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    obs = platform.config.observe
    labels = common_labels(platform) | dict(sorted(obs.selector_labels.items())) | dict(extra or {})
    return {"name": name, "namespace": obs.namespace, "labels": dict(sorted(labels.items()))}


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
            "agentpassport.dev/scrape-job": t["job"],
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


# --------------------------------------------------------------------------- alert rules


@dataclass(frozen=True)
class Alert:
    """One alerting rule; ``runbook`` is the section of docs/runbook.md that handles it."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def runbook(self) -> str:
        return runbook_anchor(self.name)


def runbook_anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading (lowercase, punctuation dropped, spaces to '-')."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def _sel(job: str, **matchers: str) -> str:
    """A label selector ``{job="...", k="v"}``; values starting with '~' are regex, '!' negated."""
    parts = [f'job="{job}"']
    for key, value in matchers.items():
        if value.startswith("!~"):
            parts.append(f'{key}!~"{value[2:]}"')
        elif value.startswith("~"):
            parts.append(f'{key}=~"{value[1:]}"')
        elif value.startswith("!"):
            parts.append(f'{key}!="{value[1:]}"')
        else:
            parts.append(f'{key}="{value}"')
    return "{" + ", ".join(parts) + "}"


def _num(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def renewal_window_seconds(platform: Platform) -> int:
    """renewalGraceFactor x the longest renewal point (half the X.509-SVID TTL) in the fleet."""
    ttls = [a.identity.x509_svid_ttl_seconds for a in platform.active_agents]
    longest = max(ttls) if ttls else seconds(platform.config.spire.default_x509_svid_ttl)
    return int(platform.config.observe.thresholds.renewal_grace_factor * longest / 2)


def spire_ca_min_remaining_seconds(platform: Platform) -> int:
    t = platform.config.observe.thresholds
    if t.spire_ca_min_remaining is not None:
        return seconds(t.spire_ca_min_remaining)
    return seconds(platform.config.spire.ca_ttl) // 12


def alerts(platform: Platform) -> dict[str, list[Alert]]:
    """Alert groups by name; thresholds from ``observe.thresholds``; only deployed subsystems."""
    cfg = platform.config
    t = cfg.observe.thresholds
    on = cfg.subsystems
    spike_for = t.alert_for
    groups: dict[str, list[Alert]] = {}

    if on.spire:
        sign = f"spire_server_server_ca_sign_x509_svid{_sel(JOB_SPIRE_SERVER)}"
        calls = "spire_server_rpc_agent_v1_agent_attest_agent|spire_server_rpc_svid_v1_svid_batch_new_x509svid"
        failed = "{" + f'__name__=~"{calls}", job="{JOB_SPIRE_SERVER}", status!~"{_NOT_REJECTED}"' + "}"
        total = "{" + f'__name__=~"{calls}", job="{JOB_SPIRE_SERVER}"' + "}"
        wl = "spire_agent_rpc_workload_api_fetch_x509svid|spire_agent_rpc_workload_api_fetch_jwtsvid"
        wl_failed = "{" + f'__name__=~"{wl}", job="{JOB_SPIRE_AGENT}", status!~"{_NOT_REJECTED}"' + "}"
        wl_total = "{" + f'__name__=~"{wl}", job="{JOB_SPIRE_AGENT}"' + "}"
        sync = "spire_agent_manager_sync_fetch_svids_updates"
        renewal = renewal_window_seconds(platform)
        replicas = cfg.spire.replicas
        ds = SPIRE_AGENT_DAEMONSET
        ns = cfg.spire.namespace
        groups["agentpassport-spire"] = [
            Alert(
                "AgentPassportSvidIssuanceSpike",
                f"sum(rate({sign}[5m])) > {_num(t.svid_issuance_spike_factor)} * "
                f"(sum(rate({sign}[5m] offset 1h)) or vector(0))\n"
                f"and sum(rate({sign}[5m])) > {_num(t.svid_issuance_min_rate)}",
                spike_for, "warning",
                "X.509-SVID issuance is {{ $value | humanize }}/s, a spike against an hour ago",
                "SPIRE is signing X.509-SVIDs far faster than an hour ago: a provisioning storm "
                "(mass restart, new node pool) or identities being harvested by a rogue workload.",
            ),
            Alert(
                "AgentPassportSvidRejections",
                f"sum(rate({failed}[5m]))\n/ sum(rate({total}[5m])) > {_num(t.rejection_ratio)}",
                t.rejection_for, "warning",
                "{{ $value | humanizePercentage }} of node attestations / SVID requests are rejected",
                "The SPIRE server rejects a sustained share of node attestations or X.509-SVID "
                "signing requests: misconfigured attestors, a node outside its allowed selectors, "
                "or something probing for identities.",
            ),
            Alert(
                "AgentPassportWorkloadAttestationRejections",
                f"sum by (node) (rate({wl_failed}[5m]))\n/ sum by (node) (rate({wl_total}[5m])) "
                f"> {_num(t.rejection_ratio)}",
                t.rejection_for, "warning",
                "SPIRE agent on {{ $labels.node }} rejects {{ $value | humanizePercentage }} of Workload API calls",
                "Workloads on the node ask the SPIRE agent for SVIDs they are not registered for "
                "(PermissionDenied): a pod whose selectors no longer match its registration, a "
                "suspended agent still running, or a process trying to obtain someone else's identity.",
            ),
            Alert(
                "AgentPassportSvidRenewalFailing",
                f"sum by (node) (rate({sync}{_sel(JOB_SPIRE_AGENT, status='!OK')}[5m])) > 0\n"
                f"unless sum by (node) (rate({sync}{_sel(JOB_SPIRE_AGENT, status='OK')}[5m])) > 0",
                format_duration(renewal), "critical",
                "SPIRE agent on {{ $labels.node }} has not renewed SVIDs for "
                f"{format_duration(renewal)}",
                f"The SPIRE agent's SVID sync has failed for {format_duration(renewal)}, "
                f"{_num(t.renewal_grace_factor)} times the longest renewal point in the fleet: its "
                "agents' X.509-SVIDs expire without replacement. Per-agent renewal gaps are the "
                "log rule agentpassport-<stack>-<agent>-svid-not-renewed.",
            ),
            Alert(
                "AgentPassportSpireCaExpiring",
                f"min(spire_server_manager_x509_ca_rotate_expiration{_sel(JOB_SPIRE_SERVER)}) - time() "
                f"< {spire_ca_min_remaining_seconds(platform)}",
                "5m", "critical",
                "SPIRE's X.509 CA expires in {{ $value | humanizeDuration }}",
                "SPIRE should have activated its next CA long before now; the UpstreamAuthority "
                "may be failing to sign it. When it expires every SVID in the trust domain fails.",
            ),
            Alert(
                "AgentPassportSpireServerDown",
                f"(sum(up{_sel(JOB_SPIRE_SERVER)}) or vector(0)) < {replicas}",
                "5m", "critical",
                "{{ $value }} of " + f"{replicas} SPIRE server replicas are up",
                "SPIRE server replicas are not scraping. With none up, no SVID is issued or renewed "
                "and agents lose their identities at expiry.",
            ),
            Alert(
                "AgentPassportSpireAgentDown",
                f"up{_sel(JOB_SPIRE_AGENT)} == 0\n"
                f'or (kube_daemonset_status_desired_number_scheduled{{namespace="{ns}", daemonset="{ds}"}}\n'
                f'  - kube_daemonset_status_number_ready{{namespace="{ns}", daemonset="{ds}"}}) > 0',
                "5m", "critical",
                "SPIRE agent down on {{ $labels.node }}",
                "A SPIRE agent is down or not ready: the agents on its node cannot renew their "
                "SVIDs and new pods there get no identity.",
            ),
        ]

    trust = [
        Alert(
            "AgentPassportCertificateExpiring",
            "min by (certificate) (agentpassport_certificate_expiry_timestamp_seconds) - time() "
            f"< {seconds(t.certificate_min_remaining)}",
            "1h", "warning",
            "{{ $labels.certificate }} expires in {{ $value | humanizeDuration }}",
            "The upstream intermediate, the trust bundle or the Linkerd trust anchor is close "
            "to expiry. Re-issue it (pulumi up in its early-renewal window) and roll the bundle.",
        ),
    ]
    if on.mesh:
        trust.append(Alert(
            "AgentPassportLinkerdIssuerExpiring",
            f"min(issuer_cert_ttl_seconds{_sel(JOB_LINKERD_IDENTITY)}) < {seconds(t.certificate_min_remaining)}",
            "1h", "warning",
            "Linkerd's identity issuer expires in {{ $value | humanizeDuration }}",
            "When the issuer expires, new proxies get no mesh identity and existing ones fail "
            "at their next renewal.",
        ))
    groups["agentpassport-trust"] = trust

    if on.vault:
        mounts = "|".join(sorted(f"{database_mount(n)}/" for n in cfg.vault.databases))
        leases = f"vault_secret_lease_creation{_sel(JOB_VAULT, mount_point='~' + (mounts or 'db-.*/'))}"
        logins = f"vault_token_creation{_sel(JOB_VAULT, mount_point='auth/' + cfg.vault.jwt_mount + '/')}"
        if cfg.vault.auth == "cert":
            logins = f"vault_token_creation{_sel(JOB_VAULT, mount_point='auth/' + cfg.vault.cert_mount + '/')}"
        groups["agentpassport-vault"] = [
            Alert(
                "AgentPassportVaultLeaseSpike",
                f"sum by (mount_point) (rate({leases}[5m])) > {_num(t.lease_spike_factor)} * "
                f"(sum by (mount_point) (rate({leases}[5m] offset 1h)))\n"
                f"and sum by (mount_point) (rate({leases}[5m])) > {_num(t.lease_min_rate)}",
                spike_for, "warning",
                "Vault lease creation on {{ $labels.mount_point }} at {{ $value | humanize }}/s",
                "Database credentials are minted far faster than an hour ago. Vault's metrics "
                "stop at the mount; the role (agent) is in the log rule "
                "agentpassport-<stack>-vault-lease-burst.",
            ),
            Alert(
                "AgentPassportVaultLoginSpike",
                f"sum(rate({logins}[5m])) > {_num(t.lease_spike_factor)} * "
                f"(sum(rate({logins}[5m] offset 1h)) or vector(0))\n"
                f"and sum(rate({logins}[5m])) > {_num(t.lease_min_rate)}",
                spike_for, "warning",
                "Agent logins to Vault at {{ $value | humanize }}/s",
                "Tokens are created through the agents' SVID auth mount far faster than an hour "
                "ago: agents crash-looping, or SVIDs being replayed.",
            ),
        ]

    if on.authz and gateway_namespaces(platform):
        groups["agentpassport-authz"] = [
            Alert(
                "AgentPassportAuthzGatewayDown",
                f"up{_sel(JOB_OPA)} == 0\n"
                f"or (count by (namespace, gateway) (up{_sel(JOB_OPA)}) unless "
                f"count by (namespace, gateway) (up{_sel(JOB_OPA)} == 1))",
                "5m", "critical",
                "Authorization gateway {{ $labels.gateway }} ({{ $labels.pod }}) is down",
                "OPA in an Envoy + OPA gateway does not answer: the gateway fails closed and every "
                "call through it is refused. Deny spikes per agent come from the decision logs "
                "(rule agentpassport-<stack>-opa-deny-burst); Envoy and OPA export no per-caller metric.",
            ),
        ]
    return groups


def recording_rules(platform: Platform, certificate_expiries: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Facts from the manifests and the deployment that Prometheus cannot scrape.

    ``agentpassport_agents`` counts active agents by platform and X.509-SVID TTL (the
    dashboard's "agents by TTL"); ``agentpassport_certificate_expiry_timestamp_seconds`` holds
    the NotAfter of each certificate the deployment knows (upstream chain, trust bundle,
    Linkerd anchor).
    """
    rules: list[dict[str, Any]] = []
    counts = Counter((a.identity.platform, a.identity.x509_svid_ttl_seconds) for a in platform.active_agents)
    for (plat, ttl), n in sorted(counts.items()):
        rules.append({"record": "agentpassport_agents", "expr": f"vector({n})",
                      "labels": {"platform": plat, "x509_svid_ttl": format_duration(ttl)}})
    rules.append({"record": "agentpassport_agents_suspended", "expr": f"vector({len(platform.suspended_agents)})"})
    for name, not_after in sorted((certificate_expiries or {}).items()):
        rules.append({"record": "agentpassport_certificate_expiry_timestamp_seconds",
                      "expr": f"vector({int(not_after)})", "labels": {"certificate": name}})
    return rules


def rule_groups(platform: Platform, certificate_expiries: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Prometheus rule groups (the body of a PrometheusRule and of a plain rule file)."""
    base = platform.config.observe.runbook_base_url
    static = {"stack": platform.stack, "environment": platform.config.environment}
    groups: list[dict[str, Any]] = [{
        "name": "agentpassport-facts",
        "interval": "5m",
        "rules": recording_rules(platform, certificate_expiries),
    }]
    for name, items in alerts(platform).items():
        groups.append({
            "name": name,
            "rules": [
                {
                    "alert": a.name,
                    "expr": a.expr,
                    "for": a.for_,
                    "labels": dict(sorted({**static, "severity": a.severity, **a.labels}.items())),
                    "annotations": {
                        "summary": a.summary,
                        "description": a.description,
                        "runbook_url": f"{base}#{a.runbook}",
                    },
                }
                for a in items
            ],
        })
    return groups


def prometheus_rule(platform: Platform, certificate_expiries: Mapping[str, int] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": MONITORING_API,
        "kind": "PrometheusRule",
        "metadata": _meta(platform, "agentpassport-identity-health"),
        "spec": {"groups": rule_groups(platform, certificate_expiries)},
    }


# --------------------------------------------------------------------------- dashboard


def _panel(pid: int, title: str, targets: list[tuple[str, str]], x: int, y: int, w: int = 12, h: int = 8,
           kind: str = "timeseries", unit: str | None = None, description: str = "") -> dict[str, Any]:
    panel: dict[str, Any] = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if unit:
        panel["fieldConfig"] = {"defaults": {"unit": unit}, "overrides": []}
    return panel


def dashboard_queries() -> list[tuple[str, list[tuple[str, str]], str | None, str]]:
    """(title, [(expr, legend)], unit, kind) of every dashboard panel, in layout order."""
    sign = f"spire_server_server_ca_sign_x509_svid{_sel(JOB_SPIRE_SERVER)}"
    jwt = f"spire_server_server_ca_sign_jwt_svid{_sel(JOB_SPIRE_SERVER)}"
    sync = f"spire_agent_manager_sync_fetch_svids_updates{_sel(JOB_SPIRE_AGENT)}"
    rotate = f"spire_agent_agent_svid_rotate{_sel(JOB_SPIRE_AGENT)}"
    calls = "spire_server_rpc_agent_v1_agent_attest_agent|spire_server_rpc_svid_v1_svid_batch_new_x509svid"
    failed = "{" + f'__name__=~"{calls}", job="{JOB_SPIRE_SERVER}", status!~"{_NOT_REJECTED}"' + "}"
    wl = "spire_agent_rpc_workload_api_fetch_x509svid|spire_agent_rpc_workload_api_fetch_jwtsvid"
    wl_failed = "{" + f'__name__=~"{wl}", job="{JOB_SPIRE_AGENT}", status!~"{_NOT_REJECTED}"' + "}"
    r = "$__rate_interval"
    return [
        ("Active agents by X.509-SVID TTL", [("sum by (x509_svid_ttl) (agentpassport_agents)", "{{x509_svid_ttl}}")],
         None, "bargauge"),
        ("Suspended agents", [("sum(agentpassport_agents_suspended)", "suspended")], None, "stat"),
        ("SVID issuance", [(f"sum(rate({sign}[{r}]))", "X.509-SVIDs/s"), (f"sum(rate({jwt}[{r}]))", "JWT-SVIDs/s")],
         "ops", "timeseries"),
        ("Renewals", [(f'sum by (node) (rate({sync[:-1]}, status="OK"}}[{r}]))', "sync ok {{node}}"),
                      (f"sum(rate({rotate}[{r}]))", "agent SVID rotations")], "ops", "timeseries"),
        ("Rejections", [(f"sum by (__name__, status) (rate({failed}[{r}]))", "{{__name__}} {{status}}"),
                        (f"sum by (node, status) (rate({wl_failed}[{r}]))", "workload API {{node}} {{status}}")],
         "ops", "timeseries"),
        ("Authorization gateways up", [
            (f"sum by (gateway) (up{_sel(JOB_OPA)})", "{{gateway}}"),
        ], None, "timeseries"),
        ("Vault leases by mount", [
            (f"sum by (mount_point) (rate(vault_secret_lease_creation{_sel(JOB_VAULT)}[{r}]))", "{{mount_point}}"),
        ], "ops", "timeseries"),
        ("Expiries", [
            (f"min(spire_server_manager_x509_ca_rotate_expiration{_sel(JOB_SPIRE_SERVER)}) - time()", "SPIRE CA"),
            (f"min(issuer_cert_ttl_seconds{_sel(JOB_LINKERD_IDENTITY)})", "Linkerd issuer"),
            ("min by (certificate) (agentpassport_certificate_expiry_timestamp_seconds) - time()", "{{certificate}}"),
        ], "s", "timeseries"),
    ]


def dashboard(platform: Platform) -> dict[str, Any]:
    """Grafana dashboard JSON for the fleet (model schemaVersion 39)."""
    panels = []
    for i, (title, targets, unit, kind) in enumerate(dashboard_queries()):
        panels.append(_panel(i + 1, title, targets, x=(i % 2) * 12, y=(i // 2) * 8, kind=kind, unit=unit))
    return {
        "uid": DASHBOARD_UID,
        "title": f"Agent Passport identity health ({platform.stack})",
        "tags": ["agent-passport", "spiffe", "identity"],
        "timezone": "browser",
        "schemaVersion": 39,
        "editable": False,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}]},
        "panels": panels,
    }


def dashboard_configmap(platform: Platform) -> dict[str, Any]:
    """The dashboard in a ConfigMap the Grafana sidecar loads (label grafana_dashboard: "1")."""
    meta = _meta(platform, "agentpassport-identity-dashboard", {"grafana_dashboard": "1"})
    meta["annotations"] = {"grafana_folder": platform.config.observe.grafana_folder}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {DASHBOARD_FILE: dump_json(dashboard(platform))}}


# --------------------------------------------------------------------------- log pipeline (ECS)


def _proc(kind: str, cond: str | None = None, **body: Any) -> dict[str, Any]:
    if cond is not None:
        body["if"] = cond
    return {kind: dict(sorted(body.items()))}


RAW = "agentpassport.raw"
_IS_VAULT = "ctx.agentpassport?.raw?.type != null && ctx.agentpassport?.raw?.request != null"
_IS_OPA = "ctx.agentpassport?.raw?.decision_id != null"
_IS_ENVOY = "ctx.agentpassport?.raw?.duration_ms != null && ctx.agentpassport?.raw?.request_id != null"
_IS_SPIRE = "ctx.agentpassport?.raw?.msg != null && ctx.agentpassport?.raw?.level != null"


def _ds(name: str) -> str:
    return f"ctx.event?.dataset == '{name}'"


def ingest_pipeline(platform: Platform) -> dict[str, Any]:
    """Elasticsearch ingest pipeline: SPIRE, Vault audit and OPA decision logs to ECS.

    Input documents carry the raw JSON log line in ``message`` (Filebeat/Elastic Agent
    container input). Output: ``@timestamp``, ``event.dataset``, ``event.action``,
    ``event.outcome``, ``spiffe_id``, ``trace.id``, ``source.ip``, ``url.path``,
    ``http.request.method``, ``agentpassport.agent``, ``agentpassport.database.user``.
    Conditions use only null-safe field access, ``==``/``!=``, ``&&``/``||`` and
    ``startsWith`` so they stay readable (and the tests evaluate them).
    """
    cfg = platform.config
    jwt_prefix = f"{cfg.vault.jwt_mount}-"
    vault, opa, spire, envoy = _ds("vault.audit"), _ds("opa.decision"), _ds("spire"), _ds("envoy.access")
    p: list[dict[str, Any]] = [
        _proc("set", field="ecs.version", value=ECS_VERSION),
        _proc("set", "ctx.message != null", field="event.original", copy_from="message", ignore_empty_value=True),
        _proc("json", "ctx.message != null", field="message", target_field=RAW, ignore_failure=True),
        _proc("set", _IS_VAULT, field="event.dataset", value="vault.audit"),
        _proc("set", _IS_OPA, field="event.dataset", value="opa.decision"),
        _proc("set", _IS_ENVOY, field="event.dataset", value="envoy.access"),
        _proc("set", _IS_SPIRE + " && ctx.event?.dataset == null", field="event.dataset", value="spire"),
        _proc("set", "ctx.event?.dataset != null", field="event.kind", value="event"),
        _proc("set", "ctx.event?.dataset != null", field="event.stack", value=platform.stack),
        _proc("set", "ctx.event?.dataset != null", field="agentpassport.trust_domain", value=cfg.trust_domain),
        # ---- Vault audit device (file/socket JSON)
        _proc("date", vault, field=f"{RAW}.time", formats=["ISO8601"], ignore_failure=True),
        _proc("rename", vault, field=f"{RAW}.type", target_field="agentpassport.vault.log_type", ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.request.path", target_field="url.path", ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.request.operation", target_field="agentpassport.vault.operation",
              ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.request.remote_address", target_field="source.ip", ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.request.id", target_field="agentpassport.vault.request_id",
              ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.auth.metadata.role", target_field="agentpassport.vault.role",
              ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.auth.display_name", target_field="user.name", ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.response.data.username", target_field="agentpassport.database.user",
              ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.error", target_field="error.message", ignore_missing=True),
        _proc("rename", vault, field=f"{RAW}.request.headers.traceparent", target_field="agentpassport.traceparent",
              ignore_missing=True),
        # JWT logins: the token's display name is "<mount>-<sub>", and sub is the SPIFFE ID.
        _proc("gsub", f"{vault} && ctx.user?.name != null && ctx.user.name.startsWith('{jwt_prefix}spiffe://')",
              field="user.name", pattern="^" + re.escape(jwt_prefix), replacement="", target_field="spiffe_id"),
        _proc("gsub", f"{vault} && ctx.agentpassport?.vault?.role != null "
                      "&& ctx.agentpassport.vault.role.startsWith('agent-')",
              field="agentpassport.vault.role", pattern="^agent-", replacement="", target_field="agentpassport.agent"),
        _proc("set", vault, field="event.action", value="vault-{{{agentpassport.vault.operation}}}"),
        _proc("set", f"{vault} && ctx.url?.path != null && ctx.url.path.contains('/creds/')",
              field="event.action", value="vault-database-credentials"),
        _proc("set", f"{vault} && ctx.url?.path != null && ctx.url.path.startsWith('auth/') "
                     "&& ctx.url.path.endsWith('/login')",
              field="event.action", value="vault-login"),
        _proc("set", f"{vault} && ctx.agentpassport?.vault?.log_type == 'response' && ctx.error?.message == null",
              field="event.outcome", value="success"),
        _proc("set", f"{vault} && ctx.error?.message != null", field="event.outcome", value="failure"),
        _proc("set", f"{vault} && ctx.event?.outcome == null", field="event.outcome", value="unknown"),
        # ---- OPA decision logs (opa-envoy-plugin, console or HTTP upload)
        _proc("date", opa, field=f"{RAW}.timestamp", formats=["ISO8601"], ignore_failure=True),
        _proc("rename", opa, field=f"{RAW}.decision_id", target_field="event.id", ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.attributes.source.principal", target_field="spiffe_id",
              ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.attributes.destination.principal",
              target_field="agentpassport.destination.spiffe_id", ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.attributes.source.address.socketAddress.address",
              target_field="source.ip", ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.attributes.request.http.method",
              target_field="http.request.method", ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.parsed_path", target_field="agentpassport.opa.parsed_path",
              ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.attributes.request.http.path", target_field="url.original",
              ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.attributes.request.http.headers.traceparent",
              target_field="agentpassport.traceparent", ignore_missing=True),
        _proc("rename", opa, field=f"{RAW}.input.attributes.request.http.headers.x-request-id",
              target_field="http.request.id", ignore_missing=True),
        _proc("set", f"{opa} && ctx.url?.original != null", field="url.path", copy_from="url.original"),
        _proc("gsub", f"{opa} && ctx.url?.path != null", field="url.path", pattern="\\?.*$", replacement=""),
        # The policy's result is either a boolean or an object with "allowed" (and headers).
        _proc("rename", f"{opa} && ctx.agentpassport?.raw?.result instanceof Map",
              field=f"{RAW}.result.allowed", target_field="agentpassport.opa.allowed", ignore_missing=True),
        _proc("rename", f"{opa} && ctx.agentpassport?.raw?.result instanceof Boolean",
              field=f"{RAW}.result", target_field="agentpassport.opa.allowed"),
        _proc("rename", f"{opa} && ctx.agentpassport?.raw?.result instanceof Map", field=f"{RAW}.result.reason",
              target_field="event.reason", ignore_missing=True),
        _proc("set", opa, field="event.action", value="authorization-check"),
        _proc("set", f"{opa} && ctx.agentpassport?.opa?.allowed == true", field="event.outcome", value="success"),
        _proc("set", f"{opa} && ctx.agentpassport?.opa?.allowed != true", field="event.outcome", value="failure"),
        # ---- Envoy gateway access log (the API call; OPA's reason and the agent ride along)
        _proc("date", envoy, field=f"{RAW}.time", formats=["ISO8601"], ignore_failure=True),
        _proc("rename", envoy, field=f"{RAW}.spiffe_id", target_field="spiffe_id", ignore_missing=True),
        _proc("rename", envoy, field=f"{RAW}.method", target_field="http.request.method", ignore_missing=True),
        _proc("rename", envoy, field=f"{RAW}.path", target_field="url.original", ignore_missing=True),
        _proc("rename", envoy, field=f"{RAW}.status", target_field="http.response.status_code", ignore_missing=True),
        _proc("rename", envoy, field=f"{RAW}.request_id", target_field="http.request.id", ignore_missing=True),
        _proc("rename", envoy, field=f"{RAW}.authz_reason", target_field="event.reason", ignore_missing=True),
        _proc("rename", f"{envoy} && ctx.agentpassport?.raw?.agent != null && ctx.agentpassport.raw.agent != '-'",
              field=f"{RAW}.agent", target_field="agentpassport.agent"),
        _proc("set", f"{envoy} && ctx.url?.original != null", field="url.path", copy_from="url.original"),
        _proc("gsub", f"{envoy} && ctx.url?.path != null", field="url.path", pattern="\\?.*$", replacement=""),
        _proc("set", envoy, field="event.action", value="gateway-request"),
        _proc("set", f"{envoy} && ctx.agentpassport?.raw?.authz_allowed == true", field="event.outcome",
              value="success"),
        _proc("set", f"{envoy} && ctx.agentpassport?.raw?.authz_allowed != true", field="event.outcome",
              value="failure"),
        # ---- SPIRE server and agent logs (log_format json)
        _proc("date", spire, field=f"{RAW}.time", formats=["ISO8601"], ignore_failure=True),
        _proc("rename", spire, field=f"{RAW}.spiffe_id", target_field="spiffe_id", ignore_missing=True),
        _proc("rename", spire, field=f"{RAW}.entry_id", target_field="agentpassport.spire.entry_id",
              ignore_missing=True),
        _proc("rename", spire, field=f"{RAW}.level", target_field="log.level", ignore_missing=True),
        _proc("rename", spire, field=f"{RAW}.subsystem_name", target_field="agentpassport.spire.subsystem",
              ignore_missing=True),
        _proc("rename", spire, field=f"{RAW}.caller_id", target_field="agentpassport.spire.caller_id",
              ignore_missing=True),
        _proc("rename", spire, field=f"{RAW}.method", target_field="agentpassport.spire.method", ignore_missing=True),
        _proc("rename", spire, field=f"{RAW}.msg", target_field="message", ignore_missing=True, override=True),
        _proc("set", spire, field="event.action", value="spire-log"),
        _proc("set", f"{spire} && ctx.message == 'Creating X509-SVID'", field="event.action",
              value="x509-svid-created"),
        _proc("set", f"{spire} && ctx.message == 'Renewing X509-SVID'", field="event.action",
              value="x509-svid-renewed"),
        _proc("set", f"{spire} && (ctx.event?.action == 'x509-svid-created' "
                     "|| ctx.event?.action == 'x509-svid-renewed')",
              field="event.outcome", value="success"),
        _proc("set", f"{spire} && ctx.agentpassport?.raw?.type == 'audit' "
                     "&& ctx.agentpassport?.raw?.status == 'error'",
              field="event.outcome", value="failure"),
        _proc("set", f"{spire} && ctx.agentpassport?.raw?.type == 'audit' "
                     "&& ctx.agentpassport?.raw?.status == 'success'",
              field="event.outcome", value="success"),
        # ---- W3C trace context: traceparent = version-traceid-spanid-flags
        _proc("dissect", "ctx.agentpassport?.traceparent != null", field="agentpassport.traceparent",
              pattern="%{?version}-%{trace.id}-%{span.id}-%{?flags}", ignore_failure=True),
        _proc("remove", None, field=[RAW, "agentpassport.traceparent"], ignore_missing=True),
    ]
    return {
        "description": f"Agent Passport ({platform.stack}): SPIRE, Vault audit and OPA decision logs to ECS "
                       "with spiffe_id, trace.id, event.action and event.outcome",
        "processors": p,
        "on_failure": [
            _proc("set", None, field="event.kind", value="pipeline_error"),
            _proc("set", None, field="error.message", value="{{ _ingest.on_failure_message }}"),
        ],
    }


def logstash_config(platform: Platform) -> str:
    """The same mapping as :func:`ingest_pipeline` as a Logstash filter (stacks with Logstash)."""
    cfg = platform.config
    jwt_prefix = f"{cfg.vault.jwt_mount}-"
    idx = cfg.observe.logs.index_pattern.rstrip("*").rstrip("-")
    return f"""# Agent Passport ({platform.stack}): SPIRE, Vault audit and OPA decision logs to ECS.
# Generated by `passport render`; input and output blocks are yours (beats/http/socket in,
# elasticsearch out). See docs/observe.md.
filter {{
  json {{ source => "message" target => "[agentpassport][raw]" skip_on_invalid_json => true }}
  mutate {{ add_field => {{ "[ecs][version]" => "{ECS_VERSION}" "[event][stack]" => "{platform.stack}" }} }}
  if [agentpassport][raw][type] and [agentpassport][raw][request] {{
    mutate {{ add_field => {{ "[event][dataset]" => "vault.audit" "[event][kind]" => "event" }} }}
    date {{ match => ["[agentpassport][raw][time]", "ISO8601"] }}
    mutate {{
      rename => {{
        "[agentpassport][raw][type]" => "[agentpassport][vault][log_type]"
        "[agentpassport][raw][request][path]" => "[url][path]"
        "[agentpassport][raw][request][operation]" => "[agentpassport][vault][operation]"
        "[agentpassport][raw][request][remote_address]" => "[source][ip]"
        "[agentpassport][raw][request][id]" => "[agentpassport][vault][request_id]"
        "[agentpassport][raw][auth][metadata][role]" => "[agentpassport][vault][role]"
        "[agentpassport][raw][auth][display_name]" => "[user][name]"
        "[agentpassport][raw][response][data][username]" => "[agentpassport][database][user]"
        "[agentpassport][raw][error]" => "[error][message]"
        "[agentpassport][raw][request][headers][traceparent]" => "[agentpassport][traceparent]"
      }}
    }}
    if [user][name] =~ /^{re.escape(jwt_prefix)}spiffe:\\/\\// {{
      mutate {{ copy => {{ "[user][name]" => "spiffe_id" }} }}
      mutate {{ gsub => ["spiffe_id", "^{re.escape(jwt_prefix)}", ""] }}
    }}
    if [agentpassport][vault][role] =~ /^agent-/ {{
      mutate {{ copy => {{ "[agentpassport][vault][role]" => "[agentpassport][agent]" }} }}
      mutate {{ gsub => ["[agentpassport][agent]", "^agent-", ""] }}
    }}
    if [url][path] =~ /\\/creds\\// {{
      mutate {{ add_field => {{ "[event][action]" => "vault-database-credentials" }} }}
    }} else if [url][path] =~ /^auth\\/.*\\/login$/ {{
      mutate {{ add_field => {{ "[event][action]" => "vault-login" }} }}
    }} else {{
      mutate {{ add_field => {{ "[event][action]" => "vault-%{{[agentpassport][vault][operation]}}" }} }}
    }}
    if [error][message] {{
      mutate {{ add_field => {{ "[event][outcome]" => "failure" }} }}
    }} else if [agentpassport][vault][log_type] == "response" {{
      mutate {{ add_field => {{ "[event][outcome]" => "success" }} }}
    }} else {{
      mutate {{ add_field => {{ "[event][outcome]" => "unknown" }} }}
    }}
  }} else if [agentpassport][raw][decision_id] {{
    mutate {{
      add_field => {{
        "[event][dataset]" => "opa.decision" "[event][kind]" => "event" "[event][action]" => "authorization-check"
      }}
    }}
    date {{ match => ["[agentpassport][raw][timestamp]", "ISO8601"] }}
    mutate {{
      rename => {{
        "[agentpassport][raw][decision_id]" => "[event][id]"
        "[agentpassport][raw][input][attributes][source][principal]" => "spiffe_id"
        "[agentpassport][raw][input][attributes][destination][principal]" => "[agentpassport][destination][spiffe_id]"
        "[agentpassport][raw][input][attributes][source][address][socketAddress][address]" => "[source][ip]"
        "[agentpassport][raw][input][attributes][request][http][method]" => "[http][request][method]"
        "[agentpassport][raw][input][attributes][request][http][path]" => "[url][original]"
        "[agentpassport][raw][input][attributes][request][http][headers][traceparent]" => "[agentpassport][traceparent]"
        "[agentpassport][raw][input][attributes][request][http][headers][x-request-id]" => "[http][request][id]"
      }}
    }}
    if [url][original] {{
      grok {{ match => {{ "[url][original]" => "^%{{URIPATH:[url][path]}}(?:\\?%{{GREEDYDATA:[url][query]}})?$" }} }}
    }}
    if [agentpassport][raw][result] == "true" or [agentpassport][raw][result][allowed] == "true" {{
      mutate {{ add_field => {{ "[event][outcome]" => "success" }} }}
    }} else {{
      mutate {{ add_field => {{ "[event][outcome]" => "failure" }} }}
    }}
  }} else if [agentpassport][raw][msg] and [agentpassport][raw][level] {{
    mutate {{ add_field => {{ "[event][dataset]" => "spire" "[event][kind]" => "event" }} }}
    date {{ match => ["[agentpassport][raw][time]", "ISO8601"] }}
    mutate {{
      rename => {{
        "[agentpassport][raw][spiffe_id]" => "spiffe_id"
        "[agentpassport][raw][entry_id]" => "[agentpassport][spire][entry_id]"
        "[agentpassport][raw][level]" => "[log][level]"
        "[agentpassport][raw][subsystem_name]" => "[agentpassport][spire][subsystem]"
        "[agentpassport][raw][caller_id]" => "[agentpassport][spire][caller_id]"
        "[agentpassport][raw][method]" => "[agentpassport][spire][method]"
      }}
    }}
    if [agentpassport][raw][msg] == "Creating X509-SVID" {{
      mutate {{ add_field => {{ "[event][action]" => "x509-svid-created" "[event][outcome]" => "success" }} }}
    }} else if [agentpassport][raw][msg] == "Renewing X509-SVID" {{
      mutate {{ add_field => {{ "[event][action]" => "x509-svid-renewed" "[event][outcome]" => "success" }} }}
    }} else {{
      mutate {{ add_field => {{ "[event][action]" => "spire-log" }} }}
      if [agentpassport][raw][type] == "audit" and [agentpassport][raw][status] == "error" {{
        mutate {{ add_field => {{ "[event][outcome]" => "failure" }} }}
      }}
    }}
  }}
  if [agentpassport][traceparent] {{
    dissect {{
      mapping => {{ "[agentpassport][traceparent]" => "%{{?version}}-%{{[trace][id]}}-%{{[span][id]}}-%{{?flags}}" }}
    }}
  }}
  mutate {{
    add_field => {{ "[agentpassport][trust_domain]" => "{cfg.trust_domain}" }}
    remove_field => ["[agentpassport][raw]", "[agentpassport][traceparent]"]
  }}
}}
# Send the result to indices matching {cfg.observe.logs.index_pattern} (e.g. "{idx}-%{{+YYYY.MM.dd}}").
"""


# --------------------------------------------------------------------------- anomaly rules


def kql_quote(value: str) -> str:
    """A KQL quoted phrase (exact match)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def kql_wildcard(value: str) -> str:
    """An unquoted KQL value where only '*' is a wildcard (other specials escaped)."""
    return re.sub(r'([\\():<>"\s{}])', r"\\\1", value)


def kql_literal(value: str) -> str:
    """An unquoted KQL value matching ``value`` literally: every special escaped, '*' included
    (append a bare '*' to make it a prefix)."""
    return re.sub(r'([\\():<>"*\s{}])', r"\\\1", value)


def _any(field_name: str, values: Iterable[str]) -> str:
    vals = list(values)
    if len(vals) == 1:
        return f"{field_name}: {vals[0]}"
    return f"{field_name}: ({' or '.join(vals)})"


def vault_allowed_paths(platform: Platform, agent: ResolvedAgent) -> list[str]:
    """Vault paths (KQL values) the agent's token may touch according to its manifest."""
    vals = [kql_quote(p) for p in VAULT_SELF_PATHS]
    for _, g in agent.grants_of("database"):
        vals.append(kql_quote(f"{database_mount(g.cluster)}/creds/{agent.identity.database_role(g)}"))
    for _, g in agent.grants_of("vault"):
        path = g.path.replace("+", "*")
        vals.append(kql_wildcard(path) if "*" in path else kql_quote(path))
    return sorted(set(vals))


def http_allowed(platform: Platform, agent: ResolvedAgent) -> list[str]:
    """KQL clauses for each declared call through a gateway (service, methods, paths)."""
    clauses = []
    for _, g in agent.grants_of("http"):
        svc = platform.service(g.service)
        if svc is None or not svc.manifest.spec.gateway:
            continue
        gw = platform.gateway(svc)
        paths = []
        for p in g.paths:
            if p.kind == "exact":
                paths.append(kql_quote(p.value))
            else:
                # a '*' written in the path is a character of it, never a KQL wildcard
                paths.extend([kql_quote(p.value), kql_literal(p.value.rstrip("/")) + "/*"])
        clauses.append(
            f"(agentpassport.destination.spiffe_id: {kql_quote(gw.spiffe_id)} and "
            f"{_any('http.request.method', sorted(g.methods))} and {_any('url.path', paths)})"
        )
    return clauses


def _rule(platform: Platform, rule_id: str, name: str, description: str, query: str, severity: str,
          section: str, agent: ResolvedAgent | None = None, **extra: Any) -> dict[str, Any]:
    obs = platform.config.observe
    risk = {"low": 21, "medium": 47, "high": 73, "critical": 99}[severity]
    tags = ["agent-passport", f"stack:{platform.stack}"]
    if agent is not None:
        tags += [f"agent:{agent.name}", f"team:{agent.identity.team}"]
    rule: dict[str, Any] = {
        "rule_id": rule_id,
        "name": name,
        "description": description,
        "type": "query",
        "language": "kuery",
        "query": query,
        "index": [obs.logs.index_pattern],
        "severity": severity,
        "risk_score": risk,
        "interval": "5m",
        "from": "now-6m",
        "enabled": True,
        "tags": tags,
        "references": [f"{obs.runbook_base_url}#{runbook_anchor(section)}"],
        "max_signals": 100,
        "version": 1,
    }
    if agent is not None:
        rule["note"] = (f"Owner: {agent.manifest.metadata.owner} (team {agent.identity.team}). "
                        f"Manifest: {agent.source.file}. SPIFFE ID: {agent.identity.spiffe_id}.")
    rule.update(extra)
    return rule


def anomaly_rules(platform: Platform) -> dict[str, Any]:
    """Detection rules generated from the manifests (Kibana security detection engine format)
    and per-agent absence rules (Kibana alerting ``.es-query``)."""
    cfg = platform.config
    t = cfg.observe.thresholds
    stack = platform.stack
    rules: list[dict[str, Any]] = []
    absence: list[dict[str, Any]] = []
    for a in platform.active_agents:
        sid = kql_quote(a.identity.spiffe_id)
        who = f"(spiffe_id: {sid} or agentpassport.agent: {kql_quote(a.name)})"
        outside = [f'(event.dataset: "opa.decision" and spiffe_id: {sid} and event.outcome: "failure")']
        http = http_allowed(platform, a)
        if http:
            outside.append(f'(event.dataset: "opa.decision" and spiffe_id: {sid} and event.outcome: "success" '
                           f"and not ({' or '.join(http)}))")
        else:
            outside.append(f'(event.dataset: "opa.decision" and spiffe_id: {sid} and event.outcome: "success")')
        outside.append(
            f'(event.dataset: "vault.audit" and agentpassport.vault.log_type: "request" and {who} '
            f'and not event.action: "vault-login" and not {_any("url.path", vault_allowed_paths(platform, a))})'
        )
        rules.append(_rule(
            platform, f"agentpassport-{stack}-{a.name}-outside-grants",
            f"Agent Passport: {a.name} acted outside its declared grants",
            f"An OPA decision or a Vault request by {a.name} ({a.identity.spiffe_id}) that its manifest "
            "does not declare: a denied call, an allowed call no grant explains (policy drift), or a "
            "Vault path beyond its database roles and vault grants.",
            " or ".join(outside), "high", "Anomaly: outside declared grants", a,
        ))
        nets = list(a.manifest.spec.source_networks)
        if nets:
            rules.append(_rule(
                platform, f"agentpassport-{stack}-{a.name}-outside-networks",
                f"Agent Passport: {a.name} used from outside its source networks",
                f"Requests by {a.name} from an address outside {', '.join(nets)} (spec.sourceNetworks): "
                "its credentials may be in use elsewhere.",
                f"{who} and source.ip: * and not {_any('source.ip', [kql_quote(n) for n in nets])}",
                "high", "Anomaly: outside source networks", a,
            ))
        window = int(t.renewal_grace_factor * a.identity.x509_svid_ttl_seconds / 2)
        query = {"query": {"bool": {"filter": [
            {"term": {"spiffe_id": a.identity.spiffe_id}},
            {"terms": {"event.action": ["x509-svid-created", "x509-svid-renewed"]}},
        ]}}}
        absence.append({
            "name": f"agentpassport-{stack}-{a.name}-svid-not-renewed",
            "rule_type_id": ".es-query",
            "consumer": "alerts",
            "schedule": {"interval": "1m"},
            "tags": ["agent-passport", f"stack:{stack}", f"agent:{a.name}"],
            "params": {
                "searchType": "esQuery",
                "index": [cfg.observe.logs.index_pattern],
                "timeField": "@timestamp",
                "esQuery": dump_json(query).strip(),
                "size": 0,
                "threshold": [1],
                "thresholdComparator": "<",
                "timeWindowSize": window,
                "timeWindowUnit": "s",
            },
        })
    if platform.suspended_agents:
        ids = [kql_quote(a.identity.spiffe_id) for a in platform.suspended_agents]
        names = [kql_quote(a.name) for a in platform.suspended_agents]
        rules.append(_rule(
            platform, f"agentpassport-{stack}-suspended-identity-used",
            "Agent Passport: a suspended identity was used",
            "An identity whose manifest is suspended (" + ", ".join(a.name for a in platform.suspended_agents)
            + ") appears in an OPA decision, a Vault request or an SVID renewal. Revoke it now: "
            "`passport revoke <agent> --stack " + stack + " --yes`.",
            f"{_any('spiffe_id', ids)} or {_any('agentpassport.agent', names)}",
            "critical", "Anomaly: suspended or deleted identity used",
        ))
    known = [kql_quote(a.identity.spiffe_id) for a in platform.agents]
    unknown = ('(event.dataset: "opa.decision" or event.dataset: "vault.audit") and spiffe_id: '
               + kql_wildcard(f"spiffe://{cfg.trust_domain}/") + "*")
    if known:
        unknown += f" and not {_any('spiffe_id', known)}"
    rules.append(_rule(
        platform, f"agentpassport-{stack}-unknown-identity-used",
        "Agent Passport: an identity with no manifest was used",
        f"A SPIFFE ID of {cfg.trust_domain} with no manifest in stack {stack} (a deleted agent, or an "
        "identity minted outside Agent Passport) called a gateway or Vault.",
        unknown, "critical", "Anomaly: suspended or deleted identity used",
    ))
    rules.append(_rule(
        platform, f"agentpassport-{stack}-opa-deny-burst",
        "Agent Passport: OPA deny spike for one agent",
        f"More than {t.deny_burst_per_agent} denied authorization checks for one SPIFFE ID in 5 minutes.",
        'event.dataset: "opa.decision" and event.outcome: "failure"', "medium", "AgentPassportOpaDenySpike",
        type="threshold", threshold={"field": ["spiffe_id"], "value": t.deny_burst_per_agent},
    ))
    rules.append(_rule(
        platform, f"agentpassport-{stack}-vault-lease-burst",
        "Agent Passport: Vault lease spike for one role",
        f"More than {t.lease_burst_per_role} database credential requests for one Vault role in 5 minutes "
        "(a healthy agent asks about once per credential TTL).",
        'event.dataset: "vault.audit" and event.action: "vault-database-credentials" '
        'and agentpassport.vault.log_type: "request"',
        "medium", "AgentPassportVaultLeaseSpike",
        type="threshold", threshold={"field": ["url.path"], "value": t.lease_burst_per_role},
    ))
    rules.sort(key=lambda r: r["rule_id"])
    absence.sort(key=lambda r: r["name"])
    return {"detectionRules": rules, "alertingRules": absence}


def detection_rules_ndjson(platform: Platform) -> str:
    """The detection rules as NDJSON for ``POST /api/detection_engine/rules/_import``."""
    import json

    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in anomaly_rules(platform)["detectionRules"])


# --------------------------------------------------------------------------- certificates


def _der_item(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER item at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    return tag, pos, pos + length


def _der_time(tag: int, raw: bytes) -> int:
    text = raw.decode("ascii")
    fmt = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"
    return int(datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp())


def certificate_not_after(der: bytes) -> int:
    """NotAfter (unix seconds) of a DER X.509 certificate."""
    _, cert, _ = _der_item(der, 0)           # Certificate
    _, tbs, _ = _der_item(der, cert)         # tbsCertificate
    pos = tbs
    tag, _, end = _der_item(der, pos)
    if tag == 0xA0:                          # [0] version
        pos = end
    for _ in range(3):                       # serial, signature algorithm, issuer
        _, _, pos = _der_item(der, pos)
    _, validity, _ = _der_item(der, pos)
    _, _, after_not_before = _der_item(der, validity)
    tag, start, end = _der_item(der, after_not_before)
    return _der_time(tag, der[start:end])


_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)


def pem_not_after(pem: str) -> int | None:
    """Earliest NotAfter of the certificates in a PEM bundle, or None if there is none to read."""
    found = []
    for body in _PEM.findall(pem or ""):
        try:
            found.append(certificate_not_after(base64.b64decode("".join(body.split()), validate=True)))
        except (ValueError, IndexError):
            continue
    return min(found) if found else None


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
