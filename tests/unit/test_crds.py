"""The CRDs committed in ``crds/`` and ``scripts/crds.py`` that makes and lists them.

* every committed file is one ``apiextensions.k8s.io/v1`` CRD, free of schema descriptions,
  structural, with a provenance header that agrees with the script's pins and ``crds/README.md``
  (checked here with walkers of this test's own, not the script's);
* ``vendor`` re-run on sources rebuilt from the committed files gives the committed bytes, twice
  (deterministic, and nobody hand-edited a CRD or the README);
* description stripping keeps a *property* named ``description`` and data such as defaults;
* ``paths`` lists every committed CRD plus cert-manager's and prometheus-operator's from the Go
  module cache, covering every custom kind the stacks render, and fails in one line naming the
  module when it cannot get one.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from components.render.windows import GMSA_CREDSPEC_API
from tests.support.tools import ROOT, require_tool
from tests.unit.test_kubeconform import documents, kubernetes_yaml, render

CRDS = ROOT / "crds"
SCRIPT = ROOT / "scripts" / "crds.py"
HEADER_KEYS = ("upstream", "source", "version", "licence", "changes")
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
BUILTIN_GROUPS = ("", "apps", "policy", "rbac.authorization.k8s.io", "storage.k8s.io", "admissionregistration.k8s.io")


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crds_script", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


crds = _load_script()


def committed_files() -> list[Path]:
    return sorted(CRDS.glob("*/*.yaml"))


def header(path: Path) -> dict[str, str]:
    """The leading ``# key: value`` lines of a committed CRD (and its first line as ``title``)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("# "):
            break
        lines.append(line[2:])
    out = {"title": lines[0]} if lines else {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def schema_nodes(node: Any, path: str = "", junctor: bool = False) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Every schema node of an openAPIV3Schema (this test's own walker): (path, node, under a junctor)."""
    assert isinstance(node, dict), f"{path}: a schema is not a mapping"
    yield path or "/", node, junctor
    for name, sub in (node.get("properties") or {}).items():
        yield from schema_nodes(sub, f"{path}/properties/{name}", junctor)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            yield from schema_nodes(node[key], f"{path}/{key}", junctor or key == "not")
    for key in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(node.get(key) or []):
            yield from schema_nodes(sub, f"{path}/{key}/{i}", True)


def schemas(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for v in doc["spec"]["versions"]:
        yield v["name"], v["schema"]["openAPIV3Schema"]


# --------------------------------------------------------------------------- the committed files


def test_the_committed_crds_are_there() -> None:
    folders = {p.parent.name for p in committed_files()}
    assert folders == {up.folder for up in crds.VENDORED}
    kinds = {yaml.safe_load(p.read_text(encoding="utf-8"))["spec"]["names"]["kind"] for p in committed_files()}
    assert {"ClusterSPIFFEID", "ClusterStaticEntry", "Server", "HTTPRoute", "AuthorizationPolicy",
            "MeshTLSAuthentication", "GMSACredentialSpec"} <= kinds


@pytest.mark.parametrize("path", committed_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_crd_is_a_v1_crd_named_after_its_file(path: Path) -> None:
    (doc,) = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1" and doc["kind"] == "CustomResourceDefinition"
    spec = doc["spec"]
    assert doc["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}" == path.stem
    assert spec["scope"] in ("Namespaced", "Cluster")
    assert sum(bool(v.get("storage")) for v in spec["versions"]) == 1
    assert "status" not in doc and None not in doc["metadata"].values()


@pytest.mark.parametrize("path", committed_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_crd_has_no_schema_description_and_is_structural(path: Path) -> None:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for version, schema in schemas(doc):
        for where, node, junctor in schema_nodes(schema):
            assert "description" not in node, f"{version} {where}: description"
            if junctor:
                assert not {"default", "additionalProperties", "nullable"} & set(node), f"{version} {where}"
            else:
                assert (node.get("type") or node.get("x-kubernetes-int-or-string")
                        or node.get("x-kubernetes-preserve-unknown-fields")), f"{version} {where}: no type"
        assert crds.crd_problems(doc) == []  # the script's own check agrees


@pytest.mark.parametrize("path", committed_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_crd_header_names_upstream_source_version_and_licence(path: Path) -> None:
    (up,) = [u for u in crds.VENDORED if u.folder == path.parent.name]
    h = header(path)
    kind = yaml.safe_load(path.read_text(encoding="utf-8"))["spec"]["names"]["kind"]
    assert h["title"].startswith(f"{kind} CustomResourceDefinition, made by `scripts/crds.py vendor`")
    assert set(HEADER_KEYS) <= set(h), h
    assert h["upstream"].startswith(f"{up.project} (Go module {up.module})")
    assert h["source"] == up.path or (up.path.endswith("/") and h["source"].startswith(up.path)), h["source"]
    assert h["version"] == up.version and h["licence"] == up.licence == "Apache-2.0"
    assert "schema descriptions removed" in h["changes"]


def test_readme_lists_every_folder_with_its_provenance() -> None:
    text = (CRDS / "README.md").read_text(encoding="utf-8")
    for up in crds.VENDORED:
        row = (f"| `{up.folder}/` | {up.project} | `{up.path}` | {up.version} | {up.licence} "
               "| `scripts/crds.py vendor` |")
        assert row in text.splitlines(), row
    for m in crds.FROM_MODULES:
        assert f"| {m.module} | `{m.folder}/` | {m.version} |" in text


def test_the_gmsa_crd_serves_what_the_renderer_emits_with_the_stored_body() -> None:
    doc = yaml.safe_load((CRDS / "windows/gmsacredentialspecs.windows.k8s.io.yaml").read_text(encoding="utf-8"))
    group, version = GMSA_CREDSPEC_API.split("/")
    assert doc["spec"]["group"] == group
    versions = {v["name"]: v for v in doc["spec"]["versions"]}
    assert versions[version]["served"] and versions[version]["storage"]
    assert versions["v1alpha1"]["served"] and not versions["v1alpha1"]["storage"]
    assert versions[version]["schema"] == versions["v1alpha1"]["schema"]


# --------------------------------------------------------------------------- vendor


def _sources_from_committed(src: Path) -> None:
    """The upstream layout (``<folder>/<source file name>``) rebuilt from the committed files."""
    for path in committed_files():
        source = header(path)["source"]
        target = src / path.parent.name / Path(source).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")


def _vendor(src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "vendor", "--from", str(src), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_vendor_on_the_committed_sources_gives_the_committed_bytes_twice(tmp_path: Path) -> None:
    _sources_from_committed(tmp_path / "src")
    for out in (tmp_path / "out1", tmp_path / "out2"):
        run = _vendor(tmp_path / "src", out)
        assert run.returncode == 0, run.stderr
    committed = _tree(CRDS)
    assert set(committed) == {"README.md", *(f"{p.parent.name}/{p.name}" for p in committed_files())}
    assert _tree(tmp_path / "out1") == _tree(tmp_path / "out2") == committed


def test_vendor_strips_a_description_added_by_hand_and_drops_stale_files(tmp_path: Path) -> None:
    _sources_from_committed(tmp_path / "src")
    source = next((tmp_path / "src/spire").glob("*clusterspiffeids*"))
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["description"] = "added"
    source.write_text(yaml.safe_dump(doc), encoding="utf-8")
    out = tmp_path / "out"
    (out / "spire").mkdir(parents=True)
    (out / "spire/stale.yaml").write_text("{}", encoding="utf-8")
    assert _vendor(tmp_path / "src", out).returncode == 0
    assert _tree(out) == _tree(CRDS)


def test_vendor_refuses_a_missing_folder_in_one_line(tmp_path: Path) -> None:
    _sources_from_committed(tmp_path / "src")
    for p in (tmp_path / "src/linkerd").iterdir():
        p.unlink()
    run = _vendor(tmp_path / "src", tmp_path / "out")
    assert run.returncode == 1 and not (tmp_path / "out").exists()
    assert run.stderr.count("\n") == 1 and "linkerd" in run.stderr and "linkerd/linkerd2" in run.stderr, run.stderr


def test_strip_descriptions_keeps_a_property_named_description_and_data() -> None:
    schema = {
        "type": "object", "description": "root",
        "properties": {
            "description": {"type": "string", "description": "a property called description"},
            "items": {"type": "array", "description": "x", "items": {"type": "object", "description": "y",
                                                                        "properties": {"a": {"type": "string"}}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string", "description": "z"}},
            "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "either": {"type": "object", "oneOf": [{"required": ["a"], "description": "j"}],
                       "not": {"required": ["b"], "description": "k"}},
            "config": {"type": "object", "default": {"description": "data, kept"},
                       "x-kubernetes-validations": [{"rule": "self.size() > 0", "message": "m"}]},
        },
    }
    before = copy.deepcopy(schema)
    out = crds.strip_descriptions(schema)
    assert schema == before  # a copy
    assert [p for p, node, _ in schema_nodes(out) if "description" in node] == []
    assert out["properties"]["description"] == {"type": "string"}
    assert out["properties"]["config"]["default"] == {"description": "data, kept"}
    assert out["properties"]["config"]["x-kubernetes-validations"] == [{"rule": "self.size() > 0", "message": "m"}]
    assert out["properties"]["either"]["oneOf"] == [{"required": ["a"]}]
    assert out["properties"]["either"]["not"] == {"required": ["b"]}
    assert crds.structural_problems(out) == []


def test_the_checks_catch_a_description_and_a_node_without_type() -> None:
    doc = yaml.safe_load((CRDS / "spire/clusterspiffeids.spire.spiffe.io.yaml").read_text(encoding="utf-8"))
    spec = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["className"]["description"] = "back"
    del spec["properties"]["dnsNameTemplates"]["type"]
    problems = crds.crd_problems(doc)
    assert any(p.endswith("/properties/spec/properties/className: description") for p in problems), problems
    assert any(p.endswith("/properties/spec/properties/dnsNameTemplates: no type") for p in problems), problems


# --------------------------------------------------------------------------- paths


def _paths(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "paths"], capture_output=True, text=True,
                          timeout=900, check=False, env=env)


def _kinds(files: list[Path]) -> set[tuple[str, str]]:
    out = set()
    for file in files:
        for doc in crds.load_documents(file.read_text(encoding="utf-8"), str(file)):
            assert doc["kind"] == "CustomResourceDefinition", file
            out |= {(f"{doc['spec']['group']}/{v['name']}", doc["spec"]["names"]["kind"])
                    for v in doc["spec"]["versions"] if v.get("served")}
    return out


def test_paths_lists_every_crd_the_stacks_need(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Downloads cert-manager and prometheus-operator (about 4 MB each) unless in the module cache."""
    require_tool("go")
    run = _paths()
    assert run.returncode == 0, run.stderr
    files = [Path(line) for line in run.stdout.splitlines()]
    assert all(f.is_absolute() and f.is_file() for f in files), files
    assert files[: len(committed_files())] == committed_files()
    kinds = _kinds(files)
    for needed in (("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate"),
                   ("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "ServiceMonitor"),
                   ("monitoring.coreos.com/v1", "PrometheusRule"), (GMSA_CREDSPEC_API, "GMSACredentialSpec")):
        assert needed in kinds, needed
    rendered = tmp_path_factory.mktemp("rendered")
    for stack in ("dev", "staging", "prod"):
        render(stack, rendered / stack)
    custom = {(d["apiVersion"], d["kind"]) for d in documents(kubernetes_yaml(rendered))
              if "/" in d["apiVersion"] and d["apiVersion"].split("/")[0] not in BUILTIN_GROUPS}
    assert custom and custom <= kinds, sorted(custom - kinds)


def test_paths_names_the_module_it_cannot_get_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no `go`
    run = _paths(env)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.count("\n") == 1, run.stderr
    assert "github.com/cert-manager/cert-manager@v1.21.2" in run.stderr and "`go` is not on PATH" in run.stderr


def test_module_dir_reports_a_refused_or_unknown_module_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("go")
    monkeypatch.setenv("GOPROXY", "off")  # nothing leaves the machine: not in the cache = cannot download
    monkeypatch.setenv("GOFLAGS", "-mod=mod")
    with pytest.raises(crds.CrdError, match=r"^cannot download Go module example\.invalid/none@v0\.0\.1: ") as e:
        crds.module_dir("example.invalid/none", "v0.0.1")
    assert "\n" not in str(e.value)
