"""`passport capacity` counts from the manifests and prints what the Platform-based estimate prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.synthetic import hash_shard, stack_config, write_fleet
from components.capacity import capacity_text, estimate, fleet_estimate
from components.cli import main
from components.config import list_stacks, load_stack_config
from components.errors import PassportError
from components.manifest.loader import load_manifests
from components.platform_model import build_platform, load_platform


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
