"""Benchmark: ``passport capacity`` on synthetic fleets, as whole processes, next to its floor.

For each size a fleet is written (benchmarks/synthetic.py: 100 manifests per file), then two
fresh processes are timed: ``passport capacity --stack dev --paths FLEET`` (as docs/benchmarks.md
runs it), and the floor, PyYAML's C loader alone on the same files (``benchmarks/yaml_floor.py``, which
imports nothing else).
Wall seconds, CPU seconds (the process and the workers it waited for) and the ratio capacity /
floor in wall time.

Usage: python benchmarks/capacity.py [N ...]     (default: 10000 50000)
Nothing here asserts a time.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import write_fleet  # noqa: E402

HEADER = (f"{'agents':>8} {'capacity s':>11} {'cpu s':>7} {'floor s':>8} {'floor cpu s':>12} {'x floor':>8}  "
          "first line of the output")


def timed(argv: list[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds (children's user + system) of one process, and its first output line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False, timeout=3600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, (proc.stdout.splitlines() or [""])[0]


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [10000, 50000]
    print(HEADER)
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            fleet = write_fleet(Path(tmp) / "fleet", n)
            wall, cpu, first = timed([sys.executable, "-m", "components.cli", "capacity", "--stack", "dev",
                                      "--paths", str(fleet)])
            floor_wall, floor_cpu, _ = timed([sys.executable, "benchmarks/yaml_floor.py", str(fleet)])
        print(f"{n:>8} {wall:>11.2f} {cpu:>7.2f} {floor_wall:>8.2f} {floor_cpu:>12.2f} {wall / floor_wall:>8.2f}  "
              f"{first}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
