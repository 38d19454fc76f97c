"""Benchmark: decision latency of the generated Rego in a real OPA server, by fleet size.

For each size the synthetic fleet (benchmarks/synthetic.py, every agent calling ONE service,
so that gateway's data document holds every agent) is validated against the dev stack and
rendered with the public functions of components/render/rego.py (``POLICY`` and
``authz_data``). A real OPA (scripts/bootstrap-tools: ~/.cache/agent-passport/tools/bin/opa)
serves them on 127.0.0.1 (a free port, stopped afterwards); the script sends a warm-up and
then a bounded number of decision requests over one keep-alive HTTP connection: inputs shaped
like opa-envoy-plugin's (``render.rego.check_request``), a fixed mix of allowed and denied
requests for agents spread over the fleet. Latency is measured client-side (request written
to response read). Every answer is compared with the reference decision
(``render.rego.decide``); mismatches are counted and printed.

Then ``opa bench`` (in-process evaluation, no HTTP) gives ns/op for one allowed and one
denied input at each size, and for the same allowed input on its **floor**: the minimal policy
``benchmarks/rego_floor.rego`` (the same keyed lookup and method/path/header checks, nothing
else) on the same data, with the ratio: the allowed input and the floor run as ``--pairs``
interleaved pairs, the figures are medians and the ratio the median of the pairs' ratios.

With ``--shards K`` the largest size is measured once more as a base stack's gateway sees a
sharded environment: K shard documents (hash buckets), the policy looking an identity up in
each (its cost grows with shards, never with agents).

Usage: python benchmarks/rego.py [--requests N] [--pairs P] [--shards K] [SIZE ...]
       (default: 10 10000, 2000 requests, no sharded run)
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import agent_name, hash_shard, stack_config, team_of, write_fleet  # noqa: E402
from components.identity import gateway_identity  # noqa: E402
from components.manifest.loader import load_manifests  # noqa: E402
from components.platform_model import Platform, build_platform  # noqa: E402
from components.render import rego  # noqa: E402
from components.render.yamlout import dump_json  # noqa: E402

FLOOR_POLICY = Path(__file__).with_name("rego_floor.rego")
FLOOR_QUERY = "data.floor.allow"
OPA_BIN = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agent-passport/tools/bin/opa"
SERVICE = "svc-0"
WARMUP = 200
STRIDE = 7919
START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 10.0
HEADER = (f"{'agents':>7} {'layout':>10} {'data KiB':>9} {'requests':>9} {'allowed':>8} {'p50 us':>8} {'p90 us':>8} "
          f"{'p99 us':>8} {'max us':>8} {'mismatch':>9}")

# (label, method, path, headers(agent index) or None, principal known?) — a fixed, repeating mix
KINDS: tuple[tuple[str, str, str, bool, bool], ...] = (
    ("allow GET prefix", "GET", "/api/v1/items/42?page=2", True, True),
    ("allow GET prefix", "GET", "/api/v1/items", True, True),
    ("deny wrong method", "DELETE", "/api/v1/items/42", True, True),
    ("deny wrong path", "GET", "/api/v1/itemsx", True, True),
    ("deny missing header", "GET", "/api/v1/items/42", False, True),
    ("deny unknown SPIFFE ID", "GET", "/api/v1/items/42", True, False),
    ("POST time window", "POST", "/api/v1/action", False, True),
)


@dataclass(frozen=True)
class Probe:
    kind: str
    request: rego.Request
    body: bytes


def opa_binary() -> str:
    if OPA_BIN.is_file() and os.access(OPA_BIN, os.X_OK):
        return str(OPA_BIN)
    found = shutil.which("opa")
    if found is None:
        raise SystemExit(f"OPA not found at {OPA_BIN} or on PATH: run scripts/bootstrap-tools --only opa")
    return found


def fleet_data(where: Path, n: int, shards: int) -> tuple[Platform, dict[str, Any]]:
    """The fleet's platform and the data document ONE gateway of :data:`SERVICE` loads.

    Standalone (``shards`` 0): the stack's own document. Sharded: what a base stack's gateway
    loads — the base's document (no principals) plus one document per shard stack
    (``dev-shard-<k>``, a hash bucket of the fleet), each rendered from that shard's platform.
    """
    fleet = write_fleet(where, n, services=1)
    manifests = load_manifests([fleet])
    platform = build_platform(stack_config(fleet), manifests, "dev", "stacks/Pulumi.dev.yaml")
    if not shards:  # with the (empty) revocation list every gateway loads beside its data
        return platform, rego.with_revocations(rego.authz_data(platform, [SERVICE]))
    data = rego.base_data([SERVICE])
    for k in range(shards):
        part = build_platform(stack_config(fleet, shard=hash_shard(shards, k)), manifests, f"dev-shard-{k}",
                              "stacks/Pulumi.dev.yaml")
        data["agentpassport"].setdefault("shards", {}).update(
            rego.shard_data(part, [SERVICE])["agentpassport"]["shards"])
    return platform, rego.with_revocations(data)


def authority(platform: Platform) -> str:
    svc = platform.service(SERVICE)
    assert svc is not None
    gw = gateway_identity(svc.name, svc.manifest.spec.namespace, platform.config.trust_domain,
                          platform.config.mesh.cluster_domain)
    return f"{gw.name}.{gw.namespace}.svc:{platform.config.authz.gateway_port}"


def probes(platform: Platform, count: int) -> list[Probe]:
    """``count`` requests cycling through :data:`KINDS` for agents spread over the fleet
    (a prime stride, deterministic)."""
    n = len(platform.active_agents)
    td, auth = platform.config.trust_domain, authority(platform)
    out = []
    for k in range(count):
        kind, method, path, with_header, known = KINDS[k % len(KINDS)]
        i = (k * STRIDE) % n
        agent = platform.agent(agent_name(i))
        assert agent is not None
        principal = agent.identity.spiffe_id if known else f"spiffe://{td}/ns/agents-00/sa/stranger-{i}"
        headers = {"x-tenant": team_of(i)} if with_header else {}
        req = rego.Request(SERVICE, principal, method, path, headers, 0)
        body = json.dumps({"input": rego.check_request(req, auth)}).encode()
        out.append(Probe(kind, req, body))
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_opa(bundle: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [opa_binary(), "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error",
         "--skip-version-check", str(bundle / "policy.rego"), str(bundle / "data.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"opa exited with {proc.returncode}: {err}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    stop(proc)
    raise SystemExit(f"opa did not become healthy within {START_TIMEOUT_S:.0f}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def decide_over_http(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, dict[str, Any]]:
    """One decision: nanoseconds from request to parsed response, and the decision."""
    t0 = time.perf_counter_ns()
    conn.request("POST", f"/v1/data/{rego.DECISION_PATH}", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read()
    elapsed = time.perf_counter_ns() - t0
    if resp.status != 200:
        raise SystemExit(f"OPA answered {resp.status}: {payload[:500]!r}")
    result: dict[str, Any] = json.loads(payload)["result"]
    return elapsed, result


def pct(sorted_ns: list[int], p: float) -> float:
    """Nearest-rank percentile, in microseconds."""
    idx = max(0, min(len(sorted_ns) - 1, math.ceil(p / 100 * len(sorted_ns)) - 1))
    return sorted_ns[idx] / 1000


def serve_and_measure(bundle: Path, data: dict[str, Any], requests: list[Probe]) -> dict[str, Any]:
    proc, port = start_opa(bundle)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        for p in requests[:WARMUP]:
            decide_over_http(conn, p.body)
        latencies: list[int] = []
        allowed = 0
        mismatches: Counter[str] = Counter()
        by_kind: dict[str, list[int]] = {}
        for p in requests[WARMUP:]:
            ns, got = decide_over_http(conn, p.body)
            expected = rego.decide(data, replace(p.request, now_ns=time.time_ns()))
            if got["allowed"] != expected["allowed"] or (
                    not p.kind.startswith("POST") and got != expected):
                mismatches[p.kind] += 1
            allowed += bool(got["allowed"])
            latencies.append(ns)
            by_kind.setdefault(p.kind, []).append(ns)
        conn.close()
    finally:
        stop(proc)
    latencies.sort()
    return {
        "requests": len(latencies), "allowed": allowed, "mismatches": dict(mismatches),
        "p50": pct(latencies, 50), "p90": pct(latencies, 90), "p99": pct(latencies, 99),
        "max": latencies[-1] / 1000, "mean": statistics.fmean(latencies) / 1000,
        "by_kind": {k: pct(sorted(v), 50) for k, v in sorted(by_kind.items())},
    }


def opa_bench(bundle: Path, input_doc: dict[str, Any], name: str, policy: Path | None = None,
              query: str = rego.DECISION_QUERY) -> float:
    """``opa bench`` ns/op of ``query`` (default: the decision) for one input (in-process, no HTTP)."""
    path = bundle / f"input-{name}.json"
    path.write_text(json.dumps(input_doc), encoding="utf-8")
    proc = subprocess.run(
        [opa_binary(), "bench", "--format", "json", "--data", str(policy or bundle / "policy.rego"),
         "--data", str(bundle / "data.json"), "--input", str(path), query],
        capture_output=True, text=True, timeout=300, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"opa bench failed: {proc.stderr or proc.stdout}")
    out = json.loads(proc.stdout)  # Go's testing.BenchmarkResult: N runs in T ns
    return float(out["T"]) / float(out["N"])


def run(n: int, shards: int, count: int, tmp: Path,
        pairs: int) -> tuple[dict[str, Any], float, float, tuple[float, float] | None]:
    platform, data = fleet_data(tmp / f"fleet-{n}-{shards}", n, shards)
    principals = rego.principals_of(data, SERVICE)
    if len(principals) != n:
        raise SystemExit(f"expected {n} principals in {SERVICE}'s data, got {len(principals)}")
    bundle = tmp / f"bundle-{n}-{shards}"
    bundle.mkdir()
    (bundle / "policy.rego").write_text(rego.POLICY, encoding="utf-8")
    (bundle / "data.json").write_text(dump_json(data), encoding="utf-8")
    requests = probes(platform, WARMUP + count)
    result = serve_and_measure(bundle, data, requests)
    result["data_kib"] = (bundle / "data.json").stat().st_size / 1024
    auth = authority(platform)
    allow = next(p for p in requests if p.kind.startswith("allow"))
    deny = next(p for p in requests if p.kind == "deny wrong method")
    deny_ns = opa_bench(bundle, rego.check_request(deny.request, auth), "deny")
    # The allowed request and its floor run as interleaved pairs (the floor reads the
    # standalone document only, no shard documents): each figure is the median over the
    # pairs and the ratio the median of the pairs' ratios, so that a change in the machine's
    # load during the run moves both sides of a ratio alike.
    allows, ratios = [], []
    for _ in range(pairs):
        allow_ns = opa_bench(bundle, rego.check_request(allow.request, auth), "allow")
        allows.append(allow_ns)
        if not shards:
            floor_ns = opa_bench(bundle, rego.check_request(allow.request, auth), "floor", FLOOR_POLICY, FLOOR_QUERY)
            ratios.append((floor_ns, allow_ns / floor_ns))
    floor = (statistics.median(f for f, _ in ratios), statistics.median(r for _, r in ratios)) if ratios else None
    return result, statistics.median(allows), deny_ns, floor


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("sizes", nargs="*", type=int, help="fleet sizes (default: 10 10000)")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per size (after a warm-up)")
    parser.add_argument("--pairs", type=int, default=5,
                        help="interleaved opa bench runs of the allowed request and its floor (median)")
    parser.add_argument("--shards", type=int, default=0, metavar="K",
                        help="also measure the largest size split into K shard documents (a base's gateway)")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    sizes = args.sizes or [10, 10000]
    layouts = [(n, 0) for n in sizes] + ([(max(sizes), args.shards)] if args.shards else [])
    version = subprocess.run([opa_binary(), "version"], capture_output=True, text=True, check=True, timeout=30)
    print(f"OPA: {version.stdout.splitlines()[0]}; "
          f"mix per {len(KINDS)} requests: " + ", ".join(k[0] for k in KINDS))
    print(HEADER)
    benches = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, shards in layouts:
            r, allow_ns, deny_ns, floor_ns = run(n, shards, args.requests, Path(tmp), args.pairs)
            layout = f"{shards} shards" if shards else "standalone"
            benches.append((n, layout, allow_ns, deny_ns, floor_ns, r["by_kind"]))
            mism = sum(r["mismatches"].values())
            print(f"{n:>7} {layout:>10} {r['data_kib']:>9.0f} {r['requests']:>9} {r['allowed']:>8} {r['p50']:>8.0f} "
                  f"{r['p90']:>8.0f} {r['p99']:>8.0f} {r['max']:>8.0f} {mism:>9}", flush=True)
            if mism:
                print(f"        mismatches with the reference decision: {r['mismatches']}")
    print(f"{'agents':>7} {'layout':>10} {'opa bench allow ns/op':>22} {'floor ns/op':>12} {'x floor':>8} "
          f"{'opa bench deny ns/op':>21}   p50 us by kind (HTTP)")
    for n, layout, allow_ns, deny_ns, floor_ns, by_kind in benches:
        kinds = ", ".join(f"{k} {v:.0f}" for k, v in by_kind.items())
        floor = f"{floor_ns[0]:>12.0f} {floor_ns[1]:>8.2f}" if floor_ns else f"{'-':>12} {'-':>8}"
        print(f"{n:>7} {layout:>10} {allow_ns:>22.0f} {floor} {deny_ns:>21.0f}   {kinds}")


if __name__ == "__main__":
    main(sys.argv[1:])
