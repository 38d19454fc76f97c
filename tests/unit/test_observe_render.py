"""Identity-health renderer: CRD-valid monitors and rules, PromQL that parses (promtool), thresholds
from stack config, runbook sections, the dashboard, the ECS pipeline (evaluated on real-shaped
log lines) and the anomaly rules generated from the manifests."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.config import StackConfig
from components.platform_model import Platform, load_platform
from components.render import observe as ob
from components.render.artifacts import render_all
from tests.support.tools import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "tests" / "fixtures" / "crds" / "prometheus-operator"
TOOLS = Path.home() / ".cache" / "agent-passport" / "tools" / "bin"
STACKS = ("dev", "staging", "prod")


def _platform(stack: str, **observe: Any) -> Platform:
    p = load_platform(stack)
    if not observe:
        return p
    data = p.config.model_dump(by_alias=True)
    data["observe"] = {**data["observe"], **observe}
    cfg = StackConfig.model_validate(data)
    return Platform(p.stack, cfg, p.config_file, p.agents, p.services, p.excluded)


def _schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"monitoring.coreos.com_{kind.lower()}s.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert crd["spec"]["group"] == "monitoring.coreos.com"
    assert crd["spec"]["names"]["kind"] == kind
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _validate(obj: dict[str, Any]) -> None:
    """Validate a body against its CRD schema. The schema itself is not meta-checked: its Go
    regexes (e.g. '^(?i)(abort|warn)?$') are not Python regexes, and none of them applies to
    fields we render."""
    jsonschema.Draft202012Validator(_schema(obj["kind"])).validate(obj)


def _promtool() -> Path:
    tool = TOOLS / "promtool"
    if not tool.exists():
        found = shutil.which("promtool")
        if found is None:
            skip_or_fail(
                f"promtool not found at {tool} or on PATH: build it with `go install "
                "github.com/prometheus/prometheus/cmd/promtool@<version>` (see docs/observe.md)"
            )
        return Path(found)
    return tool


# --------------------------------------------------------------------------- CRDs and PromQL


@pytest.mark.parametrize("stack", STACKS)
def test_monitors_and_rules_validate_against_the_prometheus_operator_crds(stack: str) -> None:
    objs = ob.observe_objects(_platform(stack))
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["ConfigMap", "PodMonitor", "PodMonitor", "PodMonitor", "PodMonitor", "PrometheusRule"]
    for obj in objs:
        if obj["apiVersion"] != ob.MONITORING_API:
            continue
        _validate(obj)
    # a broken body must fail the same check (the schema really constrains rules)
    bad = ob.prometheus_rule(_platform(stack))
    bad["spec"]["groups"][1]["rules"][0]["for"] = "ten minutes"
    with pytest.raises(jsonschema.ValidationError, match="ten minutes"):
        _validate(bad)


def test_pod_monitors_select_the_spire_and_gateway_pods_by_their_real_labels_and_ports() -> None:
    from components.render import spire as spire_render
    from components.render.authz import OPA_DIAGNOSTIC_PORT

    mons = {o["metadata"]["name"]: o for o in ob.pod_monitors(_platform("prod"))}
    assert sorted(mons) == ["agentpassport-gateway-opa", "agentpassport-linkerd-identity",
                            "agentpassport-spire-agent", "agentpassport-spire-server"]
    server = mons["agentpassport-spire-server"]["spec"]
    assert server["namespaceSelector"] == {"matchNames": ["spire-system"]}
    assert server["selector"] == {"matchLabels": {"app.kubernetes.io/name": "spire-server"}}
    (ep,) = server["podMetricsEndpoints"]
    assert ep["portNumber"] == spire_render.SERVER_METRICS_PORT == 9988
    assert ep["relabelings"][0] == {"action": "replace", "targetLabel": "job", "replacement": ob.JOB_SPIRE_SERVER}
    assert mons["agentpassport-spire-agent"]["spec"]["podMetricsEndpoints"][0]["portNumber"] == 9989
    gw = mons["agentpassport-gateway-opa"]["spec"]
    # gateways exist for payments-api and slack-gateway (inference has spec.gateway: false)
    assert gw["namespaceSelector"] == {"matchNames": ["integrations", "payments"]}
    assert gw["podMetricsEndpoints"][0]["portNumber"] == OPA_DIAGNOSTIC_PORT
    assert gw["podMetricsEndpoints"][0]["path"] == "/metrics"


@pytest.mark.parametrize("stack", STACKS)
def test_every_rule_expression_parses_with_promtool(stack: str, tmp_path: Path) -> None:
    tool = _promtool()
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": ob.rule_groups(_platform(stack))}))
    run = subprocess.run([str(tool), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    # prod: 4 facts + 7 SPIRE + 2 trust + 2 Vault + 5 storm + 1 authz alerts
    assert ("SUCCESS: 21 rules found" if stack == "prod" else "SUCCESS:") in run.stdout
    # the check can fail: a broken expression is refused
    broken = {"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "sum(rate(up[5m])"}]}]}
    rules.write_text(yaml.safe_dump(broken))
    run = subprocess.run([str(tool), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode != 0


def test_dashboard_queries_parse_with_promtool(tmp_path: Path) -> None:
    tool = _promtool()
    rules = [{"record": f"agentpassport:dashboard_{i}_{j}", "expr": expr.replace("$__rate_interval", "5m")}
             for i, (_, targets, _, _) in enumerate(ob.dashboard_queries()) for j, (expr, _) in enumerate(targets)]
    path = tmp_path / "dash.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run = subprocess.run([str(tool), "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_alerts_fire_on_synthetic_series_with_promtool(tmp_path: Path) -> None:
    """promtool's rule unit tests: the CA-expiry, server-down and rejection alerts fire when they should."""
    tool = _promtool()
    platform = _platform("prod")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": ob.rule_groups(platform)}))
    ca_left = ob.spire_ca_min_remaining_seconds(platform)  # 24h / 12 = 7200
    assert ca_left == 7200
    attest = "spire_server_rpc_agent_v1_agent_attest_agent"
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                # CA expiring 1h after t=0 (below the 2h floor) -> fires after its 5m `for`
                {"series": f'spire_server_manager_x509_ca_rotate_expiration{{job="{ob.JOB_SPIRE_SERVER}"}}',
                 "values": "3600x20"},
                # only 2 of prod's 3 server replicas up
                {"series": f'up{{job="{ob.JOB_SPIRE_SERVER}", pod="spire-server-0"}}', "values": "1x40"},
                {"series": f'up{{job="{ob.JOB_SPIRE_SERVER}", pod="spire-server-1"}}', "values": "1x40"},
                {"series": f'up{{job="{ob.JOB_SPIRE_SERVER}", pod="spire-server-2"}}', "values": "0x40"},
                # 50% of attestations rejected for 30m
                {"series": f'{attest}{{job="{ob.JOB_SPIRE_SERVER}", status="OK"}}', "values": "0+10x40"},
                {"series": f'{attest}{{job="{ob.JOB_SPIRE_SERVER}", status="PermissionDenied"}}',
                 "values": "0+10x40"},
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "AgentPassportSpireCaExpiring",
                 "exp_alerts": [{"exp_labels": {"severity": "critical", "stack": "prod", "environment": "prod"},
                                 "exp_annotations": _annotations(platform, "AgentPassportSpireCaExpiring",
                                                                 {"$value | humanizeDuration": "50m 0s"})}]},
                {"eval_time": "10m", "alertname": "AgentPassportSpireServerDown",
                 "exp_alerts": [{"exp_labels": {"severity": "critical", "stack": "prod", "environment": "prod"},
                                 "exp_annotations": _annotations(platform, "AgentPassportSpireServerDown",
                                                                 {"$value": "2"})}]},
                {"eval_time": "10m", "alertname": "AgentPassportSvidRejections", "exp_alerts": []},
                {"eval_time": "25m", "alertname": "AgentPassportSvidRejections",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "stack": "prod", "environment": "prod"},
                                 "exp_annotations": _annotations(platform, "AgentPassportSvidRejections",
                                                                 {"$value | humanizePercentage": "50%"})}]},
            ],
        }],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(tests))
    run = subprocess.run([str(tool), "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def _annotations(platform: Platform, alert: str, values: dict[str, str]) -> dict[str, str]:
    rule = next(r for g in ob.rule_groups(platform) for r in g.get("rules", []) if r.get("alert") == alert)
    ann = dict(rule["annotations"])
    for expr, value in values.items():
        ann["summary"] = ann["summary"].replace("{{ " + expr + " }}", value)
    return ann


# --------------------------------------------------------------------------- thresholds and runbook


def _alert(platform: Platform, name: str) -> dict[str, Any]:
    return next(r for g in ob.rule_groups(platform) for r in g.get("rules", []) if r.get("alert") == name)


def test_thresholds_come_from_stack_config() -> None:
    default = _platform("dev")
    assert "> 3 * (sum(rate(spire_server_server_ca_sign_x509_svid" in _alert(
        default, "AgentPassportSvidIssuanceSpike")["expr"]
    tuned = _platform("dev", thresholds={"svidIssuanceSpikeFactor": 7.5, "svidIssuanceMinRate": 0.25,
                                         "rejectionRatio": 0.02, "rejectionFor": "30m",
                                         "certificateMinRemaining": "240h", "spireCaMinRemaining": "3h",
                                         "leaseSpikeFactor": 4, "alertFor": "20m"})
    spike = _alert(tuned, "AgentPassportSvidIssuanceSpike")
    assert "> 7.5 * (sum(rate(" in spike["expr"]
    assert spike["expr"].endswith("[5m])) > 0.25")
    assert spike["for"] == "20m"
    rej = _alert(tuned, "AgentPassportSvidRejections")
    assert rej["expr"].endswith("> 0.02") and rej["for"] == "30m"
    assert _alert(tuned, "AgentPassportCertificateExpiring")["expr"].endswith("< 864000")
    assert _alert(tuned, "AgentPassportSpireCaExpiring")["expr"].endswith("< 10800")
    assert "> 4 * (sum by (mount_point)" in _alert(tuned, "AgentPassportVaultLeaseSpike")["expr"]


def test_renewal_alert_waits_twice_the_longest_renewal_point_of_the_fleet() -> None:
    platform = _platform("dev")
    # every example agent has a 15m X.509-SVID: renewal point 7m30s, twice that 15m
    assert ob.renewal_window_seconds(platform) == 900
    assert _alert(platform, "AgentPassportSvidRenewalFailing")["for"] == "15m"
    tuned = _platform("dev", thresholds={"renewalGraceFactor": 3})
    assert _alert(tuned, "AgentPassportSvidRenewalFailing")["for"] == "1350s"


def test_vault_lease_alert_watches_each_configured_database_mount() -> None:
    expr = _alert(_platform("prod"), "AgentPassportVaultLeaseSpike")["expr"]
    assert 'vault_secret_lease_creation{job="agentpassport-vault", mount_point=~"db-main/"}' in expr
    login = _alert(_platform("prod"), "AgentPassportVaultLoginSpike")["expr"]
    assert 'vault_token_creation{job="agentpassport-vault", mount_point="auth/spiffe-jwt/"}' in login


def _runbook_anchors() -> set[str]:
    text = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    return {ob.runbook_anchor(m.group(1)) for m in re.finditer(r"^#{2,3} (.+)$", text, re.M)}


@pytest.mark.parametrize("stack", STACKS)
def test_every_alert_links_to_its_runbook_section(stack: str) -> None:
    anchors = _runbook_anchors()
    platform = _platform(stack)
    names = []
    for group in ob.rule_groups(platform):
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            names.append(rule["alert"])
            url = rule["annotations"]["runbook_url"]
            assert url == f"docs/runbook.md#{rule['alert'].lower()}"
            assert url.split("#", 1)[1] in anchors, f"docs/runbook.md has no section {rule['alert']}"
    assert len(names) >= 12
    for rule in ob.anomaly_rules(platform)["detectionRules"]:
        (ref,) = rule["references"]
        assert ref.split("#", 1)[1] in anchors, ref


def test_runbook_url_base_is_configurable() -> None:
    platform = _platform("dev", runbookBaseUrl="https://git.acme-corp.net/platform/agent-passport/-/blob/main/docs/runbook.md")
    assert _alert(platform, "AgentPassportSpireAgentDown")["annotations"]["runbook_url"] == (
        "https://git.acme-corp.net/platform/agent-passport/-/blob/main/docs/runbook.md#agentpassportspireagentdown")


def test_subsystems_switched_off_get_no_alerts() -> None:
    base = _platform("dev")
    data = base.config.model_dump(by_alias=True)
    data["subsystems"] = {**data["subsystems"], "vault": False, "authz": False, "mesh": False}
    cfg = StackConfig.model_validate(data)
    platform = Platform(base.stack, cfg, base.config_file, base.agents, base.services, base.excluded)
    groups = [g["name"] for g in ob.rule_groups(platform)]
    assert groups == ["agentpassport-facts", "agentpassport-spire", "agentpassport-trust", "agentpassport-storm"]
    (storm,) = [g for g in ob.rule_groups(platform) if g["name"] == "agentpassport-storm"]
    assert [r["alert"] for r in storm["rules"]] == ["AgentPassportSpireNearCapacity",
                                                    "AgentPassportSpireSigningThrottled"]
    assert [m["metadata"]["name"] for m in ob.pod_monitors(platform)] == [
        "agentpassport-spire-server", "agentpassport-spire-agent"]


def test_without_prometheus_operator_only_the_dashboard_is_a_kubernetes_object() -> None:
    platform = _platform("dev", prometheusOperator=False)
    assert [o["kind"] for o in ob.observe_objects(platform)] == ["ConfigMap"]
    jobs = [c["job_name"] for c in ob.prometheus_scrape_configs(platform)["scrape_configs"]]
    assert jobs == [ob.JOB_VAULT, ob.JOB_SPIRE_SERVER, ob.JOB_SPIRE_AGENT, ob.JOB_OPA, ob.JOB_LINKERD_IDENTITY]
    ann = ob.scrape_annotations(platform)["spire-server"]
    assert ann == {"prometheus.io/scrape": "true", "prometheus.io/port": "9988", "prometheus.io/path": "/metrics",
                   "agentpassport.dev/scrape-job": ob.JOB_SPIRE_SERVER}


def test_scrape_configs_are_valid_prometheus_config(tmp_path: Path) -> None:
    tool = _promtool()
    for operator in (True, False):
        cfg = ob.prometheus_scrape_configs(_platform("prod", prometheusOperator=operator))
        path = tmp_path / f"prometheus-{operator}.yml"
        path.write_text(yaml.safe_dump({"global": {"scrape_interval": "30s"}, **cfg}))
        run = subprocess.run([str(tool), "check", "config", "--syntax-only", str(path)], capture_output=True,
                             text=True, timeout=60, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
    vault_job = ob.prometheus_scrape_configs(_platform("prod"))["scrape_configs"][0]
    assert vault_job["scheme"] == "https"
    assert vault_job["static_configs"] == [{"targets": ["vault.prod.acme-corp.net:8200"]}]


# --------------------------------------------------------------------------- dashboard


def test_dashboard_configmap_is_picked_up_by_the_grafana_sidecar() -> None:
    cm = ob.dashboard_configmap(_platform("staging"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Agent Passport"}
    assert cm["metadata"]["namespace"] == "monitoring"
    board = json.loads(cm["data"]["agentpassport-identity.json"])
    assert board["uid"] == "agentpassport-identity"
    assert [p["title"] for p in board["panels"]] == [
        "Active agents by X.509-SVID TTL", "Suspended agents", "SVID issuance", "Renewals", "Rejections",
        "Authorization gateways up", "Vault leases by mount", "Expiries"]
    assert all(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for p in board["panels"])


def test_agents_by_ttl_facts_count_active_agents_only(tmp_path: Path) -> None:
    platform = _suspended_platform(tmp_path, "agent-cortex")
    facts = ob.recording_rules(platform)
    assert facts == [
        {"record": "agentpassport_agents", "expr": "vector(1)", "labels": {"platform": "kubernetes",
                                                                          "x509_svid_ttl": "15m"}},
        {"record": "agentpassport_agents", "expr": "vector(1)", "labels": {"platform": "vm", "x509_svid_ttl": "15m"}},
        {"record": "agentpassport_agents", "expr": "vector(1)", "labels": {"platform": "windows",
                                                                          "x509_svid_ttl": "15m"}},
        {"record": "agentpassport_agents_suspended", "expr": "vector(1)"},
    ]


# --------------------------------------------------------------------------- certificate expiry


def _cert(not_after: dt.datetime) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agentpassport test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_pem_not_after_reads_utc_and_generalized_times_and_takes_the_earliest() -> None:
    early = dt.datetime(2027, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    late = dt.datetime(2055, 1, 2, 3, 4, 5, tzinfo=dt.UTC)  # after 2049: GeneralizedTime
    assert ob.pem_not_after(_cert(early)) == int(early.timestamp())
    assert ob.pem_not_after(_cert(late)) == int(late.timestamp())
    assert ob.pem_not_after(_cert(late) + _cert(early)) == int(early.timestamp())
    assert ob.pem_not_after("-----BEGIN CERTIFICATE-----\nMOCKabc\n-----END CERTIFICATE-----\n") is None
    # blocks that are not certificates are skipped (mock PEMs, a truncated DER, another object)
    truncated = _cert(early).replace("-----END", "AAAA\n-----END").splitlines()
    broken = "\n".join([truncated[0], *truncated[1:3], truncated[-1]]) + "\n"
    assert ob.pem_not_after(broken) is None
    assert ob.pem_not_after(broken + _cert(late)) == int(late.timestamp())
    not_a_cert = "-----BEGIN CERTIFICATE-----\n" + base64.b64encode(b"\x30\x03\x02\x01\x01").decode() + \
        "\n-----END CERTIFICATE-----\n"
    assert ob.pem_not_after(not_a_cert + _cert(early)) == int(early.timestamp())
    assert ob.pem_not_after("") is None
    rules = ob.recording_rules(_platform("dev"), {"trust-bundle": int(late.timestamp())})
    assert rules[-1] == {"record": "agentpassport_certificate_expiry_timestamp_seconds",
                         "expr": f"vector({int(late.timestamp())})", "labels": {"certificate": "trust-bundle"}}


# --------------------------------------------------------------------------- ECS pipeline


class _Fail(Exception):
    pass


def _path(doc: dict[str, Any], path: str) -> tuple[Any, str]:
    parts = path.split(".")
    cur: Any = doc
    for p in parts[:-1]:
        if isinstance(cur, list) and p.isdigit():
            cur = cur[int(p)] if int(p) < len(cur) else None
        elif isinstance(cur, dict):
            cur = cur.get(p)
        else:
            cur = None
        if cur is None:
            return None, parts[-1]
    return cur, parts[-1]


def java_replacement(replacement: str) -> str:
    """A Java ``Matcher.replaceAll`` replacement (``$1``, ``\\$``) as a Python ``re.sub`` one."""
    out, i = [], 0
    while i < len(replacement):
        c = replacement[i]
        if c == "\\" and i + 1 < len(replacement):
            out.append(replacement[i + 1].replace("\\", "\\\\"))
            i += 2
        elif c == "$" and i + 1 < len(replacement) and replacement[i + 1].isdigit():
            out.append(f"\\g<{replacement[i + 1]}>")
            i += 2
        else:
            out.append("\\\\" if c == "\\" else c)
            i += 1
    return "".join(out)


def _get(doc: dict[str, Any], path: str) -> Any:
    parent, last = _path(doc, path)
    if isinstance(parent, list) and last.isdigit():
        return parent[int(last)] if int(last) < len(parent) else None
    return parent.get(last) if isinstance(parent, dict) else None


def _has(doc: dict[str, Any], path: str) -> bool:
    parent, last = _path(doc, path)
    return isinstance(parent, dict) and last in parent


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    cur = doc
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise _Fail(f"cannot set {path}: {p} is not an object")
        cur = nxt
    cur[parts[-1]] = value


def _remove(doc: dict[str, Any], path: str) -> None:
    parent, last = _path(doc, path)
    if not isinstance(parent, dict) or last not in parent:
        raise _Fail(f"field [{path}] not present")
    del parent[last]


def _painless(cond: str, doc: dict[str, Any]) -> bool:
    """Evaluate the Painless subset the pipeline uses (null-safe access, ==, !=, &&, ||, startsWith,
    endsWith, contains, instanceof Map/Boolean) — anything else is an error, so the renderer cannot
    slip in a construct this test does not understand."""
    allowed = re.compile(r"^(ctx(\??\.[\w-]+)+|'[^']*'|==|!=|&&|\|\||[()]|true|false|null|instanceof|Map|Boolean"
                         r"|\.(startsWith|endsWith|contains)\(|\s+)+$")
    assert allowed.match(cond), f"unsupported painless: {cond}"

    def field(m: re.Match[str]) -> str:
        path = m.group(0)[len("ctx"):].replace("?.", ".").lstrip(".")
        return f"_get(doc, {path!r})"

    py = re.sub(r"ctx(\??\.[\w-]+)+?(?=\.(startsWith|endsWith|contains)\(|\s|\)|$)", field, cond)
    py = re.sub(r"(_get\(doc, '[^']*'\)) instanceof Map", r"isinstance(\1, dict)", py)
    py = re.sub(r"(_get\(doc, '[^']*'\)) instanceof Boolean", r"isinstance(\1, bool)", py)
    py = (py.replace("&&", " and ").replace("||", " or ").replace(".startsWith(", ".startswith(")
          .replace(".endsWith(", ".endswith(").replace(".contains(", ".__contains__(")
          .replace("null", "None").replace("true", "True").replace("false", "False"))
    return bool(eval(py, {"_get": _get, "doc": doc}))  # noqa: S307 - test-only, whitelisted above


def _mustache(value: str, doc: dict[str, Any]) -> str:
    return re.sub(r"\{\{\{?\s*([\w.]+)\s*\}?\}\}", lambda m: str(_get(doc, m.group(1)) or ""), value)


def _dissect(pattern: str, text: str) -> dict[str, str]:
    keys = re.findall(r"%\{([^}]*)\}", pattern)
    regex = re.escape(pattern)
    for k in keys:
        regex = regex.replace(re.escape("%{" + k + "}"), "(.*?)", 1)
    m = re.fullmatch(regex, text)
    if m is None:
        raise _Fail(f"dissect pattern did not match {text!r}")
    return {k: v for k, v in zip(keys, m.groups(), strict=True) if not k.startswith("?")}


def _run_processor(kind: str, body: dict[str, Any], doc: dict[str, Any]) -> None:
    if kind == "set":
        if "copy_from" in body:
            value = _get(doc, body["copy_from"])
            if value in (None, "") and body.get("ignore_empty_value"):
                return
        else:
            value = _mustache(body["value"], doc) if isinstance(body["value"], str) else body["value"]
        if body.get("override", True) or not _has(doc, body["field"]):
            _set(doc, body["field"], value)
    elif kind == "json":
        _set(doc, body["target_field"], json.loads(_get(doc, body["field"])))
    elif kind == "rename":
        if not _has(doc, body["field"]) and _get(doc, body["field"]) is None:
            if body.get("ignore_missing"):
                return
            raise _Fail(f"field [{body['field']}] doesn't exist")
        if _has(doc, body["target_field"]) and not body.get("override"):
            raise _Fail(f"field [{body['target_field']}] already exists")
        value = _get(doc, body["field"])
        parent, last = _path(doc, body["field"])
        if isinstance(parent, list):
            parent.pop(int(last))
        else:
            _remove(doc, body["field"])
        _set(doc, body["target_field"], value)
    elif kind == "date":
        value = _get(doc, body["field"])
        assert body["formats"] == ["ISO8601"]
        text = re.sub(r"(\.\d{6})\d+", r"\1", str(value)).replace("Z", "+00:00")
        _set(doc, "@timestamp", dt.datetime.fromisoformat(text).astimezone(dt.UTC).isoformat())
    elif kind == "gsub":
        value = _get(doc, body["field"])
        if value is None and body.get("ignore_missing"):
            return
        if not isinstance(value, str):
            raise _Fail(f"field [{body['field']}] is not a string")
        _set(doc, body.get("target_field", body["field"]),
             re.sub(body["pattern"], java_replacement(body["replacement"]), value))
    elif kind == "dissect":
        for key, value in _dissect(body["pattern"], str(_get(doc, body["field"]))).items():
            _set(doc, key, value)
    elif kind == "remove":
        for f in body["field"]:
            if _has(doc, f):
                _remove(doc, f)
            elif not body.get("ignore_missing"):
                raise _Fail(f"field [{f}] not present")
    else:
        raise AssertionError(f"processor {kind} is not simulated")


def _ingest(pipeline: dict[str, Any], line: dict[str, Any] | str) -> dict[str, Any]:
    doc: dict[str, Any] = {"message": line if isinstance(line, str) else json.dumps(line)}
    for proc in pipeline["processors"]:
        ((kind, body),) = proc.items()
        if "if" in body and not _painless(body["if"], doc):
            continue
        try:
            _run_processor(kind, body, doc)
        except (_Fail, ValueError, TypeError, KeyError) as exc:
            if body.get("ignore_failure"):
                continue
            raise AssertionError(f"{kind} failed: {exc}") from exc
    return doc


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CORTEX = "spiffe://dev.agentpassport.internal/ns/agents/sa/agent-cortex"
SLACK_GW = "spiffe://dev.agentpassport.internal/ns/integrations/sa/gw-slack-gateway"


def _opa_line(allowed: bool) -> dict[str, Any]:
    return {
        "decision_id": "5a3e1f0c-1b8e-4f5e-9a57-3a4c6f1b2d9e",
        "input": {"attributes": {
            "source": {"address": {"socketAddress": {"address": "10.42.3.7", "portValue": 51234}},
                       "principal": CORTEX},
            "destination": {"principal": SLACK_GW},
            "request": {"http": {"method": "POST", "path": "/api/slack/message?thread=1",
                                 "headers": {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01",
                                             "x-request-id": "8d2f7c1e"}}},
        }},
        "result": {"allowed": allowed, "reason": "allowed: POST /api/slack/message granted to agent agent-cortex",
                   "headers": {"x-agentpassport-agent": "agent-cortex"}},
        "timestamp": "2026-11-20T10:00:00.123456789Z",
        "level": "info", "msg": "Decision Log", "labels": {"gateway": "gw-slack-gateway"},
    }


def _vault_line(kind: str, path: str, error: str | None = None) -> dict[str, Any]:
    line: dict[str, Any] = {
        "time": "2026-11-20T10:00:01.5Z",
        "type": kind,
        "auth": {"client_token": "hmac-sha256:1f2e", "accessor": "hmac-sha256:9a8b",
                 "display_name": f"spiffe-jwt-{CORTEX}", "policies": ["agent-agent-cortex"],
                 "metadata": {"role": "agent-agent-cortex"}, "entity_id": "0b1c", "token_type": "service"},
        "request": {"id": "d1f0c8a2", "operation": "read", "mount_type": "database", "mount_point": "db-main/",
                    "path": path, "remote_address": "10.42.3.7",
                    "headers": {"traceparent": [f"00-{TRACE}-b7ad6b7169203331-01"]}},
    }
    if kind == "response":
        line["response"] = {"data": {"username": "v-agent-cortex-agent-cor-3kf9", "password": "hmac-sha256:77"},
                            "secret": {"lease_id": f"{path}/Xy12"}}
    if error is not None:
        line["error"] = error
    return line


def test_pipeline_maps_opa_decisions_to_ecs() -> None:
    pipeline = ob.ingest_pipeline(_platform("dev"))
    doc = _ingest(pipeline, _opa_line(True))
    assert doc["event"] == {"dataset": "opa.decision", "kind": "event", "stack": "dev", "action": "authorization-check",
                            "outcome": "success", "id": "5a3e1f0c-1b8e-4f5e-9a57-3a4c6f1b2d9e",
                            "original": doc["message"], "reason": _opa_line(True)["result"]["reason"]}
    assert doc["spiffe_id"] == CORTEX
    assert doc["trace"] == {"id": TRACE}
    assert doc["span"] == {"id": "00f067aa0ba902b7"}
    assert doc["source"] == {"ip": "10.42.3.7"}
    assert doc["url"] == {"original": "/api/slack/message?thread=1", "path": "/api/slack/message"}
    assert doc["http"] == {"request": {"method": "POST", "id": "8d2f7c1e"}}
    assert doc["agentpassport"]["destination"] == {"spiffe_id": SLACK_GW}
    assert doc["@timestamp"] == "2026-11-20T10:00:00.123456+00:00"
    assert "raw" not in doc["agentpassport"]
    denied = _ingest(pipeline, _opa_line(False))
    assert denied["event"]["outcome"] == "failure"
    boolean = _opa_line(True)
    boolean["result"] = False
    assert _ingest(pipeline, boolean)["event"]["outcome"] == "failure"


def test_pipeline_maps_vault_audit_to_ecs_with_agent_and_database_user() -> None:
    pipeline = ob.ingest_pipeline(_platform("dev"))
    path = "db-main/creds/agent-cortex-main-incidents"
    req = _ingest(pipeline, _vault_line("request", path))
    assert req["event"]["dataset"] == "vault.audit"
    assert req["event"]["action"] == "vault-database-credentials"
    assert req["event"]["outcome"] == "unknown"
    assert req["spiffe_id"] == CORTEX
    assert req["agentpassport"]["agent"] == "agent-cortex"
    assert req["agentpassport"]["vault"] == {"log_type": "request", "operation": "read", "request_id": "d1f0c8a2",
                                            "role": "agent-agent-cortex"}
    assert req["trace"]["id"] == TRACE
    assert req["url"] == {"path": path}
    assert req["source"] == {"ip": "10.42.3.7"}
    resp = _ingest(pipeline, _vault_line("response", path))
    assert resp["event"]["outcome"] == "success"
    assert resp["agentpassport"]["database"] == {"user": "v-agent-cortex-agent-cor-3kf9"}
    error = "1 error occurred:\n\t* permission denied\n\n"
    denied = _ingest(pipeline, _vault_line("response", "secret/data/finance/ledger", error=error))
    assert denied["event"]["outcome"] == "failure"
    assert denied["event"]["action"] == "vault-read"
    assert denied["error"]["message"].startswith("1 error occurred")


def test_pipeline_maps_spire_and_envoy_logs_and_one_trace_joins_the_chain() -> None:
    pipeline = ob.ingest_pipeline(_platform("dev"))
    spire = _ingest(pipeline, {"entry_id": "4d3c", "expires_at": "2026-11-20T10:07:30Z", "level": "info",
                               "msg": "Renewing X509-SVID", "spiffe_id": CORTEX, "subsystem_name": "manager",
                               "time": "2026-11-20T09:59:00Z"})
    assert spire["event"]["dataset"] == "spire"
    assert spire["event"]["action"] == "x509-svid-renewed"
    assert spire["event"]["outcome"] == "success"
    assert spire["spiffe_id"] == CORTEX
    assert spire["message"] == "Renewing X509-SVID"
    assert spire["agentpassport"]["spire"] == {"entry_id": "4d3c", "subsystem": "manager"}
    envoy = _ingest(pipeline, {"time": "2026-11-20T10:00:00.100Z", "spiffe_id": CORTEX, "method": "POST",
                               "path": "/api/slack/message", "status": 200, "flags": "-", "authz_allowed": True,
                               "authz_reason": "allowed", "agent": "agent-cortex", "request_id": "8d2f7c1e",
                               "duration_ms": 12})
    assert envoy["event"]["dataset"] == "envoy.access"
    assert envoy["event"]["outcome"] == "success"
    assert envoy["http"] == {"request": {"method": "POST", "id": "8d2f7c1e"}, "response": {"status_code": 200}}
    assert envoy["agentpassport"]["agent"] == "agent-cortex"
    # decision -> API call share the request id; decision -> Vault -> database user share the trace
    opa = _ingest(pipeline, _opa_line(True))
    vault = _ingest(pipeline, _vault_line("response", "db-main/creds/agent-cortex-main-incidents"))
    assert opa["http"]["request"]["id"] == envoy["http"]["request"]["id"]
    assert opa["trace"]["id"] == vault["trace"]["id"] == TRACE
    other = _ingest(pipeline, "plain text line from some other container")
    assert "dataset" not in other.get("event", {})


def test_logstash_variant_renders_the_same_mapping() -> None:
    platform = _platform("prod", logs={"kind": "logstash"})
    paths = [a.path for a in render_all(platform) if a.path.startswith("observe/")]
    assert "observe/logstash.conf" in paths and "observe/ingest-pipeline.json" not in paths
    conf = ob.logstash_config(platform)
    assert conf.count("{") == conf.count("}")
    for needle in ('"[agentpassport][raw][input][attributes][source][principal]" => "spiffe_id"',
                   '"[event][dataset]" => "vault.audit"', '"[event][action]" => "x509-svid-renewed"',
                   "%{[trace][id]}",
                   '"[agentpassport][raw][response][data][username]" => "[agentpassport][database][user]"'):
        assert needle in conf


def test_both_log_pipelines_rename_fields_from_one_table() -> None:
    """The ingest pipeline and the Logstash filter (a template file) take every field rename
    from FIELD_RENAMES, in its order; the Logstash filter leaves out only what the table says."""
    from components.render.observe.logs import FIELD_RENAMES, RAW

    platform = _platform("prod", logs={"kind": "logstash"})
    processors = ob.ingest_pipeline(platform)["processors"]
    renames = [(p["rename"]["field"], p["rename"]["target_field"]) for p in processors if "rename" in p]
    conf = ob.logstash_config(platform)
    for dataset, table in FIELD_RENAMES.items():
        expected = [(f"{RAW}.{r.source}", r.target) for r in table]
        assert any(renames[i:i + len(expected)] == expected for i in range(len(renames))), dataset
        lines = [f'"{_ref(f"{RAW}.{r.source}")}" => "{_ref(r.target)}"' for r in table if r.logstash]
        positions = [conf.index(line) for line in lines]
        assert positions == sorted(positions), dataset
    kept = {(r.source, r.target) for table in FIELD_RENAMES.values() for r in table if r.logstash}
    for r in (r for table in FIELD_RENAMES.values() for r in table if not r.logstash):
        if (r.source, r.target) not in kept:
            assert f'"{_ref(f"{RAW}.{r.source}")}" => "{_ref(r.target)}"' not in conf
    template = ROOT / "components" / "render" / "templates" / "logstash.conf.j2"
    assert template.is_file() and "rename => {" in template.read_text(encoding="utf-8")
    assert "=> \"[agentpassport][vault][log_type]\"" not in template.read_text(encoding="utf-8")  # from the table


def _ref(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[0] if len(parts) == 1 else "".join(f"[{p}]" for p in parts)


# --------------------------------------------------------------------------- anomaly rules


def _suspended_platform(tmp_path: Path, *names: str) -> Platform:
    agents = tmp_path / "agents"
    shutil.copytree(ROOT / "agents", agents)
    for name in names:
        f = agents / f"{name}.yaml"
        f.write_text(f.read_text().replace("spec:\n", "spec:\n  suspended: true\n  suspendedReason: INC-4711\n", 1))
    return load_platform("dev", [str(agents)])


def test_anomaly_rules_are_generated_from_each_manifest() -> None:
    rules = {r["rule_id"]: r for r in ob.anomaly_rules(_platform("dev"))["detectionRules"]}
    assert sorted(rules) == [
        "agentpassport-dev-agent-cortex-outside-grants", "agentpassport-dev-agent-cortex-outside-networks",
        "agentpassport-dev-invoice-processor-outside-grants", "agentpassport-dev-invoice-processor-outside-networks",
        "agentpassport-dev-ledger-sync-outside-grants", "agentpassport-dev-opa-deny-burst",
        "agentpassport-dev-report-summarizer-outside-grants", "agentpassport-dev-unknown-identity-used",
        "agentpassport-dev-vault-lease-burst",
    ]
    nets = rules["agentpassport-dev-agent-cortex-outside-networks"]
    assert nets["query"] == (f'(spiffe_id: "{CORTEX}" or agentpassport.agent: "agent-cortex") and source.ip: * '
                             'and not source.ip: "10.42.0.0/16"')
    assert nets["index"] == ["logs-agentpassport-*"]
    assert nets["tags"] == ["agent-passport", "stack:dev", "agent:agent-cortex", "team:security-automation"]
    grants = rules["agentpassport-dev-agent-cortex-outside-grants"]["query"]
    # the slack-gateway grant (inference has no gateway, so no decision logs to compare)
    assert (f'(agentpassport.destination.spiffe_id: "{SLACK_GW}" and http.request.method: POST and '
            'url.path: "/api/slack/message")') in grants
    assert '"db-main/creds/agent-cortex-main-incidents"' in grants
    invoice = rules["agentpassport-dev-invoice-processor-outside-grants"]["query"]
    assert 'url.path: ("/v1/payments" or "/v1/payments/status" or /v1/payments/status/*)' in invoice
    assert 'http.request.method: (GET or POST)' in invoice
    ledger = rules["agentpassport-dev-ledger-sync-outside-grants"]["query"]
    assert '"secret/data/finance/ledger-sync"' in ledger
    burst = rules["agentpassport-dev-opa-deny-burst"]
    assert burst["type"] == "threshold" and burst["threshold"] == {"field": ["spiffe_id"], "value": 20}
    unknown = rules["agentpassport-dev-unknown-identity-used"]["query"]
    assert unknown.startswith('(event.dataset: "opa.decision" or event.dataset: "vault.audit") and '
                              r"spiffe_id: spiffe\://dev.agentpassport.internal/*")
    assert f'"{CORTEX}"' in unknown


def test_a_star_written_in_a_prefix_is_a_character_not_a_kql_wildcard(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    shutil.copytree(ROOT / "agents", agents)
    f = agents / "invoice-processor.yaml"
    f.write_text(f.read_text().replace("prefix: /v1/payments/status", "prefix: /v1/pay*ments(x)"))
    rules = {r["rule_id"]: r for r in ob.anomaly_rules(load_platform("dev", [str(agents)]))["detectionRules"]}
    query = rules["agentpassport-dev-invoice-processor-outside-grants"]["query"]
    # the grant allows /v1/pay*ments(x) and paths below it, not /v1/payXments or /v1/pay/ments
    assert 'url.path: ("/v1/payments" or "/v1/pay*ments(x)" or /v1/pay\\*ments\\(x\\)/*)' in query
    assert ob.kql_literal('a*b c"d') == 'a\\*b\\ c\\"d'


def test_suspended_agents_get_a_use_alert_and_no_grant_rules(tmp_path: Path) -> None:
    platform = _suspended_platform(tmp_path, "agent-cortex", "invoice-processor")
    doc = ob.anomaly_rules(platform)
    ids = [r["rule_id"] for r in doc["detectionRules"]]
    assert not [i for i in ids if "agent-cortex" in i or "invoice-processor" in i]
    used = next(r for r in doc["detectionRules"] if r["rule_id"] == "agentpassport-dev-suspended-identity-used")
    assert used["severity"] == "critical"
    assert used["query"] == (
        f'spiffe_id: ("{CORTEX}" or "spiffe://dev.agentpassport.internal/ns/finance-agents/sa/invoice-processor") '
        'or agentpassport.agent: ("agent-cortex" or "invoice-processor")')
    assert [r["name"] for r in doc["alertingRules"]] == [
        "agentpassport-dev-ledger-sync-svid-not-renewed", "agentpassport-dev-report-summarizer-svid-not-renewed"]


def test_renewal_absence_rules_use_twice_the_renewal_point() -> None:
    doc = ob.anomaly_rules(_platform("dev"))
    rule = next(r for r in doc["alertingRules"] if r["name"] == "agentpassport-dev-agent-cortex-svid-not-renewed")
    assert rule["rule_type_id"] == ".es-query"
    params = rule["params"]
    assert (params["threshold"], params["thresholdComparator"]) == ([1], "<")
    assert (params["timeWindowSize"], params["timeWindowUnit"]) == (900, "s")
    assert json.loads(params["esQuery"]) == {"query": {"bool": {"filter": [
        {"term": {"spiffe_id": CORTEX}},
        {"terms": {"event.action": ["x509-svid-created", "x509-svid-renewed"]}}]}}}


def test_rendered_artifacts() -> None:
    arts = {a.path: a.content for a in render_all(_platform("prod")) if "observe" in a.path}
    assert sorted(arts) == [
        "kubernetes/observe/configmap-monitoring-agentpassport-identity-dashboard.yaml",
        "kubernetes/observe/podmonitor-monitoring-agentpassport-gateway-opa.yaml",
        "kubernetes/observe/podmonitor-monitoring-agentpassport-linkerd-identity.yaml",
        "kubernetes/observe/podmonitor-monitoring-agentpassport-spire-agent.yaml",
        "kubernetes/observe/podmonitor-monitoring-agentpassport-spire-server.yaml",
        "kubernetes/observe/prometheusrule-monitoring-agentpassport-identity-health.yaml",
        "observe/anomaly-rules.json", "observe/dashboard.json", "observe/detection-rules.ndjson",
        "observe/ingest-pipeline.json", "observe/prometheus-rules.yaml", "observe/prometheus-scrape-configs.yaml",
    ]
    ndjson = [json.loads(line) for line in arts["observe/detection-rules.ndjson"].splitlines()]
    assert ndjson == json.loads(arts["observe/anomaly-rules.json"])["detectionRules"]
    assert render_all(_platform("prod")) == render_all(_platform("prod"))  # deterministic


def test_storm_alerts_take_their_thresholds_from_the_capacity_section() -> None:
    """The alerts fire at 80 % of what `passport capacity` says the servers sustain."""
    base = _platform("prod")
    data = base.config.model_dump(by_alias=True)
    data["capacity"] = {**data["capacity"], "spireSigningsPerSecond": 1000, "dbCreatesPerSecond": 50,
                        "leaseCeiling": 40000}
    cfg = StackConfig.model_validate(data)
    platform = Platform(base.stack, cfg, base.config_file, base.agents, base.services, base.excluded)
    rules = {a.name: a.expr for a in ob.alerts(platform)["agentpassport-storm"]}
    assert rules["AgentPassportSpireNearCapacity"].endswith(f"[1m])) > {int(0.8 * 1000 * cfg.spire.replicas)}")
    assert rules["AgentPassportVaultDbChurnNearCapacity"].endswith("[1m])) > 40")
    assert rules["AgentPassportVaultLeasesHigh"].endswith("> 20000")
    assert 'name=~"agent-passport-.*"' in rules["AgentPassportVaultQuotaRejecting"]


# --------------------------------------------------------------------------- credentials in query strings

QUERY_SECRETS = ("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "k-123", "hunter2", "c2lnbmF0dXJl")
SECRET_PATH = ("/api/slack/message?access_token=eyJhbGciOiJSUzI1NiJ9.e30.c2ln&api_key=k-123"
               "&password=hunter2&X-Amz-Signature=c2lnbmF0dXJl&page=2")
MASKED_PATH = ("/api/slack/message?access_token=[masked]&api_key=[masked]&password=[masked]"
               "&X-Amz-Signature=[masked]&page=2")


def test_query_mask_regexes_mask_credentials_and_keep_the_rest_in_python() -> None:
    """The pattern and each engine's replacement, run by Python's re (the syntax the engines share)."""
    from components.render import credentials as cr

    java, ruby = java_replacement(cr.QUERY_MASK_REPLACEMENT_JAVA), cr.QUERY_MASK_REPLACEMENT_RUBY
    go = cr.QUERY_MASK_REPLACEMENT_GO.replace("${1}", "\\g<1>")
    escaped = json.dumps({"path": SECRET_PATH})  # not Go-escaped: & stays &
    go_json = escaped.replace("&", "\\u0026")  # as Go's encoding/json writes it
    for replacement in (java, ruby, go):
        assert re.sub(cr.QUERY_MASK_PATTERN, replacement, SECRET_PATH) == MASKED_PATH
        assert re.sub(cr.QUERY_MASK_PATTERN, replacement, escaped) == json.dumps({"path": MASKED_PATH})
        masked = re.sub(cr.QUERY_MASK_PATTERN, replacement, go_json)
        assert json.loads(masked) == {"path": MASKED_PATH}
        assert re.sub(cr.QUERY_MASK_PATTERN, replacement, "/x?page=2&sort=asc") == "/x?page=2&sort=asc"
        assert re.sub(cr.QUERY_MASK_PATTERN, replacement, "/x?code=abc#frag") == "/x?code=[masked]#frag"


def test_ingest_pipeline_masks_query_credentials_before_anything_is_kept() -> None:
    pipeline = ob.ingest_pipeline(_platform("dev"))
    from components.render import credentials as cr

    gsubs = {p["gsub"]["field"]: p["gsub"] for p in pipeline["processors"] if "gsub" in p
             and p["gsub"]["pattern"] == cr.QUERY_MASK_PATTERN}
    assert set(gsubs) == {"message", "event.original", "url.original"}
    assert all(g["replacement"] == "$1[masked]" and g["ignore_missing"] for g in gsubs.values())
    # the first processor that reads the raw line masks it
    first = next(p for p in pipeline["processors"] if "message" in (next(iter(p.values())).get("field"),
                                                                    next(iter(p.values())).get("copy_from")))
    assert first == {"gsub": gsubs["message"]}
    line = _opa_line(True)
    line["input"]["attributes"]["request"]["http"]["path"] = SECRET_PATH
    for raw in (json.dumps(line), json.dumps(line).replace("&", "\\u0026")):
        doc = _ingest(pipeline, raw)
        assert doc["url"]["original"] == MASKED_PATH
        assert doc["url"]["path"] == "/api/slack/message"
        stored = json.dumps(doc)
        assert not any(secret in stored for secret in QUERY_SECRETS), stored
        assert "page=2" in doc["event"]["original"]
    envoy = _ingest(pipeline, {"time": "2026-11-20T10:00:00.100Z", "spiffe_id": CORTEX, "method": "GET",
                               "path": SECRET_PATH, "status": 200, "authz_allowed": True, "agent": "agent-cortex",
                               "request_id": "8d2f7c1e", "duration_ms": 12})
    assert envoy["url"]["original"] == MASKED_PATH
    assert not any(secret in json.dumps(envoy) for secret in QUERY_SECRETS)


def test_logstash_filter_masks_query_credentials_with_the_shared_pattern() -> None:
    from components.render import credentials as cr

    conf = ob.logstash_config(_platform("prod", logs={"kind": "logstash"}))
    quoted = f"'{cr.QUERY_MASK_PATTERN}', '{cr.QUERY_MASK_REPLACEMENT_RUBY}'"
    for field in ('"message"', '"[event][original]"', '"[url][original]"'):
        assert f"{field}, {quoted}" in conf, field
    assert conf.index('"message", ' + quoted) < conf.index("json { source => \"message\"")
    assert conf.index('"[url][original]", ' + quoted) < conf.index("grok {")
    # single-quoted Logstash strings are literal: nothing in the pattern may end them
    assert "'" not in cr.QUERY_MASK_PATTERN + cr.QUERY_MASK_REPLACEMENT_RUBY
    # what Ruby's gsub does with it, in Python's re (same syntax, \1 back-reference)
    pattern, replacement = re.findall(r'"message", \'([^\']*)\', \'([^\']*)\'', conf)[0]
    assert re.sub(pattern, replacement, SECRET_PATH) == MASKED_PATH


def test_query_mask_pattern_compiles_and_masks_in_java(tmp_path: Path) -> None:
    """Elasticsearch's gsub is java.util.regex: the shared pattern and replacement run there as they
    do in Python (only where a JDK is installed: Elasticsearch itself is not part of the tests)."""
    from components.render import credentials as cr

    java = shutil.which("java")
    if java is None:
        pytest.skip("no java on PATH (the Java regex check needs a JDK 11+)")
    (tmp_path / "pattern.txt").write_text(cr.QUERY_MASK_PATTERN, encoding="utf-8")
    (tmp_path / "line.txt").write_text(SECRET_PATH + "\n" + json.dumps({"p": SECRET_PATH}).replace("&", "\\u0026"),
                                       encoding="utf-8")
    (tmp_path / "Mask.java").write_text(
        "import java.nio.file.*;\n"
        "public class Mask { public static void main(String[] a) throws Exception {\n"
        "  String p = Files.readString(Path.of(a[0])), r = a[2];\n"
        "  System.out.print(java.util.regex.Pattern.compile(p).matcher(Files.readString(Path.of(a[1])))"
        ".replaceAll(r)); } }\n", encoding="utf-8")
    proc = subprocess.run([java, str(tmp_path / "Mask.java"), str(tmp_path / "pattern.txt"),
                           str(tmp_path / "line.txt"), cr.QUERY_MASK_REPLACEMENT_JAVA],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.split("\n")
    assert first == MASKED_PATH
    assert json.loads(second) == {"p": MASKED_PATH}
