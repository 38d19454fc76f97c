"""scripts/local-cluster stop: a cluster process that no pid file names any more is still stopped.

After CI runs an etcd and a kube-apiserver of a test's cluster directory were found alive with
their pid files gone. `stop` now also looks for the cluster's binaries (by name) whose command
line names the state directory, and leaves a neighbouring directory's processes alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL_CLUSTER = ROOT / "scripts" / "local-cluster"
WAIT_S = 30.0


def _fake(directory: Path, name: str) -> subprocess.Popen[bytes]:
    """A long sleep whose binary is called ``name`` and lives under ``directory``."""
    binary = directory / "bin" / name
    binary.parent.mkdir(parents=True, exist_ok=True)
    sleep = shutil.which("sleep")
    assert sleep is not None
    shutil.copy2(sleep, binary)
    return subprocess.Popen([str(binary), "300"], start_new_session=True)


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.1)
    return False


def test_stop_ends_cluster_processes_without_pid_files(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster"
    neighbour = tmp_path / "cluster-other"
    ours = [_fake(cluster, name) for name in ("etcd", "kube-apiserver")]
    theirs = _fake(neighbour, "etcd")
    try:
        out = subprocess.run([sys.executable, str(LOCAL_CLUSTER), "stop", "--dir", str(cluster)],
                             capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        assert all(_exited(p) for p in ours), out.stderr
        assert f"stopping kube-apiserver (pid {ours[1].pid})" in out.stderr
        assert theirs.poll() is None, "a process of another directory was stopped"
        # the stop order holds for strays too: the API server before etcd
        assert out.stderr.index("stopping kube-apiserver") < out.stderr.index("stopping etcd")
    finally:
        for p in (*ours, theirs):
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
