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
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from components.config import NAMESPACE, StackConfig
from components.durations import seconds
from components.errors import ConfigError, ManifestError, Problem, input_error
from components.identity import GatewayIdentity
from components.manifest.loader import SourcedService
from components.platform_model import Platform, ResolvedAgent
from components.shard import Scope, deploys_agents, deploys_shared, stack_scope

if TYPE_CHECKING:
    from components.render.artifacts import Artifact

# --------------------------------------------------------------------------- names

POLICY_GROUP = "policy.linkerd.io"
SERVER_API = f"{POLICY_GROUP}/v1beta3"
HTTPROUTE_API = f"{POLICY_GROUP}/v1beta3"
AUTHORIZATION_POLICY_API = f"{POLICY_GROUP}/v1alpha1"
MESH_TLS_AUTHENTICATION_API = f"{POLICY_GROUP}/v1alpha1"

PROXY_PROTOCOLS: dict[str, str] = {"http1": "HTTP/1", "http2": "HTTP/2", "grpc": "gRPC"}
"""Service manifest ``protocol`` -> Linkerd Server ``proxyProtocol``."""
GATEWAY_PROXY_PROTOCOL = "opaque"
"""Agents speak SPIFFE mTLS to the Envoy gateway: Linkerd must not try to detect a protocol."""

MAX_MATCHES_PER_RULE = 8
MAX_RULES_PER_ROUTE = 16
"""HTTPRoute v1beta3 limits: ``spec.rules`` maxItems 16, ``rules[].matches`` maxItems 8."""

INJECT_ANNOTATION = "linkerd.io/inject"
DEFAULT_INBOUND_POLICY_ANNOTATION = "config.linkerd.io/default-inbound-policy"
# A strict stack builds namespaces only with STRICT_INBOUND_POLICIES (components.config.mesh):
# the stack configuration refuses any other default before anything is planned.

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "agent-passport"
LABEL_AGENT = "agentpassport.dev/agent"
LABEL_SERVICE = "agentpassport.dev/service"

TRUST_ROOTS_CONFIGMAP = "linkerd-identity-trust-roots"
TRUST_ROOTS_KEY = "ca-bundle.crt"
ISSUER_SECRET = "linkerd-identity-issuer"

# --------------------------------------------------------------------------- identity profile

CA_USES = ("cert_signing", "crl_signing")
"""pulumi-tls allowed_uses of the anchor and the issuer: keyCertSign + cRLSign (step's CA profiles)."""


Custody = Literal["tls", "vault-pki", "aws-pca", "cert-manager"]
"""Who holds the Linkerd trust anchors' keys (mesh.anchorCustody)."""


@dataclass(frozen=True)
class LinkerdIdentityProfile:
    """The trust anchor(s) and issuer Linkerd's identity controller needs, independent of keys."""

    control_plane_namespace: str
    cluster_domain: str
    organization: str
    anchor_generations: tuple[str, ...]
    signing_anchor: str
    anchor_validity_hours: int
    issuer_validity_hours: int
    issuer_early_renewal_hours: int
    extra_anchors_pem: tuple[str, ...]
    cni_enabled: bool
    custody: Custody = "tls"
    """Who holds the anchors' keys (the issuer key is pulumi-tls's unless cert-manager issues it)."""
    cert_manager_namespace: str = "cert-manager"
    vault_pki_mount: str = "pki-linkerd"
    aws_region: str = "us-east-1"
    issuer_rotation: str = "1"
    ecdsa_curve: Literal["P256"] = "P256"
    anchor_path_length: int = 1
    issuer_path_length: int = 0
    ca_uses: tuple[str, ...] = CA_USES

    @property
    def anchor_common_name(self) -> str:
        return f"root.{self.control_plane_namespace}.{self.cluster_domain}"

    @property
    def issuer_common_name(self) -> str:
        return f"identity.{self.control_plane_namespace}.{self.cluster_domain}"

    def anchor_unit(self, generation: str) -> str:
        """Subject OU that tells anchor generations apart (their CN is Linkerd's fixed name)."""
        return f"linkerd trust anchor {generation}"

    @property
    def issuer_unit(self) -> str:
        """Subject OU of the issuer; changing ``mesh.issuerRotation`` changes it and so re-issues it."""
        return f"linkerd identity issuer {self.issuer_rotation}"

    def vault_mount(self, generation: str) -> str:
        return f"{self.vault_pki_mount}-{generation}"

    @property
    def anchor_validity_days(self) -> int:
        return self.anchor_validity_hours // 24

    @property
    def issuer_validity_days(self) -> int:
        return self.issuer_validity_hours // 24


def _extra_anchor_problem(index: int, pem: str) -> str | None:
    """Why an extra trust anchor cannot go into Linkerd's bundle, or None."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        cert = x509.load_pem_x509_certificate(pem.strip().encode())
    except ValueError as exc:
        return f"extraTrustAnchorsPem[{index}] is not a PEM certificate ({exc})"
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if not ca:
        return f"extraTrustAnchorsPem[{index}] ({cert.subject.rfc4514_string()}) is not a CA certificate"
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return (f"extraTrustAnchorsPem[{index}] ({cert.subject.rfc4514_string()}) does not use an ECDSA "
                "P-256 key, which Linkerd requires of trust anchors")
    return None


def anchor_custody(cfg: StackConfig) -> Custody:
    """mesh.anchorCustody, defaulting to the trust domain's own key custody (trust.upstream;
    cert-manager when SPIRE is its own root, so that no key of the stack sits in Pulumi state)."""
    if cfg.mesh.anchor_custody is not None:
        return cfg.mesh.anchor_custody
    return "cert-manager" if cfg.trust.upstream == "spire" else cfg.trust.upstream


def linkerd_identity_problems(cfg: StackConfig, file: str) -> list[Problem]:
    """Stack-config problems of the Linkerd identity that the generic checks do not cover."""
    m = cfg.mesh
    out: list[Problem] = []

    def p(key: str, message: str) -> None:
        out.append(Problem(file, None, f"{NAMESPACE}:mesh.{key}", message))

    for key, value in (("trustAnchorLifetime", m.trust_anchor_lifetime), ("issuerLifetime", m.issuer_lifetime),
                       ("issuerEarlyRenewal", m.issuer_early_renewal)):
        if seconds(value) % 3600:
            p(key, f"{value} is not a whole number of hours; certificate lifetimes are set in hours (e.g. 2160h)")
    if seconds(m.issuer_lifetime) >= seconds(m.trust_anchor_lifetime):
        p("issuerLifetime", f"{m.issuer_lifetime} is not shorter than trustAnchorLifetime "
                            f"({m.trust_anchor_lifetime}): the issuer must expire before its anchor")
    if seconds(m.issuer_early_renewal) >= seconds(m.issuer_lifetime):
        p("issuerEarlyRenewal", f"{m.issuer_early_renewal} is not shorter than issuerLifetime "
                                f"({m.issuer_lifetime}): the issuer would be re-issued on every `pulumi up`")
    custody = anchor_custody(cfg)
    if custody == "aws-pca":
        for key, value in (("trustAnchorLifetime", m.trust_anchor_lifetime), ("issuerLifetime", m.issuer_lifetime)):
            if seconds(value) % 86400:
                p(key, f"{value} is not a whole number of days, which AWS Private CA needs (anchorCustody aws-pca)")
        if seconds(m.trust_anchor_lifetime) > 10 * 365 * 86400:
            p("trustAnchorLifetime", "AWS Private CA roots are limited to 10 years here; shorten trustAnchorLifetime")
    for i, pem in enumerate(m.extra_trust_anchors_pem):
        problem = _extra_anchor_problem(i, pem)
        if problem:
            p(f"extraTrustAnchorsPem[{i}]", problem)
    return out


def linkerd_identity_profile(cfg: StackConfig, file: str = "stack configuration") -> LinkerdIdentityProfile:
    """The validated certificate profile of a stack; raises ConfigError listing every problem."""
    problems = linkerd_identity_problems(cfg, file)
    if problems:
        raise ConfigError(problems)
    return _identity_profile(cfg)


def _identity_profile(cfg: StackConfig) -> LinkerdIdentityProfile:
    m = cfg.mesh
    return LinkerdIdentityProfile(
        control_plane_namespace=m.control_plane_namespace,
        cluster_domain=m.cluster_domain,
        organization=cfg.trust.organization,
        anchor_generations=tuple(m.trust_anchors),
        signing_anchor=m.signing_anchor,
        anchor_validity_hours=seconds(m.trust_anchor_lifetime) // 3600,
        issuer_validity_hours=seconds(m.issuer_lifetime) // 3600,
        issuer_early_renewal_hours=seconds(m.issuer_early_renewal) // 3600,
        extra_anchors_pem=tuple(m.extra_trust_anchors_pem),
        cni_enabled=m.cni_enabled,
        custody=anchor_custody(cfg),
        cert_manager_namespace=m.cert_manager_namespace,
        vault_pki_mount=m.vault_pki_mount,
        aws_region=cfg.aws.region,
        issuer_rotation=m.issuer_rotation,
    )


def trust_bundle(pems: Iterable[str]) -> str:
    """Linkerd's ``ca-bundle.crt``: every anchor once, in order, each block newline-terminated."""
    seen: list[str] = []
    for pem in pems:
        block = pem.strip()
        if block and block not in seen:
            seen.append(block)
    return "".join(f"{b}\n" for b in seen)


def _control_plane_labels(namespace: str) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        "linkerd.io/control-plane-component": "identity",
        "linkerd.io/control-plane-ns": namespace,
    }


def control_plane_namespace(profile: LinkerdIdentityProfile) -> dict[str, Any]:
    """Linkerd's own namespace, labelled as the linkerd-control-plane chart labels it."""
    ns = profile.control_plane_namespace
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ns,
            "annotations": {INJECT_ANNOTATION: "disabled"},
            "labels": {
                LABEL_MANAGED_BY: MANAGED_BY,
                "config.linkerd.io/admission-webhooks": "disabled",
                "linkerd.io/control-plane-ns": ns,
                "linkerd.io/is-control-plane": "true",
                "pod-security.kubernetes.io/enforce": "restricted" if profile.cni_enabled else "privileged",
            },
        },
    }


V = TypeVar("V")


def cert_manager_identity_objects(profile: LinkerdIdentityProfile) -> list[dict[str, Any]]:
    """Linkerd's identity from cert-manager (anchorCustody cert-manager), as Linkerd documents it
    for production: cert-manager makes each anchor generation (self-signed; its key is kept across
    renewals, so chains stay valid) and issues the identity issuer from the signing anchor,
    renewing it ``issuerEarlyRenewal`` before it expires; trust-manager writes every anchor (and
    extraTrustAnchorsPem) into ``linkerd-identity-trust-roots``. No key passes through Pulumi."""
    p = profile
    cm_ns, ns = p.cert_manager_namespace, p.control_plane_namespace
    labels = {LABEL_MANAGED_BY: MANAGED_BY}
    self_signed = "linkerd-trust-anchor-selfsigned"
    objects: list[dict[str, Any]] = [{
        "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
        "metadata": {"name": self_signed, "namespace": cm_ns, "labels": labels},
        "spec": {"selfSigned": {}},
    }]
    for gen in p.anchor_generations:
        objects.append({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": f"linkerd-trust-anchor-{gen}", "namespace": cm_ns, "labels": labels},
            "spec": {
                "secretName": f"linkerd-trust-anchor-{gen}",
                "isCA": True,
                "commonName": p.anchor_common_name,
                "subject": {"organizations": [p.organization], "organizationalUnits": [p.anchor_unit(gen)]},
                "duration": f"{p.anchor_validity_hours}h",
                # A renewal keeps the key: issuers (and proxies' leaves) chained to it stay valid.
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Never"},
                "usages": ["cert sign", "crl sign"],
                "issuerRef": {"name": self_signed, "kind": "Issuer", "group": "cert-manager.io"},
            },
        })
    objects += [
        {
            "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
            "metadata": {"name": "linkerd-trust-anchor", "labels": labels},
            "spec": {"ca": {"secretName": f"linkerd-trust-anchor-{p.signing_anchor}"}},
        },
        {
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": ISSUER_SECRET, "namespace": ns, "labels": _control_plane_labels(ns)},
            "spec": {
                "secretName": ISSUER_SECRET,
                "isCA": True,
                "commonName": p.issuer_common_name,
                "dnsNames": [p.issuer_common_name],
                "subject": {"organizations": [p.organization], "organizationalUnits": [p.issuer_unit]},
                "duration": f"{p.issuer_validity_hours}h",
                "renewBefore": f"{p.issuer_early_renewal_hours}h",
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "usages": ["cert sign", "crl sign", "server auth", "client auth"],
                "issuerRef": {"name": "linkerd-trust-anchor", "kind": "ClusterIssuer", "group": "cert-manager.io"},
            },
        },
        {
            "apiVersion": "trust.cert-manager.io/v1alpha1", "kind": "Bundle",
            "metadata": {"name": TRUST_ROOTS_CONFIGMAP, "labels": labels},
            "spec": {
                "sources": [
                    *({"secret": {"name": f"linkerd-trust-anchor-{gen}", "key": "tls.crt"}}
                      for gen in p.anchor_generations),
                    *({"inLine": pem.strip() + "\n"} for pem in p.extra_anchors_pem),
                ],
                "target": {
                    "configMap": {"key": TRUST_ROOTS_KEY},
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                },
            },
        },
    ]
    return objects


def trust_roots_configmap(namespace: str, bundle: V) -> dict[str, Any]:
    """The ``linkerd-identity-trust-roots`` ConfigMap (``bundle`` may be a deploy-time value)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": TRUST_ROOTS_CONFIGMAP, "namespace": namespace, "labels": _control_plane_labels(namespace)},
        "data": {TRUST_ROOTS_KEY: bundle},
    }


def issuer_secret(namespace: str, crt: V, key: V, ca: V) -> dict[str, Any]:
    """The ``linkerd-identity-issuer`` Secret (scheme kubernetes.io/tls); values are deploy-time secrets."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": ISSUER_SECRET, "namespace": namespace, "labels": _control_plane_labels(namespace)},
        "type": "kubernetes.io/tls",
        "stringData": {"ca.crt": ca, "tls.crt": crt, "tls.key": key},
    }


# --------------------------------------------------------------------------- namespaces


def namespace_object(namespace: str, default_inbound_policy: str) -> dict[str, Any]:
    """A meshed namespace: every pod gets a proxy; inbound traffic follows the stack's default."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "annotations": {
                DEFAULT_INBOUND_POLICY_ANNOTATION: default_inbound_policy,
                INJECT_ANNOTATION: "enabled",
            },
            "labels": {LABEL_MANAGED_BY: MANAGED_BY},
        },
    }


# --------------------------------------------------------------------------- matches


@dataclass(frozen=True, order=True)
class RouteMatch:
    """One atomic HTTP match: a method and an exact or (segment) prefix path."""

    method: str
    kind: Literal["exact", "prefix"]
    path: str

    @staticmethod
    def of(method: str, kind: Literal["exact", "prefix"], path: str) -> RouteMatch:
        # Linkerd ignores a prefix's trailing '/' ('/api/' matches like '/api'); normalize so
        # equivalent prefixes are one match, not two that tie.
        if kind == "prefix" and path != "/":
            path = path.rstrip("/") or "/"
        return RouteMatch(method, kind, path)

    def covers(self, other: RouteMatch) -> bool:
        """Every request ``other`` matches is also matched by ``self`` (Linkerd's semantics)."""
        if self.method != other.method:
            return False
        if self.kind == "exact":
            return other.kind == "exact" and other.path == self.path
        if self.path == "/":
            return True
        target = other.path.rstrip("/") if other.kind == "exact" else other.path
        return target == self.path or target.startswith(self.path + "/")

    def body(self) -> dict[str, Any]:
        return {"method": self.method,
                "path": {"type": "Exact" if self.kind == "exact" else "PathPrefix", "value": self.path}}


def grant_matches(methods: Iterable[str], paths: Iterable[tuple[Literal["exact", "prefix"], str]]) -> list[RouteMatch]:
    return sorted({RouteMatch.of(m, kind, value) for m in methods for kind, value in paths})


def _digest(parts: Iterable[str], n: int = 10) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:n]


# --------------------------------------------------------------------------- policy objects


def _meta(name: str, namespace: str, service: str, agent: str | None) -> dict[str, Any]:
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_SERVICE: service}
    if agent is not None:
        labels[LABEL_AGENT] = agent
    return {"name": name, "namespace": namespace, "labels": dict(sorted(labels.items()))}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"group": POLICY_GROUP, "kind": kind, "name": name}


def server(name: str, namespace: str, service: str, pod_labels: Mapping[str, str], port: int,
           proxy_protocol: str) -> dict[str, Any]:
    return {
        "apiVersion": SERVER_API,
        "kind": "Server",
        "metadata": _meta(name, namespace, service, None),
        "spec": {
            "accessPolicy": "deny",
            "podSelector": {"matchLabels": dict(sorted(pod_labels.items()))},
            "port": port,
            "proxyProtocol": proxy_protocol,
        },
    }


def http_route(name: str, namespace: str, service: str, agent: str | None, server_name: str,
               matches: Sequence[RouteMatch]) -> dict[str, Any]:
    if len(matches) > MAX_MATCHES_PER_RULE * MAX_RULES_PER_ROUTE:
        raise ValueError(f"{len(matches)} matches do not fit one HTTPRoute")  # split by the caller
    rules = [{"matches": [m.body() for m in matches[i:i + MAX_MATCHES_PER_RULE]]}
             for i in range(0, len(matches), MAX_MATCHES_PER_RULE)]
    return {
        "apiVersion": HTTPROUTE_API,
        "kind": "HTTPRoute",
        "metadata": _meta(name, namespace, service, agent),
        "spec": {"parentRefs": [_ref("Server", server_name)], "rules": rules},
    }


def mesh_tls_authentication(name: str, namespace: str, service: str, agent: str | None,
                            identities: Iterable[str]) -> dict[str, Any]:
    return {
        "apiVersion": MESH_TLS_AUTHENTICATION_API,
        "kind": "MeshTLSAuthentication",
        "metadata": _meta(name, namespace, service, agent),
        "spec": {"identities": sorted(set(identities))},
    }


def authorization_policy(name: str, namespace: str, service: str, agent: str | None,
                         target_kind: Literal["Server", "HTTPRoute"], target: str, authn: str) -> dict[str, Any]:
    return {
        "apiVersion": AUTHORIZATION_POLICY_API,
        "kind": "AuthorizationPolicy",
        "metadata": _meta(name, namespace, service, agent),
        "spec": {
            "targetRef": _ref(target_kind, target),
            "requiredAuthenticationRefs": [_ref("MeshTLSAuthentication", authn)],
        },
    }


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


def platform_gateway(platform: Platform, svc: SourcedService) -> GatewayIdentity:
    """The gateway in front of ``svc``: from the one identity module, in the service's namespace."""
    return platform.gateway(svc)


def service_objects(platform: Platform, svc: SourcedService, callers: Sequence[Caller],
                    scope: Scope = "all") -> list[dict[str, Any]]:
    """Linkerd objects protecting one called service; only active callers are authorized.

    ``scope`` ``shared`` (a base stack) keeps the Servers and the gateway's own authorization;
    ``agents`` (a shard) keeps the callers' routes, authentications and policies, named with
    the shard's stack name so shards never collide; ``all`` keeps both.
    """
    spec = svc.manifest.spec
    ns, name = spec.namespace, svc.name
    active = [c for c in callers if not c.agent.suspended]
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
    gw = platform_gateway(platform, svc)
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
    return out


def _agent_problem(a: ResolvedAgent, loc: tuple[str | int, ...], message: str) -> Problem:
    from components.manifest.loader import format_loc

    return Problem(a.source.file, a.source.line_of(loc), format_loc(loc), message)


def _service_problem(svc: SourcedService, loc: tuple[str | int, ...], message: str) -> Problem:
    from components.manifest.loader import format_loc

    return Problem(svc.file, svc.line_of(loc), format_loc(loc), message)


def mesh_problems(platform: Platform) -> list[Problem]:
    """Manifests Linkerd cannot enforce as written (checked before any resource is registered)."""
    out: list[Problem] = []
    cp = platform.config.mesh.control_plane_namespace
    for a in platform.active_agents:
        if a.identity.linkerd_identity is None:
            for i, grant in a.grants_of("http"):
                out.append(_agent_problem(
                    a, ("spec", "grants", i, "http"),
                    f"agent {a.name!r} runs on {a.identity.platform}, outside the Linkerd mesh, so it has no "
                    f"mesh identity and Linkerd (default {platform.config.mesh.default_inbound_policy}) "
                    f"cannot admit its calls to {grant.service!r}; run the agent as a Kubernetes pod or "
                    "turn subsystems.mesh off for this stack"))
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
