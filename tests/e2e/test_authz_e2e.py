"""End to end on 127.0.0.1: a real Envoy runs the rendered gateway bootstrap, real mTLS with
SPIFFE certificates, real OPA decides with the rendered policy and data.

* The gateway's certificates: one test swaps the two SDS references of the rendered listener
  (SVID ``default``, bundle ``ROOTCA``) for certificate files; the other keeps them as rendered
  and runs a real spire-server + spire-agent (built by scripts/bootstrap-tools) as the SDS
  source, moving only the socket path. The trust-domain SAN matcher,
  ``require_client_certificate`` and the rest of the listener stay as rendered; ports and the
  backend address move to loopback.
* opa-envoy-plugin is not installable here (its Go module is not served by the proxy), so a
  small gRPC server plays its part: it decodes Envoy's ``CheckRequest``, builds the same
  protojson ``input`` the plugin builds, asks the real ``opa`` binary for
  ``data.agentpassport.authz.decision`` and maps the decision object to a ``CheckResponse``
  the way the plugin does (``allowed``, ``headers``, ``http_status``, ``body``,
  ``dynamic_metadata``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import (  # type: ignore[import-untyped]
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    struct_pb2,
)

from components.platform_model import Platform
from components.render import envoy as envoy_render
from components.render import rego
from components.render.yamlout import dump_json, dump_yaml
from tests.policy.test_rego_policy import OPA_BIN, opa, synthetic_platform
from tests.support.processes import stop
from tests.support.tools import free_port, skip_or_fail
from tests.unit.test_envoy_config import envoy_binary

pytestmark = pytest.mark.e2e

# --------------------------------------------------------------------------- ext_authz messages

_F = descriptor_pb2.FieldDescriptorProto
_STR, _INT32, _INT64, _UINT32, _MSG = _F.TYPE_STRING, _F.TYPE_INT32, _F.TYPE_INT64, _F.TYPE_UINT32, _F.TYPE_MESSAGE
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_PKG = "aptest"

# Field numbers from envoy/service/auth/v3/{external_auth,attribute_context}.proto,
# envoy/config/core/v3/{base,address}.proto, envoy/type/v3/http_status.proto, google/rpc/status.proto.
_MESSAGES: dict[str, list[tuple[str, int, int, int, str]]] = {
    "SocketAddress": [("address", 2, _STR, _OPT, ""), ("port_value", 3, _UINT32, _OPT, "")],
    "Address": [("socket_address", 1, _MSG, _OPT, "SocketAddress")],
    "Peer": [("address", 1, _MSG, _OPT, "Address"), ("service", 2, _STR, _OPT, ""),
             ("principal", 4, _STR, _OPT, ""), ("certificate", 5, _STR, _OPT, "")],
    "HttpRequest": [("id", 1, _STR, _OPT, ""), ("method", 2, _STR, _OPT, ""),
                    ("headers", 3, _MSG, _REP, "HttpRequest.HeadersEntry"), ("path", 4, _STR, _OPT, ""),
                    ("host", 5, _STR, _OPT, ""), ("scheme", 6, _STR, _OPT, ""), ("size", 9, _INT64, _OPT, ""),
                    ("protocol", 10, _STR, _OPT, "")],
    "Request": [("http", 2, _MSG, _OPT, "HttpRequest")],
    "AttributeContext": [("source", 1, _MSG, _OPT, "Peer"), ("destination", 2, _MSG, _OPT, "Peer"),
                         ("request", 4, _MSG, _OPT, "Request"),
                         ("context_extensions", 10, _MSG, _REP, "AttributeContext.ContextExtensionsEntry")],
    "CheckRequest": [("attributes", 1, _MSG, _OPT, "AttributeContext")],
    "RpcStatus": [("code", 1, _INT32, _OPT, ""), ("message", 2, _STR, _OPT, "")],
    "HttpStatus": [("code", 1, _INT32, _OPT, "")],
    "HeaderValue": [("key", 1, _STR, _OPT, ""), ("value", 2, _STR, _OPT, "")],
    "HeaderValueOption": [("header", 1, _MSG, _OPT, "HeaderValue")],
    "DeniedHttpResponse": [("status", 1, _MSG, _OPT, "HttpStatus"), ("headers", 2, _MSG, _REP, "HeaderValueOption"),
                           ("body", 3, _STR, _OPT, "")],
    "OkHttpResponse": [("headers", 2, _MSG, _REP, "HeaderValueOption")],
    "CheckResponse": [("status", 1, _MSG, _OPT, "RpcStatus"), ("denied_response", 2, _MSG, _OPT, "DeniedHttpResponse"),
                      ("ok_response", 3, _MSG, _OPT, "OkHttpResponse"),
                      ("dynamic_metadata", 4, _MSG, _OPT, ".google.protobuf.Struct")],
}
_MAPS = {"HttpRequest": "HeadersEntry", "AttributeContext": "ContextExtensionsEntry"}


def _message_classes() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="agentpassport_test_ext_authz.proto", package=_PKG, syntax="proto3",
        dependency=["google/protobuf/struct.proto"],
    )
    for name, fields in _MESSAGES.items():
        msg = file.message_type.add(name=name)
        for field_name, number, type_, label, type_name in fields:
            f = msg.field.add(name=field_name, number=number, type=type_, label=label)
            if type_name:
                f.type_name = type_name if type_name.startswith(".") else f".{_PKG}.{type_name}"
        if name in _MAPS:
            entry = msg.nested_type.add(name=_MAPS[name])
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, type=_STR, label=_OPT)
            entry.field.add(name="value", number=2, type=_STR, label=_OPT)
    pool.Add(file)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PKG}.{n}")) for n in _MESSAGES}


MSG = _message_classes()


class OpaExtAuthz:
    """Plays opa-envoy-plugin: CheckRequest -> protojson input -> real `opa eval` -> CheckResponse."""

    def __init__(self, bundle: Path) -> None:
        self.bundle = bundle
        self.inputs: list[dict[str, Any]] = []

    def check(self, raw: bytes, _context: grpc.ServicerContext) -> bytes:
        request = MSG["CheckRequest"].FromString(raw)
        attributes = json_format.MessageToDict(request.attributes)  # protojson: lowerCamelCase keys
        path = attributes.get("request", {}).get("http", {}).get("path", "")
        input_doc = {
            "attributes": attributes,
            "parsed_path": [s for s in path.split("?")[0].split("/") if s],
            "version": {"encoding": "protojson", "ext_authz": "v3"},
        }
        self.inputs.append(input_doc)
        proc = subprocess.run(
            [opa(), "eval", "--format", "json", "--stdin-input", "--data", str(self.bundle / "policy.rego"),
             "--data", str(self.bundle / "data.json"), "--data", str(self.bundle / rego.REVOCATIONS_FILE),
             rego.DECISION_QUERY],
            input=json.dumps(input_doc), capture_output=True, text=True, timeout=60, check=True,
        )
        decision = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
        response = MSG["CheckResponse"]()
        headers = [MSG["HeaderValueOption"](header=MSG["HeaderValue"](key=k, value=v))
                   for k, v in sorted(decision.get("headers", {}).items())]
        if decision["allowed"]:
            response.status.code = 0
            response.ok_response.headers.extend(headers)
        else:
            response.status.code = 7  # PERMISSION_DENIED
            response.denied_response.status.code = decision.get("http_status", 403)
            response.denied_response.headers.extend(headers)
            response.denied_response.body = decision.get("body", "")
        response.dynamic_metadata.update(decision.get("dynamic_metadata", {}))
        data: bytes = response.SerializeToString()
        return data


# --------------------------------------------------------------------------- certificates


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject_key: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey, cn: str,
          issuer_cn: str, spiffe_id: str | None, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(issuer_cn))
        .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=True, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        ), critical=True).add_extension(x509.ExtendedKeyUsage(
            [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if spiffe_id is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


class Pki:
    """A trust domain's CA and SVID-shaped leaf certificates written as PEM files."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _cert(self.ca_key, self.ca_key, "agentpassport-test-ca", "agentpassport-test-ca", None, ca=True)
        (where / "ca.pem").write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))
        (where / "ca-key.pem").write_bytes(self.ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def leaf(self, name: str, spiffe_id: str | None) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(key, self.ca_key, name, "agentpassport-test-ca", spiffe_id, ca=False)
        cert_path, key_path = self.where / f"{name}.pem", self.where / f"{name}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path


# --------------------------------------------------------------------------- processes



class Backend(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        Backend.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        return


def local_bootstrap(platform: Platform, service: str, pki: Pki, ports: dict[str, int],
                    spire_socket: Path | None = None) -> dict[str, Any]:
    """The rendered bootstrap with every address on loopback.

    With ``spire_socket`` the SDS references stay as rendered and only the SPIRE agent's
    socket path moves; without it they are swapped for the same certificates as files.
    """
    svc = platform.service(service)
    assert svc is not None
    cfg: dict[str, Any] = yaml.safe_load(dump_yaml(envoy_render.envoy_bootstrap(platform, svc)))
    cfg["admin"]["address"]["socket_address"]["port_value"] = ports["admin"]
    (listener,) = cfg["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": ports["gateway"]}
    (chain,) = listener["filter_chains"]
    common = chain["transport_socket"]["typed_config"]["common_tls_context"]
    if spire_socket is None:
        assert [s["name"] for s in common.pop("tls_certificate_sds_secret_configs")] == ["default"]
        gw_cert, gw_key = pki.leaf("gateway", envoy_render.gateway_of(platform, svc).spiffe_id)
        common["tls_certificates"] = [{"certificate_chain": {"filename": str(gw_cert)},
                                       "private_key": {"filename": str(gw_key)}}]
        combined = common.pop("combined_validation_context")
        assert combined["validation_context_sds_secret_config"]["name"] == "ROOTCA"
        common["validation_context"] = {**combined["default_validation_context"],
                                        "trusted_ca": {"filename": str(pki.where / "ca.pem")}}
    for cluster in cfg["static_resources"]["clusters"]:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        if cluster["name"] == "opa_ext_authz":
            endpoint["address"]["socket_address"]["port_value"] = ports["opa"]
        elif cluster["name"] == "backend":
            cluster["type"] = "STATIC"
            endpoint["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": ports["backend"]}
        elif cluster["name"] == "spire_agent" and spire_socket is not None:
            assert endpoint["address"] == {"pipe": {"path": "/spiffe-workload-api/spire-agent.sock"}}
            endpoint["address"] = {"pipe": {"path": str(spire_socket)}}
    return cfg


@contextlib.contextmanager
def running(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop(proc)


def wait_for_tls(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, "envoy exited"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def call(port: int, pki: Pki, client: tuple[Path, Path] | None, path: str,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, list[str]]:
    """One HTTPS request as an agent: verify the gateway's SPIFFE ID, present our SVID."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SVIDs carry a SPIFFE ID, not a host name: checked below
    ctx.load_verify_locations(str(pki.where / "ca.pem"))
    if client is not None:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=20)
    try:
        conn.request("GET", path, headers=headers or {})
        sock = conn.sock
        peer: dict[str, Any] = sock.getpeercert() or {} if isinstance(sock, ssl.SSLSocket) else {}
        uris = [str(v) for k, v in peer.get("subjectAltName", ()) if k == "URI"]
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read(), uris
    finally:
        conn.close()


class Gateway:
    """Envoy running a gateway bootstrap, with the OPA stand-in and a backend, all on loopback."""

    def __init__(self, tmp_path: Path, platform: Platform, service: str, pki: Pki) -> None:
        self.tmp_path, self.platform, self.service, self.pki = tmp_path, platform, service, pki
        self.ports = {k: free_port() for k in ("gateway", "admin", "opa", "backend")}
        self.bundle = tmp_path / "bundle"
        self.bundle.mkdir(exist_ok=True)
        (self.bundle / "policy.rego").write_text(rego.POLICY, encoding="utf-8")
        (self.bundle / "data.json").write_text(dump_json(rego.authz_data(platform, [service])), encoding="utf-8")
        (self.bundle / rego.REVOCATIONS_FILE).write_text(dump_json(rego.revocation_document()), encoding="utf-8")
        self.authz = OpaExtAuthz(self.bundle)
        self.log = tmp_path / "envoy.log"
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "envoy.service.auth.v3.Authorization",
            {"Check": grpc.unary_unary_rpc_method_handler(self.authz.check)},
        )])
        self.server.add_insecure_port(f"127.0.0.1:{self.ports['opa']}")

    @contextlib.contextmanager
    def run(self, spire_socket: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
        config = self.tmp_path / "envoy.yaml"
        bootstrap = local_bootstrap(self.platform, self.service, self.pki, self.ports, spire_socket)
        config.write_text(dump_yaml(bootstrap), encoding="utf-8")
        backend = ThreadingHTTPServer(("127.0.0.1", self.ports["backend"]), Backend)
        threading.Thread(target=backend.serve_forever, daemon=True).start()
        Backend.seen = []
        self.server.start()
        try:
            argv = [envoy_binary(), "-c", str(config), "--disable-hot-restart", "--log-level", "warn"]
            with running(argv, self.log) as proc:
                wait_for_tls(self.ports["gateway"], proc, deadline_s=60)
                yield proc
        finally:
            self.server.stop(grace=None)
            backend.shutdown()
            backend.server_close()

    def call(self, client: tuple[Path, Path] | None, path: str,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, list[str]]:
        return call(self.ports["gateway"], self.pki, client, path, headers)

    def access_log(self) -> list[dict[str, Any]]:
        """Envoy's JSON access log lines (complete once Envoy has exited and flushed)."""
        text = self.log.read_text(encoding="utf-8")
        return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


# --------------------------------------------------------------------------- the tests


def test_gateway_end_to_end_with_real_envoy_mtls_and_opa(tmp_path: Path) -> None:
    envoy_binary(), opa()
    platform = synthetic_platform(tmp_path / "manifests")
    td = platform.config.trust_domain
    (tmp_path / "pki").mkdir()
    pki = Pki(tmp_path / "pki")
    buyer = pki.leaf("buyer", f"spiffe://{td}/ns/agents/sa/buyer")
    stranger = pki.leaf("stranger", f"spiffe://{td}/ns/agents/sa/stranger")
    foreign = pki.leaf("foreign", "spiffe://other.example/ns/agents/sa/buyer")
    gw = Gateway(tmp_path, platform, "orders", pki)
    reasons: list[str] = []
    with gw.run():
        # Allowed: the agent's grant (GET prefix /orders, header x-tenant: acme).
        status, _, body, uris = gw.call(buyer, "/orders/17?page=2", {"x-tenant": "acme"})
        assert uris == [f"spiffe://{td}/ns/shop/sa/gw-orders"]  # the agent sees the gateway's SPIFFE ID
        assert status == 200, body
        assert json.loads(body) == {"path": "/orders/17?page=2"}
        upstream = Backend.seen[-1]
        assert upstream["x-agentpassport-agent"] == "buyer"
        assert f"URI=spiffe://{td}/ns/agents/sa/buyer" in upstream["x-forwarded-client-cert"]
        # What Envoy sent to OPA: the SPIFFE ID as source principal, the service from our route.
        sent = gw.authz.inputs[-1]["attributes"]
        assert sent["source"]["principal"] == f"spiffe://{td}/ns/agents/sa/buyer"
        assert sent["contextExtensions"] == {"service": "orders"}
        assert sent["request"]["http"]["method"] == "GET"
        assert sent["source"]["certificate"].startswith("-----BEGIN%20CERTIFICATE-----")

        # Denied by policy: missing header, segment-boundary miss, unknown SPIFFE ID.
        for client, path, headers, reason in (
            (buyer, "/orders/17", {}, "spec.grants[0]: header x-tenant missing or not the granted value"),
            (buyer, "/ordersx", {"x-tenant": "acme"}, "spec.grants[0]: path /ordersx not granted"),
            (stranger, "/orders/17", {"x-tenant": "acme"},
             f"denied: SPIFFE ID spiffe://{td}/ns/agents/sa/stranger has no grant on service orders"),
        ):
            count = len(Backend.seen)
            status, resp_headers, body, _ = gw.call(client, path, headers)
            assert (status, body) == (403, b"forbidden by Agent Passport policy\n")
            assert resp_headers["content-type"] == "text/plain"
            assert len(Backend.seen) == count, "a denied request reached the backend"
            reasons.append(reason)

        # Kill switch: `passport revoke` lists the SPIFFE ID in the gateway's revocation list (a
        # ConfigMap OPA watches; tests/policy/test_revocation.py times the watch with a real `opa run`).
        # Over the same real mTLS the next request is denied whatever the grant says, before the
        # backend; the stranger's denial is unchanged; --undo (an empty list) restores access.
        revocations = gw.bundle / rego.REVOCATIONS_FILE
        buyer_id = f"spiffe://{td}/ns/agents/sa/buyer"
        revocations.write_text(dump_json(rego.revocation_document(
            {buyer_id: {"agent": "buyer", "reason": "INC-1 (e2e)"}})), encoding="utf-8")
        count = len(Backend.seen)
        status, _, body, _ = gw.call(buyer, "/orders/17", {"x-tenant": "acme"})
        assert (status, body) == (403, b"forbidden by Agent Passport policy\n")
        assert len(Backend.seen) == count, "a revoked identity reached the backend"
        status, _, _, _ = gw.call(stranger, "/orders/17", {"x-tenant": "acme"})
        assert status == 403
        revocations.write_text(dump_json(rego.revocation_document()), encoding="utf-8")
        status, _, body, _ = gw.call(buyer, "/orders/17", {"x-tenant": "acme"})
        assert status == 200, body

        # Refused by mTLS before any HTTP: no client certificate, or one outside the trust domain.
        refused: tuple[tuple[Path, Path] | None, ...] = (None, foreign)
        for no_svid in refused:
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
                gw.call(no_svid, "/orders/17", {"x-tenant": "acme"})

        # OPA unreachable: Envoy fails closed.
        gw.server.stop(grace=None).wait()
        count = len(Backend.seen)
        status, _, _, _ = gw.call(buyer, "/orders/17", {"x-tenant": "acme"})
        assert status == 403
        assert len(Backend.seen) == count
    # Envoy flushed its access log on exit: one JSON line per request, with OPA's reason.
    lines = gw.access_log()
    logged = [x["authz_reason"] for x in lines]
    assert logged[0] == "allowed: GET /orders/17 granted to agent buyer by spec.grants[0]"
    assert lines[0]["spiffe_id"] == f"spiffe://{td}/ns/agents/sa/buyer" and lines[0]["agent"] == "buyer"
    for reason in reasons:
        assert any(reason in x for x in logged[1:4]), (reason, logged)
    assert f"denied: SPIFFE ID spiffe://{td}/ns/agents/sa/buyer is revoked (passport revoke)" in logged[4]
    assert [x["status"] for x in lines] == [200, 403, 403, 403, 403, 403, 200, 403]
    assert lines[-1]["flags"] == "UAEX"  # unauthorized by the external authorization service


# --------------------------------------------------------------------------- with a real SPIRE agent

SPIRE_BIN = OPA_BIN.parent


def spire_binaries() -> tuple[str, str]:
    server, agent = SPIRE_BIN / "spire-server", SPIRE_BIN / "spire-agent"
    for b in (server, agent):
        if not b.is_file():
            skip_or_fail(f"{b.name} not built ({b}); run scripts/bootstrap-tools --only spire")
    return str(server), str(agent)


def _spire(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def _until(what: str, check: Callable[[], bool], deadline_s: float = 90) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_gateway_takes_its_svid_and_bundle_from_a_real_spire_agent_over_sds(tmp_path: Path) -> None:
    """Only the socket path of the rendered bootstrap changes: SDS names default/ROOTCA as rendered."""
    envoy_binary(), opa()
    server_bin, agent_bin = spire_binaries()
    platform = synthetic_platform(tmp_path / "manifests")
    td = platform.config.trust_domain
    gateway_id = f"spiffe://{td}/ns/shop/sa/gw-orders"
    (tmp_path / "pki").mkdir()
    pki = Pki(tmp_path / "pki")  # SPIRE's upstream root: agents' test certificates chain to it too
    buyer = pki.leaf("buyer", f"spiffe://{td}/ns/agents/sa/buyer")
    spire = tmp_path / "spire"
    spire.mkdir()
    server_port = free_port()
    server_sock, agent_sock = spire / "server.sock", spire / "agent.sock"
    (spire / "server.conf").write_text(f"""
server {{
  bind_address = "127.0.0.1"
  bind_port = "{server_port}"
  socket_path = "{server_sock}"
  trust_domain = "{td}"
  data_dir = "{spire}/server-data"
  log_level = "WARN"
  ca_ttl = "24h"
  default_x509_svid_ttl = "1h"
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
""", encoding="utf-8")
    (spire / "agent.conf").write_text(f"""
agent {{
  data_dir = "{spire}/agent-data"
  log_level = "WARN"
  server_address = "127.0.0.1"
  server_port = "{server_port}"
  socket_path = "{agent_sock}"
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
""", encoding="utf-8")
    gw = Gateway(tmp_path, platform, "orders", pki)
    with running([server_bin, "run", "-config", str(spire / "server.conf")], spire / "server.log") as server:
        _until("spire-server", lambda: server.poll() is None and _spire(
            server_bin, "healthcheck", "-socketPath", str(server_sock)).returncode == 0)
        node_id = f"spiffe://{td}/agentpassport-test/node"
        token = _spire(server_bin, "token", "generate", "-socketPath", str(server_sock), "-spiffeID", node_id)
        assert token.returncode == 0, token.stderr
        join_token = token.stdout.split()[-1]
        entry = _spire(server_bin, "entry", "create", "-socketPath", str(server_sock), "-parentID", node_id,
                       "-spiffeID", gateway_id, "-selector", f"unix:uid:{os.getuid()}")
        assert entry.returncode == 0, entry.stdout + entry.stderr
        agent_cmd = [agent_bin, "run", "-config", str(spire / "agent.conf"), "-joinToken", join_token]
        with running(agent_cmd, spire / "agent.log") as agent:
            _until("an SVID from the SPIRE agent", lambda: agent.poll() is None and gateway_id in _spire(
                agent_bin, "api", "fetch", "x509", "-socketPath", str(agent_sock)).stdout)
            with gw.run(spire_socket=agent_sock):
                status, _, body, uris = gw.call(buyer, "/orders/1", {"x-tenant": "acme"})
                # The certificate Envoy serves is the SVID SPIRE issued (SDS "default") ...
                assert uris == [gateway_id]
                # ... and the client's certificate was checked against SPIRE's bundle (SDS "ROOTCA").
                assert status == 200, body
                assert Backend.seen[-1]["x-agentpassport-agent"] == "buyer"
                with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
                    gw.call(None, "/orders/1", {"x-tenant": "acme"})
