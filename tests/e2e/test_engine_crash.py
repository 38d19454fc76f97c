"""An engine killed in the middle of `passport up`, and the way back.

The local stack skips the per-step state checkpoints (`--checkpoints=auto`: every resource it
has is adopted by re-running, docs/sharding.md), so a crash leaves objects in the API server
that the state does not know, plus the dead run's lock. `passport recover` must converge with no
error, no duplicate and no orphan, and a second preview must show nothing to do.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from benchmarks.synthetic import overrides, write_fleet
from components.config import NAMESPACE, read_stack_file
from tests.support.engine import (
    api_get,
    copy_project,
    inventory,
    ok,
    passport,
    passport_argv,
    passport_env,
    start_cluster,
    stop_cluster,
)
from tests.support.tools import require_tool

pytestmark = pytest.mark.e2e

AGENTS = 300
KILL_AFTER_OBJECTS = 40  # ClusterSPIFFEIDs in the API server when the engine is killed
KILL_DEADLINE_S = 600


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    for tool in ("pulumi", "etcd", "kube-apiserver", "kube-controller-manager"):
        require_tool(tool)
    proj = copy_project(tmp_path_factory.mktemp("crash"))
    stack = proj / "stacks" / "Pulumi.local.yaml"
    values, _, _ = read_stack_file(stack)
    values.update(overrides(values, write_fleet(proj / "fleet", AGENTS)))
    values["agentsDir"] = "fleet"
    salt = yaml.safe_load(stack.read_text())["encryptionsalt"]
    stack.write_text(yaml.safe_dump({"config": {f"{NAMESPACE}:{k}": v for k, v in values.items()},
                                     "encryptionsalt": salt}, sort_keys=False))
    try:
        start_cluster(proj)
        yield proj
    finally:
        stop_cluster(proj)


def _registrations(project: Path) -> int:
    status, body = api_get(project, "/apis/spire.spiffe.io/v1alpha1/clusterspiffeids")
    return len(body["items"]) if status == 200 else 0


def _engine_pids(root: int) -> list[int]:
    """The `pulumi` processes under ``root`` (the engine; its plugins are its children)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,comm="], capture_output=True, text=True, check=True)
    rows = [line.split(None, 2) for line in out.stdout.splitlines() if line.strip()]
    children: dict[int, list[tuple[int, str]]] = {}
    for pid, ppid, comm in rows:
        children.setdefault(int(ppid), []).append((int(pid), comm.strip()))
    found, stack = [], [root]
    while stack:
        for pid, comm in children.get(stack.pop(), []):
            stack.append(pid)
            if comm == "pulumi":
                found.append(pid)
    return found


def test_a_killed_up_is_recovered_without_duplicates_or_orphans(project: Path) -> None:
    up = subprocess.Popen(passport_argv(project, "up", "--stack", "local", "--yes"), cwd=project,
                          env=passport_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = False
    deadline = time.monotonic() + KILL_DEADLINE_S
    try:
        while time.monotonic() < deadline and up.poll() is None:
            if _registrations(project) >= KILL_AFTER_OBJECTS:
                for pid in _engine_pids(up.pid):
                    subprocess.run(["kill", f"-{signal.SIGKILL.value}", str(pid)], check=False)
                    killed = True
                break
            time.sleep(0.2)
        out, _ = up.communicate(timeout=300)
    finally:
        if up.poll() is None:
            up.kill()
    assert killed, f"the update finished before it could be killed; raise AGENTS\n{out[-2000:]}"
    assert up.returncode != 0
    midway = _registrations(project)
    assert KILL_AFTER_OBJECTS <= midway < AGENTS  # a crash in the middle, not at either end

    result = ok(passport(project, "recover", "--stack", "local", "--yes"), "passport recover")
    assert "stale lock" in result
    preview = ok(passport(project, "preview", "--stack", "local"), "passport preview after recover")
    assert "no changes" in preview[preview.rindex("[passport]"):], preview[-3000:]
    inv = inventory(project)
    assert inv["missing"] == []
    # no duplicate and no orphan: exactly the rendered registrations exist, each once
    assert _registrations(project) == inv["counts"]["ClusterSPIFFEID"]
