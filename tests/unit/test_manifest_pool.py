"""Parsing in worker processes gives the same manifests and the same problems as parsing here.

The pool forks, which is only safe while no other thread runs: pytest may have threads, so the
pool is exercised in a fresh interpreter (``_in_subprocess``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from benchmarks.synthetic import write_fleet
from components.manifest import loader
from tests.conftest import ROOT

SCRIPT = """
import json, os, sys, threading
from components.errors import ManifestError
from components.manifest import fastyaml
from components.manifest.loader import load_manifests, parse_workers
assert threading.active_count() == 1
if len(sys.argv) > 3:  # a worker dies (as a crash in a parser's C code would kill it) on this file
    parse = fastyaml.parse
    fastyaml.parse = lambda text: os._exit(3) if sys.argv[3] in text and os.getpid() != PARENT else parse(text)
PARENT = os.getpid()
out = {"workers": parse_workers(10**9, int(sys.argv[2]))}
try:
    m = load_manifests([sys.argv[1]], workers=int(sys.argv[2]))
    out["agents"] = [[a.file, a.line, a.manifest.model_dump(mode="json")] for a in m.agents]
    out["services"] = [[s.file, s.line, s.name] for s in m.services]
except ManifestError as exc:
    out["problems"] = [str(p) for p in exc.problems]
print(json.dumps(out))
"""


def _in_subprocess(fleet: Path, workers: int, crash_on: str = "") -> dict[str, object]:
    extra = [crash_on] if crash_on else []
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(fleet), str(workers), *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=True)
    out: dict[str, object] = json.loads(proc.stdout)
    return out


def test_a_pool_loads_the_same_fleet(tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path, 300, per_file=20)
    # one file the fast path leaves to the reference (an anchor), parsed in a worker too
    (fleet / "zz-anchored.yaml").write_text((fleet / "agents-00000.yaml").read_text()
                                            .replace("agent-000", "anchored-000")
                                            .replace("      namespace: agents", "      namespace: &ns agents", 1))
    here, pooled = _in_subprocess(fleet, 0), _in_subprocess(fleet, 2)
    assert (here["workers"], pooled["workers"]) == (0, 2)
    assert len(pooled["agents"]) == 320  # type: ignore[arg-type]
    assert pooled == {**here, "workers": 2}


def test_a_pool_reports_the_same_problems(tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path, 200, per_file=20)
    broken = fleet / "agents-00003.yaml"
    text = broken.read_text()
    broken.write_text(text.replace("x509SvidTtl: 15m", "x509SvidTtl: soon", 1)
                      .replace("methods: [GET]", "methods: [GET, GET]", 1))
    (fleet / "agents-00005.yaml").write_text("a: [unclosed\n")
    (fleet / "agents-00006.yaml").write_text((fleet / "agents-00006.yaml").read_text() + "---\nkind: Agent\nkind: x\n")
    here, pooled = _in_subprocess(fleet, 0), _in_subprocess(fleet, 2)
    assert pooled == {**here, "workers": 2}
    problems = here["problems"]
    assert isinstance(problems, list) and len(problems) == 4
    assert any("agents-00005.yaml:2: invalid YAML" in p for p in problems)
    assert any("appears twice" in p for p in problems)
    assert any(".x509SvidTtl:" in p and "soon" in p for p in problems)


def test_when_a_worker_dies_the_rest_is_read_here(tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path, 300, per_file=20)
    here, crashed = _in_subprocess(fleet, 0), _in_subprocess(fleet, 2, crash_on="name: agent-00150")
    assert crashed == {**here, "workers": 2}


def test_no_pool_for_small_inputs_other_threads_or_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loader.WORKERS_ENV, raising=False)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert loader.parse_workers(loader.POOL_MIN_BYTES - 1) == 0
    assert loader.parse_workers(10**9, 3) == 3
    assert loader.parse_workers(10**9, 1) == 1  # one worker still overlaps parsing with validating here
    assert loader.parse_workers(10**9, 0) == 0
    monkeypatch.setenv(loader.WORKERS_ENV, "0")
    assert loader.parse_workers(10**9) == 0
    monkeypatch.setenv(loader.WORKERS_ENV, "2")
    assert loader.parse_workers(10) == 2
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert loader.parse_workers(10**9, 4) == 0
