"""Anomaly rules: per-agent detection rules (KQL) over the ECS documents the log pipeline produces."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from components.platform_model import Platform, ResolvedAgent
from components.render.observe.alerts import runbook_anchor
from components.render.observe.common import VAULT_SELF_PATHS
from components.render.vault import database_mount
from components.render.yamlout import dump_json

# --------------------------------------------------------------------------- anomaly rules


def kql_quote(value: str) -> str:
    """A KQL quoted phrase (exact match)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def kql_wildcard(value: str) -> str:
    """An unquoted KQL value where only '*' is a wildcard (other specials escaped)."""
    return re.sub(r'([\\():<>"\s{}])', r"\\\1", value)


def kql_literal(value: str) -> str:
    """An unquoted KQL value matching ``value`` literally: every special escaped, '*' included
    (append a bare '*' to make it a prefix)."""
    return re.sub(r'([\\():<>"*\s{}])', r"\\\1", value)


def _any(field_name: str, values: Iterable[str]) -> str:
    vals = list(values)
    if len(vals) == 1:
        return f"{field_name}: {vals[0]}"
    return f"{field_name}: ({' or '.join(vals)})"


def vault_allowed_paths(platform: Platform, agent: ResolvedAgent) -> list[str]:
    """Vault paths (KQL values) the agent's token may touch according to its manifest."""
    vals = [kql_quote(p) for p in VAULT_SELF_PATHS]
    for _, g in agent.grants_of("database"):
        vals.append(kql_quote(f"{database_mount(g.cluster)}/creds/{agent.identity.database_role(g)}"))
    for _, g in agent.grants_of("vault"):
        path = g.path.replace("+", "*")
        vals.append(kql_wildcard(path) if "*" in path else kql_quote(path))
    return sorted(set(vals))


def http_allowed(platform: Platform, agent: ResolvedAgent) -> list[str]:
    """KQL clauses for each declared call through a gateway (service, methods, paths)."""
    clauses = []
    for _, g in agent.grants_of("http"):
        svc = platform.service(g.service)
        if svc is None or not svc.manifest.spec.gateway:
            continue
        gw = platform.gateway(svc)
        paths = []
        for p in g.paths:
            if p.kind == "exact":
                paths.append(kql_quote(p.value))
            else:
                # a '*' written in the path is a character of it, never a KQL wildcard
                paths.extend([kql_quote(p.value), kql_literal(p.value.rstrip("/")) + "/*"])
        clauses.append(
            f"(agentpassport.destination.spiffe_id: {kql_quote(gw.spiffe_id)} and "
            f"{_any('http.request.method', sorted(g.methods))} and {_any('url.path', paths)})"
        )
    return clauses


def _rule(platform: Platform, rule_id: str, name: str, description: str, query: str, severity: str,
          section: str, agent: ResolvedAgent | None = None, **extra: Any) -> dict[str, Any]:
    obs = platform.config.observe
    risk = {"low": 21, "medium": 47, "high": 73, "critical": 99}[severity]
    tags = ["agent-passport", f"stack:{platform.stack}"]
    if agent is not None:
        tags += [f"agent:{agent.name}", f"team:{agent.identity.team}"]
    rule: dict[str, Any] = {
        "rule_id": rule_id,
        "name": name,
        "description": description,
        "type": "query",
        "language": "kuery",
        "query": query,
        "index": [obs.logs.index_pattern],
        "severity": severity,
        "risk_score": risk,
        "interval": "5m",
        "from": "now-6m",
        "enabled": True,
        "tags": tags,
        "references": [f"{obs.runbook_base_url}#{runbook_anchor(section)}"],
        "max_signals": 100,
        "version": 1,
    }
    if agent is not None:
        rule["note"] = (f"Owner: {agent.manifest.metadata.owner} (team {agent.identity.team}). "
                        f"Manifest: {agent.source.file}. SPIFFE ID: {agent.identity.spiffe_id}.")
    rule.update(extra)
    return rule


def anomaly_rules(platform: Platform) -> dict[str, Any]:
    """Detection rules generated from the manifests (Kibana security detection engine format)
    and per-agent absence rules (Kibana alerting ``.es-query``)."""
    cfg = platform.config
    t = cfg.observe.thresholds
    stack = platform.stack
    rules: list[dict[str, Any]] = []
    absence: list[dict[str, Any]] = []
    for a in platform.active_agents:
        sid = kql_quote(a.identity.spiffe_id)
        who = f"(spiffe_id: {sid} or agentpassport.agent: {kql_quote(a.name)})"
        outside = [f'(event.dataset: "opa.decision" and spiffe_id: {sid} and event.outcome: "failure")']
        http = http_allowed(platform, a)
        if http:
            outside.append(f'(event.dataset: "opa.decision" and spiffe_id: {sid} and event.outcome: "success" '
                           f"and not ({' or '.join(http)}))")
        else:
            outside.append(f'(event.dataset: "opa.decision" and spiffe_id: {sid} and event.outcome: "success")')
        outside.append(
            f'(event.dataset: "vault.audit" and agentpassport.vault.log_type: "request" and {who} '
            f'and not event.action: "vault-login" and not {_any("url.path", vault_allowed_paths(platform, a))})'
        )
        rules.append(_rule(
            platform, f"agentpassport-{stack}-{a.name}-outside-grants",
            f"Agent Passport: {a.name} acted outside its declared grants",
            f"An OPA decision or a Vault request by {a.name} ({a.identity.spiffe_id}) that its manifest "
            "does not declare: a denied call, an allowed call no grant explains (policy drift), or a "
            "Vault path beyond its database roles and vault grants.",
            " or ".join(outside), "high", "Anomaly: outside declared grants", a,
        ))
        nets = list(a.manifest.spec.source_networks)
        if nets:
            rules.append(_rule(
                platform, f"agentpassport-{stack}-{a.name}-outside-networks",
                f"Agent Passport: {a.name} used from outside its source networks",
                f"Requests by {a.name} from an address outside {', '.join(nets)} (spec.sourceNetworks): "
                "its credentials may be in use elsewhere.",
                f"{who} and source.ip: * and not {_any('source.ip', [kql_quote(n) for n in nets])}",
                "high", "Anomaly: outside source networks", a,
            ))
        window = int(t.renewal_grace_factor * a.identity.x509_svid_ttl_seconds / 2)
        query = {"query": {"bool": {"filter": [
            {"term": {"spiffe_id": a.identity.spiffe_id}},
            {"terms": {"event.action": ["x509-svid-created", "x509-svid-renewed"]}},
        ]}}}
        absence.append({
            "name": f"agentpassport-{stack}-{a.name}-svid-not-renewed",
            "rule_type_id": ".es-query",
            "consumer": "alerts",
            "schedule": {"interval": "1m"},
            "tags": ["agent-passport", f"stack:{stack}", f"agent:{a.name}"],
            "params": {
                "searchType": "esQuery",
                "index": [cfg.observe.logs.index_pattern],
                "timeField": "@timestamp",
                "esQuery": dump_json(query).strip(),
                "size": 0,
                "threshold": [1],
                "thresholdComparator": "<",
                "timeWindowSize": window,
                "timeWindowUnit": "s",
            },
        })
    if platform.suspended_agents:
        ids = [kql_quote(a.identity.spiffe_id) for a in platform.suspended_agents]
        names = [kql_quote(a.name) for a in platform.suspended_agents]
        rules.append(_rule(
            platform, f"agentpassport-{stack}-suspended-identity-used",
            "Agent Passport: a suspended identity was used",
            "An identity whose manifest is suspended (" + ", ".join(a.name for a in platform.suspended_agents)
            + ") appears in an OPA decision, a Vault request or an SVID renewal. Revoke it now: "
            "`passport revoke <agent> --stack " + stack + " --yes`.",
            f"{_any('spiffe_id', ids)} or {_any('agentpassport.agent', names)}",
            "critical", "Anomaly: suspended or deleted identity used",
        ))
    known = [kql_quote(a.identity.spiffe_id) for a in platform.agents]
    unknown = ('(event.dataset: "opa.decision" or event.dataset: "vault.audit") and spiffe_id: '
               + kql_wildcard(f"spiffe://{cfg.trust_domain}/") + "*")
    if known:
        unknown += f" and not {_any('spiffe_id', known)}"
    rules.append(_rule(
        platform, f"agentpassport-{stack}-unknown-identity-used",
        "Agent Passport: an identity with no manifest was used",
        f"A SPIFFE ID of {cfg.trust_domain} with no manifest in stack {stack} (a deleted agent, or an "
        "identity minted outside Agent Passport) called a gateway or Vault.",
        unknown, "critical", "Anomaly: suspended or deleted identity used",
    ))
    rules.append(_rule(
        platform, f"agentpassport-{stack}-opa-deny-burst",
        "Agent Passport: OPA deny spike for one agent",
        f"More than {t.deny_burst_per_agent} denied authorization checks for one SPIFFE ID in 5 minutes.",
        'event.dataset: "opa.decision" and event.outcome: "failure"', "medium", "AgentPassportOpaDenySpike",
        type="threshold", threshold={"field": ["spiffe_id"], "value": t.deny_burst_per_agent},
    ))
    rules.append(_rule(
        platform, f"agentpassport-{stack}-vault-lease-burst",
        "Agent Passport: Vault lease spike for one role",
        f"More than {t.lease_burst_per_role} database credential requests for one Vault role in 5 minutes "
        "(a healthy agent asks about once per credential TTL).",
        'event.dataset: "vault.audit" and event.action: "vault-database-credentials" '
        'and agentpassport.vault.log_type: "request"',
        "medium", "AgentPassportVaultLeaseSpike",
        type="threshold", threshold={"field": ["url.path"], "value": t.lease_burst_per_role},
    ))
    rules.sort(key=lambda r: r["rule_id"])
    absence.sort(key=lambda r: r["name"])
    return {"detectionRules": rules, "alertingRules": absence}


def detection_rules_ndjson(platform: Platform) -> str:
    """The detection rules as NDJSON for ``POST /api/detection_engine/rules/_import``."""
    import json

    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in anomaly_rules(platform)["detectionRules"])
