"""Benchmark: the real program (``__main__.py``) under Pulumi mocks for synthetic fleets.

Prints, per fleet size: agents the stack deploys, resources registered, resources per agent,
construction time (wall and CPU: on a loaded machine the CPU time is the
better figure), ms per resource and peak RSS; then which resource types dominate (count
and per agent). Each size runs in a fresh process so memory figures do not mix.

Usage:
    python benchmarks/program.py [N ...]              default: 1000 10000
    python benchmarks/program.py --shard 2 10000      one hash-bucket shard (bucket 0 of 2)
                                                      of a 10,000-agent fleet
    python benchmarks/program.py --estimate 50000 1000 10000
                                                      also extrapolate to 50,000 agents from the
                                                      largest measured size (printed as an estimate)

Fleet and stack config come from benchmarks/synthetic.py (dev stack, one Vault admin per
synthetic database). Nothing here asserts a time.

Every size is followed by its **floor**: a trivial program under the same SDK, the same mocks
and the same capturing monitor (``components.mockrun.run_function``) registering as many
resources — one ComponentResource per five, each holding four ConfigMaps — in a fresh process
too. ``x floor`` is the program's CPU ms per resource and KiB per resource (RSS growth during
construction) over the floor's; with two sizes or more the marginal ratio between the smallest
and the largest (fixed costs cancel) is printed as well. A second floor replays the very graph the
program registered (same types, names, parents and input values) with the SDK's generic resource
classes: the gap to it is the program's own cost. ``--no-floor`` skips both.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HEADER = (f"{'fleet':>7} {'agents':>7} {'resources':>10} {'res/agent':>10} {'wall s':>8} {'cpu s':>8} "
          f"{'ms/res wall':>12} {'ms/res cpu':>11} {'peak RSS MiB':>13} {'KiB/res':>8}")
FLOOR_HEADER = (f"{'program':>8} {'resources':>10} {'cpu s':>8} {'ms/res cpu':>11} {'KiB/res':>8} "
                f"{'x floor cpu':>12} {'x floor mem':>12}")
CONFIGMAPS_PER_COMPONENT = 4
TIMEOUT_S = 1800


def one(n: int, shard_count: int, dump: str = "") -> dict[str, Any]:
    """Build the graph for a fleet of ``n`` (bucket 0 of ``shard_count`` when > 0) in this process;
    with ``dump``, pickle what was registered there (for :func:`replay_one`)."""
    from benchmarks.synthetic import hash_shard, runtime_config, write_fleet
    from components.mockrun import run_program

    with tempfile.TemporaryDirectory() as tmp:
        fleet = write_fleet(Path(tmp), n)
        shard = hash_shard(shard_count, 0) if shard_count else None
        config, secrets = runtime_config(fleet, shard=shard)
        rss0 = peak_rss_mib()
        t0, c0 = time.perf_counter(), time.process_time()
        graph = run_program("dev", ROOT, config, secrets)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    if dump:
        with open(dump, "wb") as f:
            pickle.dump([(r.type, r.name, r.urn, r.parent, r.custom, r.inputs) for r in graph.resources], f)
    deployed = len(graph.outputs["identityBom"]["agents"])
    kinds = Counter(r.type for r in graph.resources)
    return {
        "fleet": n,
        "agents": deployed,
        "resources": len(graph.resources),
        "custom": sum(1 for r in graph.resources if r.custom),
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "peak_rss_mib": peak_rss_mib(),
        "rss_growth_mib": peak_rss_mib() - rss0,
        "types": kinds.most_common(),
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def floor_one(resources: int) -> dict[str, Any]:
    """The floor: ``resources`` resources of a trivial program (components of four ConfigMaps)
    under the same mocks and monitor, in this process."""
    import pulumi
    import pulumi_kubernetes as k8s

    from components.mockrun import run_function

    class Holder(pulumi.ComponentResource):
        def __init__(self, name: str) -> None:
            super().__init__("floor:index:Holder", name)
            for k in range(CONFIGMAPS_PER_COMPONENT):
                k8s.core.v1.ConfigMap(f"{name}-{k}", metadata={"name": f"{name}-{k}", "namespace": "floor"},
                                      data={"key": f"{name}/{k}"}, opts=pulumi.ResourceOptions(parent=self))
            self.register_outputs({})

    def program() -> None:
        for i in range(max(1, resources // (CONFIGMAPS_PER_COMPONENT + 1))):
            Holder(f"holder-{i:06d}")

    rss0 = peak_rss_mib()
    c0 = time.process_time()
    graph = run_function(program, "dev")
    cpu = time.process_time() - c0
    return {"resources": len(graph.resources), "cpu_seconds": cpu, "rss_growth_mib": peak_rss_mib() - rss0}


def replay_one(dump: str) -> dict[str, Any]:
    """The same-graph floor: register exactly the resources a program run registered (types, names,
    parents, input values, from its pickle) with the SDK's generic resource classes, under the same
    mocks and monitor, in this process. What is left of the program's cost above it is the
    program's own: rendering, models, typed SDK classes, Outputs it builds."""
    import pulumi

    from components.mockrun import run_function

    with open(dump, "rb") as f:
        registered = pickle.load(f)  # noqa: S301  # our own file, written by --one just before

    def program() -> None:
        made: dict[str, pulumi.Resource] = {}
        for type_, name, urn, parent, custom, inputs in registered:
            opts = pulumi.ResourceOptions(parent=made.get(parent))
            if type_.startswith("pulumi:providers:"):
                made[urn] = pulumi.ProviderResource(type_.split(":")[2], name, inputs, opts)
            elif custom:
                made[urn] = pulumi.CustomResource(type_, name, inputs, opts)
            else:
                made[urn] = pulumi.ComponentResource(type_, name, None, opts)

    rss0 = peak_rss_mib()
    c0 = time.process_time()
    graph = run_function(program, "dev")
    cpu = time.process_time() - c0
    return {"resources": len(graph.resources), "cpu_seconds": cpu, "rss_growth_mib": peak_rss_mib() - rss0}


def measure(n: int, shard_count: int, what: str = "--one", *extra: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, what, str(n), str(shard_count), *extra],
                         capture_output=True, text=True, check=False, cwd=ROOT, timeout=TIMEOUT_S)
    if out.returncode != 0:
        raise SystemExit(f"fleet of {n} failed:\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def row(r: dict[str, Any]) -> str:
    res, secs, cpu, agents = int(r["resources"]), float(r["seconds"]), float(r["cpu_seconds"]), int(r["agents"])
    return (f"{r['fleet']:>7} {agents:>7} {res:>10} {res / max(agents, 1):>10.2f} {secs:>8.1f} {cpu:>8.1f} "
            f"{secs / res * 1000:>12.2f} {cpu / res * 1000:>11.2f} {r['peak_rss_mib']:>13.0f} "
            f"{float(r['rss_growth_mib']) * 1024 / res:>8.1f}")


def floor_row(label: str, r: dict[str, Any], f: dict[str, Any]) -> str:
    """The program's CPU and memory per resource next to its floor's, as ratios."""
    def per_res(x: dict[str, Any]) -> tuple[float, float]:
        res = int(x["resources"])
        return float(x["cpu_seconds"]) / res * 1000, float(x["rss_growth_mib"]) * 1024 / res

    (ms, kib), (fms, fkib) = per_res(r), per_res(f)
    return (f"{label:>8} {int(f['resources']):>10} {float(f['cpu_seconds']):>8.1f} {fms:>11.2f} {fkib:>8.1f} "
            f"{ms / fms:>12.2f} {kib / max(fkib, 1e-9):>12.2f}")


def marginal(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The difference between the largest and the smallest run: fixed costs cancel."""
    lo, hi = results[0], results[-1]
    return {k: float(hi[k]) - float(lo[k]) for k in ("resources", "cpu_seconds", "rss_growth_mib")}


def type_table(r: dict[str, Any], top: int = 10) -> list[str]:
    agents = max(int(r["agents"]), 1)
    lines = [f"  fleet {r['fleet']}: {r['resources']} resources ({r['custom']} custom, "
             f"{int(r['resources']) - int(r['custom'])} components); by type:"]
    for type_, count in r["types"][:top]:
        lines.append(f"    {count:>7} {count / agents:>6.2f}/agent  {type_}")
    rest = sum(c for _, c in r["types"][top:])
    lines.append(f"    {rest:>7} {rest / agents:>6.2f}/agent  ({len(r['types']) - top} other types)")
    return lines


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print(json.dumps(one(int(argv[1]), int(argv[2]) if len(argv) > 2 else 0, argv[3] if len(argv) > 3 else "")))
        return
    if argv[:1] == ["--replay-one"]:
        print(json.dumps(replay_one(argv[3])))
        return
    if argv[:1] == ["--floor-one"]:
        print(json.dumps(floor_one(int(argv[1]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("sizes", nargs="*", type=int, help="fleet sizes (default: 1000 10000)")
    parser.add_argument("--shard", type=int, default=0, metavar="COUNT",
                        help="deploy only hash bucket 0 of COUNT (a shard stack) of each fleet")
    parser.add_argument("--estimate", type=int, metavar="AGENTS",
                        help="extrapolate construction to AGENTS from the largest measured size")
    parser.add_argument("--no-floor", action="store_true", help="skip the trivial-program floor")
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes or [1000, 10000])
    print(HEADER)
    results, floors, replays = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            dump = str(Path(tmp) / f"graph-{n}.pickle") if not args.no_floor else ""
            r = measure(n, args.shard, "--one", dump) if dump else measure(n, args.shard)
            results.append(r)
            print(row(r), flush=True)
            if dump:
                floors.append(measure(int(r["resources"]), 0, "--floor-one"))
                replays.append(measure(n, 0, "--replay-one", dump))
    for title, base in (("floor: a trivial program with as many resources (4 ConfigMaps per component), "
                         "same SDK, mocks and monitor", floors),
                        ("same-graph floor: the very resources the program registered, replayed with the "
                         "SDK's generic classes, same mocks and monitor", replays)):
        if not base:
            continue
        print(title)
        print(FLOOR_HEADER)
        for r, f in zip(results, base, strict=True):
            print(floor_row(str(r["fleet"]), r, f))
        if len(results) > 1:
            print(floor_row("marginal", marginal(results), marginal(base)))
    for r in results:
        print("\n".join(type_table(r)))
    if args.estimate:
        print(estimate(results, args.estimate))


def estimate(results: list[dict[str, Any]], agents: int) -> str:
    """Linear extrapolation: marginal cost between the smallest and largest run when there are
    two sizes (fixed costs cancel), else per resource of the one run."""
    lo, hi = min(results, key=lambda r: int(r["agents"])), max(results, key=lambda r: int(r["agents"]))
    if int(hi["agents"]) == int(lo["agents"]):
        lo = {"agents": 0, "resources": 0, "cpu_seconds": 0.0, "peak_rss_mib": 0.0}
    d_agents, d_res = int(hi["agents"]) - int(lo["agents"]), int(hi["resources"]) - int(lo["resources"])
    per_agent = d_res / d_agents
    ms = (float(hi["cpu_seconds"]) - float(lo["cpu_seconds"])) / d_res * 1000
    kib = (float(hi["peak_rss_mib"]) - float(lo["peak_rss_mib"])) / d_res * 1024
    extra = (agents - int(hi["agents"])) * per_agent
    res = int(hi["resources"]) + extra
    cpu_min = (float(hi["cpu_seconds"]) + extra * ms / 1000) / 60
    rss_gib = (float(hi["peak_rss_mib"]) + extra * kib / 1024) / 1024
    return (f"estimate for {agents} agents in one stack, linear from the {lo['agents']}->{hi['agents']}-agent runs "
            f"({per_agent:.2f} res/agent, {ms:.2f} ms CPU and {kib:.0f} KiB RSS per added resource): "
            f"~{res:.0f} resources, ~{cpu_min:.0f} min CPU, ~{rss_gib:.1f} GiB peak RSS")

if __name__ == "__main__":
    main(sys.argv[1:])
