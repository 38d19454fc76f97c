"""Issue 8 item 6: every rendered Kubernetes object validates with kubeconform (``-strict``).

``passport render`` of every stack in ``stacks/`` writes ``kubernetes/**/*.yaml``; all of it is
checked by the real ``kubeconform`` binary from ``scripts/bootstrap-tools``, offline:

* built-in kinds against the Kubernetes JSON schemas stored in
  ``tests/fixtures/k8s-schemas/v<K8S_VERSION>-standalone-strict/`` (kubeconform's default layout;
  how they were made is in that folder's README and :func:`builtin_schemas` below);
* custom resources against the real CRDs (``crds/{spire,linkerd,windows}``, committed by
  ``scripts/crds.py vendor``, and ``tests/fixtures/crds/prometheus-operator``), converted here at test
  time to kubeconform's ``{kind}_{version}.json`` layout (:func:`crd_schemas`).

Kubernetes silently prunes fields a structural schema does not declare, so a misspelt field would
"apply" and vanish: the converter closes every object schema (``additionalProperties: false``)
unless the CRD preserves unknown fields there, as ``kubectl apply --validate=strict`` does.

Regenerate the built-in schemas (see the README) with::

    python -m tests.unit.test_kubeconform regenerate <k8s.io/kubernetes module dir>/api/openapi-spec/swagger.json
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import list_stacks
from tests.support.tools import ROOT, require_tool

K8S_VERSION = "1.35.0"  # k8s.io/kubernetes module version the built-in schemas come from
K8S_SCHEMAS = ROOT / "tests/fixtures/k8s-schemas"
BUILTIN_DIR = K8S_SCHEMAS / f"v{K8S_VERSION}-standalone-strict"
CRDS = ROOT / "crds"  # committed, made by scripts/crds.py vendor (the gMSA CRD serves the v1 the renderer emits)
CRD_FILES = (
    [CRDS / d for d in ("spire", "linkerd", "windows")]
    + [ROOT / "tests/fixtures/crds/prometheus-operator"]
)
# Every built-in kind the renderers emit (apiVersion, kind) -> kubeconform schema file name.
BUILTIN_KINDS = {
    ("v1", "ConfigMap"): "configmap-v1",
    ("v1", "Namespace"): "namespace-v1",
    ("v1", "Service"): "service-v1",
    ("v1", "ServiceAccount"): "serviceaccount-v1",
    ("apps/v1", "DaemonSet"): "daemonset-apps-v1",
    ("apps/v1", "Deployment"): "deployment-apps-v1",
    ("apps/v1", "StatefulSet"): "statefulset-apps-v1",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudget-policy-v1",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "clusterrole-rbac-v1",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "clusterrolebinding-rbac-v1",
    ("rbac.authorization.k8s.io/v1", "Role"): "role-rbac-v1",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebinding-rbac-v1",
    ("storage.k8s.io/v1", "CSIDriver"): "csidriver-storage-v1",
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"):
        "validatingwebhookconfiguration-admissionregistration-v1",
}
# A Windows pod agent (the stacks in stacks/ have none) so GMSACredentialSpec is rendered too.
WINDOWS_POD_AGENT = {
    "apiVersion": "passport.agentpassport.dev/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "claims-bot", "team": "claims", "owner": "claims@acme-corp.net"},
    "spec": {"platform": {"windows": {
        "gmsaAccount": "gmsa-claims", "hostGroup": "ClaimsNodes",
        "pod": {"namespace": "claims", "serviceAccount": "claims-bot"},
    }}},
}
WINDOWS_DOMAIN_IDS = {"domainSid": "S-1-5-21-1004336348-1177238915-682003330",
                      "domainGuid": "5a4e3f2c-1b2d-4c5e-8f90-a1b2c3d4e5f6"}
SUMMARY = re.compile(r"Summary: (\d+) resources? found in (\d+) files? - Valid: (\d+), Invalid: (\d+), "
                     r"Errors: (\d+),? Skipped: (\d+)")


# --------------------------------------------------------------------------- schema conversion


def close_objects(node: Any, *, include_self: bool) -> Any:
    """Set ``additionalProperties: false`` (in place) on every object schema that lists ``properties``,
    has no ``additionalProperties`` of its own and does not set ``x-kubernetes-preserve-unknown-fields``."""
    if isinstance(node, dict):
        if (include_self and "properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for value in node.values():
            close_objects(value, include_self=True)
    elif isinstance(node, list):
        for value in node:
            close_objects(value, include_self=True)
    return node


def int_or_string(node: Any) -> Any:
    """``format: int-or-string`` / ``x-kubernetes-int-or-string`` as a JSON-schema ``oneOf``."""
    if isinstance(node, list):
        return [int_or_string(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value.get("format") == "int-or-string":
            out[key] = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
        else:
            out[key] = int_or_string(value)
    if out.get("x-kubernetes-int-or-string") and "type" not in out and not {"anyOf", "oneOf"} & set(out):
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    return out


def nullable_optional(node: Any, parent: Any = None, grand: Any = None, key: str | None = None) -> Any:
    """The Kubernetes JSON-schema convention: an optional field may be ``null``.

    A ``type: T`` becomes ``[T, "null"]`` unless the field is listed in its object's ``required``.
    """
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, value in node.items():
        if isinstance(value, dict):
            out[k] = nullable_optional(value, node, parent, k)
        elif isinstance(value, list):
            out[k] = [nullable_optional(v, value, parent, k) for v in value]
        elif (k == "type" and isinstance(value, str) and value != "null"
              and not (isinstance(grand, dict) and key in grand.get("required", ()))):
            out[k] = [value, "null"]
        else:
            out[k] = value
    return out


def _deref(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:  # sibling keys of a $ref (descriptions) are dropped, as JSON reference says
            return _deref(definitions[node["$ref"].rsplit("/", 1)[-1]], definitions)
        return {k: _deref(v, definitions) for k, v in node.items()}
    if isinstance(node, list):
        return [_deref(v, definitions) for v in node]
    return node


def builtin_schemas(swagger: dict[str, Any], names: Iterable[str]) -> dict[str, str]:
    """Kubernetes' OpenAPI v2 spec -> kubeconform ``standalone-strict`` schema files (name -> JSON text).

    The rules of yannh/kubernetes-json-schema (``openapi2jsonschema --expanded --kubernetes
    --stand-alone --strict``), implemented here: IntOrString/Quantity become ``oneOf``s; ``apiVersion``
    and ``kind`` get enums from ``x-kubernetes-group-version-kind``; every object with properties is
    closed; ``$ref``s are inlined; optional fields may be null; file name ``kind[-group]-version``.
    """
    wanted = set(names)
    definitions = copy.deepcopy(swagger["definitions"])
    definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {
        "oneOf": [{"type": "string"}, {"type": "integer"}]}
    definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {
        "oneOf": [{"type": "string"}, {"type": "number"}]}
    for definition in definitions.values():
        props = definition.get("properties", {})
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            api = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            for field, value in (("apiVersion", api), ("kind", gvk["kind"])):
                if field in props and value not in props[field].setdefault("enum", []):
                    props[field]["enum"].append(value)
    close_objects(definitions, include_self=False)
    out: dict[str, str] = {}
    for title, definition in definitions.items():
        parts = title.split(".")
        kind, group, version = parts[-1].lower(), parts[-3].lower(), parts[-2].lower()
        name = f"{kind}-{version}" if group in ("core", "api") else f"{kind}-{group}-{version}"
        if name not in wanted:
            continue
        schema = copy.deepcopy(definition)
        schema["$schema"] = "http://json-schema.org/schema#"
        schema.setdefault("type", "object")
        schema["additionalProperties"] = False
        schema = _deref(schema, definitions)
        if "properties" in schema:
            schema["properties"] = nullable_optional(int_or_string(schema["properties"]))
        out[name] = json.dumps(schema, indent=2)
    missing = wanted - set(out)
    if missing:
        raise KeyError(f"no definition for {sorted(missing)}")
    return out


def _crds(crd_paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for path in crd_paths:
        for file in sorted(path.glob("*.yaml")) if path.is_dir() else [path]:
            for doc in yaml.safe_load_all(file.read_text(encoding="utf-8")):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    yield doc


def _with_object_meta(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a CRD's root schema that declares ``apiVersion``, ``kind`` and ``metadata``: the API
    server accepts them on every object whether or not the CRD lists them (Linkerd's and the gMSA
    CRDs do not), and the root is closed below."""
    schema = copy.deepcopy(schema)
    props = schema.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props.setdefault("metadata", {"type": "object"})
    return schema


def crd_kinds(crd_paths: Iterable[Path]) -> set[tuple[str, str]]:
    """(apiVersion, kind) of every version the CRDs define."""
    return {(f"{crd['spec']['group']}/{v['name']}", crd["spec"]["names"]["kind"])
            for crd in _crds(crd_paths) for v in crd["spec"]["versions"]}


def crd_schemas(crd_paths: Iterable[Path], out: Path) -> list[Path]:
    """Write ``out/<group>/<kind>_<version>.json`` for every version of every CRD in ``crd_paths``.

    Lookup template: ``out/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json``.
    """
    written = []
    for crd in _crds(crd_paths):
        spec = crd["spec"]
        group, kind = spec["group"], spec["names"]["kind"]
        for version in spec["versions"]:
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if schema is None:
                continue
            converted = int_or_string(close_objects(_with_object_meta(schema), include_self=True))
            target = out / group / f"{kind.lower()}_{version['name']}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(converted, indent=1, sort_keys=True), encoding="utf-8")
            written.append(target)
    return written


# --------------------------------------------------------------------------- rendering + kubeconform


def render(stack: str, out: Path, cwd: Path = ROOT, paths: list[str] | None = None) -> None:
    """``passport render --stack STACK --out OUT`` (the real CLI, in a subprocess)."""
    cmd = [sys.executable, "-m", "components.cli", "render", "--stack", stack, "--out", str(out)]
    if paths:
        cmd += ["--paths", *paths]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, f"render {stack} failed:\n{run.stdout}{run.stderr}"


def kubernetes_yaml(rendered: Path) -> list[Path]:
    """Every rendered Kubernetes object file (kubernetes/**/*.yaml).

    Not ``spire/controller-manager-config.yaml``: it says ``kind: ControllerManagerConfig`` but is the
    controller manager's own config file (shipped inside a ConfigMap, which is validated), and the
    upstream ControllerManagerConfig CRD is an unused kubebuilder scaffold (``spec.foo``) that does
    not describe it.
    """
    return sorted(rendered.glob("**/kubernetes/**/*.yaml"))


def documents(files: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for file in files:
        for doc in yaml.safe_load_all(file.read_text(encoding="utf-8")):
            if doc:
                yield doc


def kubeconform(exe: Path, files: list[Path], crd_dir: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    builtin = str(K8S_SCHEMAS) + "/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}" \
        "/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    crds = str(crd_dir) + "/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
    cmd = [str(exe), "-strict", "-summary", "-output", "text", "-kubernetes-version", K8S_VERSION,
           "-schema-location", builtin, "-schema-location", crds, *map(str, files)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    match = SUMMARY.search(run.stdout)
    assert match, f"no summary from kubeconform:\n{run.stdout}{run.stderr}"
    keys = ("resources", "files", "valid", "invalid", "errors", "skipped")
    return run, dict(zip(keys, map(int, match.groups()), strict=True))


@pytest.fixture(scope="module")
def kubeconform_bin() -> Path:
    """The real kubeconform (skips on a user's machine without it, fails in CI)."""
    return require_tool("kubeconform")


# cert-manager and trust-manager (the local stack's Linkerd identity) come from the Go module
# cache through scripts/crds.py, never committed.
MODULE_CRDS = ("cert-manager/cert-manager@", "cert-manager/trust-manager@")


@pytest.fixture(scope="module")
def crd_files() -> list[Path]:
    missing = [str(p.relative_to(ROOT)) for p in CRD_FILES if not any(p.glob("*.yaml"))]
    if missing:
        pytest.fail(f"committed CRD folders missing or empty: {missing} (scripts/crds.py vendor makes crds/)")
    require_tool("go")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "crds.py"), "paths"], capture_output=True,
                         text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    from_modules = [Path(line) for line in out.stdout.splitlines() if any(m in line for m in MODULE_CRDS)]
    assert from_modules, out.stdout
    return [*CRD_FILES, *from_modules]


@pytest.fixture(scope="module")
def crd_dir(tmp_path_factory: pytest.TempPathFactory, crd_files: list[Path]) -> Path:
    out = tmp_path_factory.mktemp("crd-schemas")
    crd_schemas(crd_files, out)
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every stack in stacks/, plus prod with a Windows pod agent (renders a GMSACredentialSpec)."""
    out = tmp_path_factory.mktemp("rendered")
    for stack in list_stacks(ROOT):
        render(stack, out / stack)
    variant = tmp_path_factory.mktemp("windows-pods")
    (variant / "stacks").mkdir()
    stack_doc = yaml.safe_load((ROOT / "stacks/Pulumi.prod.yaml").read_text(encoding="utf-8"))
    stack_doc["config"]["agent-passport:windows"].update(WINDOWS_DOMAIN_IDS)
    (variant / "stacks/Pulumi.prod.yaml").write_text(yaml.safe_dump(stack_doc), encoding="utf-8")
    agents = variant / "agents"
    shutil.copytree(ROOT / "agents", agents)
    (agents / "claims-bot.yaml").write_text(yaml.safe_dump(WINDOWS_POD_AGENT), encoding="utf-8")
    render("prod", out / "prod-windows-pods", cwd=variant, paths=[str(agents)])
    # prod with the audit collector (docs/audit.md), its own registration included (roles-anywhere)
    audit = tmp_path_factory.mktemp("audit")
    (audit / "stacks").mkdir()
    audit_doc = yaml.safe_load((ROOT / "stacks/Pulumi.prod.yaml").read_text(encoding="utf-8"))
    audit_doc["config"]["agent-passport:subsystems"]["audit"] = True
    audit_doc["config"]["agent-passport:audit"] = {"credentials": "roles-anywhere",
                                                   "image": "registry.acme-corp.net/otelcol-audit:0.165.0"}
    (audit / "stacks/Pulumi.prod.yaml").write_text(yaml.safe_dump(audit_doc), encoding="utf-8")
    render("prod", out / "prod-audit", cwd=audit, paths=[str(ROOT / "agents")])
    return out


# --------------------------------------------------------------------------- tests


def test_every_stack_is_rendered_with_every_kind_it_uses(rendered: Path, crd_files: list[Path]) -> None:
    stacks = list_stacks(ROOT)
    assert stacks and sorted(p.name for p in rendered.iterdir()) == sorted([*stacks, "prod-windows-pods", "prod-audit"])
    kinds = {(d["apiVersion"], d["kind"]) for d in documents(kubernetes_yaml(rendered))}
    custom = kinds & crd_kinds(crd_files)
    # Everything that is not a custom resource of the CRDs is a built-in kind with a stored schema.
    assert kinds - custom == set(BUILTIN_KINDS), sorted((kinds - custom) ^ set(BUILTIN_KINDS))
    for name in BUILTIN_KINDS.values():
        assert (BUILTIN_DIR / f"{name}.json").is_file(), name
    assert {k for _, k in custom} == {"ClusterSPIFFEID", "ClusterStaticEntry",
                                      "Server", "HTTPRoute", "AuthorizationPolicy", "MeshTLSAuthentication",
                                      "GMSACredentialSpec", "PodMonitor", "PrometheusRule",
                                      "Issuer", "ClusterIssuer", "Certificate", "Bundle"}


def test_crd_conversion_closes_objects_unless_unknown_fields_are_preserved(tmp_path: Path) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "spec": {"group": "example.dev", "names": {"kind": "Widget"}, "versions": [
               {"name": "v1", "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                   "spec": {"type": "object", "properties": {
                       "port": {"x-kubernetes-int-or-string": True},
                       "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                "properties": {"a": {"type": "string"}}},
                       "labels": {"type": "object", "additionalProperties": {"type": "string"}}}}}}}}]}}
    (tmp_path / "widget.yaml").write_text(yaml.safe_dump(crd))
    (written,) = crd_schemas([tmp_path / "widget.yaml"], tmp_path / "out")
    assert written == tmp_path / "out/example.dev/widget_v1.json"
    schema = json.loads(written.read_text())
    assert schema["additionalProperties"] is False
    spec = schema["properties"]["spec"]
    assert spec["additionalProperties"] is False
    assert "additionalProperties" not in spec["properties"]["free"]
    assert spec["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert spec["properties"]["port"]["oneOf"] == [{"type": "string"}, {"type": "integer"}]


def test_stored_builtin_schemas_are_what_the_generator_makes() -> None:
    """Regenerate the stored built-in schemas from k8s.io/kubernetes's OpenAPI (downloaded into the Go
    module cache when missing) and compare."""
    gomodcache = os.environ.get("GOMODCACHE") or str(Path(os.environ.get("GOPATH") or Path.home() / "go") / "pkg/mod")
    swagger = Path(gomodcache) / f"k8s.io/kubernetes@v{K8S_VERSION}/api/openapi-spec/swagger.json"
    if not swagger.exists():
        go = require_tool("go")
        got = subprocess.run([str(go), "mod", "download", "-json", f"k8s.io/kubernetes@v{K8S_VERSION}"],
                             capture_output=True, text=True, timeout=900, check=False)
        assert got.returncode == 0, f"go mod download k8s.io/kubernetes failed:\n{got.stdout}{got.stderr}"
        assert swagger.exists(), swagger
    made = builtin_schemas(json.loads(swagger.read_text(encoding="utf-8")), BUILTIN_KINDS.values())
    for name, text in made.items():
        assert (BUILTIN_DIR / f"{name}.json").read_text(encoding="utf-8") == text, name
    assert sorted(p.stem for p in BUILTIN_DIR.glob("*.json")) == sorted(made)


def test_all_rendered_kubernetes_yaml_validates_strictly(kubeconform_bin: Path, rendered: Path, crd_dir: Path) -> None:
    files = kubernetes_yaml(rendered)
    objects = list(documents(files))
    run, summary = kubeconform(kubeconform_bin, files, crd_dir)
    problems = [line for line in run.stdout.splitlines() if not line.startswith("Summary:")]
    assert summary["invalid"] == 0 and summary["errors"] == 0, "\n".join(problems) + run.stderr
    assert summary == {"resources": len(objects), "files": len(files), "valid": len(objects),
                       "invalid": 0, "errors": 0, "skipped": 0}
    assert run.returncode == 0


def test_kubeconform_reports_a_broken_deployment_and_a_misspelt_custom_resource_field(
        kubeconform_bin: Path, rendered: Path, crd_dir: Path, tmp_path: Path) -> None:
    deployment = next(d for d in documents(kubernetes_yaml(rendered / "dev")) if d["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "three"  # not an integer
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy2"] = "Always"  # no such field
    spiffe_id = next(d for d in documents(kubernetes_yaml(rendered / "dev")) if d["kind"] == "ClusterSPIFFEID")
    spiffe_id["spec"]["spiffeIdTemplate"] = spiffe_id["spec"].pop("spiffeIDTemplate")  # misspelt
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all([deployment, spiffe_id]), encoding="utf-8")
    run, summary = kubeconform(kubeconform_bin, [broken], crd_dir)
    assert run.returncode == 1
    assert summary["invalid"] == 2 and summary["valid"] == 0 and summary["errors"] == 0, run.stdout
    assert re.search(r"Deployment .* is invalid: .*/spec/replicas.*", run.stdout), run.stdout
    assert "imagePullPolicy2" in run.stdout, run.stdout
    assert re.search(r"ClusterSPIFFEID .* is invalid: .*spiffeIdTemplate", run.stdout), run.stdout


def test_a_kind_without_a_schema_is_an_error_not_a_pass(kubeconform_bin: Path, crd_dir: Path, tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({"apiVersion": "example.dev/v1", "kind": "Gadget",
                                       "metadata": {"name": "x"}}), encoding="utf-8")
    run, summary = kubeconform(kubeconform_bin, [unknown], crd_dir)
    assert summary["errors"] == 1 and run.returncode == 1
    assert "could not find schema for Gadget" in run.stdout, run.stdout


def _regenerate(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "regenerate":
        print("usage: python -m tests.unit.test_kubeconform regenerate <swagger.json>", file=sys.stderr)
        return 2
    swagger = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    BUILTIN_DIR.mkdir(parents=True, exist_ok=True)
    for old in BUILTIN_DIR.glob("*.json"):
        old.unlink()
    for name, text in sorted(builtin_schemas(swagger, BUILTIN_KINDS.values()).items()):
        (BUILTIN_DIR / f"{name}.json").write_text(text, encoding="utf-8")
        print(f"{BUILTIN_DIR / name}.json ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(_regenerate(sys.argv[1:]))
