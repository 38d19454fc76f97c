"""``passport graph``: the access graph of a stack, edge for edge the platform's grants.

The JSON is compared with the platform itself (every grant of every agent, nothing else); the
DOT goes through the real Graphviz ``dot`` (the SVG must parse and name every agent, or every
group when aggregated); the Mermaid passes a syntax check of the subset we emit
(``tests/support/mermaid.py``); a 1,000-agent synthetic fleet stays a readable picture.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from benchmarks import synthetic
from components import graph as g
from components.cli import main
from components.manifest.loader import load_manifests
from components.manifest.models import Grant
from components.platform_model import Platform, ResolvedAgent, build_platform, grant_summary, load_platform
from tests.conftest import ROOT
from tests.support.mermaid import MermaidError, check_flowchart
from tests.support.tools import require_tool

STACKS = ("dev", "local", "staging", "prod", "prod-base", "prod-shard-0", "prod-shard-1")
README_SVG = ROOT / "docs" / "access-graph.svg"

SUSPENDED = """\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata:
  name: old-scraper
  team: security-automation
  owner: secops-oncall@acme-corp.net
spec:
  suspended: true
  suspendedReason: token leaked, under investigation (INC-1234)
  platform:
    kubernetes: {namespace: scrapers, serviceAccount: old-scraper}
  grants:
    - http: {service: payments-api, methods: [GET], paths: [{prefix: /v1/payments}]}
    - vault: {path: secret/data/scrapers/config, capabilities: [read]}
"""


def expected_target(platform: Platform, agent: ResolvedAgent, grant: Grant) -> str:
    """Where a grant's edge must point, worked out here from the manifests and the stack."""
    if grant.http is not None:
        svc = platform.service(grant.http.service)
        assert svc is not None
        gateway = svc.manifest.spec.gateway and platform.config.subsystems.authz
        return f"{'gateway' if gateway else 'service'}:{svc.name}"
    if grant.database is not None:
        return f"database:{grant.database.cluster}/{grant.database.database}"
    if grant.vault is not None:
        return f"vault:{grant.vault.path}"
    assert grant.aws is not None
    return f"aws:{agent.name}-{grant.aws.role}"


def assert_edges_are_the_grants(platform: Platform, data: dict[str, Any]) -> None:
    """Every grant of every agent is exactly one edge from its agent to its target, carrying the
    grant's summary; the only other edges are gateways fronting their services."""
    expected = {(a.name, i): (f"agent:{a.name}", expected_target(platform, a, gr), gr.kind, grant_summary(gr),
                              a.suspended)
                for a in platform.agents for i, gr in enumerate(a.grants)}
    seen: Counter[tuple[str, int]] = Counter()
    actual = {}
    nodes = {n["id"]: n for n in data["nodes"]}
    for e in data["edges"]:
        assert e["from"] in nodes and e["to"] in nodes, e
        if e["kind"] == "fronts":
            assert e["grants"] == []
            assert nodes[e["from"]]["kind"] == "gateway" and e["to"] == f"service:{nodes[e['from']]['service']}"
            continue
        assert len(e["grants"]) == 1, e
        ref = e["grants"][0]
        seen[(ref["agent"], ref["index"])] += 1
        actual[(ref["agent"], ref["index"])] = (e["from"], e["to"], e["kind"], ref["grant"], e["suspended"])
    assert all(n == 1 for n in seen.values()), [k for k, n in seen.items() if n > 1]
    assert actual == expected


@pytest.mark.parametrize("stack", STACKS)
def test_json_is_the_platforms_grants_edge_for_edge(stack: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "--stack", stack, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    platform = load_platform(stack)
    assert data["aggregated"] is None
    assert_edges_are_the_grants(platform, data)
    agents = {n["id"] for n in data["nodes"] if n["kind"] == "agent"}
    assert agents == {f"agent:{a.name}" for a in platform.agents}
    services = {n["id"] for n in data["nodes"] if n["kind"] == "service"}
    assert services == {f"service:{s.name}" for s in platform.services}


def test_suspended_agents_are_drawn_and_marked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(ROOT / "agents", tmp_path / "agents")
    (tmp_path / "agents" / "old-scraper.yaml").write_text(SUSPENDED, encoding="utf-8")
    platform = load_platform("prod", [str(tmp_path / "agents")])
    graph = g.build_graph(platform)
    data = g.to_json(graph)
    assert_edges_are_the_grants(platform, data)
    node = graph.nodes["agent:old-scraper"]
    assert node.suspended and "(suspended)" in node.label
    scraper_edges = [e for e in graph.edges if e.source == "agent:old-scraper"]
    assert len(scraper_edges) == 2 and all(e.suspended for e in scraper_edges)
    dot = g.to_dot(graph)
    assert '"agent:old-scraper" -> "gateway:payments-api" [color="#9ca3af", fontcolor="#9ca3af", label=' in dot
    assert 'style="dashed"' in dot
    chart = check_flowchart(g.to_mermaid(graph))
    ids = {label.split("<br/>")[0]: nid for nid, label in chart.nodes.items()}
    assert ids["old-scraper"] in chart.classes["suspended"]
    assert all(arrow == "-.->" for src, arrow, _, _ in chart.edges if src == ids["old-scraper"])
    # explain says nothing is deployed for its grants
    assert main(["explain", "old-scraper", "--stack", "prod", "--paths", str(tmp_path / "agents")]) == 0
    out = capsys.readouterr().out
    assert "SUSPENDED: token leaked" in out
    assert out.count("nothing deployed:") == 2


def test_labels_are_short_and_the_legend_spells_them_out() -> None:
    graph = g.build_graph(load_platform("prod"))
    label = {(e.source, e.target): e.label for e in graph.edges}
    assert label[("agent:agent-cortex", "gateway:slack-gateway")] == "POST /api/slack/message\nH1 · W1"
    assert graph.legend["W1"] == "mon-fri 09:00-17:00 Europe/London"
    assert graph.legend["H1"] == "x-slack-channel: security-alerts"
    assert label[("agent:invoice-processor", "gateway:payments-api")] == (
        "GET,POST /v1/payments, /v1/payments/status*\nH2")
    assert label[("agent:agent-cortex", "database:main/incidents")] == (
        "select on public.{incidents,alerts}\nlease 5m, max 10m")
    assert label[("agent:report-summarizer", "aws:report-summarizer-reports")].endswith("\nsession 1h")
    assert label[("agent:ledger-sync", "vault:secret/data/finance/ledger-sync")] == "read"
    # a long part becomes a key, the same text always the same key
    legend = g.Legend()
    long = ", ".join(f"/api/v1/resource/{i}" for i in range(4))
    assert legend.short("P", long) == "P1" == legend.short("P", long)
    assert legend.short("P", "/short") == "/short"
    assert legend.sorted() == {"P1": long}
    assert g.window_text("mon,tue,wed,sat 08:00-18:00 UTC") == "mon-wed,sat 08:00-18:00 UTC"


def test_narrowed_to_an_agent_or_a_service(capsys: pytest.CaptureFixture[str]) -> None:
    platform = load_platform("prod")
    graph = g.build_graph(platform, agent="agent-cortex")
    assert {n for n in graph.nodes if n.startswith("agent:")} == {"agent:agent-cortex"}
    assert {e.target for e in graph.edges} == {"gateway:slack-gateway", "service:inference", "database:main/incidents",
                                               "service:slack-gateway"}
    graph = g.build_graph(platform, service="payments-api")
    assert set(graph.nodes) == {"agent:invoice-processor", "gateway:payments-api", "service:payments-api"}
    assert [(e.source, e.target) for e in graph.edges] == [("agent:invoice-processor", "gateway:payments-api"),
                                                           ("gateway:payments-api", "service:payments-api")]
    assert main(["graph", "--stack", "prod", "--service", "payments-api", "--format", "dot"]) == 0
    assert '"agent:invoice-processor" -> "gateway:payments-api"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--agent", "nobody"], "agent 'nobody' does not exist (stack prod)"),
        (["--service", "nope"], "service 'nope' is not declared (declared: inference, payments-api, slack-gateway)"),
        (["--check"], "--check compares with the file given by --out"),
        (["--format", "png", "--out", "x.png", "--check"], "--check compares with the file given by --out"),
    ],
)
def test_bad_graph_command_lines(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "--stack", "prod", *argv]) == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- Graphviz


def svg_text(svg: bytes | str) -> str:
    """All the text an SVG shows (it must parse as XML)."""
    root = ET.fromstring(svg)  # noqa: S314 - our own SVG, just drawn by our dot
    return "\n".join(t for el in root.iter() for t in (el.text,) if t)


def run_dot(dot: str, fmt: str = "svg") -> bytes:
    proc = subprocess.run([str(require_tool("dot")), f"-T{fmt}"], input=dot.encode(), capture_output=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b"", proc.stderr.decode()  # no warnings either
    return proc.stdout


@pytest.mark.parametrize("stack", ["prod", "dev", "prod-shard-0"])
def test_graphviz_accepts_the_dot_and_the_svg_names_every_agent(stack: str) -> None:
    platform = load_platform(stack)
    text = svg_text(run_dot(g.to_dot(g.build_graph(platform))))
    for a in platform.agents:
        assert a.name in text, a.name
    assert f"Access graph of stack {stack}" in text


def test_svg_and_png_from_the_command(tmp_path: Path) -> None:
    require_tool("dot")
    svg, png = tmp_path / "g.svg", tmp_path / "sub" / "g.png"
    assert main(["graph", "--stack", "prod", "--format", "svg", "--out", str(svg)]) == 0
    assert main(["graph", "--stack", "prod", "--format", "png", "--out", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    text = svg_text(svg.read_bytes())
    assert {"agent-cortex", "invoice-processor", "ledger-sync", "report-summarizer"} <= set(text.split())
    # the SVG carries the digest of the DOT it was drawn from: --check needs no Graphviz
    assert main(["graph", "--stack", "prod", "--format", "svg", "--out", str(svg), "--check"]) == 0
    assert main(["graph", "--stack", "dev", "--format", "svg", "--out", str(svg), "--check"]) == 1


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    """The benchmarks' synthetic fleet: 1,000 agents in 250 teams and 25 namespaces."""
    path = synthetic.write_fleet(tmp_path_factory.mktemp("fleet"), 1000)
    return build_platform(synthetic.stack_config(path), load_manifests([path]), "dev", "stacks/Pulumi.dev.yaml")


def test_a_thousand_agents_make_a_readable_picture(fleet: Platform) -> None:
    graph = g.picture(fleet)
    agg = graph.aggregation
    assert agg is not None and (agg.by, agg.agents, agg.groups, agg.other) == ("namespace", 1000, 25, 0)
    assert not any(n.kind == "agent" for n in graph.nodes.values())
    assert len(graph.nodes) <= 80 and len(graph.edges) <= 200
    assert g.agent_names(graph) == sorted(a.name for a in fleet.agents)
    # every grant is still behind exactly one (merged) edge
    refs = Counter((r.agent, r.index) for r, _ in g.grant_edges(graph))
    assert refs == Counter((a.name, i) for a in fleet.agents for i in range(len(a.grants)))
    text = svg_text(run_dot(g.to_dot(graph)))
    assert "1000 agents aggregated by namespace into 25 nodes (more than 40 agents" in text
    for ns in range(25):
        assert f"namespace agents-{ns:02d}" in text
    check_flowchart(g.to_mermaid(graph))


def test_mermaid_of_a_whole_fleet_one_by_one_is_refused_and_the_command_says_so(
        fleet: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Mermaid draws at most 500 edges: the aggregated picture stays under, --aggregate none warns."""
    with pytest.raises(MermaidError, match="Mermaid draws at most 500"):
        check_flowchart(g.to_mermaid(g.picture(fleet, mode="none")))
    fleet_dir = str(Path(fleet.agents[0].source.file).parent)
    assert main(["graph", "--stack", "dev", "--paths", fleet_dir, "--aggregate", "none", "--out",
                 str(tmp_path / "g.mmd")]) == 0
    assert "warning: 3020 edges: Mermaid draws at most 500" in capsys.readouterr().err


def test_json_keeps_every_edge_unless_asked_to_aggregate(fleet: Platform) -> None:
    assert_edges_are_the_grants(fleet, g.to_json(g.build_graph(fleet)))
    teams = g.to_json(g.picture(fleet, mode="team", max_agents=300))
    assert teams["aggregated"] == {"by": "team", "agents": 1000, "groups": 250, "threshold": 300, "inOther": 0}
    merged = Counter((r["agent"], r["index"]) for e in teams["edges"] for r in e["grants"])
    assert len(merged) == 3000 and set(merged.values()) == {1}


def test_too_many_groups_merge_the_smallest_into_other() -> None:
    graph = g.picture(load_platform("prod"), max_agents=2)
    assert graph.aggregation is not None and graph.aggregation.by == "team"
    groups = {n.id: n.attrs["members"] for n in graph.nodes.values() if n.kind == "agents"}
    assert groups == {"agents:team:finance-automation": ["invoice-processor", "ledger-sync"],
                      "agents:team:(other)": ["agent-cortex", "report-summarizer"]}
    assert "the smallest teams, 2 agents, are merged into 'other'" in g.to_dot(graph)


# --------------------------------------------------------------------------- Mermaid


@pytest.mark.parametrize("stack", STACKS)
def test_mermaid_passes_the_syntax_check(stack: str) -> None:
    graph = g.build_graph(load_platform(stack))
    chart = check_flowchart(g.to_mermaid(graph))
    assert len(chart.nodes) == len(graph.nodes) + 1  # and the legend
    assert len(chart.edges) == len(graph.edges) == len(chart.link_styles)
    labels = {label.split("<br/>")[0] for label in chart.nodes.values()}
    assert {a.name for a in load_platform(stack).agents} <= labels


def test_mermaid_escapes_what_would_break_a_label() -> None:
    text = g.mermaid_text('a "quoted" #1 <b>|x|</b> `code`\nnext')
    assert text == "a #34;quoted#34; #35;1 #60;b#62;#124;x#124;#60;/b#62; #96;code#96;<br/>next"
    check_flowchart(f'flowchart LR\n  n0(["{text}"])\n')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("graph LR\n", "expected 'flowchart LR'"),
        ('flowchart LR\n  subgraph g0["x"]\n', r"1 subgraph\(s\) without 'end'"),
        ("flowchart LR\n  end\n", "'end' without 'subgraph'"),
        ('flowchart LR\n  n0(["a"]) \n  n0 --> n1\n', "edge uses 'n1' before declaring it"),
        ('flowchart LR\n  end(["a"])\n', "is a keyword"),
        ('flowchart LR\n  n0(["a"])\n  n0(["b"])\n', "already declared"),
        ('flowchart LR\n  n0(["a "b" c"])\n', "not a statement"),
        ('flowchart LR\n  n0(["a #1"])\n', "bare '#'"),
        ('flowchart LR\n  n0(["a"]]\n', "does not match"),
        ('flowchart LR\n  n0(["a"])\n  linkStyle 0 stroke:#000\n', "only 0 edges"),
        ('flowchart LR\n  n0(["a"])\n  class n0 nope\n', "has no classDef"),
        ('flowchart LR\n  n0(["a<b>"])\n', "not a statement"),
    ],
)
def test_the_mermaid_check_rejects_broken_charts(text: str, message: str) -> None:
    with pytest.raises(MermaidError, match=message):
        check_flowchart(text)


# --------------------------------------------------------------------------- the README's picture


def test_the_readme_picture_is_current() -> None:
    """docs/access-graph.svg is drawn from exactly what `passport graph --stack prod` draws now (the
    digest of its DOT is in the SVG), parses, and names every agent; the README shows it."""
    assert main(["graph", "--stack", "prod", "--format", "svg", "--out", str(README_SVG), "--check"]) == 0, (
        "regenerate it: passport graph --stack prod --format svg --out docs/access-graph.svg")
    text = svg_text(README_SVG.read_bytes())
    for a in load_platform("prod").agents:
        assert a.name in text
    assert "](docs/access-graph.svg)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_check_reports_a_stale_picture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "access-graph.svg"
    stale.write_text(README_SVG.read_text(encoding="utf-8").replace(g.DIGEST_MARK, g.DIGEST_MARK + "0"))
    assert main(["graph", "--stack", "prod", "--format", "svg", "--out", str(stale), "--check"]) == 1
    assert "is out of date: run `passport graph --stack prod --format svg --out" in capsys.readouterr().err
    mermaid = tmp_path / "g.mmd"
    assert main(["graph", "--stack", "prod", "--out", str(mermaid)]) == 0
    assert main(["graph", "--stack", "prod", "--out", str(mermaid), "--check"]) == 0
    assert main(["graph", "--stack", "dev", "--out", str(mermaid), "--check"]) == 1
