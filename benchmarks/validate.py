"""Benchmark: manifest validation for synthetic fleets, next to its floor.

Columns: ``load+models`` (YAML parse with line numbers + pydantic models), ``cross-checks``
(the Platform: references between manifests, the stack config's rules, identities) — the two
together are what ``passport validate`` does before its renderers, and what the μs/manifest
figure covers — and ``renderers`` (every renderer's own validation and output, which the
program runs before it registers anything), reported separately. CPU seconds (process time) of
the validation sit next to the wall time: on a shared machine they are the figure to compare.
``cpu s`` is this process's; YAML parsed in worker processes (``--workers``) is not in it, and
the wall time is then the figure (or time the whole process: ``--once``). Peak memory is
Python's (tracemalloc, this process) during validation, measured in a second pass so it does not
slow the timed one.

``floor s`` is PyYAML's C loader alone (``yaml.load_all`` with ``CSafeLoader``, YAML 1.1, no
line numbers, no models) on the same files in the same run, and ``x floor`` is ``validate s``
over it: below 1, validating costs less than merely parsing the fleet with the C loader did.

``all s`` is validate + renderers: what ``passport validate`` does for one stack.

Usage: python benchmarks/validate.py [N ...]            fleets of N agents, 3 grants each
                                                        (default: 1000 10000 50000)
       python benchmarks/validate.py --grants [N ...]   one manifest with N grants (http on gateway
                                                        services and one without, vault paths)
Options (before the sizes): --no-renderers   skip the renderers (minutes at 50,000 agents)
                            --workers N      YAML parse processes (default: one per core; 0: none)
One shot on a fleet directory, for timing whole processes (writes nothing, prints one line):
       python benchmarks/validate.py --once DIR    load + cross-checks of DIR (dev stack + overrides)
       python benchmarks/yaml_floor.py DIR         its floor: PyYAML's C loader alone on DIR's files
Fleets and stack config come from benchmarks/synthetic.py. Nothing here asserts a time.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import yaml_floor  # noqa: E402
from benchmarks.synthetic import stack_config, write_fleet, write_grant_manifest  # noqa: E402
from components.manifest.loader import load_manifests  # noqa: E402
from components.platform_model import Platform, build_platform  # noqa: E402
from components.render.artifacts import render_all  # noqa: E402

HEADER = (f"{'agents':>8} {'load+models s':>14} {'cross-checks s':>15} {'validate s':>11} {'cpu s':>7} "
          f"{'us/manifest':>12} {'cpu us/man.':>12} {'peak MiB':>9} {'floor s':>8} {'x floor':>8} "
          f"{'renderers s':>12} {'all s':>7}")
GRANTS_HEADER = HEADER.replace(f"{'agents':>8}", f"{'grants':>8}").replace(
    f"{'us/manifest':>12} {'cpu us/man.':>12}", f"{'us/grant':>12} {'cpu us/gr.':>12}")


def floor(fleet: Path) -> float:
    """Wall seconds of PyYAML's C loader alone over the fleet's files (benchmarks/yaml_floor.py)."""
    return yaml_floor.floor([fleet])[2]


def _validate(fleet: Path, agents: int, workers: int | None = None) -> tuple[Platform, float, float, float]:
    cfg = stack_config(fleet)
    c0 = time.process_time()
    t0 = time.perf_counter()
    manifests = load_manifests([fleet], workers=workers)
    t1 = time.perf_counter()
    platform = build_platform(cfg, manifests, "dev", "stacks/Pulumi.dev.yaml")
    t2 = time.perf_counter()
    cpu = time.process_time() - c0
    if len(platform.active_agents) != agents:
        raise SystemExit(f"expected {agents} active agents, got {len(platform.active_agents)}")
    return platform, t1 - t0, t2 - t1, cpu


def run(n: int, write: Callable[[Path, int], Path] = write_fleet, agents: int | None = None,
        renderers: bool = True, workers: int | None = None) -> tuple[float, float, float, float, float, float]:
    """Wall seconds for load+models and cross-checks, CPU seconds of both, wall seconds of
    the renderers (0 when skipped); peak MiB of the validation; wall seconds of the floor.

    Timed without tracemalloc (it slows allocation-heavy code several times); the memory
    figure comes from a second, traced validation of the same fleet.
    """
    with tempfile.TemporaryDirectory() as tmp:
        fleet = write(Path(tmp), n)
        base = floor(fleet)
        platform, load, check, cpu = _validate(fleet, n if agents is None else agents, workers)
        render = 0.0
        if renderers:
            t0 = time.perf_counter()
            render_all(platform)
            render = time.perf_counter() - t0
        del platform
        tracemalloc.start()
        _validate(fleet, n if agents is None else agents, workers)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return load, check, cpu, render, peak / 2**20, base


def once(fleet: Path) -> None:
    """One validation of an existing fleet, for timing the whole process."""
    cfg = stack_config(fleet)
    c0, t0 = time.process_time(), time.perf_counter()
    manifests = load_manifests([fleet])
    c1, t1 = time.process_time(), time.perf_counter()
    platform = build_platform(cfg, manifests, "dev", "stacks/Pulumi.dev.yaml")
    c2, t2 = time.process_time(), time.perf_counter()
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"validated {len(manifests.agents)} agents, {len(platform.active_agents)} active, in {t2 - t0:.2f}s "
          f"(load {t1 - t0:.2f}s, cross-checks {t2 - t1:.2f}s); CPU s: this process {c2 - c0:.2f} "
          f"(load {c1 - c0:.2f}, cross-checks {c2 - c1:.2f}), parse workers {workers.ru_utime + workers.ru_stime:.2f}")


def main(argv: list[str]) -> None:
    if argv[:1] == ["--once"]:
        once(Path(argv[1]))
        return
    args = list(argv)
    renderers = True
    workers: int | None = None
    grants = "--grants" in args
    if grants:
        args.remove("--grants")
    if "--no-renderers" in args:
        args.remove("--no-renderers")
        renderers = False
    if "--workers" in args:
        i = args.index("--workers")
        workers = int(args[i + 1])
        del args[i:i + 2]
    sizes = [int(a) for a in args] or ([500, 2000, 10000] if grants else [1000, 10000, 50000])
    print(GRANTS_HEADER if grants else HEADER)
    for n in sizes:
        if grants:
            load, check, cpu, render, peak, base = run(n, write_grant_manifest, agents=1, renderers=renderers,
                                                       workers=workers)
        else:
            load, check, cpu, render, peak, base = run(n, renderers=renderers, workers=workers)
        total = load + check
        print(f"{n:>8} {load:>14.2f} {check:>15.2f} {total:>11.2f} {cpu:>7.2f} {total / n * 1e6:>12.0f} "
              f"{cpu / n * 1e6:>12.0f} {peak:>9.0f} {base:>8.2f} {total / base:>8.2f} "
              f"{render:>12.2f} {total + render:>7.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
