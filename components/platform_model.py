"""The resolved platform: one stack's config plus the manifests that live in its environment.

:func:`build_platform` runs every check that needs more than one manifest or the stack
(SPIFFE ID uniqueness, undeclared services and database clusters, TTLs above the stack's
limits, timezones) and reports all problems at once, before any resource is registered, so a
bad manifest never causes a partial deployment.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from components.config import StackConfig
from components.durations import seconds
from components.errors import ManifestError, Problem
from components.gcpause import gc_paused
from components.identity import AgentIdentity, GatewayIdentity, derive_identity, gateway_identity
from components.manifest.loader import ManifestSet, SourcedAgent, SourcedService
from components.manifest.models import AgentManifest, Grant
from components.shard import gatewayless_callers, in_stack

RESERVED_VAULT_PREFIXES = ("sys/", "auth/", "identity/", "cubbyhole/", "pki", "database/")


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

    def agent(self, name: str) -> ResolvedAgent | None:
        return next((a for a in self.agents if a.name == name), None)

    def service(self, name: str) -> SourcedService | None:
        return next((s for s in self.services if s.name == name), None)

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


def _claimed_path_problem(a: SourcedAgent, ident: AgentIdentity) -> Problem | None:
    """``/ns/<ns>/sa/<sa>`` is how Kubernetes workloads are named (SPIRE's convention, and the
    identity of every gateway and of SPIRE's own components). An agent may use such a path only
    for its own namespace and ServiceAccount, or a manifest could take over another workload's
    identity (e.g. a gateway's, which agents trust by its URI SAN)."""
    path = a.manifest.spec.identity.spiffe_path
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


def _agent_problems(a: SourcedAgent, cfg: StackConfig, services: dict[str, SourcedService]) -> list[Problem]:
    spec = a.manifest.spec
    lim = cfg.limits
    out: list[Problem] = []
    x509 = seconds(spec.identity.x509_svid_ttl)
    if x509 > seconds(lim.max_x509_svid_ttl):
        out.append(_problem(a, ("spec", "identity", "x509SvidTtl"),
                            f"{spec.identity.x509_svid_ttl} is above this stack's limit of {lim.max_x509_svid_ttl} "
                            f"(limits.maxX509SvidTtl in {cfg.environment}); shorten it"))
    if x509 * 6 > seconds(cfg.spire.ca_ttl):
        out.append(_problem(a, ("spec", "identity", "x509SvidTtl"),
                            f"{spec.identity.x509_svid_ttl} is above caTtl/6 ({cfg.spire.ca_ttl}/6): SPIRE could "
                            "not rotate its CA before the SVID expires"))
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


def build_platform(cfg: StackConfig, manifests: ManifestSet, stack: str, config_file: str) -> Platform:
    """Resolve identities for the stack's environment; raise ManifestError listing every problem."""
    with gc_paused():
        return _build_platform(cfg, manifests, stack, config_file)


def _build_platform(cfg: StackConfig, manifests: ManifestSet, stack: str, config_file: str) -> Platform:
    services = {s.name: s for s in manifests.services}
    resolved: list[ResolvedAgent] = []
    excluded: list[str] = []
    problems: list[Problem] = []
    for a in manifests.agents:
        if not in_stack(cfg, a.manifest):
            excluded.append(a.name)
            continue
        ident = derive_identity(a.manifest, cfg.trust_domain, cfg.mesh.cluster_domain, cfg.mesh.control_plane_namespace)
        problems.extend(_agent_problems(a, cfg, services))
        claimed = _claimed_path_problem(a, ident)
        if claimed is not None:
            problems.append(claimed)
        resolved.append(ResolvedAgent(a, ident))
    seen: dict[str, ResolvedAgent] = {}
    for r in resolved:
        first = seen.setdefault(r.identity.spiffe_id, r)
        if first is not r:
            problems.append(_problem(
                r.source, ("spec", "identity"),
                f"SPIFFE ID {r.identity.spiffe_id} is already the identity of agent {first.name!r} "
                f"({first.source.file}); every agent needs its own (set spec.identity.spiffePath "
                "or give it its own ServiceAccount)"))
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
