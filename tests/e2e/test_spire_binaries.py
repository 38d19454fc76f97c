"""The rendered SPIRE configuration against real SPIRE binaries (built by scripts/bootstrap-tools).

* ``spire-agent validate`` / ``spire-server validate`` on the rendered files, adapting only
  filesystem paths where a check reads them (``validate`` parses the file, the server/agent
  sections and the plugin list; it does not load plugins).
* e2e: a real ``spire-server run`` on 127.0.0.1 with the dev server.conf (tests/support/spire_server.py:
  its ``disk`` UpstreamAuthority fed a chain built with ``cryptography`` following the
  TrustDomain profile, adapted for a machine without Kubernetes or AWS). The minted X.509-SVID
  must chain to our root through our intermediate, which proves the path lengths and key
  usages of the profile are what SPIRE needs.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from components.platform_model import load_platform
from components.render import spire as r
from components.render.yamlout import dump_json
from tests.support.spire_server import SPIRE_AGENT, SPIRE_SERVER, local_spire_server, needs_server
from tests.support.spire_server import run_tool as _run
from tests.support.tools import needs

STACKS = ("dev", "staging", "prod")
ENV = {
    "SPIRE_DB_CONNECTION": "dbname=spire host=127.0.0.1 user=spire password=x sslmode=disable",
    "SPIRE_UPSTREAM_PCA_ARN": "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/"
    "00000000-0000-0000-0000-000000000000",
}

needs_agent = needs(
    not SPIRE_AGENT.exists(), reason=f"spire-agent not built ({SPIRE_AGENT}); run scripts/bootstrap-tools --only spire"
)


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


@pytest.mark.e2e
@needs_server
def test_real_spire_server_signs_under_our_intermediate(tmp_path: Path) -> None:
    platform = load_platform("dev")
    (tmp_path / "svid").mkdir()
    with local_spire_server(tmp_path) as server:
        sock, log, chain = server.socket, server.log, server.upstream.chain
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
