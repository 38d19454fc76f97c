"""The real engine: `passport preview` and `up` of the local stack on synthetic fleets.

For each fleet size, in a throw-away copy of the project (its own state and kubeconfig):

* ``render`` — the kubernetes provider writes YAML (no API server);
* ``cluster`` — into a real kube-apiserver on 127.0.0.1 (scripts/local-cluster);

each as ``preview``, ``up`` and ``preview`` again (file backend), with the state saved after every
step (``--checkpoints=always``) or only at the end (``never``; ``--skip-checkpoints``; see
docs/sharding.md for the durability trade-off). Printed per run:
wall and CPU seconds (every process of the run), resources, resources per second, and the peak
RSS of the Python process (program + Automation API), the engine (``pulumi``) and the
kubernetes provider, sampled from /proc every 100 ms.

    python benchmarks/engine.py [--agents 100,1000] [--modes render,cluster] [--skip-checkpoints both]

No assertions: figures only (docs/benchmarks.md has them with the machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from benchmarks.synthetic import overrides, write_fleet  # noqa: E402
from components.config import NAMESPACE, read_stack_file, stack_file  # noqa: E402

PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "policy-packs")
# /proc/<pid>/status Name: is the command truncated to 15 characters.
ROLES = {"python": "python", "pulumi": "engine", "pulumi-resource": "provider"}


def make_project(base: Path, agents: int, mode: str) -> Path:
    proj = base / f"p-{agents}-{mode}"
    for rel in PROJECT_FILES:
        src, dst = ROOT / rel, proj / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    fleet = write_fleet(proj / "fleet", agents)
    values, _, _ = read_stack_file(stack_file("local", ROOT))
    values.update(overrides(values, fleet))
    values["agentsDir"] = "fleet"
    if mode == "render":
        values["kubernetes"] = {"mode": "render", "renderDir": "build/k8s"}
    config = {f"{NAMESPACE}:{k}": v for k, v in values.items()}
    (proj / "stacks").mkdir()
    (proj / "stacks" / "Pulumi.local.yaml").write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    return proj


class Sampler(threading.Thread):
    """Peak RSS (KiB) per role among the descendants of one process, from /proc."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root, self.peak = pid, dict.fromkeys(ROLES.values(), 0)
        self.done = threading.Event()

    def _children(self) -> dict[int, list[int]]:
        kids: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                kids.setdefault(ppid, []).append(int(d.name))
        return kids

    def run(self) -> None:
        while not self.done.wait(0.1):
            kids, stack = self._children(), [self.root]
            while stack:
                pid = stack.pop()
                stack += kids.get(pid, [])
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                name = re.search(r"^Name:\s+(\S+)", status, re.M)
                rss = re.search(r"^VmRSS:\s+(\d+)", status, re.M)
                if not (name and rss):
                    continue
                role = ROLES.get(name.group(1)) or ("python" if name.group(1).startswith("python") else None)
                if role:
                    self.peak[role] = max(self.peak[role], int(rss.group(1)))


def run_step(proj: Path, step: str, skip_checkpoints: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PULUMI_BACKEND_URL", None)
    argv = [sys.executable, "-m", "components.cli", step, "--stack", "local", "--root", str(proj),
            "--checkpoints", "never" if skip_checkpoints else "always"]
    if step == "up":
        argv.append("--yes")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=proj, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    out, err = proc.communicate(timeout=7200)
    wall = time.monotonic() - t0
    sampler.done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{step} failed ({proc.returncode}):\n{out[-3000:]}\n{err[-3000:]}")
    tail = out[out.rindex("[passport]"):]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w[\w-]*): (\d+)$", tail, re.M)}
    resources = sum(counts.values())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"step": step, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "resources": resources,
            "per_s": round(resources / wall, 1) if wall else 0.0,
            **{f"rss_{k}_mib": round(v / 1024) for k, v in sampler.peak.items()}}


def bench(agents: int, mode: str, skip: bool, base: Path) -> list[dict[str, Any]]:
    proj = make_project(base / ("skip" if skip else "ckpt"), agents, mode)
    cluster = proj / ".pulumi-local" / "cluster"
    if mode == "cluster":
        subprocess.run([str(ROOT / "scripts" / "local-cluster"), "start", "--dir", str(cluster)], check=True,
                       stdout=subprocess.DEVNULL, timeout=600)
    try:
        rows = []
        for step in ("preview", "up", "preview"):
            row = run_step(proj, step, skip)
            row.update(agents=agents, mode=mode, checkpoints="skip" if skip else "on")
            rows.append(row)
            print(json.dumps(row), flush=True)
        return rows
    finally:
        if mode == "cluster":
            subprocess.run([str(ROOT / "scripts" / "local-cluster"), "stop", "--dir", str(cluster)], check=False,
                           stdout=subprocess.DEVNULL, timeout=120)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| agents | target | checkpoints | step | wall s | CPU s | resources | res/s | RSS python MiB "
            "| RSS engine MiB | RSS provider MiB |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['agents']} | {r['mode']} | {r['checkpoints']} | {r['step']} | {r['wall_s']} | "
                     f"{r['cpu_s']} | {r['resources']} | {r['per_s']} | {r['rss_python_mib']} | "
                     f"{r['rss_engine_mib']} | {r['rss_provider_mib']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", default="100,1000")
    ap.add_argument("--modes", default="render,cluster")
    ap.add_argument("--skip-checkpoints", choices=["no", "yes", "both"], default="no")
    args = ap.parse_args()
    skips = {"no": [False], "yes": [True], "both": [False, True]}[args.skip_checkpoints]
    rows: list[dict[str, Any]] = []
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="passport-engine-bench-") as tmp:
        for n in (int(x) for x in args.agents.split(",")):
            for mode in args.modes.split(","):
                for skip in skips:
                    rows += bench(n, mode, skip, Path(tmp))
    print(f"load average after: {os.getloadavg()}")
    print(table(rows))


if __name__ == "__main__":
    main()
