"""GmsaAgents in the real program's resource graph (mocks): dev without AWS, prod with SSM
delivery, and a variant with a Windows pod agent (credential spec + RBAC)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import stack_file, stack_runtime_config
from components.mockrun import Captured, Graph, run_program

ROOT = Path(__file__).resolve().parents[2]
GMSA = "agentpassport:windows:GmsaAgents"
DOC = "aws:ssm/document:Document"
ASSOC = "aws:ssm/association:Association"
CREDSPEC = "kubernetes:windows.k8s.io/v1:GMSACredentialSpec"
CLUSTER_ROLE = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"


def _component(graph: Graph) -> Captured:
    (component,) = graph.of_type(GMSA)
    return component


def test_dev_renders_windows_without_any_aws_resource(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("dev")
    component = _component(graph)
    assert component.name == "agent-passport-windows"
    root = graph.by_urn(component.parent)
    assert root is not None and root.type == "agentpassport:index:AgentPassport"
    assert graph.children_of(component.urn) == []  # no SSM without AWS, no pods
    assert [r for r in graph.resources if r.type.startswith("aws:")] == []


def test_prod_delivers_the_dsc_script_through_ssm(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("prod")
    component = _component(graph)
    (doc,) = graph.of_type(DOC)
    (assoc,) = graph.of_type(ASSOC)
    assert doc.parent == component.urn and assoc.parent == component.urn
    assert doc.name == "agent-passport-windows-ledger-sync-dsc-document"
    assert assoc.name == "agent-passport-windows-ledger-sync-dsc-association"
    assert doc.inputs["name"] == "AgentPassport-prod-gmsa-ledger-sync"
    assert doc.inputs["documentType"] == "Command"
    assert doc.inputs["documentFormat"] == "JSON"
    assert "targetType" not in doc.inputs  # EC2 and on-premises (hybrid) managed nodes alike
    content = json.loads(doc.inputs["content"])
    assert content["schemaVersion"] == "2.2"
    (step,) = content["mainSteps"]
    assert step["action"] == "aws:runPowerShellScript"
    script = "\n".join(step["inputs"]["runCommand"])
    assert "ServiceAccountName        = 'gmsa-ledgersync'" in script
    assert "ManagedPasswordPrincipals = @('LedgerSyncHosts')" in script
    assert "'ACME\\gmsa-ledgersync$'" in script
    assert "ConvertTo-SecureString" not in script
    assert assoc.inputs["name"] == "AgentPassport-prod-gmsa-ledger-sync"
    assert assoc.inputs["targets"] == [{"key": "tag:agentpassport:host-group", "values": ["LedgerSyncHosts"]}]
    assert assoc.inputs["scheduleExpression"] == "rate(30 minutes)"
    assert assoc.inputs["tags"]["agentpassport:agent"] == "ledger-sync"
    assert "parameters" not in assoc.inputs
    assert doc.urn in assoc.dependencies  # the association waits for its document
    assert graph.of_type(CREDSPEC) == []  # ledger-sync runs on hosts only


# --------------------------------------------------------------------------- pods variant


POD_AGENT = {
    "apiVersion": "passport.agentpassport.dev/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "claims-bot", "team": "claims", "owner": "claims@acme-corp.net"},
    "spec": {
        "platform": {"windows": {
            "gmsaAccount": "gmsa-claims",
            "hostGroup": "ClaimsNodes",
            "pod": {"namespace": "claims", "serviceAccount": "claims-bot"},
        }},
    },
}


def _variant(tmp_path: Path, stack: str, agents: list[dict[str, Any]], **overrides: Any) -> Graph:
    agents_dir = tmp_path / "agents"
    shutil.copytree(ROOT / "agents", agents_dir)
    for doc in agents:
        (agents_dir / f"{doc['metadata']['name']}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    config, secrets = stack_runtime_config(stack_file(stack, ROOT))
    config["agent-passport:agentsDir"] = str(agents_dir)
    for key, value in overrides.items():
        config[f"agent-passport:{key}"] = json.dumps(value)
    return run_program(stack, ROOT, config, secrets)


WINDOWS_PROD = {"domain": "corp.acme-corp.net", "netbiosDomain": "ACME",
                "domainSid": "S-1-5-21-1004336348-1177238915-682003330",
                "domainGuid": "5a4e3f2c-1b2d-4c5e-8f90-a1b2c3d4e5f6"}


def test_windows_pods_get_a_credspec_and_use_rbac(tmp_path: Path) -> None:
    graph = _variant(tmp_path, "prod", [POD_AGENT], windows=WINDOWS_PROD)
    component = _component(graph)
    mine = graph.children_of(component.urn)
    (spec,) = [r for r in mine if r.type == CREDSPEC]
    (role,) = [r for r in mine if r.type == CLUSTER_ROLE]
    (binding,) = [r for r in mine if r.type == ROLE_BINDING]
    assert graph.of_type(CREDSPEC) == [spec]
    for r in (spec, role, binding):
        assert r.parent == component.urn
        assert "claims-bot" in r.name
        assert r.inputs["metadata"]["labels"]["agentpassport.dev/agent"] == "claims-bot"
    assert spec.inputs["apiVersion"] == "windows.k8s.io/v1"
    assert spec.inputs["metadata"]["name"] == "agentpassport-claims-bot"
    assert spec.inputs["credspec"]["ActiveDirectoryConfig"]["GroupManagedServiceAccounts"] == [
        {"Name": "gmsa-claims", "Scope": "ACME"}, {"Name": "gmsa-claims", "Scope": "corp.acme-corp.net"}]
    assert spec.inputs["credspec"]["DomainJoinConfig"]["Sid"] == WINDOWS_PROD["domainSid"]
    assert "HostAccountConfig" not in json.dumps(spec.inputs)
    assert role.inputs["rules"] == [{"apiGroups": ["windows.k8s.io"], "resources": ["gmsacredentialspecs"],
                                     "verbs": ["use"], "resourceNames": ["agentpassport-claims-bot"]}]
    assert binding.inputs["metadata"]["namespace"] == "claims"
    assert binding.inputs["subjects"] == [{"kind": "ServiceAccount", "name": "claims-bot", "namespace": "claims"}]
    # hosts still get their DSC association (the gMSA must exist and be installed on the nodes)
    assert sorted(d.inputs["name"] for d in graph.of_type(DOC)) == [
        "AgentPassport-prod-gmsa-claims-bot", "AgentPassport-prod-gmsa-ledger-sync"]


def test_suspended_windows_agent_gets_no_resources(tmp_path: Path) -> None:
    suspended = json.loads(json.dumps(POD_AGENT))
    suspended["spec"]["suspended"] = True
    suspended["spec"]["suspendedReason"] = "INC-4711: credential theft suspected"
    graph = _variant(tmp_path, "prod", [suspended], windows=WINDOWS_PROD)
    assert [r for r in graph.resources if "claims-bot" in r.name] == []
    assert [d.inputs["name"] for d in graph.of_type(DOC)] == ["AgentPassport-prod-gmsa-ledger-sync"]


def test_pod_agent_without_domain_sid_fails_before_any_resource(tmp_path: Path) -> None:
    import pulumi

    from components.errors import PassportError

    with pytest.raises((pulumi.RunError, PassportError), match=r"windows\.domainSid"):
        _variant(tmp_path, "prod", [POD_AGENT])
