"""A syntax check of the Mermaid flowchart subset ``components.graph.to_mermaid`` emits.

Mermaid's own parser is JavaScript; this is a strict recogniser of the few statements we write,
following Mermaid's flowchart grammar for them, so a malformed picture fails a test instead of
showing up as "Syntax error in graph" in a pull request:

    flowchart LR
    %% comment
    subgraph ID["label"]   ...   end
    ID<shape>"label"<shape>            shapes: (["..."]) [["..."]] {{"..."}} [("...")] [/"..."/] >"..."] ["..."]
    ID --> ID | ID -.-> ID | ID -->|"label"| ID | ID -.->|"label"| ID
    linkStyle N style
    classDef NAME style
    class ID[,ID] NAME

Beyond the grammar it checks what makes Mermaid draw something else than meant: ids that are
keywords, a node declared twice or used before it is declared, quotes or line breaks inside a
label, ``linkStyle`` of an edge that does not exist, ``class`` of an unknown node or class, and
more edges than Mermaid's default limit (500).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KEYWORDS = {"end", "subgraph", "graph", "flowchart", "class", "classDef", "linkStyle", "style", "click", "call",
            "href", "direction", "default", "interpolate", "accTitle", "accDescr"}
ID = r"[A-Za-z][A-Za-z0-9_]*"
# a label: a double-quoted string without quotes, raw line breaks or raw markup
LABEL = r'"(?P<label>[^"\n<>]*(?:<br/>[^"\n<>]*)*)"'
SHAPES = [("([", "])"), ("[[", "]]"), ("{{", "}}"), ("[(", ")]"), ("[/", "/]"), (">", "]"), ("[", "]")]
NODE_RE = re.compile(rf"^(?P<id>{ID})(?P<open>{'|'.join(re.escape(o) for o, _ in SHAPES)}){LABEL}"
                     rf"(?P<close>{'|'.join(re.escape(c) for _, c in SHAPES)})$")
EDGE_RE = re.compile(rf"^(?P<src>{ID}) (?P<arrow>-->|-\.->)(?:\|{LABEL}\|)? (?P<dst>{ID})$")
SUBGRAPH_RE = re.compile(rf"^subgraph (?P<id>{ID})\[{LABEL}\]$")
STYLE = r"(?:[a-z-]+:[^,;\s]+(?: [^,;\s]+)*)(?:,[a-z-]+:[^,;\s]+(?: [^,;\s]+)*)*"
LINKSTYLE_RE = re.compile(rf"^linkStyle (?P<n>[0-9]+(?:,[0-9]+)*) {STYLE}$")
CLASSDEF_RE = re.compile(rf"^classDef (?P<name>{ID}) {STYLE}$")
CLASS_RE = re.compile(rf"^class (?P<ids>{ID}(?:,{ID})*) (?P<name>{ID})$")
ENTITY_RE = re.compile(r"#(?:[0-9]+|quot|amp|lt|gt);")
MAX_EDGES = 500
"""Mermaid's default maxEdges: a chart with more is refused ("Edge limit exceeded")."""


@dataclass
class Flowchart:
    """What a checked flowchart declares."""

    nodes: dict[str, str] = field(default_factory=dict)
    """id -> label text (entities and <br/> as written)."""
    edges: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(source, arrow, label, target) in order (linkStyle numbers them from 0)."""
    subgraphs: dict[str, str] = field(default_factory=dict)
    link_styles: dict[int, str] = field(default_factory=dict)
    classes: dict[str, set[str]] = field(default_factory=dict)


class MermaidError(ValueError):
    pass


def _label_ok(label: str, line_no: int) -> None:
    # every '#' starts an entity: a bare one would be read as the start of one
    for m in re.finditer("#", label):
        if not ENTITY_RE.match(label, m.start()):
            raise MermaidError(f"line {line_no}: bare '#' in label {label!r} (write #35;)")


def check_flowchart(text: str) -> Flowchart:
    """Parse ``text``; raise :class:`MermaidError` naming the first bad line."""
    chart = Flowchart()
    lines = text.splitlines()
    if not lines or lines[0] not in ("flowchart LR", "flowchart TD", "flowchart TB"):
        raise MermaidError("line 1: expected 'flowchart LR'")
    depth = 0
    class_defs: set[str] = set()
    pending_classes: list[tuple[int, list[str], str]] = []
    for no, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line or line.startswith("%%"):
            continue
        if line == "end":
            depth -= 1
            if depth < 0:
                raise MermaidError(f"line {no}: 'end' without 'subgraph'")
            continue
        if m := SUBGRAPH_RE.match(line):
            sid = m["id"]
            if sid in KEYWORDS or sid in chart.subgraphs or sid in chart.nodes:
                raise MermaidError(f"line {no}: subgraph id {sid!r} is a keyword or already used")
            _label_ok(m["label"], no)
            chart.subgraphs[sid] = m["label"]
            depth += 1
            continue
        if m := EDGE_RE.match(line):
            for end in (m["src"], m["dst"]):
                if end not in chart.nodes:
                    raise MermaidError(f"line {no}: edge uses {end!r} before declaring it")
            _label_ok(m["label"] or "", no)
            chart.edges.append((m["src"], m["arrow"], m["label"] or "", m["dst"]))
            continue
        if m := LINKSTYLE_RE.match(line):
            for n in map(int, m["n"].split(",")):
                if n >= len(chart.edges):
                    raise MermaidError(f"line {no}: linkStyle {n} but only {len(chart.edges)} edges")
                chart.link_styles[n] = line.split(" ", 2)[2]
            continue
        if m := CLASSDEF_RE.match(line):
            class_defs.add(m["name"])
            continue
        if m := CLASS_RE.match(line):
            pending_classes.append((no, m["ids"].split(","), m["name"]))
            continue
        if m := NODE_RE.match(line):
            nid = m["id"]
            pair = (m["open"], m["close"])
            if pair not in SHAPES:
                raise MermaidError(f"line {no}: shape {m['open']}...{m['close']} does not match")
            if nid in KEYWORDS or nid in chart.nodes or nid in chart.subgraphs:
                raise MermaidError(f"line {no}: node id {nid!r} is a keyword or already declared")
            _label_ok(m["label"], no)
            chart.nodes[nid] = m["label"]
            continue
        raise MermaidError(f"line {no}: not a statement of the emitted subset: {line!r}")
    if depth != 0:
        raise MermaidError(f"{depth} subgraph(s) without 'end'")
    if len(chart.edges) > MAX_EDGES:
        raise MermaidError(f"{len(chart.edges)} edges: Mermaid draws at most {MAX_EDGES} (maxEdges)")
    for no, ids, name in pending_classes:
        if name not in class_defs:
            raise MermaidError(f"line {no}: class {name!r} has no classDef")
        for nid in ids:
            if nid not in chart.nodes:
                raise MermaidError(f"line {no}: class of unknown node {nid!r}")
            chart.classes.setdefault(name, set()).add(nid)
    return chart
