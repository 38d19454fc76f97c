"""Egress proxies of agents outside the mesh: rendered Envoy configs (validated by a real Envoy),
their security settings, the proxies' SPIRE entries, and the refusals."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.compile import Problems, compile
from components.errors import ManifestError
from components.render.artifacts import render_all
from components.render.egress import (
    NOT_GRANTED_BODY,
    compile_egress,
    connection_lifetime_s,
    egress_problems,
)
from components.render.envoy import envoy_bootstrap
from components.render.spire.registrations import registration_objects
from components.render.windows import compile_windows
from components.render.yamlout import dump_yaml
from tests.conftest import ROOT
from tests.support.mermaid import check_flowchart
from tests.unit.test_envoy_config import envoy_binary
from tests.unit.test_mesh_render import HEADER, SERVICES, agent, http, make_platform
from tests.unit.test_windows_render import needs_parser, ts_shape, ts_strings

LINUX_VM = "vm: {attestation: join_token, workloadSelectors: ['unix:uid:1001']}"
WINDOWS_HOST = "windows: {gmsaAccount: gmsa-win, hostGroup: WinHosts}"
TWO_SERVICES = SERVICES + "---\n" + HEADER + """kind: Service
metadata: {name: vault-ui, team: fin}
spec: {namespace: tools, port: 8200, podSelector: {app: vault-ui}}
"""


def fleet(tmp_path: Path, *, stack: str = "dev") -> Any:
    """Two VM agents (one with a dedicated proxy uid), a Windows host agent, and a pod agent."""
    return make_platform(
        tmp_path,
        agent("vm-a", "", http("ledger", "GET", "{exact: /x}") + http("vault-ui", "GET, POST", "{prefix: /ui}"),
              platform=LINUX_VM),
        agent("vm-b", "", http("ledger", "POST", "{exact: /y}"),
              platform="vm: {attestation: join_token, workloadSelectors: ['systemd:id:b.service'], "
                       "egressProxyUid: 2002}"),
        agent("win", "", http("ledger", "GET", "{prefix: /reports}"), platform=WINDOWS_HOST),
        agent("pod", "team-a", http("ledger", "GET", "{exact: /z}")),
        services=TWO_SERVICES, stack=stack,
    )


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate``, run in the config's folder: validation opens the access-log files,
    and the Windows config's path is relative there."""
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
                          capture_output=True, text=True, timeout=120, check=False, cwd=path.parent)


def walk(obj: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{path}.{k}", k, v
            yield from walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from walk(v, f"{path}[{i}]")


# --------------------------------------------------------------------------- real Envoy


def test_real_envoy_accepts_every_rendered_egress_config_linux_and_windows(tmp_path: Path) -> None:
    platform = fleet(tmp_path / "m")
    rendered = {a.path: a.content for a in render_all(platform) if a.path.startswith("egress/")}
    # Envoy bootstraps for every out-of-mesh caller (not the pod), systemd units for the VMs.
    assert sorted(rendered) == ["egress/vm-a.service", "egress/vm-a.yaml", "egress/vm-b.service",
                                "egress/vm-b.yaml", "egress/win.yaml"]
    assert "User=2002\n" in rendered["egress/vm-b.service"] and "User=1001\n" in rendered["egress/vm-a.service"]
    files = {k: v for k, v in rendered.items() if k.endswith(".yaml")}
    pipes = {}
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        proc = validate(path)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output
        assert f"configuration '{path}' OK" in output
        assert "Deprecated field" not in output, output
        cfg = yaml.safe_load(text)
        (spire,) = [c for c in cfg["static_resources"]["clusters"] if c["name"] == "spire_agent"]
        pipes[rel] = spire["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]["path"]
    # Linux: the host SPIRE agent's Unix socket; Windows: its named pipe. Nothing else differs in kind.
    assert pipes == {"egress/vm-a.yaml": "/run/spire/agent-sockets/spire-agent.sock",
                     "egress/vm-b.yaml": "/run/spire/agent-sockets/spire-agent.sock",
                     "egress/win.yaml": "\\\\.\\pipe\\spire-agent\\public\\api"}


def test_real_envoy_refuses_a_broken_egress_config(tmp_path: Path) -> None:
    """The validation above can fail: an SDS reference without a config source is refused."""
    plan = compile_egress(fleet(tmp_path / "m"))
    cfg = copy.deepcopy(plan.bootstrap("vm-a"))
    tls = cfg["static_resources"]["clusters"][1]["transport_socket"]["typed_config"]["common_tls_context"]
    del tls["tls_certificate_sds_secret_configs"][0]["sds_config"]
    path = tmp_path / "broken.yaml"
    path.write_text(dump_yaml(cfg), encoding="utf-8")
    proc = validate(path)
    assert proc.returncode != 0
    assert "Unknown static secret: spiffe://dev.agentpassport.internal/vm/vm-a" in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- security settings


def test_the_egress_config_listens_on_loopback_only_and_holds_no_secret(tmp_path: Path) -> None:
    platform = fleet(tmp_path / "m")
    plan = compile_egress(platform)
    for name, cfg in plan.bootstraps:
        assert "admin" not in cfg, name  # no admin interface at all
        (listener,) = cfg["static_resources"]["listeners"]
        assert listener["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": 15001}}
        addresses = [v for _, k, v in walk(cfg) if k == "socket_address"]
        listening = [a for p, k, a in walk(cfg["static_resources"]["listeners"]) if k == "socket_address"]
        assert listening == [{"address": "127.0.0.1", "port_value": 15001}]
        assert addresses  # the gateways' addresses (outbound only)
        for path, key, value in walk(cfg):
            assert key not in ("filename", "private_key", "tls_certificates", "inline_bytes", "trusted_ca",
                               "password", "environment_variable"), (name, path)
            if key == "inline_string":
                assert value == NOT_GRANTED_BODY, (name, path)


def test_the_egress_proxy_presents_the_agents_svid_and_pins_the_gateways_spiffe_id(tmp_path: Path) -> None:
    platform = fleet(tmp_path / "m")
    plan = compile_egress(platform)
    td = platform.config.trust_domain
    cfg = plan.bootstrap("vm-a")
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    assert sorted(clusters) == ["gateway_ledger", "gateway_vault-ui", "spire_agent"]
    gw = clusters["gateway_ledger"]
    assert gw["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "gw-ledger.apps.svc.cluster.local", "port_value": 8443}}
    tls = gw["transport_socket"]["typed_config"]
    assert tls["@type"].endswith("UpstreamTlsContext") and tls["sni"] == "gw-ledger.apps.svc.cluster.local"
    # No session resumption on either side: a resumed session skips the check of the client
    # certificate, and an expired SVID would keep working (tests/e2e/test_egress_e2e.py saw it).
    assert tls["max_session_keys"] == 0
    ledger = platform.service("ledger")
    assert ledger is not None
    downstream = envoy_bootstrap(platform, ledger)["static_resources"]["listeners"][0]["filter_chains"][0][
        "transport_socket"]["typed_config"]
    assert downstream["disable_stateless_session_resumption"] is True
    assert downstream["disable_stateful_session_resumption"] is True
    common = tls["common_tls_context"]
    # The SVID is asked for by the agent's SPIFFE ID: the proxy gets that identity or none.
    assert [s["name"] for s in common["tls_certificate_sds_secret_configs"]] == [f"spiffe://{td}/vm/vm-a"]
    combined = common["combined_validation_context"]
    assert combined["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    assert combined["default_validation_context"] == {"match_typed_subject_alt_names": [
        {"san_type": "URI", "matcher": {"exact": f"spiffe://{td}/ns/apps/sa/gw-ledger"}}]}
    for sds in (*common["tls_certificate_sds_secret_configs"], combined["validation_context_sds_secret_config"]):
        assert sds["sds_config"]["api_config_source"]["grpc_services"] == [
            {"envoy_grpc": {"cluster_name": "spire_agent"}}]
    # An upstream connection lives at most half the SVID's lifetime (15m: 450 s).
    options = gw["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["common_http_protocol_options"]["max_connection_duration"] == "450s"
    assert connection_lifetime_s(plan.proxies[0]) == 450
    # Routing by Host: only the granted services leave the host; anything else is a local 404.
    hosts = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"]
    assert [(h["name"], h["domains"]) for h in hosts] == [
        ("ledger", ["ledger", "ledger:15001"]), ("vault-ui", ["vault-ui", "vault-ui:15001"]),
        ("not_granted", ["*"])]
    assert hosts[-1]["routes"][0]["direct_response"]["status"] == 404


def test_the_gateway_host_follows_the_stack_template(tmp_path: Path) -> None:
    platform = fleet(tmp_path / "m")
    authz = platform.config.authz.model_copy(update={"egress_gateway_host": "{service}.{namespace}.gw.acme.net"})
    platform = type(platform)(platform.stack, platform.config.model_copy(update={"authz": authz}),
                              platform.config_file, platform.agents, platform.services)
    cluster = compile_egress(platform).bootstrap("win")["static_resources"]["clusters"][1]
    assert cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"]["address"] == "ledger.apps.gw.acme.net"


# --------------------------------------------------------------------------- SPIRE entries


def test_the_proxy_gets_its_own_entry_only_where_the_agents_does_not_select_it(tmp_path: Path) -> None:
    platform = fleet(tmp_path / "m")
    td = platform.config.trust_domain
    entries = {o["metadata"]["name"]: o["spec"] for o in registration_objects(platform)
               if o["kind"] == "ClusterStaticEntry"}
    # vm-a's proxy runs as the agent's user (unix:uid:1001): the agent's entry selects it already.
    assert "proxy.vm-a" not in entries and entries["agent.vm-a"]["selectors"] == ["unix:uid:1001"]
    # vm-b's agent is selected by its systemd unit; its proxy runs as uid 2002: an entry of its own,
    # same SPIFFE ID, same node alias, same lifetimes.
    assert entries["proxy.vm-b"] == {
        "className": platform.config.spire.class_name,
        "spiffeID": f"spiffe://{td}/vm/vm-b",
        "parentID": f"spiffe://{td}/node/vm-b",
        "selectors": ["unix:uid:2002"],
        "x509SVIDTTL": "15m", "jwtSVIDTTL": "5m", "hint": "vm-b-egress",
    }
    assert entries["agent.vm-b"]["selectors"] == ["systemd:id:b.service"]
    # Windows: the proxy runs as the gMSA, which the agent's entry selects.
    assert "proxy.win" not in entries
    assert entries["agent.win"]["selectors"] == ["windows:user_name:CORP\\gmsa-win$"]
    assert [name for name, _ in compile_egress(platform).entries] == ["vm-b"]


# --------------------------------------------------------------------------- refusals


def problems_of(platform: Any) -> list[Any]:
    result = compile(platform)
    assert isinstance(result, Problems)
    return list(result.problems)


def test_a_gateway_less_service_refuses_grants_of_agents_outside_the_mesh(tmp_path: Path) -> None:
    doc = agent("vmbox", "", http("catalog", "GET", "{exact: /x}"), platform=LINUX_VM)
    platform = make_platform(tmp_path, doc)
    (problem,) = problems_of(platform)
    assert problem.file.endswith("agent-0.yaml") and problem.line == 8
    assert problem.field == "spec.grants[0].http.service"
    assert problem.message.startswith("agent 'vmbox' runs on vm, outside the Linkerd mesh; service 'catalog' "
                                      "has no gateway (spec.gateway: false)")
    assert "give 'catalog' a gateway (spec.gateway: true)" in problem.message
    with pytest.raises(ManifestError):
        compile_egress(platform)


def test_agents_outside_the_mesh_need_the_gateways_and_spire(tmp_path: Path) -> None:
    platform = fleet(tmp_path / "m")
    subsystems = platform.config.subsystems.model_copy(update={"authz": False, "spire": False})
    off = type(platform)(platform.stack, platform.config.model_copy(update={"subsystems": subsystems}),
                         platform.config_file, platform.agents, platform.services)
    messages = [p.message for p in egress_problems(off)]
    assert sum("subsystems.authz is off" in m for m in messages) == 4  # every grant of vm-a, vm-b, win
    assert sum("subsystems.spire is off" in m for m in messages) == 3  # every proxy


def test_a_vm_proxy_needs_a_uid_to_be_attested_by(tmp_path: Path) -> None:
    no_uid = agent("vmbox", "", http("ledger", "GET", "{exact: /x}"),
                   platform="vm: {attestation: join_token, workloadSelectors: ['systemd:id:a.service']}")
    root = agent("rootbox", "", http("ledger", "GET", "{exact: /x}"),
                 platform="vm: {attestation: join_token, workloadSelectors: ['unix:uid:0']}")
    problems = problems_of(make_platform(tmp_path, no_uid, root))
    assert sorted((p.file.rsplit("/", 1)[-1], p.field) for p in problems) == [
        ("agent-0.yaml", "spec.platform.vm.egressProxyUid"), ("agent-1.yaml", "spec.platform.vm.egressProxyUid")]
    assert "set egressProxyUid to the uid the proxy runs as" in problems[0].message


def test_windows_pods_with_http_grants_are_refused(tmp_path: Path) -> None:
    pod = agent("winpod", "", http("ledger", "GET", "{exact: /x}"),
                platform="windows: {gmsaAccount: gmsa-pod, hostGroup: WinHosts, "
                         "pod: {namespace: winapps, serviceAccount: winpod}}")
    problems = [p for p in problems_of(make_platform(tmp_path, pod)) if p.field == "spec.platform.windows.pod"]
    assert len(problems) == 1 and "Linkerd does not mesh" in problems[0].message


# --------------------------------------------------------------------------- Windows delivery (DSC)


def _dsc(platform: Any, agent: str) -> str:
    return dict(compile_windows(platform).scripts)[agent]


def test_the_windows_dsc_installs_the_rendered_config_and_runs_envoy_under_the_gmsa(tmp_path: Path) -> None:
    platform = fleet(tmp_path / "m")
    script = _dsc(platform, "win")
    # The config the host gets is the rendered bootstrap, byte for byte, as one quoted literal...
    (written,) = re.findall(r"GetBytes\('((?:[^']|'')*)'\)", script)
    host_config = json.loads(written.replace("''", "'"))
    assert host_config == compile_egress(platform).bootstrap("win")
    # ... which a real Envoy accepts as it lands on the host (JSON, its named pipe, its log file).
    path = tmp_path / "win.json"
    path.write_text(written.replace("''", "'"), encoding="utf-8")
    proc = validate(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hcm = host_config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["access_log"][0]["typed_config"]["path"] == "C:\\ProgramData\\AgentPassport\\egress\\win-access.log"
    # The service runs envoy.exe with that config, as the gMSA (no password: AD supplies it).
    command = '"C:\\Program Files\\envoy\\envoy.exe" -c "C:\\ProgramData\\AgentPassport\\egress\\win.json" ' \
              '--log-path "C:\\ProgramData\\AgentPassport\\egress\\win-envoy.log"'
    service = script[script.index("Script 'EgressService'"):]
    assert f"New-Service -Name 'AgentPassportEgress-win' -BinaryPathName '{command}'" in service
    assert "StartName = 'CORP\\gmsa-win$'; StartPassword = ''" in service
    assert "($service.StartName -eq 'CORP\\gmsa-win$')" in service
    assert "DependsOn  = @('[Script]InstallGmsa', '[Script]EgressConfig')" in service
    assert "Invoke-WebRequest" not in script and "http://" not in script  # nothing is downloaded
    # The SPIRE entry that gives this process the agent's identity selects the same account.
    entries = {o["metadata"]["name"]: o["spec"] for o in registration_objects(platform)
               if o["kind"] == "ClusterStaticEntry"}
    assert entries["agent.win"]["selectors"] == ["windows:user_name:CORP\\gmsa-win$"]


def test_windows_agents_without_http_grants_get_no_proxy(tmp_path: Path) -> None:
    grant = "    - vault: {path: secret/data/x, capabilities: [read]}\n"
    platform = make_platform(tmp_path, agent("win", "", grant, platform=WINDOWS_HOST), services=TWO_SERVICES)
    script = _dsc(platform, "win")
    assert "Egress" not in script and "envoy" not in script.lower()
    assert compile_egress(platform).proxies == ()


def test_the_windows_egress_folder_gets_a_protected_acl_and_a_fresh_config(tmp_path: Path) -> None:
    script = _dsc(fleet(tmp_path / "m"), "win")
    step = script[script.index("Script 'EgressConfig'"):script.index("Script 'EgressService'")]
    test, set_ = step[step.index("TestScript"):step.index("SetScript")], step[step.index("SetScript"):]
    root, folder = "'C:\\ProgramData\\AgentPassport'", "'C:\\ProgramData\\AgentPassport\\egress'"
    config = "'C:\\ProgramData\\AgentPassport\\egress\\win.json'"
    # Set: Administrators own both folders; no inherited entry (Users may write under ProgramData).
    assert "$acl.SetOwner($admins)" in set_ and "$acl.SetAccessRuleProtection($true, $false)" in set_
    assert set_.index("AddAccessRule((& $rule $admins 'FullControl' $tree $none))") < \
        set_.index(f"Set-Acl -LiteralPath {root} -AclObject $acl") < \
        set_.index("AddAccessRule((& $rule $gmsa 'ReadAndExecute, Synchronize' $tree $none))") < \
        set_.index(f"Set-Acl -LiteralPath {folder} -AclObject $acl")
    assert "[System.Security.Principal.NTAccount]::new('CORP\\gmsa-win$')" in set_
    assert "AddAccessRule((& $rule $gmsa 'CreateFiles' $here $none))" in set_  # its logs, this folder only
    # a folder a user pre-created is handed to Administrators before its ACL is replaced
    assert f"foreach ($dir in @({root}, {folder}))" in set_ and "& $takeown /F $dir /A | Out-Null" in set_
    assert set_.index("& $takeown /F $dir /A") < set_.index(f"Set-Acl -LiteralPath {root}")
    # what a user left in the folder goes; the test finds it
    assert "$trusted = @($system.Value, $admins.Value, $gmsa.Value)" in set_ and "Remove-Item -Force -Recurse" in set_
    assert "-notin @($system, $admins, $gmsa)) {\n                        return $false" in test
    assert re.findall(r"AddAccessRule\(\(& \$rule \$(\w+) '([^']*)'", set_) == [
        ("system", "FullControl"), ("admins", "FullControl"), ("gmsa", "ReadAndExecute, Synchronize"),
        ("gmsa", "CreateFiles"), ("creatorOwner", "Modify")]
    # ... and the config is deleted and created anew in that folder (CreateNew), never written over.
    assert set_.index(f"Set-Acl -LiteralPath {folder}") < set_.index(f"Remove-Item -LiteralPath {config} -Force") \
        < set_.index(f"[System.IO.File]::Open({config}, [System.IO.FileMode]::CreateNew")
    assert "WriteAllText" not in step
    # Test: both folders protected and owned by SYSTEM/Administrators, no other writer, the file's owner.
    assert f"foreach ($dir in @({root}, {folder}))" in test
    assert "if (-not $acl.AreAccessRulesProtected) { return $false }" in test
    assert "if ($acl.GetOwner($sidType).Value -notin @($system, $admins)) { return $false }" in test
    assert "return $false  # Users, Everyone, Authenticated Users" in test
    assert f"if ((Get-Acl -LiteralPath {config}).GetOwner($sidType).Value -notin @($system, $admins))" in test
    assert "$system = 'S-1-5-18'; $admins = 'S-1-5-32-544'; $creatorOwner = 'S-1-3-0'" in test
    assert "'ReadAndExecute, CreateFiles, Synchronize'" in test


@needs_parser
def test_the_windows_dsc_with_a_proxy_parses_as_powershell(tmp_path: Path) -> None:
    script = _dsc(fleet(tmp_path / "m"), "win")
    ts_shape(script)  # asserts no syntax error
    strings = ts_strings(script)
    assert "'AgentPassportEgress-win'" in strings and "'CORP\\gmsa-win$'" in strings
    assert any(s.startswith("'{\"node\":{\"cluster\":\"agentpassport-egress\"") for s in strings)


# --------------------------------------------------------------------------- docs


@pytest.mark.parametrize("doc", ["docs/authz.md", "docs/windows.md", "README.md"])
def test_the_caller_paths_diagram_is_valid_mermaid_and_shows_three_callers(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    blocks = [b.split("```")[0] for b in text.split("```mermaid\n")[1:]]
    (diagram,) = [b for b in blocks if "Envoy egress proxy" in b]
    chart = check_flowchart("\n".join(line.strip() for line in diagram.splitlines()))
    assert set(chart.subgraphs) == {"MESH", "VM", "WIN", "GW"}
    edges = {(a, b) for a, _, _, b in chart.edges}
    for proxy, spire in (("VMPROXY", "VMSPIRE"), ("WINPROXY", "WINSPIRE")):
        assert (spire, proxy) in edges and (proxy, "GWLINKERD") in edges  # identity in, mTLS out
    assert ("PODPROXY", "GWLINKERD") in edges and ("ENVOY", "OPA") in edges and ("ENVOY", "BACKEND") in edges


def test_explain_says_the_egress_proxy_and_the_gateway_enforce_an_out_of_mesh_grant(tmp_path: Path) -> None:
    from components.graph import enforcement

    platform = fleet(tmp_path / "m")
    vm, pod = platform.agent("vm-a"), platform.agent("pod")
    assert vm is not None and pod is not None
    engines = [e.system for e in enforcement(platform, vm, vm.grants[0])]
    assert engines == ["Envoy", "OPA"]  # never "Linkerd ... mesh identities" for a VM
    assert [e.system for e in enforcement(platform, pod, pod.grants[0])] == ["Linkerd", "OPA"]


def test_a_proxy_uid_that_another_agents_process_runs_as_is_an_identity_collision(tmp_path: Path) -> None:
    from components.errors import PassportError

    def ec2(name: str, uid: int, grants: str, proxy: int | None = None) -> str:
        extra = f", egressProxyUid: {proxy}" if proxy is not None else ""
        return agent(name, "", grants, platform=(
            "vm: {attestation: aws_iid, awsAccountId: '111122223333', awsRegion: eu-west-1, "
            f"awsInstanceTags: {{role: batch}}, workloadSelectors: ['unix:uid:{uid}']{extra}}}"))

    vault = "    - vault: {path: secret/data/x, capabilities: [read]}\n"
    fine = make_platform(tmp_path / "ok", ec2("a", 1001, vault), ec2("b", 2002, http("ledger", "GET", "{exact: /x}"),
                                                                     proxy=3003))
    assert compile_egress(fine).entries[0][1]["selectors"] == ["unix:uid:3003"]
    with pytest.raises(PassportError) as info:
        make_platform(tmp_path / "clash", ec2("a", 1001, vault),
                      ec2("b", 2002, http("ledger", "GET", "{exact: /x}"), proxy=1001))
    (problem,) = info.value.problems
    assert problem.field == "spec.platform.vm.egressProxyUid" and problem.file.endswith("agent-1.yaml")
    assert "one host process can match both this agent's SPIRE selectors and those of agent 'a'" in problem.message


# --------------------------------------------------------------------------- one proxied agent per host


def refused(path: Path, *docs: str, stack: str = "dev") -> list[Any]:
    """The problems the platform model refuses ``docs`` with (it checks the whole environment)."""
    from components.errors import PassportError

    with pytest.raises(PassportError) as info:
        make_platform(path, *docs, stack=stack)
    return list(info.value.problems)


def _ec2(name: str, tags: str, uid: int, *, account: str = "111122223333", region: str = "eu-west-1") -> str:
    return agent(name, "", http("ledger", "GET", "{exact: /x}"), platform=(
        f"vm: {{attestation: aws_iid, awsAccountId: '{account}', awsRegion: {region}, "
        f"awsInstanceTags: {tags}, workloadSelectors: ['unix:uid:{uid}']}}"))


@pytest.mark.parametrize(("tags_a", "tags_b"), [
    ("{role: batch}", "{role: batch}"),                      # identical
    ("{role: batch}", "{role: batch, team: fin}"),           # subset
    ("{role: batch, team: fin}", "{team: fin}"),             # superset
    ("{role: batch}", "{team: fin}"),                        # one instance can carry both tags
])
def test_two_vm_proxies_that_one_instance_can_match_are_refused(tmp_path: Path, tags_a: str, tags_b: str) -> None:
    (problem,) = refused(tmp_path, _ec2("vm-a", tags_a, 1001), _ec2("vm-b", tags_b, 2002))
    assert problem.file.endswith("agent-1.yaml") and problem.field == "spec.platform.vm.awsInstanceTags"
    assert problem.message.startswith("agent 'vm-b' and agent 'vm-a' (")
    assert "would both listen on 127.0.0.1:15001" in problem.message
    assert "an egress host runs exactly one proxied agent" in problem.message


@pytest.mark.parametrize(("a", "b"), [
    (("{role: batch}", "111122223333", "eu-west-1"), ("{role: other}", "111122223333", "eu-west-1")),
    (("{role: batch}", "111122223333", "eu-west-1"), ("{role: batch}", "444455556666", "eu-west-1")),
    (("{role: batch}", "111122223333", "eu-west-1"), ("{role: batch}", "111122223333", "us-east-1")),
])
def test_vm_proxies_on_hosts_no_instance_can_share_are_fine(tmp_path: Path, a: tuple[str, str, str],
                                                             b: tuple[str, str, str]) -> None:
    platform = make_platform(tmp_path, _ec2("vm-a", a[0], 1001, account=a[1], region=a[2]),
                             _ec2("vm-b", b[0], 2002, account=b[1], region=b[2]))
    assert egress_problems(platform) == []
    assert [p.name for p in compile_egress(platform).proxies] == ["vm-a", "vm-b"]


def test_two_windows_proxies_on_one_host_group_are_refused(tmp_path: Path) -> None:
    win = "windows: {{gmsaAccount: {gmsa}, hostGroup: {group}}}"
    (problem,) = refused(tmp_path / "same",
                         agent("win-a", "", http("ledger", "GET", "{exact: /x}"),
                               platform=win.format(gmsa="gmsa-a", group="WinHosts")),
                         agent("win-b", "", http("ledger", "GET", "{exact: /y}"),
                               platform=win.format(gmsa="gmsa-b", group="winhosts")))
    assert problem.file.endswith("agent-1.yaml") and problem.field == "spec.platform.windows.hostGroup"
    assert "agent 'win-b' and agent 'win-a'" in problem.message and "host group 'winhosts'" in problem.message
    apart = make_platform(tmp_path / "apart",
                          agent("win-a", "", http("ledger", "GET", "{exact: /x}"),
                                platform=win.format(gmsa="gmsa-a", group="HostsA")),
                          agent("win-b", "", http("ledger", "GET", "{exact: /y}"),
                                platform=win.format(gmsa="gmsa-b", group="HostsB")))
    assert egress_problems(apart) == []


def test_windows_ssm_target_tags_that_one_host_can_match_are_refused(tmp_path: Path) -> None:
    a = agent("win-a", "", http("ledger", "GET", "{exact: /x}"),
              platform="windows: {gmsaAccount: gmsa-a, hostGroup: HostsA, ssmTargetTags: {role: web}}")
    b = agent("win-b", "", http("ledger", "GET", "{exact: /y}"),
              platform="windows: {gmsaAccount: gmsa-b, hostGroup: HostsB, ssmTargetTags: {role: web, tier: front}}")
    (problem,) = refused(tmp_path, a, b)
    assert problem.field == "spec.platform.windows.ssmTargetTags"
    assert "agent 'win-b' and agent 'win-a'" in problem.message


def test_an_agent_without_http_grants_may_share_a_proxied_agents_host(tmp_path: Path) -> None:
    vault = "    - vault: {path: secret/data/x, capabilities: [read]}\n"
    other = agent("vm-b", "", vault, platform=(
        "vm: {attestation: aws_iid, awsAccountId: '111122223333', awsRegion: eu-west-1, "
        "awsInstanceTags: {role: batch}, workloadSelectors: ['unix:uid:2002']}"))
    assert egress_problems(make_platform(tmp_path, _ec2("vm-a", "{role: batch}", 1001), other)) == []


# --------------------------------------------------------------------------- open networks


def test_an_outside_caller_without_source_networks_is_a_validate_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from components.cli import main
    from components.render.egress import open_network_warnings

    open_doc = agent("vmbox", "", http("ledger", "GET", "{exact: /x}"), platform=LINUX_VM)
    (warning,) = open_network_warnings(make_platform(tmp_path / "open", open_doc))
    assert warning.field == "spec.sourceNetworks" and warning.file.endswith("agent-0.yaml")
    assert warning.message.startswith("agent 'vmbox' runs outside the mesh and sets no sourceNetworks")
    assert "gateway of 'ledger' admits every network (0.0.0.0/0, ::/0)" in warning.message
    # passport validate says so, and still succeeds
    assert main(["validate", str(tmp_path / "open"), "--stack", "dev"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("warning: ") and "agent 'vmbox' runs outside the mesh" in captured.err
    assert captured.out.startswith("ok: 1 agents")
    # with its networks, or in the mesh, nothing to say
    netted = open_doc.replace("  platform:", "  sourceNetworks: ['10.20.0.0/16']\n  platform:")
    assert open_network_warnings(make_platform(tmp_path / "netted", netted)) == []
    pod = agent("podbox", "team-a", http("ledger", "GET", "{exact: /x}"))
    assert open_network_warnings(make_platform(tmp_path / "pod", pod)) == []


def test_two_shards_agents_on_one_host_are_refused_by_either_shard(tmp_path: Path) -> None:
    from components.shard import hash_bucket

    names = [f"vm-{i}" for i in range(20)]
    here = next(n for n in names if hash_bucket(n, 2) == 0)
    there = next(n for n in names if hash_bucket(n, 2) == 1)
    docs = (_ec2(here, "{role: batch}", 1001), _ec2(there, "{role: batch}", 2002))
    for shard in ("prod-shard-0", "prod-shard-1"):
        (problem,) = refused(tmp_path / shard, *docs, stack=shard)
        assert "an egress host runs exactly one proxied agent" in problem.message
