"""Progress: shown on a terminal, never when stdout is not one (pipes, files, CI logs).

The commands run as a user runs them (``python -m components.cli``), once with pipes and once on
a pseudo-terminal, so what is checked is what a person or a CI log would see.
"""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components import progress
from tests.conftest import ROOT

# Anything rich draws: control sequences, spinner frames, bar blocks.
PROGRESS_MARKS = ("\x1b[", "\r", "⠋", "⠙", "⠹", "━")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "PASSPORT_PROGRESS", "TERM", "COLUMNS"}}
    return {**env, "TERM": "xterm-256color", **extra}


def _commands(tmp: Path) -> list[list[str]]:
    return [
        ["validate", "--stack", "dev", "--stack", "prod"],
        ["render", "--stack", "dev", "--out", str(tmp / "render")],
        ["capacity", "--stack", "prod"],
        ["explain", "agent-cortex", "--stack", "prod"],
        ["graph", "--stack", "prod", "--format", "json"],
    ]


def _run_on_pty(argv: list[str], env: dict[str, str], timeout_s: float = 120) -> tuple[int, str]:
    """Run with stdout and stderr on one pseudo-terminal; return (exit code, everything shown)."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "components.cli", *argv], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary)
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.2)
            if ready:
                try:
                    data = os.read(primary, 65536)
                except OSError:  # the terminal closed: the program ended
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            pytest.fail(f"{argv} did not finish within {timeout_s:.0f}s", pytrace=False)
    finally:
        if proc.poll() is None:
            proc.kill()
        code = proc.wait(timeout=30)
        os.close(primary)
    return code, b"".join(chunks).decode(errors="replace")


def test_piped_commands_show_no_progress(tmp_path: Path) -> None:
    """Not a terminal (and not CI either): the output is the command's own lines, nothing else."""
    for argv in _commands(tmp_path):
        proc = subprocess.run([sys.executable, "-m", "components.cli", *argv], cwd=ROOT, env=_env(),
                              capture_output=True, text=True, check=False, timeout=300)
        assert proc.returncode in (0, 1), (argv, proc.stderr)
        assert proc.stderr == "", (argv, proc.stderr)
        for mark in PROGRESS_MARKS:
            assert mark not in proc.stdout, (argv, mark)
    first = subprocess.run([sys.executable, "-m", "components.cli", *_commands(tmp_path)[0]], cwd=ROOT, env=_env(),
                           capture_output=True, text=True, check=False, timeout=300)
    assert first.stdout == "ok: 4 agents, 3 services valid for stacks dev, prod\n"


def test_progress_shows_on_a_terminal(tmp_path: Path) -> None:
    code, shown = _run_on_pty(["render", "--stack", "dev", "--out", str(tmp_path / "render")], _env())
    assert code == 0, shown
    assert "rendering every artifact of stack dev" in shown
    assert "\x1b[" in shown  # drawn, then erased (transient)
    assert "artifacts to" in shown  # and the command's own line
    code, shown = _run_on_pty(["validate", "--stack", "dev", "--stack", "prod"], _env())
    assert code == 0, shown
    assert "validating stack dev" in shown
    assert shown.rstrip().endswith("ok: 4 agents, 3 services valid for stacks dev, prod")


@pytest.mark.parametrize("env", [{"CI": "true"}, {"PASSPORT_PROGRESS": "never"}, {"TERM": "dumb"}])
def test_no_progress_in_ci_even_on_a_terminal(tmp_path: Path, env: dict[str, str]) -> None:
    code, shown = _run_on_pty(["render", "--stack", "dev", "--out", str(tmp_path / "render")], _env(**env))
    assert code == 0, shown
    assert "rendering every artifact" not in shown
    assert "\x1b[" not in shown
    assert shown.strip().startswith("rendered ")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_enabled_needs_both_streams_on_a_terminal() -> None:
    tty, pipe = _Tty(), io.StringIO()
    assert progress.enabled({}, tty, tty)
    assert not progress.enabled({}, pipe, tty)  # stdout piped: never
    assert not progress.enabled({}, tty, pipe)
    assert not progress.enabled({"CI": "true"}, tty, tty)
    assert not progress.enabled({"TERM": "dumb"}, tty, tty)
    assert not progress.enabled({"PASSPORT_PROGRESS": "never"}, tty, tty)
    with progress.activity("nothing to see", total=3) as step:  # pytest captures: a no-op
        step.advance("next")
        step.update("again")
