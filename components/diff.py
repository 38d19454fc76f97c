"""``passport diff``: what a manifest or stack-config change does, as Markdown for a PR comment.

The base revision's stack file and manifests are materialised into a temporary directory with
``git show`` / ``git archive`` (the user's working tree and index are never touched), both
sides are validated into a :class:`~components.platform_model.Platform`, and both run through
the current program under mocks. The report lists identities added and removed, grants
widened or narrowed (widening is highlighted), TTL changes, and resources added, changed and
removed. Code changes are not diffed: both sides run the same (current) program, so the
report shows what the *inputs* change.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pulumi

from components.check import load_inputs, load_plans
from components.config import load_stack_config, stack_file
from components.durations import format_duration, seconds
from components.errors import ConfigError, ManifestError, Problem
from components.graph import (
    AccessGraph,
    ChangeKind,
    Edge,
    EdgeKind,
    GrantRef,
    Legend,
    agent_node,
    edge_label,
    target_nodes,
    to_mermaid,
)
from components.manifest.models import Grant
from components.mockrun import Graph, run_program
from components.platform_model import Platform, ResolvedAgent, grant_summary
from components.progress import activity

Direction = Literal["widened", "narrowed", "changed"]
WIDE = "⚠️ **widened**"


@dataclass(frozen=True)
class Change:
    direction: Direction
    text: str


@dataclass
class AgentDiff:
    name: str
    file: str
    status: Literal["added", "removed", "changed"]
    spiffe_id: str
    changes: list[Change] = field(default_factory=list)


@dataclass
class ResourceDiff:
    added: list[tuple[str, str]]
    removed: list[tuple[str, str]]
    changed: list[tuple[str, str, list[str]]]


@dataclass
class StackDiff:
    stack: str
    base: str
    agents: list[AgentDiff]
    resources: ResourceDiff | None
    access: AccessGraph | None = None
    """Only the grants that changed, as edges (added, removed, widened, narrowed): the picture."""

    @property
    def widened(self) -> int:
        return sum(c.direction == "widened" for a in self.agents for c in a.changes)

    @property
    def narrowed(self) -> int:
        return sum(c.direction == "narrowed" for a in self.agents for c in a.changes)


# --------------------------------------------------------------------------- git


def _git(args: list[str], cwd: Path) -> bytes:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip() or f"git {' '.join(args)} failed"
        raise ConfigError([Problem("git", None, "--base", message)])
    return proc.stdout


def materialise(ref: str, stack: str, root: Path, dest: Path) -> Path:
    """Write ``ref``'s stack file and manifests (only those) under ``dest``; return the project root.

    Returns ``dest/<prefix>`` where prefix is the project's path inside the repository.
    """
    top = Path(_git(["rev-parse", "--show-toplevel"], root).decode().strip())
    prefix = _git(["rev-parse", "--show-prefix"], root).decode().strip()
    try:
        commit = _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], top).decode().strip()
    except ConfigError:
        raise ConfigError([Problem("git", None, "--base", f"{ref!r} is not a commit in this repository "
                                   "(fetch it first, e.g. git fetch origin main)")]) from None
    project = dest / prefix
    stack_path = f"{prefix}{stack_file(stack).as_posix()}"
    listed = _git(["ls-tree", "-r", "--name-only", commit, "--", f"{prefix}stacks"], top).decode().split()
    if stack_path not in listed:
        return project  # the stack does not exist at the base: everything is new
    _extract(_git(["archive", "--format=tar", commit, "--", stack_path], top), dest)
    agents_dir = load_stack_config(stack, project).agents_dir
    agents_path = f"{prefix}{agents_dir}".rstrip("/")
    if _git(["ls-tree", "--name-only", commit, "--", agents_path], top).strip():
        _extract(_git(["archive", "--format=tar", commit, "--", agents_path], top), dest)
    return project


def _extract(data: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


# --------------------------------------------------------------------------- access comparison


def _set_change(what: str, old: Iterable[str], new: Iterable[str], *, more_is_wider: bool = True) -> Iterator[Change]:
    before, after = set(old), set(new)
    added, removed = sorted(after - before), sorted(before - after)
    if added:
        yield Change("widened" if more_is_wider else "narrowed", f"{what} + {', '.join(added)}")
    if removed:
        yield Change("narrowed" if more_is_wider else "widened", f"{what} - {', '.join(removed)}")


def _ttl_change(what: str, old: str, new: str) -> Iterator[Change]:
    a, b = seconds(old), seconds(new)
    if a != b:
        yield Change("widened" if b > a else "narrowed",
                     f"{what} {format_duration(a)} → {format_duration(b)}")


def holder_conditions(agent: ResolvedAgent) -> list[str]:
    """What a workload must show to receive the agent's identity (fewer conditions: more holders)."""
    p = agent.manifest.spec.platform
    if p.kubernetes is not None:
        k = p.kubernetes
        return [f"namespace {k.namespace}", f"serviceAccount {k.service_account}",
                *(f"pod label {key}={value}" for key, value in k.pod_labels.items())]
    if p.windows is not None:
        w = p.windows
        out = [f"gMSA {w.gmsa_account}", f"host group {w.host_group}",
               *(f"host tag {key}={value}" for key, value in (w.ssm_target_tags or {}).items())]
        if w.pod is not None:
            out += [f"pod namespace {w.pod.namespace}", f"pod serviceAccount {w.pod.service_account}"]
        return out
    assert p.vm is not None
    v = p.vm
    return [f"attestation {v.attestation}",
            *([f"AWS account {v.aws_account_id}"] if v.aws_account_id else []),
            *([f"AWS region {v.aws_region}"] if v.aws_region else []),
            *(f"instance tag {key}={value}" for key, value in v.aws_instance_tags.items()),
            *(f"node selector {s}" for s in v.node_selectors),
            *(f"workload selector {s}" for s in v.workload_selectors)]


def grant_key(grant: Grant) -> tuple[str, ...]:
    """What a grant is *about*: the same key on both sides means the grant was edited."""
    if grant.http is not None:
        return ("http", grant.http.service)
    if grant.database is not None:
        return ("database", grant.database.cluster, grant.database.database)
    if grant.aws is not None:
        return ("aws", grant.aws.role)
    assert grant.vault is not None
    return ("vault", grant.vault.path)


def keyed_grants(grants: Iterable[Grant]) -> dict[tuple[str, ...], Grant]:
    """Grants by key; a second grant about the same thing gets ``#2`` (and so on, in manifest
    order), so no grant hides another's changes."""
    out: dict[tuple[str, ...], Grant] = {}
    seen: dict[tuple[str, ...], int] = {}
    for grant in grants:
        key = grant_key(grant)
        seen[key] = seen.get(key, 0) + 1
        out[key if seen[key] == 1 else (*key, f"#{seen[key]}")] = grant
    return out


def grant_label(key: tuple[str, ...]) -> str:
    kind, *rest = key
    return f"{kind} `{'/'.join(rest)}`"


def grant_permits(grant: Grant) -> list[str]:
    """What a grant allows, as comparable atoms."""
    if grant.http is not None:
        h = grant.http
        return [f"{m} {p.kind}:{p.value}" for m in h.methods for p in h.paths]
    if grant.database is not None:
        return [f"{a} on {p.schema_}.{t}" for p in grant.database.privileges for a in p.allow
                for t in (p.tables or ["*"])]
    if grant.aws is not None:
        w = grant.aws
        return ([f"{a} on {r}" for s in w.statements for a in s.actions for r in s.resources]
                + [f"policy {arn}" for arn in w.managed_policy_arns])
    assert grant.vault is not None
    return list(grant.vault.capabilities)


def compare_grant(old: Grant, new: Grant, key: tuple[str, ...] | None = None) -> Iterator[Change]:
    label = grant_label(key or grant_key(new))
    for change in _set_change("allows", grant_permits(old), grant_permits(new)):
        yield Change(change.direction, f"{label}: {change.text}")
    if old.http is not None and new.http is not None:
        # Headers and time windows are conditions: fewer of them means more access.
        hdr_old = [f"{k}={v}" for k, v in old.http.headers.items()]
        hdr_new = [f"{k}={v}" for k, v in new.http.headers.items()]
        for change in _set_change("header conditions", hdr_old, hdr_new, more_is_wider=False):
            yield Change(change.direction, f"{label}: {change.text}")
        win_old = [f"{','.join(w.days)} {w.start}-{w.end} {w.timezone}" for w in old.http.time_windows]
        win_new = [f"{','.join(w.days)} {w.start}-{w.end} {w.timezone}" for w in new.http.time_windows]
        if win_old and not win_new:
            yield Change("widened", f"{label}: time windows removed (calls allowed at any time)")
        elif win_new and not win_old:
            yield Change("narrowed", f"{label}: calls limited to {'; '.join(win_new)}")
        else:
            for change in _set_change("time windows", win_old, win_new):
                yield Change(change.direction, f"{label}: {change.text}")
    if old.database is not None and new.database is not None:
        yield from _ttl_change(f"{label}: credential ttl", old.database.ttl, new.database.ttl)
        yield from _ttl_change(f"{label}: credential maxTtl", old.database.max_ttl, new.database.max_ttl)
    if old.aws is not None and new.aws is not None:
        yield from _ttl_change(f"{label}: session duration", old.aws.session_duration, new.aws.session_duration)


def compare_agent(old: ResolvedAgent, new: ResolvedAgent) -> list[Change]:
    changes: list[Change] = []
    oi, ni = old.identity, new.identity
    if oi.spiffe_id != ni.spiffe_id:
        changes.append(Change("changed", f"identity `{oi.spiffe_id}` → `{ni.spiffe_id}` (a new identity: "
                                         "everything bound to the old one stops working)"))
    if old.suspended != new.suspended:
        changes.append(Change("narrowed", "suspended: every credential is revoked") if new.suspended
                       else Change("widened", "reinstated (no longer suspended): credentials are issued again"))
    changes += _ttl_change("X.509-SVID ttl", oi.x509_svid_ttl, ni.x509_svid_ttl)
    changes += _ttl_change("JWT-SVID ttl", oi.jwt_svid_ttl, ni.jwt_svid_ttl)
    changes += _set_change("JWT audiences", oi.jwt_audiences, ni.jwt_audiences)
    # conditions on who receives the identity: dropping one hands it to more workloads
    changes += _set_change("identity holders must match", holder_conditions(old), holder_conditions(new),
                           more_is_wider=False)
    if old.manifest.spec.source_networks != new.manifest.spec.source_networks:
        changes.append(Change("changed", "source networks " + ", ".join(old.manifest.spec.source_networks or ["any"])
                              + " → " + ", ".join(new.manifest.spec.source_networks or ["any"])))
    before = keyed_grants(old.grants)
    after = keyed_grants(new.grants)
    for key in sorted(after.keys() - before.keys()):
        changes.append(Change("widened", f"new grant {grant_label(key)}: "
                                         f"{', '.join(sorted(grant_permits(after[key])))}"))
    for key in sorted(before.keys() - after.keys()):
        changes.append(Change("narrowed", f"grant {grant_label(key)} removed"))
    for key in sorted(before.keys() & after.keys()):
        changes += compare_grant(before[key], after[key], key)
    return changes


def compare_platforms(base: Platform | None, head: Platform) -> list[AgentDiff]:
    old = {a.name: a for a in (base.agents if base else ())}
    new = {a.name: a for a in head.agents}
    out = []
    for name in sorted(old.keys() | new.keys()):
        if name not in old:
            a = new[name]
            grants = [Change("widened", f"grant {grant_label(grant_key(g))}: "
                                        f"{', '.join(sorted(grant_permits(g)))}") for g in a.grants]
            out.append(AgentDiff(name, a.source.file, "added", a.identity.spiffe_id, grants))
        elif name not in new:
            a = old[name]
            out.append(AgentDiff(name, a.source.file, "removed", a.identity.spiffe_id))
        else:
            changes = compare_agent(old[name], new[name])
            if changes:
                out.append(AgentDiff(name, new[name].source.file, "changed", new[name].identity.spiffe_id, changes))
    return out


MAX_DRAWN_CHANGES = 40
"""A PR comment's picture draws at most this many changed grants (the lists have every one)."""
CHANGE_ORDER: dict[str, int] = {"widened": 0, "added": 1, "removed": 2, "narrowed": 3}


def _indexed(agent: ResolvedAgent) -> dict[tuple[str, ...], tuple[int, Grant]]:
    grants = agent.grants
    return {key: (next(i for i, g in enumerate(grants) if g is grant), grant)
            for key, grant in keyed_grants(grants).items()}


def access_changes(base: Platform | None, head: Platform, base_ref: str = "base",
                   limit: int = MAX_DRAWN_CHANGES) -> AccessGraph:
    """The grants that give access (active agents') and changed, one edge each: added, removed,
    widened (any part of it widened) or narrowed; unchanged grants are left out."""
    graph = AccessGraph(head.stack, head.config.environment, head.config.trust_domain, "team",
                        scope=f"changes against {base_ref}")
    legend = Legend()
    old = {a.name: a for a in (base.active_agents if base else ())}
    new = {a.name: a for a in head.active_agents}
    found: list[tuple[ChangeKind, Platform, ResolvedAgent, int, Grant, str]] = []
    for name in sorted(old.keys() | new.keys()):
        before = _indexed(old[name]) if name in old else {}
        after = _indexed(new[name]) if name in new else {}
        for key in sorted(before.keys() | after.keys()):
            if key not in before:
                i, g = after[key]
                found.append(("added", head, new[name], i, g, ""))
            elif key not in after:
                i, g = before[key]
                assert base is not None
                found.append(("removed", base, old[name], i, g, ""))
            else:
                changes = list(compare_grant(before[key][1], after[key][1], key))
                if not changes:
                    continue
                prefix = f"{grant_label(key)}: "
                what = "\n".join(c.text.removeprefix(prefix) for c in changes)
                widened = any(c.direction == "widened" for c in changes)
                i, g = after[key]
                found.append(("widened" if widened else "narrowed", head, new[name], i, g, what))
    found.sort(key=lambda f: (CHANGE_ORDER[f[0]], f[2].name, f[3]))
    if len(found) > limit:
        graph.notes.append(f"the {len(found) - limit} other changed grants are in the lists below, not drawn")
    for change, platform, agent, i, grant, what in found[:limit]:
        node, group = agent_node(agent, "team")
        graph.add_node(node, group)
        targets = target_nodes(platform, agent, grant, "team")
        for t, tg in targets:
            graph.add_node(t, tg)
        summary = grant_summary(grant)
        kind: EdgeKind = grant.kind
        label = what or edge_label(kind, [summary], legend)
        graph.edges.append(Edge(node.id, targets[0][0].id, kind, label, (GrantRef(agent.name, i, summary),),
                                change=change))
    for n in list(graph.nodes.values()):
        if n.kind == "gateway" and f"service:{n.attrs['service']}" in graph.nodes:
            graph.edges.append(Edge(n.id, f"service:{n.attrs['service']}", "fronts", ""))
    graph.legend = legend.sorted()
    return graph


def compare_graphs(base: Graph | None, head: Graph) -> ResourceDiff:
    old = {r.urn: r for r in (base.resources if base else [])}
    new = {r.urn: r for r in head.resources}
    changed = []
    for urn in sorted(old.keys() & new.keys()):
        a, b = old[urn].inputs, new[urn].inputs
        keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if keys:
            changed.append((new[urn].type, new[urn].name, keys))
    return ResourceDiff(
        added=sorted((new[u].type, new[u].name) for u in new.keys() - old.keys()),
        removed=sorted((old[u].type, old[u].name) for u in old.keys() - new.keys()),
        changed=sorted(changed),
    )


# --------------------------------------------------------------------------- running


def run_diff(base_ref: str, stack: str, root: Path | None = None, resources: bool = True) -> StackDiff:
    root = (root or Path.cwd()).resolve()
    with activity(f"checking stack {stack} as it is now"):
        head = load_plans(stack, root).platform
    with tempfile.TemporaryDirectory(prefix="passport-diff-") as tmp:
        with activity(f"reading stack {stack} and its manifests at {base_ref}"):
            project = materialise(base_ref, stack, root, Path(tmp))
        base: Platform | None = None
        if stack_file(stack, project).exists():
            try:
                with activity(f"checking stack {stack} as it was at {base_ref}"):
                    _, base = load_inputs(stack, project)
            except ManifestError as exc:
                if not any("no manifest files" in p.message for p in exc.problems):
                    raise ConfigError([Problem(f"{base_ref}:{p.file}", p.line, p.field, p.message)
                                       for p in exc.problems]) from None
        resource_diff = None
        if resources:
            base_graph = None
            if base is not None:
                shutil.copy2(root / "__main__.py", project / "__main__.py")
                try:
                    with activity(f"running the program under mocks for {base_ref}"):
                        base_graph = run_program(stack, project)
                except pulumi.RunError as exc:
                    raise ConfigError([Problem(
                        f"{base_ref}:{stack_file(stack)}", None, "",
                        "the base does not build with the current program, so its resources cannot be "
                        f"compared (use --no-resources for identities and grants only):\n{str(exc).strip()}",
                    )]) from None
            with activity("running the program under mocks for the change"):
                head_graph = run_program(stack, root)
            resource_diff = compare_graphs(base_graph, head_graph)
    return StackDiff(stack, base_ref, compare_platforms(base, head), resource_diff,
                     access_changes(base, head, base_ref))


# --------------------------------------------------------------------------- Markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def format_markdown(diff: StackDiff) -> str:
    added = [a for a in diff.agents if a.status == "added"]
    removed = [a for a in diff.agents if a.status == "removed"]
    ttl = sum("ttl" in c.text.lower() or "duration" in c.text for a in diff.agents for c in a.changes)
    summary = [
        f"**⚠️ {diff.widened} widened**" if diff.widened else "0 widened",
        f"{diff.narrowed} narrowed",
        f"{len(added)} identit{'y' if len(added) == 1 else 'ies'} added",
        f"{len(removed)} removed",
        f"{ttl} TTL change{'s' if ttl != 1 else ''}",
    ]
    if diff.resources is not None:
        r = diff.resources
        summary.append(f"resources +{len(r.added)} ~{len(r.changed)} -{len(r.removed)}")
    lines = [f"### passport diff — stack `{diff.stack}` against `{diff.base}`", "", " · ".join(summary), ""]
    lines += mermaid_section(diff)
    if added or removed:
        lines += ["#### Identities", "", "| | agent | SPIFFE ID | manifest |", "|---|---|---|---|"]
        for a in added + removed:
            mark = "**added**" if a.status == "added" else "removed"
            lines.append(f"| {mark} | `{a.name}` | `{a.spiffe_id}` | `{a.file}` |")
        lines.append("")
    with_changes = [a for a in diff.agents if a.changes and a.status != "removed"]
    if with_changes:
        lines += ["#### Access and lifetimes", ""]
        for a in with_changes:
            lines.append(f"**`{a.name}`** (`{a.file}`){' — new agent' if a.status == 'added' else ''}")
            order = {"widened": 0, "changed": 1, "narrowed": 2}
            for c in sorted(a.changes, key=lambda c: (order[c.direction], c.text)):
                mark = {"widened": WIDE, "narrowed": "narrowed", "changed": "changed"}[c.direction]
                lines.append(f"- {mark} — {c.text}")
            lines.append("")
    if not diff.agents:
        lines += ["No identity, access or lifetime changes.", ""]
    if diff.resources is not None:
        r = diff.resources
        if r.added or r.changed or r.removed:
            lines += [f"<details><summary>Resources: +{len(r.added)} added, ~{len(r.changed)} changed, "
                      f"-{len(r.removed)} removed</summary>", "", "| change | type | name | inputs |",
                      "|---|---|---|---|"]
            lines += [f"| added | `{t}` | `{n}` | |" for t, n in r.added]
            lines += [f"| changed | `{t}` | `{n}` | {_cell(', '.join(k))} |" for t, n, k in r.changed]
            lines += [f"| removed | `{t}` | `{n}` | |" for t, n in r.removed]
            lines += ["", "</details>", ""]
        else:
            lines += ["No resource changes.", ""]
    return "\n".join(lines).rstrip() + "\n"


def mermaid_section(diff: StackDiff) -> list[str]:
    """The changed grants drawn (GitHub renders Mermaid in comments); the lists below stay the
    accessible version, so the picture repeats its colours in words."""
    if diff.access is None or not any(e.change for e in diff.access.edges):
        return []
    counts = Counter(e.change for e in diff.access.edges if e.change)
    words = {"added": "green", "removed": "red, dotted", "widened": "orange", "narrowed": "grey"}
    key = " · ".join(f"{words[c]}: {counts[c]} {c}" for c in ("widened", "added", "removed", "narrowed")
                     if counts[c])
    return ["#### Access changes", "", "```mermaid", to_mermaid(diff.access).rstrip(), "```", "",
            f"<sub>Changed grants only — {key}. The lists below say the same in words.</sub>", ""]


def as_json(diff: StackDiff) -> dict[str, Any]:
    """A machine-readable form (tests and tooling)."""
    return {
        "stack": diff.stack,
        "base": diff.base,
        "agents": [{"name": a.name, "file": a.file, "status": a.status, "spiffeId": a.spiffe_id,
                    "changes": [{"direction": c.direction, "text": c.text} for c in a.changes]}
                   for a in diff.agents],
        "access": [] if diff.access is None else [
            {"change": e.change, "from": e.source, "to": e.target, "kind": e.kind, "label": e.label,
             "agent": e.grants[0].agent, "index": e.grants[0].index}
            for e in diff.access.edges if e.change],
        "resources": None if diff.resources is None else {
            "added": [list(x) for x in diff.resources.added],
            "removed": [list(x) for x in diff.resources.removed],
            "changed": [[t, n, k] for t, n, k in diff.resources.changed],
        },
    }
