#!/usr/bin/env python3
"""CustomResourceDefinitions the project validates against and a local API server needs.

Two kinds of CRD:

* **committed** (``crds/<folder>/``): SPIRE controller manager, Linkerd policy and the Windows
  gMSA credential spec. Their Go modules are refused by this project's module proxy, so they are
  kept in the repository as data, made by ``vendor`` from the upstream files with every schema
  ``description`` removed and a provenance header.
* **from the Go module cache** (never committed): cert-manager and prometheus-operator, whose
  modules the proxy serves; ``paths`` downloads them (``go mod download -json``) and checks them.

Usage (the project's virtualenv python; stdlib + PyYAML)::

    scripts/crds.py vendor --from DIR [--out crds]   # DIR holds spire/, linkerd/, windows/ upstream files
    scripts/crds.py paths                            # every CRD file a local API server needs, one a line
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# --------------------------------------------------------------------------- pins


@dataclasses.dataclass(frozen=True)
class Vendored:
    """An upstream project whose CRDs are committed under ``crds/<folder>/``."""

    folder: str
    project: str  # owner/name of the upstream repository
    module: str  # its Go module path (refused by the proxy: hence committed)
    path: str  # the source path in the upstream repository: a folder (ends in /) or one file
    version: str
    licence: str
    helm_template: bool = False  # source lines with a Helm expression are dropped (metadata only)
    also_serve: tuple[str, str] | None = None  # (existing version, new version) served with one body
    note: str = ""


@dataclasses.dataclass(frozen=True)
class FromModule:
    """An upstream Go module whose CRDs ``paths`` takes from the module cache."""

    module: str
    version: str
    folder: str  # inside the module
    files: tuple[str, ...]  # CRD files in that folder; () = every *.yaml
    kinds: tuple[str, ...]  # kinds the project renders or will render; checked to be defined
    licence: str


VENDORED = (
    Vendored(
        folder="spire",
        project="spiffe/spire-controller-manager",
        module="github.com/spiffe/spire-controller-manager",
        path="config/crd/bases/",
        version="v0.6.6-19-g430567c (commit 430567cc024fb0a2c07d2a1972128e68d1c1f54d)",
        licence="Apache-2.0",
    ),
    Vendored(
        folder="linkerd",
        project="linkerd/linkerd2",
        module="github.com/linkerd/linkerd2",
        path="charts/linkerd-crds/templates/policy/",
        version="edge-26.8.3 (commit 19a0d90d5a4a65e0b976f079ba8a5f1dab12c005)",
        licence="Apache-2.0",
        helm_template=True,
        note="Helm template lines (chart label and annotations) removed",
    ),
    Vendored(
        folder="windows",
        project="kubernetes-sigs/windows-gmsa",
        module="github.com/kubernetes-sigs/windows-gmsa/admission-webhook",
        path="admission-webhook/deploy/gmsa-crd.yml",
        version="v0.1.0-18-g1607040 (commit 1607040fe08e4c529904d5663969ee0bfc5b6e52, 2021-05-17)",
        licence="Apache-2.0",
        also_serve=("v1alpha1", "v1"),
        note="also serves windows.k8s.io/v1 (storage) with the v1alpha1 body, v1alpha1 deprecated: the "
             "layout upstream adopted in commit 2f2f42f (v0.3.0) and what components/render/windows.py emits",
    ),
)

FROM_MODULES = (
    FromModule(
        module="github.com/cert-manager/cert-manager",
        version="v1.21.2",  # newest v1.21.x the module proxy serves
        folder="deploy/crds",  # controller-gen output, plain YAML (the Helm chart is elsewhere)
        files=(),
        kinds=("Certificate", "CertificateRequest", "ClusterIssuer", "Issuer"),
        licence="Apache-2.0",
    ),
    FromModule(
        module="github.com/cert-manager/trust-manager",
        version="v0.25.0",  # newest the module proxy lists
        folder="deploy/crds",  # controller-gen output, plain YAML
        files=("trust.cert-manager.io_bundles.yaml",),
        kinds=("Bundle",),  # publishes Linkerd's trust roots (mesh.anchorCustody cert-manager)
        licence="Apache-2.0",
    ),
    FromModule(
        module="github.com/prometheus-operator/prometheus-operator",
        version="v0.85.0",  # the only version of the module the proxy lists
        folder="example/prometheus-operator-crd",
        files=("monitoring.coreos.com_podmonitors.yaml", "monitoring.coreos.com_servicemonitors.yaml",
               "monitoring.coreos.com_prometheusrules.yaml"),
        kinds=("PodMonitor", "ServiceMonitor", "PrometheusRule"),
        licence="Apache-2.0",
    ),
)

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "crds"
MADE_BY = "scripts/crds.py vendor"
CRD_API = "apiextensions.k8s.io/v1"
GO_TIMEOUT_S = 600


class CrdError(Exception):
    """One line naming what is wrong."""


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.1's ``=`` value tag (an ``enum: [=]`` in some CRDs) as a string."""


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]


def load_documents(text: str, where: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as e:
        raise CrdError(f"{where}: not YAML ({' '.join(str(e).split())})") from e
    for doc in docs:
        if not isinstance(doc, dict):
            raise CrdError(f"{where}: a document is not a mapping")
    return docs


class _Dumper(yaml.SafeDumper):
    """Block style, the source's key order, no anchors/aliases (every node written out)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=100_000)


# --------------------------------------------------------------------------- schemas

# JSONSchemaProps fields whose value is a map of name -> schema, a list of schemas, or one schema.
_SCHEMA_MAPS = ("properties", "patternProperties", "definitions", "dependencies")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_ONE = ("not", "items", "additionalProperties", "additionalItems")
_JUNCTORS = (*_SCHEMA_LISTS, "not")


def strip_descriptions(schema: Any) -> Any:
    """A copy of ``schema`` without any schema's ``description``; a *property* named description stays.

    Only schema positions are walked: ``default``, ``enum``, ``example`` and
    ``x-kubernetes-validations`` are data and are kept as they are.
    """
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "description":
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: strip_descriptions(sub) for name, sub in value.items()}
        elif key in (*_SCHEMA_LISTS, *_SCHEMA_ONE) and isinstance(value, list):  # incl. items: [schemas]
            out[key] = [strip_descriptions(sub) for sub in value]
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            out[key] = strip_descriptions(value)
        else:
            out[key] = value
    return out


def schema_nodes(schema: Any, path: str = "", in_junctor: bool = False) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Every schema node: (JSON-pointer-ish path, node, whether it sits under allOf/anyOf/oneOf/not)."""
    if not isinstance(schema, dict):
        return
    yield path or "/", schema, in_junctor
    for key, value in schema.items():
        junctor = in_junctor or key in _JUNCTORS
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            for name, sub in value.items():
                yield from schema_nodes(sub, f"{path}/{key}/{name}", junctor)
        elif key in (*_SCHEMA_LISTS, *_SCHEMA_ONE) and isinstance(value, list):
            for i, sub in enumerate(value):
                yield from schema_nodes(sub, f"{path}/{key}/{i}", junctor)
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            yield from schema_nodes(value, f"{path}/{key}", junctor)


def structural_problems(schema: Any) -> list[str]:
    """Where ``schema`` breaks Kubernetes' structural-schema rules this project relies on.

    Outside allOf/anyOf/oneOf/not every node states its ``type``, unless it is
    ``x-kubernetes-int-or-string`` or ``x-kubernetes-preserve-unknown-fields``; inside them no node
    sets ``type``, ``description``, ``default``, ``additionalProperties`` or ``nullable`` (the
    int-or-string pattern ``anyOf: [{type: integer}, {type: string}]`` excepted).
    """
    problems = []
    for path, node, in_junctor in schema_nodes(schema):
        if in_junctor:
            int_or_string = node.get("type") in ("integer", "string") and set(node) <= {"type"}
            bad = sorted({"type", "description", "default", "additionalProperties", "nullable"} & set(node))
            if bad and not int_or_string:
                problems.append(f"{path}: {', '.join(bad)} under a logical junctor")
        elif not (node.get("type") or node.get("x-kubernetes-int-or-string")
                  or node.get("x-kubernetes-preserve-unknown-fields")):
            problems.append(f"{path}: no type")
    return problems


def descriptions(schema: Any) -> list[str]:
    """Paths of every schema node that still has a ``description``."""
    return [path for path, node, _ in schema_nodes(schema) if "description" in node]


def crd_problems(doc: dict[str, Any]) -> list[str]:
    """Why ``doc`` is not a valid, description-free, structural apiextensions.k8s.io/v1 CRD."""
    if doc.get("apiVersion") != CRD_API or doc.get("kind") != "CustomResourceDefinition":
        return [f"not a {CRD_API} CustomResourceDefinition ({doc.get('apiVersion')} {doc.get('kind')})"]
    spec = doc.get("spec") or {}
    name = (doc.get("metadata") or {}).get("name")
    problems = []
    if name != f"{(spec.get('names') or {}).get('plural')}.{spec.get('group')}":
        problems.append(f"metadata.name {name!r} is not <plural>.<group>")
    versions = spec.get("versions") or []
    if sum(bool(v.get("storage")) for v in versions) != 1:
        problems.append("not exactly one storage version")
    for v in versions:
        schema = (v.get("schema") or {}).get("openAPIV3Schema")
        if schema is None:
            problems.append(f"version {v.get('name')}: no openAPIV3Schema")
            continue
        problems += [f"version {v.get('name')}: {p}" for p in structural_problems(schema)]
        problems += [f"version {v.get('name')}: {p}: description" for p in descriptions(schema)]
    return problems


# --------------------------------------------------------------------------- vendor


def _drop_helm_lines(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if "{{" not in line)


def _serve_also(doc: dict[str, Any], existing: str, new: str, where: str) -> None:
    """Serve version ``new`` with ``existing``'s body (new is the storage version); idempotent."""
    versions = doc["spec"]["versions"]
    by_name = {v["name"]: v for v in versions}
    if existing not in by_name:
        raise CrdError(f"{where}: no version {existing} to serve as {new}")
    old = by_name[existing]
    if new in by_name:
        if by_name[new].get("schema") != old.get("schema"):
            raise CrdError(f"{where}: version {new} exists with a body different from {existing}'s")
        added = by_name[new]
    else:
        added = {"name": new, "served": True, "storage": True, "schema": copy.deepcopy(old.get("schema"))}
        versions.append(added)
    for v in versions:
        v["storage"] = v is added
    old["served"] = True
    old["deprecated"] = True


def _clean(doc: dict[str, Any], up: Vendored, where: str) -> dict[str, Any]:
    """The CRD as committed: schemas without descriptions, no status stub, no empty metadata fields."""
    doc = dict(doc)
    doc.pop("status", None)  # the API server's business; the upstream files carry an empty stub
    doc["metadata"] = {k: v for k, v in (doc.get("metadata") or {}).items() if v not in (None, {}, "")}
    spec = doc["spec"] = dict(doc["spec"])
    spec["versions"] = [dict(v) for v in spec.get("versions") or []]
    for v in spec["versions"]:
        if "schema" in v:
            v["schema"] = {**v["schema"],
                           "openAPIV3Schema": strip_descriptions(v["schema"].get("openAPIV3Schema"))}
    if up.also_serve:
        _serve_also(doc, *up.also_serve, where)
    problems = crd_problems(doc)
    if problems:
        raise CrdError(f"{where}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return doc


def header(doc: dict[str, Any], up: Vendored, source: str) -> str:
    changes = "schema descriptions removed; the status stub and empty metadata fields dropped"
    lines = [
        f"{doc['spec']['names']['kind']} CustomResourceDefinition, made by `{MADE_BY}`: do not edit by hand.",
        f"upstream: {up.project} (Go module {up.module})",
        f"source:   {source}",
        f"version:  {up.version}",
        f"licence:  {up.licence}",
        f"changes:  {changes}" + (f"; {up.note}" if up.note else ""),
    ]
    return "".join(f"# {line}\n" for line in lines)


def _sources(src: Path, up: Vendored) -> list[Path]:
    folder = src / up.folder
    files = sorted(p for p in folder.glob("*") if p.suffix in (".yaml", ".yml") and p.is_file()) \
        if folder.is_dir() else []
    if not files:
        raise CrdError(f"no upstream CRD files in {folder} (expected {up.project} {up.path})")
    if not up.path.endswith("/") and len(files) != 1:
        raise CrdError(f"{folder}: expected the one file {up.project} {up.path}, found {len(files)}")
    return files


def vendor(src: Path, out: Path) -> list[Path]:
    """Write ``out/<folder>/<crd name>.yaml`` for every upstream CRD under ``src``, and ``out/README.md``."""
    made: dict[Path, str] = {}
    for up in VENDORED:
        for file in _sources(src, up):
            source = up.path + file.name if up.path.endswith("/") else up.path
            text = file.read_text(encoding="utf-8")
            if up.helm_template:
                text = _drop_helm_lines(text)
            for doc in load_documents(text, str(file)):
                cleaned = _clean(doc, up, str(file))
                target = out / up.folder / f"{cleaned['metadata']['name']}.yaml"
                if target in made:
                    raise CrdError(f"{file}: {cleaned['metadata']['name']} is defined twice")
                made[target] = header(cleaned, up, source) + _dump(cleaned)
    for up in VENDORED:  # the folders are this script's: nothing stale stays
        for old in sorted((out / up.folder).glob("*.yaml")):
            if old not in made:
                old.unlink()
    made[out / "README.md"] = readme()
    for target, text in sorted(made.items()):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return sorted(made)


def readme() -> str:
    rows = "".join(f"| `{up.folder}/` | {up.project} | `{up.path}` | {up.version} | {up.licence} | "
                   f"`{MADE_BY}` |\n" for up in VENDORED)
    modules = "".join(f"| {m.module} | `{m.folder}/` | {m.version} | {m.licence} | {', '.join(m.kinds)} |\n"
                      for m in FROM_MODULES)
    return f"""# CRD schemas (data, from the upstream projects)

Made by `{MADE_BY} --from DIR`, where DIR holds the upstream files in `spire/`, `linkerd/` and
`windows/`; do not edit by hand. Each file is one `{CRD_API}` CustomResourceDefinition with the
upstream structural schema unchanged but every schema `description` removed, and a header naming
the upstream project, source path, version and licence. Their Go modules are refused by this
project's module proxy, so they are committed as data (no upstream code).

| folder | upstream | path | version | licence | made by |
|---|---|---|---|---|---|
{rows}
Changes besides removing descriptions: the `status` stub and empty `metadata` fields are dropped;
Linkerd's Helm template lines (chart label and annotations) are removed; the Windows gMSA CRD,
stored upstream with `v1alpha1` only at that commit, also serves `windows.k8s.io/v1` (the storage
version) with the same body, as upstream does since commit 2f2f42f (v0.3.0) and as
`components/render/windows.py` emits.

`scripts/crds.py paths` lists these files and, from the Go module cache (`go mod download`, never
committed), the CRDs of:

| module | folder | version | licence | kinds the project uses |
|---|---|---|---|---|
{modules}"""


# --------------------------------------------------------------------------- paths


def module_dir(module: str, version: str) -> Path:
    """The module's folder in the Go module cache, downloading it if needed."""
    what = f"{module}@{version}"
    try:
        with tempfile.TemporaryDirectory() as cwd:  # outside any go.mod
            run = subprocess.run(["go", "mod", "download", "-json", what], cwd=cwd, capture_output=True,
                                 text=True, timeout=GO_TIMEOUT_S, check=False)
    except FileNotFoundError as e:
        raise CrdError(f"cannot download Go module {what}: `go` is not on PATH") from e
    except subprocess.TimeoutExpired as e:
        raise CrdError(f"cannot download Go module {what}: `go mod download` took over {GO_TIMEOUT_S}s") from e
    try:
        info = json.loads(run.stdout)
    except json.JSONDecodeError:
        info = {}
    error = info.get("Error") or (run.stderr.strip() if run.returncode else "")
    if error or not info.get("Dir"):
        reason = " ".join(str(error or "`go mod download` reported no Dir").split())
        raise CrdError(f"cannot download Go module {what}: {reason}")
    return Path(info["Dir"])


def module_crds(m: FromModule) -> list[Path]:
    """The module's CRD files, checked to be plain CRDs that define the kinds the project uses."""
    folder = module_dir(m.module, m.version) / m.folder
    files = [folder / f for f in m.files] if m.files else sorted(folder.glob("*.yaml"))
    where = f"Go module {m.module}@{m.version}"
    if not files:
        raise CrdError(f"{where}: no CRD files in {m.folder}/")
    kinds = set()
    for file in files:
        if not file.is_file():
            raise CrdError(f"{where}: {m.folder}/{file.name} is missing")
        for doc in load_documents(file.read_text(encoding="utf-8"), f"{where}: {m.folder}/{file.name}"):
            if doc.get("apiVersion") != CRD_API or doc.get("kind") != "CustomResourceDefinition":
                raise CrdError(f"{where}: {m.folder}/{file.name} is not a plain {CRD_API} CRD (a Helm template?)")
            kinds.add(doc["spec"]["names"]["kind"])
    if set(m.kinds) - kinds:
        raise CrdError(f"{where}: no CRD for {', '.join(sorted(set(m.kinds) - kinds))} in {m.folder}/")
    return files


def committed(crds: Path = CRDS) -> list[Path]:
    files = sorted(crds.glob("*/*.yaml"))
    if not files:
        raise CrdError(f"no committed CRDs under {crds} (run `{MADE_BY} --from DIR`)")
    return files


def paths(crds: Path = CRDS) -> list[Path]:
    """Every CRD file a local Kubernetes API server needs for the project's stacks."""
    out = committed(crds)
    for m in FROM_MODULES:
        out += module_crds(m)
    return out


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/crds.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("vendor", help="write crds/ from the upstream CRD files")
    v.add_argument("--from", dest="src", required=True, type=Path, help="folder with spire/, linkerd/, windows/")
    v.add_argument("--out", type=Path, default=CRDS, help="output folder (default: the repository's crds/)")
    sub.add_parser("paths", help="print every CRD file a local API server needs, one a line")
    args = parser.parse_args(argv)
    try:
        if args.command == "vendor":
            for path in vendor(args.src, args.out):
                print(path)
        else:
            for path in paths():
                print(path)
    except (CrdError, OSError) as e:
        print(f"scripts/crds.py {args.command}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
