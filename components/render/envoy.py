"""Envoy bootstrap of one authorization gateway (``envoy/<service>.yaml``).

The gateway terminates mTLS with its own X.509-SVID and the trust domain's bundle, both
streamed by the SPIRE agent over SDS (Workload API socket mounted by the SPIFFE CSI driver),
so no key or certificate ever sits in a ConfigMap or Secret. It requires a client
certificate whose URI SAN is in the trust domain, asks OPA (gRPC on loopback) about every
request with the caller's SPIFFE ID as the source principal, fails closed when OPA does not
answer, and only then routes to the protected service. Everything here is static: a
changed grant changes OPA's data, never this file.
"""

from __future__ import annotations

from typing import Any

from components.config.authz import ENVOY_ADMIN_PORT, OPA_GRPC_PORT
from components.durations import seconds
from components.identity import GatewayIdentity
from components.manifest.loader import SourcedService
from components.platform_model import Platform

SPIFFE_SOCKET_DIR = "/spiffe-workload-api"
SPIFFE_SOCKET = f"{SPIFFE_SOCKET_DIR}/spire-agent.sock"
"""Where the SPIFFE CSI driver (csi.spiffe.io) exposes the SPIRE agent's Workload API."""
SDS_SVID = "default"
"""SPIRE agent's default SDS name for the workload's own X.509-SVID (sds.default_svid_name)."""
SDS_BUNDLE = "ROOTCA"
"""SPIRE agent's default SDS name for its trust domain bundle (sds.default_bundle_name)."""
EXT_AUTHZ_TIMEOUT = "0.5s"
MAX_DOWNSTREAM_CONNECTIONS = 10000
SPIRE_CLUSTER = "spire_agent"
OPA_CLUSTER = "opa_ext_authz"
BACKEND_CLUSTER = "backend"

_HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
_HTTP2 = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}


def gateway_of(platform: Platform, service: SourcedService) -> GatewayIdentity:
    """The gateway's names and identity: from :func:`components.identity.gateway_identity` only."""
    return platform.gateway(service)


def backend_address(platform: Platform, service: SourcedService) -> tuple[str, int]:
    """The protected service: Kubernetes Service ``<name>.<namespace>`` on the manifest's port."""
    spec = service.manifest.spec
    return f"{service.name}.{spec.namespace}.svc.{platform.config.mesh.cluster_domain}", spec.port


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


def downstream_tls(trust_domain: str) -> dict[str, Any]:
    """mTLS: our SVID and the bundle over SDS; clients must present an SVID of ``trust_domain``."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            # A resumed TLS session skips the client certificate check: a caller whose SVID has
            # expired (its SPIRE agent down) could go on connecting. Every connection is a full handshake.
            "disable_stateless_session_resumption": True,
            "disable_stateful_session_resumption": True,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "tls_certificate_sds_secret_configs": [_sds(SDS_SVID)],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_typed_subject_alt_names": [
                            {"san_type": "URI", "matcher": {"prefix": f"spiffe://{trust_domain}/"}}
                        ]
                    },
                    "validation_context_sds_secret_config": _sds(SDS_BUNDLE),
                },
                "alpn_protocols": ["h2", "http/1.1"],
            },
        },
    }


def _access_log() -> list[dict[str, Any]]:
    """One JSON line per request with the caller and OPA's reason (audit)."""
    fields = {
        "time": "%START_TIME%",
        "spiffe_id": "%DOWNSTREAM_PEER_URI_SAN%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "status": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "authz_allowed": "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:allowed)%",
        "authz_reason": "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason)%",
        "agent": "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:agent)%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "traceparent": "%REQ(TRACEPARENT)%",  # W3C trace context: the audit trail's trace.id
        "duration_ms": "%DURATION%",
    }
    return [{
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"json_format": fields},
        },
    }]


def _http_connection_manager(platform: Platform, service: SourcedService) -> dict[str, Any]:
    ext_authz_per_route = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "check_settings": {"context_extensions": {"service": service.name}},
    }
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _HCM_TYPE,
            "stat_prefix": "gateway",
            "codec_type": "AUTO",
            # Authorize the path the backend will see: normalized, no '//' or escaped '/'.
            "normalize_path": True,
            "merge_slashes": True,
            "path_with_escaped_slashes_action": "REJECT_REQUEST",
            # Tell the backend who called, from the verified certificate only.
            "forward_client_cert_details": "SANITIZE_SET",
            "set_current_client_cert_details": {"uri": True},
            "use_remote_address": True,
            "access_log": _access_log(),
            "route_config": {
                "name": service.name,
                "virtual_hosts": [{
                    "name": service.name,
                    "domains": ["*"],
                    "typed_per_filter_config": {"envoy.filters.http.ext_authz": ext_authz_per_route},
                    "routes": [{"match": {"prefix": "/"}, "route": {
                        "cluster": BACKEND_CLUSTER,
                        "timeout": f"{seconds(platform.config.authz.request_timeout)}s",
                    }}],
                }],
            },
            "http_filters": [
                {
                    "name": "envoy.filters.http.ext_authz",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                        "transport_api_version": "V3",
                        "grpc_service": {
                            "envoy_grpc": {"cluster_name": OPA_CLUSTER},
                            "timeout": EXT_AUTHZ_TIMEOUT,
                        },
                        "failure_mode_allow": False,
                        "include_peer_certificate": True,
                        "status_on_error": {"code": "Forbidden"},
                    },
                },
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                    },
                },
            ],
        },
    }


def _static_cluster(name: str, address: dict[str, Any], http2: bool) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = _HTTP2
    return cluster



def overload_manager(max_connections: int) -> dict[str, Any]:
    """Envoy's ceiling on open downstream connections (gateways and egress proxies alike)."""
    return {
        "resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3"
                         ".DownstreamConnectionsConfig",
                "max_active_downstream_connections": max_connections,
            },
        }]
    }

def envoy_bootstrap(platform: Platform, service: SourcedService) -> dict[str, Any]:
    """The complete, standalone Envoy bootstrap of ``service``'s gateway."""
    gw = gateway_of(platform, service)
    host, port = backend_address(platform, service)
    backend: dict[str, Any] = {
        "name": BACKEND_CLUSTER,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": BACKEND_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": host, "port_value": port}
            }}}]}],
        },
    }
    if service.manifest.spec.protocol in ("http2", "grpc"):
        backend["typed_extension_protocol_options"] = _HTTP2
    return {
        "node": {"id": f"{gw.name}.{gw.namespace}", "cluster": gw.name},
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": ENVOY_ADMIN_PORT}}
        },
        # A ceiling on open downstream connections, so a flood cannot exhaust the pod.
        "overload_manager": overload_manager(MAX_DOWNSTREAM_CONNECTIONS),
        "static_resources": {
            "listeners": [{
                "name": "gateway_mtls",
                "address": {
                    # All interfaces: the pod IP is where agents connect (mTLS only).
                    "socket_address": {
                        "address": "0.0.0.0",  # noqa: S104
                        "port_value": platform.config.authz.gateway_port,
                    }
                },
                "filter_chains": [{
                    "transport_socket": downstream_tls(platform.config.trust_domain),
                    "filters": [_http_connection_manager(platform, service)],
                }],
            }],
            "clusters": [
                _static_cluster(SPIRE_CLUSTER, {"pipe": {"path": SPIFFE_SOCKET}}, http2=True),
                _static_cluster(
                    OPA_CLUSTER,
                    {"socket_address": {"address": "127.0.0.1", "port_value": OPA_GRPC_PORT}},
                    http2=True,
                ),
                backend,
            ],
        },
    }
