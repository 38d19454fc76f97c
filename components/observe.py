"""IdentityHealth: the monitors, alert rules and fleet dashboard that watch the identity system.

Everything it registers comes from :mod:`components.render.observe` (the same dicts
``passport render`` writes): PodMonitors and a PrometheusRule (monitoring.coreos.com/v1) when
the stack uses prometheus-operator, and the Grafana dashboard ConfigMap. The log pipeline and
the anomaly rules are files loaded into Elasticsearch/Kibana (docs/observe.md), not resources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi

from components.kube import kube_objects
from components.platform_model import Platform
from components.render.observe import (
    alerts,
    dashboard_configmap,
    observe_objects,
    pem_not_after,
    prometheus_rule,
)


@dataclass(frozen=True)
class IdentityHealthArgs:
    """Inputs of :class:`IdentityHealth`."""

    platform: Platform
    """The validated platform."""

    certificate_pems: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Certificates to watch for expiry, by name (e.g. the upstream chain and trust bundle):
    the earliest NotAfter of each becomes a recording rule the expiry alert reads."""


def _expiries(pems: Mapping[str, str]) -> dict[str, int]:
    out = {}
    for name, pem in pems.items():
        not_after = pem_not_after(pem)
        if not_after is not None:
            out[name] = not_after
    return out


class IdentityHealth(pulumi.ComponentResource):
    """Prometheus scraping, alert rules and the Grafana dashboard for one stack."""

    alert_names: pulumi.Output[list[str]]
    """Every alert the PrometheusRule defines (each has a runbook section)."""

    rule_name: pulumi.Output[str] | None
    """Name of the PrometheusRule (None without prometheus-operator)."""

    dashboard_configmap: pulumi.Output[str] | None
    """Name of the dashboard ConfigMap (None when the dashboard is off)."""

    def __init__(self, name: str, args: IdentityHealthArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:observe:IdentityHealth", name, None, opts)
        platform = args.platform
        obs = platform.config.observe
        rule = prometheus_rule(platform)
        static = [o for o in observe_objects(platform) if o["kind"] != "PrometheusRule"]
        created = kube_objects(name, static, self)
        self.rule_name = None
        if obs.prometheus_operator:
            obj: dict[str, Any] = dict(rule)
            if args.certificate_pems:
                names = sorted(args.certificate_pems)
                obj["spec"] = pulumi.Output.all(*[args.certificate_pems[n] for n in names]).apply(
                    lambda pems: prometheus_rule(platform, _expiries(dict(zip(names, pems, strict=True))))["spec"]
                )
            created |= kube_objects(name, [obj], self)
            self.rule_name = pulumi.Output.from_input(str(rule["metadata"]["name"]))
        self.dashboard_configmap = None
        if obs.dashboard:
            self.dashboard_configmap = pulumi.Output.from_input(str(dashboard_configmap(platform)["metadata"]["name"]))
        self.resources = created
        self.alert_names = pulumi.Output.from_input(
            sorted(a.name for group in alerts(platform).values() for a in group)
        )
        self.register_outputs({
            "alertNames": self.alert_names,
            "ruleName": self.rule_name,
            "dashboardConfigMap": self.dashboard_configmap,
        })
