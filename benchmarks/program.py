"""Benchmark: the real program under mocks for synthetic fleets.

Prints construction time, ms per resource, resources per agent and peak RSS for each size.
Usage: python benchmarks/program.py [N ...]   (default: 100 1000)
Each size runs in a fresh process so memory figures do not mix.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one(n: int) -> dict[str, object]:
    from benchmarks.synthetic import write_fleet
    from components.config import stack_runtime_config
    from components.mockrun import run_program

    with tempfile.TemporaryDirectory() as tmp:
        fleet = write_fleet(Path(tmp), n)
        config, secrets = stack_runtime_config(ROOT / "stacks/Pulumi.dev.yaml")
        config["agent-passport:agentsDir"] = str(fleet)
        t0 = time.perf_counter()
        graph = run_program("dev", ROOT, config, secrets)
        elapsed = time.perf_counter() - t0
    kinds = Counter(r.type for r in graph.resources)
    return {
        "agents": n,
        "resources": len(graph.resources),
        "seconds": elapsed,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "top_types": kinds.most_common(5),
    }


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print(json.dumps(one(int(argv[1]))))
        return
    sizes = [int(a) for a in argv] or [100, 1000]
    print(f"{'agents':>7} {'resources':>10} {'res/agent':>10} {'seconds':>8} {'ms/resource':>12} {'peak RSS MiB':>13}")
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True,
                             check=True, cwd=ROOT)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        res, secs = int(r["resources"]), float(r["seconds"])
        print(f"{n:>7} {res:>10} {res / n:>10.2f} {secs:>8.1f} {secs / res * 1000:>12.2f} {r['peak_rss_mib']:>13.0f}")
        print(f"{'':>7} most common: " + ", ".join(f"{t.split(':')[-1]} {c}" for t, c in r["top_types"]))


if __name__ == "__main__":
    main(sys.argv[1:])
