"""The loader's fast path: rapidyaml parses, its JSON emitter hands the values to ``json.loads``.

PyYAML (libyaml composing Python node objects, then a walk that resolves YAML 1.2 scalars) is
the reference: it gives every error its line, refuses tags and bounds aliases. It costs about
190 µs per manifest; this path about 50 (rapidyaml itself ~10, the checks below the rest). It
answers only when its result is provably what the reference would return, and otherwise says
"don't know" (``None``), so the reference decides every error and every unusual file. What makes the two agree:

* Text that could mean anything beyond plain data goes to the reference unread: tags (``!``),
  anchors and aliases (``&``, ``*``), merge keys (``<<``), directives (``%``), complex keys
  (``?``), tabs, carriage returns, control characters, byte-order marks and the line breaks
  YAML 1.1 knows and 1.2 does not (NEL, U+2028, U+2029); and spellings rapidyaml accepts but
  libyaml refuses: a colon right before ``,?[]{}`` (``[a, b:]``), text after a closed flow
  collection on its line (``{a: 1} - b:``), a block scalar's ``|``/``>`` with anything but its
  indicators and a comment after it (``key: | text``, ``>1h``), and a bare document after ``...``.
* rapidyaml emits a plain scalar as a bare JSON token only when it is a JSON number or
  ``true``/``false``/``null`` (parsed here exactly as the reference resolves them), and every
  other scalar as a JSON string of its text. The reference turns some of those plain texts into
  non-strings too (``~``, ``True``, ``007``, ``+1``...): any JSON string that looks like one is
  ambiguous (it may have been quoted), and the file goes to the reference. ``NaN``/``Infinity``
  tokens and anything ``json.loads`` refuses go there too.
* rapidyaml accepts a few things libyaml refuses (a plain scalar starting with ``]``, ``}``,
  ``@``, a backquote or ``:``; an empty key in a flow collection): a JSON string that starts
  with a YAML indicator, or an empty key, sends the file to the reference.
* A key written twice is detected while the JSON is read (the file goes to the reference,
  which reports it with its line).
* Each document's first line is found by scanning for ``---``/``...`` markers; if the count of
  documents differs from rapidyaml's, the reference decides.

``tests/unit/test_fastyaml.py`` compares both paths on every example, fixture and a mutated corpus.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from typing import Any

try:
    import ryml
except ImportError:  # pragma: no cover - rapidyaml is a dependency; without it the reference loads everything
    ryml = None

_SUSPECT_CHARS = re.compile(r"[!&*%\t\r\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
_COMPLEX_KEY = re.compile(r"(?:^|[\s\[{,])\?(?:\s|$)", re.MULTILINE)
_COLON_BEFORE_FLOW = re.compile(r":[\]},?\[{]")
_TEXT_AFTER_FLOW = re.compile(r"[\]}][ \t]+[^ \t\n#,\]}]")
_BLOCK_HEADER_TEXT = re.compile(r"(?:^|[ \t])[|>](?![-+0-9]*[ \t]*(?:#[^\n]*)?$)", re.MULTILINE)


def suspect(text: str) -> bool:
    """Text the fast path leaves to the reference (see the module docstring); each check is a
    plain substring test or a regex that starts with a literal, so this costs little."""
    return bool(
        _SUSPECT_CHARS.search(text)
        or "<<" in text
        or ("?" in text and _COMPLEX_KEY.search(text))
        or _COLON_BEFORE_FLOW.search(text)
        or (("] " in text or "} " in text or "]\t" in text or "}\t" in text) and _TEXT_AFTER_FLOW.search(text))
        or (("|" in text or ">" in text) and _BLOCK_HEADER_TEXT.search(text))
    )


_KEYWORD_STRING = re.compile(r'"(?:~|null|Null|NULL|true|True|TRUE|false|False|FALSE)"')
_NUMBER_STRING = re.compile(r'"[-+]?(?:[0-9]+|(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?)"')
_ODD_OR_NUMBER_START = re.compile(r"""["][\[{@`?#|>%!&*'\\~0-9.+-]""")
_ODD_STRUCTURAL_START = re.compile(r'"(?<=[\[{, \n]")[\]},:"]')


def unsure_strings(emitted: str) -> bool:
    """Whether rapidyaml's JSON has a string (key or value) the fast path cannot vouch for:

    * one the reference might have read as null, a bool or a number had it been plain (``"~"``,
      ``"True"``, ``"007"``: rapidyaml writes those plain scalars as strings, so quoting is lost);
    * one that starts with a YAML indicator, or an empty one: valid YAML has them only quoted,
      and rapidyaml also accepts them plain where libyaml refuses (``]x``, ``@x``, ``[: x]``).

    Every pattern starts with a literal quote (the regex engine skips to quotes quickly). In
    rapidyaml's JSON a closing quote is followed only by ``,:]}``, a blank or a line break, and an
    opening quote follows ``[{,``, a blank or a line break: so a quote followed by ``[{@`...~``
    or a digit opens a string, and a quote after ``[{,``/blank followed by ``]},:"`` opens one
    too (a closing quote there only makes this more careful)."""
    if _KEYWORD_STRING.search(emitted) or _ODD_STRUCTURAL_START.search(emitted):
        return True
    for found in _ODD_OR_NUMBER_START.finditer(emitted):
        if emitted[found.end() - 1] not in "~0123456789.+-" or _NUMBER_STRING.match(emitted, found.start()):
            return True
    return False


_MARKER = re.compile(r"^(---|\.\.\.)(?=[ \t]|$)([^\n]*)$", re.MULTILINE)
_CONTENT = re.compile(r"^[ \t\ufeff]*[^ \t\n#\ufeff]", re.MULTILINE)


class _Unsure(Exception):
    """The fast path cannot vouch for this text."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Unsure
    return out


def _no_constant(name: str) -> Any:
    raise _Unsure  # NaN, Infinity, -Infinity: the reference reads them as strings


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """rapidyaml prints every parse error to file descriptor 2 before raising it; the reference
    reports the error properly, so that print is dropped."""
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover - no stderr at all
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def document_starts(text: str) -> list[int | None]:
    """Per document of the stream (as YAML counts them), the 1-based line its content starts on,
    or None for an empty one."""
    starts: list[int | None] = []
    line, at = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, at
        line += text.count("\n", at, pos)
        at = pos
        return line

    def region(begin: int, end: int, state: str) -> None:
        found = _CONTENT.search(text, begin, end)
        if state == "open":  # after a bare '---': this is its body, empty or not
            starts.append(line_at(found.start()) if found else None)
        elif state == "none" and found:  # a document without a '---'
            starts.append(line_at(found.start()))
        elif state == "ended" and found:  # YAML 1.2 allows a bare document after '...'; libyaml does not
            raise _Unsure
        # "inline": the body of a document that started on its '---' line

    begin, state = 0, "none"
    for marker in _MARKER.finditer(text):
        region(begin, marker.start(), state)
        inline = marker.group(2).strip()
        if marker.group(1) == "...":
            state = "ended"
        elif inline and not inline.startswith("#"):
            starts.append(line_at(marker.start()))
            state = "inline"
        else:
            state = "open"
        begin = marker.end()
    region(begin, len(text), state)
    return starts


def parse(text: str) -> list[tuple[Any, int]] | None:
    """(value, first line) of every non-empty document, exactly as the reference loader returns
    them, or None when this path cannot vouch for the result."""
    if ryml is None or suspect(text):
        return None
    try:
        with _quiet_stderr():
            tree = ryml.parse_in_arena(text.encode("utf-8"))
            root = tree.root_id()
            stream = tree.is_stream(root)
            emitted = ryml.emit_json_malloc(tree, root)
        if emitted is None or unsure_strings(emitted) or emitted.lstrip().startswith('"'):
            return None  # (a document that is one string is no manifest: the reference reports it)
        value = json.loads(emitted, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (_Unsure, ValueError, RuntimeError):
        return None
    except Exception as exc:  # rapidyaml's own exception types
        if ryml is not None and isinstance(exc, ryml.ExceptionBasic):
            return None
        raise
    documents = value if stream else [value]
    try:
        starts = document_starts(text)
    except _Unsure:
        return None
    if len(starts) != len(documents):
        return None
    out: list[tuple[Any, int]] = []
    for doc, start in zip(documents, starts, strict=True):
        if doc is None:
            continue  # an empty document (or a plain null), skipped as the reference skips it
        if start is None:
            return None
        out.append((doc, start))
    return out
