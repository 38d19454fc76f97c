"""Generated tests (``policy_test.rego``): per http grant an allow case and the deny cases that apply,
checked by real OPA.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any
from zoneinfo import ZoneInfo

from components.manifest.loader import SourcedService
from components.manifest.models import ALL_WEEKDAYS
from components.platform_model import Platform, ResolvedAgent
from components.render.rego.data import gateway_services, principals_of, stack_data, with_revocations
from components.render.rego.policy import ALL_METHODS, PACKAGE
from components.render.rego.reference import Decider, Request, check_request, decide, rule_failure

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
    """A JSON value as a Rego term, laid out the way ``opa fmt`` lays it out.

    Text is what ``json.dumps`` writes (keys ASCII-escaped, values not), without a json.dumps
    call per leaf: at 50,000 agents the generated tests have millions of leaves.
    """
    if isinstance(value, str):
        return encode_basestring(value)
    inner = indent + "\t"
    if isinstance(value, dict) and value:
        items = [f"{inner}{encode_basestring_ascii(k) if isinstance(k, str) else json.dumps(k)}: "
                 f"{_term(v, inner)},\n" for k, v in sorted(value.items())]
        return "{\n" + "".join(items) + indent + "}"
    if isinstance(value, list) and value:
        return "[\n" + "".join(f"{inner}{_term(v, inner)},\n" for v in value) + indent + "]"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if type(value) is int:
        return int.__repr__(value)
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
