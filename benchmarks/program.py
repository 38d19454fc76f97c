"""Benchmark: the real program (``__main__.py``) under Pulumi mocks for synthetic fleets.

Prints, per fleet size: agents the stack deploys, resources registered, resources per agent,
construction time, ms per resource and peak RSS; then which resource types dominate (count
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

HEADER = (f"{'fleet':>7} {'agents':>7} {'resources':>10} {'res/agent':>10} {'seconds':>8} "
          f"{'ms/resource':>12} {'peak RSS MiB':>13}")
TIMEOUT_S = 1800


def one(n: int, shard_count: int) -> dict[str, Any]:
    """Build the graph for a fleet of ``n`` (bucket 0 of ``shard_count`` when > 0) in this process."""
    from benchmarks.synthetic import hash_shard, runtime_config, write_fleet
    from components.mockrun import run_program

    with tempfile.TemporaryDirectory() as tmp:
        fleet = write_fleet(Path(tmp), n)
        shard = hash_shard(shard_count, 0) if shard_count else None
        config, secrets = runtime_config(fleet, shard=shard)
        t0 = time.perf_counter()
        graph = run_program("dev", ROOT, config, secrets)
        elapsed = time.perf_counter() - t0
    deployed = len(graph.outputs["identityBom"]["agents"])
    kinds = Counter(r.type for r in graph.resources)
    return {
        "fleet": n,
        "agents": deployed,
        "resources": len(graph.resources),
        "custom": sum(1 for r in graph.resources if r.custom),
        "seconds": elapsed,
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
    res, secs, agents = int(r["resources"]), float(r["seconds"]), int(r["agents"])
    return (f"{r['fleet']:>7} {agents:>7} {res:>10} {res / max(agents, 1):>10.2f} {secs:>8.1f} "
            f"{secs / res * 1000:>12.2f} {r['peak_rss_mib']:>13.0f}")


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
        last = max(results, key=lambda r: int(r["resources"]))
        per_agent = int(last["resources"]) / int(last["agents"])
        ms = float(last["seconds"]) / int(last["resources"]) * 1000
        res = per_agent * args.estimate
        print(f"estimate {args.estimate} agents in one stack (from the {last['agents']}-agent run: "
              f"{per_agent:.2f} res/agent, {ms:.2f} ms/resource, linear): ~{res:.0f} resources, "
              f"~{res * ms / 1000 / 60:.0f} min construction")


if __name__ == "__main__":
    main(sys.argv[1:])
