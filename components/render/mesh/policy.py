"""Meshed namespaces, route matches and the policy.linkerd.io objects (Server, HTTPRoute,
MeshTLSAuthentication, AuthorizationPolicy).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from components.labels import AGENT_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SERVICE_LABEL
from components.render.mesh.names import (
    AUTHORIZATION_POLICY_API,
    DEFAULT_INBOUND_POLICY_ANNOTATION,
    HTTPROUTE_API,
    INJECT_ANNOTATION,
    MAX_MATCHES_PER_RULE,
    MAX_RULES_PER_ROUTE,
    MESH_TLS_AUTHENTICATION_API,
    NETWORK_AUTHENTICATION_API,
    POLICY_GROUP,
    SERVER_API,
)

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
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
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
    labels = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, SERVICE_LABEL: service}
    if agent is not None:
        labels[AGENT_LABEL] = agent
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


def network_authentication(name: str, namespace: str, service: str, agent: str | None,
                           networks: Iterable[str]) -> dict[str, Any]:
    """Clients by source network (no mesh identity): the callers outside the mesh."""
    return {
        "apiVersion": NETWORK_AUTHENTICATION_API,
        "kind": "NetworkAuthentication",
        "metadata": _meta(name, namespace, service, agent),
        "spec": {"networks": [{"cidr": n} for n in sorted(set(networks))]},
    }


def authorization_policy(name: str, namespace: str, service: str, agent: str | None,
                         target_kind: Literal["Server", "HTTPRoute"], target: str, authn: str,
                         authn_kind: Literal["MeshTLSAuthentication", "NetworkAuthentication"]
                         = "MeshTLSAuthentication") -> dict[str, Any]:
    return {
        "apiVersion": AUTHORIZATION_POLICY_API,
        "kind": "AuthorizationPolicy",
        "metadata": _meta(name, namespace, service, agent),
        "spec": {
            "targetRef": _ref(target_kind, target),
            "requiredAuthenticationRefs": [_ref(authn_kind, authn)],
        },
    }
