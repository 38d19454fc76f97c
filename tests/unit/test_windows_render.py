"""Pure tests of the Windows renderer: the PowerShell escaper, the DSC script, SSM documents,
credential specs (against the upstream CRD schema) and the stored-credential refusal.

PowerShell itself (pwsh) is not installable here: Debian has no package and PyPI/npm only
ship wrappers or downloaders. The scripts are parsed with tree-sitter-powershell (PyPI, a
real PowerShell grammar) when it is installed, and always with the tokenizer rules below,
which follow PowerShell's own rules for quoted strings and comments.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from components.errors import ConfigError, ManifestError
from components.manifest.loader import load_manifests
from components.platform_model import Platform, ResolvedAgent, load_platform
from components.render.windows import (
    _ENV,
    DSC_TEMPLATE,
    GMSA_CREDSPEC_API,
    GmsaAgent,
    PowerShellQuoteError,
    check_credential_spec,
    credential_spec,
    credspec_rbac,
    gmsa_agents,
    ps_array,
    ps_quote,
    render_dsc,
    ssm_document_content,
    ssm_document_name,
    ssm_targets,
    stored_credential_findings,
    validate_windows,
    windows_artifacts,
    windows_problems,
)
from tests.support.tools import ROOT, needs

CRD = ROOT / "crds" / "windows" / "gmsacredentialspecs.windows.k8s.io.yaml"  # made by scripts/crds.py vendor

try:  # optional real parser (PyPI tree-sitter + tree-sitter-powershell)
    import tree_sitter
    import tree_sitter_powershell

    _PARSER: Any = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
except ImportError:  # pragma: no cover - depends on the environment
    _PARSER = None

needs_parser = needs(
    _PARSER is None, reason="tree-sitter-powershell not installed (pip install tree-sitter tree-sitter-powershell)"
)

QUOTES = "'\u2018\u2019\u201a\u201b"


# --------------------------------------------------------------------------- helpers


def tokenize(script: str) -> list[tuple[str, str]]:
    """Split PowerShell text into ('code'|'sq'|'dq'|'comment', text) by PowerShell's rules.

    Single-quoted strings: any of the five single-quote characters opens and closes one; two
    in a row are one literal quote. Double-quoted strings: backtick escapes, "" is a quote.
    '#' outside strings starts a comment up to the end of the line.
    """
    out: list[tuple[str, str]] = []
    i, n, code = 0, len(script), []

    def flush() -> None:
        if code:
            out.append(("code", "".join(code)))
            code.clear()

    while i < n:
        c = script[i]
        if c in QUOTES:
            flush()
            j, value = i + 1, []
            while True:
                if j >= n:
                    raise AssertionError(f"unterminated single-quoted string at {i}")
                if script[j] in QUOTES:
                    if j + 1 < n and script[j + 1] in QUOTES:
                        value.append(script[j])
                        j += 2
                        continue
                    break
                value.append(script[j])
                j += 1
            out.append(("sq", "".join(value)))
            i = j + 1
        elif c == '"':
            flush()
            j = i + 1
            while True:
                if j >= n:
                    raise AssertionError(f"unterminated double-quoted string at {i}")
                if script[j] == "`":
                    j += 2
                    continue
                if script[j] == '"':
                    if j + 1 < n and script[j + 1] == '"':
                        j += 2
                        continue
                    break
                j += 1
            out.append(("dq", script[i : j + 1]))
            i = j + 1
        elif c == "#":
            flush()
            end = script.find("\n", i)
            end = n if end < 0 else end
            out.append(("comment", script[i:end]))
            i = end
        else:
            code.append(c)
            i += 1
    flush()
    return out


def shape(script: str) -> list[tuple[str, str]]:
    """The script with every single-quoted literal's content and every comment blanked."""
    return [(k, "" if k in ("sq", "comment") else t) for k, t in tokenize(script)]


def literals(script: str) -> list[str]:
    return [t for k, t in tokenize(script) if k == "sq"]


def ts_shape(script: str) -> list[str]:
    """tree-sitter node types in document order (string contents excluded)."""
    tree = _PARSER.parse(script.encode("utf-8"))
    assert not tree.root_node.has_error, "tree-sitter-powershell reports a syntax error"
    types: list[str] = []

    def walk(node: Any) -> None:
        types.append(node.type)
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    return types


def ts_strings(script: str) -> list[str]:
    tree = _PARSER.parse(script.encode("utf-8"))
    found: list[str] = []

    def walk(node: Any) -> None:
        if node.type == "verbatim_string_characters":
            found.append(node.text.decode("utf-8"))
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    return found


@pytest.fixture(scope="module")
def prod() -> Platform:
    return load_platform("prod")


@pytest.fixture(scope="module")
def ledger(prod: Platform) -> GmsaAgent:
    (g,) = gmsa_agents(prod)
    return g


def with_windows(g: GmsaAgent, **update: Any) -> GmsaAgent:
    """The agent with spec.platform.windows fields replaced, bypassing manifest validation
    (to test the escaper itself: the manifest patterns refuse all hostile values first)."""
    m = g.agent.manifest
    win = m.spec.platform.windows
    assert win is not None
    win = win.model_copy(update=update)
    spec = m.spec.model_copy(update={"platform": m.spec.platform.model_copy(update={"windows": win})})
    source = type(g.agent.source)(g.agent.source.file, g.agent.source.line, g.agent.source.lines,
                                  manifest=m.model_copy(update={"spec": spec}))
    return GmsaAgent(ResolvedAgent(source, g.agent.identity), win, g.domain, g.netbios_domain, g.same_domain)


# --------------------------------------------------------------------------- the escaper


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("LedgerSyncPool", "'LedgerSyncPool'"),
        ("", "''"),
        ("O'Brien", "'O''Brien'"),
        ("x'; Remove-Item -Recurse C:\\ ; '", "'x''; Remove-Item -Recurse C:\\ ; '''"),
        ("'", "''''"),
        ("$(Remove-Item C:\\)", "'$(Remove-Item C:\\)'"),
        ("$env:USERPROFILE", "'$env:USERPROFILE'"),
        ("`$x` `n", "'`$x` `n'"),
        ("a\u2019b", "'a\u2019\u2019b'"),
        ("\u2018; calc; \u2018", "'\u2018\u2018; calc; \u2018\u2018'"),
        ("\u201a\u201b", "'\u201a\u201a\u201b\u201b'"),
        ('say "hi" @\' #x <#', "'say \"hi\" @'' #x <#'"),
        ("DOMAIN\\gmsa$", "'DOMAIN\\gmsa$'"),
    ],
)
def test_ps_quote_exact(value: str, expected: str) -> None:
    quoted = ps_quote(value)
    assert quoted == expected
    # and PowerShell's tokenizer reads back exactly the value, as one literal, nothing else
    assert tokenize(quoted) == [("sq", value)]


@pytest.mark.parametrize(
    "value",
    ["a\nb", "a\rb", "a\r\nRemove-Item x", "nul\x00", "esc\x1b[2J", "vt\x0b", "ff\x0c", "nel\x85",
     "ls\u2028", "ps\u2029", "rlo\u202egnp.exe", "zw\u200bsp", "bom\ufeff", "del\x7f"],
)
def test_ps_quote_refuses_line_breaks_and_control_characters(value: str) -> None:
    with pytest.raises(PowerShellQuoteError, match=r"U\+[0-9A-F]{4}"):
        ps_quote(value)


def test_ps_quote_refuses_non_strings() -> None:
    with pytest.raises(PowerShellQuoteError):
        ps_quote(42)


def test_ps_array() -> None:
    assert ps_array(["a", "b'c"]) == "@('a', 'b''c')"
    assert ps_array([]) == "@()"


def test_template_refuses_unquoted_values() -> None:
    with pytest.raises(TypeError, match="unquoted value"):
        _ENV.from_string("Write-Output {{ x }}").render(x="$(calc)")
    assert _ENV.from_string("Write-Output {{ x | ps }}").render(x="$(calc)") == "Write-Output '$(calc)'"


def test_dsc_template_has_no_unfiltered_expression() -> None:
    text = (ROOT / "components" / "render" / "templates" / DSC_TEMPLATE).read_text(encoding="utf-8")
    text = re.sub(r"\{#.*?#\}", "", text, flags=re.DOTALL)  # jinja comments
    expressions = re.findall(r"\{\{(.*?)\}\}", text)
    assert expressions
    for expr in expressions:
        assert re.search(r"\|\s*(ps|ps_array)\s*$", expr), expr


# --------------------------------------------------------------------------- the DSC script


def test_rendered_script_structure(ledger: GmsaAgent) -> None:
    script = render_dsc(ledger)
    lits = literals(script)
    # the gMSA: group account, host group as the only password principal, AES256 only
    block = script[script.index("ADManagedServiceAccount 'Gmsa'"):script.index("Script 'InstallGmsa'")]
    assert "ServiceAccountName        = 'gmsa-ledgersync'" in block
    assert "AccountType               = 'Group'" in block
    assert "ManagedPasswordPrincipals = @('LedgerSyncHosts')" in block
    assert "KerberosEncryptionType    = @('AES256')" in block
    assert "Path " not in block and "DomainController" not in block
    # installation on the host, tested first
    assert "Test-ADServiceAccount -Identity 'gmsa-ledgersync'" in script
    assert "Install-ADServiceAccount -Identity 'gmsa-ledgersync'" in script
    assert "DependsOn  = '[ADManagedServiceAccount]Gmsa'" in script
    # the pool runs as DOMAIN\gmsa$ with an empty password
    pool = script[script.index("WebAppPool 'AppPool'"):]
    assert "Name         = 'LedgerSyncPool'" in pool
    assert "identityType = 'SpecificUser'" in pool
    assert "Credential   = $GmsaIdentity" in pool
    assert "PSCredential]::new('ACME\\gmsa-ledgersync$', [System.Security.SecureString]::new())" in script
    assert "Import-DscResource -ModuleName 'ActiveDirectoryDsc'" in script
    assert "Import-DscResource -ModuleName 'WebAdministrationDsc'" in script
    assert "ACME\\gmsa-ledgersync$" in lits
    # no credential material of any kind
    for forbidden in ("ConvertTo-SecureString", "AsPlainText", "-Password", "Get-Credential"):
        assert forbidden not in script
    assert not re.search(r"\bPassword\s*=", script)
    assert script.endswith("}\n")
    assert script == render_dsc(ledger)  # deterministic


def test_script_without_app_pool_has_no_iis(ledger: GmsaAgent) -> None:
    script = render_dsc(with_windows(ledger, iis_app_pool=None))
    assert "WebAppPool" not in script
    assert "WebAdministrationDsc" not in script
    assert "PSDscAllowPlainTextPassword" not in script
    assert "PSCredential" not in script
    assert "$null = AgentPassportGmsa -ConfigurationData $configurationData -OutputPath $mofDir" in script


def test_gmsa_path_and_foreign_domain(ledger: GmsaAgent) -> None:
    foreign = GmsaAgent(ledger.agent, ledger.windows, "emea.acme-corp.net", ledger.netbios_domain, False)
    script = render_dsc(foreign, "OU=Agents,DC=corp,DC=acme-corp,DC=net")
    assert "Path                      = 'OU=Agents,DC=corp,DC=acme-corp,DC=net'" in script
    assert "DomainController          = 'emea.acme-corp.net'" in script


@needs_parser
def test_rendered_scripts_parse_as_powershell(prod: Platform, ledger: GmsaAgent) -> None:
    for g in (ledger, with_windows(ledger, iis_app_pool=None)):
        script = render_dsc(g, "OU=Agents,DC=corp,DC=acme-corp,DC=net")
        ts_shape(script)  # asserts no syntax error
        assert "'gmsa-ledgersync'" in ts_strings(script)


HOSTILE = [
    "O'Brien",
    "x'; Remove-Item -Recurse -Force C:\\; '",
    "'; Remove-Item C:\\ -Recurse #",
    "$(Remove-Item C:\\ -Recurse)",
    "`$(calc)`",
    "a\u2019; calc; \u2018b",
    "@'",
    '"; calc; "',
    "<# x",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_values_stay_inside_their_strings(ledger: GmsaAgent, hostile: str) -> None:
    benign = render_dsc(ledger)
    evil = render_dsc(with_windows(ledger, gmsa_account=hostile, host_group=hostile, iis_app_pool=hostile))
    # Same code outside the literals: nothing was injected, nothing ended early.
    assert shape(evil) == shape(benign)
    assert evil.count("\n") == benign.count("\n")
    lits = literals(evil)
    assert lits.count(hostile) == literals(benign).count("gmsa-ledgersync") + literals(benign).count(
        "LedgerSyncHosts") + literals(benign).count("LedgerSyncPool")
    assert f"ManagedPasswordPrincipals = @({ps_quote(hostile)})" in evil
    assert f"Name         = {ps_quote(hostile)}" in evil
    assert f"ACME\\{hostile}$" in lits
    if _PARSER is not None:
        assert ts_shape(evil) == ts_shape(benign)


@pytest.mark.parametrize("bad", ["a\nRemove-Item C:\\", "x\r\n#", "nul\x00", "\u2028calc"])
def test_line_breaks_in_values_refuse_to_render(ledger: GmsaAgent, bad: str) -> None:
    with pytest.raises(PowerShellQuoteError):
        render_dsc(with_windows(ledger, host_group=bad))


# --------------------------------------------------------------------------- validation


def _manifest(tmp_path: Path, windows: dict[str, Any]) -> Path:
    doc = {
        "apiVersion": "passport.agentpassport.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "hostile", "team": "red-team", "owner": "red@acme-corp.net"},
        "spec": {"platform": {"windows": windows}},
    }
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gmsaAccount", "x'; Remove-Item"),
        ("gmsaAccount", "$(calc)"),
        ("hostGroup", "Hosts'; calc; '"),
        ("hostGroup", "Hosts`n"),
        ("hostGroup", "Hosts\nRemove-Item C:\\"),
        ("iisAppPool", "Pool$(calc)"),
        ("iisAppPool", "Pool\u2019"),
        ("domain", "corp.acme.net'"),
    ],
)
def test_manifest_patterns_refuse_hostile_windows_values(tmp_path: Path, field: str, value: str) -> None:
    windows = {"gmsaAccount": "gmsa-ok", "hostGroup": "OkHosts", field: value}
    path = _manifest(tmp_path, windows)
    with pytest.raises(ManifestError) as err:
        load_manifests([path])
    (problem,) = err.value.problems
    assert problem.field == f"spec.platform.windows.{field}"
    assert problem.file.endswith("hostile.yaml")
    assert problem.line is not None


def test_manifest_patterns_refuse_hostile_ssm_tags(tmp_path: Path) -> None:
    path = _manifest(tmp_path, {"gmsaAccount": "gmsa-ok", "hostGroup": "OkHosts",
                                "ssmTargetTags": {"role": "web'; calc"}})
    with pytest.raises(ManifestError) as err:
        load_manifests([path])
    assert err.value.problems[0].field.startswith("spec.platform.windows.ssmTargetTags")


def test_windows_problems_catch_what_slips_past_the_manifest(prod: Platform, ledger: GmsaAgent) -> None:
    evil = with_windows(ledger, host_group="Hosts\nRemove-Item")
    platform = _replace_agent(prod, evil.agent)
    manifest, config = windows_problems(platform)
    assert [p.field for p in manifest] == ["spec.platform.windows.hostGroup"]
    assert "U+000A" in manifest[0].message
    assert manifest[0].file == "agents/ledger-sync.yaml"
    assert config == []
    with pytest.raises(ManifestError):
        validate_windows(platform)


def _replace_agent(platform: Platform, agent: ResolvedAgent, *extra: ResolvedAgent) -> Platform:
    agents = (*tuple(a for a in platform.agents if a.name != agent.name), agent, *extra)
    return Platform(platform.stack, platform.config, platform.config_file, agents, platform.services)


def _clone(g: GmsaAgent, name: str, **update: Any) -> ResolvedAgent:
    changed = with_windows(g, **update).agent
    m = changed.manifest
    m = m.model_copy(update={"metadata": m.metadata.model_copy(update={"name": name})})
    source = type(changed.source)(f"agents/{name}.yaml", 1, {}, manifest=m)
    ident = type(changed.identity)(**{**changed.identity.__dict__, "name": name,
                                      "spiffe_path": f"/windows/x/{name}"})
    return ResolvedAgent(source, ident)


def test_duplicate_app_pool_is_refused(prod: Platform, ledger: GmsaAgent) -> None:
    # One gMSA per agent is an identity rule of the whole environment, with its one home in the
    # platform model (tests/unit/test_identity_collisions.py); the Windows rules own the app pools.
    twin = _clone(ledger, "ledger-twin")
    manifest, _ = windows_problems(_replace_agent(prod, ledger.agent, twin))
    fields = sorted((p.file, p.field) for p in manifest)
    assert fields == [("agents/ledger-twin.yaml", "spec.platform.windows.iisAppPool")]


def test_suspended_windows_agents_get_nothing(prod: Platform, ledger: GmsaAgent) -> None:
    m = ledger.agent.manifest
    spec = m.spec.model_copy(update={"suspended": True, "suspended_reason": "INC-1"})
    source = type(ledger.agent.source)(ledger.agent.source.file, 1, {}, manifest=m.model_copy(update={"spec": spec}))
    platform = _replace_agent(prod, ResolvedAgent(source, ledger.agent.identity))
    assert gmsa_agents(platform) == []
    assert list(windows_artifacts(platform)) == []


# --------------------------------------------------------------------------- SSM delivery


def test_ssm_document_runs_the_script_without_credentials(ledger: GmsaAgent) -> None:
    script = render_dsc(ledger)
    doc = ssm_document_content(script, "ledger-sync")
    assert doc["schemaVersion"] == "2.2"
    (step,) = doc["mainSteps"]
    assert step["action"] == "aws:runPowerShellScript"
    assert step["precondition"] == {"StringEquals": ["platformType", "Windows"]}
    assert "\n".join(step["inputs"]["runCommand"]) + "\n" == script
    assert "parameters" not in doc
    text = json.dumps(doc).lower()
    for forbidden in ("accesskey", "secretkey", "aws_secret", "converto-securestring", "asplaintext"):
        assert forbidden not in text


def test_ssm_targets_default_and_custom(ledger: GmsaAgent) -> None:
    assert ssm_targets(ledger) == [{"key": "tag:agentpassport:host-group", "values": ["LedgerSyncHosts"]}]
    custom = with_windows(ledger, ssm_target_tags={"role": "ledger", "env": "prod"})
    assert ssm_targets(custom) == [{"key": "tag:env", "values": ["prod"]}, {"key": "tag:role", "values": ["ledger"]}]


def test_ssm_document_name() -> None:
    assert ssm_document_name("prod", "ledger-sync") == "AgentPassport-prod-gmsa-ledger-sync"
    assert re.fullmatch(r"[A-Za-z0-9_.-]{3,128}", ssm_document_name("org/proj:x", "a" * 63))


# --------------------------------------------------------------------------- Kubernetes credspecs


def _pod_platform(prod: Platform, ledger: GmsaAgent) -> tuple[Platform, GmsaAgent]:
    from components.manifest.models import WindowsPod

    cfg = prod.config.model_copy(update={"windows": prod.config.windows.model_copy(update={
        "domain_sid": "S-1-5-21-1004336348-1177238915-682003330",
        "domain_guid": "5a4e3f2c-1b2d-4c5e-8f90-a1b2c3d4e5f6"})})
    pod = with_windows(ledger, pod=WindowsPod(namespace="ledger", service_account="ledger-sync"))
    platform = _replace_agent(Platform(prod.stack, cfg, prod.config_file, prod.agents, prod.services), pod.agent)
    (g,) = gmsa_agents(platform)
    return platform, g


def _crd_schema(api_version: str = GMSA_CREDSPEC_API) -> dict[str, Any]:
    """The committed CRD's schema for ``api_version`` (what the renderer emits), its storage version."""
    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    group, name = api_version.split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == "GMSACredentialSpec"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == name]
    assert version["served"] is True and version["storage"] is True
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _unknown_keys(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Keys the (non-strict) CRD schema does not declare: a real API server would prune them."""
    out: list[str] = []
    if isinstance(obj, dict) and "properties" in schema:
        for k, v in obj.items():
            if k not in schema["properties"]:
                out.append(f"{path}.{k}")
            else:
                out.extend(_unknown_keys(v, schema["properties"][k], f"{path}.{k}"))
    elif isinstance(obj, list) and "items" in schema:
        for i, v in enumerate(obj):
            out.extend(_unknown_keys(v, schema["items"], f"{path}[{i}]"))
    return out


def test_credential_spec_matches_the_crd(prod: Platform, ledger: GmsaAgent) -> None:
    platform, g = _pod_platform(prod, ledger)
    obj = credential_spec(g, platform.config)
    assert obj["apiVersion"] == "windows.k8s.io/v1"
    assert obj["kind"] == "GMSACredentialSpec"
    assert obj["metadata"] == {"name": "agentpassport-ledger-sync", "labels": {
        "app.kubernetes.io/managed-by": "agent-passport", "agentpassport.dev/agent": "ledger-sync"}}
    schema = _crd_schema()
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    jsonschema.validate(body, schema)
    assert _unknown_keys(body, schema) == []
    spec = obj["credspec"]
    assert spec["CmsPlugins"] == ["ActiveDirectory"]
    assert spec["ActiveDirectoryConfig"]["GroupManagedServiceAccounts"] == [
        {"Name": "gmsa-ledgersync", "Scope": "ACME"}, {"Name": "gmsa-ledgersync", "Scope": "corp.acme-corp.net"}]
    assert spec["DomainJoinConfig"] == {
        "DnsName": "corp.acme-corp.net", "DnsTreeName": "corp.acme-corp.net",
        "Guid": "5a4e3f2c-1b2d-4c5e-8f90-a1b2c3d4e5f6", "MachineAccountName": "gmsa-ledgersync",
        "NetBiosName": "ACME", "Sid": "S-1-5-21-1004336348-1177238915-682003330"}
    assert stored_credential_findings(obj) == []


def test_credspec_rbac_allows_only_use_of_that_credspec(prod: Platform, ledger: GmsaAgent) -> None:
    _, g = _pod_platform(prod, ledger)
    role, binding = credspec_rbac(g)
    assert role["kind"] == "ClusterRole"
    assert role["rules"] == [{"apiGroups": ["windows.k8s.io"], "resources": ["gmsacredentialspecs"],
                              "verbs": ["use"], "resourceNames": ["agentpassport-ledger-sync"]}]
    assert binding["kind"] == "RoleBinding"
    assert binding["metadata"]["namespace"] == "ledger"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ledger-sync", "namespace": "ledger"}]


def test_pod_agents_need_the_domain_sid_and_guid(prod: Platform, ledger: GmsaAgent) -> None:
    from components.manifest.models import WindowsPod

    pod = with_windows(ledger, pod=WindowsPod(namespace="ledger", service_account="ledger-sync"))
    platform = _replace_agent(prod, pod.agent)
    with pytest.raises(ConfigError) as err:
        validate_windows(platform)
    assert sorted(p.field for p in err.value.problems) == [
        "agent-passport:windows.domainGuid", "agent-passport:windows.domainSid"]
    assert all(p.file == "stacks/Pulumi.prod.yaml" for p in err.value.problems)


HOSTILE_CREDSPEC = {
    "apiVersion": "windows.k8s.io/v1",
    "kind": "GMSACredentialSpec",
    "metadata": {"name": "evil"},
    "credspec": {
        "ActiveDirectoryConfig": {
            "GroupManagedServiceAccounts": [{"Name": "gmsa-ledgersync", "Scope": "ACME"}],
            "HostAccountConfig": {
                "PortableCcgVersion": "1",
                "PluginGUID": "{859E1386-BDB4-49E8-85C7-3070B13920E1}",
                "PluginInput": "arn:aws:secretsmanager:us-east-1:123456789012:secret:gmsa-user",
            },
        },
        "CmsPlugins": ["ActiveDirectory", "ccg"],
        "DomainJoinConfig": {"DnsName": "corp.acme-corp.net", "MachineAccountName": "gmsa-ledgersync"},
    },
}


def test_credspec_with_a_stored_credential_is_refused() -> None:
    findings = stored_credential_findings(HOSTILE_CREDSPEC)
    assert findings == [
        "credspec.ActiveDirectoryConfig.HostAccountConfig (a CCG plugin reading a stored credential)",
        "credspec.ActiveDirectoryConfig.HostAccountConfig.PluginGUID (a CCG plugin reading a stored credential)",
        "credspec.ActiveDirectoryConfig.HostAccountConfig.PluginInput (a CCG plugin reading a stored credential)",
        "credspec.ActiveDirectoryConfig.HostAccountConfig.PortableCcgVersion (a CCG plugin reading a stored "
        "credential)",
        "credspec.CmsPlugins: 'ccg' (only ActiveDirectory is allowed)",
    ]
    with pytest.raises(ManifestError) as err:
        check_credential_spec(HOSTILE_CREDSPEC, False, "agents/ledger-sync.yaml", 7, "spec.platform.windows.pod")
    assert {(p.file, p.line, p.field) for p in err.value.problems} == {
        ("agents/ledger-sync.yaml", 7, "spec.platform.windows.pod")}
    assert "windows.allowStoredCredentialSpecs" in err.value.problems[0].message
    # the stack may explicitly accept it
    check_credential_spec(HOSTILE_CREDSPEC, True, "agents/ledger-sync.yaml", 7, "spec.platform.windows.pod")


def test_stored_credential_keys_are_found_case_insensitively_anywhere() -> None:
    sneaky = {"credspec": {"Extra": [{"hostaccountconfig": {}}], "CmsPlugins": ["ActiveDirectory"]}}
    assert stored_credential_findings(sneaky) == [
        "credspec.Extra[0].hostaccountconfig (a CCG plugin reading a stored credential)"]


# --------------------------------------------------------------------------- artifacts


def test_artifacts_per_stack() -> None:
    dev = load_platform("dev")
    paths = [a.path for a in windows_artifacts(dev)]
    assert paths == ["windows/ledger-sync.ps1"]  # rendered even though dev has no AWS
    (art,) = windows_artifacts(dev)
    assert "ServiceAccountName        = 'gmsa-ledgersync'" in art.content
    assert "'CORP\\gmsa-ledgersync$'" in art.content  # dev's NetBIOS default


def test_artifacts_include_kubernetes_objects_for_pods(prod: Platform, ledger: GmsaAgent) -> None:
    platform, _ = _pod_platform(prod, ledger)
    paths = sorted(a.path for a in windows_artifacts(platform))
    assert paths == [
        "kubernetes/windows/clusterrole-agentpassport-gmsa-ledger-sync.yaml",
        "kubernetes/windows/gmsacredentialspec-agentpassport-ledger-sync.yaml",
        "kubernetes/windows/rolebinding-ledger-agentpassport-gmsa-ledger-sync.yaml",
        "windows/ledger-sync.ps1",
    ]
