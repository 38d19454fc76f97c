"""SPIRE components under mocks: the real program per stack (resource types, parents, one
registration per agent, prod HA) and a variant with a suspended agent."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from components.config import stack_file, stack_runtime_config
from components.mockrun import Captured, Graph, run_program
from components.platform_model import load_platform

ROOT = Path(__file__).resolve().parents[2]
SERVER = "agentpassport:spire:SpireServer"
AGENTS = "agentpassport:spire:SpireAgents"
REGS = "agentpassport:spire:Registrations"
CSID = "kubernetes:spire.spiffe.io/v1alpha1:ClusterSPIFFEID"
CSE = "kubernetes:spire.spiffe.io/v1alpha1:ClusterStaticEntry"
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's wire marker of a secret value
SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"


def _one(graph: Graph, type_: str) -> Captured:
    (res,) = graph.of_type(type_)
    return res


def _kinds(graph: Graph, parent: Captured) -> Counter[str]:
    return Counter(r.type for r in graph.children_of(parent.urn))


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_components_and_parents(stack_graph: Callable[[str], Graph], stack: str) -> None:
    graph = stack_graph(stack)
    root = _one(graph, "agentpassport:index:AgentPassport")
    for type_, name in (
        (SERVER, "agent-passport-spire-server"),
        (AGENTS, "agent-passport-spire-agents"),
        (REGS, "agent-passport-spire-registrations"),
    ):
        comp = _one(graph, type_)
        assert comp.name == name
        assert comp.parent == root.urn
    server = _one(graph, SERVER)
    kinds = _kinds(graph, server)
    assert kinds["kubernetes:core/v1:Namespace"] == 1
    assert kinds["kubernetes:core/v1:ServiceAccount"] == 2  # server, OIDC provider
    assert kinds["kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"] == 1
    assert kinds["kubernetes:admissionregistration.k8s.io/v1:ValidatingWebhookConfiguration"] == 1
    assert kinds["kubernetes:core/v1:Service"] == 3  # server, webhook, OIDC
    agents = _kinds(graph, _one(graph, AGENTS))
    assert agents == Counter(
        {
            "kubernetes:core/v1:ServiceAccount": 1,
            "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole": 1,
            "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding": 1,
            "kubernetes:core/v1:ConfigMap": 1,
            "kubernetes:apps/v1:DaemonSet": 2,
            "kubernetes:storage.k8s.io/v1:CSIDriver": 1,
        }
    )
    # every Kubernetes object of the SPIRE components is a direct child of one of them
    comps = {c.urn for c in (_one(graph, SERVER), _one(graph, AGENTS), _one(graph, REGS))}
    for res in graph.resources:
        if res.type.startswith("kubernetes:") and res.name.startswith("agent-passport-spire-"):
            assert res.parent in comps, res.name


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_active_agent_has_exactly_one_registration(stack_graph: Callable[[str], Graph], stack: str) -> None:
    graph = stack_graph(stack)
    platform = load_platform(stack)
    regs = _one(graph, REGS)
    children = graph.children_of(regs.urn)
    assert {r.type for r in children} <= {CSID, CSE}
    for agent in platform.active_agents:
        workload = [r for r in children if r.inputs["metadata"]["name"] == f"agent.{agent.name}"]
        assert len(workload) == 1, agent.name
        (reg,) = workload
        spec = reg.inputs["spec"]
        assert spec.get("spiffeIDTemplate", spec.get("spiffeID")) == agent.identity.spiffe_id
        assert spec["className"] == "agent-passport"
        assert reg.inputs["metadata"]["labels"]["agentpassport.dev/agent"] == agent.name
        assert agent.name in reg.name.split("-spire-registrations-", 1)[1]
        expected = CSID if agent.identity.platform == "kubernetes" or agent.identity.namespace else CSE
        assert reg.type == expected
    # a SPIFFE ID is registered for at most one agent
    ids = [
        r.inputs["spec"].get("spiffeIDTemplate", r.inputs["spec"].get("spiffeID"))
        for r in children
        if r.inputs["metadata"]["name"].startswith("agent.")
    ]
    assert len(ids) == len(set(ids)) == len(platform.active_agents)
    # registrations wait for the server: an annotation carries its workload's name
    for reg in children:
        assert reg.inputs["metadata"]["annotations"] == {"agentpassport.dev/spire-server": "spire-server"}
    assert len(children) <= 2 * len(platform.active_agents) + 1


def test_prod_uses_postgres_ha_and_a_non_tls_upstream(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("prod")
    server = _one(graph, SERVER)
    kids = {r.name: r for r in graph.children_of(server.urn)}
    dep = kids["agent-passport-spire-server-deployment-spire-system-spire-server"]
    assert dep.type == "kubernetes:apps/v1:Deployment"
    assert dep.inputs["spec"]["replicas"] == 3
    assert "kubernetes:apps/v1:StatefulSet" not in {r.type for r in kids.values()}
    pdb = kids["agent-passport-spire-server-poddisruptionbudget-spire-system-spire-server"]
    assert pdb.inputs["spec"]["minAvailable"] == 2
    conf = json.loads(
        kids["agent-passport-spire-server-configmap-spire-system-spire-server"].inputs["data"]["server.conf"]
    )
    assert next(iter(conf["plugins"]["UpstreamAuthority"][0])) == "aws_pca"
    assert conf["plugins"]["DataStore"][0]["sql"]["plugin_data"]["database_type"] == "postgres"
    upstream = kids["agent-passport-spire-server-configmap-spire-system-spire-server-upstream"]
    assert upstream.inputs["data"]["pca-arn"].startswith("arn:aws:mock:")
    assert not any("upstream-key" in n for n in kids)  # no CA key outside AWS


def test_dev_uses_sqlite_and_the_tls_intermediate(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("dev")
    kids = {r.name: r for r in graph.children_of(_one(graph, SERVER).urn)}
    sts = kids["agent-passport-spire-server-statefulset-spire-system-spire-server"]
    assert sts.inputs["spec"]["replicas"] == 1
    key = kids["agent-passport-spire-server-secret-spire-system-spire-server-upstream-key"]
    # the key travels as a Pulumi secret (the engine encrypts it in state)
    assert key.inputs["stringData"][SECRET_SIG] == SECRET_VALUE
    assert key.inputs["stringData"]["value"]["key.pem"].startswith("-----BEGIN PRIVATE KEY-----")
    chain = kids["agent-passport-spire-server-configmap-spire-system-spire-server-upstream"].inputs["data"]
    assert chain["chain.pem"].count("BEGIN CERTIFICATE") == 2
    assert chain["bundle.pem"].count("BEGIN CERTIFICATE") == 1
    # the key reaches the Secret from the TrustDomain's intermediate key
    trust_key = graph.named("agent-passport-trust-intermediate-key")
    assert trust_key.urn in key.dependencies


def test_agents_and_registrations_are_created_after_the_server(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("dev")
    server_kids = {r.name: r for r in graph.children_of(_one(graph, SERVER).urn)}
    ns = server_kids["agent-passport-spire-server-namespace-spire-system"]
    workload = server_kids["agent-passport-spire-server-statefulset-spire-system-spire-server"]
    ds = graph.named("agent-passport-spire-agents-daemonset-spire-system-spire-agent")
    assert ns.urn in ds.dependencies
    reg = graph.named("agent-passport-spire-registrations-agent-cortex-clusterspiffeid-agent")
    assert workload.urn in reg.dependencies


def test_suspended_agent_gets_no_registration_in_the_graph(tmp_path: Path) -> None:
    for item in ("__main__.py", "Pulumi.yaml"):
        shutil.copy(ROOT / item, tmp_path / item)
    shutil.copytree(ROOT / "stacks", tmp_path / "stacks")
    shutil.copytree(ROOT / "agents", tmp_path / "agents")
    (tmp_path / "agents" / "paused.yaml").write_text("""\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata:
  name: paused-agent
  team: test
  owner: test@acme-corp.net
spec:
  suspended: true
  suspendedReason: INC-4321 leaked token
  platform:
    kubernetes:
      namespace: agents
      serviceAccount: paused-agent
""")
    graph = run_program("dev", tmp_path)
    regs = graph.children_of(_one(graph, REGS).urn)
    assert not [r for r in regs if "paused-agent" in r.name]
    assert not [r for r in regs if "paused-agent" in json.dumps(r.inputs)]
    assert {r.inputs["metadata"]["name"] for r in regs} >= {"agent.agent-cortex", "agent.invoice-processor"}


def test_prod_datastore_connection_comes_from_a_pulumi_secret() -> None:
    config, secret_keys = stack_runtime_config(stack_file("prod", ROOT))
    config = {**config, "agent-passport:spireDbConnection": "dbname=spire host=db sslmode=verify-full"}
    graph = run_program("prod", ROOT, config=config, secret_keys=[*secret_keys, "agent-passport:spireDbConnection"])
    secret = graph.named("agent-passport-spire-server-secret-spire-system-spire-server-datastore")
    assert secret.type == "kubernetes:core/v1:Secret"
    data = secret.inputs["stringData"]
    assert data[SECRET_SIG] == SECRET_VALUE
    assert data["value"] == {"connection-string": "dbname=spire host=db sslmode=verify-full"}
    conf = graph.named("agent-passport-spire-server-configmap-spire-system-spire-server").inputs["data"]
    assert "sslmode" not in conf["server.conf"]  # only ${SPIRE_DB_CONNECTION} is in the file
