"""Shard selection, fleet coverage (none / several shards) and the capacity estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.synthetic import write_fleet
from components.capacity import estimate
from components.config import build_stack_config, load_stack_config
from components.config.capacity import SPIRE_SIGNINGS_PER_SERVER
from components.errors import ConfigError
from components.manifest.loader import load_manifests
from components.platform_model import build_platform
from components.shard import coverage, hash_bucket, selects


def _cfg(env: str, shard: dict[str, object] | None = None) -> object:
    values: dict[str, object] = {"environment": env, "trustDomain": f"{env}.acme-corp.net", "strict": False}
    if shard is not None:
        values["shard"] = shard
    values["vault"] = {"databases": {"main": {"engine": "postgres", "host": "db", "port": 5432,
                                              "username": "v", "passwordSecret": "pw"}}}
    return build_stack_config(values, f"stacks/Pulumi.{env}.yaml")


def test_hash_bucket_is_stable() -> None:
    # pinned: a change to the hashing would silently move every agent to another shard
    assert [hash_bucket(n, 8) for n in ("agent-cortex", "invoice-processor", "ledger-sync")] == [2, 2, 5]


def test_selectors_combine_with_and(tmp_path: Path) -> None:
    fleet = load_manifests([write_fleet(tmp_path, 40)])
    a = fleet.agent("agent-00003")
    assert a is not None
    m = a.manifest
    cfg = _cfg("dev", {"role": "shard", "baseStack": "acme/agent-passport/dev",
                       "select": {"labels": {"shard": "s3"}, "teams": ["team-003"]}})
    assert selects(cfg.shard.select, m)  # type: ignore[attr-defined]
    cfg2 = _cfg("dev", {"role": "shard", "baseStack": "acme/agent-passport/dev",
                        "select": {"labels": {"shard": "s3"}, "teams": ["team-004"]}})
    assert not selects(cfg2.shard.select, m)  # type: ignore[attr-defined]


def test_eight_hash_shards_cover_a_fleet_exactly_once(tmp_path: Path) -> None:
    fleet = load_manifests([write_fleet(tmp_path, 400)])
    stacks = [(f"prod-{i}", _cfg("prod", {"role": "shard", "baseStack": "acme/agent-passport/prod-base",
                                         "select": {"hashBuckets": {"count": 8, "index": i}}})) for i in range(8)]
    cov = coverage("prod", stacks, [a.manifest for a in fleet.agents])  # type: ignore[arg-type]
    assert cov.ok and len(cov.shards) == 8
    sizes = [len(build_platform(cfg, fleet, name, "x").agents) for name, cfg in stacks]  # type: ignore[arg-type]
    assert sum(sizes) == 400
    assert min(sizes) > 25  # an even-ish split, not all in one bucket


def test_gaps_and_overlaps_are_reported(tmp_path: Path) -> None:
    fleet = load_manifests([write_fleet(tmp_path, 16)])
    by_label = [(f"prod-s{i}", _cfg("prod", {"role": "shard", "baseStack": "acme/agent-passport/prod-base",
                                             "select": {"labels": {"shard": f"s{i}"}}})) for i in range(7)]
    extra = ("prod-team0", _cfg("prod", {"role": "shard", "baseStack": "acme/agent-passport/prod-base",
                                         "select": {"teams": ["team-000"]}}))
    cov = coverage("prod", [*by_label, extra], [a.manifest for a in fleet.agents])  # type: ignore[list-item]
    assert cov.unselected == ("agent-00007", "agent-00015")  # label s7 has no shard
    assert cov.overlapping == (("agent-00000", ("prod-s0", "prod-team0")),)


@pytest.mark.parametrize(
    ("shard", "reason"),
    [
        ({"role": "shard", "select": {"teams": ["a"]}}, "needs baseStack"),
        ({"role": "shard", "baseStack": "o/p/s"}, "needs a select criterion"),
        ({"role": "standalone", "select": {"teams": ["a"]}}, "only applies to role shard"),
        ({"role": "shard", "baseStack": "o/p/s", "select": {"hashBuckets": {"count": 4, "index": 4}}},
         "must be below count"),
    ],
)
def test_bad_shard_config(shard: dict[str, object], reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        _cfg("prod", shard)


def test_capacity_math_for_the_examples() -> None:
    platform = build_platform(load_stack_config("prod"), load_manifests(["agents"]), "prod", "x")
    est = estimate(platform, instances_per_agent=1000, startup_window_s=60)
    # 4 agents x 1000 instances, X.509 TTL 15m renewed at 7.5m
    assert est.steady_x509_per_s == pytest.approx(4000 / 450)
    # JWT: 5m TTL renewed at 2.5m, one audience each except report-summarizer (two)
    assert est.steady_jwt_per_s == pytest.approx(5000 / 150)
    assert est.storm_per_s == pytest.approx((4000 + 5000) / 60)
    assert est.capacity_per_s == 3 * SPIRE_SIGNINGS_PER_SERVER  # the measured coefficient, per server
    assert est.warnings() == []
    stormy = estimate(platform, instances_per_agent=20000, startup_window_s=30)
    assert any("cold start within 30s" in w for w in stormy.warnings())
