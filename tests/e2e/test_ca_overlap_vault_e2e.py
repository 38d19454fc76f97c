"""A root rotation against a real OpenBao 2.7.2 (cert auth over mutual TLS, 127.0.0.1): the
login role's ``certificate`` is what the program renders from ``trust.previousRoots``
(:func:`components.render.trust.trust_bundle_with_previous`, asserted to reach
``CertAuthBackendRole.certificate`` in tests/graph/test_ca_overlap_graph.py).

Two real spire-servers of the same trust domain stand for the trust domain before and after
the root rotation (each signs under its own ``disk`` upstream root, tests/support/spire_server.py).
During the overlap an X.509-SVID from either logs in; after it (previousRoots emptied) the old
root's SVID is refused and the new one still logs in.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hvac.exceptions
import pytest

from components.render.trust import pem_blocks, trust_bundle_with_previous
from tests.support.bao import Bao, bao_dev_server
from tests.support.chain import Spire, spire_server

pytestmark = pytest.mark.e2e

MOUNT, ROLE = "spiffe-cert", "agent-cortex"
DNS = "agent-cortex.agents.svc"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Spire, Spire]]:
    with spire_server() as before, spire_server() as after:
        yield before, after


@pytest.fixture(scope="module")
def bao() -> Iterator[Bao]:
    with bao_dev_server(tls=True) as b:
        b.client().sys.enable_auth_method("cert", path=MOUNT)
        yield b


def role(bao: Bao, certificate: str, spiffe_id: str) -> None:
    """The login role as the program configures it (the fields under test: the bundle it trusts
    and the one SPIFFE ID it admits)."""
    bao.client().write_data(f"auth/{MOUNT}/certs/{ROLE}", data={
        "certificate": certificate, "allowed_uri_sans": [spiffe_id], "token_ttl": 900})


def logs_in(bao: Bao, cert: tuple[str, str]) -> bool:
    try:
        out = bao.client(token="", cert=cert).write_data(f"auth/{MOUNT}/login", data={"name": ROLE})
    except (hvac.exceptions.VaultError, OSError):
        return False
    return bool(out.get("auth", {}).get("client_token"))


def test_cert_auth_trusts_both_roots_during_the_overlap_and_only_the_new_one_after(
        servers: tuple[Spire, Spire], bao: Bao, tmp_path: Path) -> None:
    before, after = servers
    assert before.trust_domain == after.trust_domain
    old_root, new_root = before.server.upstream.root_pem.decode(), after.server.upstream.root_pem.decode()
    assert old_root != new_root
    spiffe_id = before.spiffe_id("/ns/agents/sa/agent-cortex")
    old_svid = before.x509(spiffe_id, tmp_path / "old", dns=DNS)
    new_svid = after.x509(spiffe_id, tmp_path / "new", dns=DNS)

    # before the rotation: only the old root
    role(bao, old_root, spiffe_id)
    assert logs_in(bao, old_svid) and not logs_in(bao, new_svid)  # the control: a root not listed is refused

    # the overlap: trust.previousRoots = [old root]
    during = trust_bundle_with_previous(new_root, [old_root])
    assert pem_blocks(during) == pem_blocks(new_root) + pem_blocks(old_root)
    role(bao, during, spiffe_id)
    assert logs_in(bao, old_svid) and logs_in(bao, new_svid)

    # after it: trust.previousRoots emptied
    role(bao, trust_bundle_with_previous(new_root, []), spiffe_id)
    assert not logs_in(bao, old_svid) and logs_in(bao, new_svid)
