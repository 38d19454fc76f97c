"""Durations with units (``90s``, ``15m``, ``24h``, ``365d``) as used in manifests and stack config.

A duration is always written with a unit: a bare integer of unknown unit is refused.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+)([smhd])")
_WHOLE = re.compile(r"^(?:\d+[smhd])+$")


def parse_duration(text: str) -> int:
    """Return the number of seconds in ``text`` (``"1h30m"`` -> 5400).

    Raises ValueError with a message a user can act on.
    """
    value = text.strip()
    if not _WHOLE.match(value):
        raise ValueError(
            f"{text!r} is not a duration: write a number followed by a unit "
            "s, m, h or d (for example 15m, 24h, 365d)"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(value))
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return seconds


def format_duration(seconds: int) -> str:
    """Canonical short form: the largest unit that divides evenly (``900`` -> ``15m``)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _check(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"{value!r} is not a duration: durations are strings with a unit, "
            "such as \"15m\" or \"24h\" (a bare number has no unit)"
        )
    parse_duration(value)
    return value.strip()


Duration = Annotated[
    str,
    BeforeValidator(_check),
    PlainSerializer(lambda v: v, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(\d+[smhd])+$",
            "description": "A duration with units: s, m, h, d (e.g. 15m, 24h, 365d).",
        }
    ),
]
"""A validated duration string; use :func:`seconds` to read its length."""


def seconds(value: str) -> int:
    """Seconds in an already validated :data:`Duration`."""
    return parse_duration(value)
