"""One identity per agent: the rules that keep every agent's identity its own, across the environment.

SPIFFE IDs, attestation selectors (a host process matching two agents' static entries),
ServiceAccounts, gMSAs and DNS names: each belongs to one agent and stays clear of Agent Passport's
own (its namespaces, workloads and host names: :func:`reservations`). Run by
:func:`components.platform_model.build_platform` over every agent of the environment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from components.config import StackConfig
from components.errors import Problem
from components.identity import AgentIdentity, gateway_identity
from components.manifest.loader import SourcedAgent, SourcedService

RESERVED_SPIFFE_PATHS = ("/spire/", "/node/")
"""SPIFFE ID paths agents may not take: SPIRE's own IDs (server, agents) and our node aliases."""


def agent_problem(agent: SourcedAgent, loc: tuple[str | int, ...], message: str) -> Problem:
    """A problem at ``loc`` of an agent manifest (file, line, field)."""
    from components.manifest.loader import format_loc

    return Problem(agent.file, agent.line_of(loc), format_loc(loc), message)


# --------------------------------------------------------------------------- one identity per agent
#
# An identity is only as unique as the selectors that hand it out. SPIRE gives a workload every
# entry whose selectors it satisfies, and Linkerd names a pod by its ServiceAccount alone, so two
# agents whose selectors one workload can satisfy are one identity, whatever their SPIFFE IDs say.
# These rules run over every agent of the environment (active and suspended, in every shard), so
# each stack, shard and `passport check` refuses the same manifests.

Loc = tuple[str | int, ...]


def _where(agent: SourcedAgent, loc: Loc) -> str:
    from components.manifest.loader import format_loc

    return f"{agent.file}:{agent.line_of(loc)} {format_loc(loc)}"


@dataclass(frozen=True)
class PassportClaim:
    """A name Agent Passport itself uses (a workload, ServiceAccount, namespace or DNS name)."""

    what: str
    """e.g. "the Envoy + OPA gateway of service 'payments-api'"."""
    declared_in: str | SourcedService
    """The stack file and field, or the Service manifest, that creates it."""

    @property
    def where(self) -> str:
        """``file[:line] field``; a manifest's line is looked up only now (only errors need it)."""
        if isinstance(self.declared_in, str):
            return self.declared_in
        return _where_service(self.declared_in)


@dataclass(frozen=True)
class Reservations:
    """What agents may not take: Agent Passport's own namespaces, ServiceAccounts and DNS names."""

    namespaces: Mapping[str, PassportClaim]
    """Namespaces only Agent Passport runs in (every ServiceAccount there is its own)."""
    service_accounts: Mapping[tuple[str, str], PassportClaim]
    """(namespace, ServiceAccount) of workloads the program creates outside those namespaces."""
    dns_names: Mapping[str, PassportClaim]
    """Canonical DNS names of services and gateways (``<name>.<ns>.svc.<cluster domain>``) and
    bare service names; every name below them is theirs too."""
    dns_zones: Mapping[str, PassportClaim]
    """``<ns>.svc.<cluster domain>`` of Agent Passport's namespaces: every name below is its own."""
    hosts: Mapping[str, PassportClaim]
    """Public host names Agent Passport serves (the OIDC discovery provider's issuer)."""

    def account(self, namespace: str, service_account: str) -> PassportClaim | None:
        return self.namespaces.get(namespace) or self.service_accounts.get((namespace, service_account))


def reservations(cfg: StackConfig, services: Iterable[SourcedService], config_file: str) -> Reservations:
    """Agent Passport's own names in a stack: its namespaces, gateways, services and issuer host.

    Every ServiceAccount the program creates is here (a test compares this with the program's
    resource graph): SPIRE's (server with spire-controller-manager, agents, OIDC discovery
    provider, CSI driver) by their namespace, each gateway's (Envoy + OPA share its pod) by name.
    """
    from urllib.parse import urlparse

    from components.config import NAMESPACE

    cd = cfg.mesh.cluster_domain
    namespaces = {
        cfg.mesh.control_plane_namespace: PassportClaim(
            "the namespace of Linkerd's control plane", f"{config_file} {NAMESPACE}:mesh.controlPlaneNamespace"),
        cfg.spire.namespace: PassportClaim(
            "SPIRE's namespace (server, spire-controller-manager, agents, OIDC discovery provider, CSI driver)",
            f"{config_file} {NAMESPACE}:spire.namespace"),
    }
    accounts: dict[tuple[str, str], PassportClaim] = {}
    dns: dict[str, PassportClaim] = {}
    for s in services:
        ns = s.manifest.spec.namespace
        dns.setdefault(f"{s.name}.{ns}.svc.{cd}", PassportClaim(f"service {s.name!r}", s))
        dns.setdefault(s.name, PassportClaim(f"service {s.name!r}", s))
        if s.manifest.spec.gateway:
            gw = gateway_identity(s.name, ns, cfg.trust_domain, cd, cfg.mesh.control_plane_namespace)
            claim = PassportClaim(f"the Envoy + OPA gateway of service {s.name!r}", s)
            accounts.setdefault((ns, gw.name), claim)
            dns.setdefault(f"{gw.name}.{ns}.svc.{cd}", claim)
            dns.setdefault(gw.name, claim)
    zones = {f"{ns}.svc.{cd}": claim for ns, claim in namespaces.items()}
    issuer = (urlparse(cfg.jwt_issuer).hostname or "").lower()
    hosts = {issuer: PassportClaim("the SPIRE OIDC discovery provider's issuer host",
                                   f"{config_file} {NAMESPACE}:spire.jwtIssuer")} if issuer else {}
    return Reservations(namespaces, accounts, dns, zones, hosts)


def _where_service(s: SourcedService) -> str:
    return f"{s.file}:{s.line_of(('metadata', 'name'))} metadata.name"


def canonical_dns_name(name: str, cluster_domain: str, namespaces: Iterable[str] = ()) -> str:
    """One spelling per in-cluster name: ``a.ns``, ``a.ns.svc`` -> ``a.ns.svc.<cluster domain>``
    (``a.ns`` only when ``ns`` is a namespace of the fleet); anything else unchanged."""
    name = name.lower().rstrip(".")
    labels = name.split(".")
    if name.endswith(".svc") and len(labels) >= 3:
        return f"{name}.{cluster_domain}"
    if len(labels) == 2 and labels[1] in namespaces:
        return f"{name}.svc.{cluster_domain}"
    return name


def _reserved_dns(name: str, canonical: str, res: Reservations) -> PassportClaim | None:
    """Agent Passport's claim on a DNS name: a service or gateway (or a name below it), a name in
    one of its namespaces, the issuer host, or a bare service name."""
    if name.lower() in res.hosts:
        return res.hosts[name.lower()]
    labels = canonical.split(".")
    if len(labels) == 1:
        return res.dns_names.get(canonical)
    for k in range(len(labels)):
        suffix = ".".join(labels[k:])
        claim = res.dns_names.get(suffix) if "." in suffix else None
        claim = claim or res.dns_zones.get(suffix)
        if claim is not None:
            return claim
    return None


# SPIRE selectors of which a node or a workload has exactly one value: two entries that ask for
# different values of one of these can never match the same workload. Every other selector can
# hold several values at once (security groups, tags with other keys, supplementary groups), so
# it never keeps two entries apart.
EXCLUSIVE_NODE_SELECTORS = ("aws_iid:region", "aws_iid:az", "aws_iid:instance:id", "aws_iid:image:id",
                            "aws_iid:iamrole")
EXCLUSIVE_WORKLOAD_SELECTORS = ("unix:uid", "unix:user", "unix:gid", "unix:group", "unix:path", "unix:sha256",
                                "systemd:id", "systemd:fragment_path", "windows:user_name", "windows:user_sid",
                                "docker:image_id", "k8s:ns", "k8s:sa", "k8s:pod-uid", "k8s:pod-name",
                                "k8s:node-name")
WORKLOAD_ATTESTOR_OS = {"unix": "unix", "systemd": "unix", "docker": "unix", "k8s": "unix", "windows": "windows"}
"""Workload attestors run on one OS only: the OS of a workload is single-valued too."""


def exclusive_values(node_tags: Mapping[str, str], node_selectors: Iterable[str],
                     workload_selectors: Iterable[str]) -> dict[str, str] | None:
    """``{selector type: value}`` for the single-valued selectors of one static entry (node
    alias + workload entry); ``node:`` / ``workload:`` prefixed. None when the entry asks for two
    values of one of them (no workload can match it, so it collides with nothing)."""
    out: dict[str, str] = {}

    def put(key: str, value: str) -> bool:
        return out.setdefault(key, value) == value

    ok = all(put(f"node:aws_iid:tag:{k}", v) for k, v in node_tags.items())
    for side, selectors, exclusive in (("node", node_selectors, EXCLUSIVE_NODE_SELECTORS),
                                       ("workload", workload_selectors, EXCLUSIVE_WORKLOAD_SELECTORS)):
        for sel in selectors:
            if side == "workload" and sel.split(":", 1)[0] in WORKLOAD_ATTESTOR_OS:
                # a Windows process has no unix:* selectors and a Unix process no windows:* ones
                ok = put("workload:os", WORKLOAD_ATTESTOR_OS[sel.split(":", 1)[0]]) and ok
            kind = next((e for e in exclusive if sel.startswith(e + ":")), None)
            if kind is not None:
                value = sel[len(kind) + 1:]
                ok = put(f"{side}:{kind}", value.lower() if kind.startswith("windows:") else value) and ok
    return out if ok else None


def first_compatible(entries: Sequence[Mapping[str, str] | None]) -> dict[int, int]:
    """For each entry j, the first entry i < j that one workload can match together with it
    (no single-valued selector with two different values); entries that are None match nothing.

    Entries are split by the value of the selector type most of them share (entries without it
    could match any value, so they join every group), recursively: a fleet whose entries share
    a region, a tag key and a uid is split in linear time; only entries with nothing to tell them
    apart are compared pairwise — and every such pair is a collision.
    """
    best: dict[int, int] = {}
    _split([(i, dict(e)) for i, e in enumerate(entries) if e is not None], best)
    return best


def _split(items: list[tuple[int, dict[str, str]]], best: dict[int, int]) -> None:
    if len(items) < 2:
        return
    counts = Counter(k for _, e in items for k in e)
    shared = [k for k, n in counts.items() if n >= 2]
    if not shared:  # nothing tells any two apart: each collides with the group's first
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


def _static_entry(a: SourcedAgent, cfg: StackConfig) -> tuple[dict[str, str] | None, Loc] | None:
    """A VM / Windows host agent's single-valued selectors (node alias + workload entry) and the
    field to report; None for pods and join_token VMs (whose node alias the operator hands out
    per host, so no selector of another agent reaches them)."""
    p = a.manifest.spec.platform
    if p.vm is not None:
        if p.vm.attestation != "aws_iid" or p.vm.aws_region is None:
            return None
        return (exclusive_values(p.vm.aws_instance_tags, [f"aws_iid:region:{p.vm.aws_region}", *p.vm.node_selectors],
                                 p.vm.workload_selectors), ("spec", "platform", "vm"))
    if p.windows is not None and p.windows.pod is None:
        tags = p.windows.ssm_target_tags or {"agentpassport:host-group": p.windows.host_group}
        user = f"windows:user_name:{cfg.windows.netbios_domain}\\{p.windows.gmsa_account}$"
        return (exclusive_values(tags, [f"aws_iid:region:{cfg.aws.region}"], [user]), ("spec", "platform", "windows"))
    return None


def _proxy_entry(a: SourcedAgent) -> tuple[dict[str, str] | None, Loc] | None:
    """The single-valued selectors of an aws_iid VM agent's egress proxy entry, when it has one
    (http grants, and a proxy uid other than the agent's own selectors)."""
    vm = a.manifest.spec.platform.vm
    if vm is None or vm.attestation != "aws_iid" or vm.aws_region is None:
        return None
    if not any(g.http is not None for g in a.manifest.spec.grants):
        return None
    uid = vm.egress_proxy_uid or vm.agent_uid
    if uid is None or sorted(vm.workload_selectors) == [f"unix:uid:{uid}"]:
        return None
    return (exclusive_values(vm.aws_instance_tags, [f"aws_iid:region:{vm.aws_region}", *vm.node_selectors],
                             [f"unix:uid:{uid}"]), ("spec", "platform", "vm", "egressProxyUid"))


def _pod_account(a: SourcedAgent) -> tuple[tuple[str, str], Loc] | None:
    """(namespace, ServiceAccount) the agent's pods run as, and its field."""
    p = a.manifest.spec.platform
    if p.kubernetes is not None:
        return (p.kubernetes.namespace, p.kubernetes.service_account), ("spec", "platform", "kubernetes")
    if p.windows is not None and p.windows.pod is not None:
        return (p.windows.pod.namespace, p.windows.pod.service_account), ("spec", "platform", "windows", "pod")
    return None


def _claimed_path_problem(a: SourcedAgent, ident: AgentIdentity) -> Problem | None:
    """``/ns/<ns>/sa/<sa>`` is how Kubernetes workloads are named (SPIRE's convention, and the
    identity of every gateway and of SPIRE's own components). An agent may use such a path only
    for its own namespace and ServiceAccount, or a manifest could take over another workload's
    identity (e.g. a gateway's, which agents trust by its URI SAN). ``/spire/`` and ``/node/``
    are SPIRE's own IDs and the node aliases."""
    path = a.manifest.spec.identity.spiffe_path
    reserved = next((r for r in RESERVED_SPIFFE_PATHS if (ident.spiffe_path + "/").startswith(r)), None)
    if reserved is not None:
        return agent_problem(a, ("spec", "identity", "spiffePath"),
                        f"{ident.spiffe_path!r} is under {reserved.rstrip('/')}, which SPIRE and Agent Passport "
                        "reserve for SPIRE's own IDs and node aliases; choose another path")
    if path is None or not (path == "/ns" or path.startswith("/ns/")):
        return None
    own = (f"/ns/{ident.namespace}/sa/{ident.service_account}"
           if ident.namespace is not None and ident.service_account is not None else None)
    if path == own:
        return None
    allowed = f"its own {own}" if own else "no /ns/ path (it has no Kubernetes ServiceAccount)"
    return agent_problem(a, ("spec", "identity", "spiffePath"),
                    f"{path!r} names a Kubernetes workload's identity; this agent may use {allowed}. "
                    "Pick a path outside /ns/ (e.g. /agents/<name>) or omit spiffePath")


def identity_problems(cfg: StackConfig, config_file: str, services: Sequence[SourcedService],
                      agents: Sequence[tuple[SourcedAgent, AgentIdentity]]) -> list[Problem]:
    """Every way two agents, or an agent and Agent Passport itself, would end up as one identity.

    ``agents``: every agent of the stack's environment (active and suspended, every shard), in
    manifest order; a collision is reported on the later agent and names the earlier one.
    Linear in agents, grants and services.
    """
    res = reservations(cfg, services, config_file)
    out: list[Problem] = []
    by_id: dict[str, SourcedAgent] = {}
    by_account: dict[tuple[str, str], tuple[SourcedAgent, Loc]] = {}
    by_gmsa: dict[tuple[str, str], SourcedAgent] = {}
    by_dns: dict[str, tuple[SourcedAgent, Loc]] = {}
    statics: list[tuple[SourcedAgent, Loc]] = []
    entries: list[Mapping[str, str] | None] = []
    namespaces = {s.manifest.spec.namespace for s in services}
    namespaces.update(i.namespace for _, i in agents if i.namespace is not None)
    for a, ident in agents:
        claimed = _claimed_path_problem(a, ident)
        if claimed is not None:
            out.append(claimed)
        first = by_id.setdefault(ident.spiffe_id, a)
        if first is not a:
            out.append(agent_problem(
                a, ("spec", "identity"),
                f"SPIFFE ID {ident.spiffe_id} is already the identity of agent {first.name!r} "
                f"({first.file}); every agent needs its own (set spec.identity.spiffePath "
                "or give it its own ServiceAccount)"))
        pod = _pod_account(a)
        if pod is not None:
            (ns, sa), base = pod
            passport_claim = res.account(ns, sa)
            if passport_claim is not None:
                field = "namespace" if ns in res.namespaces else "serviceAccount"
                out.append(agent_problem(
                    a, (*base, field),
                    f"{ns}/{sa} is {'in ' if field == 'namespace' else 'the ServiceAccount of '}"
                    f"{passport_claim.what} ({passport_claim.where}): SPIRE and Linkerd would give this agent the "
                    "platform's identity; run the agent under its own ServiceAccount in its own namespace"))
            else:
                seen = by_account.setdefault((ns, sa), (a, base))
                if seen[0] is not a:
                    other, other_base = seen
                    out.append(agent_problem(
                        a, (*base, "serviceAccount"),
                        f"{ns}/{sa} is already the ServiceAccount of agent {other.name!r} "
                        f"({_where(other, (*other_base, 'serviceAccount'))}): its pods would receive both "
                        "agents' SVIDs whatever their pod labels, Linkerd would know both as one mesh identity, "
                        "and suspending one would leave its access to the other; give each agent its own "
                        "ServiceAccount"))
        windows = a.manifest.spec.platform.windows
        if windows is not None:
            domain = (windows.domain or cfg.windows.domain).lower()
            other_agent = by_gmsa.setdefault((domain, windows.gmsa_account.lower()), a)
            if other_agent is not a:
                gmsa_loc: Loc = ("spec", "platform", "windows", "gmsaAccount")
                out.append(agent_problem(
                    a, gmsa_loc,
                    f"gMSA {windows.gmsa_account!r} in {domain} is already the account of agent "
                    f"{other_agent.name!r} ({_where(other_agent, gmsa_loc)}): both agents would run as one Active "
                    "Directory identity; give each agent its own gMSA"))
        static = _static_entry(a, cfg)
        if static is not None:
            statics.append((a, static[1]))
            entries.append(static[0])
            proxy = _proxy_entry(a)
            if proxy is not None:  # the agent's egress proxy holds its identity too (components/render/egress.py)
                statics.append((a, proxy[1]))
                entries.append(proxy[0])
        for i, name in enumerate(a.manifest.spec.identity.dns_names):
            loc: Loc = ("spec", "identity", "dnsNames", i)
            canonical = canonical_dns_name(name, cfg.mesh.cluster_domain, namespaces)
            passport_claim = _reserved_dns(name, canonical, res)
            if passport_claim is not None:
                out.append(agent_problem(
                    a, loc,
                    f"{name!r} is a DNS name of {passport_claim.what} ({passport_claim.where}): a client checking "
                    "host names against the SPIRE bundle would accept this agent as it; claim only names the "
                    "agent itself serves"))
                continue
            seen_dns = by_dns.setdefault(canonical, (a, loc))
            if seen_dns[0] is not a:
                out.append(agent_problem(
                    a, loc,
                    f"{name!r} is already a DNS name of agent {seen_dns[0].name!r} "
                    f"({_where(*seen_dns)}): either could pass for the other; each DNS name belongs to one agent"))
    for j, i in sorted(first_compatible(entries).items()):
        (later, later_loc), (earlier, earlier_loc) = statics[j], statics[i]
        if later is earlier:
            continue  # an agent and its own egress proxy hold one identity on purpose
        out.append(agent_problem(
            later, later_loc,
            f"one host process can match both this agent's SPIRE selectors and those of agent {earlier.name!r} "
            f"({_where(earlier, earlier_loc)}): no single-valued selector (region, a tag key, unix:uid, "
            "windows:user_name, ...) differs, so that process would hold both identities and both agents' "
            "AWS roles; give the agent its own instance tag value or workload selector (e.g. another unix:uid)"))
    out.extend(egress_host_problems(cfg, agents))
    return out


# --------------------------------------------------------------------------- one egress proxy per host
#
# Every egress proxy (components/render/egress.py) listens on the same 127.0.0.1:<authz.egressPort>.
# On a host running two, the second cannot bind, and the second agent's client reaches the first
# agent's proxy, which presents the *first* agent's SVID to the gateway: one agent's calls leave
# with the other's identity. So an egress host runs exactly one proxied agent, across the whole
# environment (two shards' agents can share hosts).


def _egress_host(a: SourcedAgent, cfg: StackConfig) -> tuple[dict[str, str] | None, Loc, str] | None:
    """The single-valued facts of the hosts an active out-of-mesh agent with http grants runs its
    egress proxy on (OS, account, region, tags, exclusive node selectors), the field that selects
    them and its name; None for any other agent, and for join_token VMs (the operator hands each
    host its own token: nothing here says which hosts they are)."""
    m = a.manifest.spec
    if m.suspended or not any(g.http is not None for g in m.grants):
        return None
    p = m.platform
    if p.vm is not None:
        if p.vm.attestation != "aws_iid":
            return None
        facts = exclusive_values(p.vm.aws_instance_tags, [f"aws_iid:region:{p.vm.aws_region}", *p.vm.node_selectors],
                                 [])
        if facts is not None:
            facts = {**facts, "os": "linux", "account": p.vm.aws_account_id or ""}
        return facts, ("spec", "platform", "vm", "awsInstanceTags"), "awsInstanceTags"
    if p.windows is not None and p.windows.pod is None:
        tags = p.windows.ssm_target_tags or {"agentpassport:host-group": p.windows.host_group}
        facts = exclusive_values(tags, [f"aws_iid:region:{cfg.aws.region}"], [])
        if facts is not None:
            facts = {**facts, "os": "windows"}
        field = "ssmTargetTags" if p.windows.ssm_target_tags else "hostGroup"
        return facts, ("spec", "platform", "windows", field), field
    return None


def egress_host_problems(cfg: StackConfig, agents: Sequence[tuple[SourcedAgent, AgentIdentity]]) -> list[Problem]:
    """Two active out-of-mesh agents with http grants whose egress proxies one host could run:
    the same Windows ``hostGroup``, or host selectors (aws_iid tags with account, region and
    single-valued node selectors; Windows SSM target tags) with no single-valued key set to two
    different values: identical tag sets, one a subset of the other, or tags on different keys
    that one instance can carry together."""
    port = cfg.authz.egress_port
    hazard = (f"their egress proxies would both listen on 127.0.0.1:{port}, and one agent's calls would leave "
              "with the other's SPIFFE ID; an egress host runs exactly one proxied agent")
    kept = [(a, h) for a, _ in agents if (h := _egress_host(a, cfg)) is not None]
    out: list[Problem] = []
    groups: dict[str, SourcedAgent] = {}
    reported: set[int] = set()
    group_loc: Loc = ("spec", "platform", "windows", "hostGroup")
    for j, (a, _) in enumerate(kept):
        win = a.manifest.spec.platform.windows
        if win is None:
            continue
        first = groups.setdefault(win.host_group.lower(), a)
        if first is not a:
            reported.add(j)
            out.append(agent_problem(
                a, group_loc,
                f"agent {a.name!r} and agent {first.name!r} ({_where(first, group_loc)}) both have http grants "
                f"and run on host group {win.host_group!r}: {hazard}: give each its own host group"))
    for j, i in sorted(first_compatible([h[0] for _, h in kept]).items()):
        if j in reported:
            continue
        (a, (_, loc, field)), (first, (_, first_loc, _)) = kept[j], kept[i]
        out.append(agent_problem(
            a, loc,
            f"agent {a.name!r} and agent {first.name!r} ({_where(first, first_loc)}) both have http grants, and "
            f"one host can match both agents' {field}: {hazard}: give the two a {field} key with different "
            "values (e.g. agentpassport:role: <agent>)"))
    return out
