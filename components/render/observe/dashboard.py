"""The fleet's identity-health dashboard (Grafana JSON) and its ConfigMap."""

from __future__ import annotations

from typing import Any

from components.platform_model import Platform
from components.render.observe.alerts import _sel
from components.render.observe.common import (
    _NOT_REJECTED,
    DASHBOARD_FILE,
    DASHBOARD_UID,
    JOB_LINKERD_IDENTITY,
    JOB_OPA,
    JOB_SPIRE_AGENT,
    JOB_SPIRE_SERVER,
    JOB_VAULT,
    _meta,
)
from components.render.yamlout import dump_json

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
