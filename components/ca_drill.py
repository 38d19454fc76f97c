"""``passport ca drill``: the quarterly CA failover drill, on a throwaway SPIRE server.

It never touches the stack's real server. It starts ``spire-server`` from the stack's rendered
``server.conf`` on 127.0.0.1, adapted only where a laptop differs from the cluster (every path
under a temporary directory, free loopback ports, join_token instead of the cluster's node
attestors, no Kubernetes notifier, SQLite and a disk KeyManager instead of PostgreSQL or AWS KMS,
and no UpstreamAuthority: the drill exercises SPIRE's own authorities, an upstream CA is
rotated by hand as ``passport ca rotate --authority upstream`` prints). Then, timed:

0. with a ``spire-agent`` binary, an agent with the stack's rendered VM config attests by join
   token and serves a workload (this process) 30-second SVIDs;
1. an X.509-SVID and a JWT-SVID are minted under the authorities in place;
2. ``ca rotate --authority x509`` (prepare, propagate, activate; the overlap is not waited out,
   and the report says how long it is in production); a new X.509-SVID chains to the new one;
3. ``ca compromise`` on the old X.509 authority: taint, wait for the agent to re-sign, revoke; the
   workload's SVID is signed by the active authority, the bundle no longer holds the old one, the
   SVID from step 1 is refused by a peer holding the new bundle, the new one is accepted;
4. the same for the JWT key (rotate, compromise, the old JWT-SVID refused by the new JWKS).

The report (text on stdout, JSON with ``--report``) gives each step's result and duration,
the stack, the SPIRE version and the time; the command exits 1 when a step fails.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import platform as host
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from components.ca_lifecycle import CaError, Kind, jwt_key_id, jwt_trusted, stack_ttls, x509_trusted
from components.durations import format_duration
from components.platform_model import Platform

STARTUP_DEADLINE_S = 60.0
DRILL_PROPAGATION = timedelta(seconds=2)
"""The drill's wait between prepare and activate: no agent or consumer holds its bundle."""


NOT_EXERCISED = ["the overlap wait (production: the longest SVID TTL)",
                 "the upstream CA (rotated by hand: `passport ca rotate --authority upstream`)",
                 "Linkerd's anchors (`passport ca rotate --authority linkerd`)"]


NO_AGENT = "a workload re-signing after the taint (no spire-agent binary: --spire-agent-bin)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def throwaway_server_conf(platform: Platform, where: Path) -> dict[str, Any]:
    """The stack's rendered server.conf, adapted to run on 127.0.0.1 under ``where`` (see the
    module docstring for exactly what changes)."""
    from components.render import spire as r

    conf = copy.deepcopy(r.server_config(platform))
    server = conf["server"]
    server.update(bind_address="127.0.0.1", bind_port=str(free_port()), data_dir=str(where / "data"),
                  socket_path=str(where / "api.sock"), log_format="text")
    server.pop("federation", None)
    plugins = conf["plugins"]
    plugins["DataStore"] = [{"sql": {"plugin_data": {"database_type": "sqlite3",
                                                    "connection_string": str(where / "data" / "datastore.sqlite3")}}}]
    plugins["KeyManager"] = [{"disk": {"plugin_data": {"keys_path": str(where / "data" / "keys.json")}}}]
    plugins["NodeAttestor"] = [{"join_token": {"plugin_data": {}}}]
    plugins.pop("Notifier", None)
    plugins.pop("UpstreamAuthority", None)
    if "health_checks" in conf:
        conf["health_checks"].update(bind_address="127.0.0.1", bind_port=str(free_port()))
    if "telemetry" in conf:
        conf["telemetry"] = {"Prometheus": {"host": "127.0.0.1", "port": free_port()}}
    return conf


@dataclass
class DrillStep:
    """One timed step of the drill, for the report an auditor files."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class Throwaway:
    """A running throwaway spire-server."""

    binary: str
    socket: Path
    conf: dict[str, Any]
    log: Path
    proc: subprocess.Popen[bytes]

    def cli(self, *args: str) -> str:
        done = subprocess.run([self.binary, *args, "-socketPath", str(self.socket)], capture_output=True, text=True,
                              timeout=60, check=False)
        if done.returncode != 0:
            raise CaError(f"spire-server {' '.join(args[:2])}: {(done.stderr or done.stdout).strip()}")
        return done.stdout


@contextlib.contextmanager
def throwaway_server(platform: Platform, binary: str, where: Path,
                     adapt: Callable[[dict[str, Any]], None] | None = None) -> Iterator[Throwaway]:
    """``spire-server run`` with :func:`throwaway_server_conf`, healthy, always stopped on exit."""
    where.mkdir(parents=True, exist_ok=True)
    conf = throwaway_server_conf(platform, where)
    if adapt is not None:
        adapt(conf)
    path = where / "server.conf"
    path.write_text(json.dumps(conf))
    log = where / "server.log"
    sock = Path(conf["server"]["socket_path"])
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "run", "-config", str(path)], stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + STARTUP_DEADLINE_S
            while True:
                health = subprocess.run([binary, "healthcheck", "-socketPath", str(sock)], capture_output=True,
                                        timeout=30, check=False)
                if health.returncode == 0:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise CaError(f"the throwaway spire-server did not become healthy: "
                                  f"{log.read_text(errors='replace')[-800:]}")
                time.sleep(0.5)
            yield Throwaway(binary, sock, conf, log, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@dataclass
class ThrowawayAgent:
    """A running spire-agent attested to a throwaway server, and its Workload API socket."""

    binary: str
    socket: Path
    spiffe_id: str

    def x509(self, where: Path) -> str:
        """The workload's current X.509-SVID (PEM chain), fetched over the Workload API."""
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([self.binary, "api", "fetch", "x509", "-write", str(where), "-socketPath",
                               str(self.socket)], capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise CaError(f"spire-agent api fetch x509: {(done.stderr or done.stdout).strip()}")
        return (where / "svid.0.pem").read_text()


@contextlib.contextmanager
def throwaway_agent(platform: Platform, server: Throwaway, binary: str, where: Path, workload_path: str,
                    svid_ttl_s: int, deadline_s: float = 90.0) -> Iterator[ThrowawayAgent]:
    """The stack's rendered VM agent config (join token), attested to ``server`` on 127.0.0.1, with
    one entry for processes of this user (``unix:uid``) and ``svid_ttl_s`` SVIDs; always stopped.
    Adapted: paths under ``where``, the server's loopback port, the join token on the command
    line, the server's current bundle as the bootstrap bundle."""
    import os

    from components.render import spire as r

    conf = r.host_agent_config(platform, "vm-join_token")
    agent = conf["agent"]
    agent.pop("join_token_file", None)
    where.mkdir(parents=True, exist_ok=True)
    (where / "bundle.pem").write_text(server.cli("bundle", "show"))
    agent.update(data_dir=str(where / "data"), server_address="127.0.0.1",
                 server_port=server.conf["server"]["bind_port"], trust_bundle_path=str(where / "bundle.pem"),
                 socket_path=str(where / "agent.sock"), log_format="text")
    for plugin in conf["plugins"].get("KeyManager", []):
        if "disk" in plugin:
            plugin["disk"]["plugin_data"]["directory"] = str(where / "data")
    (where / "agent.conf").write_text(json.dumps(conf))
    td = platform.config.trust_domain
    node_id, workload_id = f"spiffe://{td}/passport-ca-drill/node", f"spiffe://{td}{workload_path}"
    token = server.cli("token", "generate", "-spiffeID", node_id).split()[-1]
    server.cli("entry", "create", "-parentID", node_id, "-spiffeID", workload_id, "-x509SVIDTTL", str(svid_ttl_s),
               "-jwtSVIDTTL", str(svid_ttl_s), "-selector", f"unix:uid:{os.getuid()}")
    log = where / "agent.log"
    handle = ThrowawayAgent(binary, where / "agent.sock", workload_id)
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "run", "-config", str(where / "agent.conf"), "-joinToken", token],
                                stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + deadline_s
            while True:
                try:
                    handle.x509(where / "probe")
                    break
                except CaError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise CaError("the throwaway spire-agent served no SVID: "
                                      f"{log.read_text(errors='replace')[-800:]}") from None
                    time.sleep(0.5)
            yield handle
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def authority_key_id(svid_pem: str) -> str:
    """The ID of the authority that signed an X.509-SVID (its leaf's authority key identifier)."""
    from cryptography import x509

    leaf = x509.load_pem_x509_certificates(svid_pem.encode())[0]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    return aki.hex() if aki else ""


def _version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "?"


DRILL_SVID_TTL_S = 30
"""The throwaway workload's SVID TTL: its agent renews within seconds."""


def drill(platform: Platform, out: TextIO, *, binary: str, agent_binary: str | None = None,
          report: Path | None = None, workdir: Path | None = None) -> int:
    """Run the drill; print the report; 0 if every step passed, 1 otherwise."""
    from components.ca_runner import Clock, SpireAdmin, compromise, rotate

    if not platform.config.subsystems.spire:
        raise CaError(f"stack {platform.stack} has no SPIRE (subsystems.spire is false): nothing to drill")
    started = datetime.now(UTC)
    steps: list[DrillStep] = []
    tmp = Path(tempfile.mkdtemp(prefix="passport-ca-drill-", dir=workdir))
    ttls = stack_ttls(platform)
    log = io.StringIO()
    workload = f"spiffe://{platform.config.trust_domain}/passport-ca-drill/workload"

    def step(name: str, action: Callable[[], str]) -> bool:
        t0 = time.monotonic()
        try:
            detail, ok = action(), True
        except (CaError, AssertionError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
        steps.append(DrillStep(name, ok, round(time.monotonic() - t0, 3), detail))
        return ok

    t_start = time.monotonic()
    expected = ["start throwaway spire-server"]
    try:
        with contextlib.ExitStack() as stack:
            server = stack.enter_context(throwaway_server(platform, binary, tmp / "server"))
            steps.append(DrillStep(expected[0], True, round(time.monotonic() - t_start, 3),
                                   f"{_version(binary)} on 127.0.0.1:{server.conf['server']['bind_port']}"))
            admin = SpireAdmin(binary, str(server.socket))
            clock = Clock()
            svids: dict[str, str] = {}
            agents: list[ThrowawayAgent] = []

            def start_agent() -> str:
                assert agent_binary is not None
                agents.append(stack.enter_context(throwaway_agent(
                    platform, server, agent_binary, tmp / "agent", "/passport-ca-drill/agent-workload",
                    DRILL_SVID_TTL_S)))
                signer = authority_key_id(agents[0].x509(tmp / "w0"))
                active = admin.state().slot("x509", "active")
                assert active is not None and signer == active.id, "the workload's SVID is signed by the active one"
                return f"the stack's VM agent config, attested by join token; {agents[0].spiffe_id} under {signer}"

            def workload_resigned() -> str:
                active = admin.state().slot("x509", "active")
                assert active is not None
                deadline = time.monotonic() + 2 * DRILL_SVID_TTL_S
                while authority_key_id(agents[0].x509(tmp / "w1")) != active.id:
                    assert time.monotonic() < deadline, f"the workload still holds an SVID of the revoked authority " \
                        f"after {2 * DRILL_SVID_TTL_S}s"
                    time.sleep(0.5)
                return f"the workload's SVID is signed by {active.id}"

            def mint_x509(label: str) -> str:
                where = tmp / label
                where.mkdir()
                server.cli("x509", "mint", "-spiffeID", workload, "-ttl", "600s", "-write", str(where))
                svids[label] = (where / "svid.pem").read_text()
                return f"X.509-SVID for {workload}"

            def mint_jwt(label: str) -> str:
                svids[label] = server.cli("jwt", "mint", "-spiffeID", workload, "-audience", "drill",
                                          "-ttl", "300s").strip()
                return f"JWT-SVID signed by key {jwt_key_id(svids[label])}"

            def old_of(kind: Kind) -> str:
                old = admin.state().slot(kind, "old")
                if old is None:
                    raise CaError(f"no old {kind} authority after the rotation")
                return old.id

            def rotate_kind(kind: Kind) -> str:
                before = admin.state().slot(kind, "active")
                rotate(platform, admin, kind, log, state_dir=tmp / "journal",
                       propagation=DRILL_PROPAGATION, overlap=timedelta(0), clock=clock)
                after = admin.state().slot(kind, "active")
                assert before is not None and after is not None and before.id != after.id, "the active one changed"
                return (f"{before.id} -> {after.id}; production keeps {before.id} for the overlap, "
                        f"{format_duration(int((ttls.x509 if kind == 'x509' else ttls.jwt).total_seconds()))}")

            def compromise_kind(kind: Kind) -> str:
                target = old_of(kind)
                mark = len(log.getvalue())
                compromise(platform, admin, target, log, yes=True, resign_timeout=timedelta(seconds=60),
                           jwt_sync_wait=timedelta(seconds=1), state_dir=tmp / "journal", clock=clock)
                svids[f"revoked-{kind}"] = target
                resigned = [x.split(None, 1)[1] for x in log.getvalue()[mark:].splitlines()
                            if x.startswith(("resigned", "WARNING"))]
                return f"{target} tainted and revoked" + (f"; {resigned[0]}" if resigned else "")

            def check_x509() -> str:
                st = admin.state()
                gone = st.find(svids["revoked-x509"])
                assert gone is None or not gone.in_bundle, "the revoked authority is gone from the bundle"
                assert not x509_trusted(svids["x509-before"], st.x509_roots_pem), "the old SVID is refused"
                assert x509_trusted(svids["x509-after"], st.x509_roots_pem), "the new SVID is accepted"
                return "a peer with the new bundle refuses the SVID of the revoked authority and accepts the new one"

            def check_jwt() -> str:
                keys = admin.state().jwt_keys
                assert not jwt_trusted(svids["jwt-before"], keys), "the old JWT-SVID is refused"
                assert jwt_trusted(svids["jwt-after"], keys), "the new JWT-SVID is accepted"
                return "the new JWKS refuses the JWT-SVID signed by the revoked key and accepts the new one"

            plan: list[tuple[str, Callable[[], str]]] = []
            if agent_binary is not None:
                plan.append(("start throwaway spire-agent", start_agent))
            plan += [("mint X.509-SVID (before)", lambda: mint_x509("x509-before")),
                     ("mint JWT-SVID (before)", lambda: mint_jwt("jwt-before")),
                     ("rotate x509", lambda: rotate_kind("x509")),
                     ("mint X.509-SVID (after)", lambda: mint_x509("x509-after")),
                     ("compromise old x509", lambda: compromise_kind("x509"))]
            if agent_binary is not None:
                plan.append(("workload re-signed under the active authority", workload_resigned))
            plan += [("peer refuses the revoked X.509 authority", check_x509),
                     ("rotate jwt", lambda: rotate_kind("jwt")),
                     ("mint JWT-SVID (after)", lambda: mint_jwt("jwt-after")),
                     ("compromise old jwt", lambda: compromise_kind("jwt")),
                     ("JWKS refuses the revoked JWT key", check_jwt)]
            expected += [name for name, _ in plan]
            for name, action in plan:
                if not step(name, action):
                    break
    except CaError as exc:
        if not steps:
            steps.append(DrillStep(expected[0], False, round(time.monotonic() - t_start, 3), str(exc)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    passed = [x.name for x in steps] == expected and all(x.ok for x in steps)
    doc = {
        "drill": "passport ca drill", "stack": platform.stack, "trust_domain": platform.config.trust_domain,
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "host": host.node(),
        "result": "PASS" if passed else "FAIL",
        "total_seconds": round(sum(s.seconds for s in steps), 3),
        "steps": [asdict(s) for s in steps],
        "not_exercised": NOT_EXERCISED + ([] if agent_binary else [NO_AGENT]),
        "log": log.getvalue().splitlines(),
    }
    out.write(f"CA drill, stack {platform.stack} ({platform.config.trust_domain}), {doc['started_at']}\n")
    for s in steps:
        out.write(f"  {'PASS' if s.ok else 'FAIL'}  {s.seconds:7.2f}s  {s.name}: {s.detail}\n")
    out.write(f"result: {doc['result']} in {doc['total_seconds']:.2f}s\n")
    out.write("not exercised: " + "; ".join(NOT_EXERCISED + ([] if agent_binary else [NO_AGENT])) + "\n")
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(doc, indent=2) + "\n")
        out.write(f"report written to {report}\n")
    return 0 if passed else 1
