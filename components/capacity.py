"""Storm and churn estimate for a stack, over the whole credential chain (pure).

The model (docs/scale.md explains it, docs/benchmarks.md has the measured coefficients):

* **SPIRE signings.** Every workload instance holds one X.509-SVID, renewed at half of its TTL,
  and one JWT-SVID per audience, refreshed at half of its TTL. A cold start (every instance
  starting within ``startup_window``: after a SPIRE or node-pool outage, a cluster-wide rollout)
  asks for ``1 + audiences`` signings per instance. Capacity is ``spire.replicas x
  capacity.spireSigningsPerSecond``; each node's agent is, besides, throttled by SPIRE 1.15 to
  500 signings/s per agent IP (``ratelimit.signing``, a fixed figure in the server).
* **Vault logins.** An instance of an agent with a database or Vault grant logs in with a fresh
  SVID once per token TTL (agents cannot renew their tokens: docs/vault.md), and once each at a
  cold start. Only the active Vault node serves logins (standbys forward writes).
* **Database credential churn.** Agents cannot renew leases either: each database grant of each
  instance reads a new credential once per ``ttl``, a ``CREATE ROLE`` + GRANTs, and the expired
  one is revoked (REVOKE, ``pg_terminate_backend``, ``DROP ROLE``): creates and drops per second
  per PostgreSQL cluster. A cold start creates one per grant-instance.
* **Leases.** One outstanding lease per grant-instance, plus one per instance for service
  tokens (batch tokens have none), against ``capacity.leaseCeiling``.

A stack exceeding 50 % of a capacity in steady state, or 80 % in a cold start, gets a warning
with the concrete fix. Everything is counted from the manifests (no Platform is resolved): a
50,000-agent fleet takes seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from components.config.capacity import (
    DB_CREATES_PER_SECOND,
    DB_DROPS_PER_SECOND,
    LEASE_CEILING,
    SPIRE_SIGNINGS_PER_SERVER,
    VAULT_LOGINS_PER_SECOND,
)
from components.durations import seconds

if TYPE_CHECKING:  # the estimate needs counts: building a Platform is only one way to get them
    from components.config import StackConfig
    from components.manifest.loader import ManifestSet
    from components.manifest.models import AgentSpec
    from components.platform_model import Platform

STEADY_WARN = 0.5
STORM_WARN = 0.8
SPIRE_SIGNING_LIMIT_PER_IP = 500.0
"""SPIRE 1.15.3 ``pkg/server/api/limits``: X.509 and JWT signing, each, per caller IP (agent node)."""
SPIRE_ATTESTATION_LIMIT_PER_IP = 1.0
"""Node attestations per second per IP; with ``ratelimit.attestation`` on."""


# --------------------------------------------------------------------------- what one agent asks for


@dataclass(frozen=True)
class DbGrantLoad:
    cluster: str
    ttl_s: int


@dataclass(frozen=True)
class AgentLoad:
    """One active agent's SVID TTLs, JWT audiences, whether it logs in to Vault, and its
    database grants."""

    name: str
    x509_ttl_s: int
    jwt_ttl_s: int
    audiences: int
    vault_login: bool
    db: tuple[DbGrantLoad, ...] = ()


def agent_load(name: str, spec: AgentSpec) -> AgentLoad:
    i = spec.identity
    db = tuple(DbGrantLoad(g.database.cluster, seconds(g.database.ttl)) for g in spec.grants if g.database)
    vault = bool(db) or any(g.vault is not None for g in spec.grants)
    return AgentLoad(name, seconds(i.x509_svid_ttl), seconds(i.jwt_svid_ttl), len(i.jwt_audiences), vault, db)


# --------------------------------------------------------------------------- the model's inputs


@dataclass(frozen=True)
class ChainModel:
    """The servers and their coefficients (``agent-passport:capacity`` in the stack config)."""

    spire_servers: int = 1
    spire_signings_per_server: float = SPIRE_SIGNINGS_PER_SERVER
    vault: bool = True
    vault_logins_per_s: float = VAULT_LOGINS_PER_SECOND
    db_creates_per_s: float = DB_CREATES_PER_SECOND
    db_drops_per_s: float = DB_DROPS_PER_SECOND
    lease_ceiling: int = LEASE_CEILING
    token_ttl_s: int = 900
    service_tokens: bool = True
    instances_per_agent: int = 1
    instances_per_node: int = 110
    startup_window_s: int = 60


def chain_model(cfg: StackConfig, instances_per_agent: int | None = None,
                startup_window_s: int | None = None) -> ChainModel:
    c = cfg.capacity
    return ChainModel(
        spire_servers=cfg.spire.replicas,
        spire_signings_per_server=c.spire_signings_per_second,
        vault=cfg.subsystems.vault,
        vault_logins_per_s=c.vault_logins_per_second,
        db_creates_per_s=c.db_creates_per_second,
        db_drops_per_s=c.db_drops_per_second,
        lease_ceiling=c.lease_ceiling,
        token_ttl_s=seconds(cfg.vault.token_ttl),
        service_tokens=cfg.vault.token_type == "service",
        instances_per_agent=instances_per_agent or c.instances_per_agent,
        instances_per_node=c.instances_per_node,
        startup_window_s=startup_window_s or seconds(c.startup_window),
    )


# --------------------------------------------------------------------------- demand


@dataclass(frozen=True)
class Demand:
    agents: int
    instances: int
    steady_x509_per_s: float
    steady_jwt_per_s: float
    cold_signings: int
    login_instances: int
    steady_logins_per_s: float
    db_leases_by_cluster: dict[str, int] = field(default_factory=dict)
    creates_by_cluster: dict[str, float] = field(default_factory=dict)
    hottest: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    """Per cluster, the agents with the most credential creates per second (top 3)."""

    @property
    def steady_creds_per_s(self) -> float:
        return sum(self.creates_by_cluster.values())

    @property
    def db_leases(self) -> int:
        return sum(self.db_leases_by_cluster.values())


def demand(loads: Iterable[AgentLoad], instances_per_agent: int, token_ttl_s: int) -> Demand:
    agents = list(loads)
    k = instances_per_agent
    leases: dict[str, int] = {}
    creates: dict[str, float] = {}
    per_agent: dict[str, list[tuple[str, float]]] = {}
    for a in agents:
        for g in a.db:
            leases[g.cluster] = leases.get(g.cluster, 0) + k
            rate = k / g.ttl_s
            creates[g.cluster] = creates.get(g.cluster, 0.0) + rate
            per_agent.setdefault(g.cluster, []).append((a.name, rate))
    logins = sum(k for a in agents if a.vault_login)
    return Demand(
        agents=len(agents),
        instances=len(agents) * k,
        steady_x509_per_s=sum(k / (a.x509_ttl_s / 2) for a in agents),
        steady_jwt_per_s=sum(k * a.audiences / (a.jwt_ttl_s / 2) for a in agents),
        cold_signings=sum(k * (1 + a.audiences) for a in agents),
        login_instances=logins,
        steady_logins_per_s=logins / token_ttl_s,
        db_leases_by_cluster=dict(sorted(leases.items())),
        creates_by_cluster=dict(sorted(creates.items())),
        hottest={c: sorted(v, key=lambda x: (-x[1], x[0]))[:3] for c, v in sorted(per_agent.items())},
    )


def synthetic_demand(agents: int, instances_per_agent: int = 1, token_ttl_s: int = 900) -> Demand:
    """A uniform fleet of the manifests' defaults: 15m X.509, 5m JWT for one audience, one
    database grant (ttl 5m) on cluster ``main`` (the benchmark compares against it)."""
    load = AgentLoad("agent", 900, 300, 1, True, (DbGrantLoad("main", 300),))
    return demand([load] * agents, instances_per_agent, token_ttl_s)


# --------------------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class Row:
    """One capacity of the chain: demand and capacity, steady and cold."""

    name: str
    steady: float
    capacity: float
    cold: float | None
    """Per second over the startup window; None where a cold start does not apply (a count)."""
    unit: str = "/s"
    steady_fix: str = ""
    cold_fix: str = ""

    @property
    def steady_utilisation(self) -> float:
        return self.steady / self.capacity

    @property
    def cold_utilisation(self) -> float:
        return (self.cold or 0.0) / self.capacity


@dataclass(frozen=True)
class ChainEstimate:
    model: ChainModel
    demand: Demand
    rows: tuple[Row, ...]

    # the SPIRE figures, as the estimate has always had them
    @property
    def agents(self) -> int:
        return self.demand.agents

    @property
    def instances(self) -> int:
        return self.demand.instances

    @property
    def servers(self) -> int:
        return self.model.spire_servers

    @property
    def startup_window_s(self) -> int:
        return self.model.startup_window_s

    @property
    def capacity_per_s(self) -> float:
        return self.model.spire_servers * self.model.spire_signings_per_server

    @property
    def steady_x509_per_s(self) -> float:
        return self.demand.steady_x509_per_s

    @property
    def steady_jwt_per_s(self) -> float:
        return self.demand.steady_jwt_per_s

    @property
    def steady_per_s(self) -> float:
        return self.steady_x509_per_s + self.steady_jwt_per_s

    @property
    def storm_per_s(self) -> float:
        return self.demand.cold_signings / self.startup_window_s

    @property
    def steady_utilisation(self) -> float:
        return self.steady_per_s / self.capacity_per_s

    @property
    def storm_utilisation(self) -> float:
        return self.storm_per_s / self.capacity_per_s

    @property
    def storm_drain_s(self) -> float:
        """Seconds the servers need to sign a whole cold start at full capacity."""
        return self.demand.cold_signings / self.capacity_per_s

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

    def warnings(self) -> list[str]:
        out = []
        for r in self.rows:
            if r.steady_utilisation > STEADY_WARN:
                steady = f"{r.steady:.1f}{r.unit}" if r.unit else f"{r.steady:.0f}"
                out.append(f"{r.name}: steady state {steady} is {r.steady_utilisation:.0%} of "
                           f"{r.capacity:.0f}{r.unit} (> {STEADY_WARN:.0%}): {r.steady_fix}")
            if r.cold is not None and r.cold_utilisation > STORM_WARN:
                out.append(f"{r.name}: a cold start within {self.startup_window_s}s needs {r.cold:.0f}{r.unit}, "
                           f"{r.cold_utilisation:.0%} of {r.capacity:.0f}{r.unit} (> {STORM_WARN:.0%}): {r.cold_fix}")
        return out


def _needed(demand_per_s: float, per_unit: float, share: float) -> int:
    return max(1, math.ceil(demand_per_s / (per_unit * share)))


def _window_for(total: float, capacity: float) -> int:
    """The startup window that keeps a cold start of ``total`` under the cold threshold."""
    return math.ceil(total / (capacity * STORM_WARN))


def chain_estimate(loads: Iterable[AgentLoad], model: ChainModel) -> ChainEstimate:
    d = demand(loads, model.instances_per_agent, model.token_ttl_s)
    w = model.startup_window_s
    rows: list[Row] = []
    per_server = model.spire_signings_per_server
    steady = d.steady_x509_per_s + d.steady_jwt_per_s
    rows.append(Row(
        f"SPIRE signings ({model.spire_servers} server{'s' if model.spire_servers != 1 else ''})",
        steady, model.spire_servers * per_server, d.cold_signings / w,
        steady_fix=(f"set spire.replicas to {_needed(steady, per_server, STEADY_WARN)} (spire.datastore: "
                    "postgres for more than one), or lengthen x509SvidTtl/jwtSvidTtl of the busiest agents"),
        cold_fix=(f"widen the startup window to {_window_for(d.cold_signings, model.spire_servers * per_server)}s "
                  "(start jitter, rollout maxSurge/maxUnavailable: docs/scale.md), set spire.replicas to "
                  f"{_needed(d.cold_signings / w, per_server, STORM_WARN)}, or split the fleet into shards that "
                  "start separately"),
    ))
    per_node = min(model.instances_per_node, d.instances) / max(d.instances, 1)
    rows.append(Row(
        "SPIRE signings per node", steady * per_node, SPIRE_SIGNING_LIMIT_PER_IP, d.cold_signings * per_node / w,
        steady_fix="fewer instances per node (capacity.instancesPerNode), or longer SVID TTLs",
        cold_fix=("fewer instances per node (capacity.instancesPerNode), or a wider startup window: "
                  "SPIRE throttles each agent to 500 signings/s"),
    ))
    if model.vault and d.login_instances:
        rows.append(Row(
            "Vault logins", d.steady_logins_per_s, model.vault_logins_per_s, d.login_instances / w,
            steady_fix=("lengthen vault.tokenTtl (≤ 15m), or split the fleet across Vault clusters "
                        "(one per shard): only the active node logs agents in"),
            cold_fix=(f"widen the startup window to {_window_for(d.login_instances, model.vault_logins_per_s)}s "
                      "(rollout settings, start jitter); agents must back off on 429 from the per-client "
                      "login quota"),
        ))
        for cluster, creates in d.creates_by_cluster.items():
            hot = ", ".join(f"{name} {rate:.1f}/s" for name, rate in d.hottest[cluster])
            fix = (f"lengthen the ttl of the highest-churn agents' grants (up to their maxTtl, ≤ "
                   f"limits.maxDbCredentialTtl; busiest: {hot}), move a hot agent class to one credential per "
                   "instance reused by its connection pool, or move databases to another cluster")
            leases = d.db_leases_by_cluster[cluster]
            rows.append(Row(f"DB creates ({cluster})", creates, model.db_creates_per_s, leases / w,
                            steady_fix=fix, cold_fix=(f"widen the startup window to "
                                                      f"{_window_for(leases, model.db_creates_per_s)}s, or "
                                                      "spread the databases over clusters; agents must back off "
                                                      "on 429 from the per-client creds quota")))
            rows.append(Row(f"DB drops ({cluster})", creates, model.db_drops_per_s, None, steady_fix=fix))
        tokens = d.login_instances if model.service_tokens else 0
        rows.append(Row("Vault leases", d.db_leases + tokens, model.lease_ceiling, None, unit="",
                        steady_fix=("use batch tokens (vault.tokenType: batch, no lease), lengthen database "
                                    "credential ttls, or split the fleet across Vault clusters")))
    return ChainEstimate(model, d, tuple(rows))


# --------------------------------------------------------------------------- entry points


def estimate(platform: Platform, instances_per_agent: int | None = None,
             startup_window_s: int | None = None) -> ChainEstimate:
    """The load of the stack's active agents on its SPIRE servers, Vault and databases."""
    loads = [agent_load(a.name, a.manifest.spec) for a in platform.active_agents]
    return chain_estimate(loads, chain_model(platform.config, instances_per_agent, startup_window_s))


def fleet_estimate(cfg: StackConfig, manifests: ManifestSet, instances_per_agent: int | None = None,
                   startup_window_s: int | None = None) -> ChainEstimate:
    """The same estimate read straight from the manifests, without resolving a Platform: the
    agents the stack deploys (its environment and shard) that are not suspended, in the
    Platform's order (by name, so the sums are the same to the last bit). It checks nothing
    across manifests: ``passport validate`` does."""
    from components.shard import in_stack

    active = sorted((a.name, a.manifest.spec) for a in manifests.agents
                    if not a.manifest.spec.suspended and in_stack(cfg, a.manifest))
    return chain_estimate([agent_load(n, s) for n, s in active], chain_model(cfg, instances_per_agent,
                                                                             startup_window_s))


def capacity_text(e: ChainEstimate) -> str:
    m = e.model
    lines = [
        f"agents {e.agents}, workload instances {e.instances}, startup window {m.startup_window_s}s "
        f"(coefficients: agent-passport:capacity, docs/benchmarks.md)",
        f"{'':<28} {'steady':>10} {'capacity':>10} {'used':>6}   {'cold start':>10} {'used':>6}",
    ]
    for r in e.rows:
        cold = (f"{r.cold:>8.1f}{r.unit:<2} {r.cold_utilisation:>6.1%}" if r.cold is not None else "")
        steady = f"{r.steady:>8.1f}{r.unit:<2}" if r.unit else f"{r.steady:>10.0f}"
        lines.append(f"{r.name:<28} {steady} {r.capacity:>8.0f}{r.unit:<2} "
                     f"{r.steady_utilisation:>6.1%}   {cold}".rstrip())
    lines.append(f"a whole cold start drains from SPIRE in {e.storm_drain_s:.0f}s at full capacity")
    lines += [f"WARNING: {w}" for w in e.warnings()]
    return "\n".join(lines)


@dataclass(frozen=True)
class AgentRollout:
    """How the SPIRE agent DaemonSet rolls: an agent keeps workload SVIDs in memory only, so a
    restarted agent has its whole node's SVIDs signed again, throttled to 500/s per node."""

    max_unavailable: int
    """Agents restarting at once: as many nodes as the servers can re-sign at the per-node
    limit within the cold-start threshold (at least one)."""
    min_ready_seconds: int
    """How long a restarted agent's node takes to be re-signed before the next one goes."""


def agent_rollout(e: ChainEstimate) -> AgentRollout:
    capacity = e.capacity_per_s * STORM_WARN
    nodes = max(1, math.floor(capacity / SPIRE_SIGNING_LIMIT_PER_IP))
    per_instance = e.demand.cold_signings / e.instances if e.instances else 2.0
    node_signings = min(e.model.instances_per_node, max(e.instances, 1)) * per_instance
    rate = min(SPIRE_SIGNING_LIMIT_PER_IP, capacity / nodes)
    return AgentRollout(nodes, max(5, math.ceil(node_signings / rate)))


QUOTA_HEADROOM = 2.0
"""A client's quota is twice its fair share of a cold start."""
MIN_QUOTA_RATE = 2.0


@dataclass(frozen=True)
class QuotaRates:
    """Vault/OpenBao rate-limit quotas, requests per second per client IP (OpenBao applies a
    rate-limit quota to each client IP on each node: there is no cluster-wide cap)."""

    login_per_s: float
    creds_per_s: float


def quota_rates(cfg: StackConfig, db_grants_per_agent: int = 1) -> QuotaRates:
    """Sized from the model: a client IP is one node's worth of instances at most (pods behind
    the node's source NAT), each logging in once and reading each database grant once within
    the startup window; the quota lets a client take ``QUOTA_HEADROOM`` times that share and
    answers the rest with 429, so a retry loop or a storm from one node cannot take the
    servers' capacity from the others."""
    c = cfg.capacity
    per_window = QUOTA_HEADROOM * c.instances_per_node / seconds(c.startup_window)
    return QuotaRates(
        login_per_s=max(MIN_QUOTA_RATE, float(math.ceil(per_window))),
        creds_per_s=max(MIN_QUOTA_RATE, float(math.ceil(per_window * max(1, db_grants_per_agent)))),
    )


__all__ = [
    "AgentLoad",
    "AgentRollout",
    "ChainEstimate",
    "ChainModel",
    "Demand",
    "QuotaRates",
    "Row",
    "agent_rollout",
    "capacity_text",
    "chain_estimate",
    "chain_model",
    "demand",
    "estimate",
    "fleet_estimate",
    "quota_rates",
    "synthetic_demand",
]
