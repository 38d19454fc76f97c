"""``passport graph``: the access graph of a stack — who can reach what — for people and tools.

One model, :class:`AccessGraph`, built from the validated :class:`~components.platform_model.Platform`:

* **nodes**: agents (grouped by team or namespace; suspended ones marked), the services they
  call, the Envoy + OPA gateway in front of each service that has one, databases (per cluster),
  Vault paths and AWS IAM roles;
* **edges**: exactly one per grant, from the agent to what it reaches (to the gateway, for a
  service behind one), plus one ``fronts`` edge from each gateway to its service. Labels are
  short (methods and paths, privileges, capabilities, actions, lease and session lengths);
  long parts and every header or time-window condition become keys (``P1``, ``H1``, ``W1``,
  ...) that the legend spells out.

Above ``max_agents`` agents the picture aggregates them by team or namespace (and says so in
its title and legend); ``--format json`` keeps every edge unless asked to aggregate. Renderers:
Graphviz DOT (svg and png through ``dot``), Mermaid (Markdown) and JSON. Pure, like the
renderers: no Pulumi, and ``dot`` runs only in :func:`run_dot`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from components.manifest.loader import SourcedService
from components.manifest.models import Grant
from components.platform_model import Platform, ResolvedAgent, grant_summary

NodeKind = Literal["agent", "agents", "service", "gateway", "database", "vault", "aws"]
EdgeKind = Literal["http", "database", "vault", "aws", "fronts"]
ChangeKind = Literal["added", "removed", "widened", "narrowed"]
GroupBy = Literal["team", "namespace"]
Aggregate = Literal["auto", "none", "team", "namespace"]

LABEL_WIDTH = 44
"""Longer label parts (path lists, privileges, actions) become legend keys."""
MAX_AGENTS = 40
"""Above this many agents a picture aggregates them (``--max-agents``)."""
MAX_LABELLED_EDGES = 60
"""An aggregated picture with more arrows than this draws them unlabelled, thickness by agents."""
FONT = "Helvetica,Arial,sans-serif"

GRANT_KINDS: tuple[EdgeKind, ...] = ("http", "database", "vault", "aws")


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Node:
    id: str
    kind: NodeKind
    label: str
    """Display text; lines separated by ``\\n``."""
    group: str
    """Id of the :class:`Group` (a box in the picture) the node is drawn in."""
    suspended: bool = False
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GrantRef:
    """One grant of the platform: the agent, its index in the manifest, its summary."""

    agent: str
    index: int
    summary: Mapping[str, Any]
    suspended: bool = False


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: EdgeKind
    label: str
    grants: tuple[GrantRef, ...] = ()
    """The grants this edge draws: one, or (aggregated) several; none for ``fronts``."""
    enforced_by: tuple[str, ...] = ()
    change: ChangeKind | None = None
    """Set only in ``passport diff``'s picture of the change."""

    @property
    def suspended(self) -> bool:
        """Every grant drawn here belongs to a suspended agent: nothing is deployed for it."""
        return bool(self.grants) and all(g.suspended for g in self.grants)


@dataclass(frozen=True)
class Group:
    id: str
    label: str


@dataclass(frozen=True)
class Aggregation:
    by: GroupBy
    agents: int
    groups: int
    threshold: int
    other: int = 0
    """Agents merged into the one ``other`` node (when even the groups were too many)."""

    def note(self) -> str:
        text = (f"{self.agents} agents aggregated by {self.by} into {self.groups} nodes "
                f"(more than {self.threshold} agents; --aggregate none draws each one)")
        if self.other:
            text += f"; the smallest {self.by}s, {self.other} agents, are merged into 'other'"
        return text


@dataclass
class AccessGraph:
    stack: str
    environment: str
    trust_domain: str
    group_by: GroupBy
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    groups: dict[str, Group] = field(default_factory=dict)
    legend: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    aggregation: Aggregation | None = None
    scope: str = ""
    """What the graph was narrowed to (``agent X``, ``service Y``), or empty for the stack."""
    edge_labels: bool = True
    """False when an aggregated picture has too many arrows to label (thickness tells instead)."""

    @property
    def title(self) -> str:
        agents = sum(n.attrs.get("agents", 1) for n in self.nodes.values() if n.kind in ("agent", "agents"))
        grants = sum(len(e.grants) for e in self.edges)
        scope = f", {self.scope}" if self.scope else ""
        return (f"Access graph of stack {self.stack} (environment {self.environment}{scope}): "
                f"{agents} agent{'s' if agents != 1 else ''}, {grants} grant{'s' if grants != 1 else ''}")

    def add_node(self, node: Node, group: Group) -> None:
        self.nodes.setdefault(node.id, node)
        self.groups.setdefault(group.id, group)


class Legend:
    """Keys for long label parts (``W1``: a time window, ``H1``: required headers, ``P1``: paths,
    ``D1``: database privileges, ``A1``: AWS actions, ``V1``: Vault capabilities); the same text
    always gets the same key."""

    TEXT = {"W": "time window", "H": "required headers", "P": "paths", "D": "privileges", "A": "AWS",
            "V": "capabilities"}

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self._count: Counter[str] = Counter()

    def key(self, prefix: str, text: str) -> str:
        found = self._keys.get((prefix, text))
        if found is None:
            self._count[prefix] += 1
            found = f"{prefix}{self._count[prefix]}"
            self._keys[(prefix, text)] = found
            self.entries[found] = text
        return found

    def short(self, prefix: str, text: str, width: int = LABEL_WIDTH) -> str:
        """``text`` itself when short enough, else its key."""
        return text if len(text) <= width else self.key(prefix, text)

    def sorted(self) -> dict[str, str]:
        def order(k: str) -> tuple[str, int]:
            return k[0], int(k[1:])

        return {k: self.entries[k] for k in sorted(self.entries, key=order)}


# --------------------------------------------------------------------------- where grants are enforced


@dataclass(frozen=True)
class Enforcer:
    system: str
    """Linkerd, Envoy (an egress proxy), OPA, Vault, PostgreSQL, MySQL or AWS IAM."""
    detail: str


ENGINES = {"postgres": "PostgreSQL", "mysql": "MySQL"}


def enforcement(platform: Platform, agent: ResolvedAgent, grant: Grant) -> list[Enforcer]:
    """Where the stack enforces one grant (empty: nothing the stack deploys enforces it)."""
    cfg = platform.config
    on = cfg.subsystems
    if grant.http is not None:
        h = grant.http
        svc = platform.service(h.service)
        out: list[Enforcer] = []
        gateway = svc is not None and svc.manifest.spec.gateway and on.authz
        outside = agent.identity.linkerd_identity is None
        if svc is not None and gateway and outside:
            # VMs and Windows hosts: their Envoy egress proxy presents the agent's SVID to the gateway.
            out.append(Enforcer("Envoy", f"the agent's egress proxy (127.0.0.1:{cfg.authz.egress_port} on its "
                                         f"host) presents its SVID; {platform.gateway(svc).name} requires an SVID "
                                         "of the trust domain (Linkerd admits the connection by network only)"))
        elif svc is not None and on.mesh:
            if gateway:
                out.append(Enforcer("Linkerd", f"{platform.gateway(svc).name} admits only its callers' mesh "
                                               "identities (mTLS)"))
            else:
                out.append(Enforcer("Linkerd", f"HTTPRoute of {h.service} admits these methods and paths "
                                               "for the agent's mesh identity"))
        if gateway and svc is not None:
            conditions = ["methods", "paths"]
            if h.headers:
                conditions.append("headers")
            if h.time_windows:
                conditions.append("time windows")
            out.append(Enforcer("OPA", f"at {platform.gateway(svc).name}: {', '.join(conditions)} of each "
                                       "request, by SPIFFE ID"))
        return out
    if grant.database is not None:
        if not on.vault:
            return []
        from components.render.vault import database_mount

        d = grant.database
        role = agent.identity.database_role(d)
        return [Enforcer("Vault", f"{database_mount(d.cluster)}/creds/{role}: a new user per lease"),
                Enforcer(ENGINES.get(d.engine, d.engine), "that user holds only these privileges")]
    if grant.vault is not None:
        if not on.vault:
            return []
        return [Enforcer("Vault", f"policy {agent.identity.vault_policy}")]
    assert grant.aws is not None
    if not on.aws:
        return []
    return [Enforcer("AWS IAM", f"role {agent.identity.aws_role_name(grant.aws.role)} trusts only this "
                                f"SPIFFE ID ({cfg.aws.federation})")]


def not_enforced_reason(platform: Platform, agent: ResolvedAgent, grant: Grant) -> str:
    """Why :func:`enforcement` is empty (or why nothing is deployed for the grant)."""
    if agent.suspended:
        return "nothing deployed: the agent is suspended"
    subsystem = {"http": "mesh", "database": "vault", "vault": "vault", "aws": "aws"}[grant.kind]
    return f"not deployed in this stack (subsystems.{subsystem}: false)"


# --------------------------------------------------------------------------- labels

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _days(days: str) -> str:
    """``mon,tue,wed,thu,fri`` -> ``mon-fri``; other runs of three or more days likewise."""
    listed = days.split(",")
    if not all(d in DAYS for d in listed):
        return days
    idx = sorted({DAYS.index(d) for d in listed})
    runs: list[list[int]] = []
    for i in idx:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(f"{DAYS[r[0]]}-{DAYS[r[-1]]}" if len(r) >= 3 else ",".join(DAYS[i] for i in r) for r in runs)


def window_text(window: str) -> str:
    """A summary's time window (``mon,tue,... 09:00-17:00 Europe/London``) with day ranges."""
    days, _, rest = window.partition(" ")
    return f"{_days(days)} {rest}"


def path_text(path: str) -> str:
    """A summary's path (``exact:/a``, ``prefix:/b``) as drawn: ``/a``, ``/b*``."""
    kind, _, value = path.partition(":")
    return value + ("*" if kind == "prefix" else "")


def _headers_text(headers: Mapping[str, str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(headers.items()))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def edge_label(kind: EdgeKind, summaries: Sequence[Mapping[str, Any]], legend: Legend, agents: int = 1) -> str:
    """The short label of an edge drawing ``summaries`` (one grant, or several aggregated)."""
    if kind == "fronts":
        return ""
    lines = [_plural(agents, "agent")] if agents > 1 else []
    if kind == "http":
        methods = sorted({m for s in summaries for m in s["methods"]}, key=lambda m: _METHOD_ORDER.get(m, 99))
        paths = sorted({path_text(p) for s in summaries for p in s["paths"]})
        lines.append(f"{','.join(methods)} {legend.short('P', ', '.join(paths))}")
        conditions: list[str] = []
        header_sets = sorted({_headers_text(s["headers"]) for s in summaries if s["headers"]})
        if len(header_sets) <= 2:
            conditions += [legend.key("H", h) for h in header_sets]
        else:
            conditions.append(f"{len(header_sets)} header sets")
        windows = sorted({window_text(w) for s in summaries for w in s["timeWindows"]})
        if len(windows) <= 2:
            conditions += [legend.key("W", w) for w in windows]
        else:
            conditions.append(f"{len(windows)} time windows")
        if any(not s["timeWindows"] for s in summaries) and windows:
            conditions.append("some at any time")
        if conditions:
            lines.append(" · ".join(conditions))
    elif kind == "database":
        privileges = sorted({p for s in summaries for p in s["privileges"]})
        lines.append(legend.short("D", "; ".join(privileges)))
        ttls = sorted({(s["ttl"], s["maxTtl"]) for s in summaries})
        if len(ttls) == 1:
            lines.append(f"lease {ttls[0][0]}, max {ttls[0][1]}")
        else:
            lines.append(f"{len(ttls)} lease lengths")
    elif kind == "vault":
        caps = sorted({c for s in summaries for c in s["capabilities"]})
        lines.append(legend.short("V", ",".join(caps)))
    else:
        actions = sorted({a for s in summaries for a in s["actions"]})
        managed = sorted({p for s in summaries for p in s["managedPolicyArns"]})
        text = ", ".join(actions) + (f"; managed policies {', '.join(managed)}" if managed else "")
        lines.append(legend.short("A", text or "no actions"))
        sessions = sorted({s["sessionDuration"] for s in summaries})
        lines.append(f"session {sessions[0]}" if len(sessions) == 1 else f"{len(sessions)} session lengths")
    return "\n".join(lines)


_METHOD_ORDER = {m: i for i, m in enumerate(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))}


def legend_text(key: str, text: str) -> str:
    """A legend entry as shown: ``W1  time window: mon-fri 09:00-17:00 Europe/London``."""
    return f"{Legend.TEXT.get(key[0], key[0])}: {text}"


# --------------------------------------------------------------------------- building


def agent_group(agent: ResolvedAgent, by: GroupBy) -> Group:
    if by == "team":
        return Group(f"team:{agent.identity.team}", f"team {agent.identity.team}")
    ns = agent.identity.namespace
    if ns is not None:
        return Group(f"namespace:{ns}", f"namespace {ns}")
    platform = agent.identity.platform
    return Group(f"platform:{platform}", {"windows": "Windows hosts", "vm": "VMs"}.get(platform, platform))


def service_group(svc: SourcedService, by: GroupBy) -> Group:
    if by == "team":
        return Group(f"team:{svc.manifest.metadata.team}", f"team {svc.manifest.metadata.team}")
    ns = svc.manifest.spec.namespace
    return Group(f"namespace:{ns}", f"namespace {ns}")


def agent_node(agent: ResolvedAgent, by: GroupBy) -> tuple[Node, Group]:
    ident = agent.identity
    label = agent.name + ("\n(suspended)" if agent.suspended else "")
    group = agent_group(agent, by)
    attrs = {"team": ident.team, "namespace": ident.namespace, "platform": ident.platform,
             "spiffeId": ident.spiffe_id, "manifest": agent.source.file}
    return Node(f"agent:{agent.name}", "agent", label, group.id, agent.suspended, attrs), group


def service_nodes(platform: Platform, svc: SourcedService, by: GroupBy) -> list[tuple[Node, Group]]:
    """The service, and its gateway when the stack deploys one in front of it."""
    spec = svc.manifest.spec
    group = service_group(svc, by)
    out = [(Node(f"service:{svc.name}", "service", f"{svc.name}\n:{spec.port} {spec.protocol}", group.id,
                 attrs={"namespace": spec.namespace, "team": svc.manifest.metadata.team}), group)]
    if has_gateway(platform, svc):
        gw = platform.gateway(svc)
        out.append((Node(f"gateway:{svc.name}", "gateway", f"{gw.name}\nEnvoy + OPA", group.id,
                         attrs={"namespace": spec.namespace, "service": svc.name, "spiffeId": gw.spiffe_id}), group))
    return out


def has_gateway(platform: Platform, svc: SourcedService) -> bool:
    return svc.manifest.spec.gateway and platform.config.subsystems.authz


def target_nodes(platform: Platform, agent: ResolvedAgent, grant: Grant, by: GroupBy) -> list[tuple[Node, Group]]:
    """What a grant reaches: first the node the grant's edge points at (then the service behind a
    gateway)."""
    if grant.http is not None:
        svc = platform.service(grant.http.service)
        assert svc is not None  # build_platform refuses undeclared services
        nodes = service_nodes(platform, svc, by)
        return nodes[::-1]  # the gateway (when there is one) first
    if grant.database is not None:
        d = grant.database
        group = Group(f"database:{d.cluster}", f"database cluster {d.cluster}")
        label = f"{d.database}\n{ENGINES.get(d.engine, d.engine)}"
        return [(Node(f"database:{d.cluster}/{d.database}", "database", label, group.id,
                      attrs={"cluster": d.cluster, "engine": d.engine}), group)]
    if grant.vault is not None:
        group = Group("vault", "Vault")
        return [(Node(f"vault:{grant.vault.path}", "vault", grant.vault.path, group.id), group)]
    assert grant.aws is not None
    role = agent.identity.aws_role_name(grant.aws.role)
    group = Group("aws", f"AWS IAM ({platform.config.aws.federation})")
    return [(Node(f"aws:{role}", "aws", f"{role}\nIAM role", group.id, attrs={"agent": agent.name}), group)]


def build_graph(platform: Platform, group_by: GroupBy = "team", agent: str | None = None,
                service: str | None = None) -> AccessGraph:
    """The stack's access graph, every grant an edge; narrowed to one agent or one service."""
    cfg = platform.config
    graph = AccessGraph(platform.stack, cfg.environment, cfg.trust_domain, group_by)
    legend = Legend()
    agents = platform.agents
    if agent is not None:
        found = platform.agent(agent)
        agents = (found,) if found is not None else ()
        graph.scope = f"agent {agent}"
    if service is not None:
        graph.scope = f"service {service}"
        svc = platform.service(service)
        for node, group in service_nodes(platform, svc, group_by) if svc is not None else ():
            graph.add_node(node, group)
    else:
        for svc in platform.services if agent is None else ():
            for node, group in service_nodes(platform, svc, group_by):
                graph.add_node(node, group)
    for a in agents:
        grants = [(i, g) for i, g in enumerate(a.grants)
                  if service is None or (g.http is not None and g.http.service == service)]
        if service is not None and not grants:
            continue
        node, group = agent_node(a, group_by)
        graph.add_node(node, group)
        for i, g in grants:
            targets = target_nodes(platform, a, g, group_by)
            for t, tg in targets:
                graph.add_node(t, tg)
            summary = grant_summary(g)
            ref = GrantRef(a.name, i, summary, a.suspended)
            kind: EdgeKind = g.kind
            graph.edges.append(Edge(node.id, targets[0][0].id, kind, edge_label(kind, [summary], legend), (ref,),
                                    tuple(e.system for e in enforcement(platform, a, g))))
    _add_fronts(graph)
    graph.legend = legend.sorted()
    if cfg.shard.role == "base":
        graph.notes.append(f"base stack: shard stacks ({', '.join(cfg.shard.shards) or 'none listed'}) deploy these "
                           "agents' identities and grants")
    elif cfg.shard.role == "shard":
        graph.notes.append(f"shard stack: only this shard's agents (base {cfg.shard.base_stack})")
    graph.edges.sort(key=_edge_order)
    return graph


def _add_fronts(graph: AccessGraph) -> None:
    for node in list(graph.nodes.values()):
        if node.kind == "gateway":
            svc = f"service:{node.attrs['service']}"
            if svc in graph.nodes:
                graph.edges.append(Edge(node.id, svc, "fronts", ""))


def _edge_order(e: Edge) -> tuple[Any, ...]:
    first = e.grants[0] if e.grants else None
    return (e.kind == "fronts", e.source, first.agent if first else "", first.index if first else -1, e.target)


# --------------------------------------------------------------------------- aggregation


def _agent_key(node: Node, by: GroupBy) -> str:
    if by == "team":
        return str(node.attrs["team"])
    ns = node.attrs.get("namespace")
    return str(ns) if ns else f"({node.attrs['platform']})"


OTHER = "(other)"
"""Key of the node holding the smallest groups (no team or namespace can be named so)."""


def choose_aggregation(graph: AccessGraph, mode: Aggregate, max_agents: int = MAX_AGENTS) -> GroupBy | None:
    """``auto``: none up to ``max_agents`` agents; above, the graph's grouping when it gives at
    most ``max_agents`` groups, else the other one when it does, else whichever gives fewer."""
    if mode == "none":
        return None
    if mode in ("team", "namespace"):
        return mode
    agents = [n for n in graph.nodes.values() if n.kind == "agent"]
    if len(agents) <= max_agents:
        return None
    order: list[GroupBy] = [graph.group_by, "namespace" if graph.group_by == "team" else "team"]
    counts = {by: len({_agent_key(n, by) for n in agents}) for by in order}
    for by in order:
        if counts[by] <= max_agents:
            return by
    return min(order, key=lambda b: counts[b])


def aggregate(graph: AccessGraph, by: GroupBy, max_agents: int = MAX_AGENTS) -> AccessGraph:
    """Agents merged into one node per team or namespace (the smallest beyond ``max_agents``
    groups into one ``other`` node); their edges merged per target; AWS roles (one per agent
    by construction), and Vault paths when there are more than ``max_agents``, merged per group."""
    agents = sorted((n for n in graph.nodes.values() if n.kind == "agent"), key=lambda n: n.id)
    members: dict[str, list[Node]] = defaultdict(list)
    for n in agents:
        members[_agent_key(n, by)].append(n)
    keys = sorted(members, key=lambda k: (-len(members[k]), k))
    other: list[Node] = []
    if len(keys) > max_agents:
        for k in keys[max_agents - 1:]:
            other += members.pop(k)
    out = AccessGraph(graph.stack, graph.environment, graph.trust_domain, graph.group_by, notes=list(graph.notes),
                      scope=graph.scope)
    out.aggregation = Aggregation(by, len(agents), len(members) + (1 if other else 0), max_agents, len(other))
    agents_group = Group("agents", f"agents by {by}")
    node_of: dict[str, str] = {}
    other.sort(key=lambda n: n.id)
    for key, group_members in [*sorted(members.items()), *([(OTHER, other)] if other else [])]:
        suspended = sum(m.suspended for m in group_members)
        label = f"{by} {key}" if key != OTHER else f"other {by}s"
        label += f"\n{_plural(len(group_members), 'agent')}" + (f" ({suspended} suspended)" if suspended else "")
        node = Node(f"agents:{by}:{key}", "agents", label, agents_group.id, suspended == len(group_members),
                    {"agents": len(group_members), "members": [m.id.removeprefix("agent:") for m in group_members],
                     by: key})
        out.add_node(node, agents_group)
        for m in group_members:
            node_of[m.id] = node.id
    vault_nodes = sum(n.kind == "vault" for n in graph.nodes.values())
    merge_kinds = {"aws"} | ({"vault"} if vault_nodes > max_agents else set())
    for n in graph.nodes.values():
        if n.kind not in ("agent", *merge_kinds):
            out.add_node(n, graph.groups[n.group])
    merged: dict[tuple[str, str, str], list[GrantRef]] = defaultdict(list)
    enforced: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    merged_targets: dict[str, tuple[Node, int]] = {}
    for e in graph.edges:
        if e.kind == "fronts":
            continue
        source = node_of[e.source]
        target = e.target
        target_node = graph.nodes[e.target]
        if target_node.kind in merge_kinds:
            target = f"{target_node.kind}:{source}"
            seen = merged_targets.get(target)
            merged_targets[target] = (target_node, (seen[1] if seen else 0) + 1)
        merged[(source, target, e.kind)] += e.grants
        enforced[(source, target, e.kind)] |= set(e.enforced_by)
    for target, (first, count) in sorted(merged_targets.items()):
        what = "IAM role" if first.kind == "aws" else "Vault path"
        source = target.split(":", 1)[1]
        out.add_node(Node(target, first.kind, _plural(count, what), first.group, attrs={"of": source, "count": count}),
                     graph.groups[first.group])
    legend = Legend()
    for (source, target, kind), refs in sorted(merged.items()):
        n_agents = len({r.agent for r in refs})
        out.edges.append(Edge(source, target, kind,  # type: ignore[arg-type]
                              edge_label(kind, [r.summary for r in refs], legend, n_agents),  # type: ignore[arg-type]
                              tuple(refs), tuple(sorted(enforced[(source, target, kind)]))))
    _add_fronts(out)
    out.legend = legend.sorted()
    out.edges.sort(key=_edge_order)
    arrows = sum(e.kind != "fronts" for e in out.edges)
    if arrows > MAX_LABELLED_EDGES:
        out.edge_labels = False
        out.notes.append(f"{arrows} merged arrows, too many to label: the more agents behind an arrow, the "
                         "thicker it is; --service, --agent or --format json give the details")
    return out


def agents_behind(edge: Edge) -> int:
    return len({r.agent for r in edge.grants})


def _width(edge: Edge) -> float:
    """Line width of an unlabelled merged arrow: 1 for one agent, up to 4 (log scale)."""
    return round(1 + min(3.0, math.log2(max(1, agents_behind(edge))) / 2), 1)


def picture(platform: Platform, group_by: GroupBy = "team", agent: str | None = None, service: str | None = None,
            mode: Aggregate = "auto", max_agents: int = MAX_AGENTS) -> AccessGraph:
    """The graph as drawn: built, then aggregated when ``mode`` (or, for ``auto``, its size) says."""
    graph = build_graph(platform, group_by, agent, service)
    by = choose_aggregation(graph, mode, max_agents)
    return graph if by is None else aggregate(graph, by, max_agents)


# --------------------------------------------------------------------------- JSON


def to_json(graph: AccessGraph) -> dict[str, Any]:
    agg = graph.aggregation
    return {
        "stack": graph.stack,
        "environment": graph.environment,
        "trustDomain": graph.trust_domain,
        "scope": graph.scope or None,
        "groupBy": graph.group_by,
        "aggregated": None if agg is None else {"by": agg.by, "agents": agg.agents, "groups": agg.groups,
                                                "threshold": agg.threshold, "inOther": agg.other},
        "notes": list(graph.notes),
        "groups": [{"id": g.id, "label": g.label} for g in sorted(graph.groups.values(), key=lambda g: g.id)],
        "nodes": [{"id": n.id, "kind": n.kind, "label": n.label, "group": n.group, "suspended": n.suspended,
                   **dict(n.attrs)} for n in sorted(graph.nodes.values(), key=lambda n: n.id)],
        "edges": [{"from": e.source, "to": e.target, "kind": e.kind, "label": e.label, "suspended": e.suspended,
                   "enforcedBy": list(e.enforced_by),
                   **({"change": e.change} if e.change else {}),
                   "grants": [{"agent": r.agent, "index": r.index, "grant": dict(r.summary)} for r in e.grants]}
                  for e in graph.edges],
        "legend": dict(graph.legend),
    }


def json_text(graph: AccessGraph) -> str:
    return json.dumps(to_json(graph), indent=2) + "\n"


# --------------------------------------------------------------------------- styles

NODE_STYLE: dict[str, dict[str, str]] = {
    "agent": {"shape": "box", "style": "rounded,filled", "fillcolor": "#dbeafe", "color": "#1e3a8a"},
    "agents": {"shape": "box", "style": "rounded,filled,bold", "fillcolor": "#bfdbfe", "color": "#1e3a8a",
               "peripheries": "2"},
    "service": {"shape": "component", "style": "filled", "fillcolor": "#dcfce7", "color": "#166534"},
    "gateway": {"shape": "hexagon", "style": "filled", "fillcolor": "#fef9c3", "color": "#854d0e"},
    "database": {"shape": "cylinder", "style": "filled", "fillcolor": "#ede9fe", "color": "#5b21b6"},
    "vault": {"shape": "folder", "style": "filled", "fillcolor": "#f3f4f6", "color": "#111827"},
    "aws": {"shape": "note", "style": "filled", "fillcolor": "#ccfbf1", "color": "#115e59"},
}
SUSPENDED_STYLE = {"style": "rounded,filled,dashed", "fillcolor": "#f3f4f6", "color": "#6b7280",
                   "fontcolor": "#6b7280"}
EDGE_COLOR: dict[str, str] = {"http": "#1d4ed8", "database": "#6d28d9", "vault": "#111827", "aws": "#0f766e",
                              "fronts": "#9ca3af"}
SUSPENDED_COLOR = "#9ca3af"
CHANGE_COLOR: dict[str, str] = {"added": "#16a34a", "removed": "#dc2626", "widened": "#ea580c",
                                "narrowed": "#6b7280"}
KIND_TEXT = {"agent": "agent", "agents": "agents merged", "service": "service", "gateway": "Envoy + OPA gateway",
             "database": "database", "vault": "Vault path", "aws": "AWS IAM role"}
DOT_SHAPE_TEXT = {"agent": "rounded box", "agents": "double box", "service": "component", "gateway": "hexagon",
                  "database": "cylinder", "vault": "folder", "aws": "note"}
NOTATION = ("path* = prefix match; dashed = suspended agent (nothing deployed for it); "
            "arrows into a gateway: checked per request by OPA there, then passed to the service")
CHANGE_NOTATION = ("path* = prefix match; dashed = a grant removed (or its agent suspended or removed); "
                   "arrows into a gateway: checked per request by OPA there, then passed to the service")


def notation(graph: AccessGraph) -> str:
    return CHANGE_NOTATION if any(e.change for e in graph.edges) else NOTATION


def _group_order(graph: AccessGraph) -> list[Group]:
    """Boxes in drawing order: agents' first, then services', databases, Vault, AWS."""
    first_kind: dict[str, int] = {}
    rank = {"agent": 0, "agents": 0, "gateway": 1, "service": 1, "database": 2, "vault": 3, "aws": 4}
    for n in graph.nodes.values():
        first_kind[n.group] = min(first_kind.get(n.group, 9), rank[n.kind])
    return sorted(graph.groups.values(), key=lambda g: (first_kind.get(g.id, 9), g.id))


def title_lines(graph: AccessGraph) -> list[str]:
    lines = [graph.title]
    if graph.aggregation is not None:
        lines.append(graph.aggregation.note())
    lines += graph.notes
    return lines


# --------------------------------------------------------------------------- DOT


def _q(text: str) -> str:
    """A DOT double-quoted string; ``\\n`` in ``text`` becomes a centred line break."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(values: Mapping[str, str]) -> str:
    return "[" + ", ".join(f"{k}={_q(v)}" for k, v in values.items()) + "]"


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def to_dot(graph: AccessGraph) -> str:
    """Graphviz DOT: one box per group, shapes per kind, colours per grant kind, and the title
    and legend as the graph's label (above the picture, outside its layout)."""
    out = [
        "digraph access {",
        "  graph " + _attrs({"rankdir": "LR", "labelloc": "t", "labeljust": "l", "fontname": FONT,
                             "fontsize": "10", "nodesep": "0.25", "ranksep": "1.2", "newrank": "true",
                             "bgcolor": "white"}) + ";",
        f"  graph [label=<{_dot_legend(graph)}>];",
        "  node " + _attrs({"fontname": FONT, "fontsize": "10"}) + ";",
        "  edge " + _attrs({"fontname": FONT, "fontsize": "8", "arrowsize": "0.7"}) + ";",
    ]
    by_group: dict[str, list[Node]] = defaultdict(list)
    for n in sorted(graph.nodes.values(), key=lambda n: n.id):
        by_group[n.group].append(n)
    for i, group in enumerate(_group_order(graph)):
        out.append(f"  subgraph cluster_{i} {{")
        out.append("    graph " + _attrs({"label": group.label, "style": "rounded,dashed", "color": "#9ca3af",
                                           "fontcolor": "#374151", "fontsize": "11"}) + ";")
        for n in by_group[group.id]:
            style = dict(NODE_STYLE[n.kind])
            if n.suspended:
                style.update(SUSPENDED_STYLE)
            out.append(f"    {_q(n.id)} " + _attrs({"label": n.label, **style}) + ";")
        out.append("  }")
    for e in graph.edges:
        color = CHANGE_COLOR[e.change] if e.change else (SUSPENDED_COLOR if e.suspended else EDGE_COLOR[e.kind])
        attrs = {"color": color, "fontcolor": color}
        label = f"{e.change}: {e.label}" if e.change else e.label
        if label and graph.edge_labels:
            attrs["label"] = label
        elif label:
            attrs["penwidth"] = str(_width(e))
        if label:
            attrs["tooltip"] = label
        if e.kind == "fronts":
            attrs.update({"style": "dotted", "arrowhead": "empty"})
        elif e.suspended or e.change == "removed":
            attrs["style"] = "dashed"
        if e.change in ("added", "widened"):
            attrs["penwidth"] = "2"
        out.append(f"  {_q(e.source)} -> {_q(e.target)} " + _attrs(attrs) + ";")
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_legend(graph: AccessGraph) -> str:
    """The title, notes and legend as one Graphviz HTML-like table."""
    title, *notes = title_lines(graph)
    rows = [f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="14"><B>{_html(title)}</B></FONT></TD></TR>']
    rows += [f'<TR><TD ALIGN="LEFT"><B>{_html(n)}</B></TD></TR>' for n in notes]
    for key, text in graph.legend.items() if graph.edge_labels else ():
        rows.append(f'<TR><TD ALIGN="LEFT"><B>{_html(key)}</B>  {_html(legend_text(key, text))}</TD></TR>')
    kinds = sorted({n.kind for n in graph.nodes.values()}, key=list(NODE_STYLE).index)
    shapes = "; ".join(f"{DOT_SHAPE_TEXT[k]}: {KIND_TEXT[k]}" for k in kinds)
    grant_kinds = sorted({e.kind for e in graph.edges if e.kind != "fronts"}, key=list(EDGE_COLOR).index)
    colours = ", ".join(f'<FONT COLOR="{EDGE_COLOR[k]}">{k}</FONT>' for k in grant_kinds)
    changes = sorted({e.change for e in graph.edges if e.change}, key=list(CHANGE_COLOR).index)
    if changes:
        colours = ", ".join(f'<FONT COLOR="{CHANGE_COLOR[c]}">{c}</FONT>' for c in changes)
    legend = [_html(shapes)] + ([f"arrows by colour: {colours}"] if colours else []) + [_html(notation(graph))]
    rows += [f'<TR><TD ALIGN="LEFT">{n}</TD></TR>' for n in legend]
    return ('<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="2">' + "".join(rows) + "</TABLE>")


def dot_digest(dot: str) -> str:
    return hashlib.sha256(dot.encode()).hexdigest()


DIGEST_MARK = "passport graph source sha256 "
"""Graphviz copies the graph's comment into the SVG: the digest of the DOT it was drawn from."""


def with_digest(dot: str) -> str:
    """The DOT with its own digest as the graph's comment (which Graphviz copies into an SVG)."""
    head, rest = dot.split("\n", 1)
    return f"{head}\n  comment={_q(DIGEST_MARK + dot_digest(dot))};\n{rest}"


def svg_is_current(svg: str, dot: str) -> bool:
    """Was ``svg`` drawn from exactly this DOT (whatever the Graphviz version)?"""
    return (DIGEST_MARK + dot_digest(dot)) in svg


# --------------------------------------------------------------------------- Graphviz


class GraphvizError(Exception):
    pass


def find_dot() -> str | None:
    """Graphviz's ``dot``: PATH, or the link ``scripts/bootstrap-tools --with-graphviz`` made."""
    found = shutil.which("dot")
    if found:
        return found
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agent-passport/tools/bin/dot"
    return str(cache) if cache.exists() else None


def run_dot(dot: str, fmt: Literal["svg", "png"], binary: str | None = None, timeout: float = 600) -> bytes:
    binary = binary or find_dot()
    if binary is None:
        raise GraphvizError("Graphviz's dot is not installed: scripts/bootstrap-tools --with-graphviz "
                            "(or apt-get install graphviz), or use --format dot|mermaid|json")
    proc = subprocess.run([binary, f"-T{fmt}"], input=with_digest(dot).encode(), capture_output=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise GraphvizError(f"dot -T{fmt} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


# --------------------------------------------------------------------------- Mermaid

MERMAID_MAX_EDGES = 500
"""Mermaid refuses to draw more edges than this unless the page that renders it raises
``maxEdges`` (a page setting: a diagram cannot)."""

MERMAID_SHAPES: dict[str, tuple[str, str]] = {
    "agent": ('(["', '"])'),
    "agents": ('(["', '"])'),
    "service": ('[["', '"]]'),
    "gateway": ('{{"', '"}}'),
    "database": ('[("', '")]'),
    "vault": ('[/"', '"/]'),
    "aws": ('>"', '"]'),
}
MERMAID_SHAPE_TEXT = {"agent": "rounded", "agents": "rounded, thick border", "service": "framed",
                      "gateway": "hexagon", "database": "cylinder", "vault": "slanted", "aws": "flag"}


def mermaid_text(text: str) -> str:
    """Text inside a Mermaid double-quoted label: quotes, markup and separators as entities,
    line breaks as ``<br/>``."""
    out = []
    for ch in text:
        if ch in '#"<>|`':
            out.append(f"#{ord(ch)};")
        elif ch == "\n":
            out.append("<br/>")
        else:
            out.append(ch)
    return "".join(out)


def to_mermaid(graph: AccessGraph, legend: bool = True) -> str:
    """A Mermaid flowchart (``flowchart LR``) for Markdown: the same boxes, shapes, labels and
    legend keys as the DOT; node ids are ``n0``, ``n1``, ... (never a Mermaid keyword)."""
    ids = {n: f"n{i}" for i, n in enumerate(sorted(graph.nodes))}
    by_group: dict[str, list[Node]] = defaultdict(list)
    for n in sorted(graph.nodes.values(), key=lambda n: n.id):
        by_group[n.group].append(n)
    out = ["flowchart LR"]
    for title in title_lines(graph):
        out.append(f"  %% {title}")
    for i, group in enumerate(_group_order(graph)):
        out.append(f'  subgraph g{i}["{mermaid_text(group.label)}"]')
        for n in by_group[group.id]:
            left, right = MERMAID_SHAPES[n.kind]
            out.append(f"    {ids[n.id]}{left}{mermaid_text(n.label)}{right}")
        out.append("  end")
    styles: list[str] = []
    for i, e in enumerate(graph.edges):
        label = f"{e.change}: {e.label}" if e.change else e.label
        arrow = "-.->" if (e.kind == "fronts" or e.suspended or e.change == "removed") else "-->"
        text = f'|"{mermaid_text(label)}"|' if label and graph.edge_labels else ""
        out.append(f"  {ids[e.source]} {arrow}{text} {ids[e.target]}")
        color = CHANGE_COLOR[e.change] if e.change else (SUSPENDED_COLOR if e.suspended else EDGE_COLOR[e.kind])
        width = "2.5px" if e.change in ("added", "widened") else "1.5px"
        if label and not graph.edge_labels:
            width = f"{_width(e)}px"
        styles.append(f"  linkStyle {i} stroke:{color},stroke-width:{width}")
    out += styles
    if legend:
        keys = graph.legend.items() if graph.edge_labels else ()
        lines = title_lines(graph) + [f"{k}: {legend_text(k, v)}" for k, v in keys]
        kinds = sorted({n.kind for n in graph.nodes.values()}, key=list(NODE_STYLE).index)
        lines.append("; ".join(f"{MERMAID_SHAPE_TEXT[k]}: {KIND_TEXT[k]}" for k in kinds))
        lines.append(notation(graph).replace("dashed", "dotted"))
        out.append('  subgraph legend["Legend"]')
        out.append(f'    legend_text["{mermaid_text(chr(10).join(lines))}"]')
        out.append("  end")
    for kind, style in NODE_STYLE.items():
        if any(n.kind == kind for n in graph.nodes.values()):
            out.append(f"  classDef {kind} fill:{style['fillcolor']},stroke:{style['color']}")
    out.append(f"  classDef suspended fill:{SUSPENDED_STYLE['fillcolor']},stroke:{SUSPENDED_STYLE['color']},"
               f"color:{SUSPENDED_STYLE['fontcolor']},stroke-dasharray:4 3")
    if legend:
        out.append("  classDef legend fill:#ffffff,stroke:#d1d5db,text-align:left")
    members: dict[str, list[str]] = defaultdict(list)
    for n in sorted(graph.nodes.values(), key=lambda n: n.id):
        members["suspended" if n.suspended else n.kind].append(ids[n.id])
    for cls, node_ids in sorted(members.items()):
        out.append(f"  class {','.join(node_ids)} {cls}")
    if legend:
        out.append("  class legend_text legend")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- what a graph covers


def grant_edges(graph: AccessGraph) -> Iterable[tuple[GrantRef, Edge]]:
    for e in graph.edges:
        for r in e.grants:
            yield r, e


def agent_names(graph: AccessGraph) -> list[str]:
    """Every agent the picture names (one per node, or the members of aggregated nodes)."""
    out: list[str] = []
    for n in graph.nodes.values():
        if n.kind == "agent":
            out.append(n.id.removeprefix("agent:"))
        elif n.kind == "agents":
            out += list(n.attrs["members"])
    return sorted(out)

