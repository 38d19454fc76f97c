"""The pack as the Pulumi engine runs it: ``__main__.py`` serves the analyzer over gRPC.

The Pulumi CLI cannot be built here, so this test plays the engine's part: it starts the
pack's entry point (which listens on 127.0.0.1 and prints its port), reads the analyzer info,
configures it, and sends every resource of the fixture stack through ``Analyze`` and
``AnalyzeStack`` as protobuf messages. The diagnostics must be exactly what ``passport check``
finds offline for the same graph and config.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from google.protobuf import empty_pb2, struct_pb2  # type: ignore[import-untyped]
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from components.check import (
    PACK_DIR,
    evaluate,
    load_inputs,
    merge_config,
    policies,
    stack_policy_config,
    stack_urn,
)
from components.mockrun import Graph, run_program
from tests.conftest import ROOT
from tests.support.processes import stop

FIXTURE = ROOT / "tests/fixtures/stacks/violations"
pytestmark = pytest.mark.e2e

LEVELS = {"advisory": analyzer_pb2.ADVISORY, "mandatory": analyzer_pb2.MANDATORY,
          "disabled": analyzer_pb2.DISABLED, "remediate": analyzer_pb2.REMEDIATE}


@pytest.fixture
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    proc = subprocess.Popen([sys.executable, "-u", "__main__.py"], cwd=PACK_DIR,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port: list[str] = []
        reader = threading.Thread(target=lambda: port.append(proc.stdout.readline() if proc.stdout else ""))
        reader.start()
        reader.join(timeout=60)
        if not port or not port[0].strip().isdigit():
            proc.kill()
            pytest.fail(f"the pack did not print its port: {proc.stderr.read() if proc.stderr else ''}")
        channel = grpc.insecure_channel(f"127.0.0.1:{port[0].strip()}")
        grpc.channel_ready_future(channel).result(timeout=30)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        stop(proc)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(json.loads(json.dumps(value, default=str)))
    return s


def _resources(graph: Graph) -> list[analyzer_pb2.AnalyzerResource]:
    stack = analyzer_pb2.AnalyzerResource(type="pulumi:pulumi:Stack", urn=stack_urn(graph.stack),
                                          name=f"agent-passport-{graph.stack}", properties=_struct(graph.outputs))
    out = [stack]
    for r in graph.resources:
        out.append(analyzer_pb2.AnalyzerResource(
            type=r.type, urn=r.urn, name=r.name, properties=_struct(r.inputs), parent=r.parent,
            dependencies=r.dependencies, options=analyzer_pb2.AnalyzerResourceOptions(parent=r.parent)))
    return out


def test_analyzer_info(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "no-static-credentials" and info.supportsConfig
    assert [p.name for p in info.policies] == [p.name for p in policies()]
    assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}
    svid = next(p for p in info.policies if p.name == "svid-ttl-limits")
    assert svid.configSchema.properties["maxX509SvidTtl"]["default"] == "1h"
    assert svid.remediation_steps.startswith("Lower spec.identity.x509SvidTtl")


def test_engine_and_passport_check_find_the_same_violations(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    cfg, _ = load_inputs("dev", FIXTURE)
    config = merge_config(stack_policy_config(cfg), {"no-iam-users": "advisory"})
    policy_config = {}
    for p in policies():
        entry = dict(config.get(p.name, {}))
        level = entry.pop("enforcementLevel", "mandatory")
        policy_config[p.name] = analyzer_pb2.PolicyConfig(enforcementLevel=LEVELS[level],
                                                          properties=_struct(entry))
    analyzer.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig=policy_config))

    graph = run_program("dev", FIXTURE)
    engine: set[tuple[str, str, str]] = set()
    resources = _resources(graph)
    for r in resources[1:]:
        response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(
            type=r.type, properties=r.properties, urn=r.urn, name=r.name, options=r.options))
        engine.update((d.policyName, d.urn or r.urn, d.message) for d in response.diagnostics)
    response = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=resources))
    engine.update((d.policyName, d.urn, d.message) for d in response.diagnostics)

    offline = {(v.policy.name, v.urn or "", f"{v.policy.description}\n{v.message}")
               for v in evaluate(graph, config)}
    assert engine == offline
    assert {name for name, _, _ in engine} == {"no-iam-access-keys", "no-service-account-token-secrets",
                                               "svid-ttl-limits", "vault-no-stored-db-password"}
