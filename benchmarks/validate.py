"""Benchmark: manifest validation for synthetic fleets.

Columns: ``load+models`` (YAML parse with line numbers + pydantic models), ``cross-checks``
(the Platform: references between manifests, the stack config's rules, identities) — the two
together are what ``passport validate`` does and what the μs/manifest figure covers — and
``renderers`` (every renderer's own validation and output, which the program runs before it
registers anything), reported separately. CPU seconds (process time) of the validation sit
next to the wall time: on a shared machine they are the figure to compare. Peak memory is Python's (tracemalloc) during
validation, measured in a second pass so it does not slow the timed one.

``all s`` is the three together: what ``passport validate`` does for one stack.

Usage: python benchmarks/validate.py [N ...]            fleets of N agents, 3 grants each
                                                        (default: 1000 10000 50000)
       python benchmarks/validate.py --grants [N ...]   one manifest with N grants (http on gateway
                                                        services and one without, vault paths)
Fleets and stack config come from benchmarks/synthetic.py. Nothing here asserts a time.
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import stack_config, write_fleet, write_grant_manifest  # noqa: E402
from components.manifest.loader import load_manifests  # noqa: E402
from components.platform_model import Platform, build_platform  # noqa: E402
from components.render.artifacts import render_all  # noqa: E402

HEADER = (f"{'agents':>8} {'load+models s':>14} {'cross-checks s':>15} {'validate s':>11} {'cpu s':>7} "
          f"{'us/manifest':>12} {'cpu us/man.':>12} {'peak MiB':>9} {'renderers s':>12} {'all s':>7}")
GRANTS_HEADER = HEADER.replace(f"{'agents':>8}", f"{'grants':>8}").replace(
    f"{'us/manifest':>12} {'cpu us/man.':>12}", f"{'us/grant':>12} {'cpu us/gr.':>12}")


def _validate(fleet: Path, agents: int) -> tuple[Platform, float, float, float]:
    cfg = stack_config(fleet)
    c0 = time.process_time()
    t0 = time.perf_counter()
    manifests = load_manifests([fleet])
    t1 = time.perf_counter()
    platform = build_platform(cfg, manifests, "dev", "stacks/Pulumi.dev.yaml")
    t2 = time.perf_counter()
    cpu = time.process_time() - c0
    if len(platform.active_agents) != agents:
        raise SystemExit(f"expected {agents} active agents, got {len(platform.active_agents)}")
    return platform, t1 - t0, t2 - t1, cpu


def run(n: int, write: Callable[[Path, int], Path] = write_fleet, agents: int | None = None
        ) -> tuple[float, float, float, float, float]:
    """Wall seconds for load+models and cross-checks, CPU seconds of both, wall seconds of
    the renderers; peak MiB of the validation.

    Timed without tracemalloc (it slows allocation-heavy code several times); the memory
    figure comes from a second, traced validation of the same fleet.
    """
    with tempfile.TemporaryDirectory() as tmp:
        fleet = write(Path(tmp), n)
        platform, load, check, cpu = _validate(fleet, n if agents is None else agents)
        t0 = time.perf_counter()
        render_all(platform)
        render = time.perf_counter() - t0
        del platform
        tracemalloc.start()
        _validate(fleet, n if agents is None else agents)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return load, check, cpu, render, peak / 2**20


def main(argv: list[str]) -> None:
    grants = argv[:1] == ["--grants"]
    args = argv[1:] if grants else argv
    sizes = [int(a) for a in args] or ([500, 2000, 10000] if grants else [1000, 10000, 50000])
    print(GRANTS_HEADER if grants else HEADER)
    for n in sizes:
        if grants:
            load, check, cpu, render, peak = run(n, write_grant_manifest, agents=1)
        else:
            load, check, cpu, render, peak = run(n)
        total = load + check
        print(f"{n:>8} {load:>14.2f} {check:>15.2f} {total:>11.2f} {cpu:>7.2f} {total / n * 1e6:>12.0f} "
              f"{cpu / n * 1e6:>12.0f} {peak:>9.0f} {render:>12.2f} {total + render:>7.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
