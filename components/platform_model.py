"""The platform model: one stack's :class:`Platform` (its config plus the manifests in its scope).

:func:`load_platform` is the one way to load it; :func:`build_platform` runs every check that
needs more than one manifest or the stack (one identity per agent, :mod:`components.collisions`:
SPIFFE IDs, attestation selectors, ServiceAccounts, gMSAs and DNS names unique and clear of Agent
Passport's own; undeclared services and database clusters, TTLs above the stack's limits,
timezones) and reports all problems at once, before any resource is registered, so a bad manifest
never causes a partial deployment.

What "platform" names, one thing each:

* :class:`Platform` — one stack's validated inputs: its config, the agents it deploys, the
  services (``platform`` is the usual variable name);
* an agent's *platform* — where it runs: ``kubernetes``, ``vm`` or ``windows`` (the manifest's
  ``spec.platform``, :attr:`components.identity.AgentIdentity.platform`, ``platform`` in the
  identity BOM, :meth:`Platform.agents_on`);
* Agent Passport itself — the workloads, namespaces and names it runs for everyone (SPIRE, the
  OIDC provider, gateways) are *Agent Passport's own* (:class:`components.collisions.PassportClaim`,
  :func:`components.render.spire.passport_registrations`); its root Pulumi component is
  :class:`components.platform.AgentPassport` (a module name kept from before this glossary:
  code outside this package reads that file by path).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from components.collisions import agent_problem, identity_problems
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



def _valid_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True



def _agent_problems(a: SourcedAgent, cfg: StackConfig, services: dict[str, SourcedService]) -> list[Problem]:
    spec = a.manifest.spec
    lim = cfg.limits
    out: list[Problem] = []
    x509 = seconds(spec.identity.x509_svid_ttl)
    if x509 > seconds(lim.max_x509_svid_ttl):
        out.append(agent_problem(a, ("spec", "identity", "x509SvidTtl"),
                            f"{spec.identity.x509_svid_ttl} is above this stack's limit of {lim.max_x509_svid_ttl} "
                            f"(limits.maxX509SvidTtl in {cfg.environment}); shorten it"))
    rotation = ca_rotation_problem(spec.identity.x509_svid_ttl, cfg.spire.ca_ttl)
    if rotation is not None:
        out.append(agent_problem(a, ("spec", "identity", "x509SvidTtl"), rotation))
    if seconds(spec.identity.jwt_svid_ttl) > seconds(lim.max_jwt_svid_ttl):
        out.append(agent_problem(a, ("spec", "identity", "jwtSvidTtl"),
                            f"{spec.identity.jwt_svid_ttl} is above this stack's limit of {lim.max_jwt_svid_ttl}"))
    for i, g in enumerate(spec.grants):
        base: tuple[str | int, ...] = ("spec", "grants", i)
        if g.http is not None:
            svc = services.get(g.http.service)
            if svc is None:
                known = ", ".join(sorted(services)) or "none declared"
                out.append(agent_problem(a, (*base, "http", "service"),
                                    f"service {g.http.service!r} is not declared; add a Service manifest "
                                    f"(declared: {known})"))
            elif not svc.manifest.spec.gateway and (g.http.headers or g.http.time_windows):
                out.append(agent_problem(a, (*base, "http"),
                                    f"service {svc.name!r} has no gateway (spec.gateway: false), so headers "
                                    "and time windows cannot be enforced; enable its gateway or drop them"))
            for j, w in enumerate(g.http.time_windows):
                if not _valid_timezone(w.timezone):
                    out.append(agent_problem(a, (*base, "http", "timeWindows", j, "timezone"),
                                        f"{w.timezone!r} is not an IANA timezone (e.g. Europe/London, UTC)"))
        if g.database is not None:
            db = cfg.vault.databases.get(g.database.cluster)
            if db is None:
                known = ", ".join(sorted(cfg.vault.databases)) or "none"
                out.append(agent_problem(a, (*base, "database", "cluster"),
                                    f"database cluster {g.database.cluster!r} is not configured in stack "
                                    f"{cfg.environment} (vault.databases: {known})"))
            elif db.engine != g.database.engine:
                out.append(agent_problem(a, (*base, "database", "engine"),
                                    f"cluster {g.database.cluster!r} runs {db.engine}, not {g.database.engine}"))
            if seconds(g.database.max_ttl) > seconds(lim.max_db_credential_ttl):
                out.append(agent_problem(a, (*base, "database", "maxTtl"),
                                    f"{g.database.max_ttl} is above this stack's limit of {lim.max_db_credential_ttl}"))
        if g.aws is not None and seconds(g.aws.session_duration) > seconds(lim.max_aws_session_duration):
            out.append(agent_problem(a, (*base, "aws", "sessionDuration"),
                                f"{g.aws.session_duration} is above this stack's limit of "
                                f"{lim.max_aws_session_duration}"))
        if g.vault is not None:
            reserved = next((p for p in RESERVED_VAULT_PREFIXES if g.vault.path.startswith(p)), None)
            mounts = {f"db-{n}/" for n in cfg.vault.databases}
            reserved = reserved or next((m for m in mounts if g.vault.path.startswith(m)), None)
            if reserved is not None:
                out.append(agent_problem(a, (*base, "vault", "path"),
                                    f"{g.vault.path!r} is under {reserved!r}, which Agent Passport manages; "
                                    "database credentials come from database grants"))
    if spec.platform.windows is not None and not cfg.subsystems.windows:
        out.append(agent_problem(a, ("spec", "platform", "windows"),
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
            out.append(agent_problem(agent, ("spec", "grants", i, "http", "service"),
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
