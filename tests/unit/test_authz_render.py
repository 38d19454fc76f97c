"""AuthzGateway on its own (mocks), its rendered artifacts, and the errors a user can cause."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi.runtime import mocks as pmocks
from pulumi.runtime.settings import set_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.authz import AuthzGateway, AuthzGatewayArgs
from components.config import load_stack_config
from components.errors import ConfigError, ManifestError
from components.mockrun import CapturingMonitor, Graph, PassportMocks
from components.platform_model import Platform
from components.render import rego
from components.render.artifacts import render_all
from components.render.authz import (
    authz_artifacts,
    compile_authz,
    gateway_objects,
    opa_config,
    validate_authz,
)
from tests.conftest import ROOT
from tests.policy.test_rego_policy import SYNTHETIC, repo_platform, synthetic_platform

GATEWAY = "agentpassport:authz:AuthzGateway"


def run_gateway(platform: Platform, service: str) -> tuple[Graph, dict[str, Any]]:
    """Register one AuthzGateway alone under mocks; return the graph and its resolved outputs."""
    monitor = CapturingMonitor(PassportMocks())
    set_root_resource(None)  # type: ignore[arg-type]
    pmocks.set_mocks(monitor.mocks, project="agent-passport", stack="dev", preview=False, monitor=monitor)
    holder: dict[str, AuthzGateway] = {}
    gateway = compile_authz(platform).gateway(service)  # ValueError: not a gateway service

    def program() -> None:
        holder["gw"] = AuthzGateway(f"authz-{service}", AuthzGatewayArgs(gateway=gateway))

    _sync_await(run_pulumi_func(program))
    gw = holder["gw"]
    outputs = {
        key: _sync_await(getattr(gw, key).future())
        for key in ("gateway_name", "namespace", "spiffe_id", "address", "principals")
    }
    return Graph(resources=monitor.captured, outputs={}, stack="dev"), outputs


def test_component_alone_registers_its_objects_and_outputs(tmp_path: Path) -> None:
    platform = synthetic_platform(tmp_path)
    graph, outputs = run_gateway(platform, "orders")
    (component,) = graph.of_type(GATEWAY)
    assert component.name == "authz-orders"
    children = [r for r in graph.resources if r is not component]
    assert children and all(r.parent == component.urn for r in children)
    assert sorted(r.name for r in children) == sorted([
        "authz-orders-clusterspiffeid-agentpassport.gw-orders.shop",
        "authz-orders-serviceaccount-shop-gw-orders",
        "authz-orders-configmap-shop-gw-orders-envoy",
        "authz-orders-configmap-shop-gw-orders-opa",
        "authz-orders-configmap-shop-gw-orders-policy",
        "authz-orders-configmap-shop-gw-orders-data",
        "authz-orders-configmap-shop-gw-orders-revocations",
        "authz-orders-deployment-shop-gw-orders",
        "authz-orders-service-shop-gw-orders",
        "authz-orders-poddisruptionbudget-shop-gw-orders",
    ])
    td = platform.config.trust_domain
    assert outputs == {
        "gateway_name": "gw-orders",
        "namespace": "shop",
        "spiffe_id": f"spiffe://{td}/ns/shop/sa/gw-orders",
        "address": "gw-orders.shop.svc:8443",
        "principals": [f"spiffe://{td}/ns/agents/sa/buyer", f"spiffe://{td}/vm/auditor"],
    }
    (data_cm,) = [r for r in children if r.name.endswith("-data")]
    doc = json.loads(data_cm.inputs["data"]["data.json"])
    assert doc == rego.authz_data(platform, ["orders"])
    assert "rogue" not in data_cm.inputs["data"]["data.json"]


def test_component_refuses_a_service_without_gateway(tmp_path: Path) -> None:
    platform = synthetic_platform(tmp_path)
    for service in ("legacy", "idle", "only-suspended"):
        with pytest.raises(ValueError, match="is not a gateway service"):
            run_gateway(platform, service)


def test_opa_config_queries_the_decision_object_on_loopback(tmp_path: Path) -> None:
    platform = synthetic_platform(tmp_path)
    svc = platform.service("orders")
    assert svc is not None
    assert opa_config(platform, svc) == {
        "labels": {"environment": "dev", "gateway": "gw-orders", "service": "orders"},
        "plugins": {"envoy_ext_authz_grpc": {
            "addr": "127.0.0.1:9191", "path": "agentpassport/authz/decision",
            "dry-run": False, "enable-reflection": False,
        }},
        "decision_logs": {"console": True},
    }


def test_policy_configmap_and_opa_args_load_the_same_files(tmp_path: Path) -> None:
    platform = synthetic_platform(tmp_path)
    svc = platform.service("catalog")
    assert svc is not None
    objects = {(o["kind"], o["metadata"]["name"]): o for o in gateway_objects(platform, svc)}
    policy = objects[("ConfigMap", "gw-catalog-policy")]["data"]
    assert policy == {"mask.rego": rego.MASK_POLICY, "policy.rego": rego.POLICY}
    opa = objects[("Deployment", "gw-catalog")]["spec"]["template"]["spec"]["containers"][1]
    # OPA watches its data directory: the data document and the revocation list
    assert opa["args"][-5:] == ["--watch", "--ignore=..*", "/policy/policy.rego", "/policy/mask.rego", "/data"]
    data = json.loads(objects[("ConfigMap", "gw-catalog-data")]["data"]["data.json"])
    assert list(data["agentpassport"]["services"]) == ["catalog"]
    volume = next(v for v in objects[("Deployment", "gw-catalog")]["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "data")
    assert volume["projected"]["sources"] == [
        {"configMap": {"name": "gw-catalog-data", "items": [{"key": "data.json", "path": "data.json"}]}},
        {"configMap": {"name": "gw-catalog-revocations",
                       "items": [{"key": "revocations.json", "path": "revocations.json"}]}},
    ]  # the revocation list is not optional: a gateway without it does not start
    revocations = objects[("ConfigMap", "gw-catalog-revocations")]
    assert json.loads(revocations["data"]["revocations.json"]) == rego.revocation_document()
    assert revocations["metadata"]["annotations"] == {"agentpassport.dev/ignore-changes": "data"}


def test_config_hash_changes_with_the_grants(tmp_path: Path) -> None:
    """A changed grant rolls the gateway pods (OPA reads its files at start)."""
    def digest(text: str, where: Path) -> str:
        platform = synthetic_platform(where, text)
        svc = platform.service("orders")
        assert svc is not None
        (dep,) = [o for o in gateway_objects(platform, svc) if o["kind"] == "Deployment"]
        value: str = dep["spec"]["template"]["metadata"]["annotations"]["agentpassport.dev/config-sha256"]
        return value

    before = digest(SYNTHETIC, tmp_path / "a")
    assert before == digest(SYNTHETIC, tmp_path / "b")
    assert before != digest(SYNTHETIC.replace("x-tenant: acme", "x-tenant: other"), tmp_path / "c")


def test_artifacts_are_registered_and_deterministic() -> None:
    platform = repo_platform("prod")
    first = render_all(platform)
    assert first == render_all(platform)
    ours = {a.path for a in first if a.path.startswith(("envoy/", "rego/", "kubernetes/authz/"))}
    assert {"envoy/payments-api.yaml", "envoy/slack-gateway.yaml", "rego/policy.rego", "rego/mask.rego",
            "rego/data.json", "rego/revocations.json", "rego/policy_test.rego"} <= ours
    k8s = sorted(p for p in ours if p.startswith("kubernetes/authz/"))
    assert len(k8s) == 2 * 10
    assert "kubernetes/authz/clusterspiffeid-agentpassport.gw-slack-gateway.integrations.yaml" in k8s
    by_path = {a.path: a.content for a in first}
    assert by_path["rego/policy.rego"] == rego.POLICY
    assert json.loads(by_path["rego/data.json"]) == rego.authz_data(platform)
    dep = yaml.safe_load(by_path["kubernetes/authz/deployment-payments-gw-payments-api.yaml"])
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_no_artifacts_when_authz_is_off(tmp_path: Path) -> None:
    platform = synthetic_platform(tmp_path)
    cfg = platform.config.model_copy(update={"subsystems": platform.config.subsystems.model_copy(
        update={"authz": False})})
    off = Platform(stack=platform.stack, config=cfg, config_file=platform.config_file,
                   agents=platform.agents, services=platform.services)
    assert list(authz_artifacts(off)) == []


def test_a_service_name_too_long_for_its_gateway_is_a_manifest_error(tmp_path: Path) -> None:
    long_name = "s" * 61
    text = SYNTHETIC.replace("metadata: {name: orders, team: shop}", f"metadata: {{name: {long_name}, team: shop}}")
    text = text.replace("service: orders", f"service: {long_name}")
    platform = synthetic_platform(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        validate_authz(platform)
    (problem,) = info.value.problems
    assert problem.file.endswith("manifests.yaml")
    assert problem.line == 3
    assert problem.field == "metadata.name"
    assert "shorten the name to at most 60 characters" in problem.message
    # 60 characters still fit: gw-<60> is a 63-character DNS label.
    ok = synthetic_platform(tmp_path / "ok", text.replace(long_name, "s" * 60))
    validate_authz(ok)


def test_reserved_gateway_port_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    text = (ROOT / "stacks/Pulumi.dev.yaml").read_text(encoding="utf-8")
    (stacks / "Pulumi.dev.yaml").write_text(text + "  agent-passport:authz:\n    gatewayPort: 9901\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_stack_config("dev", tmp_path)
    (problem,) = info.value.problems
    assert "gatewayPort" in problem.field
    # The authz section's line or the gatewayPort line, whichever the config loader resolves.
    assert problem.line in (len(text.splitlines()) + 1, len(text.splitlines()) + 2)
    assert "9901 is taken by Envoy's admin interface" in problem.message


def test_gateway_with_one_replica_has_no_disruption_budget(tmp_path: Path) -> None:
    platform = synthetic_platform(tmp_path)
    cfg = platform.config.model_copy(update={"authz": platform.config.authz.model_copy(update={"replicas": 1})})
    single = Platform(stack=platform.stack, config=cfg, config_file=platform.config_file,
                      agents=platform.agents, services=platform.services)
    svc = single.service("orders")
    assert svc is not None
    kinds = [o["kind"] for o in gateway_objects(single, svc)]
    assert "PodDisruptionBudget" not in kinds
    (dep,) = [o for o in gateway_objects(single, svc) if o["kind"] == "Deployment"]
    assert dep["spec"]["replicas"] == 1


def test_pulumi_import_stays_out_of_the_renderers() -> None:
    for path in [ROOT / "components/render/authz.py", ROOT / "components/render/envoy.py",
                 *(ROOT / "components/render/rego").glob("*.py")]:
        source = path.read_text(encoding="utf-8")
        assert "import pulumi" not in source and "from pulumi" not in source, path
