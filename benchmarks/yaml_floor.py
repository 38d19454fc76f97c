"""The floor of the manifest benchmarks: PyYAML's C loader alone over a fleet's files.

``yaml.load_all`` with ``CSafeLoader`` (YAML 1.1, no line numbers, no models), the collector
paused as the loader runs, each file's values dropped once read. This script imports nothing
else, so timed as a whole process it is the least any tool that reads the fleet with PyYAML
pays. benchmarks/validate.py and benchmarks/capacity.py print their figures over it.

Usage: python benchmarks/yaml_floor.py DIR [DIR ...]
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import yaml


def floor(dirs: list[Path]) -> tuple[int, int, float]:
    """Files and documents read, and wall seconds."""
    files = sorted(p for d in dirs for p in d.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    gc.disable()
    docs = 0
    t0 = time.perf_counter()
    for path in files:
        for _ in yaml.load_all(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader):
            docs += 1
    return len(files), docs, time.perf_counter() - t0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python benchmarks/yaml_floor.py DIR [DIR ...]")
    n_files, n_docs, seconds = floor([Path(a) for a in sys.argv[1:]])
    print(f"floor: {n_files} files, {n_docs} documents read by PyYAML's C loader in {seconds:.2f}s")
