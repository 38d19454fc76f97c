"""``passport ca`` on a real spire-server 1.15.3 and spire-agent (join token) on 127.0.0.1.

The server runs the ``local`` stack's rendered server.conf (SPIRE is its own root there, so its
X.509 authorities are the bundle's roots), adapted for a laptop as the drill adapts it
(components/ca_drill.py); the agent runs the rendered VM agent config; this test process is
the workload, with 20-second SVIDs so that its next SVID comes within seconds.

* X.509: ``ca rotate`` leads to the workload's next SVID being signed by the new authority
  while a TLS peer holding the bundle accepts the old and the new SVID (the bundle carries both);
  ``ca compromise`` on the now-old authority removes it from the bundle, and a peer with the new
  bundle refuses the old SVID in a real handshake and accepts the new one.
* JWT: the same; a JWT-SVID signed by the revoked key fails validation against the new JWKS.
* ``ca status`` and the refusals (unknown authority, no --yes, unreachable server) on the real
  server; ``ca drill`` end to end.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from components import cli
from components.ca_drill import NOT_EXERCISED
from components.ca_lifecycle import jwt_key_id, jwt_trusted, x509_trusted
from components.ca_runner import SpireAdmin
from components.platform_model import Platform, load_platform
from tests.support.ca import (
    envoy_accepts,
    envoy_gateway,
    issuer_key_id,
    join_token_agent,
    jwks,
    local_server,
    tls_peer_accepts,
)
from tests.support.chain import Workload, oidc_discovery_provider
from tests.support.tools import require_tool, wait_until

pytestmark = pytest.mark.e2e

SVID_TTL_S = 20
STACK = "local"


@pytest.fixture(scope="module")
def platform() -> Platform:
    return load_platform(STACK)


@pytest.fixture(scope="module")
def server(platform: Platform) -> Iterator[object]:
    with local_server(platform) as s:
        yield s


@pytest.fixture(scope="module")
def workload(server: object, platform: Platform) -> Iterator[Workload]:
    with join_token_agent(server, platform, "/ns/agents/sa/agent-cortex", SVID_TTL_S) as w:  # type: ignore[arg-type]
        yield w


@pytest.fixture(scope="module")
def envoy(workload: Workload, platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The rendered gateway listener of service ``inference`` on real Envoy, its SVID and
    bundle from the workload's spire-agent over SDS."""
    with envoy_gateway(platform, "inference", workload.socket, tmp_path_factory.mktemp("envoy")) as port:
        yield port


@pytest.fixture(scope="module")
def admin(server: object) -> SpireAdmin:
    return SpireAdmin(str(require_tool("spire-server")), str(server.socket))  # type: ignore[attr-defined]


def passport(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def ca(server: object, *args: str) -> tuple[int, str, str]:
    return passport("ca", *args, "--stack", STACK, "--spire-server-socket", str(server.socket),  # type: ignore[attr-defined]
                    "--spire-server-bin", str(require_tool("spire-server")))


def svid(workload: Workload, where: Path) -> tuple[str, str, str]:
    """(chain PEM, cert file, key file) of the workload's current X.509-SVID, copied under ``where``."""
    cert, key = workload.x509(where)
    return Path(cert).read_text(), cert, key


def mint(server: object, path: str, where: Path) -> tuple[str, str, str]:
    """An X.509-SVID minted by the server under its active authority, valid for 10 minutes."""
    where.mkdir(parents=True)
    server.cli("x509", "mint", "-spiffeID", f"spiffe://local.agentpassport.internal{path}",  # type: ignore[attr-defined]
               "-ttl", "600s", "-write", str(where))
    return (where / "svid.pem").read_text(), str(where / "svid.pem"), str(where / "key.pem")


# --------------------------------------------------------------------------- status and refusals


def test_status_lists_the_live_authorities(server: object, admin: SpireAdmin) -> None:
    state = admin.state()
    active = state.slot("x509", "active")
    jwt_active = state.slot("jwt", "active")
    assert active is not None and jwt_active is not None and active.in_bundle
    code, out, err = ca(server, "status", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["spire_queried"] is True and doc["trust_domain"] == "local.agentpassport.internal"
    rows = {(r["layer"], r["id"]): r for r in doc["authorities"]}
    x = rows[("spire-x509", active.id)]
    assert x["state"] == "active" and x["custody"] == "disk (spire-server data volume)"
    assert x["not_after"] is not None and 0 < x["time_left_seconds"] <= 24 * 3600  # caTtl 24h
    assert x["next_action"] == "SPIRE prepares the next authority" and x["next_date"] is not None
    assert rows[("spire-jwt", jwt_active.id)]["state"] == "active"
    code, table, _ = ca(server, "status")
    assert code == 0 and active.id in table and table.startswith("LAYER")


def test_refusals_are_one_line(server: object, tmp_path: Path) -> None:
    code, out, err = ca(server, "compromise", "--authority", "0123abcd")
    assert code == 2 and err.startswith("error: unknown authority '0123abcd': this server has ") and out == ""
    assert len(err.strip().splitlines()) == 1
    code, _, err = passport("ca", "status", "--stack", STACK, "--spire-server-socket", str(tmp_path / "none.sock"),
                            "--spire-server-bin", str(require_tool("spire-server")))
    assert (code, err.strip()) == (2, f"error: the SPIRE server cannot be reached: no admin socket at "
                                      f"{tmp_path / 'none.sock'}")


# --------------------------------------------------------------------------- X.509


def test_x509_rotation_then_compromise(server: object, workload: Workload, admin: SpireAdmin, envoy: int,
                                       tmp_path: Path) -> None:
    server_id = tmp_path / "server-svid"
    old = admin.state().slot("x509", "active")
    assert old is not None
    current, _, _ = svid(workload, tmp_path / "current")
    assert issuer_key_id(current) == old.id
    # an SVID of the old authority that outlives the test (the workload's own live 20 s): the
    # peers' refusals below must be about the authority, not about an expired certificate
    before, before_cert, before_key = mint(server, "/ns/agents/sa/agent-cortex", tmp_path / "before")
    assert issuer_key_id(before) == old.id
    wait_until(lambda: envoy_accepts(envoy, (before_cert, before_key)), 60, "Envoy's SVID and bundle over SDS")

    # without --yes nothing happens, even to the active authority
    code, out, _ = ca(server, "compromise", "--authority", old.id)
    assert code == 0 and "dry run: nothing was changed" in out
    assert admin.state().slot("x509", "active") == old

    # the rotation runs while the workload keeps calling through Envoy with its current SVID; the
    # propagation wait is longer than the agent's sync interval (5 s), as the default one is
    result: dict[str, tuple[int, str, str]] = {}
    rotation = threading.Thread(target=lambda: result.setdefault("rotate", ca(
        server, "rotate", "--authority", "x509", "--propagation", "6s", "--overlap", f"{SVID_TTL_S}s", "--wait",
        "--state-dir", str(tmp_path / "journal"))))
    rotation.start()
    calls: list[tuple[str, bool]] = []
    try:
        while rotation.is_alive():
            _, cert, key = svid(workload, tmp_path / "during")
            calls.append((issuer_key_id(Path(cert).read_text()), envoy_accepts(envoy, (cert, key))))
            time.sleep(0.5)
    finally:
        rotation.join(timeout=180)
    code, out, err = result["rotate"]
    assert code == 0, err
    assert "prepared" in out and "activated" in out and out.rstrip().splitlines()[-1].startswith("done: ")
    state = admin.state()
    new = state.slot("x509", "active")
    assert new is not None and new.id != old.id
    assert [ok for _, ok in calls] == [True] * len(calls) and len(calls) >= 10, calls  # Envoy kept accepting
    assert {issuer for issuer, _ in calls} == {old.id, new.id}  # ... SVIDs of the old and then the new authority
    assert state.slot("x509", "old") is not None and state.slot("x509", "old").id == old.id  # type: ignore[union-attr]
    assert len(state.x509_roots_pem) == 2  # the bundle carries both through the overlap

    def next_svid_is_signed_by_the_new_authority() -> bool:
        return issuer_key_id(svid(workload, tmp_path / "probe")[0]) == new.id

    wait_until(next_svid_is_signed_by_the_new_authority, 90, "the workload's next SVID under the new authority",
               interval_s=1)
    assert issuer_key_id(svid(workload, tmp_path / "next")[0]) == new.id
    after, after_cert, after_key = mint(server, "/ns/agents/sa/agent-cortex", tmp_path / "after")
    assert issuer_key_id(after) == new.id
    _, *peer_files = mint(server, "/peer", server_id)
    peer = (peer_files[0], peer_files[1])
    # during the overlap a peer with the bundle accepts both
    assert tls_peer_accepts(list(state.x509_roots_pem), peer, (before_cert, before_key), tmp_path / "tls1")
    assert tls_peer_accepts(list(state.x509_roots_pem), peer, (after_cert, after_key), tmp_path / "tls2")
    assert envoy_accepts(envoy, (before_cert, before_key)) and envoy_accepts(envoy, (after_cert, after_key))

    code, out, err = ca(server, "compromise", "--authority", old.id, "--yes", "--timeout", "60s")
    assert code == 0, err
    assert f"tainted    {old.id}" in out and f"revoked    {old.id}" in out
    assert "resigned   all 1 agent(s) hold an SVID signed after the taint" in out  # the bounded wait saw it
    assert "at most 15m" in out  # the longest X.509-SVID TTL of the stack: what cannot be recalled
    final = admin.state()
    revoked = final.find(old.id)
    assert revoked is not None and not revoked.in_bundle and len(final.x509_roots_pem) == 1
    code, _, err = ca(server, "compromise", "--authority", old.id, "--yes")
    assert (code, err.strip()) == (2, f"error: {old.id} is already revoked: it is no longer in the bundle")
    assert not x509_trusted(before, final.x509_roots_pem) and x509_trusted(after, final.x509_roots_pem)
    # real handshakes: a peer with the new bundle refuses the revoked authority's SVID ...
    assert not tls_peer_accepts(list(final.x509_roots_pem), peer, (before_cert, before_key), tmp_path / "tls3")
    assert tls_peer_accepts(list(final.x509_roots_pem), peer, (after_cert, after_key), tmp_path / "tls4")
    # ... and so does Envoy once the agent has streamed it the new bundle
    wait_until(lambda: not envoy_accepts(envoy, (before_cert, before_key)), 60,
               "Envoy to refuse the revoked authority's SVID")
    assert envoy_accepts(envoy, (after_cert, after_key))
    # never the only active authority
    code, out, err = ca(server, "compromise", "--authority", new.id, "--yes", "--propagation", "6s")
    assert code == 0, err
    assert "prepared" in out and "activated" in out  # a replacement first
    replacement = admin.state().slot("x509", "active")
    assert replacement is not None and replacement.id not in (old.id, new.id)


# --------------------------------------------------------------------------- JWT


def test_jwt_rotation_then_compromise(server: object, workload: Workload, admin: SpireAdmin, tmp_path: Path) -> None:
    """Validated against the JWKS that SPIRE's OIDC discovery provider (rendered config, reading
    this server) serves, as Vault and AWS STS fetch it."""
    old = admin.state().slot("jwt", "active")
    assert old is not None
    _, before = workload.jwt("vault")
    with oidc_discovery_provider(SimpleNamespace(server=server)) as url:  # type: ignore[arg-type]
        assert jwt_key_id(before) == old.id and jwt_trusted(before, jwks(url))
        code, out, err = ca(server, "rotate", "--authority", "jwt", "--propagation", "2s", "--overlap", "1s",
                            "--wait", "--state-dir", str(tmp_path / "journal"))
        assert code == 0, err
        new = admin.state().slot("jwt", "active")
        assert new is not None and new.id != old.id
        wait_until(lambda: {old.id, new.id} <= dict(jwks(url)).keys(), 30, "the JWKS to carry both keys")
        assert jwt_trusted(before, jwks(url))  # during the overlap the old key still verifies
        code, out, err = ca(server, "compromise", "--authority", old.id, "--yes")
        assert code == 0, err
        assert "JWKS" in out and f"revoked    {old.id}" in out
        assert old.id not in dict(admin.state().jwt_keys)
        wait_until(lambda: old.id not in dict(jwks(url)), 30, "the JWKS to drop the revoked key")
        assert not jwt_trusted(before, jwks(url))  # signed by the revoked key: refused by the new JWKS

        def fresh_jwt_under_new_key() -> bool:
            return jwt_key_id(workload.jwt("vault")[1]) == new.id

        wait_until(fresh_jwt_under_new_key, 60, "a JWT-SVID signed by the new key", interval_s=1)
        assert jwt_trusted(workload.jwt("vault")[1], jwks(url))


# --------------------------------------------------------------------------- drill


def test_drill_passes_and_files_a_report(tmp_path: Path) -> None:
    report = tmp_path / "drill.json"
    code, out, err = passport("ca", "drill", "--stack", "dev", "--report", str(report),
                              "--spire-server-bin", str(require_tool("spire-server")),
                              "--spire-agent-bin", str(require_tool("spire-agent")))
    assert code == 0, out + err
    doc = json.loads(report.read_text())
    assert doc["result"] == "PASS" and doc["stack"] == "dev"
    assert [s["name"] for s in doc["steps"]] == [
        "start throwaway spire-server", "start throwaway spire-agent", "mint X.509-SVID (before)",
        "mint JWT-SVID (before)", "rotate x509", "mint X.509-SVID (after)", "compromise old x509",
        "workload re-signed under the active authority", "peer refuses the revoked X.509 authority", "rotate jwt",
        "mint JWT-SVID (after)", "compromise old jwt", "JWKS refuses the revoked JWT key"]
    assert all(s["ok"] for s in doc["steps"]) and "1.15.3" in doc["steps"][0]["detail"]
    assert "all 1 agent(s) hold an SVID signed after the taint" in doc["steps"][6]["detail"]
    assert doc["not_exercised"] == NOT_EXERCISED and "result: PASS" in out


# --------------------------------------------------------------------------- under an UpstreamAuthority


def test_with_an_upstream_ca_the_local_authority_is_rotated_and_the_compromise_path_is_spelled_out(
        tmp_path: Path) -> None:
    """The dev stack's server signs under a ``disk`` UpstreamAuthority (tests/support/spire_server.py):
    SPIRE refuses to taint its own X.509 authorities there, so the command prints the order of
    the upstream procedure instead; a planned rotation still works."""
    from tests.support.spire_server import local_spire_server

    require_tool("spire-server")
    with local_spire_server(tmp_path) as server:
        def dev(*args: str) -> tuple[int, str, str]:
            return passport("ca", *args, "--stack", "dev", "--spire-server-socket", str(server.socket),
                            "--spire-server-bin", str(require_tool("spire-server")))

        admin = SpireAdmin(str(require_tool("spire-server")), str(server.socket))
        active = admin.state().slot("x509", "active")
        assert active is not None and active.upstream_ski  # signed by the upstream intermediate
        code, _, err = dev("rotate", "--authority", "x509", "--propagation", "1s", "--overlap", "1s", "--wait",
                             "--state-dir", str(tmp_path / "journal"))
        assert code == 0, err
        state = admin.state()
        new, old = state.slot("x509", "active"), state.slot("x509", "old")
        assert new is not None and old is not None and new.id != active.id and old.id == active.id
        assert len(state.x509_roots_pem) == 1  # the bundle is the upstream root: a local rotation does not change it
        code, _, err = dev("compromise", "--authority", old.id, "--yes")
        assert code == 2 and "SPIRE refuses to taint or revoke its local X.509 authorities" in err
        assert "issue a new upstream intermediate (trust.upstream), `pulumi up`, `passport ca rotate" in err
        code, _, err = dev("compromise", "--authority", old.upstream_ski, "--yes")
        assert code == 2 and f"upstream {old.upstream_ski} signs the active X.509 authority" in err
        assert admin.state().find(old.id) == old  # nothing was tainted or revoked


def test_an_upstream_root_that_signs_spire_directly_is_rotated_out_of_spires_bundle(tmp_path: Path) -> None:
    """trust.upstream tls/aws-pca with the root signing SPIRE's CA: after a new upstream and a
    rotation, the old root (a bundle row and the old authority's upstream) goes through the
    upstream compromise plan; a run interrupted after the taint resumes without tainting again
    (the server refuses a second taint: "root CA is already tainted"); once the upstream no longer
    returns the old root (previousRoots removed first), the next CA does not bring it back."""
    import datetime as dt
    import subprocess

    from cryptography.hazmat.primitives import serialization

    from components.ca_lifecycle import ski_hex
    from components.ca_runner import compromise
    from components.render.trust import trust_profile
    from tests.support.spire_server import local_server_conf, server_process, wait_healthy
    from tests.unit.test_trust_x509 import _chain

    binary = str(require_tool("spire-server"))
    pem = serialization.Encoding.PEM
    profile = trust_profile(load_platform("dev").config)
    old_root, new_root = (_chain(profile, 24, now=dt.datetime.now(dt.UTC)).root for _ in range(2))
    upstream = tmp_path / "upstream"
    upstream.mkdir()

    def serve(root: object, bundle: list[object]) -> None:  # what the disk UpstreamAuthority reads
        (upstream / "chain.pem").write_bytes(root.cert.public_bytes(pem))  # type: ignore[attr-defined]
        (upstream / "bundle.pem").write_bytes(b"".join(r.cert.public_bytes(pem) for r in bundle))  # type: ignore[attr-defined]
        (upstream / "key.pem").write_bytes(root.key.private_bytes(  # type: ignore[attr-defined]
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    serve(old_root, [old_root])
    conf, sock = local_server_conf(tmp_path, upstream)
    (tmp_path / "server.conf").write_text(json.dumps(conf))
    with server_process(tmp_path / "server.conf", tmp_path / "server.log") as proc:
        wait_healthy(proc, sock, tmp_path / "server.log")
        admin = SpireAdmin(binary, str(sock))
        old_ski = ski_hex(old_root.cert)

        def dev(*args: str) -> tuple[int, str, str]:
            return passport("ca", *args, "--stack", "dev", "--spire-server-socket", str(sock),
                            "--spire-server-bin", binary, "--state-dir", str(tmp_path / "ca"))

        serve(new_root, [old_root, new_root])  # the new upstream, the old root in previousRoots
        code, _, err = dev("rotate", "--authority", "x509", "--propagation", "1s", "--overlap", "1s", "--wait")
        assert code == 0, err
        old = admin.state().slot("x509", "old")
        assert old is not None and old.upstream_ski == old_ski
        serve(new_root, [new_root])  # previousRoots emptied, `pulumi up`

        class Interrupted(SpireAdmin):
            def upstream(self, action: str, ski: str) -> None:
                if action == "revoke":
                    raise KeyboardInterrupt  # Ctrl-C after the taint (no agent here, so no wait to cut)
                super().upstream(action, ski)

        with pytest.raises(KeyboardInterrupt):
            compromise(load_platform("dev"), Interrupted(binary, str(sock)), old_ski, io.StringIO(), yes=True,
                       state_dir=tmp_path / "ca")
        root = admin.state().find(old_ski)
        assert root is not None and root.tainted
        again = subprocess.run([binary, "upstreamauthority", "taint", "-subjectKeyID", old_ski, "-socketPath",
                                str(sock)], capture_output=True, text=True, timeout=30, check=False)
        assert again.returncode != 0 and "already tainted" in again.stderr + again.stdout

        code, out, err = dev("compromise", "--authority", old_ski, "--yes", "--timeout", "1s")
        assert code == 0, err
        assert "(the whole --timeout)" not in out and "snapshot of 0 agent SVID(s)" in out
        assert f"revoked    upstream {old_ski}" in out
        assert admin.state().find(old_ski) is None
        admin.prepare("x509")  # SPIRE's next CA: the upstream no longer returns the old root
        assert admin.state().find(old_ski) is None
