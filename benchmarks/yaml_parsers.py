"""Benchmark: YAML parsers for manifests — speed on a synthetic fleet and what each one does with
the inputs the loader must get right (docs/benchmarks.md, "YAML parsers evaluated").

Candidates: PyYAML's C loader (the floor), the project's loader (``parse_yaml_documents``: the
PyYAML reference path, and ``fastyaml.parse``: rapidyaml's fast path), rapidyaml itself, and, if
installed, yaml-rs, fastyaml-rs and pyyaml-rs (not dependencies of the project: install them
in a throwaway virtualenv to compare, e.g. ``pip install yaml-rs fastyaml-rs pyyaml-rs``).

Usage: python benchmarks/yaml_parsers.py [AGENTS]     (default 10000; prints two tables)
Nothing here asserts a time.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import write_fleet  # noqa: E402
from components.manifest import fastyaml  # noqa: E402
from components.manifest.loader import parse_yaml_documents  # noqa: E402


def _laughs(levels: int = 8) -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


CASES: dict[str, str] = {
    "17:00 (1.2: str)": "t: 17:00\n",
    "on/yes/no (1.2: str)": "b: [on, yes, no]\n",
    "007 (1.2: int 7)": "i: 007\n",
    "1_000 (1.2: str)": "i: 1_000\n",
    "_1 (str)": "i: _1\n",
    "duplicate key": "a: 1\nb: 2\na: 3\n",
    "syntax error line": "a:\n  b: 1\n   c: 2\n",
    "!foo tag": "a: !foo x\n",
    "!!python tag": "a: !!python/object/apply:os.system [echo hi]\n",
    "9^9 alias bomb": _laughs(),
}


def candidates() -> dict[str, Callable[[str], Any]]:
    found: dict[str, Callable[[str], Any]] = {
        "PyYAML C (CSafeLoader)": lambda s: list(yaml.load_all(s, Loader=yaml.CSafeLoader)),
        "loader reference (PyYAML)": lambda s: [v for v, _, _ in parse_yaml_documents(s, "f.yaml")],
        "loader fast path (rapidyaml)": lambda s: fastyaml.parse(s) or "(left to the reference)",
    }
    if fastyaml.ryml is not None:
        ryml = fastyaml.ryml

        def rapidyaml(s: str) -> Any:
            with fastyaml._quiet_stderr():
                tree = ryml.parse_in_arena(s.encode())
                return ryml.emit_json_malloc(tree, tree.root_id())

        found["rapidyaml 0.15 (parse + JSON)"] = rapidyaml
    try:
        import yaml_rs

        found["yaml-rs"] = lambda s: yaml_rs.loads(s, parse_datetime=False,
                                                   duplicate_key_policy=yaml_rs.DuplicateKeyPolicy.Error)
    except ImportError:
        pass
    try:
        import fast_yaml

        found["fastyaml-rs"] = lambda s: list(fast_yaml.safe_load_all(s))
    except ImportError:
        pass
    try:
        import pyyaml_rs

        found["pyyaml-rs"] = lambda s: list(pyyaml_rs.safe_load_all(s))
    except ImportError:
        pass
    return found


def speed(texts: list[str], docs: int, parse: Callable[[str], Any]) -> float:
    """CPU microseconds per document (collector paused, as the loader runs)."""
    gc.disable()
    try:
        c0 = time.process_time()
        for text in texts:
            parse(text)
        return (time.process_time() - c0) / docs * 1e6
    finally:
        gc.enable()


def behaviour(parse: Callable[[str], Any], text: str) -> str:
    t0 = time.perf_counter()
    try:
        out = repr(parse(text))
    except Exception as exc:  # every parser has its own errors
        out = f"error {type(exc).__name__}: {str(exc).splitlines()[0][:60] if str(exc) else ''}"
    took = time.perf_counter() - t0
    return (out if len(out) <= 70 else out[:67] + "...") + (f"  [{took:.2f}s]" if took > 0.05 else "")


def main(argv: list[str]) -> None:
    agents = int(argv[0]) if argv else 10000
    found = candidates()
    with tempfile.TemporaryDirectory() as tmp:
        fleet = write_fleet(Path(tmp), agents)
        texts = [p.read_text(encoding="utf-8") for p in sorted(fleet.glob("*.yaml"))]
    docs = agents + 20
    print(f"{'parser':<32} {'us/doc':>8}   ({agents} agents, CPU, collector paused)")
    for name, parse in found.items():
        print(f"{name:<32} {speed(texts, docs, parse):>8.1f}", flush=True)
    for name, parse in found.items():
        print(f"\n== {name}")
        for case, text in CASES.items():
            if name.startswith("PyYAML C") and "bomb" in case:
                print(f"  {case:<22} (not run: PyYAML builds every repeated node, minutes and gigabytes)")
                continue
            print(f"  {case:<22} {behaviour(parse, text)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
