"""The data document the policy decides on (services -> SPIFFE IDs -> rules; a shard's and a base's),
and the revocation list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from components.manifest.loader import SourcedService
from components.manifest.models import HttpGrant
from components.platform_model import Platform
from components.shard import stack_scope

# --------------------------------------------------------------------------- data document


def normalize_prefix(prefix: str) -> str:
    """Trailing '/' carries no meaning for a segment-boundary prefix ('/api/' == '/api')."""
    trimmed = prefix.rstrip("/")
    return trimmed or "/"


def grant_rule(index: int, grant: HttpGrant) -> dict[str, Any]:
    """One grant as a data rule (deterministic: sorted keys and lists)."""
    exact = sorted({p.value for p in grant.paths if p.kind == "exact"})
    prefix = sorted({normalize_prefix(p.value) for p in grant.paths if p.kind == "prefix"})
    return {
        "grant": index,
        "headers": dict(sorted(grant.headers.items())),
        "methods": dict.fromkeys(sorted(grant.methods), True),
        "paths": {"exact": dict.fromkeys(exact, True), "prefix": prefix},
        "timeWindows": [
            {"days": list(w.days), "end": w.end, "start": w.start, "timezone": w.timezone}
            for w in grant.time_windows
        ],
    }


def gateway_services(platform: Platform) -> list[SourcedService]:
    """Services that get a gateway: ``spec.gateway`` true and called by an active agent."""
    called = platform.http_grants_by_service
    return [s for s in platform.services if s.manifest.spec.gateway and s.name in called]


def service_principals(platform: Platform, service: str) -> dict[str, dict[str, Any]]:
    """SPIFFE ID -> entry for every active agent with an http grant on ``service``."""
    out: dict[str, dict[str, Any]] = {}
    for agent, i, g in platform.http_grants_by_service.get(service, ()):
        entry = out.setdefault(agent.identity.spiffe_id, {"agent": agent.name, "rules": []})
        entry["rules"].append(grant_rule(i, g))
    return dict(sorted(out.items()))


def authz_data(platform: Platform, services: Iterable[str] | None = None) -> dict[str, Any]:
    """The data document for ``services`` (default: every gateway service)."""
    names = [s.name for s in gateway_services(platform)] if services is None else list(services)
    return {
        "agentpassport": {
            "services": {
                name: {"principals": service_principals(platform, name)} for name in sorted(names)
            }
        }
    }


def base_data(services: Iterable[str]) -> dict[str, Any]:
    """A base stack's own document: the gateway's services, no principal (the shards hold them)."""
    return {"agentpassport": {"services": {name: {"principals": {}} for name in sorted(services)}}}


def shard_data(platform: Platform, services: Iterable[str] | None = None) -> dict[str, Any]:
    """A shard stack's document: its agents' entries under ``agentpassport.shards.<stack>``."""
    inner = authz_data(platform, services)["agentpassport"]
    return {"agentpassport": {"shards": {platform.stack: inner}}}


def stack_data(platform: Platform) -> dict[str, Any]:
    """What a gateway sees of this stack: standalone, a base's own document, or a shard's
    document merged with the base's service entries (review and generated tests)."""
    scope = stack_scope(platform.config)
    names = [s.name for s in gateway_services(platform)]
    if scope == "all":
        return authz_data(platform, names)
    if scope == "shared":
        return base_data(names)
    return {"agentpassport": {**base_data(names)["agentpassport"], **shard_data(platform, names)["agentpassport"]}}


REVOCATIONS_FILE = "revocations.json"
"""The revocation list's file in a gateway's data directory (and in the rendered ``rego/``)."""


def revocation_document(revoked: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The revocation list as OPA loads it: SPIFFE ID -> what ``passport revoke`` recorded."""
    return {"agentpassport": {"revocations": {"spiffeIds": dict(sorted((revoked or {}).items()))}}}


def revoked_ids(document: Any) -> dict[str, Any] | None:
    """The SPIFFE IDs of a revocation document, or None when it is not one (unreadable)."""
    if not isinstance(document, dict):
        return None
    inner = document.get("agentpassport")
    inner = inner.get("revocations") if isinstance(inner, dict) else None
    ids = inner.get("spiffeIds") if isinstance(inner, dict) else None
    return dict(ids) if isinstance(ids, dict) else None


def with_revocations(data: Mapping[str, Any], document: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``data`` with a revocation list merged in (default: the empty list), as a gateway loads
    its data directory."""
    doc = dict(data.get("agentpassport", {}))
    doc["revocations"] = (document or revocation_document())["agentpassport"]["revocations"]
    return {**data, "agentpassport": doc}


def principals_of(data: Mapping[str, Any], service: str) -> dict[str, Any]:
    """Every entry of ``service`` in a data document, standalone and per shard."""
    doc = data.get("agentpassport", {})
    out = dict(doc.get("services", {}).get(service, {}).get("principals", {}))
    for shard in doc.get("shards", {}).values():
        out.update(shard.get("services", {}).get(service, {}).get("principals", {}))
    return out
