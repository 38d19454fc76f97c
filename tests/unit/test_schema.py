"""The committed JSON Schemas match the models, and the examples validate against them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from components.manifest.loader import parse_yaml_documents
from components.manifest.schema import MANIFEST_SCHEMA, SCHEMA_DIR, STACK_SCHEMA, schema_files


def test_committed_schemas_are_up_to_date() -> None:
    for name, text in schema_files().items():
        committed = (SCHEMA_DIR / name).read_text(encoding="utf-8")
        assert committed == text, f"schema/{name} drifted from the models: run `passport schema`"


def test_examples_validate_against_the_json_schema() -> None:
    schema = json.loads((SCHEMA_DIR / MANIFEST_SCHEMA).read_text())
    count = 0
    for path in sorted(Path("agents").glob("*.yaml")):
        for doc, _, _ in parse_yaml_documents(path.read_text(), str(path)):
            jsonschema.validate(doc, schema)
            count += 1
    assert count == 7


def test_schema_rejects_unknown_fields_like_the_models() -> None:
    schema = json.loads((SCHEMA_DIR / MANIFEST_SCHEMA).read_text())
    doc = {"apiVersion": "passport.agentpassport.dev/v1alpha1", "kind": "Agent",
           "metadata": {"name": "a", "team": "t", "owner": "o@x.io", "colour": "red"},
           "spec": {"platform": {"kubernetes": {"namespace": "n", "serviceAccount": "s"}}}}
    validator = jsonschema.Draft202012Validator(schema)
    assert any("colour" in e.message for e in validator.iter_errors(doc))


def test_stack_files_validate_against_the_stack_schema() -> None:
    schema = json.loads((SCHEMA_DIR / STACK_SCHEMA).read_text())
    for path in sorted(Path("stacks").glob("Pulumi.*.yaml")):
        (doc, _, _), = parse_yaml_documents(path.read_text(), str(path))
        ours = {k.split(":", 1)[1]: v for k, v in doc["config"].items() if k.startswith("agent-passport:")}
        jsonschema.validate(ours, schema)


def test_every_field_is_documented() -> None:
    def walk(node: object, where: str) -> list[str]:
        missing = []
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                if isinstance(prop, dict) and "description" not in prop and "$ref" not in prop:
                    missing.append(f"{where}.{name}")
            for key, value in node.items():
                missing += walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                missing += walk(value, f"{where}[{i}]")
        return missing

    for name in (MANIFEST_SCHEMA, STACK_SCHEMA):
        assert walk(json.loads((SCHEMA_DIR / name).read_text()), name) == []
