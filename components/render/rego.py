"""Rego for the Envoy + OPA gateways: one fixed policy, a data document, generated tests.

The policy (:data:`POLICY`, the file ``opa/policy.rego`` beside this module) never changes with
the manifests. What the manifests grant is
data, keyed by service and then by SPIFFE ID::

    data.agentpassport.services[<service>].principals[<SPIFFE ID>] = {
        "agent": "<name>",
        "rules": [{"grant": <index in spec.grants>, "methods": {"GET": true},
                   "paths": {"exact": {"/v1/x": true}, "prefix": ["/v1/y"]},
                   "headers": {"x-h": "v"},
                   "timeWindows": [{"days": ["mon"], "start": "09:00", "end": "17:00",
                                    "timezone": "Europe/London"}]}],
    }

so a decision is one keyed lookup whatever the number of agents. Only active agents get an
entry: suspending an agent removes its entry and every request with its SVID is denied.

In a sharded environment (docs/sharding.md) the base's document lists the services with no
principal and each shard stack's document holds its agents' entries under
``data.agentpassport.shards[<shard>]``; the policy adds one keyed lookup per shard and denies
an identity found in more than one place.

:func:`decide` is a small reference implementation of the same rules. It picks the generated
test cases (a request that must be denied for the intended reason) and states their expected
decision; the tests then check that real OPA agrees, case by case.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from components.manifest.loader import SourcedService
from components.manifest.models import ALL_WEEKDAYS, HttpGrant, HttpMethod
from components.platform_model import Platform, ResolvedAgent
from components.shard import stack_scope

PACKAGE = "agentpassport.authz"
DECISION_PATH = "agentpassport/authz/decision"
"""opa-envoy-plugin ``path``: the decision object Envoy's ext_authz filter receives."""
DECISION_QUERY = "data.agentpassport.authz.decision"
AGENT_HEADER = "x-agentpassport-agent"
DENIED_BODY = "forbidden by Agent Passport policy\n"
ALL_METHODS: tuple[HttpMethod, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _policy_file(name: str) -> str:
    """A Rego file shipped with the package (``components/render/opa/``; CI runs ``opa fmt`` and
    ``opa check --strict`` on them)."""
    return resources.files("components.render").joinpath(f"opa/{name}").read_text(encoding="utf-8")


POLICY = _policy_file("policy.rego")
"""The gateways' policy (``opa/policy.rego``): identical for every stack."""
MASK_POLICY = _policy_file("mask.rego")
"""Keeps credentials out of the gateways' decision logs (``opa/mask.rego``)."""


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


# --------------------------------------------------------------------------- generated tests

REFERENCE_MONDAY = (2026, 1, 12)
"""Generated cases happen in the week of Monday 2026-01-12, chosen mid-January, away from
the usual daylight-saving switches of either hemisphere."""
_QUERY = "?agentpassport-probe=1"


@dataclass(frozen=True)
class RegoCase:
    """One generated allow/deny case: a request, a mocked clock, the expected decision."""

    name: str
    kind: str
    """allow | wrong-method | wrong-path | missing-header | outside-time-window |
    unknown-spiffe-id | no-spiffe-id | unknown-service"""
    request: Request
    input: dict[str, Any]
    expected: dict[str, Any]
    """The exact decision OPA must return; when ``reason_contains`` is set, only ``allowed``,
    ``http_status`` and the start of ``reason``."""
    reason_contains: str | None = None
    """For denials by an entry with more than :data:`EXACT_DECISION_MAX_RULES` rules: the failure
    of the grant the case is about, which the reason must contain (the full reason lists every
    rule of the entry, so asserting it whole would make the tests quadratic in grants)."""
    revocations: dict[str, Any] | None = None
    """When set, the case mocks ``data.agentpassport.revocations`` with it (a revoked SPIFFE ID,
    or a list that is not loaded); otherwise the gateway's loaded list applies (empty in review)."""

    def matches(self, decision: Mapping[str, Any]) -> bool:
        """Whether a decision (OPA's) is what this case expects."""
        if self.reason_contains is None:
            return dict(decision) == self.expected
        reason = str(decision.get("reason", ""))
        return (decision.get("allowed") is False and decision.get("http_status") == 403
                and reason.startswith(self.expected["reason"]) and self.reason_contains in reason)


EXACT_DECISION_MAX_RULES = 16
"""Entries with at most this many rules get their deny cases' full decision asserted."""


def _at(day_index: int, clock: str, timezone: str) -> int:
    """ns since the epoch of ``clock`` on weekday ``day_index`` of the reference week."""
    hour, minute = (int(x) for x in clock.split(":"))
    year, month, day = REFERENCE_MONDAY
    local = datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(timezone))
    return int((local + timedelta(days=day_index)).timestamp()) * 10**9


def _allowed_time(rule: Mapping[str, Any]) -> int:
    if not rule["timeWindows"]:
        return _at(0, "12:00", "UTC")
    w = rule["timeWindows"][0]
    return _at(ALL_WEEKDAYS.index(w["days"][0]), w["start"], w["timezone"])


def _outside_times(rule: Mapping[str, Any]) -> Iterable[int]:
    """Instants near the windows' edges first, then every quarter hour of the week."""
    if not rule["timeWindows"]:
        return
    for w in rule["timeWindows"]:
        tz = w["timezone"]
        first = ALL_WEEKDAYS.index(w["days"][0])
        start_h, start_m = (int(x) for x in w["start"].split(":"))
        before = start_h * 60 + start_m - 1
        if before >= 0:
            yield _at(first, f"{before // 60:02d}:{before % 60:02d}", tz)
        yield _at(first, w["end"], tz)
        for i, d in enumerate(ALL_WEEKDAYS):
            if d not in w["days"]:
                yield _at(i, w["start"], tz)
    for quarter in range(7 * 24 * 4):
        minutes = quarter * 15
        yield _at(minutes // 1440, f"{minutes % 1440 // 60:02d}:{minutes % 60:02d}", "UTC")


def _grant_paths(rule: Mapping[str, Any]) -> list[str]:
    """A request path each path match of the rule allows (exact ones first)."""
    prefixes = [p.rstrip("/") + "/probe" for p in rule["paths"]["prefix"]]
    return sorted(rule["paths"]["exact"]) + prefixes


def _probe_path(rule: Mapping[str, Any]) -> str:
    return _grant_paths(rule)[0]


def _wrong_paths(rule: Mapping[str, Any]) -> Iterable[str]:
    """Near misses first: a segment-boundary miss for prefixes, a longer path for exacts."""
    for p in sorted(rule["paths"]["exact"]):
        yield f"{p}x" if not p.endswith("/") else f"{p}x/"
        yield f"{p.rstrip('/')}/x"
    for p in rule["paths"]["prefix"]:
        if p != "/":
            yield f"{p}x"
            yield p.rsplit("/", 1)[0] or "/agentpassport-denied"
    yield "/agentpassport-denied"


def _ident(text: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", text.lower())


def _authority(platform: Platform, service: SourcedService) -> str:
    gw = platform.gateway(service)
    return f"{gw.name}.{gw.namespace}.svc:{platform.config.authz.gateway_port}"


def _agent_cases(
    platform: Platform, decider: Decider, entry: Mapping[str, Any], service: SourcedService, agent: ResolvedAgent,
) -> Iterable[RegoCase]:
    authority = _authority(platform, service)
    base = f"test_{_ident(service.name)}_{_ident(agent.name)}"

    def case(kind: str, rule: Mapping[str, Any], req: Request, suffix: str = "") -> RegoCase:
        expected, clause = decider.decision(req, rule, EXACT_DECISION_MAX_RULES)
        return RegoCase(
            name=f"{base}_grant{rule['grant']}_{_ident(kind)}{suffix}", kind=kind, request=req,
            input=check_request(req, authority), expected=expected, reason_contains=clause,
        )

    for rule in entry["rules"]:
        ok = Request(
            service=service.name, principal=agent.identity.spiffe_id,
            method=next(iter(rule["methods"])), path=_probe_path(rule) + _QUERY,
            headers=dict(rule["headers"]), now_ns=_allowed_time(rule),
        )
        allow = case("allow", rule, ok)
        if not allow.expected["allowed"]:
            raise AssertionError(f"generated allow case {allow.name} is denied: {allow.expected}")
        yield allow
        # Every further path of the grant is allowed too, and a prefix only on a segment
        # boundary ("/api" allows "/api/x", not "/apix").
        for j, path in enumerate(_grant_paths(rule)[1:], start=1):
            extra = replace(ok, path=path + _QUERY)
            if decider.allows(extra):
                yield case("allow", rule, extra, f"_path{j}")
        for j, prefix in enumerate(rule["paths"]["prefix"]):
            near = replace(ok, path=f"{prefix}x")
            if prefix != "/" and rule_failure(rule, near) and not decider.allows(near):
                yield case("prefix-boundary", rule, near, f"_{j}")
        variants: list[tuple[str, str, Iterable[Request]]] = [
            ("wrong-method", "method ", (
                replace(ok, method=m) for m in ALL_METHODS if m not in rule["methods"]
            )),
            ("wrong-path", "path ", (replace(ok, path=p) for p in _wrong_paths(rule))),
            ("missing-header", "header ", (
                replace(ok, headers={k: v for k, v in ok.headers.items() if k != name})
                for name in sorted(rule["headers"])
            )),
            ("outside-time-window", "outside ", (replace(ok, now_ns=t) for t in _outside_times(rule))),
        ]
        # The first candidate that fails this grant for the intended reason and that no other
        # grant of the agent allows; none when every candidate is granted elsewhere.
        for kind, failure, candidates in variants:
            for req in candidates:
                if rule_failure(rule, req).startswith(failure) and not decider.allows(req):
                    yield case(kind, rule, req)
                    break
        unknown = f"spiffe://{platform.config.trust_domain}/agentpassport-test/unknown/{agent.name}"
        yield case("unknown-spiffe-id", rule, replace(ok, principal=unknown))


def rego_cases(platform: Platform) -> list[RegoCase]:
    """Every generated case, in a stable order (service, agent, grant, kind).

    Linear in grants: whether another grant allows a candidate request is one indexed lookup
    (:class:`Decider`), and denials by entries with many rules assert this grant's failure
    rather than the full reason listing every rule.
    """
    data = with_revocations(stack_data(platform))  # what a gateway loads: its data and an empty list
    decider = Decider(data)
    cases: list[RegoCase] = []
    services = gateway_services(platform)
    for service in services:
        principals = principals_of(data, service.name)
        callers = {a.name: a for a, _, _ in platform.http_grants_by_service.get(service.name, ())}
        for agent in callers.values():  # active agents in order, each once: only this service's callers
            entry = principals.get(agent.identity.spiffe_id)
            if entry is not None:
                cases.extend(_agent_cases(platform, decider, entry, service, agent))
    if services:
        first = services[0]
        entries = principals_of(data, first.name)
        if entries:
            entry_id, entry = next(iter(entries.items()))
            rule = entry["rules"][0]
            ok = Request(
                service=first.name, principal=entry_id, method=next(iter(rule["methods"])),
                path=_probe_path(rule), headers=dict(rule["headers"]), now_ns=_allowed_time(rule),
            )
        else:  # a base stack: the shards hold every entry
            ok = Request(service=first.name, principal=f"spiffe://{platform.config.trust_domain}/agentpassport-test/"
                         "unknown", method="GET", path="/", headers={}, now_ns=_at(0, "12:00", "UTC"))
        authority = _authority(platform, first)
        for kind, req in (
            ("no-spiffe-id", replace(ok, principal="")),
            ("unknown-service", replace(ok, service="agentpassport-unknown")),
        ):
            cases.append(RegoCase(
                name=f"test_{_ident(kind)}", kind=kind, request=req,
                input=check_request(req, authority), expected=decider.decision(req)[0],
            ))
        # The kill switch: a revoked SPIFFE ID is denied whatever it was granted, and a gateway
        # that has not loaded the revocation list denies everything (fail closed).
        overrides: list[tuple[str, dict[str, Any]]] = [("revocation-list-not-loaded", {})]
        if entries:
            overrides.insert(0, ("revoked-spiffe-id", {"spiffeIds": {ok.principal: {
                "agent": "agentpassport-test", "revokedAt": "2026-01-12T12:00:00Z"}}}))
        for kind, revocations in overrides:
            mocked = {**data, "agentpassport": {**data["agentpassport"], "revocations": revocations}}
            cases.append(RegoCase(
                name=f"test_{_ident(kind)}", kind=kind, request=ok, input=check_request(ok, authority),
                expected=decide(mocked, ok), revocations=revocations,
            ))
    return cases


def _term(value: Any, indent: str) -> str:
    """A JSON value as a Rego term, laid out the way ``opa fmt`` lays it out."""
    inner = indent + "\t"
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_term(v, inner)},\n" for k, v in sorted(value.items())]
        return "{\n" + "".join(items) + indent + "}"
    if isinstance(value, list) and value:
        return "[\n" + "".join(f"{inner}{_term(v, inner)},\n" for v in value) + indent + "]"
    return json.dumps(value, ensure_ascii=False)


DENIED_BY = """\
# A denial whose reason starts with the prefix and names the failure of the grant under test.
# Used for agents with many grants on one service: their full reason lists every grant.
denied_by(decision, prefix, failure) if {
\tdecision.allowed == false
\tdecision.http_status == 403
\tstartswith(decision.reason, prefix)
\tcontains(decision.reason, failure)
}"""


def render_tests(cases: Iterable[RegoCase]) -> str:
    """``policy_test.rego``: one test rule per case, mocking the input and the clock."""
    out = [
        "# Agent Passport: generated tests for policy.rego against data.json; do not edit.",
        "# Every http grant gets an allow case and deny cases (wrong method, wrong path,",
        "# missing header, outside the time window, unknown SPIFFE ID) where they apply; a revoked",
        "# SPIFFE ID and a revocation list that is not loaded are denied.",
        f"package {PACKAGE}_test",
    ]
    cases = list(cases)
    if cases:  # an unused import is an error under `opa check --strict`
        out += ["", f"import data.{PACKAGE}"]
    if any(c.reason_contains is not None for c in cases):
        out += ["", DENIED_BY]
    decision = f"{PACKAGE.rsplit('.', 1)[1]}.decision"
    for c in cases:
        if c.reason_contains is None:
            check = f"\t{decision} == {_term(c.expected, chr(9))}"
        else:
            check = (f"\tdenied_by({decision}, {json.dumps(c.expected['reason'], ensure_ascii=False)}, "
                     f"{json.dumps(c.reason_contains, ensure_ascii=False)})")
        mock = ([f"\t\twith data.agentpassport.revocations as {_term(c.revocations, chr(9) * 2)}"]
                if c.revocations is not None else [])
        out += [
            "",
            f"# {c.kind}: {c.request.method} {c.request.path} as {c.request.principal or '(no SPIFFE ID)'}",
            f"{c.name} if {{",
            check,
            f"\t\twith input as {_term(c.input, chr(9) * 2)}",
            f"\t\twith time.now_ns as {c.request.now_ns}",
            *mock,
            "}",
        ]
    return "\n".join(out) + "\n"
