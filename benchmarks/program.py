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
"""

from __future__ import annotations

import argparse
import json
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
          f"{'ms/res wall':>12} {'ms/res cpu':>11} {'peak RSS MiB':>13}")
TIMEOUT_S = 1800


def one(n: int, shard_count: int) -> dict[str, Any]:
    """Build the graph for a fleet of ``n`` (bucket 0 of ``shard_count`` when > 0) in this process."""
    from benchmarks.synthetic import hash_shard, runtime_config, write_fleet
    from components.mockrun import run_program

    with tempfile.TemporaryDirectory() as tmp:
        fleet = write_fleet(Path(tmp), n)
        shard = hash_shard(shard_count, 0) if shard_count else None
        config, secrets = runtime_config(fleet, shard=shard)
        t0, c0 = time.perf_counter(), time.process_time()
        graph = run_program("dev", ROOT, config, secrets)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    deployed = len(graph.outputs["identityBom"]["agents"])
    kinds = Counter(r.type for r in graph.resources)
    return {
        "fleet": n,
        "agents": deployed,
        "resources": len(graph.resources),
        "custom": sum(1 for r in graph.resources if r.custom),
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "types": kinds.most_common(),
    }


def measure(n: int, shard_count: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--one", str(n), str(shard_count)],
                         capture_output=True, text=True, check=False, cwd=ROOT, timeout=TIMEOUT_S)
    if out.returncode != 0:
        raise SystemExit(f"fleet of {n} failed:\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def row(r: dict[str, Any]) -> str:
    res, secs, cpu, agents = int(r["resources"]), float(r["seconds"]), float(r["cpu_seconds"]), int(r["agents"])
    return (f"{r['fleet']:>7} {agents:>7} {res:>10} {res / max(agents, 1):>10.2f} {secs:>8.1f} {cpu:>8.1f} "
            f"{secs / res * 1000:>12.2f} {cpu / res * 1000:>11.2f} {r['peak_rss_mib']:>13.0f}")


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
        print(json.dumps(one(int(argv[1]), int(argv[2]) if len(argv) > 2 else 0)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("sizes", nargs="*", type=int, help="fleet sizes (default: 1000 10000)")
    parser.add_argument("--shard", type=int, default=0, metavar="COUNT",
                        help="deploy only hash bucket 0 of COUNT (a shard stack) of each fleet")
    parser.add_argument("--estimate", type=int, metavar="AGENTS",
                        help="extrapolate construction to AGENTS from the largest measured size")
    args = parser.parse_args(argv)
    sizes = args.sizes or [1000, 10000]
    print(HEADER)
    results = []
    for n in sizes:
        r = measure(n, args.shard)
        results.append(r)
        print(row(r), flush=True)
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
