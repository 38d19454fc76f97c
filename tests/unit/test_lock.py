"""``requirements.lock``: every dependency of ``pyproject.toml`` is pinned there, with hashes.

``scripts/setup`` installs with ``pip install --require-hashes -r requirements.lock`` and then the
project with ``--no-deps --no-build-isolation``, so a dependency (main, dev or build) added to
``pyproject.toml`` without running ``scripts/lock`` would be missing from the venv: this test
fails first, naming it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.tools import ROOT

LOCK = ROOT / "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@dataclass
class Pin:
    name: str
    version: str
    marker: str
    hashes: list[str] = field(default_factory=list)


def parse_lock(text: str) -> dict[str, Pin]:
    """`name==version [; marker] \\` lines, each followed by its `--hash=sha256:...` lines."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for raw in text.splitlines():
        line = raw.strip().removesuffix("\\").strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            assert current is not None, f"hash before any requirement: {raw}"
            algo, _, digest = line.removeprefix("--hash=").partition(":")
            assert algo == "sha256" and re.fullmatch(r"[0-9a-f]{64}", digest), raw
            current.hashes.append(digest)
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)\s*(?:;\s*(.*))?", line)
        assert m, f"not an exact pin: {raw}"
        current = Pin(canonicalize_name(m.group(1)), m.group(2), m.group(3) or "")
        assert current.name not in pins, f"{current.name} pinned twice"
        pins[current.name] = current
    return pins


PINS = parse_lock(LOCK.read_text(encoding="utf-8"))
DECLARED = [
    *PYPROJECT["project"]["dependencies"],
    *PYPROJECT["project"]["optional-dependencies"]["dev"],
    *PYPROJECT["build-system"]["requires"],
]


def test_every_pin_has_a_hash() -> None:
    assert len(PINS) > 20
    assert [p.name for p in PINS.values() if not p.hashes] == []


@pytest.mark.parametrize("spec", DECLARED)
def test_every_declared_dependency_is_locked_with_hashes(spec: str) -> None:
    req = Requirement(spec)
    pin = PINS.get(canonicalize_name(req.name))
    assert pin is not None, f"{req.name} is in pyproject.toml but not in requirements.lock: run scripts/lock"
    assert pin.hashes, f"{req.name} has no --hash in requirements.lock"
    assert req.specifier.contains(pin.version, prereleases=True), (
        f"requirements.lock pins {req.name}=={pin.version}, outside pyproject.toml's {req.specifier}: run scripts/lock"
    )


def test_the_kubernetes_sdk_is_the_plugin_bootstrap_builds() -> None:
    assert PINS["pulumi-kubernetes"].version == "4.25.0"


def test_parser_catches_a_missing_hash_and_a_loose_pin() -> None:
    assert parse_lock("a==1 \\\n    --hash=sha256:" + "0" * 64 + "\nb==2\n")["b"].hashes == []
    with pytest.raises(AssertionError, match="not an exact pin"):
        parse_lock("a>=1\n")
