"""EgressProxies in the real program's resource graph (mocks): a VM agent and a Windows host agent
with http grants in prod (SSM delivery, the gateway admitting them by network), and none in dev."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from components.config import stack_file, stack_runtime_config
from components.mockrun import Graph, run_program

ROOT = Path(__file__).resolve().parents[2]
EGRESS = "agentpassport:egress:EgressProxies"
DOC = "aws:ssm/document:Document"
ASSOC = "aws:ssm/association:Association"
ENTRY = "kubernetes:spire.spiffe.io/v1alpha1:ClusterStaticEntry"
NETAUTH = "kubernetes:policy.linkerd.io/v1alpha1:NetworkAuthentication"

VM_AGENT = {
    "apiVersion": "passport.agentpassport.dev/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "alert-relay", "team": "secops", "owner": "secops@acme-corp.net"},
    "spec": {
        "sourceNetworks": ["10.40.0.0/16"],
        "platform": {"vm": {
            "attestation": "aws_iid", "awsAccountId": "111122223333", "awsRegion": "us-east-1",
            "awsInstanceTags": {"agentpassport:role": "alert-relay"},
            "workloadSelectors": ["systemd:id:alert-relay.service"], "egressProxyUid": 2101,
        }},
        "grants": [{"http": {"service": "slack-gateway", "methods": ["POST"],
                             "paths": [{"exact": "/api/slack/message"}]}}],
    },
}
WIN_AGENT = {
    "apiVersion": "passport.agentpassport.dev/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "claims-sync", "team": "claims", "owner": "claims@acme-corp.net"},
    "spec": {
        "platform": {"windows": {"gmsaAccount": "gmsa-claimsync", "hostGroup": "ClaimsHosts"}},
        "grants": [{"http": {"service": "payments-api", "methods": ["GET"],
                             "paths": [{"prefix": "/v1/payments/status"}]}}],
    },
}


def _variant(tmp_path: Path, stack: str) -> Graph:
    agents_dir = tmp_path / "agents"
    shutil.copytree(ROOT / "agents", agents_dir)
    for doc in (VM_AGENT, WIN_AGENT):
        (agents_dir / f"{doc['metadata']['name']}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    config, secrets = stack_runtime_config(stack_file(stack, ROOT))
    config["agent-passport:agentsDir"] = str(agents_dir)
    return run_program(stack, ROOT, config, secrets)


def test_the_repository_stacks_have_no_egress_proxy(stack_graph: Callable[[str], Graph]) -> None:
    assert stack_graph("prod").of_type(EGRESS) == []  # no VM or Windows agent holds an http grant


def test_prod_delivers_the_vm_proxy_through_ssm_and_admits_both_callers(tmp_path: Path) -> None:
    graph = _variant(tmp_path, "prod")
    (component,) = graph.of_type(EGRESS)
    root = graph.by_urn(component.parent)
    assert root is not None and root.type == "agentpassport:index:AgentPassport"
    mine = graph.children_of(component.urn)
    (doc,) = [r for r in mine if r.type == DOC]
    (assoc,) = [r for r in mine if r.type == ASSOC]
    assert len(mine) == 2  # the Windows proxy travels in its DSC script, not here
    assert doc.inputs["name"] == "AgentPassport-prod-egress-alert-relay"
    (step,) = json.loads(doc.inputs["content"])["mainSteps"]
    assert step["action"] == "aws:runShellScript"
    script = "\n".join(step["inputs"]["runCommand"])
    assert "cat > /etc/agentpassport/egress/alert-relay.yaml.new <<'AGENTPASSPORT_EGRESS_EOF'" in script
    assert "User=2101" in script and "systemctl restart agentpassport-egress-alert-relay.service" in script
    assert "address: 127.0.0.1" in script and "private_key" not in script
    assert assoc.inputs["targets"] == [{"key": "tag:agentpassport:role", "values": ["alert-relay"]}]
    assert doc.urn in assoc.dependencies
    # The proxy's own SPIRE entry: uid 2101, the agent's SPIFFE ID.
    entries = {r.inputs["metadata"]["name"]: r.inputs["spec"] for r in graph.of_type(ENTRY)}
    assert entries["proxy.alert-relay"]["selectors"] == ["unix:uid:2101"]
    assert entries["proxy.alert-relay"]["spiffeID"] == entries["agent.alert-relay"]["spiffeID"]
    assert "proxy.claims-sync" not in entries  # the gMSA entry selects the Windows proxy
    # Linkerd admits them to the gateways by network; the gateways decide.
    nets = {r.inputs["metadata"]["name"]: r.inputs["spec"]["networks"] for r in graph.of_type(NETAUTH)}
    assert nets == {"gw-slack-gateway-outside-mesh": [{"cidr": "10.40.0.0/16"}],
                    "gw-payments-api-outside-mesh": [{"cidr": "0.0.0.0/0"}, {"cidr": "::/0"}]}
    # The Windows agent's DSC (its SSM document) installs its proxy as a service under the gMSA.
    (win_doc,) = [r for r in graph.of_type(DOC) if r.inputs["name"] == "AgentPassport-prod-gmsa-claims-sync"]
    win_script = "\n".join(json.loads(win_doc.inputs["content"])["mainSteps"][0]["inputs"]["runCommand"])
    assert "New-Service -Name 'AgentPassportEgress-claims-sync'" in win_script


