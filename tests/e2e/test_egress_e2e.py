"""End to end on 127.0.0.1: VM agents outside the mesh call a protected service through their
rendered Envoy egress proxies.

Real engines: a spire-server and one spire-agent per VM (join-token attestation stands in for the
VMs' node attestation; unix workload attestor), the rendered SPIRE registrations created with
``spire-server entry create``; real Envoy as both egress proxies (the rendered bootstraps, only
the SPIRE agent's socket path moved, and the second VM's listener port, since both "VMs" share
this host) and the gateway (the rendered bootstrap as in tests/e2e/test_authz_e2e.py, with its
own certificate as files from the CA SPIRE uses as its upstream); real OPA deciding each request
(through the ext_authz stand-in of test_authz_e2e, which asks ``opa eval``).

The stack's ``authz.egressGatewayHost`` is set to ``127.0.0.1`` and its ports to free ones, so the
egress bootstraps point at the local gateway as rendered.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from components.config import load_stack_config
from components.manifest.loader import load_manifests
from components.platform_model import Platform, build_platform
from components.render.egress import compile_egress, connection_lifetime_s
from components.render.spire.registrations import registration_objects
from components.render.yamlout import dump_yaml
from tests.conftest import ROOT
from tests.e2e.test_authz_e2e import Backend, Gateway, Pki, running, spire_binaries, wait_for_tls
from tests.policy.test_rego_policy import opa
from tests.support.processes import stop
from tests.support.tools import free_port, wait_until
from tests.unit.test_envoy_config import envoy_binary

pytestmark = pytest.mark.e2e

SVID_TTL_S = 30
"""The VM agents' X.509-SVID lifetime: short, so the fail-closed check waits for an expiry."""

HEADER = "apiVersion: passport.agentpassport.dev/v1alpha1\n"
MANIFESTS = HEADER + """kind: Service
metadata: {name: orders, team: shop}
spec: {namespace: shop, port: 8080, podSelector: {app: orders}}
---
""" + HEADER + """kind: Agent
metadata: {name: vm-buyer, team: shop, owner: o@example.net}
spec:
  identity: {x509SvidTtl: %(ttl)ss}
  platform:
    vm: {attestation: join_token, workloadSelectors: ['unix:uid:%(uid)s']}
  grants:
    - http: {service: orders, methods: [GET], paths: [{prefix: /orders}]}
---
""" + HEADER + """kind: Agent
metadata: {name: vm-clerk, team: shop, owner: o@example.net}
spec:
  identity: {x509SvidTtl: %(ttl)ss}
  platform:
    vm: {attestation: join_token, workloadSelectors: ['unix:uid:%(uid)s']}
  grants:
    - http: {service: orders, methods: [GET], paths: [{exact: /status}]}
"""


def fleet_platform(where: Path, gateway_port: int, egress_port: int) -> Platform:
    where.mkdir(parents=True, exist_ok=True)
    (where / "fleet.yaml").write_text(MANIFESTS % {"ttl": SVID_TTL_S, "uid": os.getuid()}, encoding="utf-8")
    cfg = load_stack_config("dev", ROOT)
    authz = cfg.authz.model_copy(update={"egress_gateway_host": "127.0.0.1", "gateway_port": gateway_port,
                                         "egress_port": egress_port})
    cfg = cfg.model_copy(update={"authz": authz})
    return build_platform(cfg, load_manifests([where]), "dev", "stacks/Pulumi.dev.yaml")


def _tool(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def server_conf(spire: Path, td: str, pki: Pki, port: int) -> str:
    return f"""
server {{
  bind_address = "127.0.0.1"
  bind_port = "{port}"
  socket_path = "{spire / 'server.sock'}"
  trust_domain = "{td}"
  data_dir = "{spire}/server-data"
  log_level = "WARN"
  ca_ttl = "24h"
}}
plugins {{
  DataStore "sql" {{
    plugin_data {{
      database_type = "sqlite3"
      connection_string = "{spire}/datastore.sqlite3"
    }}
  }}
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "memory" {{
    plugin_data {{}}
  }}
  UpstreamAuthority "disk" {{
    plugin_data {{
      key_file_path = "{pki.where / 'ca-key.pem'}"
      cert_file_path = "{pki.where / 'ca.pem'}"
    }}
  }}
}}
"""


def agent_conf(vm: Path, td: str, server_port: int) -> str:
    return f"""
agent {{
  data_dir = "{vm}/data"
  log_level = "WARN"
  server_address = "127.0.0.1"
  server_port = "{server_port}"
  socket_path = "{vm / 'agent.sock'}"
  trust_domain = "{td}"
  insecure_bootstrap = true
}}
plugins {{
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "memory" {{
    plugin_data {{}}
  }}
  WorkloadAttestor "unix" {{
    plugin_data {{}}
  }}
}}
"""


def create_rendered_entries(server_bin: str, sock: Path, platform: Platform, agent: str) -> str:
    """The agent's rendered ClusterStaticEntry objects, created as SPIRE entries; returns a join token
    for its node alias (``spire-server token generate -spiffeID <alias>``, docs/spire.md)."""
    specs = [o["spec"] for o in registration_objects(platform)
             if o["kind"] == "ClusterStaticEntry" and o["metadata"]["labels"].get("agentpassport.dev/agent") == agent]
    assert specs, agent
    token = _tool(server_bin, "token", "generate", "-socketPath", str(sock), "-spiffeID", specs[0]["parentID"])
    assert token.returncode == 0, token.stderr
    for spec in specs:
        ttl = spec["x509SVIDTTL"]
        assert ttl == f"{SVID_TTL_S}s"
        args = ["entry", "create", "-socketPath", str(sock), "-parentID", spec["parentID"],
                "-spiffeID", spec["spiffeID"], "-x509SVIDTTL", str(SVID_TTL_S)]
        for selector in spec["selectors"]:
            args += ["-selector", selector]
        created = _tool(server_bin, *args)
        assert created.returncode == 0, created.stdout + created.stderr
    return token.stdout.split()[-1]


def svid_not_after(agent_bin: str, sock: Path, spiffe_id: str, where: Path) -> dt.datetime:
    """Expiry of the SVID the SPIRE agent holds for us now (``spire-agent api fetch x509 -write``)."""
    where.mkdir(parents=True, exist_ok=True)
    out = _tool(agent_bin, "api", "fetch", "x509", "-socketPath", str(sock), "-write", str(where))
    assert out.returncode == 0 and spiffe_id in out.stdout, out.stdout + out.stderr
    certs = x509.load_pem_x509_certificates((where / "svid.0.pem").read_bytes())
    return certs[0].not_valid_after_utc


@contextlib.contextmanager
def egress_proxy(platform: Platform, agent: str, socket: Path, port: int, where: Path) -> Iterator[Path]:
    """Envoy running the agent's rendered egress bootstrap; only the socket path (and port) moved."""
    cfg: dict[str, Any] = yaml.safe_load(dump_yaml(compile_egress(platform).bootstrap(agent)))
    (listener,) = cfg["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["address"] == "127.0.0.1"
    listener["address"]["socket_address"]["port_value"] = port
    spire = cfg["static_resources"]["clusters"][0]
    endpoint = spire["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert spire["name"] == "spire_agent"
    assert endpoint["address"] == {"pipe": {"path": "/run/spire/agent-sockets/spire-agent.sock"}}
    endpoint["address"] = {"pipe": {"path": str(socket)}}
    path = where / f"egress-{agent}.yaml"
    path.write_text(dump_yaml(cfg), encoding="utf-8")
    log = where / f"egress-{agent}.log"
    argv = [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--log-level", "warn"]
    with running(argv, log) as proc:
        wait_for_tls(port, proc, deadline_s=60)
        yield log


def plain_call(port: int, service: str, path: str) -> tuple[int, bytes]:
    """What the agent's own code does: plain HTTP to its loopback proxy, Host naming the service."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers={"Host": service})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def json_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines() if x.startswith("{")]


def test_vm_agents_call_through_their_egress_proxies_and_fail_closed_without_spire(tmp_path: Path) -> None:
    envoy_binary(), opa()
    server_bin, agent_bin = spire_binaries()
    gateway_port, buyer_port, clerk_port = free_port(), free_port(), free_port()
    platform = fleet_platform(tmp_path / "manifests", gateway_port, buyer_port)
    td = platform.config.trust_domain
    buyer_id, clerk_id = f"spiffe://{td}/vm/vm-buyer", f"spiffe://{td}/vm/vm-clerk"
    gateway_id = f"spiffe://{td}/ns/shop/sa/gw-orders"
    (tmp_path / "pki").mkdir()
    pki = Pki(tmp_path / "pki")  # SPIRE's upstream CA; the gateway's certificate comes from it too
    gw = Gateway(tmp_path, platform, "orders", pki)
    gw.ports["gateway"] = gateway_port  # where the rendered egress bootstraps point
    spire = tmp_path / "spire"
    spire.mkdir()
    server_port = free_port()
    sock = spire / "server.sock"
    (spire / "server.conf").write_text(server_conf(spire, td, pki, server_port), encoding="utf-8")
    vms = {name: tmp_path / name for name in ("vm-buyer", "vm-clerk")}
    with running([server_bin, "run", "-config", str(spire / "server.conf")], spire / "server.log") as server:
        wait_until(lambda: server.poll() is None and _tool(
            server_bin, "healthcheck", "-socketPath", str(sock)).returncode == 0, 90, "spire-server")
        agents: dict[str, subprocess.Popen[bytes]] = {}
        with contextlib.ExitStack() as stack:
            for name, vm in vms.items():
                vm.mkdir()
                token = create_rendered_entries(server_bin, sock, platform, name)
                (vm / "agent.conf").write_text(agent_conf(vm, td, server_port), encoding="utf-8")
                agents[name] = stack.enter_context(running(
                    [agent_bin, "run", "-config", str(vm / "agent.conf"), "-joinToken", token], vm / "agent.log"))
            for name, sid in (("vm-buyer", buyer_id), ("vm-clerk", clerk_id)):
                wait_until(lambda n=name, s=sid: agents[n].poll() is None and s in _tool(  # type: ignore[misc]
                    agent_bin, "api", "fetch", "x509", "-socketPath", str(vms[n] / "agent.sock")).stdout,
                    90, f"{name}'s SVID from its SPIRE agent")
            stack.enter_context(gw.run())
            buyer_log = stack.enter_context(egress_proxy(platform, "vm-buyer", vms["vm-buyer"] / "agent.sock",
                                                         buyer_port, tmp_path))
            clerk_log = stack.enter_context(egress_proxy(platform, "vm-clerk", vms["vm-clerk"] / "agent.sock",
                                                         clerk_port, tmp_path))

            # 1. The buyer's own code: plain HTTP on loopback; it reaches the service as its SPIFFE ID.
            wait_until(lambda: plain_call(buyer_port, "orders", "/orders/17")[0] == 200, 60,
                       "the buyer's first call through its egress proxy")
            status, body = plain_call(buyer_port, "orders", "/orders/18?page=2")
            assert (status, json.loads(body)) == (200, {"path": "/orders/18?page=2"})
            upstream = Backend.seen[-1]
            assert upstream["x-agentpassport-agent"] == "vm-buyer"
            assert f"URI={buyer_id}" in upstream["x-forwarded-client-cert"]
            assert gw.authz.inputs[-1]["attributes"]["source"]["principal"] == buyer_id

            # 2. Outside its grants: the gateway's OPA denies with 403 (the reason is logged there).
            seen = len(Backend.seen)
            assert plain_call(buyer_port, "orders", "/admin") == (403, b"forbidden by Agent Passport policy\n")
            # A Host it holds no grant on never leaves the machine.
            asked = len(gw.authz.inputs)
            status, body = plain_call(buyer_port, "payments", "/orders/1")
            assert status == 404 and b"no grant of this agent" in body
            assert len(gw.authz.inputs) == asked

            # 3. The second VM agent, without that grant, is denied; its own grant works.
            assert plain_call(clerk_port, "orders", "/orders/17") == (403, b"forbidden by Agent Passport policy\n")
            assert gw.authz.inputs[-1]["attributes"]["source"]["principal"] == clerk_id
            assert len(Backend.seen) == seen
            assert plain_call(clerk_port, "orders", "/status")[0] == 200
            assert Backend.seen[-1]["x-agentpassport-agent"] == "vm-clerk"

            # 4. The buyer's SPIRE agent stops: its proxy keeps the last SVID until it expires, then
            # every new connection to the gateway fails the handshake (no fallback, no plain text).
            expiry = svid_not_after(agent_bin, vms["vm-buyer"] / "agent.sock", buyer_id, tmp_path / "svid")
            stop(agents["vm-buyer"])
            lifetime = connection_lifetime_s(next(p for p in compile_egress(platform).proxies if p.name == "vm-buyer"))
            assert lifetime == SVID_TTL_S // 2
            wait_until(lambda: dt.datetime.now(dt.UTC) > expiry + dt.timedelta(seconds=1),
                       SVID_TTL_S + 5, "the buyer's last SVID to expire")
            wait_until(lambda: plain_call(buyer_port, "orders", "/orders/19")[0] == 503, lifetime + 30,
                       "the buyer's pooled connection to close and a new handshake to fail")
            seen = len(Backend.seen)
            for _ in range(3):
                status, _ = plain_call(buyer_port, "orders", "/orders/20")
                assert status == 503
            assert len(Backend.seen) == seen, "a request rode an expired SVID to the service"
            # The gateway is fine: the clerk, whose SPIRE agent runs, still gets through.
            assert plain_call(clerk_port, "orders", "/status")[0] == 200
    # After exit, the logs are flushed: the gateway logged OPA's reasons, the proxies their calls.
    reasons = [(x["spiffe_id"], x["authz_reason"]) for x in gw.access_log()]
    assert (buyer_id, "allowed: GET /orders/18 granted to agent vm-buyer by spec.grants[0]") in reasons
    assert any(s == buyer_id and r.startswith("denied: no grant of agent vm-buyer on service orders matches")
               and "path /admin not granted" in r for s, r in reasons), reasons
    assert any(s == clerk_id and r.startswith("denied: no grant of agent vm-clerk on service orders matches")
               for s, r in reasons), reasons
    buyer_lines = json_lines(buyer_log)
    assert any(x["host"] == "payments" and x["status"] == 404 for x in buyer_lines)
    assert [x["gateway_spiffe_id"] for x in buyer_lines if x["status"] == 200][:1] == [gateway_id]
    failed = [x for x in buyer_lines if x["status"] == 503]
    assert failed and all("UF" in x["flags"] for x in failed), failed
    assert json_lines(clerk_log)[-1]["status"] == 200
