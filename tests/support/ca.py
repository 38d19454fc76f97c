"""CA-lifecycle e2e harness: a throwaway spire-server from a stack's rendered config
(:func:`components.ca_drill.throwaway_server`, the drill's own), a spire-agent attested to it
with a join token, and a TLS peer that trusts exactly a given bundle.

The agent is the drill's too (:func:`components.ca_drill.throwaway_agent`): the stack's rendered
VM agent config (``vm-join_token``), adapted as tests/support/chain.py adapts it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from components.ca_drill import Throwaway, throwaway_agent, throwaway_server
from components.platform_model import Platform
from tests.support.chain import Workload
from tests.support.processes import stop
from tests.support.tools import require_tool, wait_until


@contextlib.contextmanager
def local_server(platform: Platform) -> Iterator[Throwaway]:
    binary = require_tool("spire-server")
    tmp = Path(tempfile.mkdtemp(prefix="ap-ca-server-"))
    try:
        with throwaway_server(platform, str(binary), tmp) as server:
            yield server
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def join_token_agent(server: Throwaway, platform: Platform, workload_path: str, svid_ttl_s: int) -> Iterator[Workload]:
    """A spire-agent attested to ``server`` (the drill's :func:`components.ca_drill.throwaway_agent`)
    and one entry for this process (``unix:uid``) with short SVID TTLs, so that the workload's
    next SVID comes within seconds."""
    binary = require_tool("spire-agent")
    tmp = Path(tempfile.mkdtemp(prefix="ap-ca-agent-"))
    try:
        with throwaway_agent(platform, server, str(binary), tmp, workload_path, svid_ttl_s) as agent:
            yield Workload(binary, agent.socket)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def issuer_key_id(svid_pem: str) -> str:
    """The authority key ID of an X.509-SVID's leaf: the ID of the authority that signed it."""
    leaf = x509.load_pem_x509_certificates(svid_pem.encode())[0]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    return aki.key_identifier.hex()


def tls_peer_accepts(bundle_pems: list[str], server_cert: tuple[str, str], client_cert: tuple[str, str],
                     where: Path) -> bool:
    """One mutual-TLS handshake on 127.0.0.1 against a server (OpenSSL, through Python's ssl)
    that requires a client certificate chaining to exactly ``bundle_pems``: whether it accepted
    the client's (cert chain file, key file)."""
    where.mkdir(parents=True, exist_ok=True)
    ca = where / "peer-bundle.pem"
    ca.write_text("".join(bundle_pems))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*server_cert)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cafile=str(ca))
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE  # what is tested is the server's decision about the client
    client_ctx.load_cert_chain(*client_cert)
    result: dict[str, bool] = {}
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(20)

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(20)
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)  # with TLS 1.3 the client certificate is checked here
                result["ok"] = True
        except (ssl.SSLError, OSError):
            result["ok"] = False

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=20) as raw:
            try:
                with client_ctx.wrap_socket(raw) as tls:
                    tls.sendall(b"x")
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass
    finally:
        thread.join(timeout=30)
        listener.close()
    return result.get("ok", False)


HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


@contextlib.contextmanager
def envoy_gateway(platform: Platform, service: str, agent_socket: Path, where: Path) -> Iterator[int]:
    """Real Envoy with the rendered gateway listener's TLS as rendered — its SVID (SDS
    ``default``) and the bundle it checks clients against (SDS ``ROOTCA``) streamed from the
    spire-agent, client certificate required, the trust domain's SAN matcher — behind it a
    direct 200 instead of OPA and the backend (what is tested is the handshake). Only the
    addresses move to loopback and the agent's socket path to ``agent_socket``. Yields the port."""
    from components.render import envoy as envoy_render
    from tests.support.tools import free_port
    from tests.unit.test_envoy_config import envoy_binary

    svc = platform.service(service)
    assert svc is not None
    cfg = json.loads(json.dumps(envoy_render.envoy_bootstrap(platform, svc)))
    port, admin = free_port(), free_port()
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin
    (listener,) = cfg["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": port}
    (chain,) = listener["filter_chains"]
    chain["filters"] = [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": HCM,
        "stat_prefix": "ca_e2e",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]
    clusters = [c for c in cfg["static_resources"]["clusters"] if c["name"] == "spire_agent"]
    endpoint = clusters[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"] = {"pipe": {"path": str(agent_socket)}}
    cfg["static_resources"]["clusters"] = clusters
    where.mkdir(parents=True, exist_ok=True)
    (where / "envoy.json").write_text(json.dumps(cfg))
    log = where / "envoy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([envoy_binary(), "-c", str(where / "envoy.json"), "--disable-hot-restart",
                                 "--log-level", "warn"], stdout=out, stderr=subprocess.STDOUT)
        try:
            def listening() -> bool:
                if proc.poll() is not None:
                    pytest.fail(f"envoy exited: {log.read_text()[-2000:]}")
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True

            wait_until(listening, 60, "Envoy's gateway listener", interval_s=0.2)
            yield port
        finally:
            stop(proc)


def envoy_accepts(port: int, client_cert: tuple[str, str]) -> bool:
    """One HTTPS request to the Envoy gateway presenting ``client_cert``: True on a 200."""
    import http.client

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the gateway's decision about the client is what is tested
    ctx.load_cert_chain(*client_cert)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status == 200
    except (ssl.SSLError, OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def jwks(url: str) -> list[tuple[str, bytes]]:
    """The JWKS at ``url`` as (kid, PKIX DER) pairs, for :func:`components.ca_lifecycle.jwt_trusted`."""
    import base64

    import requests
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def number(text: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    out = []
    for key in requests.get(url, timeout=10).json().get("keys", []):
        if key.get("kty") == "EC":
            curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[key["crv"]]
            public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey = ec.EllipticCurvePublicNumbers(
                number(key["x"]), number(key["y"]), curve).public_key()
        else:
            public = rsa.RSAPublicNumbers(number(key["e"]), number(key["n"])).public_key()
        out.append((str(key["kid"]), public.public_bytes(serialization.Encoding.DER,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)))
    return out
