"""`passport revoke` against a real spire-server 1.15.3 (built by scripts/bootstrap-tools).

What is real: the SPIRE server (the rendered dev server.conf adapted for 127.0.0.1 under a
temporary directory, tests/support/spire_server.py), its admin API over the unix socket, the
registration entries in its datastore, the revoke engine and the `passport revoke` CLI driving
the real ``spire-server`` CLI. The entries are the ones spire-controller-manager creates from
the ClusterSPIFFEID this repo renders for an agent (its SPIFFE ID, workload selectors, TTLs and
hint, one entry per node the agent's pods run on, parented to that node's k8s_psat agent ID),
created with ``spire-server entry create``.

The Vault half is real too: OpenBao configured from the dev stack's Vault plan by the hvac
applier, with PostgreSQL behind it and the JWKS from SPIRE's OIDC discovery provider
(tests/support/chain.py); the operator runs with their own short-lived token. (The fake Vault
API of tests/unit/test_revoke_unit.py stays for the calls whose failure it injects.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from components import cli
from components.platform_model import load_platform
from components.render import spire as r
from tests.support.chain import CORTEX, INVOICES, Chain, Spire, chain, oidc_discovery_provider, spire_server
from tests.support.spire_server import SPIRE_SERVER, local_spire_server, run_tool

pytestmark = pytest.mark.e2e

DEV_TD = "dev.agentpassport.internal"
OTHER_TD = "prod.agents.acme-corp.net"
NODES = ("3f0c6a52-node-a", "9b1d7e04-node-b")


def _spire(sock: Path, *args: str) -> dict[str, Any]:
    done = run_tool([str(SPIRE_SERVER), *args, "-socketPath", str(sock), "-output", "json"])
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout))


def _entries(sock: Path, spiffe_id: str) -> list[dict[str, Any]]:
    """``spire-server entry show -spiffeID``: the server's entries for one SPIFFE ID."""
    return list(_spire(sock, "entry", "show", "-spiffeID", spiffe_id).get("entries") or [])


def _register(sock: Path, agent: str, trust_domain: str = DEV_TD) -> tuple[str, list[str]]:
    """The entries spire-controller-manager makes from the agent's rendered ClusterSPIFFEID,
    one per node; returns (SPIFFE ID, entry IDs). ``trust_domain`` moves the SPIFFE ID (and the
    parents) into another trust domain, for a server of that trust domain."""
    platform = load_platform("dev")
    resolved = platform.agent(agent)
    assert resolved is not None
    (reg,) = r.agent_registrations(platform, resolved)
    assert reg["kind"] == "ClusterSPIFFEID"
    spec = reg["spec"]
    spiffe_id = spec["spiffeIDTemplate"].replace(f"spiffe://{DEV_TD}/", f"spiffe://{trust_domain}/")
    ids = []
    for node in NODES:
        parent = f"spiffe://{trust_domain}/spire/agent/k8s_psat/{platform.config.spire_cluster_name}/{node}"
        args = ["entry", "create", "-parentID", parent, "-spiffeID", spiffe_id,
                "-x509SVIDTTL", str(_secs(spec["ttl"])), "-jwtSVIDTTL", str(_secs(spec["jwtTtl"])),
                "-hint", spec["hint"]]
        for selector in spec["workloadSelectorTemplates"]:
            args += ["-selector", selector]
        (result,) = _spire(sock, *args)["results"]
        assert result["status"] == {"code": 0, "message": "OK"}, result
        assert result["entry"]["parent_id"]["path"] == parent.removeprefix(f"spiffe://{trust_domain}")
        ids.append(str(result["entry"]["id"]))
    return spiffe_id, sorted(ids)


def _secs(go: str) -> int:
    match = re.fullmatch(r"(\d+)([smh])", go)
    assert match, go
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]


def _passport_revoke(addr: str, sock: Path, *extra: str) -> int:
    return cli.main(["revoke", "agent-cortex", "--stack", "dev", "--vault-addr", addr,
                     "--spire-server-socket", str(sock), "--spire-server-bin", str(SPIRE_SERVER), *extra])


@pytest.fixture(scope="module")
def spire() -> Iterator[Spire]:
    with spire_server() as s:
        yield s


@pytest.fixture
def vault(spire: Spire) -> Iterator[Chain]:
    """A real OpenBao with the dev plan applied, PostgreSQL behind it, SPIRE's JWKS in front."""
    with oidc_discovery_provider(spire) as jwks_url, chain(spire, jwks_url) as c:
        yield c


@dataclass
class Agents:
    """agent-cortex's token and database lease, and the other agent's, before revocation."""

    cortex_token: str
    cortex_user: str
    cortex_entity: str
    other_token: str

    def cortex_token_valid(self, vault: Chain) -> bool:
        return vault.token_valid(self.cortex_token)


def _logged_in(vault: Chain) -> Agents:
    login = vault.login(CORTEX, vault.jwt(CORTEX))["auth"]
    user = vault.creds(login["client_token"], CORTEX)["data"]["username"]
    other = vault.login(INVOICES, vault.jwt(INVOICES))["auth"]["client_token"]
    vault.creds(other, INVOICES)
    return Agents(login["client_token"], user, login["entity_id"], other)


def _untouched(vault: Chain, agents: Agents) -> None:
    assert agents.cortex_token_valid(vault)
    assert vault.pg.role_exists(agents.cortex_user)
    assert vault.bao.client().read(f"identity/entity/id/{agents.cortex_entity}")["data"]["disabled"] is False


def test_revoke_deletes_the_agents_entries_on_a_real_spire_server(
    spire: Spire, vault: Chain, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    addr = vault.bao.address
    monkeypatch.setenv("VAULT_TOKEN", vault.operator_token())
    cortex = load_platform("dev").agent("agent-cortex")
    assert cortex is not None
    agents = _logged_in(vault)
    # the module's SPIRE server: the one whose keys the Vault trusts
    sock = spire.server.socket
    spiffe_id, cortex_ids = _register(sock, "agent-cortex")
    assert spiffe_id == cortex.identity.spiffe_id == f"spiffe://{DEV_TD}/ns/agents/sa/agent-cortex"
    other_id, other_ids = _register(sock, "invoice-processor")
    assert sorted(e["id"] for e in _entries(sock, spiffe_id)) == cortex_ids

    # dry run: reads the real server, lists exactly these entries, deletes nothing
    assert _passport_revoke(addr, sock) == 0
    out = capsys.readouterr().out
    assert f"spire        server confirmed: trust domain {DEV_TD}" in out.splitlines()
    assert f"spire        would delete 2 registration entries: {', '.join(cortex_ids)}" in out.splitlines()
    assert sorted(e["id"] for e in _entries(sock, spiffe_id)) == cortex_ids
    assert "vault        would revoke 1 lease(s) under db-main/creds/agent-cortex-main-incidents" in out
    _untouched(vault, agents)

    # --yes: agent-cortex's entries are gone from the server, the other agent's remain
    assert _passport_revoke(addr, sock, "--yes") == 0
    out = capsys.readouterr().out
    assert f"spire        deleted 2 registration entries: {', '.join(cortex_ids)}" in out.splitlines()
    assert _entries(sock, spiffe_id) == []
    remaining = _entries(sock, other_id)
    assert sorted(e["id"] for e in remaining) == other_ids
    assert {e["spiffe_id"]["path"] for e in remaining} == {"/ns/finance-agents/sa/invoice-processor"}
    # and the Vault half, on the real OpenBao: lease (database user), token, entity
    assert "vault        revoked 1 lease(s) under db-main/creds/agent-cortex-main-incidents " \
           "(database users dropped)" in out.splitlines()
    assert "vault        revoked 1 token(s) of role agent-agent-cortex" in out.splitlines()
    assert not vault.pg.role_exists(agents.cortex_user)
    assert not agents.cortex_token_valid(vault)
    assert vault.bao.client().read(f"identity/entity/id/{agents.cortex_entity}")["data"]["disabled"] is True
    assert vault.creds(agents.other_token, INVOICES)["data"]["username"].startswith("v-invoice-processor-")

    # again: nothing left to delete, and it says so
    assert _passport_revoke(addr, sock, "--yes") == 0
    out = capsys.readouterr().out
    assert "spire        deleted 0 registration entries: -" in out.splitlines()
    assert "vault        revoked 0 lease(s) under db-main/creds/agent-cortex-main-incidents " \
           "(database users dropped)" in out.splitlines()
    assert sorted(e["id"] for e in _entries(sock, other_id)) == other_ids


def test_revoke_refuses_a_spire_server_of_another_trust_domain_and_deletes_nothing(
    tmp_path: Path, vault: Chain, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    addr = vault.bao.address
    monkeypatch.setenv("VAULT_TOKEN", vault.operator_token())
    agents = _logged_in(vault)
    with local_spire_server(tmp_path, trust_domain=OTHER_TD) as server:
        sock = server.socket
        # the same agent path registered in the other trust domain: not ours to delete
        spiffe_id, ids = _register(sock, "agent-cortex", trust_domain=OTHER_TD)
        assert spiffe_id == f"spiffe://{OTHER_TD}/ns/agents/sa/agent-cortex"
        assert _passport_revoke(addr, sock, "--yes") == 2
        err = capsys.readouterr().err
        assert err.startswith(f"refused: the SPIRE server's trust domain is {OTHER_TD!r}, "
                              f"not this stack's {DEV_TD!r}")
        assert sorted(e["id"] for e in _entries(sock, spiffe_id)) == ids
        _untouched(vault, agents)  # every target is confirmed before any is touched
