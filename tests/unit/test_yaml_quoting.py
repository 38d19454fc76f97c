"""Rendered YAML keeps strings strings for YAML 1.2 parsers (kubectl, go-yaml), not only YAML 1.1."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from components.config import load_stack_config
from components.manifest.loader import load_manifests, parse_yaml_documents
from components.platform_model import build_platform
from components.render.artifacts import render_all
from components.render.yamlout import dump_yaml, reads_as_non_string
from tests.conftest import ROOT

# YAML 1.2 core: floats without a dot, octal 0o, special floats; YAML 1.1's own cases
YAML12 = ["1e3", "1E3", "-1e-3", ".5e2", "1.", "0o17", "0x1F", ".inf", "-.Inf", ".NaN", "~", "null", "True",
          "123", "+12", "0777", "yes", "no", "on", "off", "17:00", "2024-01-31"]
# go-yaml also reads Go number syntax when a plain scalar starts like a number
GO_YAML = ["1_000", "0b101", "-0b1", "0x1p-2", "+Inf", "1_0.5e1", "+infinity"]
STRINGS = ["abc", "09:00", "e3", "4e4a0dc516b846c7", "1.0.0", "v1", "agent-1e3", "0xZZ", ".", "a b", "x:y"]


@pytest.mark.parametrize("value", YAML12 + GO_YAML + STRINGS)
def test_every_string_reads_back_as_that_string_under_yaml_1_2(value: str) -> None:
    text = dump_yaml({"k": value})
    ((doc, _, _),) = parse_yaml_documents(text, "t.yaml")  # the project's YAML 1.2 core resolver
    assert doc == {"k": value}, text


@pytest.mark.parametrize("value", YAML12 + GO_YAML)
def test_numbers_and_keywords_are_quoted(value: str) -> None:
    assert reads_as_non_string(value) or value in ("yes", "no", "on", "off", "17:00", "2024-01-31")
    assert dump_yaml({"k": value}) in (f"k: '{value}'\n", f'k: "{value}"\n')


@pytest.mark.parametrize("value", STRINGS)
def test_plain_strings_stay_plain(value: str) -> None:
    assert not reads_as_non_string(value)
    if value not in (".", "x:y", "a b"):
        assert dump_yaml({"k": value}) == f"k: {value}\n"


def _labels(value: Any, key: str) -> list[Any]:
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k == key]
        return found + [x for v in value.values() for x in _labels(v, key)]
    if isinstance(value, list):
        return [x for v in value for x in _labels(v, key)]
    return []


def test_an_agent_named_like_a_float_renders_as_a_string(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    shutil.copytree(ROOT / "agents", agents)
    (agents / "float.yaml").write_text("""\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata: {name: "1e3", team: qa, owner: qa@acme-corp.net}
spec:
  platform:
    kubernetes: {namespace: agents, serviceAccount: "1e3"}
  grants:
    - vault: {path: secret/data/qa, capabilities: [read]}
""")
    platform = build_platform(load_stack_config("dev", ROOT), load_manifests([agents]), "dev",
                              "stacks/Pulumi.dev.yaml")
    artifacts = {a.path: a.content for a in render_all(platform)}
    assert "agentpassport.dev/agent: '1e3'" in artifacts["kubernetes/spire/clusterspiffeid-agent.1e3.yaml"]
    values = []
    for path, text in artifacts.items():
        if path.endswith(".yaml"):
            for doc, _, _ in parse_yaml_documents(text, path):
                values += _labels(doc, "agentpassport.dev/agent")
    assert "1e3" in values
    assert all(isinstance(v, str) for v in values), [v for v in values if not isinstance(v, str)]
