"""Every generated artifact of a stack, for review (``passport render``).

Each subsystem contributes a function ``Platform -> Iterable[Artifact]`` to :data:`RENDERERS`.
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
from typing import Any

from components.gcpause import gc_paused
from components.platform_model import Platform, identity_bom
from components.render.yamlout import dump_json, dump_yaml

INDEX_FILE = ".passport-render.json"


@dataclass(frozen=True, order=True)
class Artifact:
    """One generated file."""

    path: str
    content: str


Renderer = Callable[[Platform], Iterable[Artifact]]


def kubernetes_artifacts(subsystem: str, objects: Iterable[Mapping[str, Any]]) -> list[Artifact]:
    """One ``.yaml`` per Kubernetes object under ``kubernetes/<subsystem>/``."""
    from components.kube import object_key

    return [Artifact(f"kubernetes/{subsystem}/{object_key(o)}.yaml", dump_yaml(dict(o))) for o in objects]


def identity_artifacts(platform: Platform) -> Iterable[Artifact]:
    yield Artifact("identity/bom.json", dump_json(identity_bom(platform)))


def _renderers() -> list[Renderer]:
    # Each subsystem registers its renderer here, in deployment order.
    from components.render.authz import authz_artifacts  # imports this module: import here
    from components.render.aws import aws_artifacts  # imports this module: import here
    from components.render.ci import ci_artifacts  # imports this module: import here
    from components.render.mesh import mesh_artifacts
    from components.render.observe import observe_artifacts
    from components.render.spire import spire_artifacts
    from components.render.trust import trust_artifacts  # imports this module: import here
    from components.render.vault import vault_artifacts  # imports this module: import here
    from components.render.windows import windows_artifacts  # imports this module: import here

    return [identity_artifacts, trust_artifacts, spire_artifacts, mesh_artifacts, authz_artifacts, vault_artifacts,
            windows_artifacts, aws_artifacts, ci_artifacts, observe_artifacts]


def render_all(platform: Platform) -> list[Artifact]:
    """All artifacts, sorted by path; two renderers claiming one path is a bug."""
    with gc_paused():
        return _render_all(platform)


def _render_all(platform: Platform) -> list[Artifact]:
    seen: dict[str, Artifact] = {}
    for renderer in _renderers():
        for artifact in renderer(platform):
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
