"""Benchmark: the storm limits of the credential chain on this machine, on real engines.

What it measures (every loop bounded by a count *and* a deadline; every server on 127.0.0.1,
started here and stopped here):

* **SPIRE** (``spire-server`` 1.15.3 with the rendered dev ``server.conf``: sqlite, the stack's
  CA key type; tests/support/spire_server.py says what is adapted): X.509-SVID and JWT-SVID
  signings per second through the server API (``SVID/MintX509SVID`` and ``SVID/MintJWTSVID``
  on the admin socket, gRPC from this process) by N concurrent clients, with p50 / p99 latency.
  The Mint calls sign exactly as an agent's ``BatchNewX509SVID`` / ``NewJWTSVID`` do, without
  the agent's entry authorization and without SPIRE's per-IP rate limiter (which applies to TCP
  callers only): they measure the signer, the ceiling of what the rate limit protects.
* **OpenBao + PostgreSQL** (the venv's ``bao`` dev server and a Debian PostgreSQL 15 cluster,
  configured from the dev stack's Vault plan by the hvac applier, as tests/support/chain.py
  does, audit device included, the rendered rate-limit quotas removed: they are per client IP
  and this process is one client): JWT logins per second (the rendered JWT role; the JWKS is served
  from this process, ES256 as SPIRE signs), database credentials per second (the generated role's
  ``CREATE ROLE ... VALID UNTIL`` and GRANTs) and revocations per second (``sys/leases/revoke``:
  the rendered revocation, ``pg_terminate_backend`` and ``DROP ROLE``), then the PostgreSQL
  catalog after ``--cycles`` issue/revoke cycles: the shared catalogs' sizes and dead rows, and
  what ``VACUUM`` takes back, in how long.

Every figure is printed next to what a 10k- and a 50k-agent fleet need, steady and cold
(components/capacity.py's model with its defaults), and with the machine's load average.

Usage: python benchmarks/storm.py [--only spire|vault] [--clients 1,8,32] [--count 2000]
                                  [--cycles 2000] [--deadline 60]
``--cycles 100000`` is the long catalog run (about 100000 / (revocations/s) seconds).
Nothing here asserts a time.
"""

# The SQL here is built from constants.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

SPIRE_SVC = "/spire.api.server.svid.v1.SVID"
CATALOGS = ("pg_authid", "pg_auth_members", "pg_shdepend", "pg_database", "pg_class", "pg_namespace")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


# --------------------------------------------------------------------------- a bounded load loop


@dataclass(frozen=True)
class Run:
    what: str
    clients: int
    done: int
    failed: int
    wall_s: float
    latencies_s: tuple[float, ...]
    errors: tuple[str, ...]

    @property
    def per_s(self) -> float:
        return self.done / self.wall_s if self.wall_s else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def line(self) -> str:
        return (f"{self.what:<22} {self.clients:>7} {self.done:>7} {self.failed:>6} {self.wall_s:>7.2f} "
                f"{self.per_s:>9.1f} {self.pct(0.5) * 1000:>8.1f} {self.pct(0.99) * 1000:>8.1f}")


RUN_HEADER = (f"{'operation':<22} {'clients':>7} {'done':>7} {'failed':>6} {'wall s':>7} {'per s':>9} "
              f"{'p50 ms':>8} {'p99 ms':>8}")


def drive(what: str, clients: int, count: int, deadline_s: float, op: Callable[[int], None]) -> Run:
    """``op(i)`` for i in 0..count-1 from ``clients`` threads, until done or past the deadline."""
    lock = threading.Lock()
    next_i = [0]
    lat: list[float] = []
    errors: list[str] = []
    stop_at = time.monotonic() + deadline_s

    def worker() -> None:
        while time.monotonic() < stop_at:
            with lock:
                i = next_i[0]
                if i >= count:
                    return
                next_i[0] += 1
            t0 = time.perf_counter()
            try:
                op(i)
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            with lock:
                lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    return Run(what, clients, len(lat), len(errors), wall, tuple(lat), tuple(dict.fromkeys(errors))[:3])


# --------------------------------------------------------------------------- fleet needs


def fleet_needs() -> dict[str, dict[str, float]]:
    """Per-second needs of a 10k and a 50k fleet (model defaults, one instance per agent,
    every agent with one JWT audience and one database grant), steady and cold."""
    from components.capacity import ChainModel, synthetic_demand

    out: dict[str, dict[str, float]] = {}
    for n in (10_000, 50_000):
        d = synthetic_demand(n)
        model = ChainModel()
        out[f"{n // 1000}k"] = {
            "x509 steady": d.steady_x509_per_s, "jwt steady": d.steady_jwt_per_s,
            "signings cold": d.cold_signings / model.startup_window_s,
            "logins steady": d.steady_logins_per_s, "logins cold": d.instances / model.startup_window_s,
            "creds steady": d.steady_creds_per_s, "creds cold": d.db_leases / model.startup_window_s,
        }
    return out


def ratio_lines(measured: dict[str, float]) -> list[str]:
    """``measured`` (name -> per s) against the fleets' needs with the same name prefix."""
    needs = fleet_needs()
    lines = [f"{'capacity':<26} {'measured/s':>10}  " + "  ".join(f"{k:>22}" for k in needs)]
    pairs = {"x509 signings": ("x509 steady", "signings cold"), "jwt signings": ("jwt steady", "signings cold"),
             "jwt logins": ("logins steady", "logins cold"), "db creds": ("creds steady", "creds cold"),
             "db revocations": ("creds steady", "creds cold")}
    for name, per_s in measured.items():
        steady, cold = pairs[name]
        cells = []
        for fleet in needs.values():
            cells.append(f"{per_s / fleet[steady]:>7.1f}x st {per_s / fleet[cold]:>6.2f}x cold")
        lines.append(f"{name:<26} {per_s:>10.1f}  " + "  ".join(f"{c:>22}" for c in cells))
    return lines


# --------------------------------------------------------------------------- SPIRE


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def mint_x509_request(csr_der: bytes, ttl_s: int) -> bytes:
    """spire.api.server.svid.v1.MintX509SVIDRequest {csr = 1; ttl = 2}, protobuf-encoded."""
    return _field(1, csr_der) + _int_field(2, ttl_s)


def mint_jwt_request(trust_domain: str, path: str, audience: str, ttl_s: int) -> bytes:
    """MintJWTSVIDRequest {id = 1 (SPIFFEID {trust_domain = 1; path = 2}); audience = 2; ttl = 3}."""
    spiffe_id = _field(1, trust_domain.encode()) + _field(2, path.encode())
    return _field(1, spiffe_id) + _field(2, audience.encode()) + _int_field(3, ttl_s)


def csr_for(spiffe_id: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bench")]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


@contextlib.contextmanager
def spire() -> Iterator[tuple[Any, str]]:
    """A real spire-server (rendered dev config); yields (its LocalServer, trust domain)."""
    from tests.support.spire_server import local_spire_server

    tmp = Path(tempfile.mkdtemp(prefix="ap-storm-spire-"))
    with local_spire_server(tmp) as server:
        conf = json.loads((tmp / "server.conf").read_text())
        yield server, conf["server"]["trust_domain"]


def spire_runs(clients: Sequence[int], count: int, deadline_s: float) -> list[Run]:
    import grpc  # type: ignore[import-untyped]

    runs: list[Run] = []
    with spire() as (server, td):
        channel = grpc.insecure_channel(f"unix://{server.socket}")
        x509_call = channel.unary_unary(f"{SPIRE_SVC}/MintX509SVID")
        jwt_call = channel.unary_unary(f"{SPIRE_SVC}/MintJWTSVID")
        csrs = [mint_x509_request(csr_for(f"spiffe://{td}/bench/w{i}"), 900) for i in range(64)]
        jwts = [mint_jwt_request(td, f"/bench/w{i}", "vault", 300) for i in range(64)]
        x509_call(csrs[0], timeout=30)  # warm: the CA and the JWT key are ready
        jwt_call(jwts[0], timeout=30)
        for n in clients:
            runs.append(drive("spire x509 mint", n, count, deadline_s,
                              lambda i: x509_call(csrs[i % len(csrs)], timeout=30)))
            print(runs[-1].line(), f"  [{load_average()}]", flush=True)
            runs.append(drive("spire jwt mint", n, count, deadline_s,
                              lambda i: jwt_call(jwts[i % len(jwts)], timeout=30)))
            print(runs[-1].line(), f"  [{load_average()}]", flush=True)
        channel.close()
    return runs


# --------------------------------------------------------------------------- OpenBao + PostgreSQL


@dataclass
class VaultBench:
    address: str
    root: str
    mount: str
    role: str
    creds_path: str
    spiffe_id: str
    audience: str
    issuer: str
    signer: Any
    pg: Any

    def _session(self) -> requests.Session:
        return requests.Session()

    def jwt(self) -> str:
        from tests.support.jwks import svid_claims

        return str(self.signer.token(svid_claims(self.issuer, self.spiffe_id, self.audience)))


@contextlib.contextmanager
def vault_chain() -> Iterator[VaultBench]:
    """PostgreSQL as docs/vault.md sets it up + OpenBao configured from the dev plan."""
    from components.render.vault import plan_vault
    from components.vault_apply import ApplySecrets, apply_plan
    from tests.support.bao import bao_dev_server
    from tests.support.chain import ADMIN_PASSWORD, ADMINS, CORTEX, TABLES, chain_platform
    from tests.support.jwks import Signer, jwks_server
    from tests.support.postgres import postgres_cluster, seed_dba_setup

    signer = Signer()
    tmp = Path(tempfile.mkdtemp(prefix="ap-storm-vault-"))
    with jwks_server(signer) as jwks, postgres_cluster("ap-storm-pg-") as pg, bao_dev_server() as bao:
        seed_dba_setup(pg, ADMINS, dict(TABLES), ADMIN_PASSWORD)
        platform = chain_platform(pg_port=pg.port, audit_file=tmp / "audit.log", jwks_url=jwks)
        plan = plan_vault(platform)
        root = bao.client()
        apply_plan(root, plan, ApplySecrets({"dbMainPassword": ADMIN_PASSWORD}))
        for q in plan.quotas:  # they would measure the quotas (per client IP), not the engines
            root.delete(f"sys/quotas/rate-limit/{q.name}")
        agent = next(a for a in plan.agents if a.agent == CORTEX)
        (role,) = agent.database_roles
        yield VaultBench(bao.address, bao.root_token, plan.auth_mount, agent.role, role.creds_path,
                         agent.spiffe_id, agent.audiences[0], plan.jwt_issuer, signer, pg)


def _ok(resp: requests.Response) -> dict[str, Any]:
    if resp.status_code >= 300:
        raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:160]}")
    return dict(resp.json()) if resp.content else {}


def catalog(pg: Any, db: str = "incidents") -> dict[str, tuple[int, int, int]]:
    """Catalog -> (bytes, live rows, dead rows) as PostgreSQL's statistics see them."""
    names = ", ".join(f"'{c}'" for c in CATALOGS)
    out = pg.run(f"SELECT relname, pg_total_relation_size(relid), n_live_tup, n_dead_tup "
                 f"FROM pg_stat_all_tables WHERE relname IN ({names}) AND schemaname = 'pg_catalog';", db=db)
    rows = [line.split("|") for line in out.stdout.split()]
    return {name: (int(size), int(live), int(dead)) for name, size, live, dead in rows}


def vault_runs(clients: Sequence[int], count: int, cycles: int, deadline_s: float) -> tuple[list[Run], list[str]]:
    runs: list[Run] = []
    notes: list[str] = []
    with vault_chain() as v:
        local = threading.local()

        def session() -> requests.Session:
            if not hasattr(local, "s"):
                local.s = requests.Session()
            return local.s  # type: ignore[no-any-return]

        def login_token() -> str:
            out = _ok(session().post(f"{v.address}/v1/auth/{v.mount}/login",
                                     json={"role": v.role, "jwt": v.jwt()}, timeout=30))
            return str(out["auth"]["client_token"])

        def login(_: int) -> None:
            login_token()

        token = login_token()
        leases: list[str] = []
        lease_lock = threading.Lock()

        def creds(_: int) -> None:
            out = _ok(session().get(f"{v.address}/v1/{v.creds_path}", headers={"X-Vault-Token": token}, timeout=30))
            with lease_lock:
                leases.append(out["lease_id"])

        def revoke(i: int) -> None:
            _ok(session().put(f"{v.address}/v1/sys/leases/revoke", headers={"X-Vault-Token": v.root},
                              json={"lease_id": leases[i]}, timeout=60))

        before = catalog(v.pg)
        for n in clients:
            for what, op in (("bao jwt login", login), ("bao db creds", creds)):
                runs.append(drive(what, n, count, deadline_s, op))
                print(runs[-1].line(), f"  [{load_average()}]", flush=True)
            batch = len(leases)
            runs.append(drive("bao db revoke", n, batch, deadline_s * 2, revoke))
            print(runs[-1].line(), f"  [{load_average()}]", flush=True)
            del leases[:batch]
        # the catalog cost: issue/revoke cycles, then what VACUUM takes back
        done_cycles = sum(r.done for r in runs if r.what == "bao db revoke")
        todo = max(0, cycles - done_cycles)
        n = max(clients)
        step = 2000
        conflicts = sum(r.failed for r in runs if r.what == "bao db creds")
        started = time.monotonic()
        while todo > 0 and time.monotonic() - started < deadline_s * 60:
            k = min(step, todo)
            issued = drive("bao db creds", n, k, deadline_s * 4, creds)
            gone = drive("bao db revoke", n, len(leases), deadline_s * 4, revoke)
            del leases[:]
            done_cycles += gone.done
            todo -= k
            conflicts += issued.failed
            print(f"  cycles so far {done_cycles} (issue {issued.per_s:.0f}/s, revoke {gone.per_s:.0f}/s, "
                  f"{issued.failed} issues failed{': ' + issued.errors[0] if issued.errors else ''})  "
                  f"[{load_average()}]", flush=True)
        after = catalog(v.pg)
        roles = v.pg.run("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-%';").stdout.strip()
        t0 = time.perf_counter()
        v.pg.run("VACUUM " + ", ".join(f"pg_catalog.{c}" for c in CATALOGS) + ";", db="incidents")
        vacuum_s = time.perf_counter() - t0
        vacuumed = catalog(v.pg)
        t0 = time.perf_counter()
        v.pg.run("VACUUM FULL pg_catalog.pg_authid, pg_catalog.pg_auth_members, pg_catalog.pg_shdepend;",
                 db="incidents")
        full_s = time.perf_counter() - t0
        full = catalog(v.pg)
        first = next((e for r in runs if r.what == "bao db creds" for e in r.errors), "")
        notes.append(f"{conflicts} credential issues failed{' (the first: ' + first + ')' if first else ''}")
        notes.append(f"catalog after {done_cycles} issue/revoke cycles ({roles} generated roles left); "
                     f"VACUUM {vacuum_s:.2f}s, VACUUM FULL (authid, auth_members, shdepend) {full_s:.2f}s")
        notes.append(f"{'catalog':<16} {'before':>18} {'after':>18} {'vacuumed':>18} {'full':>10}   (KiB, dead rows)")
        for c in CATALOGS:
            def cell(snap: dict[str, tuple[int, int, int]], c: str = c) -> str:
                size, _, dead = snap.get(c, (0, 0, 0))
                return f"{size // 1024:>8} KiB {dead:>6}d"
            notes.append(f"{c:<16} {cell(before):>18} {cell(after):>18} {cell(vacuumed):>18} "
                         f"{full.get(c, (0, 0, 0))[0] // 1024:>6} KiB")
    return runs, notes


# --------------------------------------------------------------------------- main


def best(runs: Sequence[Run], what: str) -> float:
    return max((r.per_s for r in runs if r.what == what), default=0.0)


def main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("spire", "vault"))
    p.add_argument("--clients", default="1,8,32", help="concurrent clients, comma-separated")
    p.add_argument("--count", type=int, default=2000, help="operations per run (bounded)")
    p.add_argument("--cycles", type=int, default=2000,
                   help="issue/revoke cycles before the catalog is measured (100000 for the long run)")
    p.add_argument("--deadline", type=float, default=60.0, help="seconds a run may take before it stops")
    args = p.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    print(f"# storm benchmark  {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC  [{load_average()}]")
    print(RUN_HEADER)
    runs: list[Run] = []
    notes: list[str] = []
    if args.only in (None, "spire"):
        runs += spire_runs(clients, args.count, args.deadline)
    if args.only in (None, "vault"):
        more, notes = vault_runs(clients, args.count, args.cycles, args.deadline)
        runs += more
    for r in runs:
        for e in r.errors:
            print(f"  {r.what} x{r.clients}: {e}")
    print()
    for line in notes:
        print(line)
    print()
    measured = {name: best(runs, what) for name, what in (
        ("x509 signings", "spire x509 mint"), ("jwt signings", "spire jwt mint"), ("jwt logins", "bao jwt login"),
        ("db creds", "bao db creds"), ("db revocations", "bao db revoke")) if best(runs, what)}
    for line in ratio_lines(measured):
        print(line)
    print(f"# end  [{load_average()}]")


if __name__ == "__main__":
    main(sys.argv[1:])
