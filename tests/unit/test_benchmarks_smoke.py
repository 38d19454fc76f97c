"""Every benchmark script runs on a tiny fleet and prints its table (no timing asserted).

The scripts run as a user runs them (``python benchmarks/<x>.py``, a fresh process), so a
broken import, a stale config override or a fleet the dev stack refuses fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import rego as rego_bench
from benchmarks.synthetic import database_names, runtime_config, stack_config, write_fleet
from components.config import NAMESPACE
from components.manifest.loader import load_manifests
from components.platform_model import build_platform
from components.render.artifacts import render_all
from tests.conftest import ROOT
from tests.support.tools import skip_or_fail

pytestmark = pytest.mark.bench


def run_script(*args: str, timeout: int = 300) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_synthetic_fleet_passes_the_dev_stack_with_root_rotation_on(tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path, 30, per_file=7)
    cfg = stack_config(fleet)
    main = cfg.vault.databases["main"]
    assert main.rotate_root is True
    # one admin per synthetic database, next to the ones the stack file declares
    assert sorted(main.admins) == sorted(["billing", "incidents", *database_names()])
    assert {db: main.admins[db].username for db in database_names()[:2]} == {
        "app_000": "vault_app_000", "app_001": "vault_app_001"}
    platform = build_platform(cfg, load_manifests([fleet]), "dev", "stacks/Pulumi.dev.yaml")
    assert len(platform.active_agents) == 30
    render_all(platform)  # the Vault renderer's shared-admin check passes


def test_runtime_config_carries_the_same_override(tmp_path: Path) -> None:
    config, secrets = runtime_config(tmp_path, shard={"role": "shard"})
    assert config[f"{NAMESPACE}:agentsDir"] == str(tmp_path)
    assert '"app_009": {"username": "vault_app_009"}' in config[f"{NAMESPACE}:vault"]
    assert '"rotateRoot"' not in config[f"{NAMESPACE}:vault"]  # left at its default (on)
    assert config[f"{NAMESPACE}:shard"] == '{"role": "shard"}'
    assert f"{NAMESPACE}:dbMainPassword" in secrets


def test_synthetic_script_writes_a_fleet(tmp_path: Path) -> None:
    out = run_script("benchmarks/synthetic.py", "12", str(tmp_path))
    assert out.strip() == f"wrote 12 agents to {tmp_path}"
    assert len(load_manifests([tmp_path]).agents) == 12


def test_validate_prints_its_table() -> None:
    out = run_script("benchmarks/validate.py", "20").splitlines()
    assert out[0].split() == ["agents", "load+models", "s", "cross-checks", "s", "validate", "s", "cpu", "s",
                              "us/manifest", "cpu", "us/man.", "peak", "MiB", "floor", "s", "x", "floor",
                              "renderers", "s", "all", "s"]
    row = out[1].split()
    assert row[0] == "20" and len(row) == 12
    assert float(row[8]) >= 0 and float(row[9]) >= 0  # floor s, x floor (rounded: tiny at 20 agents)


def test_validate_without_renderers_and_with_workers(tmp_path: Path) -> None:
    out = run_script("benchmarks/validate.py", "--no-renderers", "--workers", "2", "30").splitlines()
    row = out[1].split()
    assert row[0] == "30" and row[10] == "0.00"


def test_validate_once_and_its_floor_on_a_fleet(tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path, 25, per_file=10)
    assert run_script("benchmarks/validate.py", "--once", str(fleet)).startswith("validated 25 agents, 25 active, in ")
    assert run_script("benchmarks/yaml_floor.py", str(fleet)).startswith("floor: 4 files, 45 documents read by ")


def test_capacity_prints_its_table() -> None:
    out = run_script("benchmarks/capacity.py", "30").splitlines()
    assert out[0].split()[:3] == ["agents", "capacity", "s"]
    assert out[1].split()[0] == "30" and out[1].endswith("agents 30, workload instances 30, startup window 60s "
                                                          "(coefficients: agent-passport:capacity, docs/benchmarks.md)")


def test_storm_speaks_spires_protobuf_and_compares_with_the_fleets() -> None:
    """The pure parts of benchmarks/storm.py (its runs need the real engines)."""
    from benchmarks import storm

    # MintJWTSVIDRequest{id: {trust_domain: "td", path: "/w"}, audience: ["vault"], ttl: 300}
    assert storm.mint_jwt_request("td", "/w", "vault", 300) == (
        b"\x0a\x08" + b"\x0a\x02td" + b"\x12\x02/w" + b"\x12\x05vault" + b"\x18\xac\x02")
    assert storm.mint_x509_request(b"\x30" * 200, 900)[:3] == b"\x0a\xc8\x01"  # a 200-byte CSR: 2-byte length
    needs = storm.fleet_needs()
    assert needs["50k"]["signings cold"] == pytest.approx(100_000 / 60)
    assert needs["10k"]["creds steady"] == pytest.approx(10_000 / 300)
    (head, row) = storm.ratio_lines({"db creds": 100.0})
    assert head.split()[:2] == ["capacity", "measured/s"]
    assert row.split()[:4] == ["db", "creds", "100.0", "3.0x"]


def test_validate_prints_its_table_for_one_manifest_with_many_grants() -> None:
    out = run_script("benchmarks/validate.py", "--grants", "40").splitlines()
    assert out[0].split()[:2] == ["grants", "load+models"] and "us/grant" in out[0]
    assert out[1].split()[0] == "40" and len(out[1].split()) == 12


def test_the_many_grants_manifest_is_valid_and_every_grant_gets_its_rules(tmp_path: Path) -> None:
    from benchmarks.synthetic import write_grant_manifest
    from components.render import rego

    fleet = write_grant_manifest(tmp_path, 60)
    platform = build_platform(stack_config(fleet), load_manifests([fleet]), "dev", "stacks/Pulumi.dev.yaml")
    (agent,) = platform.active_agents
    assert len(agent.grants) == 60
    rules = [r for svc in rego.authz_data(platform)["agentpassport"]["services"].values()
             for e in svc["principals"].values() for r in e["rules"]]
    assert len(rules) == 36  # the http grants on the three gateway services (3 of every 5 after the first)
    render_all(platform)


def test_program_prints_its_table() -> None:
    out = run_script("benchmarks/program.py", "10", "12").splitlines()
    assert out[0].split() == ["fleet", "agents", "resources", "res/agent", "wall", "s", "cpu", "s",
                              "ms/res", "wall", "ms/res", "cpu", "peak", "RSS", "MiB", "KiB/res"]
    assert out[1].split()[:2] == ["10", "10"] and out[2].split()[:2] == ["12", "12"]
    # two floors (a trivial program, then the same graph replayed), each with as many resources as
    # each program run, then the marginal ratio between the two sizes
    for start, title in ((3, "floor: "), (8, "same-graph floor: ")):
        assert out[start].startswith(title), out[start]
        assert out[start + 1].split() == ["program", "resources", "cpu", "s", "ms/res", "cpu", "KiB/res", "x",
                                          "floor", "cpu", "x", "floor", "mem"]
        for program_row, floor_row in zip(out[1:3], out[start + 2:start + 4], strict=True):
            resources = int(program_row.split()[2])
            assert abs(int(floor_row.split()[1]) - resources) < 5, (program_row, floor_row)
            assert float(floor_row.split()[5]) > 0
        assert out[start + 4].split()[0] == "marginal"
    assert out[13].startswith("  fleet 10: ") and out[13].endswith("by type:")
    assert re.fullmatch(r" +\d+ +\d+\.\d\d/agent  \S+", out[14]), out[14]


def test_program_shard_deploys_one_bucket() -> None:
    out = run_script("benchmarks/program.py", "--shard", "2", "16").splitlines()
    fleet, agents = (int(v) for v in out[1].split()[:2])
    assert fleet == 16 and 0 < agents < 16


def test_check_prints_its_table() -> None:
    out = run_script("benchmarks/check.py", "--program", "10").splitlines()
    assert out[0].startswith("graph: ") and "10 agents (the real program on 10 synthetic agents" in out[0]
    assert out[-1].startswith("check of ")


@pytest.mark.e2e
def test_rego_prints_its_table() -> None:
    if not rego_bench.OPA_BIN.is_file():
        skip_or_fail(f"OPA binary not found at {rego_bench.OPA_BIN}: run scripts/bootstrap-tools --only opa")
    out = run_script("benchmarks/rego.py", "--requests", "30", "--shards", "2", "10").splitlines()
    assert out[1].split() == ["agents", "layout", "data", "KiB", "requests", "allowed", "p50", "us", "p90", "us",
                              "p99", "us", "max", "us", "mismatch"]
    standalone, sharded = out[2].split(), out[3].split()
    # OPA agreed with the reference decisions (last column: mismatches)
    assert standalone[:2] == ["10", "standalone"] and standalone[3] == "30" and standalone[-1] == "0"
    assert sharded[:3] == ["10", "2", "shards"] and sharded[4] == "30" and sharded[-1] == "0"


def test_yaml_parsers_prints_its_tables() -> None:
    out = run_script("benchmarks/yaml_parsers.py", "50")
    assert out.splitlines()[0].split()[:2] == ["parser", "us/doc"]
    assert "loader fast path (rapidyaml)" in out and "== loader reference (PyYAML)" in out
    assert "unsupported YAML tag !foo" in out and "aliases would repeat" in out


def test_gateway_prints_its_table() -> None:
    from tests.unit.test_envoy_config import envoy_binary

    envoy_binary()  # skips (fails in CI) without Envoy
    if not rego_bench.OPA_BIN.is_file():
        skip_or_fail(f"OPA binary not found at {rego_bench.OPA_BIN}: run scripts/bootstrap-tools --only opa")
    out = run_script("benchmarks/gateway.py", "--requests", "9").splitlines()
    assert out[0].startswith("Envoy: ") and out[1].startswith("OPA: ")
    assert out[2].split() == ["what", "p50", "us", "p99", "us"]
    rows = {line[:52].strip(): [float(v) for v in line[52:].split()] for line in out[3:]}
    assert list(rows) == ["through gateway: allow", "through gateway: deny missing header",
                          "through gateway: deny wrong path", "through gateway: all",
                          "stand-in: whole check (inside gRPC)", "of which OPA HTTP (real opa run --server)",
                          "gateway - stand-in (Envoy, TLS, backend, client)",
                          "client alone (plain HTTP to the backend)"]
    # the decision is part of the request it delays: OPA's share is inside the stand-in's,
    # which is inside the whole request's
    p50 = {k: v[0] for k, v in rows.items()}
    assert 0 < p50["of which OPA HTTP (real opa run --server)"] <= p50["stand-in: whole check (inside gRPC)"]
