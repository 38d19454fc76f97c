"""Load manifests from YAML with file/line-accurate errors, all problems at once.

YAML is composed into nodes (so every key keeps its line) and turned into Python values with
YAML 1.2 core-schema scalars: ``17:00`` stays a string (YAML 1.1 would read the integer
1020), ``on``/``yes``/``no`` stay strings, and a key written twice is an error rather than the
last one silently winning. Tags are refused, and so is a document whose aliases would repeat
more than :data:`MAX_ALIAS_NODES` nodes (counted before any value is built).

That PyYAML path is the reference. Most files are read by a fast path
(:mod:`components.manifest.fastyaml`) that returns the same values or declines; any file in which
a problem is found is read again by the reference, so every error is the reference's. Large
inputs are parsed in worker processes while this one validates the models (:func:`parse_workers`).
"""

from __future__ import annotations

import difflib
import gc
import marshal
import multiprocessing
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from components import API_VERSION
from components.errors import ManifestError, Problem
from components.gcpause import gc_paused
from components.manifest import fastyaml
from components.manifest.models import PATTERN_HINTS, AgentManifest, ServiceManifest

# The base loaders resolve no implicit tags (every plain scalar arrives as a string node):
# scalars are resolved below by YAML 1.2 core rules, so PyYAML's 1.1 resolver would be wasted
# work. libyaml's composer is much faster; the pure-Python one gives the same nodes.
try:
    from yaml import CBaseLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import BaseLoader as _Loader  # type: ignore[assignment]

YAML_SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 16 * 2**20
"""Largest manifest file read (a fleet of 100 agents per file is ~90 KiB; 10,000 grants ~1.5 MiB)."""
MAX_ALIAS_NODES = 10_000
"""Nodes that aliases may repeat in one document: enough to share a few blocks, far below what a
"billion laughs" document (anchors of aliases of anchors) would expand to."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists in one document (a manifest needs about 10)."""
KINDS: dict[str, type[BaseModel]] = {"Agent": AgentManifest, "Service": ServiceManifest}

_NULL = re.compile(r"^(~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Sourced:
    """A validated manifest and where it came from."""

    file: str
    line: int
    lines: Mapping[Loc, int] = field(repr=False, compare=False)

    def line_of(self, loc: Sequence[str | int]) -> int:
        """Best known line for a field path (the longest recorded prefix)."""
        key = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.line


@dataclass(frozen=True)
class SourcedAgent(Sourced):
    manifest: AgentManifest = field(kw_only=True)

    @property
    def name(self) -> str:
        return self.manifest.metadata.name


@dataclass(frozen=True)
class SourcedService(Sourced):
    manifest: ServiceManifest = field(kw_only=True)

    @property
    def name(self) -> str:
        return self.manifest.metadata.name


@dataclass(frozen=True)
class ManifestSet:
    """Every manifest found, in a stable order (by file, then position in file)."""

    agents: tuple[SourcedAgent, ...]
    services: tuple[SourcedService, ...]

    def agent(self, name: str) -> SourcedAgent | None:
        return next((a for a in self.agents if a.name == name), None)

    def service(self, name: str) -> SourcedService | None:
        return next((s for s in self.services if s.name == name), None)


class _YamlProblem(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _scalar(node: yaml.ScalarNode) -> Any:
    value: str = node.value
    if node.style:  # quoted or block scalar: always a string (plain style is None or "")
        return value
    if node.tag not in ("tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                        "tag:yaml.org,2002:float", "tag:yaml.org,2002:str", "tag:yaml.org,2002:timestamp"):
        raise _YamlProblem(node.start_mark.line + 1, f"unsupported YAML tag {node.tag}")
    if _NULL.match(value):
        return None
    if _BOOL.match(value):
        return value.lower() == "true"
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value) and any(c.isdigit() for c in value):
        return float(value)
    return value


_SCALAR, _SEQUENCE, _MAPPING = yaml.ScalarNode, yaml.SequenceNode, yaml.MappingNode


def _to_python(node: yaml.Node, depth: int = 1) -> Any:
    """The node's value by YAML 1.2 core rules; duplicate and merge keys are errors."""
    if type(node) is _SCALAR:
        return _scalar(node)
    if depth > MAX_DEPTH:
        raise _YamlProblem(node.start_mark.line + 1, f"the document nests more than {MAX_DEPTH} levels deep")
    if type(node) is _SEQUENCE:
        if node.tag != "tag:yaml.org,2002:seq":
            raise _YamlProblem(node.start_mark.line + 1, f"unsupported YAML tag {node.tag}")
        return [_to_python(item, depth + 1) for item in node.value]
    if type(node) is _MAPPING:
        if node.tag != "tag:yaml.org,2002:map":
            raise _YamlProblem(node.start_mark.line + 1, f"unsupported YAML tag {node.tag}")
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if type(key_node) is not _SCALAR:
                raise _YamlProblem(key_node.start_mark.line + 1, "mapping keys must be plain strings")
            key = key_node.value
            if (key == "<<" and not key_node.style) or key_node.tag == "tag:yaml.org,2002:merge":
                raise _YamlProblem(key_node.start_mark.line + 1,
                                   "YAML merge keys (<<) are not supported; write the fields out")
            if key in out:
                raise _YamlProblem(
                    key_node.start_mark.line + 1,
                    f"key {key!r} appears twice in the same mapping; keep one",
                )
            out[key] = _to_python(value_node, depth + 1)
        return out
    raise _YamlProblem(node.start_mark.line + 1, "unsupported YAML node")  # pragma: no cover


def _children(node: yaml.Node) -> list[yaml.Node]:
    if type(node) is _SEQUENCE:
        return list(node.value)
    if type(node) is _MAPPING:
        return [n for pair in node.value for n in pair]
    return []


def _check_aliases(root: yaml.Node) -> _YamlProblem | None:
    """Refuse a document whose aliases would repeat more than :data:`MAX_ALIAS_NODES` nodes, that
    nests deeper than :data:`MAX_DEPTH` through them, or whose alias refers to the collection it
    is inside.

    The composer shares one node per anchor, so the composed graph is as small as the text; the
    size after expanding every alias is counted on that graph (each shared node once, iteratively)
    before any Python value is built. (Without aliases the graph is a tree as large as the text:
    :func:`_to_python` bounds its depth as it goes.)
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_.discard(key)
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = (type(node) is not _SCALAR) + max((depth[id(c)] for c in children), default=0)
            continue
        if key in size:
            continue
        if key in open_:
            return _YamlProblem(node.start_mark.line + 1,
                                "an alias refers to the collection it is inside (a recursive document)")
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    line = root.start_mark.line + 1
    repeated = size[id(root)] - len(size)
    if repeated > MAX_ALIAS_NODES:
        return _YamlProblem(line, f"aliases would repeat {repeated:,} nodes of this document (at most "
                                  f"{MAX_ALIAS_NODES:,}): refused before building it; write the values out")
    if depth[id(root)] > MAX_DEPTH:
        return _YamlProblem(line, f"the document nests more than {MAX_DEPTH} levels deep")
    return None


def _record_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    """Line of every key and list item below ``node`` (1-based), by field path."""
    lines.setdefault(loc, node.start_mark.line + 1)
    if type(node) is _SEQUENCE:
        for i, item in enumerate(node.value):
            _record_lines(item, (*loc, i), lines)
    elif type(node) is _MAPPING:
        for key_node, value_node in node.value:
            lines[(*loc, key_node.value)] = key_node.start_mark.line + 1
            _record_lines(value_node, (*loc, key_node.value), lines)


def _is_empty(node: yaml.Node | None) -> bool:
    """An empty document (nothing, or a plain null scalar, between two '---')."""
    return node is None or (type(node) is _SCALAR and not node.style and bool(_NULL.match(node.value)))


def _compose(text: str, file: str) -> list[yaml.Node]:
    try:
        return [n for n in yaml.compose_all(text, Loader=_Loader) if not _is_empty(n)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        reason = exc.problem or str(exc)
        raise ManifestError([Problem(file, line, "", f"invalid YAML: {reason}")]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Problem(file, None, "", f"invalid YAML: {exc}")]) from None


class LazyLines(Mapping[Loc, int]):
    """Field path -> line of one document, computed on first use (only errors need lines).

    Holds the file's text, not its nodes, so a large fleet does not keep node trees alive.
    """

    def __init__(self, text: str, file: str, index: int) -> None:
        self._text, self._file, self._index = text, file, index
        self._lines: dict[Loc, int] | None = None

    def _map(self) -> dict[Loc, int]:
        if self._lines is None:
            self._lines = {}
            _record_lines(_compose(self._text, self._file)[self._index], (), self._lines)
        return self._lines

    def __getitem__(self, key: Loc) -> int:
        return self._map()[key]

    def __iter__(self) -> Iterator[Loc]:
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())


def parse_yaml_documents(text: str, file: str) -> Iterator[tuple[Any, int, Mapping[Loc, int]]]:
    """Yield (value, first line, line map) per non-empty document; raise ManifestError on bad YAML."""
    aliases = "*" in text  # an alias is written '*name': without one, no node is shared
    for index, node in enumerate(_compose(text, file)):
        refused = _check_aliases(node) if aliases else None
        if refused is not None:
            raise ManifestError([Problem(file, refused.line, "", refused.message)])
        try:
            value = _to_python(node)
        except _YamlProblem as exc:
            raise ManifestError([Problem(file, exc.line, "", exc.message)]) from None
        yield value, node.start_mark.line + 1, LazyLines(text, file, index)


def format_loc(loc: Sequence[str | int]) -> str:
    """('spec', 'grants', 0, 'http') -> 'spec.grants[0].http'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _walk(model: type[BaseModel], loc: Sequence[str | int]) -> tuple[Any, Any]:
    """(model class at ``loc`` or None, FieldInfo of the last named part or None)."""
    current: Any = model
    info: Any = None
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None, info
        info = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        if info is None:
            return None, None
        current = _model_in(info.annotation)
    return current, info


def _allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The aliases a model accepts at ``loc`` (for 'did you mean' hints)."""
    current, _ = _walk(model, loc)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _rule(model: type[BaseModel], loc: Sequence[str | int]) -> str | None:
    """The documented rule of the field at ``loc`` (its own or its type's description)."""
    _, info = _walk(model, loc)
    if info is None:
        return None
    if isinstance(loc[-1], int):  # a list item: the item type's description, if any
        for meta in getattr(info.annotation, "__args__", ()) or ():
            for extra in getattr(meta, "__metadata__", ()) or ():
                if getattr(extra, "description", None):
                    return str(extra.description)
    return str(info.description) if info.description else None


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _humanize(err: Any, model: type[BaseModel]) -> str:
    kind = err["type"]
    loc = err["loc"]
    if kind == "extra_forbidden":
        name = str(loc[-1])
        allowed = _allowed_keys(model, loc[:-1])
        hint = difflib.get_close_matches(name, allowed, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"unknown field {name!r}{suggestion} (allowed: {', '.join(sorted(allowed))})"
    if kind == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if kind == "string_pattern_mismatch":
        rule = PATTERN_HINTS.get(str((err.get("ctx") or {}).get("pattern"))) or _rule(model, loc)
        msg = f"{err['input']!r} is not valid here: {rule}" if rule else f"{err['input']!r} is not valid here ({msg})"
    elif kind == "literal_error":
        msg = f"{err['input']!r} is not allowed: {msg[0].lower()}{msg[1:]}"
    return msg


def validation_problems(
    exc: ValidationError, model: type[BaseModel], file: str, first_line: int, lines: Mapping[Loc, int],
    prefix: Loc = (),
) -> list[Problem]:
    """Turn a pydantic ValidationError into one Problem per error, with lines."""
    src = Sourced(file, first_line, lines)
    return [
        Problem(file, src.line_of((*prefix, *e["loc"])), format_loc((*prefix, *e["loc"])), _humanize(e, model))
        for e in exc.errors(include_url=False)
    ]


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """YAML files named directly or found (recursively) under directories, sorted."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file()))
        else:
            found.append(path)
    return found


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


POOL_MIN_BYTES = 1 * 2**20
"""Below this much YAML the files are parsed in this process (starting workers costs more)."""
FREEZE_AT = 1000
"""Manifests from which a load freezes what it allocated (see :func:`load_manifests`)."""
WORKERS_ENV = "PASSPORT_PARSE_WORKERS"
"""Environment variable: how many worker processes parse YAML (0: none; default: one per core)."""

Parsed = tuple[str, Any]
"""("fast" | "reference", [(value, first line)]) or ("problems", [(file, line, field, message)])."""


def _parse_reference(text: str, file: str) -> Parsed:
    try:
        return "reference", [(value, line) for value, line, _ in parse_yaml_documents(text, file)]
    except ManifestError as exc:
        return "problems", [(p.file, p.line, p.field, p.message) for p in exc.problems]


def _parse_text(text: str, file: str) -> Parsed:
    """The fast path's values where it can vouch for them, the reference's otherwise."""
    docs = fastyaml.parse(text)
    return ("fast", docs) if docs is not None else _parse_reference(text, file)


def _parse_chunk(chunk: list[tuple[str, str]]) -> bytes:
    """In a worker: parse (file, text) pairs; marshal is the cheapest way back for plain data."""
    with gc_paused():
        return marshal.dumps([_parse_text(text, file) for file, text in chunk])


def parse_workers(total_bytes: int, wanted: int | None = None) -> int:
    """Worker processes for parsing this much YAML: ``wanted`` (else the environment variable
    :data:`WORKERS_ENV`, else one per usable core, and none below :data:`POOL_MIN_BYTES`); but 0
    (parse here) while another thread runs, as forking it is unsafe, or where fork does not exist."""
    configured = os.environ.get(WORKERS_ENV, "").strip()
    if wanted is None and configured.isdigit():
        wanted = int(configured)
    if wanted is None:
        if total_bytes < POOL_MIN_BYTES:
            return 0
        # one per core: this process validates meanwhile, but on a shared machine (CI, other
        # builds) fewer workers get a smaller share of the cores (measured: 1 worker ~25% slower)
        wanted = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if wanted < 1 or threading.active_count() > 1 or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    return min(wanted, 8)


def _parse_all(items: list[tuple[str, str]], workers: int) -> Iterator[Parsed]:
    """Parsed results in the order of ``items``; with workers, the first chunks arrive while later
    ones are still being parsed, so validation here overlaps parsing there."""
    if workers < 1:
        for file, text in items:
            yield _parse_text(text, file)
        return
    # small chunks: validation here starts after the first one and ends soon after the last
    target = max(256 * 2**10, sum(len(t) for _, t in items) // (workers * 32))
    chunks: list[list[tuple[str, str]]] = [[]]
    size = 0
    for item in items:
        if size >= target:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += len(item[1])
    done = 0
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            for blob in pool.map(_parse_chunk, chunks):
                for parsed in marshal.loads(blob):  # noqa: S302 - written by our own worker just now
                    yield parsed
                    done += 1
    except BrokenProcessPool:
        # a worker died (killed, or a crash in a parser's C code): read the rest here with the
        # reference, which is the path that crash did not come from
        for file, text in items[done:]:
            yield _parse_reference(text, file)


def load_manifests(paths: Iterable[str | Path], workers: int | None = None) -> ManifestSet:
    """Load and validate every manifest; raise ManifestError listing every problem found.

    ``workers``: processes that parse the YAML (default: see :func:`parse_workers`; 0 or 1: none).
    """
    with gc_paused():
        loaded = _load_manifests(paths, workers)
        if len(loaded.agents) + len(loaded.services) >= FREEZE_AT:
            # Everything allocated while the collector was paused is in its youngest generation,
            # and the first collection after it resumes would traverse all of it (1.7 s of CPU
            # for 50,000 manifests) to free nothing: the models live as long as the program.
            # Freezing moves what is alive now out of the collector's sight instead.
            gc.freeze()
        return loaded


def _read(path: Path, file: str) -> str | Problem:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return Problem(file, None, "", f"file is {size / 2**20:.1f} MiB; a manifest file may "
                                           f"have at most {MAX_FILE_BYTES // 2**20} MiB (split it)")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Problem(file, None, "", f"cannot read file: {exc}")


def _load_manifests(paths: Iterable[str | Path], workers: int | None) -> ManifestSet:
    problems: list[Problem] = []
    agents: list[SourcedAgent] = []
    services: list[SourcedService] = []
    files = discover(paths)
    if not files:
        raise ManifestError([Problem(", ".join(map(str, paths)) or ".", None, "", "no manifest files (*.yaml) found")])
    items: list[tuple[str, str]] = []
    for path in files:
        file = _display(path)
        text = _read(path, file)
        if isinstance(text, Problem):
            problems.append(text)
        else:
            items.append((file, text))
    workers = parse_workers(sum(len(t) for _, t in items), workers)
    for (file, text), parsed in zip(items, _parse_all(items, workers), strict=True):
        found = _load_file(parsed, file, text)
        if found[2] and parsed[0] == "fast":
            # the fast path never has the last word on a problem: the reference reads the file again
            found = _load_file(_parse_reference(text, file), file, text)
        agents.extend(found[0])
        services.extend(found[1])
        problems.extend(found[2])
    problems.extend(_duplicates(agents, "Agent"))
    problems.extend(_duplicates(services, "Service"))
    if problems:
        raise ManifestError(problems)
    return ManifestSet(tuple(agents), tuple(services))


def _load_file(parsed: Parsed, file: str, text: str,
               ) -> tuple[list[SourcedAgent], list[SourcedService], list[Problem]]:
    agents: list[SourcedAgent] = []
    services: list[SourcedService] = []
    how, docs = parsed
    if how == "problems":
        return agents, services, [Problem(*p) for p in docs]
    problems: list[Problem] = []
    for index, (value, first_line) in enumerate(docs):
        problems.extend(_load_document(value, file, first_line, LazyLines(text, file, index), agents, services))
    return agents, services, problems


def _load_document(
    value: Any, file: str, first_line: int, lines: Mapping[Loc, int],
    agents: list[SourcedAgent], services: list[SourcedService],
) -> list[Problem]:
    if not isinstance(value, dict):
        return [Problem(file, first_line, "", "a manifest must be a mapping with apiVersion, kind, metadata, spec")]
    kind = value.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return [Problem(file, lines.get(("kind",), first_line), "kind",
                        f"{kind!r} is not a manifest kind; use one of {', '.join(sorted(KINDS))}")]
    if value.get("apiVersion") != API_VERSION:
        return [Problem(file, lines.get(("apiVersion",), first_line), "apiVersion",
                        f"{value.get('apiVersion')!r} is not supported; use {API_VERSION}")]
    try:
        manifest = model.model_validate(value)
    except ValidationError as exc:
        return validation_problems(exc, model, file, first_line, lines)
    if isinstance(manifest, AgentManifest):
        agents.append(SourcedAgent(file, first_line, lines, manifest=manifest))
    elif isinstance(manifest, ServiceManifest):
        services.append(SourcedService(file, first_line, lines, manifest=manifest))
    return []


def _duplicates(items: Sequence[SourcedAgent] | Sequence[SourcedService], kind: str) -> list[Problem]:
    seen: dict[str, Sourced] = {}
    problems = []
    for item in items:
        first = seen.setdefault(item.name, item)
        if first is not item:
            problems.append(Problem(
                item.file, item.line_of(("metadata", "name")), "metadata.name",
                f"{kind} {item.name!r} is already defined in {first.file}:"
                f"{first.line_of(('metadata', 'name'))}; names must be unique",
            ))
    return problems
