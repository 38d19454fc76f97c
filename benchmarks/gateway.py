"""Benchmark: request latency through the real Envoy gateway with the generated Rego deciding.

The gateway runs the rendered bootstrap (``components.render.envoy``) on 127.0.0.1 with real
mTLS, as tests/e2e/test_authz_e2e.py runs it. opa-envoy-plugin cannot be built here (its Go
module is not served), so a gRPC stand-in plays its part (the e2e test's, unchanged except that
it asks a real ``opa run --server`` over one keep-alive HTTP connection per thread instead of
starting ``opa eval`` per request). One client holds one mTLS connection (a keep-alive, as an
agent's HTTP client does) and sends a bounded number of requests, cycling through an allowed
request and two denials.

Printed, per kind, p50 / p99 in microseconds:

* ``through gateway``: the client's request written to the response read (the figure asked for);
* ``stand-in``: the time the stand-in spent on each check, gRPC decode to response (measured
  inside it), and of that ``OPA HTTP``: the decision request to the real OPA server;
* ``gateway - stand-in``: Envoy, TLS, the backend and the client's own overhead, i.e. what a real
  deployment pays besides the decision (the stand-in is Python: opa-envoy-plugin runs the
  decision in-process in Go, so its share here is an upper bound);
* the client's own overhead measured alone: the same client against the plain-HTTP backend.

Usage: python benchmarks/gateway.py [--requests N]     (default 600: bounded, about a minute)
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.rego import opa_binary, pct, start_opa, stop  # noqa: E402
from components.render import rego  # noqa: E402
from tests.e2e import test_authz_e2e as authz_e2e  # noqa: E402
from tests.e2e.test_authz_e2e import MSG, Backend, Gateway, OpaExtAuthz, Pki  # noqa: E402
from tests.policy.test_rego_policy import synthetic_platform  # noqa: E402

WARMUP = 50
REQUEST_TIMEOUT_S = 10.0
# (kind, path, headers): the synthetic platform's buyer holds GET prefix /orders with x-tenant: acme
KINDS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("allow", "/orders/17?page=2", {"x-tenant": "acme"}),
    ("deny missing header", "/orders/17", {}),
    ("deny wrong path", "/ordersx", {"x-tenant": "acme"}),
)


class ServedOpaExtAuthz(OpaExtAuthz):
    """The e2e stand-in, asking a running OPA server (keep-alive, one connection per gRPC thread)
    and timing itself."""

    def __init__(self, bundle: Path) -> None:
        super().__init__(bundle)
        self.opa_port = 0  # set once the OPA server serves the bundle the gateway wrote
        self.local = threading.local()
        self.timings: list[tuple[int, int]] = []  # (whole check, OPA HTTP) in ns
        self.lock = threading.Lock()

    def _decide(self, input_doc: dict[str, Any]) -> dict[str, Any]:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.opa_port, timeout=REQUEST_TIMEOUT_S)
        conn.request("POST", f"/v1/data/{rego.DECISION_PATH}", body=json.dumps({"input": input_doc}),
                     headers={"content-type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"OPA answered {resp.status}: {body[:200]!r}")
        result: dict[str, Any] = json.loads(body)["result"]
        return result

    def check(self, raw: bytes, context: Any) -> bytes:
        t0 = time.perf_counter_ns()
        from google.protobuf import json_format  # type: ignore[import-untyped]

        request = MSG["CheckRequest"].FromString(raw)
        attributes = json_format.MessageToDict(request.attributes)
        path = attributes.get("request", {}).get("http", {}).get("path", "")
        input_doc = {"attributes": attributes, "parsed_path": [s for s in path.split("?")[0].split("/") if s],
                     "version": {"encoding": "protojson", "ext_authz": "v3"}}
        t1 = time.perf_counter_ns()
        decision = self._decide(input_doc)
        t2 = time.perf_counter_ns()
        response = MSG["CheckResponse"]()
        headers = [MSG["HeaderValueOption"](header=MSG["HeaderValue"](key=k, value=v))
                   for k, v in sorted(decision.get("headers", {}).items())]
        if decision["allowed"]:
            response.status.code = 0
            response.ok_response.headers.extend(headers)
        else:
            response.status.code = 7
            response.denied_response.status.code = decision.get("http_status", 403)
            response.denied_response.headers.extend(headers)
            response.denied_response.body = decision.get("body", "")
        response.dynamic_metadata.update(decision.get("dynamic_metadata", {}))
        data: bytes = response.SerializeToString()
        with self.lock:
            self.timings.append((time.perf_counter_ns() - t0, t2 - t1))
        return data


@contextlib.contextmanager
def mtls_client(port: int, pki: Pki, cert: tuple[Path, Path]) -> Iterator[http.client.HTTPSConnection]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the gateway's SVID carries a SPIFFE ID; the e2e test checks it
    ctx.load_verify_locations(str(pki.where / "ca.pem"))
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=REQUEST_TIMEOUT_S)
    try:
        yield conn
    finally:
        conn.close()


def timed(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> tuple[int, int]:
    t0 = time.perf_counter_ns()
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    resp.read()
    return time.perf_counter_ns() - t0, resp.status


def summary(ns: list[int]) -> str:
    s = sorted(ns)
    return f"{pct(s, 50):>9.0f} {pct(s, 99):>9.0f}"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=600, help="timed requests (after a warm-up)")
    args = parser.parse_args(argv)
    from tests.unit.test_envoy_config import envoy_binary

    envoy = envoy_binary()
    version = subprocess.run([envoy, "--version"], capture_output=True, text=True, timeout=60, check=False)
    opa_version = subprocess.run([opa_binary(), "version"], capture_output=True, text=True, timeout=30, check=True)
    print(f"Envoy: {version.stdout.strip().splitlines()[-1] if version.stdout.strip() else '?'}")
    print(f"OPA: {opa_version.stdout.splitlines()[0]}; requests: {args.requests} after {WARMUP} warm-up")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        platform = synthetic_platform(tmp / "manifests")
        td = platform.config.trust_domain
        (tmp / "pki").mkdir()
        pki = Pki(tmp / "pki")
        buyer = pki.leaf("buyer", f"spiffe://{td}/ns/agents/sa/buyer")
        with mock.patch.object(authz_e2e, "OpaExtAuthz", ServedOpaExtAuthz):
            gw = Gateway(tmp, platform, "orders", pki)
        authz = gw.authz
        assert isinstance(authz, ServedOpaExtAuthz)
        opa_proc, authz.opa_port = start_opa_with_revocations(gw.bundle)
        try:
            by_kind: dict[str, list[int]] = {k[0]: [] for k in KINDS}
            in_order: list[int] = []
            with gw.run(), mtls_client(gw.ports["gateway"], pki, buyer) as conn:
                expected = {"allow": 200, "deny missing header": 403, "deny wrong path": 403}
                for i in range(WARMUP + args.requests):
                    kind, path, headers = KINDS[i % len(KINDS)]
                    ns, status = timed(conn, path, headers)
                    if status != expected[kind]:
                        raise SystemExit(f"{kind}: expected {expected[kind]}, got {status}")
                    if i >= WARMUP:
                        by_kind[kind].append(ns)
                        in_order.append(ns)
                checks = authz.timings[WARMUP:]
            client_only = client_overhead(args.requests)
        finally:
            stop(opa_proc)
    print(f"{'what':<52} {'p50 us':>9} {'p99 us':>9}")
    for kind, ns in by_kind.items():
        print(f"{'through gateway: ' + kind:<52} {summary(ns)}")
    print(f"{'through gateway: all':<52} {summary(in_order)}")
    print(f"{'stand-in: whole check (inside gRPC)':<52} {summary([c for c, _ in checks])}")
    print(f"{'  of which OPA HTTP (real opa run --server)':<52} {summary([o for _, o in checks])}")
    if len(checks) != len(in_order):  # one check per request, in the same order
        raise SystemExit(f"{len(in_order)} requests but {len(checks)} checks")
    gap = sorted(e - c for e, (c, _) in zip(in_order, checks, strict=True))
    print(f"{'gateway - stand-in (Envoy, TLS, backend, client)':<52} {pct(gap, 50):>9.0f} {pct(gap, 99):>9.0f}")
    print(f"{'client alone (plain HTTP to the backend)':<52} {summary(client_only)}")


def start_opa_with_revocations(bundle: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``opa run --server`` on the bundle's policy, data and (empty) revocation list."""
    merged = json.loads((bundle / "data.json").read_text(encoding="utf-8"))
    revocations = json.loads((bundle / rego.REVOCATIONS_FILE).read_text(encoding="utf-8"))
    merged.setdefault("agentpassport", {}).update(revocations.get("agentpassport", {}))
    serve = bundle.parent / "serve"
    serve.mkdir()
    (serve / "policy.rego").write_text((bundle / "policy.rego").read_text(encoding="utf-8"), encoding="utf-8")
    (serve / "data.json").write_text(json.dumps(merged), encoding="utf-8")
    return start_opa(serve)


def client_overhead(count: int) -> list[int]:
    """The client's own cost: the same requests, plain HTTP, straight to the test backend."""
    from tests.support.tools import free_port

    port = free_port()
    backend = ThreadingHTTPServer(("127.0.0.1", port), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        out = []
        for i in range(WARMUP + count):
            _, path, headers = KINDS[i % len(KINDS)]
            ns, _ = timed(conn, path, headers)
            if i >= WARMUP:
                out.append(ns)
        conn.close()
        return out
    finally:
        backend.shutdown()
        backend.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
