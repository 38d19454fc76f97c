"""Egress proxies of agents outside the mesh (VMs, Windows hosts): Envoy bootstraps and SPIRE entries.

Pure: a :class:`~components.platform_model.Platform` in, dicts out, no Pulumi.

A pod in the mesh reaches a protected service through Linkerd, which carries its mesh identity
to the service's gateway. A VM or Windows agent has no Linkerd proxy, so every such agent with
``http`` grants gets an Envoy *egress proxy* on its own host:

* it listens on ``127.0.0.1:<authz.egressPort>`` only, plain HTTP, and routes by ``Host``: one
  virtual host per service the agent holds a grant on; any other host gets 404 from the proxy
  itself and never leaves the machine;
* towards each service it originates mTLS to the service's gateway
  (``authz.egressGatewayHost`` on ``authz.gatewayPort``) with the agent's X.509-SVID and the
  trust bundle, both streamed over SDS from the host's SPIRE agent (its Unix socket on Linux,
  its named pipe on Windows): no key, certificate or secret is in the file;
* it accepts the gateway only if the gateway's certificate chains to the bundle **and** its URI
  SAN is exactly the gateway's SPIFFE ID (never a DNS name alone);
* the SVID is asked for by the agent's SPIFFE ID, so the proxy gets that identity or none; an
  upstream connection lives at most half the SVID's lifetime and no TLS session is resumed, so
  once the SPIRE agent stops, requests fail closed soon after the last SVID expires (every new
  connection is a full handshake, which the gateway refuses).

Delivery (:func:`vm_install_script`, :func:`systemd_unit`; the Windows DSC steps are in
:mod:`components.render.windows`): tagged aws_iid VMs by an SSM shell document, other VMs from
the rendered files, Windows hosts by their gMSA DSC script.

Who holds the identity. The identity belongs to the agent's process; the proxy is the process
that presents it, so SPIRE must hand the agent's SVID to the proxy and to nothing else. On
Linux the proxy runs as ``spec.platform.vm.egressProxyUid`` (default: the uid of the agent's own
``unix:uid`` selector, i.e. as the agent's user) and gets its own registration
``proxy.<agent>`` (``unix:uid:<uid>``, same SPIFFE ID, same node, same TTLs) unless the agent's
registration already selects exactly that. On Windows the proxy runs as a service under the
agent's gMSA, which the agent's registration (``windows:user_name:DOMAIN\\gmsa$``) already
selects: it needs no entry of its own.

Enforcement: the gateway decides every request (Envoy mTLS + OPA on the caller's SPIFFE ID), as
for mesh callers; Linkerd does not see these callers. A service without a gateway has only
Linkerd's route policy, which cannot admit a caller without a mesh identity, so grants of
out-of-mesh agents on it are refused (:func:`egress_problems`). Every proxy listens on the same
port, so an egress host runs exactly one proxied agent (:func:`components.collisions.egress_host_problems`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from components.durations import seconds
from components.errors import ManifestError, Problem
from components.manifest.loader import format_loc
from components.platform_model import Platform, ResolvedAgent
from components.render.envoy import SDS_BUNDLE, overload_manager
from components.render.spire.names import SOCKET_PATH, go_duration, node_alias_id

if TYPE_CHECKING:
    from components.render.artifacts import Artifact

LISTENER = "agent_egress"
SPIRE_CLUSTER = "spire_agent"
LOOPBACK = "127.0.0.1"
MAX_DOWNSTREAM_CONNECTIONS = 1024
IDLE_TIMEOUT = "60s"
NOT_GRANTED_BODY = "no grant of this agent on the requested service (Host header); nothing was sent\n"
WINDOWS_ROOT = "C:\\ProgramData\\AgentPassport"
WINDOWS_DIR = f"{WINDOWS_ROOT}\\egress"
"""Where the Windows DSC script writes each agent's egress bootstrap and Envoy's logs (both
folders get a protected ACL: SYSTEM and Administrators; the gMSA reads and adds its log files)."""
Os = Literal["linux", "windows"]

_HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)


@dataclass(frozen=True)
class EgressRoute:
    """One service an out-of-mesh agent may call, and the gateway in front of it."""

    service: str
    gateway_spiffe_id: str
    host: str
    port: int

    @property
    def cluster(self) -> str:
        return f"gateway_{self.service}"


@dataclass(frozen=True)
class EgressProxy:
    """The egress proxy of one active out-of-mesh agent with http grants."""

    agent: ResolvedAgent
    os: Os
    routes: tuple[EgressRoute, ...]
    sds_address: str
    """The SPIRE agent's Workload API: a Unix socket path (Linux) or a named pipe (Windows)."""
    proxy_uid: int | None
    """Linux: the uid the proxy runs as (its SPIRE entry selects it). Windows: None (the gMSA)."""

    @property
    def name(self) -> str:
        return self.agent.name

    @property
    def spiffe_id(self) -> str:
        return self.agent.identity.spiffe_id


def gateway_host(platform: Platform, service: str, namespace: str) -> str:
    """``authz.egressGatewayHost`` with its placeholders filled for one service."""
    svc = platform.service(service)
    assert svc is not None
    gw = platform.gateway(svc)
    values = {"gateway": gw.name, "service": service, "namespace": namespace,
              "clusterDomain": platform.config.mesh.cluster_domain}
    out = platform.config.authz.egress_gateway_host
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out


def _out_of_mesh(a: ResolvedAgent) -> bool:
    return a.identity.platform in ("vm", "windows") and a.identity.linkerd_identity is None


def out_of_mesh_callers(platform: Platform) -> list[ResolvedAgent]:
    """Active agents outside the mesh (VMs, Windows hosts; not Windows pods) with http grants."""
    return [a for a in platform.active_agents if _out_of_mesh(a) and any(True for _ in a.grants_of("http"))]


def _problem(a: ResolvedAgent, loc: tuple[str | int, ...], message: str) -> Problem:
    return Problem(a.source.file, a.source.line_of(loc), format_loc(loc), message)


def egress_problems(platform: Platform) -> list[Problem]:
    """http grants of out-of-mesh agents that no gateway can enforce, and proxies SPIRE cannot identify."""
    out: list[Problem] = []
    on = platform.config.subsystems
    for a in out_of_mesh_callers(platform):
        for i, grant in a.grants_of("http"):
            svc = platform.service(grant.service)
            if svc is None:
                continue  # undeclared services are refused by the platform model
            where = f"agent {a.name!r} runs on {a.identity.platform}, outside the Linkerd mesh"
            if not svc.manifest.spec.gateway:
                out.append(_problem(
                    a, ("spec", "grants", i, "http", "service"),
                    f"{where}; service {grant.service!r} has no gateway (spec.gateway: false), and Linkerd's "
                    "route policy admits only mesh identities, so nothing could check this agent's SPIFFE ID: "
                    f"give {grant.service!r} a gateway (spec.gateway: true) or run the agent as a Kubernetes pod"))
            elif not on.authz:
                out.append(_problem(
                    a, ("spec", "grants", i, "http"),
                    f"{where}; it reaches {grant.service!r} only through the service's Envoy + OPA gateway, "
                    "which this stack does not deploy (subsystems.authz is off): turn it on"))
        if not on.spire:
            out.append(_problem(a, ("spec", "platform"),
                                f"agent {a.name!r} has http grants and runs outside the mesh: its egress proxy "
                                "takes the agent's SVID from the host's SPIRE agent, and this stack does not "
                                "deploy SPIRE (subsystems.spire is off)"))
        win = a.manifest.spec.platform.windows
        if win is not None and win.pod is not None:
            out.append(_problem(a, ("spec", "platform", "windows", "pod"),
                                f"agent {a.name!r} runs as Windows pods, which Linkerd does not mesh, and egress "
                                "proxies are rendered for Windows hosts only (a pod sidecar is not built yet): "
                                "run the agent on Windows hosts (remove pod) or move its http calls to a Linux pod"))
        vm = a.manifest.spec.platform.vm
        if vm is not None and vm.egress_proxy_uid is None and vm.agent_uid in (None, 0):
            out.append(_problem(a, ("spec", "platform", "vm", "egressProxyUid"),
                                f"agent {a.name!r} has http grants, so its VM runs an Envoy egress proxy holding "
                                "the agent's SPIFFE ID; SPIRE identifies it by uid, and the agent's workload "
                                "selectors name no (non-root) unix:uid: set egressProxyUid to the uid the proxy "
                                "runs as"))
    # Two proxied agents on one host (one listener port): components.collisions.egress_host_problems,
    # over the whole environment (agents of two shards can share hosts).
    return out


def open_network_warnings(platform: Platform) -> list[Problem]:
    """Out-of-mesh callers without ``spec.sourceNetworks``: not an error, but Linkerd then admits
    *every* network (0.0.0.0/0 and ::/0) to the gateway ports of the services they call
    (:func:`components.render.mesh.service_objects`), and only the gateway's Envoy (mTLS) and
    OPA stand between the network and each request."""
    if not platform.config.subsystems.mesh:
        return []
    out: list[Problem] = []
    for a in out_of_mesh_callers(platform):
        if a.manifest.spec.source_networks:
            continue
        gated = sorted({g.service for _, g in a.grants_of("http")
                        if (svc := platform.service(g.service)) is not None and svc.manifest.spec.gateway})
        if gated:
            out.append(_problem(a, ("spec", "sourceNetworks"),
                                f"agent {a.name!r} runs outside the mesh and sets no sourceNetworks, so the "
                                "outside-mesh NetworkAuthentication of the gateway of "
                                f"{', '.join(repr(s) for s in gated)} admits every network (0.0.0.0/0, ::/0) "
                                "to the gateway port; Envoy's mTLS and OPA still decide every request. Set "
                                "spec.sourceNetworks to the networks of the agent's hosts"))
    return out


def egress_proxies(platform: Platform) -> list[EgressProxy]:
    """Every out-of-mesh agent's proxy (call after :func:`egress_problems` found nothing)."""
    return egress_proxies_of(platform, out_of_mesh_callers(platform))


def egress_proxies_of(platform: Platform, agents: Iterable[ResolvedAgent]) -> list[EgressProxy]:
    """The proxies of ``agents`` (active out-of-mesh agents with http grants)."""
    out: list[EgressProxy] = []
    for a in agents:
        win = a.manifest.spec.platform.windows
        if win is not None and win.pod is not None:
            continue  # refused by egress_problems
        routes: dict[str, EgressRoute] = {}
        for _, grant in a.grants_of("http"):
            svc = platform.service(grant.service)
            if svc is None or not svc.manifest.spec.gateway or grant.service in routes:
                continue
            ns = svc.manifest.spec.namespace
            routes[grant.service] = EgressRoute(grant.service, platform.gateway(svc).spiffe_id,
                                                gateway_host(platform, grant.service, ns),
                                                platform.config.authz.gateway_port)
        vm = a.manifest.spec.platform.vm
        if vm is not None:
            out.append(EgressProxy(a, "linux", tuple(sorted(routes.values(), key=lambda r: r.service)),
                                   SOCKET_PATH, vm.egress_proxy_uid or vm.agent_uid))
        else:
            out.append(EgressProxy(a, "windows", tuple(sorted(routes.values(), key=lambda r: r.service)),
                                   platform.config.windows.egress_sds_pipe, None))
    return sorted(out, key=lambda p: p.name)


# --------------------------------------------------------------------------- SPIRE entry


def proxy_selectors(proxy: EgressProxy, platform: Platform) -> list[str]:
    """The workload selectors SPIRE attests the proxy with."""
    if proxy.os == "linux":
        return [f"unix:uid:{proxy.proxy_uid}"]
    win = proxy.agent.manifest.spec.platform.windows
    assert win is not None
    return [f"windows:user_name:{platform.config.windows.netbios_domain}\\{win.gmsa_account}$"]


def proxy_entry_spec(platform: Platform, proxy: EgressProxy) -> dict[str, Any] | None:
    """The ``ClusterStaticEntry`` spec of the proxy, or None when the agent's own registration
    already selects the proxy (Windows: both run as the gMSA; Linux: the agent's selectors are
    exactly ``unix:uid:<proxy uid>``)."""
    selectors = proxy_selectors(proxy, platform)
    p = proxy.agent.manifest.spec.platform
    own = sorted(p.vm.workload_selectors) if p.vm is not None else selectors
    if sorted(selectors) == own:
        return None
    ident = proxy.agent.identity
    return {
        "className": platform.config.spire.class_name,
        "spiffeID": ident.spiffe_id,
        "parentID": node_alias_id(platform.config, proxy.name),
        "selectors": sorted(selectors),
        "x509SVIDTTL": go_duration(ident.x509_svid_ttl),
        "jwtSVIDTTL": go_duration(ident.jwt_svid_ttl),
        "hint": f"{proxy.name}-egress",
    }


def agent_proxy_entry(platform: Platform, agent: ResolvedAgent) -> dict[str, Any] | None:
    """The egress proxy's own entry for ``agent`` (None when it needs none or has no proxy)."""
    if agent.suspended or not _out_of_mesh(agent) or not any(True for _ in agent.grants_of("http")):
        return None
    for proxy in egress_proxies_of(platform, [agent]):
        vm = agent.manifest.spec.platform.vm
        if vm is not None and proxy.proxy_uid in (None, 0):
            return None  # refused by egress_problems
        return proxy_entry_spec(platform, proxy)
    return None


# --------------------------------------------------------------------------- Envoy bootstrap


def _sds(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "sds_config": {
            "resource_api_version": "V3",
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": SPIRE_CLUSTER}}],
            },
        },
    }


def upstream_tls(proxy: EgressProxy, route: EgressRoute) -> dict[str, Any]:
    """mTLS to the gateway: the agent's SVID (by SPIFFE ID) and the bundle over SDS; the gateway's
    certificate must carry exactly its SPIFFE ID."""
    tls: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        # No TLS session resumption: a resumed session skips the gateway's check of the client
        # certificate, so a proxy holding an expired SVID could go on opening connections.
        "max_session_keys": 0,
        "common_tls_context": {
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
            "tls_certificate_sds_secret_configs": [_sds(proxy.spiffe_id)],
            "combined_validation_context": {
                "default_validation_context": {
                    "match_typed_subject_alt_names": [
                        {"san_type": "URI", "matcher": {"exact": route.gateway_spiffe_id}}
                    ]
                },
                "validation_context_sds_secret_config": _sds(SDS_BUNDLE),
            },
            "alpn_protocols": ["h2"],
        },
    }
    if not _is_ip(route.host):  # SNI carries host names only (RFC 6066)
        tls["sni"] = route.host
    return {"name": "envoy.transport_sockets.tls", "typed_config": tls}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _http2(max_connection_duration_s: int | None = None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
    if max_connection_duration_s is not None:
        options["common_http_protocol_options"] = {
            "idle_timeout": IDLE_TIMEOUT,
            "max_connection_duration": f"{max_connection_duration_s}s",
        }
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options}


def connection_lifetime_s(proxy: EgressProxy) -> int:
    """Longest life of one upstream connection: half the SVID's lifetime (at least 1 s), so a
    connection never outlives the SVID it was opened with while SPIRE renews at half-life."""
    return max(1, proxy.agent.identity.x509_svid_ttl_seconds // 2)


def _gateway_cluster(proxy: EgressProxy, route: EgressRoute) -> dict[str, Any]:
    return {
        "name": route.cluster,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": route.cluster,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": route.host, "port_value": route.port}
            }}}]}],
        },
        "transport_socket": upstream_tls(proxy, route),
        "typed_extension_protocol_options": _http2(connection_lifetime_s(proxy)),
    }


def windows_paths(agent: str) -> dict[str, str]:
    """The files of one agent's egress proxy on a Windows host."""
    return {"root": WINDOWS_ROOT, "dir": WINDOWS_DIR, "config": f"{WINDOWS_DIR}\\{agent}.json",
            "access_log": f"{WINDOWS_DIR}\\{agent}-access.log", "log": f"{WINDOWS_DIR}\\{agent}-envoy.log"}


def _access_log(agent: str, path: str | None = None) -> list[dict[str, Any]]:
    fields = {
        "time": "%START_TIME%",
        "agent": agent,
        "service": "%UPSTREAM_CLUSTER%",
        "method": "%REQ(:METHOD)%",
        "host": "%REQ(:AUTHORITY)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "status": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "gateway_spiffe_id": "%UPSTREAM_PEER_URI_SAN%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "duration_ms": "%DURATION%",
    }
    if path is not None:  # a Windows service has no stdout: a file next to its config
        return [{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": path,
                "log_format": {"json_format": fields},
            },
        }]
    return [{
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"json_format": fields},
        },
    }]


def _virtual_hosts(platform: Platform, proxy: EgressProxy) -> list[dict[str, Any]]:
    timeout = f"{seconds(platform.config.authz.request_timeout)}s"
    port = platform.config.authz.egress_port
    hosts = [{
        "name": r.service,
        "domains": [r.service, f"{r.service}:{port}"],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": r.cluster, "timeout": timeout}}],
    } for r in proxy.routes]
    hosts.append({
        "name": "not_granted",
        "domains": ["*"],
        "routes": [{"match": {"prefix": "/"},
                    "direct_response": {"status": 404, "body": {"inline_string": NOT_GRANTED_BODY}}}],
    })
    return hosts


def egress_bootstrap(platform: Platform, proxy: EgressProxy) -> dict[str, Any]:
    """The complete, standalone Envoy bootstrap of one agent's egress proxy (no admin interface)."""
    return {
        "node": {"id": f"egress-{proxy.name}", "cluster": "agentpassport-egress"},
        "overload_manager": overload_manager(MAX_DOWNSTREAM_CONNECTIONS),
        "static_resources": {
            "listeners": [{
                "name": LISTENER,
                "address": {"socket_address": {"address": LOOPBACK,
                                               "port_value": platform.config.authz.egress_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": _HCM_TYPE,
                        "stat_prefix": "egress",
                        "codec_type": "AUTO",
                        "access_log": _access_log(
                            proxy.name, windows_paths(proxy.name)["access_log"] if proxy.os == "windows" else None),
                        "route_config": {"name": "egress", "virtual_hosts": _virtual_hosts(platform, proxy)},
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                            },
                        }],
                    },
                }]}],
            }],
            "clusters": [
                {
                    "name": SPIRE_CLUSTER,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {"cluster_name": SPIRE_CLUSTER, "endpoints": [{"lb_endpoints": [
                        {"endpoint": {"address": {"pipe": {"path": proxy.sds_address}}}}]}]},
                    "typed_extension_protocol_options": _http2(),
                },
                *(_gateway_cluster(proxy, r) for r in proxy.routes),
            ],
        },
    }


# --------------------------------------------------------------------------- VM delivery

LINUX_ENVOY = "/usr/local/bin/envoy"
"""envoy on the VMs (installed by the hosts' own provisioning; nothing is downloaded)."""
LINUX_CONFIG_DIR = "/etc/agentpassport/egress"
HEREDOC_END = "AGENTPASSPORT_EGRESS_EOF"


def linux_paths(agent: str) -> dict[str, str]:
    """The files of one agent's egress proxy on a VM."""
    unit = f"agentpassport-egress-{agent}.service"
    return {"config": f"{LINUX_CONFIG_DIR}/{agent}.yaml", "unit_name": unit, "unit": f"/etc/systemd/system/{unit}"}


def systemd_unit(proxy: EgressProxy) -> str:
    """The systemd unit running the agent's egress proxy as its uid, with no privilege at all."""
    paths = linux_paths(proxy.name)
    return "\n".join([
        "# Generated by Agent Passport (components/render/egress.py); do not edit.",
        "[Unit]",
        f"Description=Agent Passport egress proxy of agent {proxy.name}",
        "After=network-online.target spire-agent.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        f"User={proxy.proxy_uid}",
        f"ExecStart={LINUX_ENVOY} -c {paths['config']} --log-level warn --disable-hot-restart",
        "Restart=always",
        "RestartSec=2",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def _heredoc(path: str, content: str) -> list[str]:
    if any(line == HEREDOC_END for line in content.splitlines()):
        raise ValueError(f"{path}: content holds the here-document delimiter")
    return [f"cat > {path}.new <<'{HEREDOC_END}'", *content.splitlines(), HEREDOC_END, f"mv -f {path}.new {path}"]


def vm_install_script(proxy: EgressProxy, config_yaml: str) -> list[str]:
    """Shell lines (SSM aws:runShellScript) that install the config and unit and (re)start the proxy.

    Every file arrives in a quoted here-document (no expansion); names are DNS labels and uids.
    """
    paths = linux_paths(proxy.name)
    return [
        "set -eu",
        f"test -x {LINUX_ENVOY} || {{ echo 'envoy is missing at {LINUX_ENVOY}: install it with the host image "
        "(docs/authz.md)' >&2; exit 1; }",
        f"install -d -m 0755 {LINUX_CONFIG_DIR}",
        *_heredoc(paths["config"], config_yaml),
        f"chmod 0644 {paths['config']}",
        *_heredoc(paths["unit"], systemd_unit(proxy)),
        "systemctl daemon-reload",
        f"systemctl enable {paths['unit_name']}",
        f"systemctl restart {paths['unit_name']}",
    ]


def vm_ssm_targets(proxy: EgressProxy) -> list[dict[str, Any]] | None:
    """SSM association targets of an aws_iid VM agent (its awsInstanceTags); None when it has none
    (join_token hosts, untagged fleets): the host tooling installs the rendered files instead."""
    vm = proxy.agent.manifest.spec.platform.vm
    if vm is None or vm.attestation != "aws_iid" or not vm.aws_instance_tags:
        return None
    return [{"key": f"tag:{k}", "values": [v]} for k, v in sorted(vm.aws_instance_tags.items())]


def vm_ssm_document(proxy: EgressProxy, config_yaml: str) -> dict[str, Any]:
    """A Command document (schema 2.2) installing the proxy with aws:runShellScript (no credentials)."""
    return {
        "schemaVersion": "2.2",
        "description": f"Agent Passport: install the Envoy egress proxy of agent {proxy.name}. "
                       "Contains no credentials: the proxy takes the agent's SVID from the SPIRE agent.",
        "mainSteps": [{
            "action": "aws:runShellScript",
            "name": "installEgressProxy",
            "precondition": {"StringEquals": ["platformType", "Linux"]},
            "inputs": {"timeoutSeconds": "600", "runCommand": vm_install_script(proxy, config_yaml)},
        }],
    }


def vm_ssm_document_name(stack: str, agent: str) -> str:
    safe = "".join(c if c.isalnum() or c in "_-." else "-" for c in stack)
    return f"AgentPassport-{safe}-egress-{agent}"[:128]


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class EgressPlan:
    """The egress proxies of a stack's out-of-mesh agents, validated (:func:`compile_egress`)."""

    proxies: tuple[EgressProxy, ...]
    bootstraps: tuple[tuple[str, dict[str, Any]], ...]
    """(agent name, Envoy bootstrap), in agent order."""
    entries: tuple[tuple[str, dict[str, Any]], ...]
    """(agent name, ClusterStaticEntry spec) of proxies that need their own SPIRE entry."""

    def bootstrap(self, agent: str) -> dict[str, Any]:
        return dict(self.bootstraps)[agent]


def compile_egress(platform: Platform) -> EgressPlan:
    """The egress plan of a stack; raises every problem first."""
    problems = egress_problems(platform)
    if problems:
        raise ManifestError(problems)
    proxies = tuple(egress_proxies(platform))
    entries = tuple((p.name, e) for p in proxies if (e := proxy_entry_spec(platform, p)) is not None)
    return EgressPlan(proxies, tuple((p.name, egress_bootstrap(platform, p)) for p in proxies), entries)


def plan_artifacts(plan: EgressPlan) -> Iterable[Artifact]:
    """``egress/<agent>.yaml``: the Envoy bootstrap each out-of-mesh agent's host runs."""
    from components.render.artifacts import Artifact
    from components.render.yamlout import dump_yaml

    out = [Artifact(f"egress/{name}.yaml", dump_yaml(cfg)) for name, cfg in plan.bootstraps]
    out += [Artifact(f"egress/{p.name}.service", systemd_unit(p)) for p in plan.proxies if p.os == "linux"]
    return out
