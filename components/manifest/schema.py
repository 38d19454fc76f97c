"""JSON Schemas generated from the models (committed under ``schema/``, drift-tested)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from components.config import StackConfig
from components.manifest.models import AgentManifest, ServiceManifest
from components.render.yamlout import dump_json

SCHEMA_DIR = Path("schema")
MANIFEST_SCHEMA = "agent-manifest.schema.json"
STACK_SCHEMA = "stack-config.schema.json"


def manifest_schema() -> dict[str, Any]:
    """One schema for any manifest document (an Agent or a Service, chosen by ``kind``)."""
    schema = TypeAdapter(AgentManifest | ServiceManifest).json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Agent Passport manifest (Agent or Service)"
    return schema


def stack_schema() -> dict[str, Any]:
    schema = StackConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Agent Passport stack configuration (agent-passport:* keys)"
    return schema


def schema_files() -> dict[str, str]:
    return {MANIFEST_SCHEMA: dump_json(manifest_schema()), STACK_SCHEMA: dump_json(stack_schema())}
