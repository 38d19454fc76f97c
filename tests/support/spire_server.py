"""A real ``spire-server run`` on 127.0.0.1 for e2e tests (shared by the SPIRE and revoke tests).

The server runs the rendered dev ``server.conf`` adapted for a machine without Kubernetes or
AWS, and only that: paths under a temporary directory (the admin API socket included), free
ports on 127.0.0.1, the k8s_psat/aws_iid node attestors replaced by join_token and the
k8sbundle notifier removed (they need a cluster or AWS). Its ``disk`` UpstreamAuthority is fed
a chain built with ``cryptography`` following the stack's TrustDomain profile. Startup waits for
``spire-server healthcheck`` with a deadline; the server is always stopped.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from components.platform_model import load_platform
from components.render import spire as r
from components.render.trust import trust_profile
from tests.support.processes import stop
from tests.support.tools import free_port, needs

TOOLS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agent-passport/tools/bin"
SPIRE_SERVER = TOOLS / "spire-server"
SPIRE_AGENT = TOOLS / "spire-agent"
STARTUP_DEADLINE_S = 60.0

needs_server = needs(
    not SPIRE_SERVER.exists(),
    reason=f"spire-server not built ({SPIRE_SERVER}); run scripts/bootstrap-tools --only spire",
)


def run_tool(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, **kw)



def local_server_conf(tmp: Path, upstream: Path, trust_domain: str | None = None,
                      log_format: str = "text") -> tuple[dict[str, Any], Path]:
    """The rendered dev server.conf, adapted as the module docstring says; (conf, admin socket).

    ``trust_domain`` replaces the stack's trust domain (to stand up another trust domain's server);
    ``log_format`` is text for the tests that read the log, ``json`` as rendered (the audit e2e).
    """
    conf = copy.deepcopy(r.server_config(load_platform("dev")))
    socket_path = tmp / "api.sock"
    server = conf["server"]
    server.update(
        bind_address="127.0.0.1",
        bind_port=str(free_port()),
        data_dir=str(tmp / "data"),
        socket_path=str(socket_path),
        log_format=log_format,
    )
    if trust_domain is not None:
        server["trust_domain"] = trust_domain
    plugins = conf["plugins"]
    plugins["DataStore"][0]["sql"]["plugin_data"]["connection_string"] = str(tmp / "data" / "datastore.sqlite3")
    plugins["KeyManager"][0]["disk"]["plugin_data"]["keys_path"] = str(tmp / "data" / "keys.json")
    ua = plugins["UpstreamAuthority"][0]["disk"]["plugin_data"]
    for key in ("cert_file_path", "key_file_path", "bundle_file_path"):
        ua[key] = str(upstream / Path(ua[key]).name)
    plugins["NodeAttestor"] = [{"join_token": {"plugin_data": {}}}]  # k8s_psat/aws_iid need a cluster/AWS
    del plugins["Notifier"]  # k8sbundle needs the Kubernetes API
    conf["health_checks"].update(bind_address="127.0.0.1", bind_port=str(free_port()))
    conf["telemetry"]["Prometheus"].update(host="127.0.0.1", port=free_port())
    return conf, socket_path


@dataclass(frozen=True)
class UpstreamChain:
    root_pem: bytes
    chain: Any
    """tests.unit.test_trust_x509.Chain: root, intermediate (the disk UpstreamAuthority), SPIRE CA."""


def write_upstream(where: Path, trust_domain: str | None = None) -> UpstreamChain:
    """Root + intermediate for the disk UpstreamAuthority, after the dev stack's TrustDomain profile."""
    from tests.unit.test_trust_x509 import _chain

    profile = trust_profile(load_platform("dev").config)
    if trust_domain is not None:
        profile = dataclasses.replace(profile, trust_domain=trust_domain)
    chain = _chain(profile, 24, now=dt.datetime.now(dt.UTC))
    where.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    root = chain.root.cert.public_bytes(pem)
    (where / "chain.pem").write_bytes(chain.intermediate.cert.public_bytes(pem) + root)
    (where / "bundle.pem").write_bytes(root)
    (where / "key.pem").write_bytes(
        chain.intermediate.key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return UpstreamChain(root, chain)


@contextlib.contextmanager
def server_process(conf_path: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``spire-server run -config conf_path``, always terminated (then killed) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen([str(SPIRE_SERVER), "run", "-config", str(conf_path)], stdout=out, stderr=out)
        try:
            yield proc
        finally:
            stop(proc, grace_s=20)


def wait_healthy(proc: subprocess.Popen[bytes], sock: Path, log: Path, deadline_s: float = STARTUP_DEADLINE_S) -> None:
    """Until ``spire-server healthcheck`` on the admin socket passes; fails with the server log."""
    deadline = time.monotonic() + deadline_s
    while True:
        health = run_tool([str(SPIRE_SERVER), "healthcheck", "-socketPath", str(sock)])
        if health.returncode == 0:
            return
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)


@dataclass(frozen=True)
class LocalServer:
    proc: subprocess.Popen[bytes]
    socket: Path
    log: Path
    upstream: UpstreamChain


@contextlib.contextmanager
def local_spire_server(tmp: Path, trust_domain: str | None = None, log_format: str = "text") -> Iterator[LocalServer]:
    """A healthy real spire-server (dev config adapted for 127.0.0.1 under ``tmp``), stopped on exit."""
    upstream = write_upstream(tmp / "upstream", trust_domain)
    conf, sock = local_server_conf(tmp, tmp / "upstream", trust_domain, log_format)
    conf_path = tmp / "server.conf"
    conf_path.write_text(json.dumps(conf))
    log = tmp / "server.log"
    with server_process(conf_path, log) as proc:
        wait_healthy(proc, sock, log)
        yield LocalServer(proc, sock, log, upstream)
