"""Markdown reference of the manifest and stack-config fields, generated from the models.

Embedded in README.md between markers by ``passport schema`` and drift-tested, so the
documentation users read is the text the models validate with.
"""

from __future__ import annotations

import json
import re
from typing import Any

from components.manifest.schema import manifest_schema, stack_schema

START, END = "<!-- reference:start -->", "<!-- reference:end -->"


def _type(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if "anyOf" in prop:
        return " or ".join(_type(p) for p in prop["anyOf"] if p.get("type") != "null")
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if kind == "object" and "additionalProperties" in prop:
        return f"map of {_type(prop['additionalProperties'])}"
    return str(kind)


def _table(title: str, schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    doc = (schema.get("description") or "").strip().split("\n\n")[0].replace("\n", " ")
    lines = [f"#### {title}", "", doc, "", "| field | type | default | description |", "|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        default = "required" if name in required else (
            f"`{json.dumps(prop['default'])}`" if "default" in prop else "")
        desc = re.sub(r"\s+", " ", prop.get("description", "")).replace("|", "\\|")
        lines.append(f"| `{name}` | {_type(prop)} | {default} | {desc} |")
    return [*lines, ""]


def _document(title: str, schema: dict[str, Any], root_name: str | None) -> list[str]:
    out = [f"### {title}", ""]
    if root_name:
        out += _table(root_name, schema)
    for name, sub in schema.get("$defs", {}).items():
        if "properties" in sub:
            out += _table(name, sub)
    return out


def reference_markdown() -> str:
    lines = [START, "", "_Generated from the models by `passport schema`; do not edit by hand._", ""]
    lines += _document("Manifest reference (`agents/*.yaml`)", manifest_schema(), None)
    lines += _document("Stack config reference (`agent-passport:<field>` in `stacks/Pulumi.<env>.yaml`)",
                       stack_schema(), "StackConfig")
    return "\n".join([*lines, END])


def replace_reference(readme: str) -> str:
    """README text with the generated block replaced (or appended if the markers are absent)."""
    block = reference_markdown()
    if START in readme and END in readme:
        head, rest = readme.split(START, 1)
        return head + block + rest.split(END, 1)[1]
    return readme.rstrip("\n") + "\n\n" + block + "\n"
