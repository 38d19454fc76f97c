"""The passport CLI as a user runs it: exit codes, one line per problem, deterministic render."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from components.cli import main


def test_validate_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "agents"]) == 0
    assert capsys.readouterr().out.strip() == (
        "ok: 4 agents, 3 services valid for stacks dev, local, prod, prod-base, prod-shard-0, prod-shard-1, staging")


def test_validate_reports_every_problem_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", "tests/fixtures/bad/04-bad-duration.yaml", "tests/fixtures/bad/13-bad-method.yaml"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err[0].startswith("tests/fixtures/bad/04-bad-duration.yaml:11: spec.identity.x509SvidTtl: '15x'")
    assert err[1].startswith("tests/fixtures/bad/13-bad-method.yaml:13: spec.grants[0].http.methods[0]: 'FETCH'")
    assert err[-1] == "2 problems found in agent manifests"
    assert "Traceback" not in "\n".join(err)


def test_console_script_never_prints_a_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "components.cli", "validate", "tests/fixtures/bad/01-invalid-yaml.yaml"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("tests/fixtures/bad/01-invalid-yaml.yaml:7: invalid YAML: mapping values")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain", "agent-cortex", "--stack", "prod-base"], "is deployed by a shard stack of environment prod"),
        (["capacity", "--stack", "dev", "--startup-window", "5x"], "'5x' is not a duration"),
        (["capacity", "--stack", "dev", "--instances-per-agent", "-3"], "'-3' must be at least 1"),
        (["check", "--stack", "dev", "--root", "/nonexistent-dir"], "/nonexistent-dir: No such file or directory"),
        (["shards", "--environment", "nope"], "no stack has environment nope (known: dev, prod, staging)"),
    ],
)
def test_bad_command_lines_are_one_line_errors(argv: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "components.cli", *argv], capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_validate_runs_every_renderers_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A grant the models accept but the Vault renderer refuses (a glob reaching sys/) fails validate."""
    (tmp_path / "services.yaml").write_text(Path("agents/services.yaml").read_text())
    text = Path("agents/ledger-sync.yaml").read_text().replace("path: secret/data/finance/ledger-sync", "path: s*")
    (tmp_path / "ledger-sync.yaml").write_text(text)
    assert main(["validate", str(tmp_path), "--stack", "dev"]) == 2
    assert "spec.grants[0].vault.path" in capsys.readouterr().err


def _row(out: str, *cells: str) -> bool:
    """A table row holding these cells in this order (on its first line)."""
    return any(re.search(r"\s+".join(map(re.escape, cells)), line) for line in out.splitlines())


def test_explain(capsys: pytest.CaptureFixture[str]) -> None:
    """A table: the identity with its TTLs, then every grant with where it is enforced."""
    assert main(["explain", "agent-cortex", "--stack", "prod"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out  # not a terminal: no colour or control codes
    assert _row(out, "SPIFFE ID", "spiffe://prod.agents.acme-corp.net/ns/agents/sa/agent-cortex")
    assert _row(out, "X.509-SVID", "ttl 15m")
    assert _row(out, "JWT-SVID", "ttl 5m, audiences vault")
    assert _row(out, "#", "kind", "reaches", "allows", "conditions", "enforced by")
    assert _row(out, "0", "http", "service slack-gateway via", "POST /api/slack/message", "header x-slack-channel:",
                "Linkerd: gw-slack-gateway")
    assert "only mon-fri 09:00-17:00" in out
    assert "OPA: at gw-slack-gateway" in out
    assert _row(out, "1", "http", "service inference", "POST /v1/complete", "-", "Linkerd: HTTPRoute of inference")
    assert _row(out, "2", "database", "database main/incidents", "select on", "lease 5m, max 10m", "Vault:")
    assert "PostgreSQL: that user" in out
    assert main(["explain", "report-summarizer", "--stack", "dev"]) == 0
    out = capsys.readouterr().out
    assert _row(out, "0", "aws", "AWS IAM role", "s3:GetObject,", "session 1h", "not deployed in this stack")


def test_explain_json_says_where_each_grant_is_enforced(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "invoice-processor", "--stack", "prod", "--format", "json"]) == 0
    bom = json.loads(capsys.readouterr().out)
    assert [g["kind"] for g in bom["grants"]] == ["database", "http"]
    assert [[e["system"] for e in grant] for grant in bom["enforcement"]] == [
        ["Vault", "PostgreSQL"], ["Linkerd", "OPA"]]
    assert bom["enforcement"][0][0]["detail"].startswith("db-main/creds/invoice-processor-main-billing")


def test_explain_json_and_unknown_agent(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "report-summarizer", "--stack", "dev", "--format", "json"]) == 0
    bom = json.loads(capsys.readouterr().out)
    assert bom["spiffeId"] == "spiffe://dev.agentpassport.internal/vm/report-summarizer"
    assert "aws" not in bom["subsystems"]  # dev deploys no AWS
    assert main(["explain", "nobody", "--stack", "dev"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_render_is_deterministic_and_keeps_user_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["render", "--stack", "dev", "--out", str(a)]) == 0
    assert main(["render", "--stack", "dev", "--out", str(b)]) == 0
    assert _tree(a) == _tree(b)
    assert "identity/bom.json" in _tree(a)
    (a / "my-notes.txt").write_text("mine")
    (a / "identity" / "old.json").write_text("{}")
    index = json.loads((a / ".passport-render.json").read_text())
    index["files"].append("identity/old.json")
    (a / ".passport-render.json").write_text(json.dumps(index))
    assert main(["render", "--stack", "dev", "--out", str(a)]) == 0
    assert (a / "my-notes.txt").read_text() == "mine"  # never ours: untouched
    assert not (a / "identity" / "old.json").exists()  # ours and stale: removed


def test_schema_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "--check"]) == 0
    assert main(["schema", "--check", "--out", str(tmp_path)]) == 1
    assert "out of date" in capsys.readouterr().err
