"""The credential chain's servers for the e2e tests: SPIRE (server + OIDC discovery provider),
PostgreSQL set up as docs/vault.md tells a DBA, and OpenBao configured from the Vault plan by
the hvac applier (components/vault_apply.py). Everything on 127.0.0.1, bounded and cleaned up.

The test stack is the dev stack pointed at these servers (JWKS URL, database port, audit file).
"""

# SQL here is built from the tests' own constants and Vault-generated user names.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac.exceptions
import pytest
import requests

from components.config import build_stack_config
from components.durations import parse_duration
from components.manifest.loader import load_manifests
from components.platform_model import Platform, build_platform
from components.render import spire as r
from components.render.vault import AgentVaultPlan, DatabaseRolePlan, VaultPlan, plan_vault
from components.vault_apply import ApplySecrets, apply_plan
from tests.conftest import ROOT
from tests.support.bao import Bao, bao_dev_server
from tests.support.postgres import Postgres, postgres_cluster, seed_dba_setup
from tests.support.processes import stop
from tests.support.spire_server import LocalServer, local_spire_server
from tests.support.tools import free_port, require_tool, wait_until
from tests.unit.test_vault_render import cert_ready_agents, dev_values

DEV_TD = "dev.agentpassport.internal"
OTHER_TD = "elsewhere.example"
ADMIN_PASSWORD = "Initial-admin-pw-1"
ADMINS = {"incidents": "vault_incidents", "billing": "vault_billing"}
TABLES = {"incidents": ("public.incidents", "public.alerts", "public.payroll"),
          "billing": ("billing.invoices", "billing.invoice_lines")}
CORTEX, INVOICES = "agent-cortex", "invoice-processor"
def _runbook_policy() -> str:
    """The incident responder's policy as docs/runbook.md gives it (the tests use exactly it)."""
    text = (ROOT / "docs" / "runbook.md").read_text()
    block = text.split("# incident-responder:", 1)[1].split("```", 1)[0]
    return "\n".join(line.strip() for line in block.splitlines()[1:])


OPERATOR_POLICY = _runbook_policy()


# --------------------------------------------------------------------------- SPIRE


RATE_LIMIT_RETRIES = 12


def retry_rate_limited(call: Callable[[], Any]) -> Any:
    """``call()``, retried when OpenBao answers 429 (its rate-limit quotas are per client IP and
    the tests all come from 127.0.0.1); a bounded backoff, about 10 s at most in all. Every other
    error is raised at once, and so is the last 429."""
    for attempt in range(RATE_LIMIT_RETRIES):
        try:
            return call()
        except hvac.exceptions.RateLimitExceeded:
            if attempt == RATE_LIMIT_RETRIES - 1:
                raise
            time.sleep(min(0.25 * 2 ** attempt, 2.0))
    raise AssertionError("unreachable")


@dataclass
class Spire:
    """A running spire-server and what the tests ask of it through its admin socket."""

    server: LocalServer
    binary: Path
    trust_domain: str

    def cli(self, *args: str) -> str:
        done = subprocess.run([str(self.binary), *args, "-socketPath", str(self.server.socket)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def spiffe_id(self, path: str) -> str:
        return f"spiffe://{self.trust_domain}{path}"

    def jwt(self, spiffe_id: str, audience: str = "vault", ttl: str = "300s") -> str:
        """A JWT-SVID minted by the server (``spire-server jwt mint``), signed by its JWT key."""
        return self.cli("jwt", "mint", "-spiffeID", spiffe_id, "-audience", audience, "-ttl", ttl).strip()

    def x509(self, spiffe_id: str, where: Path, ttl: str = "900s", dns: str | None = None) -> tuple[str, str]:
        """An X.509-SVID (leaf + SPIRE's intermediates) and its key, written under ``where``;
        ``dns`` becomes its first DNS SAN and Subject CN."""
        where.mkdir(parents=True, exist_ok=True)
        self.cli("x509", "mint", "-spiffeID", spiffe_id, "-ttl", ttl, "-write", str(where),
                 *(("-dns", dns) if dns else ()))
        return str(where / "svid.pem"), str(where / "key.pem")


@contextlib.contextmanager
def spire_server(trust_domain: str | None = None) -> Iterator[Spire]:
    binary = require_tool("spire-server")
    tmp = Path(tempfile.mkdtemp(prefix="ap-chain-spire-"))
    try:
        with local_spire_server(tmp, trust_domain=trust_domain) as server:
            yield Spire(server, binary, trust_domain or DEV_TD)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def oidc_discovery_provider(spire: Spire) -> Iterator[str]:
    """SPIRE's OIDC discovery provider with the rendered config, serving on 127.0.0.1; yields
    the JWKS URL.

    Adapted for a machine without a cluster: it listens on 127.0.0.1 (not ``:8080``), reads the
    keys from the server's API socket (the rendered config reads the node agent's Workload API;
    both serve the server's JWT signing keys), and has no health listener (it would bind every
    interface).
    """
    binary = require_tool("spire-oidc-discovery-provider")
    from components.platform_model import load_platform

    conf = r.oidc_config(load_platform("dev"))
    port = free_port()
    conf["insecure_addr"] = f"127.0.0.1:{port}"
    del conf["workload_api"]
    conf["server_api"] = {"address": f"unix://{spire.server.socket}", "poll_interval": "1s"}
    conf.pop("health_checks", None)
    conf["log_format"] = "text"
    tmp = Path(tempfile.mkdtemp(prefix="ap-chain-oidc-"))
    (tmp / "oidc.conf").write_text(json.dumps(conf))
    log = tmp / "oidc.log"
    url = f"http://127.0.0.1:{port}/keys"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(binary), "-config", str(tmp / "oidc.conf")], stdout=out, stderr=out)
        try:
            def serving() -> bool:
                if proc.poll() is not None:
                    pytest.fail(f"oidc-discovery-provider exited: {log.read_text()[-2000:]}")
                resp = requests.get(url, timeout=5)
                return resp.status_code == 200 and bool(resp.json().get("keys"))

            wait_until(serving, 60, f"the OIDC discovery provider's JWKS at {url}")
            yield url
        finally:
            stop(proc, grace_s=10)
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the stack


def chain_platform(
    *, pg_port: int, audit_file: Path, jwks_url: str, auth: str = "jwt",
    cortex_ttl: tuple[str, str] | None = None, agents_dir: Path | None = None,
) -> Platform:
    """The dev stack pointed at this test's servers; ``cortex_ttl`` = (ttl, maxTtl) of
    agent-cortex's database grant (a copy of the manifests under ``agents_dir``)."""
    values = dev_values(jwksUrl=jwks_url, auth=auth, audit={"type": "file", "path": str(audit_file)})
    values["vault"]["databases"]["main"]["port"] = pg_port
    folder = ROOT / "agents"
    if auth == "cert":  # cert auth needs a DNS name (the SVID's CN) per agent
        assert agents_dir is not None and cortex_ttl is None
        folder = cert_ready_agents(agents_dir)
    if cortex_ttl is not None:
        assert agents_dir is not None
        shutil.copytree(folder, agents_dir)
        manifest = agents_dir / f"{CORTEX}.yaml"
        text = manifest.read_text()
        assert "ttl: 5m\n        maxTtl: 10m" in text
        manifest.write_text(text.replace("ttl: 5m\n        maxTtl: 10m",
                                         f"ttl: {cortex_ttl[0]}\n        maxTtl: {cortex_ttl[1]}"))
        folder = agents_dir
    cfg = build_stack_config(values, "stacks/Pulumi.dev.yaml")
    return build_platform(cfg, load_manifests([folder]), "dev", "stacks/Pulumi.dev.yaml")


@dataclass
class Chain:
    bao: Bao
    platform: Platform
    plan: VaultPlan
    pg: Postgres
    audit_file: Path
    spire: Spire
    secrets: ApplySecrets
    expiring_jwt: str = ""
    expiring_jwt_exp: float = 0.0
    sessions: list[subprocess.Popen[str]] = field(default_factory=list)

    def agent(self, name: str) -> AgentVaultPlan:
        return next(a for a in self.plan.agents if a.agent == name)

    def role(self, name: str) -> DatabaseRolePlan:
        (role,) = self.agent(name).database_roles
        return role

    def jwt(self, name: str, **kw: Any) -> str:
        return self.spire.jwt(self.agent(name).spiffe_id, **kw)

    def login(self, role_of: str, jwt: str) -> dict[str, Any]:
        """POST auth/<mount>/login as an agent would (no token; retrying a 429 from the rendered
        rate-limit quota with backoff, as docs/scale.md asks of clients); the response, or raises."""
        out = retry_rate_limited(lambda: self.bao.client(token="").write_data(
            f"auth/{self.plan.auth_mount}/login", data={"role": self.agent(role_of).role, "jwt": jwt}))
        return dict(out)

    def creds(self, token: str, name: str) -> dict[str, Any]:
        return dict(retry_rate_limited(lambda: self.bao.client(token=token).read(self.role(name).creds_path)))

    def psql(self, user: str, password: str, sql: str, db: str = "incidents") -> subprocess.CompletedProcess[str]:
        return self.pg.run(sql, user=user, password=password, db=db, check=False)

    def open_session(self, user: str, password: str) -> subprocess.Popen[str]:
        """A database session that stays open (pg_sleep) until something ends it."""
        env = {**os.environ, "PGPASSWORD": password}
        session = subprocess.Popen(
            [self.pg.psql, "-X", "-q", "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", user, "-d", "incidents",
             "-c", "SELECT pg_sleep(300);"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.sessions.append(session)
        wait_until(lambda: self.pg.run(f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}';")
                   .stdout.strip() == "1", 30, f"a session of {user}")
        return session

    def token_valid(self, token: str) -> bool:
        """Whether OpenBao still knows ``token`` (asked as root: agent tokens lack the default
        policy, so they may not even look themselves up)."""
        try:
            self.bao.client().auth.token.lookup(token)
        except hvac.exceptions.VaultError:
            return False
        return True

    def operator_token(self) -> str:
        """An incident responder's own short-lived token (not root: revoke refuses root)."""
        root = self.bao.client()
        root.sys.create_or_update_policy("incident-responder", OPERATOR_POLICY)
        return str(root.auth.token.create(policies=["incident-responder"], ttl="15m")["auth"]["client_token"])

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_file.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def chain(spire: Spire, jwks_url: str, *, tls: bool = False, auth: str = "jwt",
          cortex_ttl: tuple[str, str] | None = None) -> Iterator[Chain]:
    """PostgreSQL (DBA setup as documented) + OpenBao configured from the plan by the hvac applier."""
    tmp = Path(tempfile.mkdtemp(prefix="ap-chain-"))
    try:
        with postgres_cluster("ap-chain-pg-") as pg, bao_dev_server(tls=tls) as bao:
            seed_dba_setup(pg, ADMINS, TABLES, ADMIN_PASSWORD)
            audit_file = tmp / "audit.log"
            platform = chain_platform(pg_port=pg.port, audit_file=audit_file, jwks_url=jwks_url, auth=auth,
                                      cortex_ttl=cortex_ttl, agents_dir=tmp / "agents")
            plan = plan_vault(platform)
            secrets = ApplySecrets({"dbMainPassword": ADMIN_PASSWORD},
                                   spire.server.upstream.root_pem.decode() if auth == "cert" else None)
            applied = apply_plan(bao.client(), plan, secrets)
            assert {a.outcome for a in applied} == {"sent"}, applied
            c = Chain(bao, platform, plan, pg, audit_file, spire, secrets)
            try:
                yield c
            finally:
                for session in c.sessions:
                    if session.poll() is None:
                        session.kill()
                    session.communicate(timeout=30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Workload:
    """This test process as a workload of a spire-agent: its Workload API socket."""

    binary: Path
    socket: Path

    def _api(self, *args: str) -> str:
        done = subprocess.run([str(self.binary), "api", "fetch", *args, "-socketPath", str(self.socket)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def jwt(self, audience: str = "vault") -> tuple[str, str]:
        """(SPIFFE ID, JWT-SVID) fetched over the Workload API, as the agent's SDK would."""
        lines = self._api("jwt", "-audience", audience).splitlines()
        for i, line in enumerate(lines):
            if line.startswith("token(") and line.endswith("):"):
                return line[len("token("):-2], lines[i + 1].strip()
        raise AssertionError(f"no JWT-SVID in {lines}")

    def x509(self, where: Path) -> tuple[str, str]:
        """The X.509-SVID (leaf + intermediates) and key, written under ``where``."""
        where.mkdir(parents=True, exist_ok=True)
        self._api("x509", "-write", str(where))
        return str(where / "svid.0.pem"), str(where / "svid.0.key")


@contextlib.contextmanager
def spire_agent(spire: Spire, platform: Platform, agent_name: str) -> Iterator[Workload]:
    """A spire-agent with the rendered VM agent config (join token), attested to ``spire``, and
    one registration entry: the agent's rendered ClusterSPIFFEID (SPIFFE ID, DNS names, TTLs,
    hint) for processes of this user — ``unix:uid`` instead of its Kubernetes selectors.

    Adapted: paths under a temporary directory, the server's 127.0.0.1 port, the join token on
    the command line; the bootstrap bundle is the trust bundle (the upstream root), as on a VM.
    """
    binary = require_tool("spire-agent")
    tmp = Path(tempfile.mkdtemp(prefix="ap-chain-agent-"))
    try:
        conf = r.host_agent_config(platform, "vm-join_token")
        server_conf = json.loads((spire.server.socket.parent / "server.conf").read_text())["server"]
        (tmp / "bundle.pem").write_bytes(spire.server.upstream.root_pem)
        agent = conf["agent"]
        agent.pop("join_token_file")
        agent.update(data_dir=str(tmp / "data"), server_address="127.0.0.1", server_port=server_conf["bind_port"],
                     trust_bundle_path=str(tmp / "bundle.pem"), socket_path=str(tmp / "agent.sock"),
                     log_format="text")
        conf["plugins"]["KeyManager"][0]["disk"]["plugin_data"]["directory"] = str(tmp / "data")
        (tmp / "agent.conf").write_text(json.dumps(conf))
        node_id = spire.spiffe_id("/agentpassport-test/node")
        token = spire.cli("token", "generate", "-spiffeID", node_id).split()[-1]
        resolved = platform.agent(agent_name)
        assert resolved is not None
        (reg,) = r.agent_registrations(platform, resolved)
        spec = reg["spec"]
        workload_id = spec["spiffeIDTemplate"]
        dns = [arg for name in spec.get("dnsNameTemplates", []) for arg in ("-dns", name)]
        extra = [*dns, *(("-hint", spec["hint"]) if "hint" in spec else ())]
        for flag, key in (("-x509SVIDTTL", "ttl"), ("-jwtSVIDTTL", "jwtTtl")):
            if key in spec:
                extra += [flag, str(parse_duration(spec[key]))]
        spire.cli("entry", "create", "-parentID", node_id, "-spiffeID", workload_id, *extra,
                  "-selector", f"unix:uid:{os.getuid()}")
        log = tmp / "agent.log"
        workload = Workload(binary, tmp / "agent.sock")
        with log.open("wb") as out:
            proc = subprocess.Popen([str(binary), "run", "-config", str(tmp / "agent.conf"), "-joinToken", token],
                                    stdout=out, stderr=out)
            try:
                def svid_ready() -> bool:
                    if proc.poll() is not None:
                        pytest.fail(f"spire-agent exited: {log.read_text()[-2000:]}")
                    return workload.jwt()[0] == workload_id

                wait_until(svid_ready, 90, f"a JWT-SVID for {workload_id} from the spire-agent")
                yield workload
            finally:
                stop(proc, grace_s=10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
