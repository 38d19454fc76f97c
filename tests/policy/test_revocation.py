"""`passport revoke` at the gateways: every gateway's revocation list gets the agent's SPIFFE ID,
the gateways' OPA denies it within seconds, a gateway without a readable list denies everything,
and `--undo` lifts it.

The Kubernetes API is a fake ``kubectl`` (the command's only way to the cluster); end to end, its
writes land in a directory laid out the way the kubelet projects a ConfigMap volume, which a
real OPA (built by scripts/bootstrap-tools) watches with the rendered policy and data.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from components import cli
from components.platform_model import load_platform
from components.render import rego
from components.render.authz import revocations_configmap
from components.render.yamlout import dump_json
from components.revoke import RevokeRefused, kubectl_runner, plan_revocation, revoke
from tests.policy.test_rego_policy import OPA_BIN
from tests.support.processes import stop
from tests.support.tools import free_port, skip_or_fail
from tests.unit.test_revoke_unit import CORTEX, FakeSpire, FakeVault, serve_fake_vault

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
INVOICE = "spiffe://dev.agentpassport.internal/ns/finance-agents/sa/invoice-processor"


class FakeKubectl:
    """ConfigMaps by (namespace, name) with resourceVersions; records every call. ``on_write``
    sees each list written (the end-to-end test projects it into a watched directory)."""

    def __init__(self, conflicts: int = 0) -> None:
        platform = load_platform("dev")
        self.maps: dict[tuple[str, str], dict[str, Any]] = {}
        for svc in platform.services:
            if svc.manifest.spec.gateway:
                obj = json.loads(json.dumps(revocations_configmap(platform, svc)))
                obj["metadata"]["resourceVersion"] = "1"
                self.maps[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        self.calls: list[list[str]] = []
        self.conflicts = conflicts
        self.on_write: list[Any] = []

    def ids(self, namespace: str, name: str) -> dict[str, Any]:
        data = json.loads(self.maps[(namespace, name)]["data"]["revocations.json"])
        return dict(data["agentpassport"]["revocations"]["spiffeIds"])

    def set_ids(self, namespace: str, name: str, ids: dict[str, Any]) -> None:
        obj = self.maps[(namespace, name)]
        obj["data"]["revocations.json"] = dump_json(rego.revocation_document(ids))
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)

    @property
    def writes(self) -> list[list[str]]:
        return [c for c in self.calls if c[0] in ("replace", "annotate")]

    def __call__(self, args: list[str], stdin: str | None) -> str:
        self.calls.append(args)
        if args[:2] == ["get", "configmap"]:
            key = (args[args.index("-n") + 1], args[2])
            if key not in self.maps:
                raise RevokeRefused(f'NotFound: configmaps "{args[2]}" not found')
            return json.dumps(self.maps[key])
        if args[0] == "replace":
            obj = json.loads(stdin or "{}")
            key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
            if self.conflicts:
                self.conflicts -= 1
                self.set_ids(*key, {**self.ids(*key), "spiffe://dev.agentpassport.internal/other": {"agent": "x"}})
                raise RevokeRefused("kubectl replace: Operation cannot be fulfilled: the object has been modified")
            if obj["metadata"]["resourceVersion"] != self.maps[key]["metadata"]["resourceVersion"]:
                raise RevokeRefused("kubectl replace: conflict")
            obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
            self.maps[key] = obj
            for hook in self.on_write:
                hook(key, obj["data"]["revocations.json"])
            return f"configmap/{key[1]}\n"
        if args[0] == "annotate":
            return "pod/gw-x-1 annotated\n"
        raise AssertionError(args)


LISTS = [("integrations", "gw-slack-gateway-revocations"), ("payments", "gw-payments-api-revocations")]


@pytest.fixture
def vault() -> Iterator[tuple[FakeVault, str]]:
    with serve_fake_vault(FakeVault()) as served:
        yield served


def _revoke(kube: FakeKubectl, addr: str | None, *, yes: bool, undo: bool = False, agent: str = "agent-cortex",
            env: dict[str, str] | None = None) -> str:
    out = io.StringIO()
    code = revoke(load_platform("dev"), agent, yes=yes, undo=undo, out=out, now=NOW, http_timeout=5,
                  env={"VAULT_TOKEN": "hvs.alice"} if env is None else env, vault_addr=addr,
                  spire_runner=FakeSpire() if agent == "agent-cortex" and not undo else None, kube_runner=kube)
    assert code == 0
    return out.getvalue()


def test_the_plan_names_every_gateways_revocation_list() -> None:
    plan = plan_revocation(load_platform("dev"), "agent-cortex")
    assert plan.gateways == (("payments-api", "payments", "gw-payments-api-revocations"),
                             ("slack-gateway", "integrations", "gw-slack-gateway-revocations"))


def test_dry_run_reads_every_list_and_writes_nothing(vault: tuple[FakeVault, str]) -> None:
    kube = FakeKubectl()
    text = _revoke(kube, vault[1], yes=False)
    assert kube.writes == [] and vault[0].changes == []
    assert f"gateways     would revoke {CORTEX} at 2 gateway(s): payments-api, slack-gateway" in text


def test_yes_lists_the_id_at_every_gateway_first_and_refreshes_their_pods(vault: tuple[FakeVault, str]) -> None:
    kube = FakeKubectl()
    kube.set_ids(*LISTS[1], {INVOICE: {"agent": "invoice-processor", "revokedAt": "2026-11-01T00:00:00Z"}})
    text = _revoke(kube, vault[1], yes=True)
    for ns, name in LISTS:
        assert kube.ids(ns, name)[CORTEX] == {"agent": "agent-cortex", "revokedAt": "2026-11-20T10:00:00Z"}
    assert INVOICE in kube.ids(*LISTS[1])  # another agent's revocation stays
    annotates = [c for c in kube.calls if c[0] == "annotate"]
    assert [c[c.index("-l") + 1] for c in annotates] == ["agentpassport.dev/gateway=payments-api",
                                                         "agentpassport.dev/gateway=slack-gateway"]
    assert all(c[-2].startswith("agentpassport.dev/revocations-sha256=") for c in annotates)
    lines = text.splitlines()
    gateway = lines.index(f"gateways     revoked {CORTEX} at 2 gateway(s): payments-api, slack-gateway")
    assert gateway < min(i for i, line in enumerate(lines) if line.startswith("vault        revoked"))
    assert vault[0].changes  # Vault and SPIRE are still revoked as before
    # a second run changes nothing at the gateways
    kube.calls.clear()
    again = _revoke(kube, vault[1], yes=True)
    assert kube.writes == []
    assert f"gateways     revoked {CORTEX} at 0 gateway(s) (2 already listed it)" in again


def test_a_concurrent_change_is_read_again_and_kept(vault: tuple[FakeVault, str]) -> None:
    kube = FakeKubectl(conflicts=1)
    _revoke(kube, vault[1], yes=True)
    first = kube.ids(*LISTS[1])
    assert set(first) == {CORTEX, "spiffe://dev.agentpassport.internal/other"}


def test_an_unreadable_or_foreign_list_refuses_before_anything_changes(vault: tuple[FakeVault, str]) -> None:
    kube = FakeKubectl()
    kube.maps[LISTS[0]]["data"]["revocations.json"] = "{not json"
    with pytest.raises(RevokeRefused, match=r"gateway slack-gateway .* is unreadable"):
        _revoke(kube, vault[1], yes=True)
    assert kube.writes == [] and vault[0].changes == []
    kube = FakeKubectl()
    kube.maps[LISTS[1]]["metadata"]["labels"]["agentpassport.dev/gateway"] = "elsewhere"
    with pytest.raises(RevokeRefused, match="is not the revocation list of gateway payments-api"):
        _revoke(kube, vault[1], yes=True)
    assert kube.writes == [] and vault[0].changes == []


def test_a_gateway_that_is_not_deployed_is_reported_and_the_others_written(vault: tuple[FakeVault, str]) -> None:
    kube = FakeKubectl()
    del kube.maps[LISTS[0]]
    text = _revoke(kube, vault[1], yes=True)
    assert ("gateways     slack-gateway: no revocation list (integrations/gw-slack-gateway-revocations "
            "not found)") in text
    assert CORTEX in kube.ids(*LISTS[1])


def test_undo_lifts_only_this_agent_and_touches_neither_vault_nor_spire() -> None:
    kube = FakeKubectl()
    for key in LISTS:
        kube.set_ids(*key, {CORTEX: {"agent": "agent-cortex"}, INVOICE: {"agent": "invoice-processor"}})
    dry = _revoke(kube, None, yes=False, undo=True, env={})
    assert kube.writes == [] and "DRY RUN (undo)" in dry
    text = _revoke(kube, None, yes=True, undo=True, env={})  # no VAULT_TOKEN needed
    assert all(kube.ids(*key) == {INVOICE: {"agent": "invoice-processor"}} for key in LISTS)
    assert f"gateways     lifted the revocation of {CORTEX} at 2 gateway(s): payments-api, slack-gateway" in text
    assert "identity/entity/id/<id> disabled=false" in text


def test_undo_without_a_cluster_is_refused() -> None:
    with pytest.raises(RevokeRefused, match="--undo lifts a revocation at the gateways"):
        revoke(load_platform("dev"), "agent-cortex", yes=True, undo=True, out=io.StringIO(), env={},
               kube_runner=None)


def test_kubectl_runner_uses_the_context_and_reports_not_found(tmp_path: Path) -> None:
    log = tmp_path / "args.json"
    fake = tmp_path / "kubectl"
    fake.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                    f"open({str(log)!r}, 'w').write(json.dumps([sys.argv[1:], sys.stdin.read()]))\n"
                    "print('configmap/x')\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    run = kubectl_runner(str(fake), "prod", "/etc/kube/config", timeout=20)
    assert run(["replace", "-f", "-"], '{"a": 1}') == "configmap/x\n"
    assert json.loads(log.read_text()) == [
        ["--kubeconfig", "/etc/kube/config", "--context", "prod", "replace", "-f", "-"], '{"a": 1}']
    fake.write_text('#!/bin/sh\necho \'Error from server (NotFound): configmaps "x" not found\' >&2\nexit 1\n')
    with pytest.raises(RevokeRefused, match=r"^NotFound: "):
        run(["get", "configmap", "x"])


def test_cli_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no kubectl anywhere
    monkeypatch.setenv("HOME", str(tmp_path))
    code = cli.main(["revoke", "agent-cortex", "--stack", "dev", "--kube-context", "kind-dev", "--undo"])
    assert code == 2 and "kubectl not found" in capsys.readouterr().err
    monkeypatch.setenv("VAULT_TOKEN", "")
    assert cli.main(["revoke", "agent-cortex", "--stack", "dev", "--undo"]) == 2  # dev renders: no cluster
    assert "refused: --undo lifts a revocation at the gateways" in capsys.readouterr().err


# --------------------------------------------------------------------------- end to end with OPA



class ProjectedVolume:
    """A directory the way the kubelet projects ConfigMaps: files in a timestamped directory,
    ``..data`` pointing at it, swapped atomically on each update."""

    def __init__(self, root: Path) -> None:
        self.root, self.generation = root, 0
        root.mkdir(parents=True)

    def write(self, files: dict[str, str]) -> None:
        self.generation += 1
        real = self.root / f"..2026_11_20_10_00_00.{self.generation:09d}"
        real.mkdir()
        for name, text in files.items():
            (real / name).write_text(text, encoding="utf-8")
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(real.name)
        os.replace(tmp, self.root / "..data")
        for name in files:
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(Path("..data") / name)
        for name in os.listdir(self.root):
            if not name.startswith("..") and name not in files:
                (self.root / name).unlink()


@pytest.fixture
def gateway_opa(tmp_path: Path) -> Iterator[tuple[ProjectedVolume, dict[str, str], int]]:
    """A real OPA as the rendered gateway runs it (--watch on its data directory), for payments-api."""
    if not OPA_BIN.exists():
        skip_or_fail(f"OPA binary not found at {OPA_BIN}: run scripts/bootstrap-tools --only opa")
    platform = load_platform("dev")
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "policy.rego").write_text(rego.POLICY, encoding="utf-8")
    (policy / "mask.rego").write_text(rego.MASK_POLICY, encoding="utf-8")
    files = {"data.json": dump_json(rego.authz_data(platform, ["payments-api"])),
             rego.REVOCATIONS_FILE: dump_json(rego.revocation_document())}
    volume = ProjectedVolume(tmp_path / "data")
    volume.write(files)
    port = free_port()
    proc = subprocess.Popen([str(OPA_BIN), "run", "--server", f"--addr=127.0.0.1:{port}", "--log-level=error",
                             "--disable-telemetry", "--watch", "--ignore=..*", str(policy / "policy.rego"),
                             str(policy / "mask.rego"), str(volume.root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield volume, files, port
    finally:
        stop(proc)


def _decision(port: int) -> dict[str, Any]:
    req = rego.Request("payments-api", INVOICE, "POST", "/v1/payments", {"x-idempotency-scope": "invoices"}, 0)
    body = json.dumps({"input": rego.check_request(req, "gw-payments-api.payments.svc:8443")}).encode()
    http = urllib.request.Request(f"http://127.0.0.1:{port}/v1/data/agentpassport/authz/decision", data=body,
                                  method="POST")
    with urllib.request.urlopen(http, timeout=5) as resp:  # noqa: S310 - loopback
        return dict(json.loads(resp.read())["result"])


def _until(port: int, reason: str, within: float = 60.0) -> float:
    """Seconds until OPA's decision reason starts with ``reason`` (fails after ``within``)."""
    start = time.monotonic()
    while not _decision(port)["reason"].startswith(reason):
        assert time.monotonic() - start < within, _decision(port)
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.e2e
def test_revoke_makes_the_gateway_deny_within_seconds_and_undo_lifts_it(
        gateway_opa: tuple[ProjectedVolume, dict[str, str], int], vault: tuple[FakeVault, str]) -> None:
    volume, files, port = gateway_opa
    fake, addr = vault
    known = fake.handle

    def handle(method: str, path: str, body: Any) -> tuple[int, Any]:  # invoice-processor: no leases, no entity
        if path.startswith("sys/leases/revoke-prefix/"):
            return 204, None
        if path == "identity/lookup/entity":
            return 204, None
        return known(method, path, body)

    fake.handle = handle  # type: ignore[method-assign]
    assert _decision(port)["allowed"] is True
    kube = FakeKubectl()
    kube.on_write.append(lambda key, text: key == LISTS[1] and volume.write({**files, rego.REVOCATIONS_FILE: text}))
    _revoke(kube, addr, yes=True, agent="invoice-processor")
    took = _until(port, f"denied: SPIFFE ID {INVOICE} is revoked (passport revoke)")
    print(f"gateway denies the revoked SPIFFE ID {took:.2f}s after the volume refresh")
    decision = _decision(port)
    assert decision["allowed"] is False and decision["http_status"] == 403
    _revoke(kube, None, yes=True, undo=True, agent="invoice-processor", env={})
    _until(port, "allowed: POST /v1/payments granted to agent invoice-processor")


@pytest.mark.e2e
def test_a_gateway_without_a_readable_list_denies_everything(
        gateway_opa: tuple[ProjectedVolume, dict[str, str], int]) -> None:
    volume, files, port = gateway_opa
    assert _decision(port)["allowed"] is True
    volume.write({"data.json": files["data.json"]})  # the list is gone
    _until(port, "denied: the revocation list is not loaded (fail closed)")
    volume.write(files)
    _until(port, "allowed: ")


@pytest.mark.parametrize(("dropped", "caught"), [
    ("\tnot data.agentpassport.revocations.spiffeIds[input.attributes.source.principal]\n",
     "test_revoked_spiffe_id"),
    ("\tis_object(data.agentpassport.revocations.spiffeIds)\n", "test_revocation_list_not_loaded"),
])
def test_the_generated_tests_catch_a_policy_that_ignores_the_revocation_list(
        tmp_path: Path, dropped: str, caught: str) -> None:
    from tests.policy.test_rego_policy import repo_platform, run_opa, write_bundle

    if not OPA_BIN.exists():
        skip_or_fail(f"OPA binary not found at {OPA_BIN}: run scripts/bootstrap-tools --only opa")
    broken = rego.POLICY.replace(dropped, "", 1)
    assert broken != rego.POLICY
    assert run_opa("test", str(write_bundle(repo_platform("dev"), tmp_path / "ok"))).returncode == 0
    proc = run_opa("test", str(write_bundle(repo_platform("dev"), tmp_path / "broken", policy=broken)))
    assert proc.returncode != 0 and caught in proc.stdout, proc.stdout
