"""Deterministic YAML/JSON text for rendered artifacts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

try:  # libyaml's emitter: same output, an order of magnitude faster for large fleets
    from yaml import CSafeDumper as _Base
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeDumper as _Base  # type: ignore[assignment]


class _Dumper(_Base):
    """Block style; multi-line strings as literal blocks so configs stay readable."""


def _str(dumper: _Base, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(obj: Any) -> str:
    """One YAML document; insertion order kept (renderers build dicts deterministically)."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)


def dump_yaml_documents(objs: Iterable[Mapping[str, Any]]) -> str:
    return "---\n".join(dump_yaml(dict(o)) for o in objs)


def dump_json(obj: Any) -> str:
    """Stable JSON (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
