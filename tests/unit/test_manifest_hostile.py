"""Hostile YAML is refused with file:line and a reason, before it can cost time or memory.

No test here asserts a time: the work is bounded by counting (how many values the loader builds)
or by running ``passport validate`` under small CPU and memory limits in a subprocess.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from components.errors import ManifestError
from components.manifest import loader
from components.manifest.loader import load_manifests, parse_yaml_documents
from tests.conftest import ROOT

BOMB = ROOT / "tests" / "fixtures" / "bad" / "42-alias-bomb.yaml"


def _laughs(levels: int, width: int = 9) -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _refusal(text: str) -> str:
    with pytest.raises(ManifestError) as info:
        list(parse_yaml_documents(text, "x.yaml"))
    (problem,) = info.value.problems
    return str(problem)


def test_the_alias_bomb_is_refused_naming_the_file_and_builds_no_value(monkeypatch: pytest.MonkeyPatch) -> None:
    built = 0
    to_python = loader._to_python

    def counting(node: Any) -> Any:
        nonlocal built
        built += 1
        return to_python(node)

    monkeypatch.setattr(loader, "_to_python", counting)
    with pytest.raises(ManifestError) as info:
        load_manifests([BOMB])
    (problem,) = info.value.problems
    assert problem.file == "tests/fixtures/bad/42-alias-bomb.yaml"
    assert problem.line == 5  # the document's first line
    assert "aliases would repeat" in problem.message and "at most 10,000" in problem.message
    assert built == 0  # refused on the composed graph, before any Python value


def test_passport_validate_refuses_the_bomb_within_small_cpu_and_memory_limits() -> None:
    """Before the bound, this document ran for minutes and allocated gigabytes."""

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (60, 60))
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    proc = subprocess.run(
        [sys.executable, "-m", "components.cli", "validate", "--stack", "dev", str(BOMB.relative_to(ROOT))],
        cwd=ROOT, capture_output=True, text=True, preexec_fn=limits, timeout=300, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "tests/fixtures/bad/42-alias-bomb.yaml:5: aliases would repeat" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_expanded_size_is_counted_on_the_graph_even_for_astronomical_documents() -> None:
    # 9**30 strings if built: counting shares each anchor's node, so this is 30 small steps
    message = _refusal(_laughs(30))
    repeated = int(message.split("aliases would repeat ")[1].split(" nodes")[0].replace(",", ""))
    assert repeated > 9**30


def test_aliases_that_repeat_a_few_nodes_still_work() -> None:
    text = "base: &b {methods: [GET], paths: [{prefix: /api}]}\nfirst: *b\nsecond: *b\n"
    ((value, _, _),) = parse_yaml_documents(text, "x.yaml")
    assert value["first"] == value["second"] == {"methods": ["GET"], "paths": [{"prefix": "/api"}]}
    # just over the bound: 10,001 repeated nodes
    text = "a: &a [" + ", ".join(["x"] * 10_000) + "]\nb: *a\n"
    assert "aliases would repeat 10,001 nodes" in _refusal(text)


def test_a_recursive_alias_is_refused() -> None:
    assert "refers to the collection it is inside" in _refusal("a: &x [1, *x]\n")


def test_deep_nesting_is_refused() -> None:
    assert _refusal("a: " + "[" * 64 + "]" * 64 + "\n") == "x.yaml:1: the document nests more than 64 levels deep"
    # through aliases too: each level is an alias of the one before
    nested = "l0: &l0 [x]\n" + "".join(f"l{i}: &l{i} [*l{i - 1}]\n" for i in range(1, 70))
    assert _refusal(nested).endswith("the document nests more than 64 levels deep")
    ((value, _, _),) = parse_yaml_documents("a: " + "[" * 63 + "]" * 63 + "\n", "x.yaml")
    assert str(value["a"]) == "[" * 63 + "]" * 63


def test_an_oversized_file_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 1024)
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * 2000 + "\n")
    with pytest.raises(ManifestError) as info:
        load_manifests([big])
    (problem,) = info.value.problems
    assert "a manifest file may have at most" in problem.message and problem.file.endswith("big.yaml")


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("a: !foo x\n", "!foo"),
        ("a:\n  b: !!python/object/apply:os.system [echo hi]\n", "tag:yaml.org,2002:python/object/apply:os.system"),
        ("a: !!python/object:os.system {x: 1}\n", "tag:yaml.org,2002:python/object:os.system"),
        ("--- !!set\n? a\n", "tag:yaml.org,2002:set"),
    ],
)
def test_tags_are_refused_on_scalars_lists_and_mappings(text: str, tag: str) -> None:
    assert _refusal(text).endswith(f": unsupported YAML tag {tag}")
