"""Benchmark: manifest validation (load + models + cross-manifest checks) for synthetic fleets.

Usage: python benchmarks/validate.py [N ...]   (default: 1000 10000)
Prints a table; nothing here asserts a time.
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.synthetic import write_fleet
from components.config import load_stack_config
from components.manifest.loader import load_manifests
from components.platform_model import build_platform


def run(n: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        fleet = write_fleet(Path(tmp), n)
        cfg = load_stack_config("dev", Path(__file__).resolve().parent.parent)
        tracemalloc.start()
        t0 = time.perf_counter()
        manifests = load_manifests([fleet])
        t1 = time.perf_counter()
        build_platform(cfg, manifests, "dev", "stacks/Pulumi.dev.yaml")
        t2 = time.perf_counter()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return t1 - t0, t2 - t1, peak / 2**20


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [1000, 10000]
    print(f"{'agents':>8} {'load+models s':>14} {'cross-checks s':>15} {'total s':>8} "
          f"{'us/manifest':>12} {'peak MiB':>9}")
    for n in sizes:
        load, check, peak = run(n)
        total = load + check
        print(f"{n:>8} {load:>14.2f} {check:>15.2f} {total:>8.2f} {total / n * 1e6:>12.0f} {peak:>9.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
