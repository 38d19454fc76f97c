"""The compile step (components.compile): every subsystem's rules in one run, plans or every problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from components.cli import main
from components.compile import Plans, Problems, compile, compile_plans
from components.config import list_stacks, load_stack_config
from components.errors import ConfigError, InputError, ManifestError, Problem, input_error
from components.manifest.loader import load_manifests
from components.platform_model import Platform, build_platform
from components.render.artifacts import render_all, render_plans
from tests.conftest import ROOT

# A VM agent attested by aws_iid with no tag (SPIRE: every EC2 instance of the region would get
# its identity) that calls a service over HTTP (Linkerd: it has no mesh identity), and whose Vault
# grant reaches a path Agent Passport manages through a glob (Vault).
WIDE_VM = """\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata:
  name: wide-vm
  team: test
  owner: test@acme-corp.net
spec:
  identity:
    jwtAudiences: [vault]
  platform:
    vm:
      attestation: aws_iid
      awsAccountId: "111122223333"
      awsRegion: eu-west-1
      workloadSelectors: ["unix:uid:4242"]
  grants:
    - http:
        service: inference
        methods: [POST]
        paths: [{exact: /v1/infer}]
    - vault:
        path: s*
        capabilities: [read]
"""


def _manifests(tmp_path: Path) -> Path:
    agents = tmp_path / "agents"
    shutil.copytree(ROOT / "agents", agents)
    (agents / "wide-vm.yaml").write_text(WIDE_VM)
    return agents


def _platform(stack: str, agents: Path) -> Platform:
    return build_platform(load_stack_config(stack, ROOT), load_manifests([agents]), stack,
                          f"stacks/Pulumi.{stack}.yaml")


@pytest.mark.parametrize("stack", list_stacks(ROOT))
def test_every_stack_compiles_to_plans(stack: str) -> None:
    platform = _platform(stack, ROOT / "agents")
    plans = compile(platform)
    assert isinstance(plans, Plans), plans
    on = platform.config.subsystems
    assert (plans.spire is not None) == on.spire
    assert (plans.mesh is not None) == on.mesh
    assert (plans.authz is not None) == on.authz
    assert (plans.vault is not None) == on.vault
    assert (plans.aws is not None) == on.aws
    assert (plans.trust is None) == (plans.scope == "agents")  # a shard's CAs are its base's
    assert render_plans(plans) == render_all(platform)


def test_problems_in_three_subsystems_are_reported_in_one_run(tmp_path: Path) -> None:
    result = compile(_platform("dev", _manifests(tmp_path)))
    assert isinstance(result, Problems)
    fields = {(Path(p.file).name, p.field) for p in result.problems}
    assert ("wide-vm.yaml", "spec.platform.vm") in fields  # SPIRE
    assert ("wide-vm.yaml", "spec.grants[0].http.service") in fields  # egress (gateway-less service)
    assert ("wide-vm.yaml", "spec.grants[1].vault.path") in fields  # Vault
    error = result.error()
    assert isinstance(error, ManifestError) and not isinstance(error, ConfigError)
    with pytest.raises(ManifestError) as raised:
        compile_plans(_platform("dev", _manifests(tmp_path / "again")))
    assert len(raised.value.problems) == len(error.problems)


def test_validate_prints_every_subsystems_problems_and_exits_2(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(_manifests(tmp_path)), "--stack", "dev"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert any(": spec.platform.vm: aws_iid attestation without awsInstanceTags" in line for line in err)
    assert any(": spec.grants[0].http.service: agent 'wide-vm' runs on vm, outside the Linkerd mesh; service "
               "'inference' has no gateway" in line for line in err)
    assert any(": spec.grants[1].vault.path: " in line for line in err)
    assert all(line.startswith(str(tmp_path)) for line in err[:-1])  # file:line: field: reason
    assert err[-1] == f"{len(err) - 1} problems found in agent manifests"
    assert "Traceback" not in "\n".join(err)


def test_validate_reports_every_stacks_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One run reports what each stack refuses, not only the first stack's; a problem that several
    stacks find is reported once."""
    assert main(["validate", str(_manifests(tmp_path)), "--stack", "nope", "--stack", "dev", "--stack", "prod"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "stacks/Pulumi.nope.yaml: no such stack file (stacks found: " in "\n".join(err)
    assert sum(": spec.platform.vm: aws_iid attestation" in line for line in err) == 1
    assert err[-1] == f"{len(err) - 1} problems found in stack configuration and agent manifests"


def test_render_and_the_program_refuse_the_same_problems(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    agents = _manifests(tmp_path)
    assert main(["render", "--stack", "dev", "--out", str(tmp_path / "out"), "--paths", str(agents)]) == 2
    err = capsys.readouterr().err
    assert "spec.platform.vm" in err and "spec.grants[0].http" in err and "spec.grants[1].vault.path" in err
    assert not (tmp_path / "out").exists()  # nothing written


def test_input_error_kinds() -> None:
    config = Problem("stacks/Pulumi.dev.yaml", None, "agent-passport:spire.caTtl", "too long")
    manifest = Problem("agents/a.yaml", 3, "spec.identity", "bad")
    assert type(input_error([config], ["stacks/Pulumi.dev.yaml"])) is ConfigError
    assert type(input_error([manifest], ["stacks/Pulumi.dev.yaml"])) is ManifestError
    both = input_error([config, manifest], ["stacks/Pulumi.dev.yaml"])
    assert isinstance(both, InputError) and isinstance(both, ConfigError) and isinstance(both, ManifestError)
    assert both.report().splitlines() == [
        "agents/a.yaml:3: spec.identity: bad",
        "stacks/Pulumi.dev.yaml: agent-passport:spire.caTtl: too long",
        "2 problems found in stack configuration and agent manifests",
    ]
