"""AuthzGateway in the program's resource graph (real __main__.py under Pulumi mocks)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from components.config import stack_runtime_config
from components.identity import gateway_identity
from components.mockrun import Captured, Graph, run_program
from tests.conftest import ROOT, STACKS

GATEWAY = "agentpassport:authz:AuthzGateway"
ROOT_TYPE = "agentpassport:index:AgentPassport"
CSID = "kubernetes:spire.spiffe.io/v1alpha1:ClusterSPIFFEID"
TRUST_DOMAINS = {"dev": "dev.agentpassport.internal", "staging": "staging.agents.acme-corp.net",
                 "prod": "prod.agents.acme-corp.net"}
GATEWAY_NAMESPACES = {"payments-api": "payments", "slack-gateway": "integrations"}
CHILD_TYPES = Counter({
    CSID: 1,
    "kubernetes:core/v1:ServiceAccount": 1,
    "kubernetes:core/v1:ConfigMap": 5,
    "kubernetes:apps/v1:Deployment": 1,
    "kubernetes:core/v1:Service": 1,
    "kubernetes:policy/v1:PodDisruptionBudget": 1,
})


def gateways(graph: Graph) -> dict[str, Captured]:
    return {g.name.removeprefix("agent-passport-authz-"): g for g in graph.of_type(GATEWAY)}


def child(graph: Graph, gw: Captured, type_: str, name_suffix: str = "") -> Captured:
    (found,) = [r for r in graph.children_of(gw.urn) if r.type == type_ and r.name.endswith(name_suffix)]
    return found


def data_document(graph: Graph, gw: Captured) -> dict[str, Any]:
    cm = child(graph, gw, "kubernetes:core/v1:ConfigMap", "-data")
    loaded: dict[str, Any] = json.loads(cm.inputs["data"]["data.json"])
    return loaded


def variant(tmp_path: Path, stack: str, edit: Callable[[Path], None]) -> Graph:
    """The program for ``stack`` with a copy of agents/ changed by ``edit``."""
    agents = tmp_path / "agents"
    shutil.copytree(ROOT / "agents", agents)
    edit(agents)
    config, secrets = stack_runtime_config(ROOT / f"stacks/Pulumi.{stack}.yaml")
    config["agent-passport:agentsDir"] = str(agents)
    return run_program(stack, ROOT, config, secrets)


@pytest.mark.parametrize("stack", STACKS)
def test_one_gateway_per_called_gateway_service_under_the_root(stack: str, stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph(stack)
    (root,) = graph.of_type(ROOT_TYPE)
    gws = gateways(graph)
    # inference has spec.gateway: false.
    assert sorted(gws) == ["payments-api", "slack-gateway"]
    for svc, gw in gws.items():
        assert gw.parent == root.urn
        assert not gw.custom
        children = graph.children_of(gw.urn)
        assert Counter(c.type for c in children) == CHILD_TYPES
        for c in children:
            assert c.name.startswith(f"{gw.name}-"), c.name
            assert c.parent == gw.urn
        ns = GATEWAY_NAMESPACES[svc]
        for c in children:
            if c.type != CSID:
                assert c.inputs["metadata"]["namespace"] == ns


@pytest.mark.parametrize("stack", STACKS)
def test_every_http_grant_yields_exactly_one_data_entry(stack: str, stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph(stack)
    td = TRUST_DOMAINS[stack]
    docs = {svc: data_document(graph, gw)["agentpassport"]["services"] for svc, gw in gateways(graph).items()}
    # Each gateway carries only its own service's grants.
    assert {svc: list(d) for svc, d in docs.items()} == {"payments-api": ["payments-api"],
                                                        "slack-gateway": ["slack-gateway"]}
    slack = docs["slack-gateway"]["slack-gateway"]["principals"]
    assert list(slack) == [f"spiffe://{td}/ns/agents/sa/agent-cortex"]
    (rule,) = slack[f"spiffe://{td}/ns/agents/sa/agent-cortex"]["rules"]
    assert rule == {
        "grant": 0, "headers": {"x-slack-channel": "security-alerts"}, "methods": {"POST": True},
        "paths": {"exact": {"/api/slack/message": True}, "prefix": []},
        "timeWindows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "end": "17:00", "start": "09:00",
                         "timezone": "Europe/London"}],
    }
    payments = docs["payments-api"]["payments-api"]["principals"]
    assert list(payments) == [f"spiffe://{td}/ns/finance-agents/sa/invoice-processor"]
    assert [r["grant"] for r in payments[f"spiffe://{td}/ns/finance-agents/sa/invoice-processor"]["rules"]] == [1]


@pytest.mark.parametrize("stack", STACKS)
def test_gateway_pods_identity_and_hardening(stack: str, stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph(stack)
    td = TRUST_DOMAINS[stack]
    for svc, gw in gateways(graph).items():
        ident = gateway_identity(svc, GATEWAY_NAMESPACES[svc], td, "cluster.local")
        sa = child(graph, gw, "kubernetes:core/v1:ServiceAccount")
        assert sa.inputs["metadata"]["name"] == ident.name == f"gw-{svc}"
        assert sa.inputs["automountServiceAccountToken"] is False
        dep = child(graph, gw, "kubernetes:apps/v1:Deployment")
        assert dep.inputs["metadata"]["name"] == ident.name
        spec = dep.inputs["spec"]
        assert spec["selector"] == {"matchLabels": ident.pod_labels}
        pod = spec["template"]["spec"]
        assert spec["template"]["metadata"]["labels"] == ident.pod_labels
        assert pod["serviceAccountName"] == ident.name
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert [c["name"] for c in pod["containers"]] == ["envoy", "opa"]
        envoy_c, opa_c = pod["containers"]
        assert envoy_c["image"] == "envoyproxy/envoy:v1.36.2"
        assert opa_c["image"] == "openpolicyagent/opa:1.10.1-envoy"
        for c in pod["containers"]:
            assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
        assert "--addr=127.0.0.1:8181" in opa_c["args"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["spiffe-workload-api"] == {"name": "spiffe-workload-api",
                                                  "csi": {"driver": "csi.spiffe.io", "readOnly": True}}
        assert {"name": "spiffe-workload-api", "mountPath": "/spiffe-workload-api", "readOnly": True} in (
            envoy_c["volumeMounts"])
        service = child(graph, gw, "kubernetes:core/v1:Service")
        assert service.inputs["spec"]["selector"] == ident.pod_labels
        assert service.inputs["spec"]["ports"] == [{"name": "mtls", "port": 8443, "targetPort": "mtls",
                                                    "protocol": "TCP"}]


def _crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds/spire/clusterspiffeids.spire.spiffe.io.yaml").read_text(encoding="utf-8"))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _evaluate_template(template: str, namespace: str, service_account: str) -> str:
    values = {".PodMeta.Namespace": namespace, ".PodSpec.ServiceAccountName": service_account}
    out = re.sub(r"\{\{\s*(\S+)\s*\}\}", lambda m: values[m.group(1)], template)
    assert "{{" not in out
    return out


@pytest.mark.parametrize("stack", STACKS)
def test_cluster_spiffe_id_registers_the_gateway_identity(stack: str, stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph(stack)
    schema = _crd_schema()
    for svc, gw in gateways(graph).items():
        ident = gateway_identity(svc, GATEWAY_NAMESPACES[svc], TRUST_DOMAINS[stack], "cluster.local")
        csid = child(graph, gw, CSID)
        body = {"apiVersion": csid.inputs["apiVersion"], "kind": csid.inputs["kind"],
                "metadata": csid.inputs["metadata"], "spec": csid.inputs["spec"]}
        jsonschema.validate(body, schema)
        assert body["apiVersion"] == "spire.spiffe.io/v1alpha1"
        spec = body["spec"]
        assert spec["className"] == "agent-passport"
        assert spec["podSelector"] == {"matchLabels": ident.pod_labels}
        assert spec["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": ident.namespace}}
        pod = child(graph, gw, "kubernetes:apps/v1:Deployment").inputs
        evaluated = _evaluate_template(spec["spiffeIDTemplate"], pod["metadata"]["namespace"],
                                       pod["spec"]["template"]["spec"]["serviceAccountName"])
        assert evaluated == ident.spiffe_id == f"spiffe://{TRUST_DOMAINS[stack]}/ns/{ident.namespace}/sa/gw-{svc}"
        # A pod copying the labels under another ServiceAccount does not get the gateway's ID.
        assert _evaluate_template(spec["spiffeIDTemplate"], ident.namespace, "intruder") != ident.spiffe_id


def test_a_suspended_agent_gets_no_data_entry(tmp_path: Path) -> None:
    def add_suspended_caller(agents: Path) -> None:
        (agents / "zz-suspended.yaml").write_text("""\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata: {name: slack-bot, team: integrations, owner: integrations@acme-corp.net}
spec:
  suspended: true
  suspendedReason: INC-7 token exfiltration suspected
  platform: {kubernetes: {namespace: agents, serviceAccount: slack-bot}}
  grants:
    - http: {service: slack-gateway, methods: [POST], paths: [{prefix: /}]}
    - http: {service: payments-api, methods: [POST], paths: [{prefix: /}]}
""", encoding="utf-8")

    graph = variant(tmp_path, "dev", add_suspended_caller)
    gws = gateways(graph)
    assert sorted(gws) == ["payments-api", "slack-gateway"]
    for gw in gws.values():
        text = json.dumps(data_document(graph, gw))
        assert "slack-bot" not in text
    assert list(data_document(graph, gws["slack-gateway"])["agentpassport"]["services"]["slack-gateway"]
                ["principals"]) == ["spiffe://dev.agentpassport.internal/ns/agents/sa/agent-cortex"]


def test_suspending_the_only_caller_removes_the_gateway(tmp_path: Path) -> None:
    def suspend_cortex(agents: Path) -> None:
        path = agents / "agent-cortex.yaml"
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("spec:\n", "spec:\n  suspended: true\n  suspendedReason: INC-9\n", 1),
                        encoding="utf-8")

    graph = variant(tmp_path, "dev", suspend_cortex)
    assert sorted(gateways(graph)) == ["payments-api"]
    # (Linkerd's policy objects naming the gateway are the mesh component's, not ours.)
    assert not [r for r in graph.resources if "gw-slack-gateway" in r.name and "linkerd" not in r.type]


def test_authz_subsystem_off_registers_no_gateway() -> None:
    config, secrets = stack_runtime_config(ROOT / "stacks/Pulumi.dev.yaml")
    subsystems = json.loads(config["agent-passport:subsystems"])
    config["agent-passport:subsystems"] = json.dumps({**subsystems, "authz": False})
    graph = run_program("dev", ROOT, config, secrets)
    assert graph.of_type(GATEWAY) == []
    assert not [r for r in graph.resources if "-authz-" in r.name or (r.type == CSID and "gw-" in r.name)]


def test_reserved_gateway_port_stops_the_program_before_any_resource() -> None:
    config, secrets = stack_runtime_config(ROOT / "stacks/Pulumi.dev.yaml")
    config["agent-passport:authz"] = json.dumps({"gatewayPort": 9191})
    with pytest.raises(Exception, match=r"gatewayPort.*9191 is taken by OPA's ext_authz gRPC server") as info:
        run_program("dev", ROOT, config, secrets)
    assert type(info.value).__name__ == "RunError"


def test_gateway_configmaps_are_named_after_the_gateway(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("dev")
    gw = gateways(graph)["payments-api"]
    ns_children = {c.inputs["metadata"]["name"] for c in graph.children_of(gw.urn)
                   if c.type == "kubernetes:core/v1:ConfigMap"}
    assert ns_children == {"gw-payments-api-envoy", "gw-payments-api-opa", "gw-payments-api-policy",
                           "gw-payments-api-data", "gw-payments-api-revocations"}


@pytest.mark.parametrize("stack", ["dev", "prod-base"])
def test_pulumi_up_creates_the_revocation_list_and_never_overwrites_it(
        stack: str, stack_graph: Callable[[str], Graph]) -> None:
    """`passport revoke` writes the list between deployments: a later `pulumi up` must not lift it."""
    graph = stack_graph(stack) if stack != "prod-base" else run_program(stack, ROOT)
    lists = [r for r in graph.of_type("kubernetes:core/v1:ConfigMap")
             if r.inputs["metadata"]["name"].endswith("-revocations")]
    assert sorted(r.inputs["metadata"]["name"] for r in lists) == ["gw-payments-api-revocations",
                                                                    "gw-slack-gateway-revocations"]
    assert all(r.ignore_changes == ["data"] for r in lists)
    others = [r for r in graph.resources if r.ignore_changes and r not in lists]
    assert others == []
