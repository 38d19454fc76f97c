"""The rendered SPIRE configuration against real SPIRE binaries (built by scripts/bootstrap-tools).

* ``spire-agent validate`` / ``spire-server validate`` on the rendered files, adapting only
  filesystem paths where a check reads them (``validate`` parses the file, the server/agent
  sections and the plugin list; it does not load plugins).
* e2e: a real ``spire-server run`` on 127.0.0.1 with the dev server.conf, its ``disk``
  UpstreamAuthority fed a chain built with ``cryptography`` following the TrustDomain profile.
  Adapted for a machine without Kubernetes or AWS (and only that): paths under a temporary
  directory, ports free on 127.0.0.1, the k8s_psat/aws_iid node attestors and the k8sbundle
  notifier replaced by join_token / removed (they need a cluster or AWS). The minted X.509-SVID
  must chain to our root through our intermediate, which proves the path lengths and key
  usages of the profile are what SPIRE needs.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store

from components.cli import load_platform
from components.render import spire as r
from components.render.trust import trust_profile
from components.render.yamlout import dump_json

TOOLS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agent-passport/tools/bin"
SPIRE_SERVER = TOOLS / "spire-server"
SPIRE_AGENT = TOOLS / "spire-agent"
STACKS = ("dev", "staging", "prod")
ENV = {
    "SPIRE_DB_CONNECTION": "dbname=spire host=127.0.0.1 user=spire password=x sslmode=disable",
    "SPIRE_UPSTREAM_PCA_ARN": "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/"
    "00000000-0000-0000-0000-000000000000",
}

needs_server = pytest.mark.skipif(
    not SPIRE_SERVER.exists(),
    reason=f"spire-server not built ({SPIRE_SERVER}); run scripts/bootstrap-tools --only spire",
)
needs_agent = pytest.mark.skipif(
    not SPIRE_AGENT.exists(), reason=f"spire-agent not built ({SPIRE_AGENT}); run scripts/bootstrap-tools --only spire"
)


def _run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, **kw)


@needs_agent
@pytest.mark.parametrize("stack", STACKS)
def test_spire_agent_validates_the_rendered_agent_conf(stack: str, tmp_path: Path) -> None:
    conf = tmp_path / "agent.conf"
    conf.write_text(dump_json(r.agent_config(load_platform(stack))))
    run = _run([str(SPIRE_AGENT), "validate", "-config", str(conf)])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "configuration file is valid" in run.stdout + run.stderr


@needs_agent
@pytest.mark.parametrize("kind", ["vm-aws_iid", "vm-join_token", "windows"])
def test_spire_agent_validates_the_host_agent_confs(kind: str, tmp_path: Path) -> None:
    data = r.host_agent_config(load_platform("dev"), kind)
    if "join_token_file" in data["agent"]:  # validate reads it: the one path adapted
        token = tmp_path / "join-token"
        token.write_text("00000000-0000-0000-0000-000000000000\n")
        data["agent"]["join_token_file"] = str(token)
    conf = tmp_path / "agent.conf"
    conf.write_text(dump_json(data))
    run = _run([str(SPIRE_AGENT), "validate", "-config", str(conf)])
    assert run.returncode == 0, run.stdout + run.stderr


@needs_agent
def test_spire_agent_validate_can_fail(tmp_path: Path) -> None:
    """Positive control: the binary does reject a broken file (so the test above can fail)."""
    conf = r.agent_config(load_platform("dev"))
    conf["agent"]["trust_domain"] = "Not A Trust Domain"
    path = tmp_path / "agent.conf"
    path.write_text(dump_json(conf))
    run = _run([str(SPIRE_AGENT), "validate", "-config", str(path)])
    assert run.returncode != 0


@needs_server
@pytest.mark.parametrize("stack", STACKS)
def test_spire_server_validates_the_rendered_server_conf(stack: str, tmp_path: Path) -> None:
    platform = load_platform(stack)
    conf = tmp_path / "server.conf"
    conf.write_text(dump_json(r.server_config(platform)))
    args = [str(SPIRE_SERVER), "validate", "-config", str(conf)]
    if r.needs_expand_env(platform.config):
        args.append("-expandEnv")
    run = _run(args, env={**os.environ, **ENV})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "configuration file is valid" in run.stdout + run.stderr


@needs_server
@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (("server", "ca_ttl"), "1d", 'unknown unit "d"'),  # why durations go through go_duration()
        (("server", "ca_key_type"), "ec-p999", "ca_key_type"),
        (("plugins", "NodeAttestor"), [{"k8s-psat": {"plugin_data": {}}}], 'no built-in plugin "k8s-psat"'),
    ],
)
def test_spire_server_validate_can_fail(path: tuple[str, str], value: Any, error: str, tmp_path: Path) -> None:
    """Positive controls: spire-server validate checks durations, key types and plugin names."""
    conf = r.server_config(load_platform("dev"))
    conf[path[0]][path[1]] = value
    file = tmp_path / "server.conf"
    file.write_text(dump_json(conf))
    run = _run([str(SPIRE_SERVER), "validate", "-config", str(file)])
    assert run.returncode != 0
    assert error in run.stdout + run.stderr


# --------------------------------------------------------------------------- e2e: a real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_server_conf(tmp: Path, upstream: Path) -> tuple[dict[str, Any], Path]:
    conf = copy.deepcopy(r.server_config(load_platform("dev")))
    socket_path = tmp / "api.sock"
    server = conf["server"]
    server.update(
        bind_address="127.0.0.1",
        bind_port=str(_free_port()),
        data_dir=str(tmp / "data"),
        socket_path=str(socket_path),
        log_format="text",
    )
    plugins = conf["plugins"]
    plugins["DataStore"][0]["sql"]["plugin_data"]["connection_string"] = str(tmp / "data" / "datastore.sqlite3")
    plugins["KeyManager"][0]["disk"]["plugin_data"]["keys_path"] = str(tmp / "data" / "keys.json")
    ua = plugins["UpstreamAuthority"][0]["disk"]["plugin_data"]
    for key in ("cert_file_path", "key_file_path", "bundle_file_path"):
        ua[key] = str(upstream / Path(ua[key]).name)
    plugins["NodeAttestor"] = [{"join_token": {"plugin_data": {}}}]  # k8s_psat/aws_iid need a cluster/AWS
    del plugins["Notifier"]  # k8sbundle needs the Kubernetes API
    conf["health_checks"].update(bind_address="127.0.0.1", bind_port=str(_free_port()))
    conf["telemetry"]["Prometheus"].update(host="127.0.0.1", port=_free_port())
    return conf, socket_path


@contextlib.contextmanager
def _server(conf_path: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([str(SPIRE_SERVER), "run", "-config", str(conf_path)], stdout=out, stderr=out)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.mark.e2e
@needs_server
def test_real_spire_server_signs_under_our_intermediate(tmp_path: Path) -> None:
    from tests.test_trust_x509 import _chain

    platform = load_platform("dev")
    profile = trust_profile(platform.config)
    chain = _chain(profile, 24, now=dt.datetime.now(dt.UTC))
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    pem = serialization.Encoding.PEM
    (upstream / "chain.pem").write_bytes(chain.intermediate.cert.public_bytes(pem) + chain.root.cert.public_bytes(pem))
    (upstream / "bundle.pem").write_bytes(chain.root.cert.public_bytes(pem))
    (upstream / "key.pem").write_bytes(
        chain.intermediate.key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    conf, sock = _local_server_conf(tmp_path, upstream)
    (tmp_path / "svid").mkdir()
    conf_path = tmp_path / "server.conf"
    conf_path.write_text(json.dumps(conf))
    log = tmp_path / "server.log"
    with _server(conf_path, log) as proc:
        deadline = time.monotonic() + 60
        while True:
            health = _run([str(SPIRE_SERVER), "healthcheck", "-socketPath", str(sock)])
            if health.returncode == 0:
                break
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        agent = platform.agent("agent-cortex")
        assert agent is not None
        minted = _run(
            [
                str(SPIRE_SERVER),
                "x509",
                "mint",
                "-socketPath",
                str(sock),
                "-spiffeID",
                agent.identity.spiffe_id,
                "-ttl",
                r.go_duration(agent.identity.x509_svid_ttl),
                "-write",
                str(tmp_path / "svid"),
            ]
        )
        assert minted.returncode == 0, minted.stdout + minted.stderr + log.read_text()
        bundle = _run([str(SPIRE_SERVER), "bundle", "show", "-socketPath", str(sock)])
        assert bundle.returncode == 0, bundle.stderr
    certs = x509.load_pem_x509_certificates((tmp_path / "svid" / "svid.pem").read_bytes())
    leaf, intermediates = certs[0], certs[1:]
    # the manifest TTL, plus the 10 s SPIRE backdates NotBefore by for clock skew
    span = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert dt.timedelta(minutes=15) <= span <= dt.timedelta(minutes=15, seconds=10)
    # SPIRE's bundle is our root (the disk UpstreamAuthority's bundle_file_path)
    bundle_roots = x509.load_pem_x509_certificates(bundle.stdout.encode())
    assert chain.root.cert in bundle_roots
    verifier = PolicyBuilder().store(Store([chain.root.cert])).build_client_verifier()
    verified = verifier.verify(leaf, [*intermediates, chain.intermediate.cert])
    uris = [n.value for n in verified.subjects or [] if isinstance(n, x509.UniformResourceIdentifier)]
    assert uris == [agent.identity.spiffe_id]
    # the chain SPIRE hands out goes through our intermediate to our root
    assert verified.chain[-1] == chain.root.cert
    assert chain.intermediate.cert in verified.chain
