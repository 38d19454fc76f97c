"""One identity per agent, by selectors: the review's reproductions are refused, for every stack.

Each case adds one manifest to a copy of the committed ``agents/`` and runs what ``passport
validate`` runs; on the branch base every one of them was accepted (exit 0).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from components.cli import main
from components.collisions import canonical_dns_name, exclusive_values, first_compatible, reservations
from components.config import list_stacks, load_stack_config
from components.errors import ManifestError, Problem
from components.manifest.loader import load_manifests
from components.mockrun import Graph
from components.platform_model import Platform, build_platform
from components.shard import hash_bucket
from tests.conftest import ROOT

AGENT = """\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata:
  name: {name}
  team: qa
  owner: qa@acme-corp.net
spec:
{spec}"""


def fleet(tmp_path: Path, *extra: str, replace: dict[str, str] | None = None) -> Path:
    """A copy of the committed agents/ with ``extra`` manifests (and files replaced)."""
    agents = tmp_path / "agents"
    shutil.copytree(ROOT / "agents", agents)
    for name, text in (replace or {}).items():
        (agents / name).write_text(text)
    for i, text in enumerate(extra):
        (agents / f"zz-extra-{i}.yaml").write_text(text)  # sorts after agents/
    return agents


def platform(agents: Path, stack: str = "dev") -> Platform:
    return build_platform(load_stack_config(stack, ROOT), load_manifests([agents]), stack,
                          f"stacks/Pulumi.{stack}.yaml")


def refused(agents: Path, stack: str = "dev") -> list[Problem]:
    with pytest.raises(ManifestError) as info:
        platform(agents, stack)
    return info.value.problems


def k8s(name: str, namespace: str, sa: str, extra: str = "") -> str:
    return AGENT.format(name=name, spec=f"""{extra}  platform:
    kubernetes: {{namespace: {namespace}, serviceAccount: {sa}}}
""")


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


# --------------------------------------------------------------------------- 1. a gateway's identity


def test_an_agent_cannot_take_a_gateways_service_account(tmp_path: Path) -> None:
    agents = fleet(tmp_path, k8s("slack-impostor", "integrations", "gw-slack-gateway"))
    (p,) = refused(agents)
    assert p.file.endswith("extra-0.yaml")
    assert p.field == "spec.platform.kubernetes.serviceAccount"
    assert p.line == 9
    # names the other file and field: the Service manifest whose gateway this is
    services = agents / "services.yaml"
    assert f"{services}:{line_of(services, 'name: slack-gateway')} metadata.name" in p.message
    assert "the Envoy + OPA gateway of service 'slack-gateway'" in p.message


@pytest.mark.parametrize("stack", list_stacks())
def test_platform_namespaces_are_refused_in_every_stack(tmp_path: Path, stack: str) -> None:
    cfg = load_stack_config(stack, ROOT)
    agents = fleet(tmp_path, k8s("in-spire", cfg.spire.namespace, "spire-server"),
                   k8s("in-linkerd", cfg.mesh.control_plane_namespace, "linkerd-destination"))
    problems = refused(agents, stack)
    assert sorted(p.field for p in problems) == ["spec.platform.kubernetes.namespace"] * 2
    assert any("SPIRE's namespace" in p.message and "spire.namespace" in p.message for p in problems)
    assert any("Linkerd's control plane" in p.message for p in problems)


def test_windows_pods_cannot_take_a_gateways_service_account(tmp_path: Path) -> None:
    doc = AGENT.format(name="win-impostor", spec="""  platform:
    windows:
      gmsaAccount: gmsa-impostor
      hostGroup: ImpostorHosts
      pod: {namespace: payments, serviceAccount: gw-payments-api}
""")
    (p,) = refused(fleet(tmp_path, doc))
    assert p.field == "spec.platform.windows.pod.serviceAccount"
    assert "gateway of service 'payments-api'" in p.message


# --------------------------------------------------------------------------- 2/3. two agents, one ServiceAccount


def test_two_agents_cannot_share_a_service_account_even_with_their_own_spiffe_path(tmp_path: Path) -> None:
    twin = k8s("cortex-twin", "agents", "agent-cortex", "  identity: {spiffePath: /agents/cortex-twin}\n")
    agents = fleet(tmp_path, twin)
    (p,) = refused(agents)
    assert p.file.endswith("extra-0.yaml") and p.field == "spec.platform.kubernetes.serviceAccount"
    cortex = agents / "agent-cortex.yaml"
    first = f"{cortex}:{line_of(cortex, 'serviceAccount: agent-cortex')}"
    assert f"agent 'agent-cortex' ({first} spec.platform.kubernetes.serviceAccount)" in p.message
    assert "whatever their pod labels" in p.message


def test_different_pod_labels_do_not_make_a_service_account_two_identities(tmp_path: Path) -> None:
    twin = AGENT.format(name="cortex-twin", spec="""  identity: {spiffePath: /agents/cortex-twin}
  platform:
    kubernetes:
      namespace: agents
      serviceAccount: agent-cortex
      podLabels: {app: cortex-twin}
""")
    (p,) = refused(fleet(tmp_path, twin))
    assert "already the ServiceAccount of agent 'agent-cortex'" in p.message


def test_the_kill_switch_cannot_be_defeated_by_a_twin_of_a_suspended_agent(tmp_path: Path) -> None:
    cortex = (ROOT / "agents/agent-cortex.yaml").read_text()
    suspended = cortex.replace("spec:\n", "spec:\n  suspended: true\n  suspendedReason: INC-1234\n", 1)
    twin = k8s("cortex-twin", "agents", "agent-cortex", "  identity: {spiffePath: /agents/cortex-twin}\n")
    agents = fleet(tmp_path, twin, replace={"agent-cortex.yaml": suspended})
    for stack in list_stacks():
        (p,) = refused(agents, stack)
        assert p.file.endswith("extra-0.yaml") and "agent 'agent-cortex'" in p.message
        assert "suspending one would leave its access to the other" in p.message


def test_a_twin_in_another_shard_is_refused_by_every_stack_of_the_environment(tmp_path: Path) -> None:
    # two agents on one ServiceAccount, hashed into different prod shards
    names = [f"shard-twin-{i}" for i in range(20)]
    a = next(n for n in names if hash_bucket(n, 2) == 0)
    b = next(n for n in names if hash_bucket(n, 2) == 1)
    agents = fleet(tmp_path, k8s(a, "agents", "shared-sa"),
                   k8s(b, "agents", "shared-sa", "  identity: {spiffePath: /agents/b}\n"))
    for stack in ("prod", "prod-base", "prod-shard-0", "prod-shard-1"):
        problems = refused(agents, stack)
        assert [p.field for p in problems] == ["spec.platform.kubernetes.serviceAccount"], stack


def test_each_agent_on_its_own_service_account_is_fine(tmp_path: Path) -> None:
    agents = fleet(tmp_path, k8s("cortex-helper", "agents", "cortex-helper"),
                   k8s("other-ns", "integrations", "agent-cortex"))
    assert platform(agents).agent("cortex-helper") is not None


# --------------------------------------------------------------------------- 4. VM twins and gMSAs

VM = """  platform:
    vm:
      attestation: aws_iid
      awsAccountId: "111122223333"
      awsRegion: {region}
      awsInstanceTags:
        {tags}
      workloadSelectors: [{workload}]
"""


def vm(name: str, region: str = "us-east-1", tags: str = "agentpassport:role: report-summarizer",
       workload: str = "'unix:uid:1001'") -> str:
    return AGENT.format(name=name, spec=VM.format(region=region, tags=tags, workload=workload))


def test_a_vm_twin_with_the_same_tags_and_uid_is_refused(tmp_path: Path) -> None:
    agents = fleet(tmp_path, vm("summarizer-twin"))
    (p,) = refused(agents)
    assert p.file.endswith("extra-0.yaml") and p.field == "spec.platform.vm"
    summarizer = agents / "report-summarizer.yaml"
    where = f"{summarizer}:{line_of(summarizer, 'vm:')} spec.platform.vm"
    assert f"agent 'report-summarizer' ({where})" in p.message
    assert "would hold both identities and both agents' AWS roles" in p.message


@pytest.mark.parametrize(("case", "doc"), [
    ("more selectors are still a subset one process satisfies",
     vm("twin", workload="'unix:uid:1001', 'systemd:id:twin.service'")),
    ("a tag with another key can sit on the same instance", vm("twin", tags="team: analytics")),
    ("a security group is not single-valued",
     vm("twin").replace("      workloadSelectors", "      nodeSelectors: ['aws_iid:sg:id:sg-1']\n"
                                                     "      workloadSelectors")),
])
def test_vm_selectors_one_process_can_satisfy_together_collide(tmp_path: Path, case: str, doc: str) -> None:
    (p,) = refused(fleet(tmp_path, doc))
    assert "agent 'report-summarizer'" in p.message, case


@pytest.mark.parametrize(("case", "doc"), [
    ("another uid", vm("twin", workload="'unix:uid:1002'")),
    ("another value of the same tag", vm("twin", tags="agentpassport:role: other")),
    ("another region", vm("twin", region="eu-west-1")),
    ("a windows process", vm("twin", workload="'windows:user_name:CORP\\\\svc$'")),
])
def test_vm_selectors_that_differ_in_a_single_valued_selector_are_fine(tmp_path: Path, case: str, doc: str) -> None:
    assert platform(fleet(tmp_path, doc)).agent("twin") is not None, case


def test_join_token_vms_have_their_own_alias(tmp_path: Path) -> None:
    doc = AGENT.format(name="tokened", spec="""  platform:
    vm: {attestation: join_token, workloadSelectors: ['unix:uid:1001']}
""")
    assert platform(fleet(tmp_path, doc)).agent("tokened") is not None


def test_a_windows_agent_on_another_agents_gmsa_is_refused(tmp_path: Path) -> None:
    doc = AGENT.format(name="ledger-twin", spec="""  platform:
    windows: {gmsaAccount: GMSA-LedgerSync, hostGroup: OtherHosts}
""")
    agents = fleet(tmp_path, doc)
    (p,) = refused(agents)
    assert p.field == "spec.platform.windows.gmsaAccount"
    assert "already the account of agent 'ledger-sync'" in p.message
    assert "ledger-sync.yaml:" in p.message


def test_windows_host_twins_with_one_host_group_and_gmsa_are_refused(tmp_path: Path) -> None:
    ledger = (ROOT / "agents/ledger-sync.yaml").read_text()
    twin = ledger.replace("name: ledger-sync", "name: ledger-twin")
    problems = refused(fleet(tmp_path, twin))
    # the same default SPIFFE ID, the same gMSA, and host selectors one process satisfies
    assert sorted(p.field for p in problems) == ["spec.identity", "spec.platform.windows",
                                                 "spec.platform.windows.gmsaAccount"]


def test_selector_splitting_matches_pairwise_comparison() -> None:
    """first_compatible (linear splitting) agrees with the obvious quadratic definition."""
    import itertools
    import random

    rng = random.Random(7)  # noqa: S311 - reproducible test data, not secrets
    keys = ["node:aws_iid:region", "node:aws_iid:tag:role", "workload:unix:uid", "workload:os"]
    for _ in range(200):
        entries = [{k: rng.choice("ab") for k in keys if rng.random() < 0.6} for _ in range(rng.randint(2, 9))]
        expected: dict[int, int] = {}
        for i, j in itertools.combinations(range(len(entries)), 2):
            if all(entries[i][k] == entries[j][k] for k in entries[i].keys() & entries[j].keys()):
                expected.setdefault(j, i)
        assert first_compatible(entries) == expected, entries


def test_exclusive_values_of_a_static_entry() -> None:
    got = exclusive_values({"role": "x"}, ["aws_iid:region:us-east-1", "aws_iid:sg:id:sg-1"],
                           ["unix:uid:1001", "unix:supplementary_gid:5"])
    assert got == {"node:aws_iid:tag:role": "x", "node:aws_iid:region": "us-east-1",
                   "workload:os": "unix", "workload:unix:uid": "1001"}
    assert exclusive_values({}, [], ["unix:uid:1", "unix:uid:2"]) is None  # no process matches it
    assert exclusive_values({}, [], ["unix:uid:1", "windows:user_name:x"]) is None


# --------------------------------------------------------------------------- 5. DNS names


def dns(name: str, *names: str) -> str:
    return k8s(name, "agents", name, f"  identity: {{dnsNames: [{', '.join(names)}]}}\n")


def test_dns_names_of_services_and_gateways_are_refused(tmp_path: Path) -> None:
    agents = fleet(tmp_path, dns("dns-impostor", "gw-slack-gateway.integrations.svc",
                                 "slack-gateway.integrations.svc.cluster.local", "payments-api.payments",
                                 "inference", "x.slack-gateway.integrations.svc"))
    problems = refused(agents)
    assert [p.field for p in problems] == [f"spec.identity.dnsNames[{i}]" for i in range(5)]
    assert "the Envoy + OPA gateway of service 'slack-gateway'" in problems[0].message
    assert all("services.yaml:" in p.message and "metadata.name" in p.message for p in problems)
    assert "service 'inference'" in problems[3].message


def test_dns_names_of_the_platform_are_refused(tmp_path: Path) -> None:
    cfg = load_stack_config("dev", ROOT)
    issuer = cfg.jwt_issuer.split("://", 1)[1].split("/", 1)[0]
    problems = refused(fleet(tmp_path, dns("dns-platform", "spire-server.spire-system.svc", issuer,
                                           "anything.linkerd.svc.cluster.local")))
    assert len(problems) == 3
    assert "issuer host" in problems[1].message and "spire.jwtIssuer" in problems[1].message


def test_two_agents_cannot_claim_one_dns_name_in_any_spelling(tmp_path: Path) -> None:
    agents = fleet(tmp_path, dns("serves-a", "reports.agents.svc"),
                   dns("serves-b", "reports.agents.svc.cluster.local"))
    (p,) = refused(agents)
    assert p.file.endswith("extra-1.yaml") and p.field == "spec.identity.dnsNames[0]"
    assert "already a DNS name of agent 'serves-a'" in p.message and "extra-0.yaml:" in p.message


def test_an_agent_may_claim_names_of_its_own(tmp_path: Path) -> None:
    agents = fleet(tmp_path, dns("serves-a", "reports.agents.svc", "reports.acme-corp.net"))
    assert platform(agents).agent("serves-a") is not None


def test_canonical_dns_names() -> None:
    assert canonical_dns_name("a.b.svc", "cluster.local") == "a.b.svc.cluster.local"
    assert canonical_dns_name("a.b", "cluster.local", ["b"]) == "a.b.svc.cluster.local"
    assert canonical_dns_name("a.b", "cluster.local", ["c"]) == "a.b"
    assert canonical_dns_name("Host.Example.com", "cluster.local") == "host.example.com"


# --------------------------------------------------------------------------- every consumer sees it


def test_passport_validate_exits_2_naming_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    agents = fleet(tmp_path, k8s("slack-impostor", "integrations", "gw-slack-gateway"))
    assert main(["validate", str(agents)]) == 2
    err = capsys.readouterr().err
    assert "extra-0.yaml:9: spec.platform.kubernetes.serviceAccount: integrations/gw-slack-gateway" in err
    assert "services.yaml:" in err and "Traceback" not in err


def test_passport_check_refuses_before_running_the_program(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(ROOT / "stacks", tmp_path / "stacks")
    fleet(tmp_path, k8s("cortex-twin", "agents", "agent-cortex", "  identity: {spiffePath: /agents/twin}\n"))
    assert main(["check", "--stack", "dev", "--root", str(tmp_path)]) == 2
    assert "already the ServiceAccount of agent 'agent-cortex'" in capsys.readouterr().err


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_reservations_cover_every_service_account_the_program_creates(
        stack: str, stack_graph: Callable[[str], Graph]) -> None:
    """A new platform workload must be added to collisions.reservations, or agents could take it."""
    graph = stack_graph(stack)
    p = platform(ROOT / "agents", stack)
    res = reservations(p.config, p.services, p.config_file)
    seen = 0
    for r in graph.resources:
        inputs = r.inputs
        meta = inputs.get("metadata") or {}
        if r.type == "kubernetes:core/v1:ServiceAccount":
            accounts = [(meta.get("namespace"), meta.get("name"))]
        elif r.type.startswith("kubernetes:apps/v1:") and r.type.rsplit(":", 1)[1] in (
                "Deployment", "DaemonSet", "StatefulSet"):
            spec = ((inputs.get("spec") or {}).get("template") or {}).get("spec") or {}
            accounts = [(meta.get("namespace"), spec.get("serviceAccountName") or "default")]
        else:
            continue
        for ns, sa in accounts:
            seen += 1
            assert res.account(str(ns), str(sa)) is not None, f"{r.type} {ns}/{sa} is not reserved"
    assert seen >= 6


def test_the_policy_pack_reads_rendered_selectors_as_the_platform_model_reads_manifests() -> None:
    """The pack's copy of the rule (it imports nothing of ours) agrees with the platform model on
    the selector strings the SPIRE renderer writes, and its splitting agrees too."""
    import random

    from components.check import load_pack

    pack = load_pack()
    rng = random.Random(11)  # noqa: S311 - reproducible test data, not secrets
    for _ in range(300):
        tags = {k: rng.choice(["a", "b"]) for k in ("agentpassport:role", "team") if rng.random() < 0.6}
        region = [f"aws_iid:region:{rng.choice(['us-east-1', 'eu-west-1'])}"]
        extra = [s for s in ("aws_iid:az:us-east-1a", "aws_iid:sg:id:sg-1") if rng.random() < 0.3]
        workload = [s for s in ("unix:uid:1001", "unix:uid:1002", "systemd:id:x.service",
                                "windows:user_name:CORP\\Gmsa$") if rng.random() < 0.4]
        rendered = [*region, *(f"aws_iid:tag:{k}:{v}" for k, v in tags.items()), *extra]
        assert pack.exclusive_selector_values(rendered, workload) == exclusive_values(tags, [*region, *extra],
                                                                                       workload)
    for _ in range(100):
        entries = [{k: rng.choice("ab") for k in "wxyz" if rng.random() < 0.6} for _ in range(rng.randint(2, 8))]
        assert pack.first_compatible(entries) == first_compatible(entries)
