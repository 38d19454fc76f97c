"""The generated Rego, evaluated by real OPA: the fixed policy, the data document, the tests.

Every generated allow/deny case is run twice through OPA: by ``opa test`` on the generated
``policy_test.rego`` and one by one with ``opa eval`` (input on stdin, the clock mocked with
``with time.now_ns as``), asserting the exact decision object opa-envoy-plugin hands to Envoy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from components.config import load_stack_config
from components.manifest.loader import load_manifests
from components.platform_model import Platform, build_platform
from components.render import rego
from components.render.yamlout import dump_json
from tests.conftest import ROOT, STACKS
from tests.support.tools import skip_or_fail

OPA_BIN = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agent-passport/tools/bin/opa"

SYNTHETIC = """\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Service
metadata: {name: orders, team: shop}
spec: {namespace: shop, port: 8080, podSelector: {app: orders}}
---
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Service
metadata: {name: catalog, team: shop}
spec: {namespace: shop, port: 9090, protocol: grpc, podSelector: {app: catalog}}
---
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Service
metadata: {name: legacy, team: shop}
spec: {namespace: shop, port: 8080, gateway: false, podSelector: {app: legacy}}
---
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Service
metadata: {name: idle, team: shop}
spec: {namespace: shop, port: 8080, podSelector: {app: idle}}
---
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Service
metadata: {name: only-suspended, team: shop}
spec: {namespace: vault, port: 8080, podSelector: {app: only-suspended}}
---
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata: {name: buyer, team: shop, owner: shop@acme-corp.net}
spec:
  platform: {kubernetes: {namespace: agents, serviceAccount: buyer}}
  grants:
    - http:
        service: orders
        methods: [GET]
        paths: [{prefix: /orders}]
        headers: {x-tenant: acme}
    - http:
        service: orders
        methods: [POST]
        paths: [{exact: /orders/new}]
        timeWindows:
          - {days: [mon, tue, wed, thu, fri], start: "08:00", end: "18:00", timezone: America/New_York}
          - {days: [sat], start: "10:00", end: "12:00", timezone: Asia/Tokyo}
    - http: {service: catalog, methods: [POST], paths: [{prefix: /}]}
    - http: {service: legacy, methods: [GET], paths: [{exact: /x}]}
---
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata: {name: auditor, team: audit, owner: audit@acme-corp.net}
spec:
  platform:
    vm: {attestation: join_token, workloadSelectors: ["unix:uid:1001"]}
  grants:
    - http:
        service: orders
        methods: [GET, HEAD]
        paths: [{prefix: /orders/}, {exact: /health}]
---
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata: {name: rogue, team: shop, owner: shop@acme-corp.net}
spec:
  suspended: true
  suspendedReason: INC-4242 leaked SVID
  platform: {kubernetes: {namespace: agents, serviceAccount: rogue}}
  grants:
    - http: {service: orders, methods: [GET, POST, PUT, DELETE], paths: [{prefix: /}]}
    - http: {service: only-suspended, methods: [GET], paths: [{prefix: /}]}
"""


def synthetic_platform(tmp_path: Path, text: str = SYNTHETIC, stack: str = "dev") -> Platform:
    """The stack's config with manifests written to ``tmp_path``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "manifests.yaml").write_text(text, encoding="utf-8")
    cfg = load_stack_config(stack, ROOT)
    return build_platform(cfg, load_manifests([tmp_path]), stack, f"stacks/Pulumi.{stack}.yaml")


def repo_platform(stack: str) -> Platform:
    cfg = load_stack_config(stack, ROOT)
    return build_platform(cfg, load_manifests([ROOT / cfg.agents_dir]), stack, f"stacks/Pulumi.{stack}.yaml")


def opa() -> str:
    """The OPA binary built by scripts/bootstrap-tools (or on PATH); skip when there is none."""
    if OPA_BIN.is_file() and os.access(OPA_BIN, os.X_OK):
        return str(OPA_BIN)
    found = shutil.which("opa")
    if found is None:
        skip_or_fail(f"OPA binary not found at {OPA_BIN} or on PATH: run scripts/bootstrap-tools --only opa")
    return found


def write_bundle(platform: Platform, where: Path, policy: str = rego.POLICY) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "policy.rego").write_text(policy, encoding="utf-8")
    (where / "mask.rego").write_text(rego.MASK_POLICY, encoding="utf-8")
    (where / "data.json").write_text(dump_json(rego.authz_data(platform)), encoding="utf-8")
    # the gateway's revocation list (empty), without which the policy denies everything
    (where / rego.REVOCATIONS_FILE).write_text(dump_json(rego.revocation_document()), encoding="utf-8")
    (where / "policy_test.rego").write_text(rego.render_tests(rego.rego_cases(platform)), encoding="utf-8")
    return where


def run_opa(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([opa(), *args], input=stdin, capture_output=True, text=True, timeout=120, check=False)


def opa_decision(bundle: Path, input_doc: dict[str, Any], now_ns: int, revocations: Any = None) -> Any:
    """OPA's decision; ``revocations`` (when not None) mocks data.agentpassport.revocations."""
    mock = f" with data.agentpassport.revocations as {json.dumps(revocations)}" if revocations is not None else ""
    proc = run_opa(
        "eval", "--format", "json", "--stdin-input",
        "--data", str(bundle / "policy.rego"), "--data", str(bundle / "data.json"),
        "--data", str(bundle / rego.REVOCATIONS_FILE),
        f"{rego.DECISION_QUERY} with time.now_ns as {now_ns}{mock}",
        stdin=json.dumps(input_doc),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)["result"]
    assert len(result) == 1, proc.stdout
    return result[0]["expressions"][0]["value"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    return synthetic_platform(tmp_path_factory.mktemp("manifests"))


# --------------------------------------------------------------------------- data document


def test_data_document_is_keyed_by_service_then_spiffe_id(synthetic: Platform) -> None:
    td = synthetic.config.trust_domain
    services = rego.authz_data(synthetic)["agentpassport"]["services"]
    assert list(services) == ["catalog", "orders"]  # gateway: false, uncalled, suspended-only: none
    orders = services["orders"]["principals"]
    assert list(orders) == [f"spiffe://{td}/ns/agents/sa/buyer", f"spiffe://{td}/vm/auditor"]
    buyer = orders[f"spiffe://{td}/ns/agents/sa/buyer"]
    assert buyer == {
        "agent": "buyer",
        "rules": [
            {"grant": 0, "headers": {"x-tenant": "acme"}, "methods": {"GET": True},
             "paths": {"exact": {}, "prefix": ["/orders"]}, "timeWindows": []},
            {"grant": 1, "headers": {}, "methods": {"POST": True},
             "paths": {"exact": {"/orders/new": True}, "prefix": []},
             "timeWindows": [
                 {"days": ["mon", "tue", "wed", "thu", "fri"], "end": "18:00", "start": "08:00",
                  "timezone": "America/New_York"},
                 {"days": ["sat"], "end": "12:00", "start": "10:00", "timezone": "Asia/Tokyo"},
             ]},
        ],
    }
    # "/orders/" and "/orders" are the same segment-boundary prefix.
    assert orders[f"spiffe://{td}/vm/auditor"]["rules"] == [
        {"grant": 0, "headers": {}, "methods": {"GET": True, "HEAD": True},
         "paths": {"exact": {"/health": True}, "prefix": ["/orders"]}, "timeWindows": []},
    ]
    assert services["catalog"]["principals"] == {
        f"spiffe://{td}/ns/agents/sa/buyer": {"agent": "buyer", "rules": [
            {"grant": 2, "headers": {}, "methods": {"POST": True},
             "paths": {"exact": {}, "prefix": ["/"]}, "timeWindows": []}]},
    }


def test_suspended_agents_get_no_entry_anywhere(synthetic: Platform) -> None:
    text = dump_json(rego.authz_data(synthetic))
    assert "rogue" not in text
    assert "only-suspended" not in text
    assert [s.name for s in rego.gateway_services(synthetic)] == ["catalog", "orders"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_http_grant_to_a_gateway_service_has_exactly_its_entry(stack: str) -> None:
    platform = repo_platform(stack)
    services = rego.authz_data(platform)["agentpassport"]["services"]
    expected: dict[str, dict[str, list[int]]] = {}
    for agent in platform.active_agents:
        for i, grant in agent.grants_of("http"):
            svc = platform.service(grant.service)
            assert svc is not None
            if svc.manifest.spec.gateway:
                expected.setdefault(grant.service, {}).setdefault(agent.identity.spiffe_id, []).append(i)
    assert {s: {p: [r["grant"] for r in e["rules"]] for p, e in v["principals"].items()}
            for s, v in services.items()} == expected
    assert expected == {
        "payments-api": {f"spiffe://{platform.config.trust_domain}/ns/finance-agents/sa/invoice-processor": [1]},
        "slack-gateway": {f"spiffe://{platform.config.trust_domain}/ns/agents/sa/agent-cortex": [0]},
    }


# --------------------------------------------------------------------------- generated cases


def test_generated_cases_cover_every_grant_and_deny_reason(synthetic: Platform) -> None:
    names = {c.name: c for c in rego.rego_cases(synthetic)}
    assert set(names) == {
        "test_orders_buyer_grant0_allow", "test_orders_buyer_grant0_prefix_boundary_0",
        "test_orders_buyer_grant0_wrong_method", "test_orders_buyer_grant0_wrong_path",
        "test_orders_buyer_grant0_missing_header", "test_orders_buyer_grant0_unknown_spiffe_id",
        "test_orders_buyer_grant1_allow", "test_orders_buyer_grant1_wrong_method",
        "test_orders_buyer_grant1_wrong_path", "test_orders_buyer_grant1_outside_time_window",
        "test_orders_buyer_grant1_unknown_spiffe_id",
        "test_orders_auditor_grant0_allow", "test_orders_auditor_grant0_allow_path1",
        "test_orders_auditor_grant0_prefix_boundary_0", "test_orders_auditor_grant0_wrong_method",
        "test_orders_auditor_grant0_wrong_path", "test_orders_auditor_grant0_unknown_spiffe_id",
        # prefix "/" grants every path: no wrong-path case exists for it.
        "test_catalog_buyer_grant2_allow", "test_catalog_buyer_grant2_wrong_method",
        "test_catalog_buyer_grant2_unknown_spiffe_id",
        "test_no_spiffe_id", "test_unknown_service", "test_revoked_spiffe_id", "test_revocation_list_not_loaded",
    }
    boundary = names["test_orders_buyer_grant0_prefix_boundary_0"]
    assert boundary.request.path == "/ordersx"
    assert boundary.expected["reason"] == (
        "denied: no grant of agent buyer on service orders matches: "
        "spec.grants[0]: path /ordersx not granted; spec.grants[1]: method GET not granted"
    )
    late = names["test_orders_buyer_grant1_outside_time_window"]
    assert datetime.fromtimestamp(late.request.now_ns // 10**9, UTC) == datetime(2026, 1, 12, 12, 59, tzinfo=UTC)
    assert late.expected == {
        "allowed": False,
        "body": "forbidden by Agent Passport policy\n",
        "dynamic_metadata": {"allowed": False, "reason": late.expected["reason"]},
        "headers": {"content-type": "text/plain"},
        "http_status": 403,
        "reason": "denied: no grant of agent buyer on service orders matches: spec.grants[0]: method POST "
                  "not granted; spec.grants[1]: outside the granted time windows",
    }
    allow = names["test_orders_auditor_grant0_allow_path1"]
    assert allow.request.path == "/orders/probe?agentpassport-probe=1"
    assert allow.expected == {
        "allowed": True,
        "dynamic_metadata": {"agent": "auditor", "allowed": True,
                             "reason": "allowed: GET /orders/probe granted to agent auditor by spec.grants[0]"},
        "headers": {"x-agentpassport-agent": "auditor"},
        "reason": "allowed: GET /orders/probe granted to agent auditor by spec.grants[0]",
    }


def _platforms(tmp_path: Path) -> Iterator[tuple[str, Platform]]:
    yield "synthetic", synthetic_platform(tmp_path)
    for stack in STACKS:
        yield stack, repo_platform(stack)


def test_opa_test_passes_on_generated_policy_tests(tmp_path: Path) -> None:
    for label, platform in _platforms(tmp_path / "m"):
        bundle = write_bundle(platform, tmp_path / label)
        proc = run_opa("test", "--verbose", str(bundle))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        cases = rego.rego_cases(platform)
        assert f"PASS: {len(cases)}/{len(cases)}" in proc.stdout, proc.stdout


def test_every_generated_case_gives_the_exact_decision_in_opa_eval(tmp_path: Path) -> None:
    for label, platform in _platforms(tmp_path / "m"):
        bundle = write_bundle(platform, tmp_path / label)
        cases = rego.rego_cases(platform)
        assert any(c.expected["allowed"] for c in cases) and any(not c.expected["allowed"] for c in cases)
        for case in cases:
            got = opa_decision(bundle, case.input, case.request.now_ns, case.revocations)
            assert case.matches(got), f"{label} {case.name}: {got}"


def test_generated_tests_catch_a_policy_that_drops_the_segment_boundary(tmp_path: Path) -> None:
    """The generated tests can fail: a prefix check without the '/' boundary is caught."""
    broken = rego.POLICY.replace('startswith(request_path, concat("", [prefix, "/"]))',
                                 "startswith(request_path, prefix)")
    assert broken != rego.POLICY
    bundle = write_bundle(synthetic_platform(tmp_path / "m"), tmp_path / "b", policy=broken)
    proc = run_opa("test", str(bundle))
    assert proc.returncode != 0
    assert "test_orders_buyer_grant0_prefix_boundary_0" in proc.stdout


def test_generated_tests_catch_a_policy_that_ignores_time_windows(tmp_path: Path) -> None:
    broken = rego.POLICY.replace("within_time(rule) if count(rule.timeWindows) == 0", "within_time(_) := true")
    assert broken != rego.POLICY
    bundle = write_bundle(synthetic_platform(tmp_path / "m"), tmp_path / "b", policy=broken)
    proc = run_opa("test", str(bundle))
    assert proc.returncode != 0
    assert "test_orders_buyer_grant1_outside_time_window" in proc.stdout


# --------------------------------------------------------------------------- policy behaviour


def _request(platform: Platform, **overrides: Any) -> rego.Request:
    fields: dict[str, Any] = {
        "service": "orders", "principal": f"spiffe://{platform.config.trust_domain}/ns/agents/sa/buyer",
        "method": "POST", "path": "/orders/new", "headers": {}, "now_ns": 0,
    }
    fields.update(overrides)
    return rego.Request(**fields)


def _ns(year: int, month: int, day: int, hour: int, minute: int) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) * 10**9


@pytest.mark.parametrize(
    ("instant", "allowed"),
    [
        # 12:30 UTC is 08:30 in New York in July (EDT) but 07:30 in January (EST).
        ((2026, 7, 13, 12, 30), True),
        ((2026, 1, 12, 12, 30), False),
        # Saturday 10:30 in Tokyo (UTC+9, no DST) is Saturday 01:30 UTC.
        ((2026, 1, 17, 1, 30), True),
        ((2026, 1, 17, 3, 0), False),  # 12:00 Tokyo: the end is exclusive
        ((2026, 1, 18, 1, 30), False),  # Sunday
    ],
)
def test_time_windows_follow_each_timezone_and_daylight_saving(
    tmp_path: Path, instant: tuple[int, int, int, int, int], allowed: bool,
) -> None:
    platform = synthetic_platform(tmp_path / "m")
    bundle = write_bundle(platform, tmp_path / "b")
    req = _request(platform, now_ns=_ns(*instant))
    expected = rego.decide(rego.with_revocations(rego.authz_data(platform)), req)
    assert expected["allowed"] is allowed
    assert opa_decision(bundle, rego.check_request(req, "gw-orders.shop.svc:8443"), req.now_ns) == expected


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/orders", True), ("/orders/", True), ("/orders/17/items?page=2", True),
        ("/ordersx", False), ("/order", False), ("/", False), ("/ORDERS", False),
    ],
)
def test_prefix_matches_on_segment_boundaries_without_the_query(tmp_path: Path, path: str, allowed: bool) -> None:
    platform = synthetic_platform(tmp_path / "m")
    bundle = write_bundle(platform, tmp_path / "b")
    req = _request(platform, method="GET", path=path, headers={"x-tenant": "acme"})
    decision = opa_decision(bundle, rego.check_request(req, "gw-orders.shop.svc:8443"), 0)
    assert decision == rego.decide(rego.with_revocations(rego.authz_data(platform)), req)
    assert decision["allowed"] is allowed


def test_header_value_must_match_exactly(tmp_path: Path) -> None:
    platform = synthetic_platform(tmp_path / "m")
    bundle = write_bundle(platform, tmp_path / "b")
    req = _request(platform, method="GET", path="/orders", headers={"x-tenant": "acme-evil"})
    decision = opa_decision(bundle, rego.check_request(req, "gw-orders.shop.svc:8443"), 0)
    assert decision["allowed"] is False
    assert "spec.grants[0]: header x-tenant missing or not the granted value" in decision["reason"]


def test_empty_input_is_denied_with_the_default_shape(tmp_path: Path) -> None:
    bundle = write_bundle(synthetic_platform(tmp_path / "m"), tmp_path / "b")
    assert opa_decision(bundle, {}, 0) == {
        "allowed": False,
        "body": "forbidden by Agent Passport policy\n",
        "dynamic_metadata": {"allowed": False, "reason": "denied: the client certificate carries no SPIFFE ID"},
        "headers": {"content-type": "text/plain"},
        "http_status": 403,
        "reason": "denied: the client certificate carries no SPIFFE ID",
    }


def test_policy_passes_opa_check_strict_and_is_opa_fmt_clean(tmp_path: Path) -> None:
    bundle = write_bundle(synthetic_platform(tmp_path / "m"), tmp_path / "b")
    files = [str(bundle / f) for f in ("policy.rego", "mask.rego", "policy_test.rego")]
    check = run_opa("check", "--strict", *files)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = run_opa("fmt", "--list", "--fail", *files)
    assert fmt.returncode == 0, f"not opa-fmt formatted: {fmt.stdout}"


def test_rego_sources_are_package_files_that_ci_lints() -> None:
    """The policy is Rego source in the package (components/render/opa/*.rego, shipped as package
    data), rendered byte for byte; `opa fmt --fail` and `opa check --strict` pass on it as in .ci/run."""
    opa_dir = ROOT / "components" / "render" / "opa"
    assert (opa_dir / "policy.rego").read_text(encoding="utf-8") == rego.POLICY
    # mask.rego: byte for byte but for its placeholder lines (the shared credential query pattern,
    # components/render/credentials.py; tests/policy/test_mask_rego.py lints the rendered file)
    source, rendered = (opa_dir / "mask.rego").read_text(encoding="utf-8").splitlines(), rego.MASK_POLICY.splitlines()
    assert len(source) == len(rendered)
    differ = [(a, b) for a, b in zip(source, rendered, strict=True) if a != b]
    assert len(differ) == 2 and all("@QUERY_MASK" in a and "@QUERY_MASK" not in b for a, b in differ)
    assert '"render/opa/*.rego"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "fmt --fail components/render/opa" in ci and "check --strict components/render/opa" in ci
    fmt = run_opa("fmt", "--fail", "--list", str(opa_dir))
    assert fmt.returncode == 0 and fmt.stdout == "", f"not opa-fmt formatted: {fmt.stdout}{fmt.stderr}"
    check = run_opa("check", "--strict", str(opa_dir))
    assert check.returncode == 0, check.stdout + check.stderr


def test_decision_log_mask_removes_credentials(tmp_path: Path) -> None:
    bundle = write_bundle(synthetic_platform(tmp_path / "m"), tmp_path / "b")
    proc = run_opa("eval", "--format", "json", "--data", str(bundle / "mask.rego"), "data.system.log.mask")
    assert proc.returncode == 0, proc.stderr
    masked = set(json.loads(proc.stdout)["result"][0]["expressions"][0]["value"])
    assert "/input/attributes/request/http/headers/authorization" in masked
    assert "/input/attributes/request/http/headers/cookie" in masked


def test_a_stack_without_gateways_renders_a_valid_empty_test_module(tmp_path: Path) -> None:
    text = SYNTHETIC.split("---\napiVersion: passport.agentpassport.dev/v1alpha1\nkind: Agent", maxsplit=1)[0]
    platform = synthetic_platform(tmp_path / "m", text)
    assert rego.gateway_services(platform) == []
    assert rego.authz_data(platform) == {"agentpassport": {"services": {}}}
    bundle = write_bundle(platform, tmp_path / "b")
    check = run_opa("check", "--strict", str(bundle / "policy.rego"), str(bundle / "policy_test.rego"))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "import" not in (bundle / "policy_test.rego").read_text(encoding="utf-8")
