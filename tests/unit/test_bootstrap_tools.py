"""``scripts/bootstrap-tools`` and its pins in ``scripts/tools.toml``.

Most tests run the real script against a fake cache under ``tmp_path`` with a PATH that holds only
a fake ``go`` (which records its arguments and fails), so a test that expects no build proves it,
and one that expects a build sees it fail the way a refused module does. The wrapper go.mod rewriting
is tested on real ``go mod edit -json`` output of the tools' modules (``tests/fixtures/bootstrap``),
offline. One e2e test builds kubeconform for real into a temporary cache.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.tools import ROOT, missing

SCRIPT = ROOT / "scripts" / "bootstrap-tools"
TOOLS_TOML = ROOT / "scripts" / "tools.toml"
GO_SOURCES = ROOT / "scripts" / "bootstrap" / "go"
FIXTURES = ROOT / "tests" / "fixtures" / "bootstrap"


def _load_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("bootstrap_tools", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


bt = _load_script()
PINS: dict[str, Any] = tomllib.loads(TOOLS_TOML.read_text(encoding="utf-8"))
TOOLS: dict[str, dict[str, Any]] = {t["name"]: t for t in PINS["tool"]}
REG = bt.load_tools()


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.gomod.json").read_text(encoding="utf-8"))
    return data


# ---------------------------------------------------------------------------------------------
# Running the script against a fake cache
# ---------------------------------------------------------------------------------------------


class Sandbox:
    """A home with its own cache, and a PATH with a fake `go` that records every call and fails."""

    def __init__(self, tmp: Path) -> None:
        self.home = tmp / "home"
        self.cache = self.home / ".cache" / "agent-passport" / "tools"
        self.path_dir = tmp / "path"
        self.path_dir.mkdir(parents=True)
        self.go_calls = tmp / "go-calls"
        self.fake("go", f'echo "$*" >> "{self.go_calls}"\n'
                        'echo "go: reading https://proxy.example.invalid/x/@v/v1.info: 403 Forbidden" >&2\n'
                        "exit 1\n")
        self.fake("nice", 'shift 2\nexec "$@"\n')  # nice -n 10 CMD...

    def fake(self, name: str, body: str, where: Path | None = None) -> Path:
        path = (where or self.path_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
        path.chmod(0o755)
        return path

    def prebuilt(self, name: str) -> Path:
        """A binary in the cache where the bash script and this one put builds."""
        version = TOOLS[name]["version"]
        return self.fake(name, f'echo "{name} {version}"\n', self.cache / "pkgs" / name / version)

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        base = {"HOME": str(self.home), "PATH": str(self.path_dir), "LC_ALL": "C.UTF-8"}
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args],
            env={**base, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def go_was_called(self) -> list[str]:
        return self.go_calls.read_text().splitlines() if self.go_calls.exists() else []


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["extra"], "unrecognized arguments: extra"),
        (["--only"], "--only: expected one argument"),
        (["--only", "opa,nosuchtool"], "unknown tool 'nosuchtool' (see --list)"),
        (["--budget", "soon"], "--budget: a whole number of seconds is needed, not 'soon'"),
        (["--budget=-5"], "--budget: a whole number of seconds is needed, not '-5'"),
        (["--budget"], "--budget: expected one argument"),
        (["--lis"], "unrecognized arguments: --lis"),  # no abbreviations
    ],
)
def test_bad_arguments_exit_2(sandbox: Sandbox, args: list[str], message: str) -> None:
    res = sandbox.run(*args)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("[bootstrap] error: ") or "usage: scripts/bootstrap-tools" in res.stderr
    assert message in res.stderr
    assert not sandbox.go_was_called()


def test_no_go_and_bad_build_jobs_exit_2(sandbox: Sandbox) -> None:
    (sandbox.path_dir / "go").unlink()
    res = sandbox.run("--only", "opa")
    assert res.returncode == 2
    assert "go is not on PATH" in res.stderr
    sandbox.fake("go", "exit 1\n")
    res = sandbox.run("--only", "opa", env={"BOOTSTRAP_BUILD_JOBS": "many"})
    assert res.returncode == 2
    assert "BOOTSTRAP_BUILD_JOBS must be a positive whole number" in res.stderr


def test_help(sandbox: Sandbox) -> None:
    res = sandbox.run("--help")
    assert res.returncode == 0
    for flag in ("--only", "--list", "--print-path", "--require-all", "--with-postgres", "--with-graphviz",
                 "--rebuild", "--budget"):
        assert flag in res.stdout
    assert "spire = spire-server,spire-agent,spire-oidc-discovery-provider" in res.stdout


def test_with_graphviz_links_dot_from_path(sandbox: Sandbox) -> None:
    """A dot already on PATH is linked into the cache by its name (Debian's dispatches on it), and
    nothing is installed or built; a missing one would be installed with apt (not run here)."""
    sandbox.prebuilt("opa")
    dot = sandbox.fake("dot", 'echo "dot - graphviz version 2.43.0 (0)" >&2\n')
    res = sandbox.run("--only", "opa", "--with-graphviz")
    assert res.returncode == 0, res.stderr
    assert "graphviz: dot available" in res.stderr
    assert os.readlink(sandbox.cache / "bin" / "dot") == str(dot)
    assert not sandbox.go_was_called()


def test_print_path(sandbox: Sandbox) -> None:
    res = sandbox.run("--print-path")
    assert res.returncode == 0
    assert res.stdout == f"{sandbox.cache / 'bin'}\n"
    assert (sandbox.cache / "bin").is_dir()
    xdg = sandbox.home / "xdg"
    res = sandbox.run("--print-path", env={"XDG_CACHE_HOME": str(xdg)})
    assert res.stdout == f"{xdg / 'agent-passport/tools/bin'}\n"


def test_list_shows_every_tool_with_its_pin_and_cache_state(sandbox: Sandbox) -> None:
    sandbox.prebuilt("kubeconform")
    sandbox.fake("opa", 'echo "Version: 1.22.2"\n')  # on PATH
    res = sandbox.run("--list")
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line.split() for line in res.stdout.splitlines()[1:] if line and ":" not in line}
    assert list(rows) == list(TOOLS)  # every tool of tools.toml, in its order
    for name, tool in TOOLS.items():
        _, version, *state, package = rows[name]
        assert version == tool["version"]
        assert package == tool["package"]
        expected = {"kubeconform": "cached", "opa": "on PATH"}.get(name, "missing")
        assert " ".join(state) == expected, name
    assert "only with --only: pulumi-language-python, pulumi-resource-tls" in res.stdout
    assert not sandbox.go_was_called()


def test_a_cached_binary_is_linked_without_building(sandbox: Sandbox) -> None:
    opa, kubeconform = sandbox.prebuilt("opa"), sandbox.prebuilt("kubeconform")
    res = sandbox.run("--only", "opa,kubeconform")
    assert res.returncode == 0, res.stderr
    assert not sandbox.go_was_called()
    # the layout the bash script used, so the shared cache's builds are found
    assert os.readlink(sandbox.cache / "bin" / "opa") == str(sandbox.cache / "pkgs/opa/1.22.2/opa") == str(opa)
    assert os.readlink(sandbox.cache / "bin" / "kubeconform") == str(kubeconform)
    assert "[bootstrap] cached opa v1.22.2" in res.stderr
    assert f"[bootstrap] ok      kubeconform: {kubeconform}" in res.stderr
    assert (sandbox.cache / ".lock").exists()


def test_an_acceptable_binary_on_path_is_used(sandbox: Sandbox) -> None:
    on_path = sandbox.fake("kubeconform", 'echo "v0.8.1"\n')
    res = sandbox.run("--only", "kubeconform")
    assert res.returncode == 0, res.stderr
    assert f"using {on_path} (kubeconform 0.8.1, on PATH)" in res.stderr
    assert not (sandbox.cache / "bin" / "kubeconform").exists()
    assert not sandbox.go_was_called()


def test_a_failed_required_build_exits_1_with_the_reason(sandbox: Sandbox) -> None:
    sandbox.fake("kubeconform", 'echo "v0.5.0"\n')  # below min_version 0.6.0: built instead
    res = sandbox.run("--only", "kubeconform")
    assert res.returncode == 1
    assert sandbox.go_was_called()[0].startswith("install -p 2 -trimpath -ldflags -s -w -X main.version=v0.8.0 ")
    log = sandbox.cache / "logs" / "kubeconform-0.8.0.log"
    assert f"log: {log}" in res.stderr
    assert "FAILED kubeconform v0.8.0" in res.stderr
    assert "<proxy>/x/@v/v1.info: 403 Forbidden" in res.stderr  # reason from the log, proxy host hidden
    assert "required tool kubeconform failed" in res.stderr
    assert not (sandbox.cache / "pkgs" / "kubeconform" / "0.8.0").exists()  # nothing half-built kept
    assert list((sandbox.cache / "tmp").iterdir()) == []


def test_an_ocb_tool_installs_the_builder_first_and_fails_with_its_reason(sandbox: Sandbox) -> None:
    res = sandbox.run("--only", "otelcol-audit")
    assert res.returncode == 1
    assert sandbox.go_was_called() == ["install -p 2 -trimpath go.opentelemetry.io/collector/cmd/builder@v0.165.0"]
    assert "FAILED otelcol-audit v0.165.0" in res.stderr and "403 Forbidden" in res.stderr
    assert not (sandbox.cache / "pkgs" / "otelcol-audit" / "0.165.0").exists()


def test_ocb_manifest_pins_one_collector_release() -> None:
    tool = REG.tools["otelcol-audit"]
    assert (tool.mode, tool.manifest) == ("ocb", "otelcol-audit.yaml")
    manifest = (ROOT / "scripts" / "bootstrap" / "ocb" / tool.manifest).read_text(encoding="utf-8")
    assert f"  name: {tool.name}\n" in manifest and f"  version: {tool.version}\n" in manifest
    assert bt.OCB_OUTPUT in manifest
    versions = set(re.findall(r"gomod: \S+ (v\S+)", manifest))
    assert versions == {f"v{tool.version}", "v1.71.0"}  # collector v0.165.0 goes with core v1.71.0


def test_budget_skips_best_effort_tools_whose_build_would_overrun(sandbox: Sandbox) -> None:
    sandbox.prebuilt("opa")
    sandbox.prebuilt("kubeconform")
    res = sandbox.run("--budget", "200")
    assert res.returncode == 0, res.stderr  # best-effort failures and skips do not fail
    # etcd (150 s) fits in 200 s and is tried (the fake go fails it); the rest would overrun
    assert "[bootstrap] building etcd v3.6.17" in res.stderr
    assert re.search(r"failed  etcd v3\.6\.17: .*403 Forbidden", res.stderr)
    skipped = re.findall(r"\[bootstrap\] SKIPPED (\S+) v\S+: its fresh build takes about (\d+)s, "
                         r"only \d+s of the --budget of 200s left", res.stderr)
    assert {name: int(est) for name, est in skipped} == {
        t.name: t.estimate for t in REG.default_tools() if t.estimate > 150
    }
    assert "skipped spire-server v1.15.3: its fresh build takes about 890s" in res.stderr
    for optional in ("pulumi-language-python", "pulumi-resource-tls", "opa-envoy-plugin"):
        assert optional not in res.stderr


def test_budget_never_skips_required_or_cached_tools(sandbox: Sandbox) -> None:
    sandbox.prebuilt("spire-agent")
    res = sandbox.run("--budget", "1")
    assert res.returncode == 1  # opa and kubeconform are required: built (and fail here), not skipped
    assert "[bootstrap] building opa v1.22.2" in res.stderr
    assert "[bootstrap] building kubeconform v0.8.0" in res.stderr
    assert "cached spire-agent v1.15.3" in res.stderr  # linked whatever the budget
    assert os.path.islink(sandbox.cache / "bin" / "spire-agent")
    assert "SKIPPED spire-server v1.15.3:" in res.stderr


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "minimum", "pin", "ok"),
    [
        ("0.8.1", "0.6.0", "0.8.0", True),
        ("0.6.0", "0.6.0", "0.8.0", True),
        ("0.5.9", "0.6.0", "0.8.0", False),
        ("1.0.0", "0.6.0", "0.8.0", False),  # another major version
        ("3.9.1", "3.0.0", "3.8.0", True),  # promtool: compared with the version it shows
        ("", "1.0.0", "1.22.2", False),
        ("1.2.3", "", "1.22.2", True),
    ],
)
def test_acceptable(version: str, minimum: str, pin: str, ok: bool) -> None:
    assert bt.acceptable(version, minimum, pin) is ok


def test_failure_reason(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text(
        "go: downloading a v1\nverifying github.com/x@v1: reading https://proxy.golang.org/x: 403 Forbidden\n"
        "\tserver response: This module version is not available.\nmore\n"
    )
    assert bt.failure_reason(log) == (
        "verifying github.com/x@v1: reading <proxy>/x: 403 Forbidden "
        "\tserver response: This module version is not available."
    )
    log.write_text("a\nb\nc\nd\n")
    assert bt.failure_reason(log) == "b c d"


def test_ldflags_placeholders() -> None:
    assert REG.tools["kubectl"].ldflags_value().split()[:5] == [
        "-s", "-w", "-X", "k8s.io/component-base/version.gitVersion=v1.35.4", "-X"
    ]
    assert "k8s.io/client-go/pkg/version.gitMinor=35" in REG.tools["kubectl"].ldflags_value()
    assert REG.tools["promtool"].ldflags_value().endswith("version.Version=3.8.0")
    assert REG.tools["etcd"].ldflags_value() == "-s -w"


def edits_by_flag(plan: Any, flag: str) -> list[str]:
    return [e.removeprefix(f"-{flag}=") for e in plan.edits if e.startswith(f"-{flag}=")]


def test_wrapper_for_kubernetes_staging_replaces() -> None:
    gomod = fixture("kubernetes-v1.35.4")
    plan = bt.plan_wrapper(REG.tools["kube-apiserver"], gomod)
    assert plan.problems == []
    assert edits_by_flag(plan, "require") == ["k8s.io/kubernetes@v1.35.4"]
    staging = [r["Old"]["Path"] for r in gomod["Replace"]]
    assert len(staging) == 31
    # every ./staging/src/k8s.io/X becomes the published k8s.io/X at v0.35.4
    assert edits_by_flag(plan, "replace") == [f"{m}={m}@v0.35.4" for m in staging]
    assert not [n for n in plan.notes if "dropped" in n]


def test_wrapper_for_sibling_replaces() -> None:
    plan = bt.plan_wrapper(REG.tools["etcd"], fixture("etcd-server-v3.6.17"))
    assert edits_by_flag(plan, "require") == [
        "go.etcd.io/etcd/server/v3@v3.6.17",
        "go.etcd.io/etcd/api/v3@v3.6.17",
        "go.etcd.io/etcd/client/pkg/v3@v3.6.17",
        "go.etcd.io/etcd/client/v3@v3.6.17",
        "go.etcd.io/etcd/pkg/v3@v3.6.17",
    ]
    assert edits_by_flag(plan, "replace") == []  # siblings required; ./FORBIDDEN_DEPENDENCY dropped
    assert "replace go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY: dropped (the published module is used)" in plan.notes
    assert "replace go.etcd.io/etcd/api/v3 => ../api: required at v3.6.17 instead" in plan.notes


def test_wrapper_repeats_versioned_replaces_and_excludes() -> None:
    plan = bt.plan_wrapper(REG.tools["pulumi"], fixture("pulumi-pkg-v3.276.0"))
    assert edits_by_flag(plan, "require") == ["github.com/pulumi/pulumi/pkg/v3@v3.276.0",
                                              "github.com/pulumi/pulumi/sdk/v3@v3.276.0"]
    assert edits_by_flag(plan, "replace") == [
        "github.com/atotto/clipboard=github.com/tgummerer/clipboard@v0.0.0-20241001131231-d02d263e614e"
    ]
    plan = bt.plan_wrapper(REG.tools["promtool"], fixture("prometheus-v0.308.0"))
    assert edits_by_flag(plan, "exclude") == [
        "github.com/linode/linodego@v1.0.0",
        "github.com/grpc-ecosystem/grpc-gateway@v1.14.7",
        "google.golang.org/api@v0.30.0",
    ]
    # a pseudo-version module_version is what the wrapper requires
    plan = bt.plan_wrapper(REG.tools["pulumi-resource-kubernetes"], {"Replace": []})
    assert edits_by_flag(plan, "require")[0] == (
        "github.com/pulumi/pulumi-kubernetes/provider/v4@v4.0.0-20260115033456-f47bc2d6f199"
    )


def test_wrapper_shims_upstreams_stubs_and_dropped_replaces() -> None:
    gomod = {
        "Replace": [
            {"Old": {"Path": "github.com/hashicorp/terraform-provider-tls/shim"}, "New": {"Path": "./shim"}},
            {"Old": {"Path": "github.com/hashicorp/terraform-provider-vault"}, "New": {"Path": "../upstream"}},
            {"Old": {"Path": "github.com/boltdb/bolt"}, "New": {"Path": "./helper/stubbolt"}},
            {"Old": {"Path": "github.com/a/b", "Version": "v1.0.0"},
             "New": {"Path": "github.com/c/b", "Version": "v1.0.1"}},
        ],
        "Require": [
            {"Path": "github.com/hashicorp/terraform-provider-tls", "Version": "v1.2.3"},
            {"Path": "github.com/hashicorp/terraform-plugin-framework", "Version": "v1.15.0"},
        ],
    }
    plan = bt.plan_wrapper(REG.tools["pulumi-resource-tls"], gomod)
    assert plan.problems == []
    assert plan.shims == {"github.com/hashicorp/terraform-provider-tls/shim": "terraform-provider-tls"}
    assert plan.upstreams == ["github.com/hashicorp/terraform-provider-vault"]
    assert edits_by_flag(plan, "replace") == [
        "github.com/hashicorp/terraform-provider-tls/shim=./shims/terraform-provider-tls",
        "github.com/hashicorp/terraform-provider-vault=./upstream",
        "github.com/a/b@v1.0.0=github.com/c/b@v1.0.1",
    ]
    assert "github.com/hashicorp/terraform-provider-tls/shim@v0.0.0" in edits_by_flag(plan, "require")
    assert bt.shim_gomod("github.com/hashicorp/terraform-provider-tls/shim", gomod, "1.26.8") == (
        "module github.com/hashicorp/terraform-provider-tls/shim\n\ngo 1.26.8\n\nrequire (\n"
        "\tgithub.com/hashicorp/terraform-provider-tls v1.2.3\n"
        "\tgithub.com/hashicorp/terraform-plugin-framework v1.15.0\n)\n"
    )
    # a shim the tool does not declare is a problem, not a silent drop
    assert bt.plan_wrapper(REG.tools["pulumi-resource-vault"], gomod).problems == [
        "no shim known for github.com/hashicorp/terraform-provider-tls/shim (shims in tools.toml)"
    ]
    plan = bt.plan_wrapper(REG.tools["spire-server"], {})
    assert plan.stubs == {"github.com/Keyfactor/ejbca-go-client-sdk": "ejbca"}
    assert "github.com/Keyfactor/ejbca-go-client-sdk=./stubs/ejbca" in edits_by_flag(plan, "replace")
    assert bt.plan_wrapper(REG.tools["spire-agent"], {}).stubs == {}


def go_or_missing() -> str:
    go = shutil.which("go")
    if go is None:
        missing("`go`", "install Go (https://go.dev/dl/)")
        raise AssertionError("unreachable")  # pragma: no cover
    return go


def test_wrapper_gomod_made_by_go_mod_edit(tmp_path: Path) -> None:
    """The plan's flags applied by the real `go mod edit` (offline) give the wrapper go.mod expected."""
    go = go_or_missing()
    env = {**os.environ, "GOFLAGS": "", "GOTOOLCHAIN": "local", "GOPROXY": "off"}
    for tool, name in (("kube-apiserver", "kubernetes-v1.35.4"), ("etcd", "etcd-server-v3.6.17"),
                       ("promtool", "prometheus-v0.308.0")):
        plan = bt.plan_wrapper(REG.tools[tool], fixture(name))
        d = tmp_path / tool
        d.mkdir()
        (d / "go.mod").write_text(f"module agent-passport.invalid/bootstrap/{tool}\n\ngo 1.22\n")
        subprocess.run([go, "mod", "edit", *plan.edits], cwd=d, env=env, check=True)
        made = json.loads(subprocess.run([go, "mod", "edit", "-json"], cwd=d, env=env, check=True,
                                         capture_output=True, text=True).stdout)
        requires = {r["Path"]: r["Version"] for r in made.get("Require") or []}
        assert requires[REG.tools[tool].module] == REG.tools[tool].modver
        if tool == "kube-apiserver":
            assert len(made["Replace"]) == 31
            assert {r["New"]["Version"] for r in made["Replace"]} == {"v0.35.4"}
            assert all(r["New"]["Path"] == r["Old"]["Path"] for r in made["Replace"])
        if tool == "etcd":
            assert "Replace" not in made or not made["Replace"]
            assert requires["go.etcd.io/etcd/client/v3"] == "v3.6.17"
        if tool == "promtool":
            assert len(made["Exclude"]) == 3


def test_fill_embeds(tmp_path: Path) -> None:
    (tmp_path / "generate.go").write_text("//go:build ignore\n\npackage main\n")
    (tmp_path / "main.go").write_text(
        'package main\n\nimport _ "embed"\n\n//go:embed schema-embed.json\nvar s []byte\n\n'
        "//go:embed terraform-mapping-embed.json\nvar m []byte\n"
    )
    (tmp_path / "schema.json").write_text('{"name": "kubernetes", "version": ""}')
    (tmp_path / "terraform-mapping.json").write_text('{"a": 1}')
    bt.fill_embeds(tmp_path, "4.25.0")
    assert not (tmp_path / "generate.go").exists()
    assert json.loads((tmp_path / "schema-embed.json").read_text()) == {"name": "kubernetes", "version": "4.25.0"}
    assert json.loads((tmp_path / "terraform-mapping-embed.json").read_text()) == {"a": 1}
    (tmp_path / "other.go").write_text("package main\n\n//go:embed missing.txt\nvar x string\n")
    with pytest.raises(bt.BuildError, match=r"embeds missing\.txt, which the module does not ship"):
        bt.fill_embeds(tmp_path, "4.25.0")


# ---------------------------------------------------------------------------------------------
# tools.toml
# ---------------------------------------------------------------------------------------------


def test_tools_toml_is_consistent() -> None:
    assert list(REG.tools) == list(TOOLS)
    assert REG.groups["spire"] == ("spire-server", "spire-agent", "spire-oidc-discovery-provider")
    assert [t.name for t in REG.default_tools() if t.required] == ["opa", "kubeconform"]
    by_module: dict[str, set[str]] = {}
    for tool in REG.tools.values():
        by_module.setdefault(tool.module, set()).add(tool.version)
        for stub in tool.stubs:
            assert (GO_SOURCES / "stubs" / stub / "go.mod").is_file()
        for folder in tool.shims.values():
            assert list((GO_SOURCES / "shims" / folder).glob("*.go"))
        if tool.staging_version:  # k8s.io/kubernetes 1.x.y publishes its staging modules as v0.x.y
            assert tool.staging_version == "v0." + tool.version.split(".", 1)[1]
        if tool.kind == "plugin":
            assert tool.copy_main and tool.name.startswith("pulumi-resource-")
        assert tool.mode == "wrapper" or not (tool.siblings or tool.stubs or tool.shims or tool.staging_version)
    # tools built from one module (spire-*, kube-apiserver/kubectl) share its version
    assert {m: v for m, v in by_module.items() if len(v) > 1} == {}


def test_pulumi_pins_match_the_python_sdks() -> None:
    """The plugins are the ones the Python SDKs in pyproject.toml drive."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floor = {m.group(1): m.group(2) for d in project if (m := re.match(r"([A-Za-z0-9_.-]+)(?:==|>=)([0-9.]+)", d))}
    assert floor["pulumi-kubernetes"] == REG.tools["pulumi-resource-kubernetes"].version
    assert "pulumi-kubernetes==4.25.0" in project  # pinned exactly: the plugin that builds here
    assert floor["pulumi-tls"] == REG.tools["pulumi-resource-tls"].version
    assert floor["pulumi-vault"] == REG.tools["pulumi-resource-vault"].version
    assert floor["pulumi"] == REG.tools["pulumi-language-python"].version


def test_tools_toml_mistakes_are_usage_errors(tmp_path: Path) -> None:
    bad = tmp_path / "tools.toml"
    bad.write_text('[[tool]]\nname = "x"\nversion = "1.0.0"\nmodule = "m"\npackage = "m"\nestimat = 3\n')
    with pytest.raises(bt.UsageError, match=r"tool #1 \(x\): unknown field\(s\) estimat"):
        bt.load_tools(bad)
    bad.write_text('[[tool]]\nname = "x"\nversion = "1.0.0"\nmodule = "m"\npackage = "m"\ncgo = "yes"\n')
    with pytest.raises(bt.UsageError, match="cgo must be true/false"):
        bt.load_tools(bad)
    bad.write_text('[[tool]]\nname = "x"\nversion = "1"\nmodule = "m"\npackage = "m"\nmanifest = "x.yaml"\n')
    with pytest.raises(bt.UsageError, match=r"manifest .* goes with mode ocb only"):
        bt.load_tools(bad)
    bad.write_text('[[tool]]\nname = "x"\nversion = "1"\nmodule = "m"\npackage = "m"\nmode = "ocb"\n')
    with pytest.raises(bt.UsageError, match="goes with mode ocb only"):
        bt.load_tools(bad)
    bad.write_text('[groups]\ng = ["y"]\n[[tool]]\nname = "x"\nversion = "1"\nmodule = "m"\npackage = "m"\n')
    with pytest.raises(bt.UsageError, match="group g names unknown tool"):
        bt.load_tools(bad)


def test_callers_name_real_tools_and_flags() -> None:
    """scripts/quickstart, scripts/test and the tests' hints name tools and flags that exist."""
    known = set(REG.tools) | set(REG.groups)
    callers = [ROOT / "scripts/quickstart", ROOT / "scripts/test", ROOT / "tests/support/tools.py"]
    for path in callers:
        for only in re.findall(r"bootstrap-tools --only ([\w,-]+)", path.read_text()):
            assert set(only.split(",")) <= known, (path, only)
        for flag in re.findall(r"bootstrap-tools((?: --[\w-]+)+)", path.read_text()):
            for f in flag.split():
                assert f in {"--only", "--print-path", "--with-postgres", "--with-graphviz", "--budget", "--list"}, (
                    path, f)


def test_go_sources_are_gofmt_clean() -> None:
    go = go_or_missing()
    gofmt = shutil.which("gofmt") or str(Path(go).resolve().parent / "gofmt")
    files = sorted(GO_SOURCES.rglob("*.go"))
    assert len(files) == 3
    res = subprocess.run([gofmt, "-l", "-e", *map(str, files)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""


def test_ejbca_stand_in_compiles(tmp_path: Path) -> None:
    go = go_or_missing()
    shutil.copytree(GO_SOURCES / "stubs" / "ejbca", tmp_path / "ejbca")
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "GOPROXY": "off"}
    res = subprocess.run([go, "vet", "./..."], cwd=tmp_path / "ejbca", env=env, capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------------------------------------
# A real build
# ---------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_real_build_of_kubeconform_into_a_temporary_cache(tmp_path: Path) -> None:
    go = go_or_missing()
    gocache = subprocess.run([go, "env", "GOCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    # no kubeconform on PATH (scripts/test puts the shared cache's bin there), so it is built
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if d and not (Path(d) / "kubeconform").exists())
    env = {**os.environ, "PATH": path, "XDG_CACHE_HOME": str(tmp_path), "GOCACHE": gocache}
    res = subprocess.run([sys.executable, str(SCRIPT), "--only", "kubeconform"], env=env, capture_output=True,
                         text=True, timeout=1200, check=False)
    assert res.returncode == 0, res.stderr
    cache = tmp_path / "agent-passport" / "tools"
    binary = cache / "pkgs" / "kubeconform" / "0.8.0" / "kubeconform"
    assert os.readlink(cache / "bin" / "kubeconform") == str(binary)
    assert subprocess.run([str(binary), "-v"], capture_output=True, text=True, check=True).stdout.strip() == "v0.8.0"
    assert (cache / "logs" / "kubeconform-0.8.0.log").is_file()
    assert list((cache / "tmp").iterdir()) == []
    again = subprocess.run([sys.executable, str(SCRIPT), "--only", "kubeconform"], env=env, capture_output=True,
                           text=True, timeout=120, check=False)
    assert again.returncode == 0
    assert "cached kubeconform v0.8.0" in again.stderr
    assert "building" not in again.stderr
