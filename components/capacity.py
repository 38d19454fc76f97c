"""SPIRE signing-load estimate for a stack (pure).

Model (documented in docs/benchmarks.md): every workload instance holds one X.509-SVID,
renewed at half of its TTL, and keeps a JWT-SVID per audience it uses, also refreshed at half
of its TTL; a cold start (all instances of the stack starting within ``startup_window``, e.g.
after a node-pool replacement or a SPIRE outage) asks for every SVID at once, spread by the
agents' jitter over the window. Capacity is ``servers x per_server`` signings per second —
500/s per server is the planning figure used here (measure your own hardware; the CA key type
and datastore dominate).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from components.durations import seconds

if TYPE_CHECKING:  # the estimate needs counts: building a Platform is only one way to get them
    from components.config import StackConfig
    from components.manifest.loader import ManifestSet
    from components.platform_model import Platform

SIGNINGS_PER_SERVER = 500.0
STEADY_WARN = 0.5
STORM_WARN = 0.8


@dataclass(frozen=True)
class CapacityEstimate:
    agents: int
    instances: int
    servers: int
    capacity_per_s: float
    steady_x509_per_s: float
    steady_jwt_per_s: float
    storm_per_s: float
    startup_window_s: int

    @property
    def steady_per_s(self) -> float:
        return self.steady_x509_per_s + self.steady_jwt_per_s

    @property
    def steady_utilisation(self) -> float:
        return self.steady_per_s / self.capacity_per_s

    @property
    def storm_utilisation(self) -> float:
        return self.storm_per_s / self.capacity_per_s

    @property
    def storm_drain_s(self) -> float:
        """Seconds the servers need to sign a whole cold start at full capacity."""
        return self.storm_per_s * self.startup_window_s / self.capacity_per_s

    def warnings(self) -> list[str]:
        out = []
        if self.steady_utilisation > STEADY_WARN:
            out.append(f"steady-state renewals use {self.steady_utilisation:.0%} of signing capacity "
                       f"(> {STEADY_WARN:.0%}): add SPIRE server replicas or lengthen TTLs")
        if self.storm_utilisation > STORM_WARN:
            out.append(f"a cold start within {self.startup_window_s}s needs {self.storm_per_s:.0f} signings/s, "
                       f"{self.storm_utilisation:.0%} of capacity (> {STORM_WARN:.0%}): widen the agents' start "
                       f"jitter, add servers, or split the fleet into shards that start separately")
        return out


SvidLoad = tuple[int, int, int]
"""One active agent's X.509-SVID TTL and JWT-SVID TTL in seconds, and its number of JWT audiences."""


def estimate(platform: Platform, instances_per_agent: int = 1, startup_window_s: int = 60,
             per_server: float = SIGNINGS_PER_SERVER) -> CapacityEstimate:
    """Signing load of the stack's active agents against its SPIRE servers."""
    loads = [(a.identity.x509_svid_ttl_seconds, a.identity.jwt_svid_ttl_seconds, len(a.identity.jwt_audiences))
             for a in platform.active_agents]
    return _estimate(loads, platform.config.spire.replicas, instances_per_agent, startup_window_s, per_server)


def fleet_estimate(cfg: StackConfig, manifests: ManifestSet, instances_per_agent: int = 1,
                   startup_window_s: int = 60, per_server: float = SIGNINGS_PER_SERVER) -> CapacityEstimate:
    """The same estimate read straight from the manifests, without resolving a Platform: the
    agents the stack deploys (its environment and shard) that are not suspended, in the
    Platform's order (by name, so the sums are the same to the last bit), with the TTLs and
    audiences their identities take from the manifest. It checks nothing across manifests:
    ``passport validate`` does."""
    from components.shard import in_stack

    active = sorted((a.name, a.manifest.spec.identity) for a in manifests.agents
                    if not a.manifest.spec.suspended and in_stack(cfg, a.manifest))
    loads = [(seconds(i.x509_svid_ttl), seconds(i.jwt_svid_ttl), len(i.jwt_audiences)) for _, i in active]
    return _estimate(loads, cfg.spire.replicas, instances_per_agent, startup_window_s, per_server)


def _estimate(loads: Iterable[SvidLoad], servers: int, instances_per_agent: int, startup_window_s: int,
              per_server: float) -> CapacityEstimate:
    agents = list(loads)
    x509 = sum(instances_per_agent / (x509_ttl / 2) for x509_ttl, _, _ in agents)
    jwt = sum(instances_per_agent * audiences / (jwt_ttl / 2) for _, jwt_ttl, audiences in agents)
    instances = len(agents) * instances_per_agent
    storm_signings = sum(instances_per_agent * (1 + audiences) for _, _, audiences in agents)
    return CapacityEstimate(
        agents=len(agents), instances=instances, servers=servers, capacity_per_s=servers * per_server,
        steady_x509_per_s=x509, steady_jwt_per_s=jwt, storm_per_s=storm_signings / startup_window_s,
        startup_window_s=startup_window_s,
    )


def capacity_text(e: CapacityEstimate) -> str:
    lines = [
        f"agents {e.agents}, workload instances {e.instances}, SPIRE servers {e.servers} "
        f"(capacity {e.capacity_per_s:.0f} signings/s)",
        f"steady state   {e.steady_per_s:8.1f} signings/s  (x509 {e.steady_x509_per_s:.1f}, "
        f"jwt {e.steady_jwt_per_s:.1f})  {e.steady_utilisation:6.1%} of capacity",
        f"cold start     {e.storm_per_s:8.1f} signings/s  over {e.startup_window_s}s  "
        f"{e.storm_utilisation:6.1%} of capacity  (drains in {e.storm_drain_s:.0f}s at full capacity)",
    ]
    lines += [f"WARNING: {w}" for w in e.warnings()]
    return "\n".join(lines)
