"""The real __main__.py under Pulumi mocks, per stack: root component, parents, bill of materials."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from components.config import stack_runtime_config
from components.mockrun import Graph, run_program
from tests.conftest import ROOT, STACKS

ROOT_TYPE = "agentpassport:index:AgentPassport"


@pytest.mark.parametrize("stack", STACKS)
def test_root_component_and_parents(stack: str, stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph(stack)
    (root,) = graph.of_type(ROOT_TYPE)
    assert root.name == "agent-passport"
    for r in graph.resources:
        if r.type.startswith("pulumi:providers:") or r is root:
            continue
        assert any(a.urn == root.urn for a in graph.ancestors(r)), f"{r.type} {r.name} is not under the root"


@pytest.mark.parametrize("stack", STACKS)
def test_component_types_are_three_part_tokens(stack: str, stack_graph: Callable[[str], Graph]) -> None:
    for r in stack_graph(stack).resources:
        if not r.custom:
            module, _, kind = r.type.partition(":")[2].partition(":")
            assert r.type.startswith("agentpassport:") and module and kind, r.type


@pytest.mark.parametrize("stack", STACKS)
def test_identity_bill_of_materials(stack: str, stack_graph: Callable[[str], Graph]) -> None:
    bom = stack_graph(stack).outputs["identityBom"]
    td = {"dev": "dev.agentpassport.internal", "staging": "staging.agents.acme-corp.net",
          "prod": "prod.agents.acme-corp.net"}[stack]
    assert bom["trustDomain"] == td
    agents = bom["agents"]
    assert set(agents) == {"agent-cortex", "invoice-processor", "ledger-sync", "report-summarizer"}
    assert agents["agent-cortex"]["spiffeId"] == f"spiffe://{td}/ns/agents/sa/agent-cortex"
    assert agents["agent-cortex"]["x509SvidTtl"] == "15m"
    assert [g["kind"] for g in agents["agent-cortex"]["grants"]] == ["http", "http", "database"]
    assert agents["ledger-sync"]["meshIdentity"] is None
    assert len({a["spiffeId"] for a in agents.values()}) == 4


def test_dev_renders_kubernetes_to_a_directory(stack_graph: Callable[[str], Graph]) -> None:
    (provider,) = stack_graph("dev").of_type("pulumi:providers:kubernetes")
    assert provider.inputs["renderYamlToDirectory"] == "build/k8s/dev"
    (prod_provider,) = stack_graph("prod").of_type("pulumi:providers:kubernetes")
    assert "renderYamlToDirectory" not in prod_provider.inputs


def test_bad_manifest_stops_the_program_before_any_resource(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text((ROOT / "tests/fixtures/bad/09-ttl-above-stack-limit.yaml").read_text())
    config, secrets = stack_runtime_config(ROOT / "stacks/Pulumi.dev.yaml")
    config["agent-passport:agentsDir"] = str(tmp_path)
    with pytest.raises(Exception, match=r"bad.yaml:\d+: spec.identity.x509SvidTtl: 2h is above") as info:
        run_program("dev", ROOT, config, secrets)
    assert type(info.value).__name__ == "RunError"


def test_program_is_deterministic() -> None:
    """Same manifests, same inputs per resource: an unchanged stack previews with no changes.

    (Registration order is asynchronous and irrelevant to the engine; the inputs are not.)
    """
    first, second = run_program("dev", ROOT), run_program("dev", ROOT)
    def key(g: Graph) -> list[tuple[str, str, str, str]]:
        return sorted((r.type, r.name, r.parent, repr(r.inputs)) for r in g.resources)
    assert key(first) == key(second)
