"""Running `passport` on the real engine against a local cluster, for the engine e2e tests.

Each test module works in its own copy of the project (state, kubeconfig and manifests of its
own) and its own etcd + kube-apiserver + controllers (scripts/local-cluster --dir), on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.tools import ROOT

PASSPORT = [sys.executable, "-m", "components.cli"]
LOCAL_CLUSTER = ROOT / "scripts" / "local-cluster"
STEP_TIMEOUT_S = 900
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "stacks/Pulumi.local.yaml", "agents", "policy-packs")
ENGINE_COMMANDS = ("up", "preview", "refresh", "destroy", "recover")


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: int = STEP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def passport_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PULUMI_BACKEND_URL", None)
    return env


def passport_argv(project: Path, *args: str) -> list[str]:
    root = ["--root", str(project)] if args[0] in ENGINE_COMMANDS else []
    return [*PASSPORT, *args, *root]


def passport(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(passport_argv(project, *args), cwd=project, env=passport_env())


def ok(result: subprocess.CompletedProcess[str], what: str) -> str:
    errors = [line for line in result.stdout.splitlines() if "error" in line.lower()][:20]
    tail = "\n".join(errors) + f"\n...\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{tail}"
    return result.stdout


def copy_project(dst: Path) -> Path:
    for rel in PROJECT_FILES:
        src, target = ROOT / rel, dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, target)
    return dst


def cluster_dir(project: Path) -> Path:
    return project / ".pulumi-local" / "cluster"


def start_cluster(project: Path) -> None:
    started = run([str(LOCAL_CLUSTER), "start", "--dir", str(cluster_dir(project))], cwd=ROOT, timeout=300)
    assert started.returncode == 0, f"local cluster did not start:\n{started.stderr[-3000:]}"


def stop_cluster(project: Path) -> None:
    run([str(LOCAL_CLUSTER), "stop", "--dir", str(cluster_dir(project))], cwd=ROOT, timeout=120)


def inventory(project: Path) -> dict[str, Any]:
    """Which objects of `passport render --stack local` exist: counts by kind, present, missing."""
    render = project / "build" / "render-local"
    ok(passport(project, "render", "--stack", "local", "--out", str(render)), "passport render")
    out = run([str(LOCAL_CLUSTER), "inventory", "--dir", str(cluster_dir(project)), "--render", str(render),
               "--json"], cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def api_get(project: Path, path: str) -> tuple[int, Any]:
    """GET from the local API server with the cluster's own admin token (CA-verified)."""
    cluster = cluster_dir(project)
    port = json.loads((cluster / "ports.json").read_text())["apiserver"]
    token = (cluster / "pki" / "admin.token").read_text().strip()
    ctx = ssl.create_default_context(cafile=str(cluster / "pki" / "ca.crt"))
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:  # noqa: S310 - https on loopback
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
