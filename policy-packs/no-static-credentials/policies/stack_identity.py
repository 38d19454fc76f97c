"""Stack policy one-identity-per-agent: SPIFFE IDs, selectors, ServiceAccounts, gMSAs and DNS names,
each one agent's.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy import ReportViolation, StackValidationArgs

from .tokens import AGENT_LABEL, GATEWAY_LABEL, REGISTRATIONS, SERVICE_LABEL, WORKLOADS, T
from .values import (
    Res,
    _resources,
    agent_of,
    agent_prefix,
    as_dict,
    as_list,
    dig,
    find_bom,
    is_node_entry,
    labels_of,
    plain,
    pod_spec,
    registration_spiffe_id,
)

# one-identity-per-agent ----------------------------------------------------------------------


def _owner(r: Res, agents: Iterable[str], spiffe_ids: Mapping[str, str]) -> str:
    labels = labels_of(r.props)
    if isinstance(labels.get(AGENT_LABEL), str):
        return str(labels[AGENT_LABEL])
    if isinstance(labels.get(GATEWAY_LABEL), str):
        return f"gateway {labels[GATEWAY_LABEL]}"
    agent = agent_of(r.type, r.name, r.props, agents, spiffe_ids)
    return agent if agent is not None else f"registration {r.name}"


# SPIRE selectors of which a node or a workload has exactly one value (mirrors
# components.collisions): entries asking for different values of one never match the same
# workload; every other selector can hold several values and keeps nothing apart.
EXCLUSIVE_NODE_SELECTORS = ("aws_iid:region", "aws_iid:az", "aws_iid:instance:id", "aws_iid:image:id",
                            "aws_iid:iamrole")
EXCLUSIVE_WORKLOAD_SELECTORS = ("unix:uid", "unix:user", "unix:gid", "unix:group", "unix:path", "unix:sha256",
                                "systemd:id", "systemd:fragment_path", "windows:user_name", "windows:user_sid",
                                "docker:image_id", "k8s:ns", "k8s:sa", "k8s:pod-uid", "k8s:pod-name",
                                "k8s:node-name")
WORKLOAD_ATTESTOR_OS = {"unix": "unix", "systemd": "unix", "docker": "unix", "k8s": "unix", "windows": "windows"}


def exclusive_selector_values(node_selectors: Iterable[str],
                              workload_selectors: Iterable[str]) -> dict[str, str] | None:
    """``{selector type: value}`` of one static entry's single-valued selectors (None: it asks
    for two values of one, so nothing matches it). ``aws_iid:tag:<key>:<value>`` is split at its
    last ':' (tag keys such as ``agentpassport:role`` hold colons; values are assumed not to)."""
    out: dict[str, str] = {}
    ok = True
    for side, selectors, exclusive in (("node", node_selectors, EXCLUSIVE_NODE_SELECTORS),
                                       ("workload", workload_selectors, EXCLUSIVE_WORKLOAD_SELECTORS)):
        for sel in selectors:
            found: list[tuple[str, str]] = []
            if side == "node" and sel.startswith("aws_iid:tag:") and ":" in sel[len("aws_iid:tag:"):]:
                key, _, value = sel.rpartition(":")
                found.append((f"node:{key}", value))
            kind = next((e for e in exclusive if sel.startswith(e + ":")), None)
            if kind is not None:
                value = sel[len(kind) + 1:]
                found.append((f"{side}:{kind}", value.lower() if kind.startswith("windows:") else value))
            if side == "workload" and sel.split(":", 1)[0] in WORKLOAD_ATTESTOR_OS:
                found.append(("workload:os", WORKLOAD_ATTESTOR_OS[sel.split(":", 1)[0]]))
            for key, value in found:
                ok = out.setdefault(key, value) == value and ok
    return out if ok else None


def first_compatible(entries: Sequence[Mapping[str, str] | None]) -> dict[int, int]:
    """For each entry j, the first i < j one workload can match together with it (linear split
    on the most shared single-valued selector; mirrors components.collisions)."""
    best: dict[int, int] = {}
    _split([(i, dict(e)) for i, e in enumerate(entries) if e is not None], best)
    return best


def _split(items: list[tuple[int, dict[str, str]]], best: dict[int, int]) -> None:
    if len(items) < 2:
        return
    counts = Counter(k for _, e in items for k in e)
    shared = [k for k, n in counts.items() if n >= 2]
    if not shared:
        first = min(i for i, _ in items)
        for i, _ in items:
            if i != first and best.get(i, i) > first:
                best[i] = first
        return
    key = max(shared, key=lambda k: (counts[k], k))
    groups: dict[str, list[tuple[int, dict[str, str]]]] = {}
    loose: list[tuple[int, dict[str, str]]] = []
    for i, e in items:
        value = e.pop(key, None)
        (loose if value is None else groups.setdefault(value, [])).append((i, e))
    for group in groups.values():
        _split([(i, dict(e)) for i, e in group + loose], best)


def _pod_account(r: Res) -> tuple[str | None, str | None]:
    """(namespace, ServiceAccount) a ClusterSPIFFEID selects; None where it selects any."""
    spec = as_dict(r.props.get("spec"))
    ns = dig(spec, "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name")
    sa = None
    for t in as_list(spec.get("workloadSelectorTemplates")):
        if isinstance(t, str) and t.startswith("k8s:ns:") and "{{" not in t:
            ns = t[len("k8s:ns:"):]
        elif isinstance(t, str) and t.startswith("k8s:sa:") and "{{" not in t:
            sa = t[len("k8s:sa:"):]
    return (ns if isinstance(ns, str) else None), sa


@dataclass
class _Platform:
    """What the graph's own (non-agent) workloads use: ServiceAccounts, namespaces, services."""

    accounts: dict[tuple[str, str], str] = field(default_factory=dict)  # (ns, sa) -> what
    namespaces: dict[str, str] = field(default_factory=dict)  # ns -> what
    services: dict[tuple[str, str], str] = field(default_factory=dict)  # (name, ns) -> what

    def account(self, ns: str | None, sa: str | None) -> str | None:
        if ns is None:
            return None
        if ns in self.namespaces:
            return self.namespaces[ns]
        if sa is None:
            return next((w for (n, _), w in sorted(self.accounts.items()) if n == ns), None)
        return self.accounts.get((ns, sa))

    def dns(self, name: str) -> str | None:
        """The platform workload or service a DNS name belongs to, if any."""
        labels = name.lower().rstrip(".").split(".")
        if len(labels) == 1:
            return next((w for (n, _), w in sorted(self.services.items()) if n == labels[0]), None)
        for k in range(len(labels) - 1):
            rest = labels[k + 2:]
            if rest and rest[0] != "svc":
                continue
            hit = self.services.get((labels[k], labels[k + 1]))
            if hit is not None:
                return hit
            if rest and labels[k + 1] in self.namespaces:
                return self.namespaces[labels[k + 1]]
        return None


def _platform_of(args: StackValidationArgs) -> _Platform:
    plat = _Platform()
    for r in args.resources:
        t = r.resource_type
        if t not in WORKLOADS and t not in (T.K8S_SERVICE_ACCOUNT, T.K8S_NAMESPACE, T.K8S_SERVICE,
                                            T.LINKERD_SERVER):
            continue
        p = plain(r.props)
        labels = labels_of(p)
        if AGENT_LABEL in labels:
            continue
        meta = as_dict(p.get("metadata"))
        ns, name = meta.get("namespace"), meta.get("name") or r.name
        if t == T.K8S_NAMESPACE:
            if as_dict(meta.get("labels")).get("linkerd.io/is-control-plane") == "true":
                plat.namespaces.setdefault(str(name), f"Linkerd's control-plane namespace {name}")
            continue
        if not isinstance(ns, str):
            continue
        if t == T.K8S_SERVICE:
            plat.services.setdefault((str(name), ns), f"Service {ns}/{name}")
        elif t == T.LINKERD_SERVER:
            service = labels.get(SERVICE_LABEL)
            if isinstance(service, str):
                plat.services.setdefault((service, ns), f"service {service!r}")
        elif t == T.K8S_SERVICE_ACCOUNT:
            plat.accounts.setdefault((ns, str(name)), f"ServiceAccount {ns}/{name} of {r.name!r}")
        else:
            sa = pod_spec(t, p).get("serviceAccountName") or "default"
            plat.accounts.setdefault((ns, str(sa)), f"ServiceAccount {ns}/{sa} of {r.name!r}")
            if labels.get("app.kubernetes.io/part-of") == "spire":
                plat.namespaces.setdefault(ns, f"SPIRE's namespace {ns}")
    return plat


def _selector_collisions(regs: Sequence[tuple[Res, str, str | None]], agents: Mapping[str, Any],
                         statics: Sequence[Res], plat: _Platform, report: ReportViolation) -> None:
    """Registrations of two agents that one workload satisfies, or that select the platform's
    own ServiceAccounts or claim its DNS names (the platform model's rule, on the graph)."""
    pods: dict[str, list[tuple[str | None, str, Res]]] = {}
    dns: dict[str, tuple[str, Res]] = {}
    for r, owner, _ in sorted(regs, key=lambda x: x[0].name):
        if owner not in agents:
            continue
        if r.type == T.CLUSTER_SPIFFE_ID:
            ns, sa = _pod_account(r)
            taken = plat.account(ns, sa)
            if taken is not None:
                report(f"agent {owner}: registration {r.name!r} selects pods running as "
                       f"{ns}/{sa or '*'}, which is the platform's ({taken})", r.urn)
            elif ns is not None:
                for other_sa, other, other_r in pods.get(ns, []):
                    if other != owner and (sa is None or other_sa is None or sa == other_sa):
                        report(f"agent {owner}: registration {r.name!r} selects ServiceAccount {ns}/{sa or '*'}, "
                               f"as registration {other_r.name!r} of agent {other} does: its pods get both SVIDs "
                               "whatever their labels and one Linkerd identity", r.urn)
                        break
                pods.setdefault(ns, []).append((sa, owner, r))
        names = dig(r.props, "spec", "dnsNameTemplates" if r.type == T.CLUSTER_SPIFFE_ID else "dnsNames")
        for name in as_list(names):
            if not isinstance(name, str) or "{{" in name:
                continue
            taken = plat.dns(name)
            labels = name.lower().rstrip(".").split(".")
            key = ".".join(labels[:labels.index("svc") + 1]) if "svc" in labels[2:] else ".".join(labels)
            if taken is not None:
                report(f"agent {owner}: registration {r.name!r} claims DNS name {name}, a name of {taken}", r.urn)
            elif dns.setdefault(key, (owner, r))[0] != owner:
                report(f"agent {owner}: registration {r.name!r} claims DNS name {name}, as registration "
                       f"{dns[key][1].name!r} of agent {dns[key][0]} does", r.urn)
    nodes = {registration_spiffe_id(r.type, r.props): r for r in statics if is_node_entry(r.type, r.props)}
    entries: list[tuple[Res, str]] = []
    values: list[Mapping[str, str] | None] = []
    for r, owner, _ in sorted(regs, key=lambda x: x[0].name):
        node = nodes.get(dig(r.props, "spec", "parentID"))
        if r.type != T.CLUSTER_STATIC_ENTRY or owner not in agents or node is None:
            continue  # join_token entries hang off an alias the operator hands out per host
        node_selectors = [s for s in as_list(dig(node.props, "spec", "selectors")) if isinstance(s, str)]
        workload = [s for s in as_list(dig(r.props, "spec", "selectors")) if isinstance(s, str)]
        entries.append((r, owner))
        values.append(exclusive_selector_values(node_selectors, workload))
    for j, i in sorted(first_compatible(values).items()):
        (r, owner), (other_r, other) = entries[j], entries[i]
        if owner != other:
            report(f"agent {owner}: one host process can match both registration {r.name!r} and registration "
                   f"{other_r.name!r} of agent {other} (no single-valued selector differs), so it would hold "
                   "both identities", r.urn)


def _identity_names(agents: Mapping[str, Any], plat: _Platform, report: ReportViolation) -> None:
    """From the bill of materials, active and suspended agents alike: one mesh identity per
    agent, and none of the platform's ServiceAccounts."""
    mesh: dict[str, str] = {}
    for agent, raw in sorted(agents.items()):
        info = as_dict(raw)
        accounts = []
        identity = info.get("meshIdentity")
        if isinstance(identity, str) and ".serviceaccount." in identity:
            sa, ns = identity.split(".")[:2]
            accounts.append((ns, sa))
            first = mesh.setdefault(identity, agent)
            if first != agent:
                report(f"agent {agent}: its mesh identity {identity} is also agent {first}'s: Linkerd cannot tell "
                       "them apart and suspending one leaves its access to the other", None)
        m = re.fullmatch(r"spiffe://[^/]+/ns/([^/]+)/sa/([^/]+)", str(info.get("spiffeId") or ""))
        if m:
            accounts.append((m.group(1), m.group(2)))
        for ns, sa in dict.fromkeys(accounts):
            taken = plat.account(ns, sa)
            if taken is not None:
                report(f"agent {agent}: runs as {ns}/{sa}, which is the platform's ({taken})", None)


def _one_identity(args: StackValidationArgs, report: ReportViolation) -> None:
    bom = find_bom(args.resources)
    agents = as_dict(bom.get("agents")) if bom else {}
    spiffe_ids = {a: str(v.get("spiffeId")) for a, v in agents.items() if isinstance(v, dict)}
    everything = _resources(args, REGISTRATIONS)
    agent_ids = {sid: a for a, sid in spiffe_ids.items()}
    for r in everything:
        sid = registration_spiffe_id(r.type, r.props)
        if is_node_entry(r.type, r.props) and sid in agent_ids:
            report(f"agent {agent_ids[sid]}: node entry {r.name!r} gives whole hosts the agent's "
                   f"identity {sid}", r.urn)
    regs = [(r, _owner(r, agents, spiffe_ids), registration_spiffe_id(r.type, r.props))
            for r in everything if not is_node_entry(r.type, r.props)]
    owners_of: dict[str, set[str]] = {}
    ids_of: dict[str, set[str]] = {}
    for _, owner, sid in regs:
        ids_of.setdefault(owner, set())
        if sid is not None:
            owners_of.setdefault(sid, set()).add(owner)
            ids_of[owner].add(sid)
    for r, owner, sid in regs:
        who = agent_prefix(owner if owner in agents else None)
        if sid is not None and len(owners_of[sid]) > 1:
            report(f"{who}SPIFFE ID {sid} is issued to {len(owners_of[sid])} workloads "
                   f"({', '.join(sorted(owners_of[sid]))}); every identity must be unique", r.urn)
        if owner in agents:
            if as_dict(agents[owner]).get("suspended") is True:
                report(f"{who}is suspended but registration {r.name!r} still issues it an "
                       "identity", r.urn)
            elif sid is not None and sid != spiffe_ids[owner]:
                report(f"{who}registration {r.name!r} issues {sid}, not the agent's identity "
                       f"{spiffe_ids[owner]}", r.urn)
        elif bom is not None and not owner.startswith(("gateway ", "registration ")):
            report(f"registration {r.name!r} is labelled for agent {owner!r}, which has no "
                   "manifest in this stack", r.urn)
    for owner, ids in sorted(ids_of.items()):
        if owner not in agents and len(ids) > 1:
            report(f"{owner} has {len(ids)} identities ({', '.join(sorted(ids))})", None)
    shared = Counter(spiffe_ids.values())
    for agent, sid in sorted(spiffe_ids.items()):
        if shared[sid] > 1:
            report(f"agent {agent}: its SPIFFE ID {sid} is also another agent's", None)
    plat = _platform_of(args)
    _selector_collisions(regs, agents, everything, plat, report)
    _identity_names(agents, plat, report)
    for agent, raw in sorted(agents.items()):
        info = as_dict(raw)
        if info.get("suspended") is True or "spire" not in as_list(info.get("subsystems")):
            continue
        if agent not in ids_of:
            report(f"agent {agent}: has no SPIRE registration issuing {spiffe_ids.get(agent)}", None)
