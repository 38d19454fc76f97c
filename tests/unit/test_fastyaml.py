"""The fast YAML path returns exactly what the reference (PyYAML) loader returns, or nothing.

Every YAML file of the repository, the synthetic fleet and thousands of mutants of real
manifests are read both ways: whenever the fast path answers, its values (types included) and
document lines must equal the reference's, and the reference must have accepted the text.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from benchmarks.synthetic import write_fleet, write_grant_manifest
from components.errors import ManifestError
from components.manifest import fastyaml
from components.manifest.loader import parse_yaml_documents
from tests.conftest import ROOT

CORPUS = sorted(
    p for pattern in ("agents/**/*.yaml", "tests/fixtures/**/*.yaml", "tests/fixtures/**/*.yml", "stacks/*.yaml")
    for p in ROOT.glob(pattern)
)


def typed(value: Any) -> Any:
    """The value with every scalar's type spelled out (1, 1.0 and True differ)."""
    if isinstance(value, dict):
        return {"dict": [(typed(k), typed(v)) for k, v in value.items()]}
    if isinstance(value, list):
        return {"list": [typed(v) for v in value]}
    return (type(value).__name__, repr(value))


def reference(text: str) -> list[tuple[Any, int]] | str:
    try:
        return [(typed(v), line) for v, line, _ in parse_yaml_documents(text, "f.yaml")]
    except ManifestError as exc:
        return f"refused: {exc.problems[0].message}"


def agree(text: str) -> bool:
    """True when the fast path answered (and agreed); False when it left the text to the reference."""
    fast = fastyaml.parse(text)
    if fast is None:
        return False
    assert [(typed(v), line) for v, line in fast] == reference(text), text
    return True


def test_rapidyaml_is_installed() -> None:
    assert fastyaml.ryml is not None


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_of_the_repository(path: Path) -> None:
    agree(path.read_text(encoding="utf-8"))


def test_the_synthetic_fleet_takes_the_fast_path(tmp_path: Path) -> None:
    write_fleet(tmp_path / "fleet", 250, per_file=50)
    write_grant_manifest(tmp_path / "grants", 200)
    files = sorted((tmp_path).rglob("*.yaml"))
    assert all(agree(p.read_text()) for p in files)


@pytest.mark.parametrize(
    "text",
    [
        "a: 17:00\nb: no\nc: on\nd: true\ne: 8080\nf: '1'\ng: 1e3\nh: -0\ni: 1.\nj: .5\n",
        "a: 0x1F\nb: 0o17\nc: 1_000\nd: .inf\ne: .nan\nf: 0b1\ng: _1\nh: NaN\ni: Infinity\n",
        "a: 'x\\ny'\nb: \"x\\ty\\u00e9\\\\z\\\"q\"\nc: 'it''s'\nd: x\\y\ne: \"\\N\\_\\L\\P\"\n",
        "a: plain\n  folded\n  more\nb: |\n  keep\n  this\n\nc: >\n  fold\n  this\nd: |-\n  x\ne: |+\n  y\n\n",
        "a: é ü 中\n\ufeffb: 1\n", "'quoted key': v\n\"\": empty\n1: one\nnull: x\n",
        "---\na: 1\n---\n---\nb: 2\n...\n", "--- {a: 1}\n--- # c\n  b: 2\n", "- 1\n- [2, {x: y}]\n",
    ],
)
def test_scalars_and_documents_agree(text: str) -> None:
    agree(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: !!str 5\n", "a: !foo x\n", "a: &x 1\nb: *x\n", "b: &x {c: 1}\nd:\n  <<: *x\n", "<<: {a: 1}\n",
        "%YAML 1.2\n---\na: 1\n", "? a\n: b\n", "a:\n\t- tab\n", "a: 1\r\nb: 2\r\n", "a: \"\\0\"\n", "a: \"\\e\"\n",
        "a: 1\nb: 2\na: 3\n", "a: ~\n", "a: True\n", "a: '123'\n", "a: 007\n", "a: +12\n", "a: b: c\n",
        "a: 1\n...\nb: 2\n", "", "# only a comment\n", "a: " + "[" * 80 + "]" * 80 + "\n",
    ],
)
def test_what_the_fast_path_leaves_to_the_reference(text: str) -> None:
    assert fastyaml.parse(text) is None


def test_a_parse_error_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    assert fastyaml.parse("a: b: c\n") is None
    assert capfd.readouterr().err == ""


MUTATIONS = [*":-[]{},#'\"\n |>~01.e+@`=;<", "  ", "\n  ", "---\n", "...\n", "- ", ": ", "\\", "'x'", '"y"', "? "]


def _mutants(text: str, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)  # noqa: S311 - a reproducible corpus, not a secret
    out = []
    for _ in range(count):
        t = text
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(t) + 1)
            op = rng.random()
            if op < 0.4:
                t = t[:i] + rng.choice(MUTATIONS) + t[i:]
            elif op < 0.7:
                t = t[:i] + t[i + rng.randint(1, 3):]
            else:
                lines = t.split("\n")
                j = rng.randrange(len(lines))
                lines.insert(rng.randrange(len(lines) + 1), lines[j])
                t = "\n".join(lines)
        out.append(t)
    return out


@pytest.mark.parametrize("name", ["agent-cortex.yaml", "services.yaml", "ledger-sync.yaml", "invoice-processor.yaml"])
def test_mutated_manifests_agree_whenever_the_fast_path_answers(name: str) -> None:
    text = (ROOT / "agents" / name).read_text().replace("*", "x")  # '*' alone sends a file to the reference
    answered = sum(agree(m) for m in _mutants(text, 1500, seed=len(name)))
    assert answered > 300  # the fast path does answer for most harmless mutants
