"""Observe section: scraping, alert thresholds, dashboards and the log pipeline.

Every threshold an alert uses is a field here, so a stack tunes its alerting without code
changes and the rendered PrometheusRule shows exactly which number fired.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from components.config.base import Section
from components.durations import Duration, seconds
from components.manifest.models import LabelKey, LabelValue

Ratio = Annotated[float, Field(gt=0, le=1)]


class ObserveThresholds(Section):
    """Alert thresholds. Rates are per second over a 5 minute window unless said otherwise."""

    svid_issuance_spike_factor: float = Field(
        default=3.0,
        gt=1,
        description="Alert when X.509-SVID signing over 5m runs this many times above the "
        "same rate one hour earlier (a provisioning storm, or SVIDs being harvested).",
    )
    svid_issuance_min_rate: float = Field(
        default=1.0,
        ge=0,
        description="...and above this many signings per second, so an idle fleet waking up "
        "does not page anyone.",
    )
    rejection_ratio: Ratio = Field(
        default=0.05,
        description="Alert when more than this share of node attestations or SVID requests "
        "to the SPIRE server fail, sustained for rejectionFor.",
    )
    rejection_for: Duration = Field(
        default="15m", description="How long the rejection ratio must hold before the alert fires."
    )
    renewal_grace_factor: float = Field(
        default=2.0,
        ge=1.5,
        description="An agent that has not renewed its X.509-SVID within this many times its "
        "renewal point (half its TTL) raises an alert. 2 means: by the time it expires.",
    )
    spire_ca_min_remaining: Duration | None = Field(
        default=None,
        description="Alert when SPIRE's active X.509 CA has less than this left. SPIRE "
        "activates the next CA when about a sixth of the TTL remains, so less than that means "
        "rotation is stuck. Default: spire.caTtl / 12.",
    )
    certificate_min_remaining: Duration = Field(
        default="720h",
        description="Alert when the upstream intermediate, trust anchor or the Linkerd "
        "identity issuer has less than this left (re-issue it with `pulumi up`).",
    )
    lease_spike_factor: float = Field(
        default=3.0,
        gt=1,
        description="Alert when Vault lease creation on a database mount over 5m runs this many "
        "times above the same rate one hour earlier.",
    )
    lease_min_rate: float = Field(
        default=0.5,
        ge=0,
        description="...and above this many leases per second (per mount).",
    )
    lease_burst_per_role: int = Field(
        default=30,
        ge=1,
        description="Log rule: more credential requests for one Vault database role within "
        "5m than this is a lease spike for that agent (a healthy agent asks once per TTL).",
    )
    deny_burst_per_agent: int = Field(
        default=20,
        ge=1,
        description="Log rule: more OPA denies for one SPIFFE ID within 5m than this raises a "
        "deny spike for that agent.",
    )
    alert_for: Duration = Field(
        default="10m", description="How long spike and down conditions must hold before firing."
    )


class LogPipeline(Section):
    """Where SPIRE, Vault audit and OPA decision logs are normalised to ECS."""

    kind: Literal["elasticsearch", "logstash"] = Field(
        default="elasticsearch",
        description="elasticsearch: an ingest pipeline (observe/ingest-pipeline.json); "
        "logstash: a pipeline config (observe/logstash.conf). Both produce the same ECS fields.",
    )
    index_pattern: str = Field(
        default="logs-agentpassport-*",
        min_length=1,
        description="Index pattern the anomaly rules search (where the pipeline's output lands).",
    )


class ObserveConfig(Section):
    """Monitoring of the identity system itself: an identity nobody watches is a liability."""

    prometheus_operator: bool = Field(
        default=True,
        description="Create ServiceMonitor/PodMonitor/PrometheusRule objects (needs the "
        "prometheus-operator CRDs in the cluster). Off: scrape by the documented "
        "prometheus.io/* pod annotations and load observe/prometheus-rules.yaml into Prometheus.",
    )
    namespace: str = Field(
        default="monitoring",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Namespace of the monitors, rules and the dashboard ConfigMap (one that "
        "your Prometheus and Grafana sidecar watch).",
    )
    selector_labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        description="Extra labels on every monitor and rule, for Prometheus's "
        "serviceMonitorSelector/podMonitorSelector/ruleSelector (kube-prometheus-stack "
        "selects `release: <release name>`).",
    )
    scrape_interval: Duration = Field(default="30s", description="Scrape interval of the monitors.")
    linkerd_namespace: str = Field(
        default="linkerd",
        description="Namespace of the Linkerd control plane (identity issuer metric).",
    )
    runbook_base_url: str = Field(
        default="docs/runbook.md",
        min_length=1,
        description="Where the incident runbook lives; every alert's runbook_url annotation is "
        "<this>#<section>. Set it to the runbook's URL in your repository browser.",
    )
    dashboard: bool = Field(default=True, description="Ship the Grafana fleet dashboard ConfigMap.")
    grafana_folder: str = Field(
        default="Agent Passport",
        min_length=1,
        max_length=63,
        description="Grafana folder the sidecar files the dashboard under "
        "(grafana_folder annotation).",
    )
    thresholds: ObserveThresholds = Field(
        default_factory=ObserveThresholds, description="Alert thresholds."
    )
    logs: LogPipeline = Field(default_factory=LogPipeline, description="Log pipeline to ECS.")

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if seconds(self.scrape_interval) > 300:
            raise ValueError(
                "scrapeInterval above 5m leaves the 5m rate() windows empty; use 30s or 1m"
            )
        return self
