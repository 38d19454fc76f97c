"""Linkerd, the pure half: namespaces, policy resources and the identity certificate profile.

Nothing here imports Pulumi. :func:`mesh_plan` turns the platform into the Kubernetes objects of
every meshed namespace (Namespace + ``policy.linkerd.io`` resources, as native camelCase dicts);
:func:`linkerd_identity_profile` fixes the trust anchor and issuer certificates (ECDSA P-256,
lifetimes, path lengths) so tests can build the same chain with ``cryptography``. The component
module :mod:`components.mesh` registers exactly these dicts.

Route grouping (services without a gateway). Linkerd's proxy picks, per request, the one route
match with the longest matching path (exact and prefix matches score by length; ties go to the
older route), then applies only that route's AuthorizationPolicies. Routes therefore cannot
simply be "one per grant": a request of agent A may land on agent B's more specific route. So
every distinct match (method, exact|prefix path) is rendered exactly once, and it authorizes
every agent whose grant *covers* it (same method; an equal exact path, or a prefix that contains
it on a segment boundary). Matches authorizing the same set of agents share one HTTPRoute +
AuthorizationPolicy + MeshTLSAuthentication. Because prefix regions nest, the winning match of
any request is always covered by the grant that allowed it; nothing is ever over-granted.

The package (everything is re-exported here): :mod:`.names` (API groups, annotations, labels,
object names), :mod:`.identity` (the trust anchor + issuer profile, its problems, and the objects
that hand the certificates to Linkerd), :mod:`.policy` (namespaces, route matches and the
``policy.linkerd.io`` objects), and this module: route grouping, the validated
:class:`MeshPlan` (:func:`compile_mesh`) and the artifacts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from components.errors import ManifestError, Problem, input_error
from components.manifest.loader import SourcedService
from components.platform_model import Platform, ResolvedAgent
from components.render.mesh.identity import (
    CA_USES,
    Custody,
    LinkerdIdentityProfile,
    V,
    _identity_profile,
    anchor_custody,
    cert_manager_identity_objects,
    control_plane_namespace,
    issuer_secret,
    linkerd_identity_problems,
    linkerd_identity_profile,
    trust_bundle,
    trust_roots_configmap,
)
from components.render.mesh.names import (
    AUTHORIZATION_POLICY_API,
    DEFAULT_INBOUND_POLICY_ANNOTATION,
    GATEWAY_PROXY_PROTOCOL,
    HTTPROUTE_API,
    INJECT_ANNOTATION,
    ISSUER_SECRET,
    MAX_MATCHES_PER_RULE,
    MAX_RULES_PER_ROUTE,
    MESH_TLS_AUTHENTICATION_API,
    POLICY_GROUP,
    PROXY_PROTOCOLS,
    SERVER_API,
    TRUST_ROOTS_CONFIGMAP,
    TRUST_ROOTS_KEY,
)
from components.render.mesh.policy import (
    RouteMatch,
    _digest,
    authorization_policy,
    grant_matches,
    http_route,
    mesh_tls_authentication,
    namespace_object,
    network_authentication,
    server,
)
from components.shard import Scope, deploys_agents, deploys_shared, stack_scope

if TYPE_CHECKING:
    from components.render.artifacts import Artifact


ANY_NETWORK = ("0.0.0.0/0", "::/0")
"""Callers outside the mesh that declare no sourceNetworks may connect from anywhere (mTLS still applies)."""

# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Caller:
    """One http grant of one agent in the stack."""

    agent: ResolvedAgent
    index: int
    matches: tuple[RouteMatch, ...]


@dataclass(frozen=True)
class RouteGroup:
    """Matches of one gateway-less service that authorize the same agents."""

    name: str
    """HTTPRoute and AuthorizationPolicy name."""
    authn: str
    """MeshTLSAuthentication name (parts of a group too large for one route share the first's)."""
    agents: tuple[str, ...]
    identities: tuple[str, ...]
    matches: tuple[RouteMatch, ...]

    @property
    def owner(self) -> str | None:
        """The one agent this group serves, if only one (labels it for per-agent attribution)."""
        return self.agents[0] if len(self.agents) == 1 else None


@dataclass(frozen=True)
class NamespacePlan:
    """Everything Linkerd needs in one namespace."""

    namespace: str
    default_inbound_policy: str
    agents: tuple[str, ...]
    """Meshed agents whose pods run here (active and suspended: suspension revokes, never unmeshes)."""
    services: tuple[str, ...]
    """Services called from this stack whose pods run here."""
    objects: tuple[dict[str, Any], ...]
    """Policy objects in this namespace (not the Namespace itself)."""

    @property
    def namespace_object(self) -> dict[str, Any]:
        return namespace_object(self.namespace, self.default_inbound_policy)


@dataclass(frozen=True)
class MeshPlan:
    """Linkerd's part of a stack, validated: the meshed namespaces and their policy objects, and
    (:func:`compile_mesh`) the identity profile, or a shard's own policy objects."""

    namespaces: tuple[NamespacePlan, ...]
    warnings: tuple[str, ...] = field(default=())
    identity: LinkerdIdentityProfile | None = None
    """The trust anchor + issuer profile (stacks that deploy the shared pieces; None in a shard)."""
    shard_objects: tuple[dict[str, Any], ...] = ()
    """A shard's policy objects (:func:`shard_objects`), in the base stack's namespaces."""

    def objects(self) -> list[dict[str, Any]]:
        """Every namespace and policy object, in a stable order."""
        out: list[dict[str, Any]] = []
        for ns in self.namespaces:
            out.append(ns.namespace_object)
            out.extend(ns.objects)
        return out


def _callers(agents: Iterable[ResolvedAgent]) -> dict[str, list[Caller]]:
    out: dict[str, list[Caller]] = defaultdict(list)
    for a in agents:
        for i, grant in a.grants_of("http"):
            matches = grant_matches(grant.methods, [(p.kind, p.value) for p in grant.paths])
            out[grant.service].append(Caller(a, i, tuple(matches)))
    return out


def _covering(atom: RouteMatch) -> list[RouteMatch]:
    """Every match that covers ``atom`` (``m.covers(atom)``), listed directly: itself and the
    prefixes of the same method on each of its segment boundaries, up to '/'."""
    target = atom.path.rstrip("/") if atom.kind == "exact" else atom.path
    out = [atom, RouteMatch(atom.method, "prefix", "/")]
    if target not in ("", "/"):
        out.append(RouteMatch(atom.method, "prefix", target))
        out.extend(RouteMatch(atom.method, "prefix", target[:i]) for i, ch in enumerate(target) if ch == "/" and i)
    return out


def authorized_agents(callers: Sequence[Caller]) -> dict[RouteMatch, tuple[str, ...]]:
    """Each distinct match of the callers -> the agents whose grants cover it.

    Indexed by match, so the cost is (matches x path depth), not (matches x callers): a stack
    with thousands of agents on one service stays fast.
    """
    holders: dict[RouteMatch, set[str]] = defaultdict(set)
    for c in callers:
        for m in c.matches:
            holders[m].add(c.agent.name)
    return {atom: tuple(sorted(set().union(*(holders.get(m, set()) for m in _covering(atom)))))
            for atom in sorted(holders)}


def route_groups(service: str, callers: Sequence[Caller], shard: str | None = None) -> list[RouteGroup]:
    """Distinct matches grouped by the set of agents each authorizes (see module docstring);
    a shard stack's names carry its name (``<service>-<shard>-...``)."""
    identity_of: dict[str, str] = {}
    for c in callers:
        ident = c.agent.identity.linkerd_identity
        if ident is None:  # mesh_problems refuses these before any plan is built
            raise ValueError(f"agent {c.agent.name} has no Linkerd identity")
        identity_of[c.agent.name] = ident
    by_agents: dict[tuple[str, ...], list[RouteMatch]] = defaultdict(list)
    for atom, agents in authorized_agents(callers).items():
        by_agents[agents].append(atom)
    groups: list[RouteGroup] = []
    limit = MAX_MATCHES_PER_RULE * MAX_RULES_PER_ROUTE
    for agents, matches in sorted(by_agents.items()):
        stem = f"{service}-{shard}" if shard else service
        base = f"{stem}-{agents[0]}" if len(agents) == 1 else f"{stem}-shared-{_digest(agents)}"
        idents = tuple(sorted({identity_of[a] for a in agents}))
        for part, start in enumerate(range(0, len(matches), limit)):
            name = base if part == 0 else f"{base}-{part + 1}"
            groups.append(RouteGroup(name, base, agents, idents, tuple(matches[start:start + limit])))
    return groups


def tie_warnings(service: str, callers: Sequence[Caller]) -> list[str]:
    """Exact and prefix matches of equal path: Linkerd scores them alike and the older route wins."""
    atoms = {m for c in callers for m in c.matches}
    out = []
    for m in sorted(atoms):
        if m.kind == "exact" and RouteMatch.of(m.method, "prefix", m.path) in atoms:
            out.append(f"service {service!r}: grants hold both exact and prefix {m.path!r} for {m.method}; "
                       "Linkerd scores them alike, so a request for exactly that path may be denied to agents "
                       "holding only the exact match (never over-granted). Give the service a gateway or "
                       "align the grants.")
    return out


def service_objects(platform: Platform, svc: SourcedService, callers: Sequence[Caller],
                    scope: Scope = "all") -> list[dict[str, Any]]:
    """Linkerd objects protecting one called service; only active callers are authorized.

    ``scope`` ``shared`` (a base stack) keeps the Servers and the gateway's own authorization;
    ``agents`` (a shard) keeps the callers' routes, authentications and policies, named with
    the shard's stack name so shards never collide; ``all`` keeps both.
    """
    spec = svc.manifest.spec
    ns, name = spec.namespace, svc.name
    # Callers outside the mesh (VMs, Windows hosts) reach a service only through its gateway, with
    # their egress proxy (components.render.egress, which refuses their grants on gateway-less services).
    active = [c for c in callers if not c.agent.suspended and c.agent.identity.linkerd_identity is not None]
    outside = [c for c in callers if not c.agent.suspended and c.agent.identity.linkerd_identity is None]
    shard = platform.stack if scope == "agents" else None
    backend = server(name, ns, name, spec.pod_selector, spec.port, PROXY_PROTOCOLS[spec.protocol])
    if not spec.gateway:
        out = [backend] if deploys_shared(scope) else []
        for g in route_groups(name, active, shard) if deploys_agents(scope) else ():
            out.append(http_route(g.name, ns, name, g.owner, name, g.matches))
            if g.authn == g.name:
                out.append(mesh_tls_authentication(g.authn, ns, name, g.owner, g.identities))
            out.append(authorization_policy(g.name, ns, name, g.owner, "HTTPRoute", g.name, g.authn))
        return out
    gw = platform.gateway(svc)
    out = [
        server(gw.name, ns, name, gw.pod_labels, platform.config.authz.gateway_port, GATEWAY_PROXY_PROTOCOL),
        backend,
        mesh_tls_authentication(f"{name}-gateway", ns, name, None, [gw.linkerd_identity]),
        authorization_policy(f"{name}-gateway", ns, name, None, "Server", name, f"{name}-gateway"),
    ] if deploys_shared(scope) else []
    agents = sorted({c.agent.name for c in active}) if deploys_agents(scope) else []
    if agents:
        # AuthorizationPolicies on one Server are additive: each shard adds its own callers.
        callers_name = f"{gw.name}-{shard}" if shard else gw.name
        owner = agents[0] if len(agents) == 1 else None
        idents = [c.agent.identity.linkerd_identity for c in active]
        if any(i is None for i in idents):  # mesh_problems refuses these before any plan is built
            raise ValueError(f"a caller of {name} has no Linkerd identity")
        out.append(mesh_tls_authentication(callers_name, ns, name, owner, [i for i in idents if i]))
        out.append(authorization_policy(callers_name, ns, name, owner, "Server", gw.name, callers_name))
    outside_agents = sorted({c.agent.name for c in outside}) if deploys_agents(scope) else []
    if outside_agents:
        # Linkerd cannot identify these callers (no mesh identity): it admits their TCP connections
        # to the gateway port from their networks, and the gateway's Envoy (mTLS with the agent's
        # SVID) and OPA decide every request: that is their enforcement point.
        stem = f"{gw.name}-{shard}" if shard else gw.name
        nets = sorted({n for c in outside for n in c.agent.manifest.spec.source_networks})
        if any(not c.agent.manifest.spec.source_networks for c in outside):
            nets = list(ANY_NETWORK)
        owner = outside_agents[0] if len(outside_agents) == 1 else None
        out.append(network_authentication(f"{stem}-outside-mesh", ns, name, owner, nets))
        out.append(authorization_policy(f"{stem}-outside-mesh", ns, name, owner, "Server", gw.name,
                                        f"{stem}-outside-mesh", "NetworkAuthentication"))
    return out


def _service_problem(svc: SourcedService, loc: tuple[str | int, ...], message: str) -> Problem:
    from components.manifest.loader import format_loc

    return Problem(svc.file, svc.line_of(loc), format_loc(loc), message)


def mesh_problems(platform: Platform) -> list[Problem]:
    """Manifests Linkerd cannot enforce as written (checked before any resource is registered)."""
    out: list[Problem] = []
    cp = platform.config.mesh.control_plane_namespace
    # Agents outside the mesh with http grants: components.render.egress.egress_problems.
    reserved = {cp: "Linkerd's control-plane namespace"}
    if platform.config.subsystems.spire:
        reserved.setdefault(platform.config.spire.namespace, "SPIRE's namespace (spire.namespace)")
    # Agents in these namespaces are refused by the platform model (components.platform_model.reservations).
    for svc in platform.services:
        ns = svc.manifest.spec.namespace
        if ns in reserved:
            out.append(_service_problem(svc, ("spec", "namespace"),
                                        f"{ns!r} is {reserved[ns]}; services cannot be meshed there"))
    return out


def mesh_plan(platform: Platform, scope: Scope = "all") -> MeshPlan:
    """Every meshed namespace and its policy objects; raises ManifestError listing every problem.

    A shard (``scope`` ``agents``) plans no namespace: its objects are :func:`shard_objects`.
    """
    problems = mesh_problems(platform)
    if problems:
        raise ManifestError(problems)
    policy = platform.config.mesh.default_inbound_policy
    callers = _callers(platform.agents)
    agents_in: dict[str, set[str]] = defaultdict(set)
    services_in: dict[str, set[str]] = defaultdict(set)
    objects_in: dict[str, list[tuple[SourcedService, dict[str, Any]]]] = defaultdict(list)
    warnings: list[str] = []
    for a in platform.agents:
        if a.identity.linkerd_identity is not None and a.identity.namespace is not None:
            agents_in[a.identity.namespace].add(a.name)
    for svc in platform.services:
        if svc.name not in callers:
            continue  # nobody in this stack calls it: leave its namespace alone
        ns = svc.manifest.spec.namespace
        services_in[ns].add(svc.name)
        objects_in[ns].extend((svc, o) for o in service_objects(platform, svc, callers[svc.name], scope))
        if not svc.manifest.spec.gateway:
            warnings.extend(tie_warnings(svc.name, [c for c in callers[svc.name] if not c.agent.suspended]))
    for ns, pairs in objects_in.items():
        seen: dict[tuple[str, str], SourcedService] = {}
        for svc, obj in pairs:
            key = (obj["kind"], obj["metadata"]["name"])
            first = seen.setdefault(key, svc)
            if first is not svc:
                problems.append(_service_problem(
                    svc, ("metadata", "name"),
                    f"services {first.name!r} and {svc.name!r} in namespace {ns!r} both need a {key[0]} "
                    f"named {key[1]!r}; rename one of them"))
    if problems:
        raise ManifestError(problems)
    plans = []
    for ns in sorted(set(agents_in) | set(services_in)) if deploys_shared(scope) else ():
        objs = sorted((o for _, o in objects_in.get(ns, [])), key=_order)
        plans.append(NamespacePlan(ns, policy, tuple(sorted(agents_in.get(ns, ()))),
                                   tuple(sorted(services_in.get(ns, ()))), tuple(objs)))
    return MeshPlan(tuple(plans), tuple(warnings))


_KIND_ORDER = {"Server": 0, "HTTPRoute": 1, "MeshTLSAuthentication": 2, "AuthorizationPolicy": 3}


def _order(obj: Mapping[str, Any]) -> tuple[int, str]:
    return _KIND_ORDER.get(obj["kind"], 9), obj["metadata"]["name"]


def shard_objects(platform: Platform) -> list[dict[str, Any]]:
    """A shard's Linkerd objects: its agents' routes, authentications and policies (deterministic).

    The namespaces and Servers they refer to are the base stack's.
    """
    plan = mesh_plan(platform, "agents")  # validation and the duplicate-name check
    assert not plan.namespaces
    return _shard_objects(platform)


def _shard_objects(platform: Platform) -> list[dict[str, Any]]:
    callers = _callers(platform.agents)
    out = [o for svc in platform.services if svc.name in callers
           for o in service_objects(platform, svc, callers[svc.name], "agents")]
    return sorted(out, key=lambda o: (o["metadata"]["namespace"], *_order(o)))


def compile_mesh(platform: Platform) -> MeshPlan:
    """Linkerd's plan of a stack; raises every problem at once (the identity profile's stack
    problems and the manifests' alike)."""
    cfg, file = platform.config, platform.config_file
    scope = stack_scope(cfg)
    problems = linkerd_identity_problems(cfg, file) if deploys_shared(scope) else []
    try:
        plan = mesh_plan(platform, scope)
    except ManifestError as exc:
        raise input_error([*problems, *exc.problems], [file]) from None
    if problems:
        raise input_error(problems, [file])
    if not deploys_shared(scope):
        return MeshPlan((), plan.warnings, None, tuple(_shard_objects(platform)))
    return MeshPlan(plan.namespaces, plan.warnings, _identity_profile(cfg))


def plan_objects(plan: MeshPlan) -> list[dict[str, Any]]:
    """The control-plane namespace, every meshed namespace and its policy objects (deterministic);
    a shard's policy objects.

    The trust roots ConfigMap and issuer Secret hold certificates generated at deploy time, so
    they are not part of the reviewed render; their shape is :func:`trust_roots_configmap` and
    :func:`issuer_secret`. With anchorCustody cert-manager, the cert-manager and trust-manager
    objects that make them in the cluster are part of it.
    """
    profile = plan.identity
    if profile is None:
        return list(plan.shard_objects)
    identity = cert_manager_identity_objects(profile) if profile.custody == "cert-manager" else []
    return [control_plane_namespace(profile), *identity, *plan.objects()]


def mesh_objects(platform: Platform) -> list[dict[str, Any]]:
    """:func:`plan_objects` of the stack's validated plan."""
    return plan_objects(compile_mesh(platform))


def mesh_artifacts(platform: Platform) -> list[Artifact]:
    """``kubernetes/mesh/*.yaml`` for ``passport render`` (nothing when subsystems.mesh is off)."""
    if not platform.config.subsystems.mesh:
        return []
    return plan_artifacts(compile_mesh(platform))


def plan_artifacts(plan: MeshPlan) -> list[Artifact]:
    from components.render.artifacts import kubernetes_artifacts

    return kubernetes_artifacts("mesh", plan_objects(plan))


__all__ = [
    "AUTHORIZATION_POLICY_API",
    "CA_USES",
    "DEFAULT_INBOUND_POLICY_ANNOTATION",
    "GATEWAY_PROXY_PROTOCOL",
    "HTTPROUTE_API",
    "INJECT_ANNOTATION",
    "ISSUER_SECRET",
    "MAX_MATCHES_PER_RULE",
    "MAX_RULES_PER_ROUTE",
    "MESH_TLS_AUTHENTICATION_API",
    "POLICY_GROUP",
    "PROXY_PROTOCOLS",
    "SERVER_API",
    "TRUST_ROOTS_CONFIGMAP",
    "TRUST_ROOTS_KEY",
    "Caller",
    "Custody",
    "LinkerdIdentityProfile",
    "MeshPlan",
    "NamespacePlan",
    "RouteGroup",
    "RouteMatch",
    "V",
    "anchor_custody",
    "authorization_policy",
    "authorized_agents",
    "cert_manager_identity_objects",
    "compile_mesh",
    "control_plane_namespace",
    "grant_matches",
    "http_route",
    "issuer_secret",
    "linkerd_identity_problems",
    "linkerd_identity_profile",
    "mesh_artifacts",
    "mesh_objects",
    "mesh_plan",
    "mesh_problems",
    "mesh_tls_authentication",
    "namespace_object",
    "plan_artifacts",
    "plan_objects",
    "route_groups",
    "server",
    "service_objects",
    "shard_objects",
    "tie_warnings",
    "trust_bundle",
    "trust_roots_configmap",
]
