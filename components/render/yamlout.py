"""Deterministic YAML/JSON text for rendered artifacts."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml

try:  # libyaml's emitter: same output, an order of magnitude faster for large fleets
    from yaml import CSafeDumper as _Base
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeDumper as _Base  # type: ignore[assignment]


class _Dumper(_Base):
    """Block style; multi-line strings as literal blocks so configs stay readable."""


# PyYAML quotes strings a YAML 1.1 parser would read as something else ('yes', '0777', '12:30').
# YAML 1.2 (the core schema: kubectl, go-yaml, SPIRE's and Envoy's parsers) reads some plain
# scalars differently: '1e3' and '.5E2' are floats, '0o17' is an int. go-yaml also takes Go's
# number syntax ('1_000', '0b101', '0x1p-2', '+Inf'). Those strings are quoted as well.
_YAML12_NOT_STR = re.compile(
    r"^(?:~|null|Null|NULL|true|True|TRUE|false|False|FALSE"
    r"|[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"
    r"|[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


def reads_as_non_string(value: str) -> bool:
    """Would a YAML 1.2 core-schema parser, or go-yaml, read this plain scalar as a non-string?"""
    if _YAML12_NOT_STR.match(value):
        return True
    if not value or value[0] not in "0123456789+-.":
        return False  # go-yaml tries numbers only for plain scalars starting like one
    number = value.replace("_", "")
    parsers: list[Callable[[str], object]] = [lambda t: int(t, 0), float]
    if number.lstrip("+-").lower().startswith("0x"):  # Go's hex floats ('0x1p-2') need the prefix
        parsers.append(float.fromhex)
    for parse in parsers:
        try:
            parse(number)
        except ValueError:
            continue
        return True
    return False


def _str(dumper: _Base, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else ("'" if reads_as_non_string(value) else None)
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
