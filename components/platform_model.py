"""The resolved platform: one stack's config plus the manifests that live in its environment.

:func:`build_platform` runs every check that needs more than one manifest or the stack
(one identity per agent: SPIFFE IDs, attestation selectors, ServiceAccounts, gMSAs and DNS
names unique and clear of the platform's own; undeclared services and database clusters, TTLs
above the stack's limits, timezones) and reports all problems at once, before any resource is registered, so a
bad manifest never causes a partial deployment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from components.config import StackConfig
from components.config.spire import ca_rotation_problem
from components.durations import seconds
from components.errors import ManifestError, Problem
from components.gcpause import gc_paused
from components.identity import AgentIdentity, GatewayIdentity, derive_identity, gateway_identity
from components.manifest.loader import ManifestSet, SourcedAgent, SourcedService
from components.manifest.models import AgentManifest, Grant, HttpGrant
from components.shard import gatewayless_callers, in_environment, in_stack

RESERVED_VAULT_PREFIXES = ("sys/", "auth/", "identity/", "cubbyhole/", "pki", "database/")
RESERVED_SPIFFE_PATHS = ("/spire/", "/node/")
"""SPIFFE ID paths agents may not take: SPIRE's own IDs (server, agents) and our node aliases."""


@dataclass(frozen=True)
class ResolvedAgent:
    """An agent in this stack with its one identity."""

    source: SourcedAgent
    identity: AgentIdentity

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def manifest(self) -> AgentManifest:
        return self.source.manifest

    @property
    def suspended(self) -> bool:
        return self.manifest.spec.suspended

    @property
    def grants(self) -> list[Grant]:
        return list(self.manifest.spec.grants)

    def grants_of(self, kind: str) -> Iterator[tuple[int, Any]]:
        """(index, typed grant) for every grant of one kind, index as written in the manifest."""
        for i, g in enumerate(self.manifest.spec.grants):
            if g.kind == kind:
                yield i, getattr(g, kind)


@dataclass(frozen=True)
class Platform:
    """Everything the components need, validated."""

    stack: str
    config: StackConfig
    config_file: str
    agents: tuple[ResolvedAgent, ...]
    services: tuple[SourcedService, ...]
    excluded: tuple[str, ...] = field(default=())

    @cached_property
    def active_agents(self) -> tuple[ResolvedAgent, ...]:
        """Agents that get credentials (not suspended)."""
        return tuple(a for a in self.agents if not a.suspended)

    @cached_property
    def suspended_agents(self) -> tuple[ResolvedAgent, ...]:
        return tuple(a for a in self.agents if a.suspended)

    @cached_property
    def _agents_by_name(self) -> dict[str, ResolvedAgent]:
        return {a.name: a for a in self.agents}

    @cached_property
    def _services_by_name(self) -> dict[str, SourcedService]:
        return {s.name: s for s in self.services}

    def agent(self, name: str) -> ResolvedAgent | None:
        return self._agents_by_name.get(name)

    def service(self, name: str) -> SourcedService | None:
        return self._services_by_name.get(name)

    @cached_property
    def http_grants_by_service(self) -> dict[str, tuple[tuple[ResolvedAgent, int, HttpGrant], ...]]:
        """Service -> (active agent, grant index, grant) of every http grant on it, in agent
        order: renderers look a service's callers up instead of scanning every agent per service."""
        out: dict[str, list[tuple[ResolvedAgent, int, HttpGrant]]] = {}
        for a in self.active_agents:
            for i, g in a.grants_of("http"):
                out.setdefault(g.service, []).append((a, i, g))
        return {k: tuple(v) for k, v in out.items()}

    def gateway(self, service: SourcedService) -> GatewayIdentity:
        """The Envoy + OPA gateway in front of ``service`` (names, mesh and SPIFFE identity)."""
        mesh = self.config.mesh
        return gateway_identity(service.name, service.manifest.spec.namespace, self.config.trust_domain,
                                mesh.cluster_domain, mesh.control_plane_namespace)

    def agents_on(self, platform: str) -> tuple[ResolvedAgent, ...]:
        return tuple(a for a in self.active_agents if a.identity.platform == platform)


def _problem(agent: SourcedAgent, loc: tuple[str | int, ...], message: str) -> Problem:
    from components.manifest.loader import format_loc

    return Problem(agent.file, agent.line_of(loc), format_loc(loc), message)


def _valid_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


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
class PlatformClaim:
    """A name the platform itself uses (a workload, ServiceAccount, namespace or DNS name)."""

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
    """What agents may not take: the platform's namespaces, ServiceAccounts and DNS names."""

    namespaces: Mapping[str, PlatformClaim]
    """Namespaces only the platform runs in (every ServiceAccount there is the platform's)."""
    service_accounts: Mapping[tuple[str, str], PlatformClaim]
    """(namespace, ServiceAccount) of workloads the program creates outside those namespaces."""
    dns_names: Mapping[str, PlatformClaim]
    """Canonical DNS names of services and gateways (``<name>.<ns>.svc.<cluster domain>``) and
    bare service names; every name below them is theirs too."""
    dns_zones: Mapping[str, PlatformClaim]
    """``<ns>.svc.<cluster domain>`` of the platform's namespaces: every name below is the platform's."""
    hosts: Mapping[str, PlatformClaim]
    """Public host names the platform serves (the OIDC discovery provider's issuer)."""

    def account(self, namespace: str, service_account: str) -> PlatformClaim | None:
        return self.namespaces.get(namespace) or self.service_accounts.get((namespace, service_account))


def reservations(cfg: StackConfig, services: Iterable[SourcedService], config_file: str) -> Reservations:
    """The platform's own names in a stack: its namespaces, gateways, services and issuer host.

    Every ServiceAccount the program creates is here (a test compares this with the program's
    resource graph): SPIRE's (server with spire-controller-manager, agents, OIDC discovery
    provider, CSI driver) by their namespace, each gateway's (Envoy + OPA share its pod) by name.
    """
    from urllib.parse import urlparse

    from components.config import NAMESPACE

    cd = cfg.mesh.cluster_domain
    namespaces = {
        cfg.mesh.control_plane_namespace: PlatformClaim(
            "the namespace of Linkerd's control plane", f"{config_file} {NAMESPACE}:mesh.controlPlaneNamespace"),
        cfg.spire.namespace: PlatformClaim(
            "SPIRE's namespace (server, spire-controller-manager, agents, OIDC discovery provider, CSI driver)",
            f"{config_file} {NAMESPACE}:spire.namespace"),
    }
    accounts: dict[tuple[str, str], PlatformClaim] = {}
    dns: dict[str, PlatformClaim] = {}
    for s in services:
        ns = s.manifest.spec.namespace
        dns.setdefault(f"{s.name}.{ns}.svc.{cd}", PlatformClaim(f"service {s.name!r}", s))
        dns.setdefault(s.name, PlatformClaim(f"service {s.name!r}", s))
        if s.manifest.spec.gateway:
            gw = gateway_identity(s.name, ns, cfg.trust_domain, cd, cfg.mesh.control_plane_namespace)
            claim = PlatformClaim(f"the Envoy + OPA gateway of service {s.name!r}", s)
            accounts.setdefault((ns, gw.name), claim)
            dns.setdefault(f"{gw.name}.{ns}.svc.{cd}", claim)
            dns.setdefault(gw.name, claim)
    zones = {f"{ns}.svc.{cd}": claim for ns, claim in namespaces.items()}
    issuer = (urlparse(cfg.jwt_issuer).hostname or "").lower()
    hosts = {issuer: PlatformClaim("the SPIRE OIDC discovery provider's issuer host",
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


def _reserved_dns(name: str, canonical: str, res: Reservations) -> PlatformClaim | None:
    """The platform's claim on a DNS name: a service or gateway (or a name below it), a name in
    a platform namespace, the issuer host, or a bare service name."""
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
        return _problem(a, ("spec", "identity", "spiffePath"),
                        f"{ident.spiffe_path!r} is under {reserved.rstrip('/')}, which SPIRE and Agent Passport "
                        "reserve for SPIRE's own IDs and node aliases; choose another path")
    if path is None or not (path == "/ns" or path.startswith("/ns/")):
        return None
    own = (f"/ns/{ident.namespace}/sa/{ident.service_account}"
           if ident.namespace is not None and ident.service_account is not None else None)
    if path == own:
        return None
    allowed = f"its own {own}" if own else "no /ns/ path (it has no Kubernetes ServiceAccount)"
    return _problem(a, ("spec", "identity", "spiffePath"),
                    f"{path!r} names a Kubernetes workload's identity; this agent may use {allowed}. "
                    "Pick a path outside /ns/ (e.g. /agents/<name>) or omit spiffePath")


def identity_problems(cfg: StackConfig, config_file: str, services: Sequence[SourcedService],
                      agents: Sequence[tuple[SourcedAgent, AgentIdentity]]) -> list[Problem]:
    """Every way two agents, or an agent and the platform, would end up as one identity.

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
            out.append(_problem(
                a, ("spec", "identity"),
                f"SPIFFE ID {ident.spiffe_id} is already the identity of agent {first.name!r} "
                f"({first.file}); every agent needs its own (set spec.identity.spiffePath "
                "or give it its own ServiceAccount)"))
        pod = _pod_account(a)
        if pod is not None:
            (ns, sa), base = pod
            platform_claim = res.account(ns, sa)
            if platform_claim is not None:
                field = "namespace" if ns in res.namespaces else "serviceAccount"
                out.append(_problem(
                    a, (*base, field),
                    f"{ns}/{sa} is {'in ' if field == 'namespace' else 'the ServiceAccount of '}"
                    f"{platform_claim.what} ({platform_claim.where}): SPIRE and Linkerd would give this agent the "
                    "platform's identity; run the agent under its own ServiceAccount in its own namespace"))
            else:
                seen = by_account.setdefault((ns, sa), (a, base))
                if seen[0] is not a:
                    other, other_base = seen
                    out.append(_problem(
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
                out.append(_problem(
                    a, gmsa_loc,
                    f"gMSA {windows.gmsa_account!r} in {domain} is already the account of agent "
                    f"{other_agent.name!r} ({_where(other_agent, gmsa_loc)}): both agents would run as one Active "
                    "Directory identity; give each agent its own gMSA"))
        static = _static_entry(a, cfg)
        if static is not None:
            statics.append((a, static[1]))
            entries.append(static[0])
        for i, name in enumerate(a.manifest.spec.identity.dns_names):
            loc: Loc = ("spec", "identity", "dnsNames", i)
            canonical = canonical_dns_name(name, cfg.mesh.cluster_domain, namespaces)
            platform_claim = _reserved_dns(name, canonical, res)
            if platform_claim is not None:
                out.append(_problem(
                    a, loc,
                    f"{name!r} is a DNS name of {platform_claim.what} ({platform_claim.where}): a client checking "
                    "host names against the SPIRE bundle would accept this agent as it; claim only names the "
                    "agent itself serves"))
                continue
            seen_dns = by_dns.setdefault(canonical, (a, loc))
            if seen_dns[0] is not a:
                out.append(_problem(
                    a, loc,
                    f"{name!r} is already a DNS name of agent {seen_dns[0].name!r} "
                    f"({_where(*seen_dns)}): either could pass for the other; each DNS name belongs to one agent"))
    for j, i in sorted(first_compatible(entries).items()):
        (later, later_loc), (earlier, earlier_loc) = statics[j], statics[i]
        out.append(_problem(
            later, later_loc,
            f"one host process can match both this agent's SPIRE selectors and those of agent {earlier.name!r} "
            f"({_where(earlier, earlier_loc)}): no single-valued selector (region, a tag key, unix:uid, "
            "windows:user_name, ...) differs, so that process would hold both identities and both agents' "
            "AWS roles; give the agent its own instance tag value or workload selector (e.g. another unix:uid)"))
    return out


def _agent_problems(a: SourcedAgent, cfg: StackConfig, services: dict[str, SourcedService]) -> list[Problem]:
    spec = a.manifest.spec
    lim = cfg.limits
    out: list[Problem] = []
    x509 = seconds(spec.identity.x509_svid_ttl)
    if x509 > seconds(lim.max_x509_svid_ttl):
        out.append(_problem(a, ("spec", "identity", "x509SvidTtl"),
                            f"{spec.identity.x509_svid_ttl} is above this stack's limit of {lim.max_x509_svid_ttl} "
                            f"(limits.maxX509SvidTtl in {cfg.environment}); shorten it"))
    rotation = ca_rotation_problem(spec.identity.x509_svid_ttl, cfg.spire.ca_ttl)
    if rotation is not None:
        out.append(_problem(a, ("spec", "identity", "x509SvidTtl"), rotation))
    if seconds(spec.identity.jwt_svid_ttl) > seconds(lim.max_jwt_svid_ttl):
        out.append(_problem(a, ("spec", "identity", "jwtSvidTtl"),
                            f"{spec.identity.jwt_svid_ttl} is above this stack's limit of {lim.max_jwt_svid_ttl}"))
    for i, g in enumerate(spec.grants):
        base: tuple[str | int, ...] = ("spec", "grants", i)
        if g.http is not None:
            svc = services.get(g.http.service)
            if svc is None:
                known = ", ".join(sorted(services)) or "none declared"
                out.append(_problem(a, (*base, "http", "service"),
                                    f"service {g.http.service!r} is not declared; add a Service manifest "
                                    f"(declared: {known})"))
            elif not svc.manifest.spec.gateway and (g.http.headers or g.http.time_windows):
                out.append(_problem(a, (*base, "http"),
                                    f"service {svc.name!r} has no gateway (spec.gateway: false), so headers "
                                    "and time windows cannot be enforced; enable its gateway or drop them"))
            for j, w in enumerate(g.http.time_windows):
                if not _valid_timezone(w.timezone):
                    out.append(_problem(a, (*base, "http", "timeWindows", j, "timezone"),
                                        f"{w.timezone!r} is not an IANA timezone (e.g. Europe/London, UTC)"))
        if g.database is not None:
            db = cfg.vault.databases.get(g.database.cluster)
            if db is None:
                known = ", ".join(sorted(cfg.vault.databases)) or "none"
                out.append(_problem(a, (*base, "database", "cluster"),
                                    f"database cluster {g.database.cluster!r} is not configured in stack "
                                    f"{cfg.environment} (vault.databases: {known})"))
            elif db.engine != g.database.engine:
                out.append(_problem(a, (*base, "database", "engine"),
                                    f"cluster {g.database.cluster!r} runs {db.engine}, not {g.database.engine}"))
            if seconds(g.database.max_ttl) > seconds(lim.max_db_credential_ttl):
                out.append(_problem(a, (*base, "database", "maxTtl"),
                                    f"{g.database.max_ttl} is above this stack's limit of {lim.max_db_credential_ttl}"))
        if g.aws is not None and seconds(g.aws.session_duration) > seconds(lim.max_aws_session_duration):
            out.append(_problem(a, (*base, "aws", "sessionDuration"),
                                f"{g.aws.session_duration} is above this stack's limit of "
                                f"{lim.max_aws_session_duration}"))
        if g.vault is not None:
            reserved = next((p for p in RESERVED_VAULT_PREFIXES if g.vault.path.startswith(p)), None)
            mounts = {f"db-{n}/" for n in cfg.vault.databases}
            reserved = reserved or next((m for m in mounts if g.vault.path.startswith(m)), None)
            if reserved is not None:
                out.append(_problem(a, (*base, "vault", "path"),
                                    f"{g.vault.path!r} is under {reserved!r}, which Agent Passport manages; "
                                    "database credentials come from database grants"))
    if spec.platform.windows is not None and not cfg.subsystems.windows:
        out.append(_problem(a, ("spec", "platform", "windows"),
                            f"stack {cfg.environment} has subsystems.windows off; enable it or remove "
                            f"{cfg.environment} from spec.environments"))
    return out


def _split_route_problems(cfg: StackConfig, manifests: ManifestSet, here: set[str]) -> list[Problem]:
    """A shard must hold every caller of a gateway-less service it calls (Linkerd applies one
    route per request, so one service's routes cannot be split across stacks)."""
    gatewayless = {s.name for s in manifests.services if not s.manifest.spec.gateway}
    out: list[Problem] = []
    for service, callers in gatewayless_callers(cfg, (a.manifest for a in manifests.agents), gatewayless).items():
        inside = [c for c in callers if c in here]
        outside = [c for c in callers if c not in here]
        if inside and outside:
            agent = next(a for a in manifests.agents if a.name == inside[0])
            i = next(i for i, g in enumerate(agent.manifest.spec.grants) if g.http and g.http.service == service)
            out.append(_problem(agent, ("spec", "grants", i, "http", "service"),
                                f"service {service!r} has no gateway, and its callers {', '.join(outside)} are not "
                                f"in this shard: Linkerd applies one route per request, so its routes cannot be "
                                "split across stacks; select every caller into one shard or give the service a "
                                "gateway (spec.gateway: true)"))
    return out


def load_platform(
    stack: str,
    paths: Sequence[str | Path] | None = None,
    *,
    root: Path | None = None,
    values: Mapping[str, Any] | None = None,
    manifests: Callable[[Sequence[str | Path]], ManifestSet] | None = None,
) -> Platform:
    """The one way to load a stack's :class:`Platform` (the CLI, ``passport check`` and ``diff``,
    the engine's preflight and the Pulumi program all come here).

    The configuration is the stack file (``stacks/Pulumi.<stack>.yaml`` under ``root``), or
    ``values`` as the Pulumi engine hands them to the program; the manifests are ``paths``
    (default: the stack's ``agentsDir`` under ``root``), loaded with ``manifests`` (default
    :func:`~components.manifest.loader.load_manifests`; ``passport validate`` shares one load
    between stacks). The stack file's and the manifests' problems are raised together; then the
    rules across manifests (:func:`build_platform`). The subsystems' own rules are
    :func:`components.compile.compile`'s.
    """
    from components.config import build_stack_config, load_stack_config, stack_file
    from components.errors import ConfigError, input_error
    from components.manifest.loader import load_manifests

    config_file = str(stack_file(stack))
    problems: list[Problem] = []
    cfg: StackConfig | None = None
    try:
        cfg = build_stack_config(values, config_file) if values is not None else load_stack_config(stack, root)
    except ConfigError as exc:
        problems.extend(exc.problems)
    where: list[str | Path] = list(paths) if paths else []
    if not where and cfg is not None:
        where = [root / cfg.agents_dir if root is not None else cfg.agents_dir]
    loaded: ManifestSet | None = None
    if where:
        try:
            loaded = (manifests or load_manifests)(where)
        except ManifestError as exc:
            problems.extend(exc.problems)
    if problems or cfg is None or loaded is None:
        raise input_error(problems, [config_file])
    return build_platform(cfg, loaded, stack, config_file)


def build_platform(cfg: StackConfig, manifests: ManifestSet, stack: str, config_file: str) -> Platform:
    """Resolve identities for the stack's environment; raise ManifestError listing every problem."""
    with gc_paused():
        return _build_platform(cfg, manifests, stack, config_file)


def _build_platform(cfg: StackConfig, manifests: ManifestSet, stack: str, config_file: str) -> Platform:
    services = {s.name: s for s in manifests.services}
    resolved: list[ResolvedAgent] = []
    environment: list[tuple[SourcedAgent, AgentIdentity]] = []
    excluded: list[str] = []
    problems: list[Problem] = []
    for a in manifests.agents:
        if not in_environment(cfg, a.manifest):
            excluded.append(a.name)
            continue
        ident = derive_identity(a.manifest, cfg.trust_domain, cfg.mesh.cluster_domain, cfg.mesh.control_plane_namespace)
        environment.append((a, ident))
        if not in_stack(cfg, a.manifest):
            excluded.append(a.name)
            continue
        problems.extend(_agent_problems(a, cfg, services))
        resolved.append(ResolvedAgent(a, ident))
    # Identity rules see the whole environment: a twin in another shard is still a twin.
    problems.extend(identity_problems(cfg, config_file, manifests.services, environment))
    if cfg.shard.role == "shard" and cfg.subsystems.mesh:
        problems.extend(_split_route_problems(cfg, manifests, {r.name for r in resolved}))
    if problems:
        raise ManifestError(problems)
    resolved.sort(key=lambda r: r.name)
    return Platform(
        stack=stack,
        config=cfg,
        config_file=config_file,
        agents=tuple(resolved),
        services=tuple(sorted(manifests.services, key=lambda s: s.name)),
        excluded=tuple(sorted(excluded)),
    )


def grant_summary(grant: Grant) -> dict[str, Any]:
    """A compact, JSON-friendly description of one grant (bill of materials, explain, diff)."""
    if grant.http is not None:
        h = grant.http
        return {
            "kind": "http",
            "service": h.service,
            "methods": list(h.methods),
            "paths": [f"{p.kind}:{p.value}" for p in h.paths],
            "headers": dict(sorted(h.headers.items())),
            "timeWindows": [f"{','.join(w.days)} {w.start}-{w.end} {w.timezone}" for w in h.time_windows],
        }
    if grant.database is not None:
        d = grant.database
        return {
            "kind": "database",
            "cluster": d.cluster,
            "engine": d.engine,
            "database": d.database,
            "privileges": [
                f"{','.join(p.allow)} on {p.schema_}.{'{' + ','.join(p.tables) + '}' if p.tables else '*'}"
                for p in d.privileges
            ],
            "ttl": d.ttl,
            "maxTtl": d.max_ttl,
        }
    if grant.aws is not None:
        w = grant.aws
        return {
            "kind": "aws",
            "role": w.role,
            "managedPolicyArns": list(w.managed_policy_arns),
            "actions": sorted({a for s in w.statements for a in s.actions}),
            "sessionDuration": w.session_duration,
        }
    v = grant.vault
    assert v is not None
    return {"kind": "vault", "path": v.path, "capabilities": list(v.capabilities)}


def subsystems_touched(agent: ResolvedAgent, cfg: StackConfig) -> list[str]:
    """Which deployed subsystems carry part of this agent's identity or grants."""
    on = cfg.subsystems
    kinds = {g.kind for g in agent.grants}
    touched = []
    if on.spire:
        touched.append("spire")
    if on.mesh and agent.identity.linkerd_identity and "http" in kinds:
        touched.append("mesh")
    if on.authz and "http" in kinds:
        touched.append("authz")
    if on.vault and (kinds & {"database", "vault"}):
        touched.append("vault")
    if on.windows and agent.identity.platform == "windows":
        touched.append("windows")
    if on.aws and "aws" in kinds:
        touched.append("aws")
    return touched


def identity_bom(platform: Platform) -> dict[str, Any]:
    """Identity bill of materials: per agent, the identity and everything it may reach."""
    agents = {}
    # A base stack deploys no agent's identity or grants (its shards do): it lists none.
    for a in () if platform.config.shard.role == "base" else platform.agents:
        spec = a.manifest.spec
        agents[a.name] = {
            "spiffeId": a.identity.spiffe_id,
            "team": a.identity.team,
            "owner": a.manifest.metadata.owner,
            "platform": a.identity.platform,
            "manifest": a.source.file,
            "suspended": spec.suspended,
            **({"suspendedReason": spec.suspended_reason} if spec.suspended else {}),
            "x509SvidTtl": a.identity.x509_svid_ttl,
            "jwtSvidTtl": a.identity.jwt_svid_ttl,
            "jwtAudiences": list(a.identity.jwt_audiences),
            "meshIdentity": a.identity.linkerd_identity,
            "grants": [grant_summary(g) for g in a.grants],
            "subsystems": [] if spec.suspended else subsystems_touched(a, platform.config),
        }
    bom: dict[str, Any] = {
        "stack": platform.stack,
        "environment": platform.config.environment,
        "trustDomain": platform.config.trust_domain,
        "agents": agents,
    }
    shard = platform.config.shard
    if shard.role == "base":
        bom["shard"] = {"role": "base", "shards": list(shard.shards), "fleetAgents": len(platform.agents)}
    elif shard.role == "shard":
        bom["shard"] = {"role": "shard", "baseStack": shard.base_stack}
    return bom
