"""IdentityHealth under mocks, and the kill switch end to end: the real program with suspended
agents leaves no registration, Vault role/policy, IAM role or authorization data for them."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pulumi.runtime import mocks as pmocks

from components.config import stack_file, stack_runtime_config
from components.identity import AgentIdentity
from components.mockrun import Captured, CapturingMonitor, Graph, PassportMocks, run_program
from components.platform_model import load_platform

ROOT = Path(__file__).resolve().parents[2]
HEALTH = "agentpassport:observe:IdentityHealth"
PODMON = "kubernetes:monitoring.coreos.com/v1:PodMonitor"
RULE = "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_identity_health_is_a_child_of_the_root_with_its_objects(
    stack_graph: Callable[[str], Graph], stack: str,
) -> None:
    graph = stack_graph(stack)
    (health,) = graph.of_type(HEALTH)
    assert health.name == "agent-passport-observe"
    root = graph.by_urn(health.parent)
    assert root is not None and root.type == "agentpassport:index:AgentPassport"
    kids = {r.name: r for r in graph.children_of(health.urn)}
    prefix = "agent-passport-observe-"
    assert sorted((r.type, n.removeprefix(prefix)) for n, r in kids.items()) == [
        (CONFIGMAP, "configmap-monitoring-agentpassport-identity-dashboard"),
        (PODMON, "podmonitor-monitoring-agentpassport-gateway-opa"),
        (PODMON, "podmonitor-monitoring-agentpassport-linkerd-identity"),
        (PODMON, "podmonitor-monitoring-agentpassport-spire-agent"),
        (PODMON, "podmonitor-monitoring-agentpassport-spire-server"),
        (RULE, "prometheusrule-monitoring-agentpassport-identity-health"),
    ]
    rule = kids[prefix + "prometheusrule-monitoring-agentpassport-identity-health"].inputs
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "monitoring"
    groups = [g["name"] for g in rule["spec"]["groups"]]
    assert groups[:3] == ["agentpassport-facts", "agentpassport-spire", "agentpassport-trust"]
    board = kids[prefix + "configmap-monitoring-agentpassport-identity-dashboard"].inputs
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["agentpassport-identity.json"])["uid"] == "agentpassport-identity"


def _cert_pem(not_after: dt.datetime) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anchor")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_certificate_expiries_become_recording_rules() -> None:
    """A small program under mocks: the PEMs' NotAfter flows (as Outputs) into the PrometheusRule."""
    from components.observe import IdentityHealth, IdentityHealthArgs

    platform = load_platform("dev")
    not_after = dt.datetime(2031, 6, 1, 12, 0, tzinfo=dt.UTC)
    monitor = CapturingMonitor(PassportMocks())
    pmocks.set_mocks(monitor.mocks, project="agent-passport", stack="dev", preview=False, monitor=monitor)

    names: list[str] = []

    @pulumi.runtime.test
    def program() -> Any:
        health = IdentityHealth("obs", IdentityHealthArgs(
            platform=platform, certificate_pems={"linkerd-anchor": pulumi.Output.from_input(_cert_pem(not_after))}))
        return health.alert_names.apply(names.extend)

    program()
    assert "AgentPassportCertificateExpiring" in names
    (rule,) = [r for r in monitor.captured if r.type == RULE]
    assert rule.name == "obs-prometheusrule-monitoring-agentpassport-identity-health"
    facts = rule.inputs["spec"]["groups"][0]["rules"]
    assert facts[-1] == {"record": "agentpassport_certificate_expiry_timestamp_seconds",
                         "expr": f"vector({int(not_after.timestamp())})", "labels": {"certificate": "linkerd-anchor"}}


# --------------------------------------------------------------------------- kill switch end to end


def _suspend(agents: Path, name: str) -> None:
    f = agents / f"{name}.yaml"
    text = f.read_text()
    assert "\nspec:\n" in text
    f.write_text(text.replace("\nspec:\n", "\nspec:\n  suspended: true\n  suspendedReason: INC-4711 leaked SVID\n", 1))


def _graph_with(stack: str, agents: Path) -> Graph:
    config, secrets = stack_runtime_config(stack_file(stack, ROOT))
    config = {**config, "agent-passport:agentsDir": str(agents)}
    return run_program(stack, ROOT, config, secrets)


def _markers(ident: AgentIdentity, database_roles: list[str], aws_roles: list[str]) -> list[str]:
    """Strings that only appear in resources granting this agent something."""
    out = [ident.spiffe_id, ident.vault_role, ident.vault_policy, *database_roles, *aws_roles]
    if ident.linkerd_identity:
        out.append(ident.linkerd_identity)
    return out


def _references(graph: Graph, name: str, markers: list[str]) -> list[Captured]:
    """Resources named after the agent (a whole dash-separated token) or carrying one of its markers."""
    hits = []
    for r in graph.resources:
        tokens = f"-{r.name}-"
        blob = json.dumps(r.inputs, sort_keys=True, default=str)
        if f"-{name}-" in tokens or any(m in blob for m in markers):
            hits.append(r)
    return hits


def _category(r: Captured) -> str:
    if r.type.startswith("kubernetes:spire.spiffe.io/"):
        return "spire-registration"
    if r.type.startswith("vault:"):
        return "vault"
    if r.type.startswith("aws:iam/") or r.type.startswith("aws:rolesanywhere/"):
        return "aws-iam"
    if r.type == CONFIGMAP and ("rego" in json.dumps(r.inputs) or "-data" in r.name):
        return "rego-data"
    if r.type.startswith("kubernetes:policy.linkerd.io/"):
        return "mesh-authz"
    return r.type


@pytest.mark.parametrize(("stack", "suspended"), [
    ("dev", ("agent-cortex", "invoice-processor")),
    ("prod", ("agent-cortex", "invoice-processor", "report-summarizer")),
])
def test_suspended_agents_leave_nothing_that_grants_access(
    stack: str, suspended: tuple[str, ...], tmp_path: Path, stack_graph: Callable[[str], Graph],
) -> None:
    agents = tmp_path / "agents"
    shutil.copytree(ROOT / "agents", agents)
    for name in suspended:
        _suspend(agents, name)
    before = load_platform(stack)
    after = load_platform(stack, [str(agents)])
    assert [a.name for a in after.suspended_agents] == sorted(suspended)

    baseline = stack_graph(stack)
    graph = _graph_with(stack, agents)
    on = before.config.subsystems
    expected = {"spire-registration", "rego-data"} | ({"vault"} if graph.of_type("agentpassport:vault:VaultIdentity")
                                                      or any(r.type.startswith("vault:") for r in baseline.resources)
                                                      else set())
    for name in suspended:
        agent = before.agent(name)
        assert agent is not None
        db_roles = [agent.identity.database_role(g) for _, g in agent.grants_of("database")]
        aws_roles = [agent.identity.aws_role_name(g.role) for _, g in agent.grants_of("aws")]
        markers = _markers(agent.identity, db_roles, aws_roles)
        # the check can fail: with the agent active, its access is in the graph
        found = {_category(r) for r in _references(baseline, name, markers)}
        wanted = set(expected)
        if not db_roles and not any(g for _, g in agent.grants_of("vault")):
            wanted.discard("vault")
        if not any(True for _ in agent.grants_of("http")):
            wanted.discard("rego-data")
        if aws_roles and on.aws:
            wanted.add("aws-iam")
        assert wanted <= found, f"{name}: baseline lacks {wanted - found}"
        # suspended: nothing at all references it
        left = _references(graph, name, markers)
        assert left == [], f"{name} still has: " + ", ".join(f"{r.type} {r.name}" for r in left)

    # the kill switch is targeted: active agents keep their registrations
    for a in after.active_agents:
        regs = [r for r in graph.resources if r.type.startswith("kubernetes:spire.spiffe.io/")
                and a.identity.spiffe_id in json.dumps(r.inputs)]
        assert regs, f"active agent {a.name} lost its registration"
    # and the program still reports the suspension
    assert graph.outputs["outputs"]["suspended"] == sorted(suspended)
    assert all(graph.outputs["identityBom"]["agents"][n]["suspended"] for n in suspended)
