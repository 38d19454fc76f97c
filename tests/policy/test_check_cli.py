"""``passport check``: the example stacks pass; a fixture stack reports exactly its four violations,
grouped by manifest, in text, JSON and SARIF; enforcement levels and limits come from config."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from components.check import evaluate, merge_config, run_check, stack_policy_config
from components.cli import main
from components.config import load_stack_config
from components.mockrun import Graph
from tests.conftest import ROOT, STACKS

FIXTURE = ROOT / "tests/fixtures/stacks/violations"
FOUR = [
    ("agents/billing-agent.yaml", "no-iam-access-keys", "aws:iam/accessKey:AccessKey", "billing-agent-ci-key"),
    ("agents/triage-agent.yaml", "no-service-account-token-secrets", "kubernetes:core/v1:Secret",
     "triage-agent-sa-token"),
    ("agents/triage-agent.yaml", "svid-ttl-limits", "kubernetes:spire.spiffe.io/v1alpha1:ClusterSPIFFEID",
     "triage-agent-debug-registration"),
    ("stacks/Pulumi.dev.yaml", "vault-no-stored-db-password",
     "vault:database/secretBackendConnection:SecretBackendConnection", "db-main-legacy-connection"),
]


@pytest.mark.parametrize("stack", STACKS)
def test_example_stacks_pass(stack: str, stack_graph: Callable[[str], Graph]) -> None:
    config = merge_config(stack_policy_config(load_stack_config(stack, ROOT)))
    found = [(v.policy.name, v.urn, v.message) for v in evaluate(stack_graph(stack), config)]
    assert found == []


def test_fixture_reports_exactly_its_four_violations() -> None:
    result = run_check("dev", FIXTURE)
    got = [(v.file, v.policy, v.resource_type, v.resource_name) for v in result.violations]
    assert sorted(got) == sorted(FOUR)
    assert result.mandatory == 4
    by_policy = {v.policy: v for v in result.violations}
    assert by_policy["svid-ttl-limits"].agent == "triage-agent"
    assert by_policy["svid-ttl-limits"].line == 8  # spec.identity is absent: the nearest line, spec
    assert "X.509-SVID TTL 30d exceeds the limit of 1h" in by_policy["svid-ttl-limits"].message
    assert by_policy["no-iam-access-keys"].agent == "billing-agent"  # by its name's tokens
    assert by_policy["no-iam-access-keys"].line == 4  # metadata.name
    assert by_policy["vault-no-stored-db-password"].agent is None


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_text_output_groups_by_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "check", "--stack", "dev", "--root", str(FIXTURE))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("stack dev: ")
    assert "agents/billing-agent.yaml" in lines
    assert "agents/triage-agent.yaml" in lines
    assert "stacks/Pulumi.dev.yaml  (stack-wide, not attributable to one agent)" in lines
    triage = lines.index("agents/triage-agent.yaml")
    assert lines[triage + 1].startswith("  agents/triage-agent.yaml:4: error [no-service-account-token-secrets]")
    assert "      resource: kubernetes:core/v1:Secret triage-agent-sa-token" in lines
    assert any(line.startswith("      fix: Use projected, audience-bound") for line in lines)


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "check", "--stack", "dev", "--root", str(FIXTURE), "--format", "json")
    assert code == 1
    data = json.loads(out)
    assert data["stack"] == "dev" and len(data["policies"]) == 24
    access_key = next(v for v in data["violations"] if v["policy"] == "no-iam-access-keys")
    assert access_key == {
        "agent": "billing-agent", "file": "agents/billing-agent.yaml", "line": 4, "level": "mandatory",
        "severity": "critical", "policy": "no-iam-access-keys",
        "description": "No IAM access keys: they are long-lived static credentials.",
        "message": "IAM access key 'billing-agent-ci-key' for IAM user 'billing-agent-ci' is a long-lived "
                   "static credential",
        "remediation": access_key["remediation"],
        "resource_name": "billing-agent-ci-key", "resource_type": "aws:iam/accessKey:AccessKey",
        "urn": "urn:pulumi:dev::agent-passport::pulumi:pulumi:Stack$aws:iam/accessKey:AccessKey::billing-agent-ci-key",
    }
    assert access_key["remediation"].startswith("Give the agent an aws grant")


def test_sarif_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "check", "--stack", "dev", "--root", str(FIXTURE), "--format", "sarif")
    assert code == 1
    sarif = json.loads(out)
    assert sarif["version"] == "2.1.0"
    (run,) = sarif["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules][:3] == ["no-iam-access-keys", "no-iam-users", "no-service-account-token-secrets"]
    assert all(r["defaultConfiguration"]["level"] == "error" for r in rules)
    assert run["automationDetails"]["id"] == "passport-check/dev/"
    results = {r["ruleId"]: r for r in run["results"]}
    svid = results["svid-ttl-limits"]
    assert rules[svid["ruleIndex"]]["id"] == "svid-ttl-limits"
    assert svid["level"] == "error"
    assert svid["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "agents/triage-agent.yaml"}, "region": {"startLine": 8}}
    assert svid["locations"][0]["logicalLocations"][0]["fullyQualifiedName"].endswith(
        "::triage-agent-debug-registration")
    assert len(svid["partialFingerprints"]["passportCheck/v1"]) == 64
    db = results["vault-no-stored-db-password"]
    assert db["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "stacks/Pulumi.dev.yaml"


def test_enforcement_levels_from_policy_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "policy-config.json"
    config.write_text(json.dumps({"all": "advisory", "svid-ttl-limits": "disabled"}))
    code, out, _ = _run(capsys, "check", "--stack", "dev", "--root", str(FIXTURE), "--format", "json",
                        "--policy-config", str(config))
    data = json.loads(out)
    assert code == 0 and data["mandatory"] == 0
    assert {v["level"] for v in data["violations"]} == {"advisory"}
    assert "svid-ttl-limits" not in {v["policy"] for v in data["violations"]}
    # a policy's own level beats "all"
    config.write_text(json.dumps({"all": "advisory", "no-iam-access-keys": {"enforcementLevel": "mandatory"}}))
    code, out, _ = _run(capsys, "check", "--stack", "dev", "--root", str(FIXTURE), "--policy-config", str(config))
    assert code == 1
    assert "error [no-iam-access-keys]" in out and "warning [svid-ttl-limits]" in out


def test_limits_from_policy_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "policy-config.json"
    config.write_text(json.dumps({"svid-ttl-limits": {"maxX509SvidTtl": "720h", "caTtl": "200d"}}))
    code, out, _ = _run(capsys, "check", "--stack", "dev", "--root", str(FIXTURE), "--format", "json",
                        "--policy-config", str(config))
    assert "svid-ttl-limits" not in {v["policy"] for v in json.loads(out)["violations"]}
    assert code == 1


@pytest.mark.parametrize(("config", "message"), [
    ({"no-such-policy": "advisory"}, "no-such-policy: no such policy"),
    ({"svid-ttl-limits": "sometimes"}, "svid-ttl-limits: enforcement level must be one of"),
    ({"svid-ttl-limits": {"maxTtl": "1h"}}, "svid-ttl-limits.maxTtl: unknown property"),
    ({"resource-count-ceiling": {"maxResources": "many"}},
     "resource-count-ceiling.maxResources: must be of type integer"),
])
def test_bad_policy_config_is_an_input_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                              config: dict[str, object], message: str) -> None:
    path = tmp_path / "policy-config.json"
    path.write_text(json.dumps(config))
    code, _, err = _run(capsys, "check", "--stack", "dev", "--root", str(FIXTURE), "--policy-config", str(path))
    assert code == 2
    assert f"{path}: {message}" in err


@pytest.mark.parametrize(("value", "type_", "ok"), [
    (5, "integer", True), (5.0, "integer", False), (True, "integer", False), ("5", "integer", False),
    (5, "number", True), (0.5, "number", True), (False, "number", False),
    ("1h", "string", True), (1, "string", False), (True, "boolean", True), (0, "boolean", False),
    ([], "array", True), ({}, "array", False), ({}, "object", True), ([], "object", False),
])
def test_policy_config_types_follow_json_schema(value: object, type_: str, ok: bool) -> None:
    """Property types are checked by jsonschema, as the hand-written checks did: a boolean is not a
    number, 1.0 is not an integer; a property without a type takes anything."""
    from components.check import _type_ok

    assert _type_ok(value, {"type": type_}) is ok
    assert _type_ok(value, {"description": "no type"}) is True


def test_unknown_stack_is_an_input_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "check", "--stack", "nope")
    assert code == 2
    assert "no such stack file" in err


def test_write_policy_config_carries_the_stack_limits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "prod-policy-config.json"
    _run(capsys, "check", "--stack", "prod", "--format", "json", "--write-policy-config", str(out))
    config = json.loads(out.read_text())
    assert len(config) == 24
    assert config["svid-ttl-limits"] == {"enforcementLevel": "mandatory", "maxX509SvidTtl": "30m",
                                         "maxJwtSvidTtl": "15m", "caTtl": "24h"}
    assert config["no-state-root-key-in-prod"]["productionStacks"] == ["^prod"]
    assert config["resource-count-ceiling"]["maxResources"] == 5000
