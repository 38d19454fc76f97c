"""Every rendered Linkerd policy object validates against its real CRD (linkerd2 edge-26.8.3).

The CRDs' ``openAPIV3Schema`` is checked with ``jsonschema``. Kubernetes silently prunes fields a
structural schema does not declare, so a misspelt field would "pass" and vanish; the validator
therefore closes every object schema (``additionalProperties: false``) unless the CRD preserves
unknown fields there — the same strictness as ``kubectl apply --validate=strict``.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from components.config import load_stack_config
from components.manifest.loader import load_manifests
from components.platform_model import build_platform
from components.render.mesh import (
    AUTHORIZATION_POLICY_API,
    HTTPROUTE_API,
    MESH_TLS_AUTHENTICATION_API,
    SERVER_API,
    mesh_objects,
)
from components.render.yamlout import dump_yaml_documents
from tests.conftest import ROOT, STACKS
from tests.support.tools import require_tool
from tests.unit.test_mesh_render import agent, http, make_platform

CRDS = ROOT / "crds" / "linkerd"  # committed; made by scripts/crds.py vendor
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@functools.cache
def _crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> {"schema": openAPIV3Schema, "storage": bool} for every served version."""
    out = {}
    files = sorted(CRDS.glob("*.yaml"))
    assert files, f"no Linkerd CRDs in {CRDS}"
    for path in files:
        for crd in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not crd:
                continue
            spec = crd["spec"]
            for v in spec["versions"]:
                if v.get("served"):
                    out[(f"{spec['group']}/{v['name']}", spec["names"]["kind"])] = {
                        "schema": v["schema"]["openAPIV3Schema"], "storage": v.get("storage", False)}
    return out


def _closed(schema: Any) -> Any:
    """Close every object schema that declares properties and does not preserve unknown fields."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@functools.cache
def validator(api_version: str, kind: str) -> jsonschema.Validator:
    schema = copy.deepcopy(_crds()[(api_version, kind)]["schema"])
    props = schema.setdefault("properties", {})
    for key in ("apiVersion", "kind"):
        props.setdefault(key, {"type": "string"})
    props["metadata"] = {"type": "object"}  # checked separately below, as the API server does
    return jsonschema.Draft7Validator(_closed(schema))


def check(obj: dict[str, Any]) -> None:
    validator(obj["apiVersion"], obj["kind"]).validate(obj)
    meta = obj["metadata"]
    assert len(meta["name"]) <= 253 and DNS_SUBDOMAIN.match(meta["name"]), meta["name"]
    assert set(meta) <= {"name", "namespace", "labels", "annotations"}
    for key, value in meta.get("labels", {}).items():
        assert len(value) <= 63 and re.match(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$", value), (key, value)


def _policy_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["apiVersion"].startswith("policy.linkerd.io/")]


def _stack_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    for stack in STACKS:
        cfg = load_stack_config(stack, ROOT)
        p = build_platform(cfg, load_manifests([ROOT / "agents"]), stack, f"stacks/Pulumi.{stack}.yaml")
        for obj in _policy_objects(mesh_objects(p)):
            yield f"{stack}:{obj['kind']}/{obj['metadata']['name']}", obj


def test_we_use_the_newest_served_versions() -> None:
    crds = _crds()
    for api, kind in ((SERVER_API, "Server"), (HTTPROUTE_API, "HTTPRoute"),
                      (AUTHORIZATION_POLICY_API, "AuthorizationPolicy"),
                      (MESH_TLS_AUTHENTICATION_API, "MeshTLSAuthentication")):
        assert crds[(api, kind)]["storage"] is True, (api, kind)


@pytest.mark.parametrize(("where", "obj"), list(_stack_objects()), ids=lambda v: v if isinstance(v, str) else "")
def test_stack_objects_validate_against_their_crd(where: str, obj: dict[str, Any]) -> None:
    check(obj)


def _synthetic(tmp_path: Path) -> list[dict[str, Any]]:
    """Every object shape: shared and split routes, gateway and gateway-less, all protocols."""
    services = (ROOT / "agents/services.yaml").read_text() + """---
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Service
metadata: {name: grpc-svc, team: t}
spec: {namespace: ml, port: 9090, protocol: grpc, gateway: false, podSelector: {app: g, tier: backend}}
"""
    paths = ", ".join(f"{{exact: /p{i:02d}}}" for i in range(20))
    p = make_platform(
        tmp_path,
        agent("bulk", "team", http("grpc-svc", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", paths)),
        agent("one", "team", http("grpc-svc", "POST", "{prefix: /z}") + http("payments-api", "GET", "{exact: /v1}")),
        agent("two", "other", http("grpc-svc", "POST", "{prefix: /z/}") + http("inference", "POST", "{exact: /v1}")),
        services=services,
    )
    return _policy_objects(mesh_objects(p))


def test_every_object_shape_validates(tmp_path: Path) -> None:
    objects = _synthetic(tmp_path)
    kinds = {o["kind"] for o in objects}
    assert kinds == {"Server", "HTTPRoute", "AuthorizationPolicy", "MeshTLSAuthentication"}
    assert any(len(o["spec"]["rules"]) == 16 for o in objects if o["kind"] == "HTTPRoute")
    assert {o["spec"]["proxyProtocol"] for o in objects if o["kind"] == "Server"} == {"HTTP/1", "HTTP/2", "gRPC",
                                                                                     "opaque"}
    for obj in objects:
        check(obj)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda o: o["spec"].update(proxyProtocl="HTTP/1"), "Additional properties .*'proxyProtocl' was unexpected"),
    (lambda o: o["spec"].update(externalWorkloadSelector={}), "is valid under each of"),
    (lambda o: o["spec"].pop("port"), "'port' is a required property"),
])
def test_the_validator_catches_a_broken_server(mutate: Any, message: str, tmp_path: Path) -> None:
    server = next(o for o in _synthetic(tmp_path) if o["kind"] == "Server")
    mutate(server)
    with pytest.raises(jsonschema.ValidationError, match=message):
        check(server)


def test_the_validator_catches_a_broken_route(tmp_path: Path) -> None:
    route = next(o for o in _synthetic(tmp_path) if o["kind"] == "HTTPRoute")
    route["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Prefix"
    with pytest.raises(jsonschema.ValidationError, match="'Prefix' is not one of"):
        check(route)
    route["spec"]["rules"][0]["matches"] *= 2  # 16 > maxItems 8
    with pytest.raises(jsonschema.ValidationError):
        check(route)


def test_kubeconform_strict_accepts_the_rendered_policy(tmp_path: Path) -> None:
    """The same check with a second, independent validator (kubeconform -strict, offline schemas)."""
    kubeconform = require_tool("kubeconform")
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for (api, kind), crd in _crds().items():
        group, version = api.split("/")
        schema = _closed(copy.deepcopy(crd["schema"]))
        schema["properties"].update({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                     "metadata": {"type": "object"}})
        (schemas / f"{kind.lower()}-{group}-{version}.json").write_text(json.dumps(schema))
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    objects = _synthetic(manifests)
    docs = tmp_path / "mesh.yaml"
    docs.write_text(dump_yaml_documents(objects))
    location = str(schemas) + "/{{ .ResourceKind }}-{{ .Group }}-{{ .ResourceAPIVersion }}.json"
    run = subprocess.run([str(kubeconform), "-strict", "-summary", "-schema-location", location, str(docs)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Valid: {len(objects)}" in run.stdout, run.stdout
