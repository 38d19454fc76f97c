"""Alert and recording rules (PrometheusRule), each alert with its runbook section."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from components.durations import format_duration, seconds
from components.platform_model import Platform
from components.render.observe.common import (
    _NOT_REJECTED,
    JOB_LINKERD_IDENTITY,
    JOB_OPA,
    JOB_SPIRE_AGENT,
    JOB_SPIRE_SERVER,
    JOB_VAULT,
    MONITORING_API,
    SPIRE_AGENT_DAEMONSET,
    _meta,
)
from components.render.observe.metrics import gateway_namespaces
from components.render.vault import database_mount

# --------------------------------------------------------------------------- alert rules


@dataclass(frozen=True)
class Alert:
    """One alerting rule; ``runbook`` is the section of docs/runbook.md that handles it."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def runbook(self) -> str:
        return runbook_anchor(self.name)


def runbook_anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading (lowercase, punctuation dropped, spaces to '-')."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def _sel(job: str, **matchers: str) -> str:
    """A label selector ``{job="...", k="v"}``; values starting with '~' are regex, '!' negated."""
    parts = [f'job="{job}"']
    for key, value in matchers.items():
        if value.startswith("!~"):
            parts.append(f'{key}!~"{value[2:]}"')
        elif value.startswith("~"):
            parts.append(f'{key}=~"{value[1:]}"')
        elif value.startswith("!"):
            parts.append(f'{key}!="{value[1:]}"')
        else:
            parts.append(f'{key}="{value}"')
    return "{" + ", ".join(parts) + "}"


def _num(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def renewal_window_seconds(platform: Platform) -> int:
    """renewalGraceFactor x the longest renewal point (half the X.509-SVID TTL) in the fleet."""
    ttls = [a.identity.x509_svid_ttl_seconds for a in platform.active_agents]
    longest = max(ttls) if ttls else seconds(platform.config.spire.default_x509_svid_ttl)
    return int(platform.config.observe.thresholds.renewal_grace_factor * longest / 2)


def spire_ca_min_remaining_seconds(platform: Platform) -> int:
    t = platform.config.observe.thresholds
    if t.spire_ca_min_remaining is not None:
        return seconds(t.spire_ca_min_remaining)
    return seconds(platform.config.spire.ca_ttl) // 12


def alerts(platform: Platform) -> dict[str, list[Alert]]:
    """Alert groups by name; thresholds from ``observe.thresholds``; only deployed subsystems."""
    cfg = platform.config
    t = cfg.observe.thresholds
    on = cfg.subsystems
    spike_for = t.alert_for
    groups: dict[str, list[Alert]] = {}

    if on.spire:
        sign = f"spire_server_server_ca_sign_x509_svid{_sel(JOB_SPIRE_SERVER)}"
        calls = "spire_server_rpc_agent_v1_agent_attest_agent|spire_server_rpc_svid_v1_svid_batch_new_x509svid"
        failed = "{" + f'__name__=~"{calls}", job="{JOB_SPIRE_SERVER}", status!~"{_NOT_REJECTED}"' + "}"
        total = "{" + f'__name__=~"{calls}", job="{JOB_SPIRE_SERVER}"' + "}"
        wl = "spire_agent_rpc_workload_api_fetch_x509svid|spire_agent_rpc_workload_api_fetch_jwtsvid"
        wl_failed = "{" + f'__name__=~"{wl}", job="{JOB_SPIRE_AGENT}", status!~"{_NOT_REJECTED}"' + "}"
        wl_total = "{" + f'__name__=~"{wl}", job="{JOB_SPIRE_AGENT}"' + "}"
        sync = "spire_agent_manager_sync_fetch_svids_updates"
        renewal = renewal_window_seconds(platform)
        replicas = cfg.spire.replicas
        ds = SPIRE_AGENT_DAEMONSET
        ns = cfg.spire.namespace
        groups["agentpassport-spire"] = [
            Alert(
                "AgentPassportSvidIssuanceSpike",
                f"sum(rate({sign}[5m])) > {_num(t.svid_issuance_spike_factor)} * "
                f"(sum(rate({sign}[5m] offset 1h)) or vector(0))\n"
                f"and sum(rate({sign}[5m])) > {_num(t.svid_issuance_min_rate)}",
                spike_for, "warning",
                "X.509-SVID issuance is {{ $value | humanize }}/s, a spike against an hour ago",
                "SPIRE is signing X.509-SVIDs far faster than an hour ago: a provisioning storm "
                "(mass restart, new node pool) or identities being harvested by a rogue workload.",
            ),
            Alert(
                "AgentPassportSvidRejections",
                f"sum(rate({failed}[5m]))\n/ sum(rate({total}[5m])) > {_num(t.rejection_ratio)}",
                t.rejection_for, "warning",
                "{{ $value | humanizePercentage }} of node attestations / SVID requests are rejected",
                "The SPIRE server rejects a sustained share of node attestations or X.509-SVID "
                "signing requests: misconfigured attestors, a node outside its allowed selectors, "
                "or something probing for identities.",
            ),
            Alert(
                "AgentPassportWorkloadAttestationRejections",
                f"sum by (node) (rate({wl_failed}[5m]))\n/ sum by (node) (rate({wl_total}[5m])) "
                f"> {_num(t.rejection_ratio)}",
                t.rejection_for, "warning",
                "SPIRE agent on {{ $labels.node }} rejects {{ $value | humanizePercentage }} of Workload API calls",
                "Workloads on the node ask the SPIRE agent for SVIDs they are not registered for "
                "(PermissionDenied): a pod whose selectors no longer match its registration, a "
                "suspended agent still running, or a process trying to obtain someone else's identity.",
            ),
            Alert(
                "AgentPassportSvidRenewalFailing",
                f"sum by (node) (rate({sync}{_sel(JOB_SPIRE_AGENT, status='!OK')}[5m])) > 0\n"
                f"unless sum by (node) (rate({sync}{_sel(JOB_SPIRE_AGENT, status='OK')}[5m])) > 0",
                format_duration(renewal), "critical",
                "SPIRE agent on {{ $labels.node }} has not renewed SVIDs for "
                f"{format_duration(renewal)}",
                f"The SPIRE agent's SVID sync has failed for {format_duration(renewal)}, "
                f"{_num(t.renewal_grace_factor)} times the longest renewal point in the fleet: its "
                "agents' X.509-SVIDs expire without replacement. Per-agent renewal gaps are the "
                "log rule agentpassport-<stack>-<agent>-svid-not-renewed.",
            ),
            Alert(
                "AgentPassportSpireCaExpiring",
                f"min(spire_server_manager_x509_ca_rotate_expiration{_sel(JOB_SPIRE_SERVER)}) - time() "
                f"< {spire_ca_min_remaining_seconds(platform)}",
                "5m", "critical",
                "SPIRE's X.509 CA expires in {{ $value | humanizeDuration }}",
                "SPIRE should have activated its next CA long before now; the UpstreamAuthority "
                "may be failing to sign it. When it expires every SVID in the trust domain fails.",
            ),
            Alert(
                "AgentPassportSpireServerDown",
                f"(sum(up{_sel(JOB_SPIRE_SERVER)}) or vector(0)) < {replicas}",
                "5m", "critical",
                "{{ $value }} of " + f"{replicas} SPIRE server replicas are up",
                "SPIRE server replicas are not scraping. With none up, no SVID is issued or renewed "
                "and agents lose their identities at expiry.",
            ),
            Alert(
                "AgentPassportSpireAgentDown",
                f"up{_sel(JOB_SPIRE_AGENT)} == 0\n"
                f'or (kube_daemonset_status_desired_number_scheduled{{namespace="{ns}", daemonset="{ds}"}}\n'
                f'  - kube_daemonset_status_number_ready{{namespace="{ns}", daemonset="{ds}"}}) > 0',
                "5m", "critical",
                "SPIRE agent down on {{ $labels.node }}",
                "A SPIRE agent is down or not ready: the agents on its node cannot renew their "
                "SVIDs and new pods there get no identity.",
            ),
        ]

    trust = [
        Alert(
            "AgentPassportCertificateExpiring",
            "min by (certificate) (agentpassport_certificate_expiry_timestamp_seconds) - time() "
            f"< {seconds(t.certificate_min_remaining)}",
            "1h", "warning",
            "{{ $labels.certificate }} expires in {{ $value | humanizeDuration }}",
            "The upstream intermediate, the trust bundle or the Linkerd trust anchor is close "
            "to expiry. Re-issue it (pulumi up in its early-renewal window) and roll the bundle.",
        ),
    ]
    if on.mesh:
        trust.append(Alert(
            "AgentPassportLinkerdIssuerExpiring",
            f"min(issuer_cert_ttl_seconds{_sel(JOB_LINKERD_IDENTITY)}) < {seconds(t.certificate_min_remaining)}",
            "1h", "warning",
            "Linkerd's identity issuer expires in {{ $value | humanizeDuration }}",
            "When the issuer expires, new proxies get no mesh identity and existing ones fail "
            "at their next renewal.",
        ))
    groups["agentpassport-trust"] = trust

    if on.vault:
        mounts = "|".join(sorted(f"{database_mount(n)}/" for n in cfg.vault.databases))
        leases = f"vault_secret_lease_creation{_sel(JOB_VAULT, mount_point='~' + (mounts or 'db-.*/'))}"
        logins = f"vault_token_creation{_sel(JOB_VAULT, mount_point='auth/' + cfg.vault.jwt_mount + '/')}"
        if cfg.vault.auth == "cert":
            logins = f"vault_token_creation{_sel(JOB_VAULT, mount_point='auth/' + cfg.vault.cert_mount + '/')}"
        groups["agentpassport-vault"] = [
            Alert(
                "AgentPassportVaultLeaseSpike",
                f"sum by (mount_point) (rate({leases}[5m])) > {_num(t.lease_spike_factor)} * "
                f"(sum by (mount_point) (rate({leases}[5m] offset 1h)))\n"
                f"and sum by (mount_point) (rate({leases}[5m])) > {_num(t.lease_min_rate)}",
                spike_for, "warning",
                "Vault lease creation on {{ $labels.mount_point }} at {{ $value | humanize }}/s",
                "Database credentials are minted far faster than an hour ago. Vault's metrics "
                "stop at the mount; the role (agent) is in the log rule "
                "agentpassport-<stack>-vault-lease-burst.",
            ),
            Alert(
                "AgentPassportVaultLoginSpike",
                f"sum(rate({logins}[5m])) > {_num(t.lease_spike_factor)} * "
                f"(sum(rate({logins}[5m] offset 1h)) or vector(0))\n"
                f"and sum(rate({logins}[5m])) > {_num(t.lease_min_rate)}",
                spike_for, "warning",
                "Agent logins to Vault at {{ $value | humanize }}/s",
                "Tokens are created through the agents' SVID auth mount far faster than an hour "
                "ago: agents crash-looping, or SVIDs being replayed.",
            ),
        ]

    storm = storm_alerts(platform)
    if storm:
        groups["agentpassport-storm"] = storm

    if on.authz and gateway_namespaces(platform):
        groups["agentpassport-authz"] = [
            Alert(
                "AgentPassportAuthzGatewayDown",
                f"up{_sel(JOB_OPA)} == 0\n"
                f"or (count by (namespace, gateway) (up{_sel(JOB_OPA)}) unless "
                f"count by (namespace, gateway) (up{_sel(JOB_OPA)} == 1))",
                "5m", "critical",
                "Authorization gateway {{ $labels.gateway }} ({{ $labels.pod }}) is down",
                "OPA in an Envoy + OPA gateway does not answer: the gateway fails closed and every "
                "call through it is refused. Deny spikes per agent come from the decision logs "
                "(rule agentpassport-<stack>-opa-deny-burst); Envoy and OPA export no per-caller metric.",
            ),
        ]
    return groups


SPIRE_SIGN_THROTTLE = "spire_server_rateLimit_svid_v1_svid_batch_new_x509svid_elapsed_time"
"""How long agents' X.509 signing requests wait in SPIRE's per-node limiter (a summary, in ms;
the name as spire-server 1.15.3 exports it: tests/e2e/test_storm_e2e.py reads it)."""
THROTTLE_WAIT_MS = 1000


def storm_alerts(platform: Platform) -> list[Alert]:
    """Storm alerts, in the order they fire in a cold start (docs/scale.md): the servers near the
    model's capacity, SPIRE throttling a node, a Vault quota refusing, leases piling up. The
    thresholds are the stack's ``capacity`` coefficients, as ``passport capacity`` uses them."""
    from components.capacity import STORM_WARN, chain_model

    cfg = platform.config
    model = chain_model(cfg)
    on = cfg.subsystems
    out: list[Alert] = []
    if on.spire:
        signs = "{" + f'__name__=~"spire_server_server_ca_sign_x509_svid|spire_server_server_ca_sign_jwt_svid", ' \
            f'job="{JOB_SPIRE_SERVER}"' + "}"
        capacity = model.spire_servers * model.spire_signings_per_server
        out += [
            Alert(
                "AgentPassportSpireNearCapacity",
                f"sum(rate({signs}[1m])) > {_num(STORM_WARN * capacity)}",
                "2m", "warning",
                "SPIRE signs {{ $value | humanize }} SVIDs/s, above 80% of the servers' measured capacity",
                f"The {model.spire_servers} SPIRE server(s) sign near the {capacity:g}/s the stack's capacity "
                "section says they sustain: a cold start or a renewal wave. SVIDs arrive late; those that "
                "expire first fail renewal.",
            ),
            Alert(
                "AgentPassportSpireSigningThrottled",
                f'max({SPIRE_SIGN_THROTTLE}{_sel(JOB_SPIRE_SERVER, quantile="0.99")}) > {THROTTLE_WAIT_MS}',
                "2m", "warning",
                "Agents wait {{ $value | humanize }} ms in SPIRE's signing rate limit",
                "SPIRE's per-node limit (500 signings/s per agent IP) is holding agents back: a node "
                "(or every node behind one source-NAT IP) asks for more SVIDs than the limit lets through.",
            ),
        ]
    if on.vault:
        quotas = f"vault_quota_rate_limit_violation{_sel(JOB_VAULT, name='~agent-passport-.*')}"
        mounts = "|".join(sorted(f"{database_mount(n)}/" for n in cfg.vault.databases)) or "db-.*/"
        creates = f"vault_secret_lease_creation{_sel(JOB_VAULT, mount_point='~' + mounts)}"
        out += [
            Alert(
                "AgentPassportVaultDbChurnNearCapacity",
                f"sum by (mount_point) (rate({creates}[1m])) > {_num(STORM_WARN * model.db_creates_per_s)}",
                "2m", "warning",
                "Database credentials on {{ $labels.mount_point }} at {{ $value | humanize }}/s, above 80% of "
                "the measured capacity",
                f"Vault issues credentials near the {model.db_creates_per_s:g}/s per database cluster the stack's "
                "capacity section says it sustains (each a CREATE ROLE and its GRANTs, and a DROP ROLE later).",
            ),
            Alert(
                "AgentPassportVaultQuotaRejecting",
                f"sum by (name) (rate({quotas}[5m])) > 0",
                "1m", "warning",
                "Vault quota {{ $labels.name }} refuses {{ $value | humanize }} requests/s with 429",
                "A rate-limit quota on the agents' login path or on database credentials is refusing "
                "requests: a cold start above the window the quotas are sized for, or a client in a retry loop.",
            ),
            Alert(
                "AgentPassportVaultLeasesHigh",
                f"max(vault_expire_num_leases{_sel(JOB_VAULT)}) > {_num(STEADY_WARN_LEASES * model.lease_ceiling)}",
                "10m", "warning",
                "Vault holds {{ $value | humanize }} leases",
                f"Outstanding leases are above half of the stack's lease ceiling ({model.lease_ceiling}); "
                "Vault loads every lease when a node becomes active, so a failover takes longer.",
            ),
        ]
    return out


STEADY_WARN_LEASES = 0.5


def recording_rules(platform: Platform, certificate_expiries: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Facts from the manifests and the deployment that Prometheus cannot scrape.

    ``agentpassport_agents`` counts active agents by platform and X.509-SVID TTL (the
    dashboard's "agents by TTL"); ``agentpassport_certificate_expiry_timestamp_seconds`` holds
    the NotAfter of each certificate the deployment knows (upstream chain, trust bundle,
    Linkerd anchor).
    """
    rules: list[dict[str, Any]] = []
    counts = Counter((a.identity.platform, a.identity.x509_svid_ttl_seconds) for a in platform.active_agents)
    for (plat, ttl), n in sorted(counts.items()):
        rules.append({"record": "agentpassport_agents", "expr": f"vector({n})",
                      "labels": {"platform": plat, "x509_svid_ttl": format_duration(ttl)}})
    rules.append({"record": "agentpassport_agents_suspended", "expr": f"vector({len(platform.suspended_agents)})"})
    for name, not_after in sorted((certificate_expiries or {}).items()):
        rules.append({"record": "agentpassport_certificate_expiry_timestamp_seconds",
                      "expr": f"vector({int(not_after)})", "labels": {"certificate": name}})
    return rules


def rule_groups(platform: Platform, certificate_expiries: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Prometheus rule groups (the body of a PrometheusRule and of a plain rule file)."""
    base = platform.config.observe.runbook_base_url
    static = {"stack": platform.stack, "environment": platform.config.environment}
    groups: list[dict[str, Any]] = [{
        "name": "agentpassport-facts",
        "interval": "5m",
        "rules": recording_rules(platform, certificate_expiries),
    }]
    for name, items in alerts(platform).items():
        groups.append({
            "name": name,
            "rules": [
                {
                    "alert": a.name,
                    "expr": a.expr,
                    "for": a.for_,
                    "labels": dict(sorted({**static, "severity": a.severity, **a.labels}.items())),
                    "annotations": {
                        "summary": a.summary,
                        "description": a.description,
                        "runbook_url": f"{base}#{a.runbook}",
                    },
                }
                for a in items
            ],
        })
    return groups


def prometheus_rule(platform: Platform, certificate_expiries: Mapping[str, int] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": MONITORING_API,
        "kind": "PrometheusRule",
        "metadata": _meta(platform, "agentpassport-identity-health"),
        "spec": {"groups": rule_groups(platform, certificate_expiries)},
    }
