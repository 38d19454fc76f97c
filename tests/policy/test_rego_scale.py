"""Generated Rego cases stay linear in grants, and stay right (checked against the reference
``decide``, which mirrors the policy; the OPA tests in test_rego_policy.py check OPA agrees)."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.synthetic import stack_config, write_grant_manifest
from components.manifest.loader import load_manifests
from components.platform_model import Platform, build_platform
from components.render import rego
from tests.policy.test_rego_policy import repo_platform, synthetic_platform


def many_grants(tmp_path: Path, grants: int) -> Platform:
    fleet = write_grant_manifest(tmp_path, grants)
    return build_platform(stack_config(fleet), load_manifests([fleet]), "dev", "stacks/Pulumi.dev.yaml")


def test_every_generated_case_agrees_with_the_reference_decision(tmp_path: Path) -> None:
    platforms = [synthetic_platform(tmp_path / "s"), repo_platform("dev"), many_grants(tmp_path / "g", 120)]
    for platform in platforms:
        data = rego.with_revocations(rego.stack_data(platform))
        cases = rego.rego_cases(platform)
        assert cases
        for case in cases:
            mocked = data if case.revocations is None else {
                **data, "agentpassport": {**data["agentpassport"], "revocations": case.revocations}}
            assert case.matches(rego.decide(mocked, case.request)), case.name


def test_large_entries_assert_the_grants_own_failure_small_ones_the_whole_decision(tmp_path: Path) -> None:
    cases = rego.rego_cases(many_grants(tmp_path, 200))
    partial = [c for c in cases if c.reason_contains is not None]
    assert partial and all(not c.expected["allowed"] for c in partial)
    grant = re.search(r"_grant(\d+)_", partial[0].name).group(1)  # type: ignore[union-attr]
    assert partial[0].reason_contains.startswith(f"spec.grants[{grant}]: ")
    assert partial[0].expected == {"allowed": False, "http_status": 403,
                                   "reason": "denied: no grant of agent many-grants on service "
                                             f"{partial[0].request.service} matches: "}
    # the entries of the committed agents are small: every decision is asserted whole
    assert all(c.reason_contains is None for c in rego.rego_cases(repo_platform("dev")))


def test_partial_expectations_are_not_vacuous(tmp_path: Path) -> None:
    """A decision naming another grant's failure, or allowing, does not match a partial case."""
    case = next(c for c in rego.rego_cases(many_grants(tmp_path, 200)) if c.reason_contains is not None)
    real = rego.decide(rego.with_revocations(rego.stack_data(many_grants(tmp_path / "again", 200))), case.request)
    assert case.matches(real)
    assert not case.matches({**real, "reason": real["reason"].replace(case.reason_contains, "")})
    assert not case.matches({**real, "allowed": True})


def test_the_generated_test_file_uses_the_helper_only_when_needed(tmp_path: Path) -> None:
    big = rego.render_tests(rego.rego_cases(many_grants(tmp_path, 200)))
    assert "denied_by(decision, prefix, failure) if {" in big
    assert "\tdenied_by(authz.decision, \"denied: no grant of agent many-grants on service " in big
    small = rego.render_tests(rego.rego_cases(repo_platform("dev")))
    assert "denied_by" not in small


def test_the_indexed_decider_agrees_with_the_reference_on_random_requests(tmp_path: Path) -> None:
    platform = many_grants(tmp_path, 150)
    data = rego.with_revocations(rego.stack_data(platform))
    decider = rego.Decider(data)
    cases = rego.rego_cases(platform)
    rng = random.Random(3)  # noqa: S311 - reproducible test data, not secrets
    paths = ["/", "/api", "/api/v2/items/1", "/api/v2/items/1/x", "/api/v2/items/11", "/api/v1/items/5",
             "/api/v1/items/5/", "/direct/3", "/api/v3/items/2"]
    for _ in range(600):
        base = rng.choice(cases).request
        req = replace(base, method=rng.choice(rego.ALL_METHODS), path=rng.choice([base.path, *paths]),
                      headers=rng.choice([base.headers, {}, {"x-tenant": "t1"}]),
                      now_ns=rng.choice([base.now_ns, rego._at(5, "03:00", "UTC")]))
        expected = rego.decide(data, req)
        assert decider.allows(req) == expected["allowed"], req
        assert decider.decision(req) == (expected, None), req


@pytest.mark.parametrize("kind", ["rule_failure"])
def test_case_generation_does_linear_work_in_grants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    kind: str) -> None:
    """Counted, not timed: rule evaluations per grant stay flat as one agent's grants grow (they
    grew with the number of grants before: every candidate request was decided against every rule)."""
    calls = {"n": 0}
    real = rego.rule_failure

    def counting(rule: object, req: rego.Request) -> str:
        calls["n"] += 1
        return real(rule, req)  # type: ignore[arg-type]

    for module in (rego.reference, rego.cases):  # every module that evaluates rules
        monkeypatch.setattr(module, kind, counting)
    per_grant = []
    for n in (100, 400):
        platform = many_grants(tmp_path / str(n), n)
        calls["n"] = 0
        rego.rego_cases(platform)
        per_grant.append(calls["n"] / n)
    assert per_grant[1] < per_grant[0] * 1.5, per_grant


def test_opa_runs_the_generated_tests_of_an_agent_with_many_grants(tmp_path: Path) -> None:
    """Real OPA: the partial deny tests pass, are `opa check --strict` and `opa fmt` clean, and
    fail for a policy that drops a grant's failure from the reason."""
    from tests.policy.test_rego_policy import opa_decision, run_opa, write_bundle

    platform = many_grants(tmp_path / "m", 120)  # 24 rules per gateway service: above the exact limit
    cases = rego.rego_cases(platform)
    assert any(c.reason_contains for c in cases)
    bundle = write_bundle(platform, tmp_path / "b")
    proc = run_opa("test", str(bundle))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"PASS: {len(cases)}/{len(cases)}" in run_opa("test", "--verbose", str(bundle)).stdout
    files = [str(bundle / "policy.rego"), str(bundle / "policy_test.rego")]
    assert run_opa("check", "--strict", *files).returncode == 0
    fmt = run_opa("fmt", "--list", "--fail", str(bundle / "policy_test.rego"))
    assert fmt.returncode == 0, f"not opa-fmt formatted: {fmt.stdout}"
    for case in [c for c in cases if c.reason_contains][:20]:
        assert case.matches(opa_decision(bundle, case.input, case.request.now_ns, case.revocations)), case.name
    # a policy whose reason leaves out the failures is caught by the partial tests
    broken = rego.POLICY.replace('concat("; ", failures)', '""')
    assert broken != rego.POLICY
    bad = write_bundle(platform, tmp_path / "broken", policy=broken)
    assert run_opa("test", str(bad)).returncode != 0
