"""Capacity section: the coefficients ``passport capacity`` and the rendered storm controls use.

The defaults are what ``benchmarks/storm.py`` measured on the project's 2-core test machine
(docs/benchmarks.md, with the load at the time): a floor, not a promise. Measure your own
servers with the same benchmark and put the figures here.
"""

from __future__ import annotations

from pydantic import Field

from components.config.base import Section
from components.durations import Duration

# Measured by benchmarks/storm.py on 2 shared cores under a load average of 7-16 (docs/benchmarks.md,
# section 8): the median of the runs with 8 or more clients, rounded down. X.509 signing (JWT is
# faster; the X.509 figure is used for both), JWT logins, credential creates and revocations.
SPIRE_SIGNINGS_PER_SERVER = 1150.0
VAULT_LOGINS_PER_SECOND = 680.0
DB_CREATES_PER_SECOND = 70.0
DB_DROPS_PER_SECOND = 60.0
LEASE_CEILING = 100_000
"""A planning figure, not a measurement: Vault/OpenBao keep every lease in storage and load them
all when a node becomes active, so a failover takes longer the more leases are outstanding."""


class CapacityConfig(Section):
    """How big the fleet runs and how much the servers take, for `passport capacity` and the
    rendered rate limits and quotas."""

    instances_per_agent: int = Field(
        default=1, ge=1, le=1_000_000,
        description="Workload instances (pods, VMs) per agent; `passport capacity --instances-per-agent` overrides.",
    )
    startup_window: Duration = Field(
        default="60s",
        description="Window a cold start (all instances after an outage or a node-pool replacement) spreads "
        "over, set by the rollout (maxSurge/maxUnavailable) and the workloads' start jitter.",
    )
    instances_per_node: int = Field(
        default=110, ge=1, le=10_000,
        description="Workload instances per SPIRE agent (node): SPIRE 1.15 throttles signing to 500/s per "
        "agent IP, whatever the server could do.",
    )
    spire_signings_per_second: float = Field(
        default=SPIRE_SIGNINGS_PER_SERVER, gt=0,
        description="X.509- plus JWT-SVID signings one SPIRE server sustains (measured: docs/benchmarks.md).",
    )
    vault_logins_per_second: float = Field(
        default=VAULT_LOGINS_PER_SECOND, gt=0,
        description="Agent logins (JWT or cert) the active Vault node sustains; standbys forward writes.",
    )
    db_creates_per_second: float = Field(
        default=DB_CREATES_PER_SECOND, gt=0,
        description="Database credentials (CREATE ROLE + GRANTs) Vault issues per second per database cluster.",
    )
    db_drops_per_second: float = Field(
        default=DB_DROPS_PER_SECOND, gt=0,
        description="Credential revocations (REVOKE, pg_terminate_backend, DROP ROLE) per second per cluster.",
    )
    lease_ceiling: int = Field(
        default=LEASE_CEILING, ge=1,
        description="Outstanding Vault leases (database credentials, service tokens) to stay under.",
    )
