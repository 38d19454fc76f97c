"""End to end on 127.0.0.1: VM agents outside the mesh call a protected service through their
rendered Envoy egress proxies.

Real engines: a spire-server and one spire-agent per VM (join-token attestation stands in for the
VMs' node attestation; unix workload attestor), the rendered SPIRE registrations created with
``spire-server entry create``; real Envoy as both egress proxies (the rendered bootstraps, only
the SPIRE agent's socket path moved, and the second VM's listener port, since both "VMs" share
this host) and the gateway (the rendered bootstrap as in tests/e2e/test_authz_e2e.py, with its
own certificate as files from the CA SPIRE uses as its upstream); real OPA deciding each request
(through the ext_authz stand-in of test_authz_e2e, which asks ``opa eval``).

The stack's ``authz.egressGatewayHost`` is set to ``127.0.0.1`` and its ports to free ones, so the
egress bootstraps point at the local gateway as rendered.

Who holds the identity: each agent's manifest selects the agent's own process by a uid nothing
here runs as, and names the proxy's uid (``egressProxyUid``), so SPIRE hands the SVID to the proxy
only through the rendered ``proxy.<agent>`` registration. When the tests run as root the proxies
(and the SVID checks) run as ``nobody``, in a world-traversable folder; otherwise as the
test's own uid.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from components.config import load_stack_config
from components.manifest.loader import load_manifests
from components.platform_model import Platform, build_platform
from components.render.egress import compile_egress, connection_lifetime_s
from components.render.spire.registrations import registration_objects
from components.render.yamlout import dump_yaml
from tests.conftest import ROOT
from tests.e2e.test_authz_e2e import Backend, Gateway, Pki, call, running, spire_binaries, wait_for_tls
from tests.policy.test_rego_policy import opa
from tests.support.processes import stop
from tests.support.tools import free_port, wait_until
from tests.unit.test_envoy_config import envoy_binary

pytestmark = pytest.mark.e2e

AGENT_UID = 4242
"""The agents' own processes (not run here): nothing in the test may get an SVID through them."""
PROXY_UID = 65534 if os.getuid() == 0 else os.getuid()
"""The egress proxies' uid: ``nobody`` under root (a proxy never runs as root), else ours."""
AS_PROXY: dict[str, Any] = {"user": PROXY_UID} if os.getuid() == 0 else {}

SVID_TTL_S = 30
"""The VM agents' X.509-SVID lifetime: short, so the fail-closed check waits for an expiry."""

HEADER = "apiVersion: passport.agentpassport.dev/v1alpha1\n"
MANIFESTS = HEADER + """kind: Service
metadata: {name: orders, team: shop}
spec: {namespace: shop, port: 8080, podSelector: {app: orders}}
---
""" + HEADER + """kind: Agent
metadata: {name: vm-buyer, team: shop, owner: o@example.net}
spec:
  identity: {x509SvidTtl: %(ttl)ss}
  platform:
    vm: {attestation: join_token, workloadSelectors: ['unix:uid:%(uid)s'], egressProxyUid: %(proxy)s}
  grants:
    - http: {service: orders, methods: [GET], paths: [{prefix: /orders}]}
---
""" + HEADER + """kind: Agent
metadata: {name: vm-clerk, team: shop, owner: o@example.net}
spec:
  identity: {x509SvidTtl: %(ttl)ss}
  platform:
    vm: {attestation: join_token, workloadSelectors: ['unix:uid:%(uid)s'], egressProxyUid: %(proxy)s}
  grants:
    - http: {service: orders, methods: [GET], paths: [{exact: /status}]}
"""


def fleet_platform(where: Path, gateway_port: int, egress_port: int) -> Platform:
    where.mkdir(parents=True, exist_ok=True)
    values = {"ttl": SVID_TTL_S, "uid": AGENT_UID, "proxy": PROXY_UID}
    (where / "fleet.yaml").write_text(MANIFESTS % values, encoding="utf-8")
    cfg = load_stack_config("dev", ROOT)
    authz = cfg.authz.model_copy(update={"egress_gateway_host": "127.0.0.1", "gateway_port": gateway_port,
                                         "egress_port": egress_port})
    cfg = cfg.model_copy(update={"authz": authz})
    return build_platform(cfg, load_manifests([where]), "dev", "stacks/Pulumi.dev.yaml")


def _tool(binary: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False, **kw)


def fetch_as_proxy(agent_bin: str, sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``spire-agent api fetch x509`` as the proxy's uid: what SPIRE would hand the proxy.
    (Under root, ``agent_bin`` must be a copy the proxy's uid can run: see ``shared_dir``.)"""
    return _tool(agent_bin, "api", "fetch", "x509", "-socketPath", str(sock), *args, **AS_PROXY)


def server_conf(spire: Path, td: str, pki: Pki, port: int) -> str:
    return f"""
server {{
  bind_address = "127.0.0.1"
  bind_port = "{port}"
  socket_path = "{spire / 'server.sock'}"
  trust_domain = "{td}"
  data_dir = "{spire}/server-data"
  log_level = "WARN"
  ca_ttl = "24h"
}}
plugins {{
  DataStore "sql" {{
    plugin_data {{
      database_type = "sqlite3"
      connection_string = "{spire}/datastore.sqlite3"
    }}
  }}
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "memory" {{
    plugin_data {{}}
  }}
  UpstreamAuthority "disk" {{
    plugin_data {{
      key_file_path = "{pki.where / 'ca-key.pem'}"
      cert_file_path = "{pki.where / 'ca.pem'}"
    }}
  }}
}}
"""


def agent_conf(vm: Path, td: str, server_port: int) -> str:
    return f"""
agent {{
  data_dir = "{vm}/data"
  log_level = "WARN"
  server_address = "127.0.0.1"
  server_port = "{server_port}"
  socket_path = "{vm / 'agent.sock'}"
  trust_domain = "{td}"
  insecure_bootstrap = true
}}
plugins {{
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "memory" {{
    plugin_data {{}}
  }}
  WorkloadAttestor "unix" {{
    plugin_data {{}}
  }}
}}
"""


def create_rendered_entries(server_bin: str, sock: Path, platform: Platform, agent: str) -> str:
    """The agent's rendered ClusterStaticEntry objects, created as SPIRE entries; returns a join token
    for its node alias (``spire-server token generate -spiffeID <alias>``, docs/spire.md)."""
    specs = [o["spec"] for o in registration_objects(platform)
             if o["kind"] == "ClusterStaticEntry" and o["metadata"]["labels"].get("agentpassport.dev/agent") == agent]
    assert specs, agent
    token = _tool(server_bin, "token", "generate", "-socketPath", str(sock), "-spiffeID", specs[0]["parentID"])
    assert token.returncode == 0, token.stderr
    for spec in specs:
        ttl = spec["x509SVIDTTL"]
        assert ttl == f"{SVID_TTL_S}s"
        args = ["entry", "create", "-socketPath", str(sock), "-parentID", spec["parentID"],
                "-spiffeID", spec["spiffeID"], "-x509SVIDTTL", str(SVID_TTL_S)]
        for selector in spec["selectors"]:
            args += ["-selector", selector]
        created = _tool(server_bin, *args)
        assert created.returncode == 0, created.stdout + created.stderr
    return token.stdout.split()[-1]


def svid_not_after(agent_bin: str, sock: Path, spiffe_id: str, where: Path) -> dt.datetime:
    """Expiry of the SVID the SPIRE agent holds for us now (``spire-agent api fetch x509 -write``)."""
    where.mkdir(parents=True, exist_ok=True)
    where.chmod(0o777)
    out = fetch_as_proxy(agent_bin, sock, "-write", str(where))
    assert out.returncode == 0 and spiffe_id in out.stdout, out.stdout + out.stderr
    certs = x509.load_pem_x509_certificates((where / "svid.0.pem").read_bytes())
    return certs[0].not_valid_after_utc


@contextlib.contextmanager
def egress_proxy(platform: Platform, agent: str, socket: Path, port: int, where: Path) -> Iterator[Path]:
    """Envoy running the agent's rendered egress bootstrap; only the socket path (and port) moved."""
    cfg: dict[str, Any] = yaml.safe_load(dump_yaml(compile_egress(platform).bootstrap(agent)))
    (listener,) = cfg["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["address"] == "127.0.0.1"
    listener["address"]["socket_address"]["port_value"] = port
    spire = cfg["static_resources"]["clusters"][0]
    endpoint = spire["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert spire["name"] == "spire_agent"
    assert endpoint["address"] == {"pipe": {"path": "/run/spire/agent-sockets/spire-agent.sock"}}
    endpoint["address"] = {"pipe": {"path": str(socket)}}
    path = where / f"egress-{agent}.yaml"
    path.write_text(dump_yaml(cfg), encoding="utf-8")
    log = where / f"egress-{agent}.log"
    path.chmod(0o644)
    argv = [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--log-level", "warn"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **AS_PROXY)
        try:
            wait_for_tls(port, proc, deadline_s=60)
            yield log
        finally:
            stop(proc)


def plain_call(port: int, service: str, path: str) -> tuple[int, bytes]:
    """What the agent's own code does: plain HTTP to its loopback proxy, Host naming the service."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers={"Host": service})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def json_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines() if x.startswith("{")]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the proxies' uid can reach (pytest's own are private to the test's user)."""
    where = Path(tempfile.mkdtemp(prefix="agentpassport-egress-"))
    where.chmod(0o755)
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_vm_agents_call_through_their_egress_proxies_and_fail_closed_without_spire(
        tmp_path: Path, shared_dir: Path) -> None:
    envoy_binary(), opa()
    server_bin, agent_bin = spire_binaries()
    fetch_bin = agent_bin
    if AS_PROXY:  # the tools' cache is in root's home, which the proxy's uid cannot enter
        fetch_bin = str(shutil.copy(agent_bin, shared_dir / "spire-agent"))
        Path(fetch_bin).chmod(0o755)
    gateway_port, buyer_port, clerk_port = free_port(), free_port(), free_port()
    platform = fleet_platform(tmp_path / "manifests", gateway_port, buyer_port)
    td = platform.config.trust_domain
    buyer_id, clerk_id = f"spiffe://{td}/vm/vm-buyer", f"spiffe://{td}/vm/vm-clerk"
    gateway_id = f"spiffe://{td}/ns/shop/sa/gw-orders"
    (tmp_path / "pki").mkdir()
    pki = Pki(tmp_path / "pki")  # SPIRE's upstream CA; the gateway's certificate comes from it too
    gw = Gateway(tmp_path, platform, "orders", pki)
    gw.ports["gateway"] = gateway_port  # where the rendered egress bootstraps point
    spire = tmp_path / "spire"
    spire.mkdir()
    server_port = free_port()
    sock = spire / "server.sock"
    (spire / "server.conf").write_text(server_conf(spire, td, pki, server_port), encoding="utf-8")
    vms = {name: shared_dir / name for name in ("vm-buyer", "vm-clerk")}
    with running([server_bin, "run", "-config", str(spire / "server.conf")], spire / "server.log") as server:
        wait_until(lambda: server.poll() is None and _tool(
            server_bin, "healthcheck", "-socketPath", str(sock)).returncode == 0, 90, "spire-server")
        agents: dict[str, subprocess.Popen[bytes]] = {}
        with contextlib.ExitStack() as stack:
            for name, vm in vms.items():
                vm.mkdir(mode=0o755)
                token = create_rendered_entries(server_bin, sock, platform, name)
                (vm / "agent.conf").write_text(agent_conf(vm, td, server_port), encoding="utf-8")
                agents[name] = stack.enter_context(running(
                    [agent_bin, "run", "-config", str(vm / "agent.conf"), "-joinToken", token], vm / "agent.log"))
            for name, sid in (("vm-buyer", buyer_id), ("vm-clerk", clerk_id)):
                wait_until(lambda n=name, s=sid: agents[n].poll() is None and s in fetch_as_proxy(  # type: ignore[misc]
                    fetch_bin, vms[n] / "agent.sock").stdout, 90, f"{name}'s SVID, as its proxy's uid")
                # Only the proxy's uid gets it: the test's own uid (root or not the proxy) gets nothing.
                if AS_PROXY:
                    assert sid not in _tool(agent_bin, "api", "fetch", "x509", "-socketPath",
                                            str(vms[name] / "agent.sock")).stdout
            stack.enter_context(gw.run())
            buyer_log = stack.enter_context(egress_proxy(platform, "vm-buyer", vms["vm-buyer"] / "agent.sock",
                                                         buyer_port, shared_dir))
            clerk_log = stack.enter_context(egress_proxy(platform, "vm-clerk", vms["vm-clerk"] / "agent.sock",
                                                         clerk_port, shared_dir))

            # 1. The buyer's own code: plain HTTP on loopback; it reaches the service as its SPIFFE ID.
            wait_until(lambda: plain_call(buyer_port, "orders", "/orders/17")[0] == 200, 60,
                       "the buyer's first call through its egress proxy")
            status, body = plain_call(buyer_port, "orders", "/orders/18?page=2")
            assert (status, json.loads(body)) == (200, {"path": "/orders/18?page=2"})
            upstream = Backend.seen[-1]
            assert upstream["x-agentpassport-agent"] == "vm-buyer"
            assert f"URI={buyer_id}" in upstream["x-forwarded-client-cert"]
            assert gw.authz.inputs[-1]["attributes"]["source"]["principal"] == buyer_id

            # 2. Outside its grants: the gateway's OPA denies with 403 (the reason is logged there).
            seen = len(Backend.seen)
            assert plain_call(buyer_port, "orders", "/admin") == (403, b"forbidden by Agent Passport policy\n")
            # A Host it holds no grant on never leaves the machine.
            asked = len(gw.authz.inputs)
            status, body = plain_call(buyer_port, "payments", "/orders/1")
            assert status == 404 and b"no grant of this agent" in body
            assert len(gw.authz.inputs) == asked

            # 3. The second VM agent, without that grant, is denied; its own grant works.
            assert plain_call(clerk_port, "orders", "/orders/17") == (403, b"forbidden by Agent Passport policy\n")
            assert gw.authz.inputs[-1]["attributes"]["source"]["principal"] == clerk_id
            assert len(Backend.seen) == seen
            assert plain_call(clerk_port, "orders", "/status")[0] == 200
            assert Backend.seen[-1]["x-agentpassport-agent"] == "vm-clerk"

            # 4. The buyer's SPIRE agent stops: its proxy keeps the last SVID until it expires, then
            # every new connection to the gateway fails the handshake (no fallback, no plain text).
            expiry = svid_not_after(fetch_bin, vms["vm-buyer"] / "agent.sock", buyer_id, shared_dir / "svid")
            stop(agents["vm-buyer"])
            lifetime = connection_lifetime_s(next(p for p in compile_egress(platform).proxies if p.name == "vm-buyer"))
            assert lifetime == SVID_TTL_S // 2
            wait_until(lambda: dt.datetime.now(dt.UTC) > expiry + dt.timedelta(seconds=1),
                       SVID_TTL_S + 5, "the buyer's last SVID to expire")
            # The gateway refuses that SVID now (the proxy must not get around it: no TLS session
            # resumption, which would skip the check of the client certificate).
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
                call(gateway_port, pki, (shared_dir / "svid" / "svid.0.pem", shared_dir / "svid" / "svid.0.key"),
                     "/orders/1")
            seen_statuses: list[int] = []
            deadline = time.monotonic() + lifetime + 30
            while not seen_statuses or seen_statuses[-1] != 503:
                assert time.monotonic() < deadline, (
                    f"no 503 after the SVID expired ({expiry}); statuses: {seen_statuses}; egress log: "
                    f"{buyer_log.read_text(encoding='utf-8')[-3000:]}")
                seen_statuses.append(plain_call(buyer_port, "orders", "/orders/19")[0])
                time.sleep(0.5)
            assert set(seen_statuses) <= {200, 503}, seen_statuses  # the old connection, then none
            seen = len(Backend.seen)
            for _ in range(3):
                status, _ = plain_call(buyer_port, "orders", "/orders/20")
                assert status == 503
            assert len(Backend.seen) == seen, "a request rode an expired SVID to the service"
            # The gateway is fine: the clerk, whose SPIRE agent runs, still gets through.
            assert plain_call(clerk_port, "orders", "/status")[0] == 200
    # After exit, the logs are flushed: the gateway logged OPA's reasons, the proxies their calls.
    reasons = [(x["spiffe_id"], x["authz_reason"]) for x in gw.access_log()]
    assert (buyer_id, "allowed: GET /orders/18 granted to agent vm-buyer by spec.grants[0]") in reasons
    assert any(s == buyer_id and r.startswith("denied: no grant of agent vm-buyer on service orders matches")
               and "path /admin not granted" in r for s, r in reasons), reasons
    assert any(s == clerk_id and r.startswith("denied: no grant of agent vm-clerk on service orders matches")
               for s, r in reasons), reasons
    buyer_lines = json_lines(buyer_log)
    assert any(x["host"] == "payments" and x["status"] == 404 for x in buyer_lines)
    assert [x["gateway_spiffe_id"] for x in buyer_lines if x["status"] == 200][:1] == [gateway_id]
    failed = [x for x in buyer_lines if x["status"] == 503]
    assert failed and all("UF" in x["flags"] for x in failed), failed
    assert json_lines(clerk_log)[-1]["status"] == 200


# --------------------------------------------------------------------------- no TLS session resumption


def short_lived_leaf(pki: Pki, name: str, spiffe_id: str, seconds: int) -> tuple[Path, Path]:
    """An SVID-shaped client certificate from ``pki``'s CA that expires in ``seconds``."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(pki.ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(seconds=seconds))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
        .sign(pki.ca_key, hashes.SHA256())
    )
    cert_path, key_path = pki.where / f"{name}.pem", pki.where / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def raw_call(ctx: ssl.SSLContext, port: int, session: ssl.SSLSession | None) -> tuple[int, ssl.SSLSession | None, bool]:
    """One HTTP/1.1 request over TLS, offering ``session`` for resumption: (status, session, reused)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw, \
            ctx.wrap_socket(raw, session=session) as tls:
        tls.sendall(b"GET /orders/1 HTTP/1.1\r\nHost: orders\r\nx-tenant: acme\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        return int(data.split(b" ", 2)[1]), tls.session, tls.session_reused


def test_the_gateway_resumes_no_tls_session_so_an_expired_svid_cannot_reconnect(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed session skips the check of the client certificate. The rendered gateway refuses
    resumption; the same gateway with resumption allowed lets the expired certificate back in
    (so this test can fail)."""
    from tests.e2e import test_authz_e2e
    from tests.policy.test_rego_policy import synthetic_platform

    envoy_binary(), opa()
    platform = synthetic_platform(tmp_path / "manifests")
    buyer_id = f"spiffe://{platform.config.trust_domain}/ns/agents/sa/buyer"
    (tmp_path / "pki").mkdir()
    pki = Pki(tmp_path / "pki")
    rendered = test_authz_e2e.local_bootstrap

    def resumable(*args: Any, **kw: Any) -> dict[str, Any]:
        cfg = rendered(*args, **kw)
        tls = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
        assert tls.pop("disable_stateless_session_resumption") is True
        assert tls.pop("disable_stateful_session_resumption") is True
        return cfg

    outcomes: dict[str, object] = {}
    for variant in ("rendered", "resumable"):
        if variant == "resumable":
            monkeypatch.setattr(test_authz_e2e, "local_bootstrap", resumable)
        where = tmp_path / variant
        where.mkdir()
        gw = Gateway(where, platform, "orders", pki)
        client = short_lived_leaf(pki, f"buyer-{variant}", buyer_id, seconds=4)
        expiry = x509.load_pem_x509_certificate(client[0].read_bytes()).not_valid_after_utc
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(str(pki.where / "ca.pem"))
        ctx.load_cert_chain(str(client[0]), str(client[1]))
        with gw.run():
            status, session, _ = raw_call(ctx, gw.ports["gateway"], None)
            assert status == 200 and session is not None
            wait_until(lambda e=expiry: dt.datetime.now(dt.UTC) > e + dt.timedelta(seconds=1), 30,  # type: ignore[misc]
                       "the client certificate to expire")
            try:
                outcomes[variant] = raw_call(ctx, gw.ports["gateway"], session)
            except (ssl.SSLError, ConnectionError, OSError, IndexError, ValueError) as exc:
                outcomes[variant] = type(exc).__name__
    # The rendered gateway: a full handshake, and the expired certificate is refused.
    assert not isinstance(outcomes["rendered"], tuple), outcomes
    # The mutant: the session is resumed and the expired certificate gets a 200.
    assert outcomes["resumable"][0] == 200 and outcomes["resumable"][2] is True, outcomes  # type: ignore[index]
