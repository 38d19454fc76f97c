"""``passport diff``: a manifest change in a real git repository, reported as Markdown.

The base revision is materialised with git show/archive into a temporary directory: the test
checks that the user's working tree, index and HEAD are untouched afterwards.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components.cli import main
from components.diff import as_json, format_markdown, run_diff
from tests.conftest import ROOT
from tests.support.mermaid import check_flowchart

CORTEX = "agents/agent-cortex.yaml"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding a copy of the project's program entry, stacks and agents."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy2(ROOT / "__main__.py", root / "__main__.py")
    shutil.copytree(ROOT / "stacks", root / "stacks")
    shutil.copytree(ROOT / "agents", root / "agents")
    git(root, "init", "-q", "-b", "main")
    git(root, "-c", "user.email=t@example.com", "-c", "user.name=t", "add", ".")
    git(root, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "base")
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new), encoding="utf-8")


NEW_AGENT = """\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata:
  name: fraud-scorer
  team: risk
  owner: risk-oncall@acme-corp.net
spec:
  platform:
    kubernetes:
      namespace: risk
      serviceAccount: fraud-scorer
  grants:
    - http:
        service: payments-api
        methods: [GET]
        paths:
          - prefix: /v1/payments/status
"""


def change_manifests(root: Path) -> None:
    cortex = root / CORTEX
    # widen: a second method, no more office-hours window, longer SVIDs; narrow: a table less
    edit(cortex, "        methods: [POST]\n        paths:\n          - exact: /api/slack/message",
         "        methods: [POST, PUT]\n        paths:\n          - exact: /api/slack/message")
    edit(cortex, """        timeWindows:
          - days: [mon, tue, wed, thu, fri]
            start: "09:00"
            end: "17:00"
            timezone: Europe/London
""", "")
    edit(cortex, "x509SvidTtl: 15m", "x509SvidTtl: 30m")
    edit(cortex, "tables: [incidents, alerts]", "tables: [incidents]")
    (root / "agents/report-summarizer.yaml").unlink()
    (root / "agents/fraud-scorer.yaml").write_text(NEW_AGENT, encoding="utf-8")


def test_diff_reports_identities_grants_ttls_and_resources(repo: Path) -> None:
    change_manifests(repo)
    status_before = git(repo, "status", "--porcelain")
    head_before = git(repo, "rev-parse", "HEAD")
    cortex_before = (repo / CORTEX).read_text(encoding="utf-8")

    diff = run_diff("main", "dev", repo)

    assert git(repo, "status", "--porcelain") == status_before
    assert git(repo, "rev-parse", "HEAD") == head_before
    assert (repo / CORTEX).read_text(encoding="utf-8") == cortex_before

    agents = {a["name"]: a for a in as_json(diff)["agents"]}
    assert set(agents) == {"agent-cortex", "fraud-scorer", "report-summarizer"}
    assert agents["fraud-scorer"]["status"] == "added"
    assert agents["fraud-scorer"]["spiffeId"] == "spiffe://dev.agentpassport.internal/ns/risk/sa/fraud-scorer"
    assert agents["report-summarizer"] == {
        "name": "report-summarizer", "file": "agents/report-summarizer.yaml", "status": "removed",
        "spiffeId": "spiffe://dev.agentpassport.internal/vm/report-summarizer", "changes": []}
    cortex = {(c["direction"], c["text"]) for c in agents["agent-cortex"]["changes"]}
    assert cortex == {
        ("widened", "X.509-SVID ttl 15m → 30m"),
        ("widened", "http `slack-gateway`: allows + PUT exact:/api/slack/message"),
        ("widened", "http `slack-gateway`: time windows removed (calls allowed at any time)"),
        ("narrowed", "database `main/incidents`: allows - select on public.alerts"),
    }
    res = as_json(diff)["resources"]
    added = {name for _, name in res["added"]}
    removed = {name for _, name in res["removed"]}
    assert any("fraud-scorer" in n for n in added)
    assert any("report-summarizer" in n for n in removed)
    assert any("agent-cortex" in name for _, name, _ in res["changed"])

    md = format_markdown(diff)
    assert md.startswith("### passport diff — stack `dev` against `main`\n")
    assert "**⚠️ 4 widened** · 1 narrowed · 1 identity added · 1 removed" in md
    assert ("| **added** | `fraud-scorer` | `spiffe://dev.agentpassport.internal/ns/risk/sa/fraud-scorer` | "
            "`agents/fraud-scorer.yaml` |") in md
    assert "| removed | `report-summarizer` |" in md
    assert "- ⚠️ **widened** — X.509-SVID ttl 15m → 30m" in md
    assert "- narrowed — database `main/incidents`: allows - select on public.alerts" in md
    assert "- ⚠️ **widened** — grant http `payments-api`: GET prefix:/v1/payments/status" in md
    assert "<details><summary>Resources: +" in md
    # widened lines come before narrowed ones within an agent
    lists = md[md.index("#### Access and lifetimes"):]
    assert lists.index("X.509-SVID ttl 15m → 30m") < lists.index("select on public.alerts")


def test_diff_draws_only_the_changed_grants(repo: Path) -> None:
    """The comment's Mermaid block: added green, removed red (dashed), widened orange, narrowed
    grey, each also said in its label; unchanged grants are not drawn; the lists stay."""
    change_manifests(repo)
    diff = run_diff("main", "dev", repo, resources=False)
    access = {(e["change"], e["from"], e["to"]) for e in as_json(diff)["access"]}
    assert access == {
        ("widened", "agent:agent-cortex", "gateway:slack-gateway"),
        ("narrowed", "agent:agent-cortex", "database:main/incidents"),
        ("added", "agent:fraud-scorer", "gateway:payments-api"),
        ("removed", "agent:report-summarizer", "aws:report-summarizer-reports"),
    }
    md = format_markdown(diff)
    block = re.search(r"#### Access changes\n\n```mermaid\n(.*?)```\n", md, re.S)
    assert block is not None
    chart = check_flowchart(block.group(1))
    name = {nid: label.split("<br/>")[0] for nid, label in chart.nodes.items()}
    drawn = {}
    for i, (src, arrow, label, dst) in enumerate(chart.edges):
        change = label.split(":")[0]
        drawn[(name[src], name[dst])] = (change, arrow, chart.link_styles[i].split(",")[0])
    assert drawn == {
        ("agent-cortex", "gw-slack-gateway"): ("widened", "-->", "stroke:#ea580c"),
        ("agent-cortex", "incidents"): ("narrowed", "-->", "stroke:#6b7280"),
        ("fraud-scorer", "gw-payments-api"): ("added", "-->", "stroke:#16a34a"),
        ("report-summarizer", "report-summarizer-reports"): ("removed", "-.->", "stroke:#dc2626"),
        ("gw-slack-gateway", "slack-gateway"): ("", "-.->", "stroke:#9ca3af"),
        ("gw-payments-api", "payments-api"): ("", "-.->", "stroke:#9ca3af"),
    }
    widened = next(label for _, _, label, _ in chart.edges if label.startswith("widened"))
    assert widened == ("widened: allows + PUT exact:/api/slack/message<br/>"
                       "time windows removed (calls allowed at any time)")
    assert "inference" not in block.group(1)  # unchanged: not drawn
    assert "orange: 1 widened · green: 1 added · red, dotted: 1 removed · grey: 1 narrowed" in md
    # the text stays the accessible version
    assert "- ⚠️ **widened** — http `slack-gateway`: allows + PUT exact:/api/slack/message" in md
    assert md.index("#### Access changes") < md.index("#### Identities") < md.index("#### Access and lifetimes")


def test_no_changes(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "--base", "HEAD", "--stack", "dev", "--root", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "0 widened · 0 narrowed · 0 identities added · 0 removed · 0 TTL changes · resources +0 ~0 -0" in out
    assert "No identity, access or lifetime changes." in out
    assert "No resource changes." in out
    assert "```mermaid" not in out  # nothing changed: nothing to draw


def test_suspension_is_a_narrowing_and_reinstatement_a_widening(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(repo / CORTEX, "spec:\n  identity:", "spec:\n  suspended: true\n  suspendedReason: INC-42\n  identity:")
    assert main(["diff", "--base", "HEAD", "--stack", "dev", "--root", str(repo), "--format", "json",
                 "--no-resources"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["resources"] is None
    (cortex,) = data["agents"]
    assert cortex["changes"] == [{"direction": "narrowed", "text": "suspended: every credential is revoked"}]
    # a suspended agent's grants give no access: drawn as removed
    assert {(e["change"], e["to"]) for e in data["access"]} == {
        ("removed", "gateway:slack-gateway"), ("removed", "service:inference"), ("removed", "database:main/incidents")}
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qam", "suspend")
    edit(repo / CORTEX, "  suspended: true\n  suspendedReason: INC-42\n", "")
    main(["diff", "--base", "HEAD", "--stack", "dev", "--root", str(repo), "--format", "json", "--no-resources"])
    (cortex,) = json.loads(capsys.readouterr().out)["agents"]
    assert cortex["changes"][0]["direction"] == "widened"


def test_a_stack_new_since_the_base_is_all_additions(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy2(repo / "stacks/Pulumi.dev.yaml", repo / "stacks/Pulumi.qa.yaml")
    edit(repo / "stacks/Pulumi.qa.yaml", "agent-passport:environment: dev",
         "agent-passport:environment: qa\n  agent-passport:strict: false")
    main(["diff", "--base", "HEAD", "--stack", "qa", "--root", str(repo), "--format", "json", "--no-resources"])
    data = json.loads(capsys.readouterr().out)
    assert {a["status"] for a in data["agents"]} == {"added"}
    assert len(data["agents"]) == 4


def test_unknown_base_is_an_input_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "--base", "no-such-ref", "--stack", "dev", "--root", str(repo)]) == 2
    assert "git: --base: 'no-such-ref' is not a commit in this repository" in capsys.readouterr().err


def test_broken_base_manifest_is_reported_with_the_ref(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(repo / CORTEX, "team: security-automation", "team: Security Automation")
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qam", "broken")
    edit(repo / CORTEX, "team: Security Automation", "team: security-automation")
    assert main(["diff", "--base", "HEAD", "--stack", "dev", "--root", str(repo), "--no-resources"]) == 2
    assert f"HEAD:{CORTEX}:8: metadata.team:" in capsys.readouterr().err


def test_base_that_the_current_program_refuses_is_reported_with_the_ref(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a base whose stack config is valid for the models but refused by a component (shared DB admin)
    dev = repo / "stacks" / "Pulumi.dev.yaml"
    edit(dev, "          incidents: {username: vault_incidents}\n          billing: {username: vault_billing}\n", "")
    edit(dev, "        admins:\n", "")
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qam", "shared admin")
    git(repo, "checkout", "-q", "HEAD~1", "--", "stacks/Pulumi.dev.yaml")
    assert main(["diff", "--base", "HEAD", "--stack", "dev", "--root", str(repo)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("HEAD:stacks/Pulumi.dev.yaml: the base does not build with the current program")
    assert "would share the admin user 'vault_admin'" in err
    assert "Traceback" not in err


def test_a_second_grant_to_the_same_service_cannot_hide_a_widening(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cortex = repo / CORTEX
    extra = """    - description: List the models.
      http:
        service: inference
        methods: [GET]
        paths:
          - exact: /v1/models
"""
    marker = "    - description: Read incidents"
    cortex.write_text(cortex.read_text().replace(marker, extra + marker))
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qam", "two inference grants")
    # widen the FIRST inference grant: any method on any path
    edit(cortex, """        methods: [POST]
        paths:
          - exact: /v1/complete""", """        methods: [POST, PUT, DELETE]
        paths:
          - prefix: /""")
    assert main(["diff", "--base", "HEAD", "--stack", "dev", "--root", str(repo), "--no-resources"]) == 0
    out = capsys.readouterr().out
    assert "1 widened" in out
    assert "**widened** — http `inference`: allows + DELETE prefix:/, POST prefix:/, PUT prefix:/" in out


def test_dropping_a_condition_on_who_gets_the_identity_is_a_widening(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # agent-cortex's pods must carry app=agent-cortex; dropping it gives the SVID to every pod of the SA
    edit(repo / CORTEX, """      podLabels:
        app: agent-cortex
""", "")
    assert main(["diff", "--base", "HEAD", "--stack", "dev", "--root", str(repo), "--no-resources"]) == 0
    out = capsys.readouterr().out
    assert "**widened** — identity holders must match - pod label app=agent-cortex" in out
