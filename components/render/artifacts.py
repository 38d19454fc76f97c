"""Every generated artifact of a stack, for review (``passport render``).

Each subsystem contributes a function ``Plans -> Iterable[Artifact]`` (:func:`_renderers`),
rendering its validated plan (:mod:`components.compile`).
Paths are relative and grouped by kind: ``kubernetes/<subsystem>/<kind>-<ns>-<name>.yaml``,
``envoy/<gateway>.yaml``, ``rego/*.rego`` (+ ``*_test.rego``, ``data.json``),
``vault/policies/<agent>.hcl``, ``spire/server.conf`` / ``spire/agent.conf``,
``windows/<agent>.ps1``, ``identity/bom.json``. Rendering is deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.gcpause import gc_paused
from components.platform_model import Platform, identity_bom
from components.render.yamlout import dump_json, dump_yaml

if TYPE_CHECKING:
    from components.compile import Plans

INDEX_FILE = ".passport-render.json"


@dataclass(frozen=True, order=True)
class Artifact:
    """One generated file."""

    path: str
    content: str


Renderer = Callable[["Plans"], Iterable[Artifact]]


def kubernetes_artifacts(subsystem: str, objects: Iterable[Mapping[str, Any]]) -> list[Artifact]:
    """One ``.yaml`` per Kubernetes object under ``kubernetes/<subsystem>/``."""
    from components.kube import object_key

    return [Artifact(f"kubernetes/{subsystem}/{object_key(o)}.yaml", dump_yaml(dict(o))) for o in objects]


def identity_artifacts(plans: Plans) -> Iterable[Artifact]:
    yield Artifact("identity/bom.json", dump_json(identity_bom(plans.platform)))


def _renderers() -> list[Renderer]:
    # Each subsystem registers its renderer here, in deployment order. Each renders its validated
    # plan (components.compile); a subsystem without a plan renders nothing.
    from components.render import authz, aws, egress, mesh, spire, windows
    from components.render.audit import audit_artifacts
    from components.render.ci import ci_artifacts  # imports this module: import here
    from components.render.observe import observe_artifacts
    from components.render.trust import trust_artifacts  # imports this module: import here
    from components.render.vault import vault_artifacts  # imports this module: import here

    def vault(plans: Plans) -> Iterable[Artifact]:
        # the Vault renderer plans from the Platform itself (its plan is already validated here)
        return vault_artifacts(plans.platform) if plans.vault is not None else ()

    def aws_roles(plans: Plans) -> Iterable[Artifact]:
        # a base's anchor/provider and audit bucket are not rendered; roles are its shards'
        if plans.aws is None or plans.scope == "shared":
            return ()
        return aws.plan_artifacts(plans.platform, plans.aws)

    return [
        identity_artifacts,
        lambda plans: trust_artifacts(plans.platform),
        lambda plans: spire.plan_artifacts(plans.platform, plans.spire) if plans.spire else (),
        lambda plans: mesh.plan_artifacts(plans.mesh) if plans.mesh else (),
        lambda plans: authz.plan_artifacts(plans.platform, plans.authz) if plans.authz else (),
        lambda plans: egress.plan_artifacts(plans.egress) if plans.egress else (),
        vault,
        lambda plans: windows.plan_artifacts(plans.windows) if plans.windows else (),
        aws_roles,
        lambda plans: ci_artifacts(plans.platform),
        lambda plans: observe_artifacts(plans.platform),
        lambda plans: audit_artifacts(plans.platform) if plans.audit is not None else (),
    ]


def render_all(platform: Platform) -> list[Artifact]:
    """All artifacts, sorted by path (every problem of every subsystem raised first, at once)."""
    from components.compile import compile_plans

    with gc_paused():
        return _render_plans(compile_plans(platform))


def render_plans(plans: Plans) -> list[Artifact]:
    """All artifacts of validated plans, sorted by path; two renderers claiming one path is a bug."""
    with gc_paused():
        return _render_plans(plans)


def _render_plans(plans: Plans) -> list[Artifact]:
    seen: dict[str, Artifact] = {}
    for renderer in _renderers():
        for artifact in renderer(plans):
            if artifact.path in seen:
                raise ValueError(f"two renderers produced {artifact.path}")
            seen[artifact.path] = artifact
    return sorted(seen.values())


def write_artifacts(artifacts: list[Artifact], out: Path) -> tuple[int, int]:
    """Write artifacts under ``out``; remove only files a previous render wrote and no longer produces.

    Returns (written, removed). Files the user put there are never touched.
    """
    out.mkdir(parents=True, exist_ok=True)
    index = out / INDEX_FILE
    previous: list[str] = []
    if index.exists():
        try:
            previous = list(json.loads(index.read_text(encoding="utf-8")).get("files", []))
        except ValueError:
            previous = []
    current = [a.path for a in artifacts]
    for artifact in artifacts:
        target = out / artifact.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(artifact.content, encoding="utf-8")
    removed = 0
    for stale in sorted(set(previous) - set(current)):
        path = out / stale
        if path.is_file() and out.resolve() in path.resolve().parents:
            path.unlink()
            removed += 1
    index.write_text(dump_json({"files": current}), encoding="utf-8")
    return len(artifacts), removed
