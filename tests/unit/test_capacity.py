"""`passport capacity` counts from the manifests and prints what the Platform-based estimate prints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from benchmarks.synthetic import hash_shard, stack_config, write_fleet
from components.capacity import (
    AgentLoad,
    ChainModel,
    DbGrantLoad,
    agent_rollout,
    capacity_text,
    chain_estimate,
    chain_model,
    estimate,
    fleet_estimate,
    synthetic_demand,
)
from components.cli import main
from components.config import build_stack_config, list_stacks, load_stack_config, read_stack_file, stack_file
from components.errors import ConfigError, PassportError
from components.manifest.loader import load_manifests
from components.platform_model import build_platform, load_platform
from tests.conftest import ROOT


@pytest.mark.parametrize("stack", list_stacks())
@pytest.mark.parametrize(("instances", "window"), [(1, 60), (1000, 60), (20000, 30)])
def test_counts_from_the_manifests_equal_the_platform_estimate(stack: str, instances: int, window: int) -> None:
    cfg = load_stack_config(stack)
    manifests = load_manifests([cfg.agents_dir])
    try:
        platform = build_platform(cfg, manifests, stack, f"stacks/Pulumi.{stack}.yaml")
    except PassportError:
        pytest.skip(f"the examples do not resolve on stack {stack}")
    assert fleet_estimate(cfg, manifests, instances, window) == estimate(platform, instances, window)


def _suspend_and_restrict(fleet: Path) -> None:
    """Some agents suspended, some only in another environment, some with their own TTLs."""
    path = fleet / "agents-00000.yaml"
    docs = path.read_text().split("---\n")
    docs[1] = docs[1].replace("spec:\n", "spec:\n  suspended: true\n  suspendedReason: incident 42\n", 1)
    docs[2] = docs[2].replace("spec:\n", "spec:\n  environments: [prod]\n", 1)
    docs[3] = docs[3].replace("x509SvidTtl: 15m", "x509SvidTtl: 7m\n    jwtSvidTtl: 2m\n"
                              "    jwtAudiences: [a, b, c]", 1)
    path.write_text("---\n".join(docs))


@pytest.mark.parametrize("shard", [None, hash_shard(3, 1)])
def test_a_synthetic_fleet_with_suspended_restricted_and_sharded_agents(tmp_path: Path,
                                                                       shard: dict[str, object] | None) -> None:
    fleet = write_fleet(tmp_path, 120, per_file=40)
    _suspend_and_restrict(fleet)
    cfg = stack_config(fleet, shard=shard)
    manifests = load_manifests([fleet])
    platform = build_platform(cfg, manifests, "dev", "stacks/Pulumi.dev.yaml")
    counted = fleet_estimate(cfg, manifests, 3, 45)
    assert counted == estimate(platform, 3, 45)
    assert counted.agents == len(platform.active_agents) < 120


def test_the_command_prints_what_it_printed_before(capsys: pytest.CaptureFixture[str]) -> None:
    before = estimate(load_platform("prod"), 1000, 60)
    assert main(["capacity", "--stack", "prod", "--instances-per-agent", "1000", "--startup-window", "1m"]) == 0
    assert capsys.readouterr().out == capacity_text(before) + "\n"
    stormy = estimate(load_platform("prod"), 20000, 30)
    assert main(["capacity", "--stack", "prod", "--instances-per-agent", "20000", "--startup-window", "30s"]) == 1
    assert capsys.readouterr().out == capacity_text(stormy) + "\n"


# --------------------------------------------------------------------------- the whole chain


def _model(**kw: object) -> ChainModel:
    return dataclasses.replace(ChainModel(), **kw)  # type: ignore[arg-type]


def _fleet(n: int, *, x509: int = 900, jwt: int = 300, audiences: int = 1,
           db: tuple[DbGrantLoad, ...] = (DbGrantLoad("main", 300),)) -> list[AgentLoad]:
    return [AgentLoad(f"a{i:05d}", x509, jwt, audiences, bool(db), db) for i in range(n)]


def test_the_model_counts_every_link_of_the_chain() -> None:
    e = chain_estimate(_fleet(900), _model(instances_per_agent=2, token_ttl_s=900, startup_window_s=60))
    assert e.instances == 1800
    assert e.steady_x509_per_s == pytest.approx(1800 / 450)  # renewed at half of 15m
    assert e.steady_jwt_per_s == pytest.approx(1800 / 150)  # one audience, half of 5m
    assert e.row("Vault logins").steady == pytest.approx(1800 / 900)  # one login per token TTL
    assert e.row("Vault logins").cold == pytest.approx(1800 / 60)
    assert e.row("DB creates (main)").steady == pytest.approx(1800 / 300)  # no lease renewal: one per ttl
    assert e.row("DB drops (main)").steady == pytest.approx(1800 / 300)
    assert e.row("Vault leases").steady == 1800 + 1800  # a credential and a service token per instance
    batch = chain_estimate(_fleet(900), _model(instances_per_agent=2, service_tokens=False))
    assert batch.row("Vault leases").steady == 1800


def test_warnings_at_50_percent_steady_and_80_percent_cold_with_the_fix() -> None:
    # 1 server at 100/s; 0.5 x 100 = 50/s steady is the line
    under = chain_estimate(_fleet(1000, x509=1800, jwt=1800, db=()), _model(spire_signings_per_server=45.0 / 0.45,
                                                                         startup_window_s=100))
    assert under.steady_per_s == pytest.approx(1000 / 900 * 2)
    assert under.warnings() == []
    hot = chain_estimate(_fleet(1000, x509=60, jwt=60, db=()), _model(spire_signings_per_server=100.0,
                                                                   startup_window_s=3600))
    assert hot.steady_per_s == pytest.approx(1000 / 30 * 2)  # 66.7/s: 67 % of 100/s
    (w,) = hot.warnings()
    assert w.startswith("SPIRE signings (1 server): steady state 66.7/s is 67% of 100/s (> 50%)")
    assert "set spire.replicas to 2" in w
    cold = chain_estimate(_fleet(1000, db=()), _model(spire_signings_per_server=100.0, startup_window_s=20))
    (w,) = cold.warnings()  # 2000 signings in 20 s = 100/s: 100 % > 80 %
    assert "a cold start within 20s needs 100/s, 100% of 100/s (> 80%)" in w
    assert "widen the startup window to 25s" in w and "set spire.replicas to 2" in w
    assert chain_estimate(_fleet(1000, db=()), _model(spire_signings_per_server=100.0,
                                                      startup_window_s=25)).warnings() == []


def test_database_churn_is_per_cluster_and_names_the_hottest_agents() -> None:
    loads = [AgentLoad("slow", 900, 300, 1, True, (DbGrantLoad("main", 600),)),
             AgentLoad("hot", 900, 300, 1, True, (DbGrantLoad("main", 60), DbGrantLoad("reports", 300)))]
    e = chain_estimate(loads, _model(instances_per_agent=1000, db_creates_per_s=30.0, startup_window_s=600))
    assert e.row("DB creates (main)").steady == pytest.approx(1000 / 600 + 1000 / 60)
    assert e.row("DB creates (reports)").steady == pytest.approx(1000 / 300)
    (w,) = [w for w in e.warnings() if w.startswith("DB creates (main): steady")]
    assert "busiest: hot 16.7/s, slow 1.7/s" in w and "one credential per instance" in w


def test_vault_rows_only_where_the_stack_runs_vault() -> None:
    e = chain_estimate(_fleet(10), _model(vault=False))
    assert [r.name for r in e.rows] == ["SPIRE signings (1 server)", "SPIRE signings per node"]


def test_coefficients_come_from_the_stack_config_and_the_command_line_overrides_them() -> None:
    values, _, _ = read_stack_file(stack_file("prod", ROOT))
    values = {**values, "capacity": {"spireSigningsPerSecond": 2000, "vaultLoginsPerSecond": 900,
                                     "dbCreatesPerSecond": 40, "instancesPerAgent": 7, "startupWindow": "5m"}}
    cfg = build_stack_config(values, "stacks/Pulumi.prod.yaml")
    m = chain_model(cfg)
    assert (m.spire_signings_per_server, m.vault_logins_per_s, m.db_creates_per_s) == (2000, 900, 40)
    assert (m.instances_per_agent, m.startup_window_s) == (7, 300)
    assert (chain_model(cfg, 3, 30).instances_per_agent, chain_model(cfg, 3, 30).startup_window_s) == (3, 30)
    assert fleet_estimate(cfg, load_manifests([cfg.agents_dir])).capacity_per_s == 2000 * cfg.spire.replicas


def test_a_bad_coefficient_is_one_clear_error() -> None:
    values, _, _ = read_stack_file(stack_file("prod", ROOT))
    with pytest.raises(ConfigError) as err:
        build_stack_config({**values, "capacity": {"dbCreatesPerSecond": 0}}, "stacks/Pulumi.prod.yaml")
    (problem,) = err.value.problems
    assert problem.field == "agent-passport:capacity.dbCreatesPerSecond"
    assert "greater than 0" in problem.message


def test_the_agent_rollout_is_sized_from_the_servers() -> None:
    one = agent_rollout(chain_estimate(_fleet(5000), _model(spire_servers=1, spire_signings_per_server=500.0,
                                                            instances_per_node=110)))
    assert (one.max_unavailable, one.min_ready_seconds) == (1, 5)  # 0.8 x 500/s < one node's 500/s
    three = agent_rollout(chain_estimate(_fleet(5000), _model(spire_servers=3, spire_signings_per_server=500.0,
                                                              instances_per_node=2000)))
    assert three.max_unavailable == 2  # 0.8 x 1500 / 500
    assert three.min_ready_seconds == 8  # 2000 instances x 2 signings at 500/s


def test_the_synthetic_fleet_is_the_manifest_defaults() -> None:
    d = synthetic_demand(50_000)
    assert (d.steady_x509_per_s, d.steady_jwt_per_s) == pytest.approx((50_000 / 450, 50_000 / 150))
    assert d.cold_signings == 100_000 and d.db_leases == 50_000
