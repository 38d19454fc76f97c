"""`passport revoke` against a fake Vault HTTP API on 127.0.0.1 and a fake SPIRE server API:
confirmation before any change, dry run by default, exactly the revocations the manifest implies."""

from __future__ import annotations

import contextlib
import io
import json
import re
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from components import cli
from components.platform_model import load_platform
from components.revoke import RevokeRefused, plan_revocation, revoke, spire_cli_runner

ISSUER = "https://oidc-discovery.dev.agentpassport.internal"
CORTEX = "spiffe://dev.agentpassport.internal/ns/agents/sa/agent-cortex"
LEASES = "db-main/creds/agent-cortex-main-incidents"
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
SOCKET = "/run/spire/server/private/api.sock"


class FakeVault:
    """Just enough of Vault's API, recording every request (method, path, body, token)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any, str | None]] = []
        self.bound_issuer = ISSUER
        self.sealed = False
        self.operator = {"ttl": 900, "policies": ["default", "incident-responder"], "display_name": "oidc-alice"}
        self.tokens = {
            "acc-cortex-1": {"path": "auth/spiffe-jwt/login", "meta": {"role": "agent-agent-cortex"}},
            "acc-cortex-2": {"path": "auth/spiffe-jwt/login", "meta": {"role": "agent-agent-cortex"}},
            "acc-ledger": {"path": "auth/spiffe-jwt/login", "meta": {"role": "agent-ledger-sync"}},
            "acc-alice": {"path": "auth/oidc/oidc/callback", "meta": {"role": "agent-agent-cortex"}},
        }

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if path == "sys/health":
            return (503 if self.sealed else 200), {"cluster_name": "vault-cluster-dev", "sealed": self.sealed}
        if path == "sys/auth":
            return 200, {"data": {"spiffe-jwt/": {"type": "jwt", "accessor": "auth_jwt_5a1b"},
                                  "token/": {"type": "token", "accessor": "auth_token_0"}}}
        if path == "auth/spiffe-jwt/config":
            return 200, {"data": {"bound_issuer": self.bound_issuer}}
        if path == "auth/token/lookup-self":
            return 200, {"data": self.operator}
        if method == "LIST" and path.rstrip("/") == f"sys/leases/lookup/{LEASES}":
            return 200, {"data": {"keys": ["Xy12", "Zz34"]}}
        if method == "PUT" and path == f"sys/leases/revoke-prefix/{LEASES}":
            return 204, None
        if method == "LIST" and path == "auth/token/accessors":
            return 200, {"data": {"keys": sorted(self.tokens)}}
        if method == "POST" and path == "auth/token/lookup-accessor":
            return 200, {"data": {"accessor": body["accessor"], **self.tokens[body["accessor"]]}}
        if method == "POST" and path == "auth/token/revoke-accessor":
            return 204, None
        if method == "POST" and path == "identity/lookup/entity":
            assert body == {"alias_name": CORTEX, "alias_mount_accessor": "auth_jwt_5a1b"}
            return 200, {"data": {"id": "ent-7c2e", "name": "entity_7c2e"}}
        if method == "POST" and path == "identity/entity/id/ent-7c2e":
            return 204, None
        return 404, {"errors": []}

    @property
    def changes(self) -> list[tuple[str, str, Any]]:
        reads = ("LIST", "GET")
        lookups = ("auth/token/lookup-accessor", "identity/lookup/entity")
        return [(m, p, b) for m, p, b, _ in self.requests if m not in reads and p not in lookups]


@pytest.fixture
def vault() -> Iterator[tuple[FakeVault, str]]:
    with serve_fake_vault(FakeVault()) as served:
        yield served


@contextlib.contextmanager
def serve_fake_vault(fake: FakeVault) -> Iterator[tuple[FakeVault, str]]:
    """``fake`` behind an HTTP server on 127.0.0.1: (fake, address)."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            path = self.path.removeprefix("/v1/")
            fake.requests.append((self.command, path, body, self.headers.get("X-Vault-Token")))
            code, payload = fake.handle(self.command, path, body)
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_LIST = _serve

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class FakeSpire:
    def __init__(self, trust_domain: str = "dev.agentpassport.internal") -> None:
        self.trust_domain = trust_domain
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str]) -> dict[str, Any]:
        self.calls.append(args)
        if args[:2] == ["bundle", "show"]:
            return {"trust_domain": self.trust_domain, "x509_authorities": [{"asn1": "MIIB"}]}
        if args[:2] == ["entry", "show"]:
            assert args[2:] == ["-spiffeID", CORTEX]
            return {"entries": [{"id": "e-2", "spiffe_id": {"trust_domain": self.trust_domain,
                                                            "path": "/ns/agents/sa/agent-cortex"}},
                                {"id": "e-1", "spiffe_id": {"trust_domain": self.trust_domain,
                                                            "path": "/ns/agents/sa/agent-cortex"}}]}
        if args[:2] == ["entry", "delete"]:
            return {"results": [{"status": {"code": 0, "message": "OK"}, "id": args[3]}]}
        raise AssertionError(args)


def _run(addr: str, spire: FakeSpire | None, yes: bool, env: dict[str, str] | None = None,
         agent: str = "agent-cortex") -> str:
    out = io.StringIO()
    code = revoke(load_platform("dev"), agent, yes=yes, env={"VAULT_TOKEN": "hvs.alice"} if env is None else env,
                  out=out, vault_addr=addr, spire_runner=spire, now=NOW, http_timeout=5)
    assert code == 0
    return out.getvalue()


def test_plan_comes_from_the_manifest_and_covers_suspended_agents(tmp_path: Path) -> None:
    plan = plan_revocation(load_platform("dev"), "agent-cortex")
    assert plan.spiffe_id == CORTEX
    assert plan.lease_prefixes == (LEASES,)
    assert (plan.auth, plan.auth_mount, plan.vault_role, plan.jwt_issuer) == (
        "jwt", "spiffe-jwt", "agent-agent-cortex", ISSUER)
    assert plan.still_valid == (("X.509-SVIDs already issued", 900), ("JWT-SVIDs already issued", 300))
    assert plan.registrations == (("ClusterSPIFFEID", "agent.agent-cortex"),)
    vm = plan_revocation(load_platform("prod"), "report-summarizer")
    assert vm.registrations == (("ClusterStaticEntry", "agent.report-summarizer"),
                                ("ClusterStaticEntry", "node.report-summarizer"))
    assert ("AWS sessions of role report-summarizer-reports", 3600) in vm.still_valid
    assert vm.longest == ("AWS sessions of role report-summarizer-reports", 3600)
    # a suspended agent (the usual case: suspended in a PR, revoked meanwhile) plans the same
    import shutil
    agents = tmp_path / "agents"
    shutil.copytree(Path(__file__).resolve().parents[2] / "agents", agents)
    f = agents / "agent-cortex.yaml"
    f.write_text(f.read_text().replace("\nspec:\n", "\nspec:\n  suspended: true\n  suspendedReason: INC-1\n", 1))
    suspended = plan_revocation(load_platform("dev", [str(agents)]), "agent-cortex")
    assert suspended == plan
    with pytest.raises(RevokeRefused, match="has no manifest"):
        plan_revocation(load_platform("dev"), "no-such-agent")


def test_dry_run_reads_and_reports_but_changes_nothing(vault: tuple[FakeVault, str]) -> None:
    fake, addr = vault
    spire = FakeSpire()
    text = _run(addr, spire, yes=False)
    assert fake.changes == []
    assert [c[:2] for c in spire.calls] == [["bundle", "show"], ["entry", "show"]]
    assert "DRY RUN: agent agent-cortex" in text
    assert f"would revoke 2 lease(s) under {LEASES}" in text
    assert "would revoke 2 token(s) of role agent-agent-cortex" in text
    assert "would disable identity entity ent-7c2e" in text
    assert "would delete 2 registration entries: e-1, e-2" in text
    assert "dry run: nothing was changed" in text
    assert all(tok == "hvs.alice" for m, p, _, tok in fake.requests if p != "sys/health")


def test_yes_revokes_leases_tokens_entity_and_entries(vault: tuple[FakeVault, str]) -> None:
    fake, addr = vault
    spire = FakeSpire()
    text = _run(addr, spire, yes=True)
    assert fake.changes == [
        ("PUT", f"sys/leases/revoke-prefix/{LEASES}", {"sync": True}),
        ("POST", "auth/token/revoke-accessor", {"accessor": "acc-cortex-1"}),
        ("POST", "auth/token/revoke-accessor", {"accessor": "acc-cortex-2"}),
        ("POST", "identity/entity/id/ent-7c2e", {"disabled": True}),
    ]
    assert spire.calls[-2:] == [["entry", "delete", "-entryID", "e-1"], ["entry", "delete", "-entryID", "e-2"]]
    lines = text.splitlines()
    assert lines[0] == "REVOKE: agent agent-cortex (" + CORTEX + "), stack dev"
    assert f"vault        revoked 2 lease(s) under {LEASES} (database users dropped)" in lines
    assert "vault        revoked 2 token(s) of role agent-agent-cortex" in lines
    assert "spire        deleted 2 registration entries: e-1, e-2" in lines
    assert any("kubectl delete clusterspiffeid agent.agent-cortex" in line for line in lines)
    assert "still valid  X.509-SVIDs already issued: up to 15m, until 2026-11-20T10:15:00Z at the latest" in lines
    assert "still valid  JWT-SVIDs already issued: up to 5m, until 2026-11-20T10:05:00Z at the latest" in lines
    assert any(line.startswith("remains valid until 2026-11-20T10:15:00Z (X.509-SVIDs already issued, 15m)")
               for line in lines)


def test_refuses_a_vault_of_another_trust_domain_before_changing_anything(vault: tuple[FakeVault, str]) -> None:
    fake, addr = vault
    fake.bound_issuer = "https://oidc-discovery.prod.agents.acme-corp.net"
    spire = FakeSpire()
    with pytest.raises(RevokeRefused, match=re.escape("not this stack's 'https://oidc-discovery.dev.agentpassport")):
        _run(addr, spire, yes=True)
    assert fake.changes == []
    assert spire.calls == []


def test_refuses_a_spire_server_of_another_trust_domain(vault: tuple[FakeVault, str]) -> None:
    fake, addr = vault
    spire = FakeSpire(trust_domain="prod.agents.acme-corp.net")
    with pytest.raises(RevokeRefused, match=re.escape("trust domain is 'prod.agents.acme-corp.net'")):
        _run(addr, spire, yes=True)
    assert fake.changes == []
    assert spire.calls == [["bundle", "show"]]


@pytest.mark.parametrize(("operator", "message"), [
    ({"ttl": 0, "policies": ["root"], "display_name": "root"}, "never expires"),
    ({"ttl": 3600, "policies": ["root"], "display_name": "token"}, "never expires"),
])
def test_refuses_non_expiring_or_root_operator_tokens(
    vault: tuple[FakeVault, str], operator: dict[str, Any], message: str,
) -> None:
    fake, addr = vault
    fake.operator = operator
    with pytest.raises(RevokeRefused, match=message):
        _run(addr, FakeSpire(), yes=True)
    assert fake.changes == []


def test_refuses_without_vault_token_and_on_a_sealed_vault(vault: tuple[FakeVault, str]) -> None:
    fake, addr = vault
    with pytest.raises(RevokeRefused, match="VAULT_TOKEN is not set"):
        _run(addr, FakeSpire(), yes=True, env={})
    assert fake.requests == []
    fake.sealed = True
    with pytest.raises(RevokeRefused, match="is sealed"):
        _run(addr, FakeSpire(), yes=True)
    assert fake.changes == []


def test_unreachable_vault_is_a_refusal_not_a_traceback() -> None:
    with pytest.raises(RevokeRefused, match="cannot reach Vault"):
        _run("http://127.0.0.1:9", None, yes=False)


def test_cli_revoke_exit_codes_and_output(vault: tuple[FakeVault, str], monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    fake, addr = vault
    monkeypatch.setenv("VAULT_TOKEN", "hvs.alice")
    assert cli.main(["revoke", "agent-cortex", "--stack", "dev", "--vault-addr", addr]) == 0
    out = capsys.readouterr().out
    assert "DRY RUN" in out and "skipped (no --spire-server-socket)" in out
    assert fake.changes == []
    fake.bound_issuer = "https://elsewhere"
    assert cli.main(["revoke", "agent-cortex", "--stack", "dev", "--vault-addr", addr, "--yes"]) == 2
    assert capsys.readouterr().err.startswith("refused: Vault's spiffe-jwt mount trusts issuer 'https://elsewhere'")
    assert fake.changes == []


def test_spire_cli_runner_talks_to_the_server_socket_in_json(tmp_path: Path) -> None:
    """The runner's command line, checked with a stand-in executable that records its arguments."""
    log = tmp_path / "args.json"
    fake = tmp_path / "spire-server"
    fake.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                    f"open({str(log)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
                    "print(json.dumps({'trust_domain': 'dev.agentpassport.internal'}))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    run = spire_cli_runner(str(fake), SOCKET, timeout=20)
    assert run(["bundle", "show"]) == {"trust_domain": "dev.agentpassport.internal"}
    assert json.loads(log.read_text()) == ["bundle", "show", "-socketPath", SOCKET, "-output", "json"]
    fake.write_text("#!/bin/sh\necho 'rpc error: code = PermissionDenied' >&2\nexit 1\n")
    with pytest.raises(RevokeRefused, match="PermissionDenied"):
        run(["entry", "show"])


class FakeCertVault(FakeVault):
    """The same Vault with agents logging in through the cert auth backend (vault.auth: cert)."""

    def __init__(self, sans: list[str]) -> None:
        super().__init__()
        self.sans = sans
        self.tokens = {"acc-cert-cortex": {"path": "auth/spiffe-cert/login",
                                           "meta": {"cert_name": "agent-agent-cortex"}},
                       "acc-cert-ledger": {"path": "auth/spiffe-cert/login",
                                           "meta": {"cert_name": "agent-ledger-sync"}}}

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if path == "sys/auth":
            return 200, {"data": {"spiffe-cert/": {"type": "cert", "accessor": "auth_cert_9"}}}
        if method == "LIST" and path == "auth/spiffe-cert/certs":
            return 200, {"data": {"keys": ["agent-agent-cortex"]}}
        if path == "auth/spiffe-cert/certs/agent-agent-cortex":
            return 200, {"data": {"allowed_uri_sans": self.sans}}
        if method == "POST" and path == "identity/lookup/entity":
            # cert auth: the alias is the certificate's CN, SPIRE's first DNS name
            assert body == {"alias_name": "agent-cortex.agents.svc", "alias_mount_accessor": "auth_cert_9"}
            return 200, {"data": {"id": "ent-cert-1", "name": "entity_cert_1"}}
        if method == "POST" and path == "identity/entity/id/ent-cert-1":
            return 204, None
        return super().handle(method, path, body)


def _cert_platform(agents_dir: Path | None = None) -> Any:
    from components.config import load_stack_config
    from components.manifest.loader import load_manifests
    from components.platform_model import build_platform

    cfg = load_stack_config("dev")
    cfg = cfg.model_copy(update={"vault": cfg.vault.model_copy(update={"auth": "cert"})})
    return build_platform(cfg, load_manifests([str(agents_dir or "agents")]), "dev", "stacks/Pulumi.dev.yaml")


def test_cert_auth_revokes_tokens_and_disables_the_entity_named_by_the_svid_cn(
    vault: tuple[FakeVault, str], tmp_path: Path,
) -> None:
    from tests.unit.test_vault_render import cert_ready_agents

    _, addr = vault
    fake = FakeCertVault([CORTEX])
    vault[0].handle = fake.handle  # type: ignore[method-assign]
    out = io.StringIO()
    code = revoke(_cert_platform(cert_ready_agents(tmp_path / "agents")), "agent-cortex", yes=True,
                  env={"VAULT_TOKEN": "hvs.alice"}, out=out, vault_addr=addr, spire_runner=FakeSpire(), now=NOW,
                  http_timeout=5)
    assert code == 0
    assert vault[0].changes == [
        ("PUT", f"sys/leases/revoke-prefix/{LEASES}", {"sync": True}),
        ("POST", "auth/token/revoke-accessor", {"accessor": "acc-cert-cortex"}),
        ("POST", "identity/entity/id/ent-cert-1", {"disabled": True}),
    ]
    text = out.getvalue()
    assert "vault        revoked 1 token(s) of role agent-agent-cortex" in text
    assert "vault        disabled identity entity ent-cert-1" in text


def test_cert_auth_agent_without_a_dns_name_has_no_entity_to_disable(vault: tuple[FakeVault, str]) -> None:
    """Such an agent cannot log in with cert auth at all (the plan refuses the stack); revoke
    still revokes its leases and tokens and says why there is no entity."""
    _, addr = vault
    vault[0].handle = FakeCertVault([CORTEX]).handle  # type: ignore[method-assign]
    out = io.StringIO()
    assert revoke(_cert_platform(), "agent-cortex", yes=True, env={"VAULT_TOKEN": "hvs.alice"}, out=out,
                  vault_addr=addr, spire_runner=FakeSpire(), now=NOW, http_timeout=5) == 0
    assert [c[1] for c in vault[0].changes] == [f"sys/leases/revoke-prefix/{LEASES}", "auth/token/revoke-accessor"]
    assert "no entity to disable: under cert auth" in out.getvalue()


def test_cert_auth_refuses_a_vault_whose_cert_roles_admit_another_trust_domain(
    vault: tuple[FakeVault, str]
) -> None:
    _, addr = vault
    vault[0].handle = FakeCertVault(["spiffe://prod.agents.acme-corp.net/ns/agents/sa/agent-cortex"]).handle  # type: ignore[method-assign]
    with pytest.raises(RevokeRefused, match="no cert role on Vault's spiffe-cert mount admits SPIFFE IDs of"):
        revoke(_cert_platform(), "agent-cortex", yes=True, env={"VAULT_TOKEN": "hvs.alice"}, out=io.StringIO(),
               vault_addr=addr, spire_runner=FakeSpire(), now=NOW, http_timeout=5)
    assert vault[0].changes == []


class FailingVault(FakeVault):
    """Answers one call with an error, as a Vault would (JSON errors body)."""

    def __init__(self, method: str, path: str, code: int) -> None:
        super().__init__()
        self.fail = (method, path, code)

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if (method, path) == self.fail[:2]:
            return self.fail[2], {"errors": ["1 error occurred:\n\t* permission denied\n\n"]}
        return super().handle(method, path, body)


@pytest.mark.parametrize(("method", "path", "code", "attempted"), [
    ("POST", "auth/token/revoke-accessor", 403, 2),  # after the leases: it stops at the first error
    ("GET", "sys/auth", 403, 0),  # while confirming: nothing is changed
    ("GET", "sys/health", 500, 0),
    ("PUT", f"sys/leases/revoke-prefix/{LEASES}", 400, 1),
])
def test_a_vault_error_is_a_refusal_naming_the_call_and_the_answer(
    vault: tuple[FakeVault, str], method: str, path: str, code: int, attempted: int,
) -> None:
    fake, addr = vault
    failing = FailingVault(method, path, code)
    fake.handle = failing.handle  # type: ignore[method-assign]
    with pytest.raises(RevokeRefused, match=re.escape(f"Vault {method} {path}: HTTP {code}")) as info:
        _run(addr, FakeSpire(), yes=True)
    assert code == 500 or "permission denied" in str(info.value)
    assert len(fake.changes) == attempted
