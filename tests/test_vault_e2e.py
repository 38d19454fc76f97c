"""The generated Vault configuration on a real OpenBao (Vault API) dev server on 127.0.0.1.

* the generated policies, loaded as they are: agent A may read its credentials path and not
  agent B's (``sys/capabilities-self`` with a token carrying only A's policy);
* the JWT login roles as planned: a JWT-SVID for A logs in to A's role only, and gets a
  15-minute token with A's policy alone and an entity alias named by A's SPIFFE ID;
* with PostgreSQL too: the planned connection (write-only admin password, root rotated), a
  role with the rendered statements, credentials read with A's token whose user name carries
  A's prefix, and an audit entry that ties entity -> lease -> database user.

The payloads are the ones the Pulumi Vault provider writes for the plan's values (the
provider binary itself is not needed). Skips when ``bao`` is not built.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from components.render.vault import AgentVaultPlan, VaultPlan, plan_vault
from tests.processes import stop
from tests.test_vault_postgres import ADMIN, ADMIN_PASSWORD, Postgres, incidents, postgres
from tests.test_vault_render import repo_platform

pytestmark = pytest.mark.e2e
__all__ = ["incidents", "postgres"]  # module fixtures shared with the PostgreSQL test

TOOLS = Path.home() / ".cache/agent-passport/tools/bin"


def _bao_binary() -> str | None:
    if (TOOLS / "bao").exists():
        return str(TOOLS / "bao")
    return shutil.which("bao")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Bao:
    address: str
    root: str

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 only
            f"{self.address}/v1/{path}", data=data, method=method,
            headers={"X-Vault-Token": token or self.root, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                status, text = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
        return status, (json.loads(text) if text else {})

    def ok(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        status, out = self.call(method, path, body, token)
        assert status in (200, 204), f"{method} {path}: {status} {out}"
        return out


@pytest.fixture(scope="module")
def bao() -> Iterator[Bao]:
    binary = _bao_binary()
    if binary is None:
        pytest.skip(f"OpenBao `bao` not found in {TOOLS} or on PATH (scripts/bootstrap-tools --only bao)")
    port, root = _free_port(), "root-" + secrets.token_hex(12)
    home = Path(tempfile.mkdtemp(prefix="ap-vault-bao-"))
    log = (home / "bao.log").open("w")
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "")}  # the dev token file lands here
    proc = subprocess.Popen(
        [binary, "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}", f"-dev-root-token-id={root}"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Bao(f"http://127.0.0.1:{port}", root)
    try:
        for _ in range(300):  # bounded wait for the API
            if proc.poll() is not None:
                pytest.fail(f"bao exited: {(home / 'bao.log').read_text()[-2000:]}")
            try:
                if server.call("GET", "sys/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("bao did not answer on 127.0.0.1 in time")
        yield server
    finally:
        stop(proc, grace_s=30)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


# --------------------------------------------------------------------------- JWT-SVIDs


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """A stand-in for SPIRE's OIDC provider: an EC P-256 key and its JWKS on 127.0.0.1."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        numbers = self.key.public_key().public_numbers()
        jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
                          "x": _b64(numbers.x.to_bytes(32, "big")), "y": _b64(numbers.y.to_bytes(32, "big"))}]}
        body = json.dumps(jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/keys" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                if self.path == "/keys":
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.jwks_url = f"http://127.0.0.1:{self.server.server_address[1]}/keys"

    def svid(self, issuer: str, subject: str, audience: list[str], ttl: int = 300) -> str:
        now = int(time.time())
        header = {"alg": "ES256", "kid": "k1", "typ": "JWT"}
        claims = {"iss": issuer, "sub": subject, "aud": audience, "iat": now, "exp": now + ttl}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Configured:
    bao: Bao
    plan: VaultPlan
    issuer: Issuer
    audit_file: Path

    def agent(self, name: str) -> AgentVaultPlan:
        return next(a for a in self.plan.agents if a.agent == name)

    def login(self, agent: AgentVaultPlan, jwt: str, role: str | None = None) -> tuple[int, Any]:
        return self.bao.call("POST", f"auth/{self.plan.auth_mount}/login",
                             {"role": role or agent.role, "jwt": jwt}, token="")


@pytest.fixture(scope="module")
def configured(bao: Bao) -> Iterator[Configured]:
    """Policies, the JWT backend and the login roles exactly as VaultIdentity declares them."""
    plan = plan_vault(repo_platform())
    issuer = Issuer()
    audit_file = Path(tempfile.mkdtemp(prefix="ap-vault-audit-")) / "audit.log"
    try:
        bao.ok("PUT", "sys/audit/agent-passport-file",
               {"type": "file", "options": {**dict(plan.audit_options), "file_path": str(audit_file)}})
        for a in plan.agents:
            bao.ok("PUT", f"sys/policies/acl/{a.policy_name}", {"policy": a.policy_hcl})
        bao.ok("POST", f"sys/auth/{plan.auth_mount}", {"type": "jwt", "config": {
            "default_lease_ttl": f"{plan.token_ttl}s", "max_lease_ttl": f"{plan.token_max_ttl}s",
            "token_type": plan.token_type, "audit_non_hmac_request_keys": ["role"]}})
        # SPIRE's JWKS is replaced by the local stand-in; issuer, algorithms and roles are the plan's
        bao.ok("POST", f"auth/{plan.auth_mount}/config", {
            "jwks_url": issuer.jwks_url, "bound_issuer": plan.jwt_issuer,
            "jwt_supported_algs": ["ES256", "ES384", "RS256"]})
        for a in plan.agents:
            bao.ok("POST", f"auth/{plan.auth_mount}/role/{a.role}", {
                "role_type": "jwt", "user_claim": "sub", "bound_subject": a.spiffe_id,
                "bound_audiences": list(a.audiences), "token_policies": [a.policy_name],
                "token_no_default_policy": True, "token_ttl": plan.token_ttl,
                "token_max_ttl": plan.token_max_ttl, "token_type": plan.token_type})
        yield Configured(bao, plan, issuer, audit_file)
    finally:
        issuer.close()
        shutil.rmtree(audit_file.parent, ignore_errors=True)


def _capabilities(bao: Bao, token: str, paths: list[str]) -> dict[str, list[str]]:
    out = bao.ok("POST", "sys/capabilities-self", {"paths": paths}, token=token)
    data = out.get("data") or out
    return {p: sorted(data[p]) for p in paths}


def test_agent_policies_separate_agents(configured: Configured) -> None:
    bao, plan = configured.bao, configured.plan
    creds = {a.agent: [r.creds_path for r in a.database_roles] for a in plan.agents}
    assert creds["agent-cortex"] and creds["invoice-processor"]
    for a in plan.agents:
        token = bao.ok("POST", "auth/token/create", {
            "policies": [a.policy_name], "no_default_policy": True, "ttl": "5m"})["auth"]["client_token"]
        own = creds[a.agent]
        others = [p for name, paths in creds.items() if name != a.agent for p in paths]
        managed = [f"sys/policies/acl/{a.policy_name}", f"auth/{plan.auth_mount}/role/{a.role}",
                   "db-main/config/incidents", "db-main/roles/agent-cortex-main-incidents", "sys/audit"]
        caps = _capabilities(bao, token, own + others + managed)
        assert {p: caps[p] for p in own} == {p: ["read"] for p in own}
        assert {p: caps[p] for p in others + managed} == {p: ["deny"] for p in others + managed}
    ledger = bao.ok("POST", "auth/token/create", {"policies": ["agent-ledger-sync"], "no_default_policy": True})
    caps = _capabilities(bao, ledger["auth"]["client_token"],
                         ["secret/data/finance/ledger-sync", "secret/data/finance/other"])
    assert caps == {"secret/data/finance/ledger-sync": ["read"], "secret/data/finance/other": ["deny"]}


def test_jwt_svid_logs_in_to_its_own_role_only(configured: Configured) -> None:
    plan, bao = configured.plan, configured.bao
    cortex, invoices = configured.agent("agent-cortex"), configured.agent("invoice-processor")
    jwt = configured.issuer.svid(plan.jwt_issuer, cortex.spiffe_id, ["vault"])

    status, out = configured.login(cortex, jwt)
    assert status == 200, out
    auth = out["auth"]
    assert auth["token_policies"] == ["agent-agent-cortex"]
    assert auth["lease_duration"] == 900
    assert auth["metadata"]["role"] == "agent-agent-cortex"
    entity = bao.ok("GET", f"identity/entity/id/{auth['entity_id']}")["data"]
    assert [alias["name"] for alias in entity["aliases"]] == [cortex.spiffe_id]
    me = bao.ok("GET", "auth/token/lookup-self", token=auth["client_token"])["data"]
    assert cortex.spiffe_id in me["display_name"]

    assert configured.login(invoices, jwt)[0] in (400, 403)  # not its SPIFFE ID
    wrong_aud = configured.issuer.svid(plan.jwt_issuer, cortex.spiffe_id, ["sts.amazonaws.com"])
    assert configured.login(cortex, wrong_aud)[0] in (400, 403)
    wrong_iss = configured.issuer.svid("https://elsewhere.example", cortex.spiffe_id, ["vault"])
    assert configured.login(cortex, wrong_iss)[0] in (400, 403)


def test_database_credentials_trace_from_spiffe_id_to_database_user(
    configured: Configured, incidents: Postgres
) -> None:
    plan, bao = configured.plan, configured.bao
    cortex = configured.agent("agent-cortex")
    (role,) = cortex.database_roles
    conn = plan.connection(role.cluster, role.connection)
    (mount,) = [m for m in plan.mounts if m.cluster == role.cluster]
    bao.ok("POST", f"sys/mounts/{mount.path}", {"type": "database", "config": {
        "default_lease_ttl": f"{mount.default_lease_ttl}s", "max_lease_ttl": f"{mount.max_lease_ttl}s",
        "audit_non_hmac_response_keys": ["username"]}})
    url = conn.connection_url.replace("127.0.0.1:15432", f"127.0.0.1:{incidents.port}")
    bao.ok("POST", f"{mount.path}/config/{conn.name}", {
        "plugin_name": "postgresql-database-plugin", "connection_url": url, "username": ADMIN,
        "password": ADMIN_PASSWORD, "username_template": conn.username_template,
        "password_authentication": "scram-sha-256", "allowed_roles": list(conn.allowed_roles),
        "root_rotation_statements": list(conn.root_rotation_statements), "verify_connection": True})
    bao.ok("POST", f"{mount.path}/rotate-root/{conn.name}", {})
    rotated = incidents.run("SELECT 1;", user=ADMIN, password=ADMIN_PASSWORD, db="incidents", check=False)
    assert rotated.returncode != 0  # only Vault knows the admin's password now
    bao.ok("POST", f"{mount.path}/roles/{role.name}", {
        "db_name": conn.name, "creation_statements": list(role.statements.creation),
        "revocation_statements": list(role.statements.revocation),
        "default_ttl": role.default_ttl, "max_ttl": role.max_ttl})

    jwt = configured.issuer.svid(plan.jwt_issuer, cortex.spiffe_id, ["vault"])
    status, login = configured.login(cortex, jwt)
    assert status == 200, login
    token, entity_id = login["auth"]["client_token"], login["auth"]["entity_id"]
    creds = bao.ok("GET", role.creds_path, token=token)
    username, password = creds["data"]["username"], creds["data"]["password"]
    assert username.startswith("v-agent-cortex-main-incidents-")
    assert creds["lease_duration"] == role.default_ttl
    ok = incidents.run("SELECT count(*) FROM incidents;", user=username, password=password,
                       db="incidents", check=False)
    assert (ok.returncode, ok.stdout.strip()) == (0, "1")
    other = configured.agent("invoice-processor").database_roles[0].creds_path
    assert bao.call("GET", other, token=token)[0] == 403

    entries = [json.loads(line) for line in configured.audit_file.read_text().splitlines() if line.strip()]
    reads = [e for e in entries if e.get("type") == "response"
             and e.get("request", {}).get("path") == role.creds_path]
    assert reads, "the credential read is audited"
    entry = reads[-1]
    assert entry["auth"]["entity_id"] == entity_id
    assert entry["auth"]["metadata"]["role"] == cortex.role
    assert entry["response"]["data"]["username"] == username  # clear: audit_non_hmac_response_keys
    assert entry["response"]["data"]["password"] != password  # HMAC'd
    assert entry["response"]["secret"]["lease_id"] == creds["lease_id"]

    bao.ok("PUT", "sys/leases/revoke", {"lease_id": creds["lease_id"]})
    gone = incidents.run(f"SELECT count(*) FROM pg_roles WHERE rolname = '{username}';")  # noqa: S608
    assert gone.stdout.strip() == "0"
