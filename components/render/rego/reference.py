"""A reference implementation of the policy's decision: it picks the generated test cases and states
their expected decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from components.manifest.models import ALL_WEEKDAYS
from components.render.rego.policy import AGENT_HEADER, DENIED_BODY

# --------------------------------------------------------------------------- reference


@dataclass(frozen=True)
class Request:
    """What the policy reads from a CheckRequest."""

    service: str
    principal: str
    method: str
    path: str
    headers: Mapping[str, str]
    now_ns: int


def _prefix_matches(prefix: str, path: str) -> bool:
    return prefix in ("/", path) or path.startswith(prefix + "/")


def _within_time(rule: Mapping[str, Any], now_ns: int) -> bool:
    windows = rule["timeWindows"]
    if not windows:
        return True
    for w in windows:
        local = datetime.fromtimestamp(now_ns // 10**9, ZoneInfo(w["timezone"]))
        day = ALL_WEEKDAYS[local.weekday()]
        clock = f"{local.hour:02d}:{local.minute:02d}"
        if day in w["days"] and w["start"] <= clock < w["end"]:
            return True
    return False


def rule_failure(rule: Mapping[str, Any], req: Request) -> str:
    """Mirror of the policy's ``rule_failure``."""
    path = req.path.split("?")[0]
    if req.method not in rule["methods"]:
        return f"method {req.method} not granted"
    if path not in rule["paths"]["exact"] and not any(
        _prefix_matches(p, path) for p in rule["paths"]["prefix"]
    ):
        return f"path {path} not granted"
    missing = [n for n in sorted(rule["headers"]) if req.headers.get(n) != rule["headers"][n]]
    if missing:
        return f"header {missing[0]} missing or not the granted value"
    if not _within_time(rule, req.now_ns):
        return "outside the granted time windows"
    return ""


def _entries(data: Mapping[str, Any], service: str, principal: str) -> list[Mapping[str, Any]]:
    """The principal's entries for the service: the stack's own, then one per shard (by name)."""
    doc = data.get("agentpassport", {})
    services = doc.get("services", {})
    return [e for e in (
        services.get(service, {}).get("principals", {}).get(principal),
        *(shard.get("services", {}).get(service, {}).get("principals", {}).get(principal)
          for _, shard in sorted(doc.get("shards", {}).items())),
    ) if e is not None]


def _allowed(entry: Mapping[str, Any], rule: Mapping[str, Any], req: Request) -> dict[str, Any]:
    path = req.path.split("?")[0]
    reason = f"allowed: {req.method} {path} granted to agent {entry['agent']} by spec.grants[{rule['grant']}]"
    return {
        "allowed": True,
        "dynamic_metadata": {"agent": entry["agent"], "allowed": True, "reason": reason},
        "headers": {AGENT_HEADER: entry["agent"]},
        "reason": reason,
    }


def _denied(reason: str) -> dict[str, Any]:
    return {
        "allowed": False,
        "body": DENIED_BODY,
        "dynamic_metadata": {"allowed": False, "reason": reason},
        "headers": {"content-type": "text/plain"},
        "http_status": 403,
        "reason": reason,
    }


def _revocation_state(data: Mapping[str, Any], principal: str) -> str:
    """``loaded`` (and the principal not revoked), ``revoked``, or ``missing`` (fail closed)."""
    revocations = data.get("agentpassport", {}).get("revocations")
    ids = revocations.get("spiffeIds") if isinstance(revocations, dict) else None
    if not isinstance(ids, dict):
        return "missing"
    return "revoked" if ids.get(principal) not in (None, False) else "loaded"


def _denied_before_rules(data: Mapping[str, Any], req: Request, entry: Mapping[str, Any] | None) -> str | None:
    """The reason of a denial that needs no rule (no SPIFFE ID, no revocation list, a revoked
    SPIFFE ID, unknown service, no entry)."""
    if req.principal == "":
        return "denied: the client certificate carries no SPIFFE ID"
    state = _revocation_state(data, req.principal)
    if state == "missing":
        return "denied: the revocation list is not loaded (fail closed)"
    if state == "revoked":
        return f"denied: SPIFFE ID {req.principal} is revoked (passport revoke)"
    if req.service not in data.get("agentpassport", {}).get("services", {}):
        return f"denied: service {req.service} is not protected by this gateway"
    if entry is None:
        return f"denied: SPIFFE ID {req.principal} has no grant on service {req.service}"
    return None


def _no_match_prefix(entry: Mapping[str, Any], req: Request) -> str:
    return f"denied: no grant of agent {entry['agent']} on service {req.service} matches: "


def decide(data: Mapping[str, Any], req: Request) -> dict[str, Any]:
    """Mirror of the policy's ``decision`` (the exact object OPA must return)."""
    entries = _entries(data, req.service, req.principal)
    entry = entries[0] if len(entries) == 1 else None
    matching = [r for r in entry["rules"] if rule_failure(r, req) == ""] if entry else []
    if entry and matching and _revocation_state(data, req.principal) == "loaded":
        return _allowed(entry, matching[0], req)
    reason = _denied_before_rules(data, req, entry)
    if reason is None:
        assert entry is not None
        failures = "; ".join(f"spec.grants[{r['grant']}]: {rule_failure(r, req)}" for r in entry["rules"])
        reason = _no_match_prefix(entry, req) + failures
    return _denied(reason)


class _RuleIndex:
    """One entry's rules by method and path: the few rules that could allow a request, found
    with one lookup per path segment instead of trying every rule."""

    def __init__(self, rules: list[Mapping[str, Any]]) -> None:
        self.rules = rules
        self.exact: dict[tuple[str, str], list[int]] = {}
        self.prefix: dict[tuple[str, str], list[int]] = {}
        for pos, rule in enumerate(rules):
            for method in rule["methods"]:
                for path in rule["paths"]["exact"]:
                    self.exact.setdefault((method, path), []).append(pos)
                for prefix in rule["paths"]["prefix"]:
                    self.prefix.setdefault((method, prefix), []).append(pos)

    def first_allowing(self, req: Request) -> Mapping[str, Any] | None:
        """The first rule (in the entry's order, as the policy's ``matching[0]``) allowing ``req``."""
        path = req.path.split("?")[0]
        found = set(self.exact.get((req.method, path), ()))
        # prefixes matching on a segment boundary: "/", the path itself, every "/a/b" it starts with + "/"
        found.update(self.prefix.get((req.method, "/"), ()))
        found.update(self.prefix.get((req.method, path), ()))
        for k, char in enumerate(path):
            if char == "/" and k > 0:
                found.update(self.prefix.get((req.method, path[:k]), ()))
        return next((self.rules[pos] for pos in sorted(found) if rule_failure(self.rules[pos], req) == ""), None)


class Decider:
    """:func:`decide` for many requests against one data document, in time independent of the
    number of rules for allowed requests (rules indexed per entry)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self._entries: dict[tuple[str, str], tuple[Mapping[str, Any] | None, _RuleIndex | None]] = {}

    def entry(self, service: str, principal: str) -> tuple[Mapping[str, Any] | None, _RuleIndex | None]:
        key = (service, principal)
        if key not in self._entries:
            entries = _entries(self.data, service, principal)
            entry = entries[0] if len(entries) == 1 else None
            self._entries[key] = (entry, _RuleIndex(list(entry["rules"])) if entry else None)
        return self._entries[key]

    def allows(self, req: Request) -> bool:
        _, index = self.entry(req.service, req.principal)
        return (index is not None and index.first_allowing(req) is not None
                and _revocation_state(self.data, req.principal) == "loaded")

    def decision(self, req: Request, rule: Mapping[str, Any] | None = None,
                 exact_max_rules: int | None = None) -> tuple[dict[str, Any], str | None]:
        """(expected decision, None) — or, for a denial by an entry with more than
        ``exact_max_rules`` rules, (the decision's fixed fields with the reason's prefix, the
        failure clause of ``rule``): its full reason lists every rule of the entry."""
        entry, index = self.entry(req.service, req.principal)
        allowing = index.first_allowing(req) if index is not None else None
        if entry is not None and allowing is not None and _revocation_state(self.data, req.principal) == "loaded":
            return _allowed(entry, allowing, req), None
        reason = _denied_before_rules(self.data, req, entry)
        if reason is not None:
            return _denied(reason), None
        assert entry is not None
        if exact_max_rules is None or len(entry["rules"]) <= exact_max_rules or rule is None:
            return decide(self.data, req), None
        clause = f"spec.grants[{rule['grant']}]: {rule_failure(rule, req)}"
        return {"allowed": False, "http_status": 403, "reason": _no_match_prefix(entry, req)}, clause


def check_request(req: Request, authority: str) -> dict[str, Any]:
    """The ``input`` opa-envoy-plugin builds from Envoy's v3 CheckRequest (the parts we use)."""
    headers = {":authority": authority, ":method": req.method, ":path": req.path, **req.headers}
    attributes: dict[str, Any] = {
        "contextExtensions": {"service": req.service},
        "request": {
            "http": {
                "headers": dict(sorted(headers.items())),
                "host": authority,
                "method": req.method,
                "path": req.path,
                "protocol": "HTTP/1.1",
            }
        },
        "source": {"principal": req.principal} if req.principal else {},
    }
    return {
        "attributes": attributes,
        "parsed_path": [s for s in req.path.split("?")[0].split("/") if s],
        "version": {"encoding": "protojson", "ext_authz": "v3"},
    }
