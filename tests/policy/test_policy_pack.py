"""The pack's shape and its pure helpers: entry point, type tokens, config, attribution, unknowns."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_NUMBER_VALUE, UNKNOWN_STRING_VALUE, unknown_checking_proxy

from components.check import PACK_DIR, load_pack, policies
from tests.conftest import ROOT

SITE = Path(yaml.__file__).resolve().parent.parent  # site-packages of the venv running the tests


def test_main_only_builds_the_policy_pack() -> None:
    tree = ast.parse((PACK_DIR / "__main__.py").read_text(encoding="utf-8"))
    body = [n for n in tree.body if not isinstance(n, ast.Import | ast.ImportFrom)]
    docstring, call = body
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
    assert isinstance(call, ast.Expr) and isinstance(call.value, ast.Call)
    assert isinstance(call.value.func, ast.Name) and call.value.func.id == "PolicyPack"


@pytest.mark.parametrize("module", sorted(p.name for p in (PACK_DIR / "policies").glob("*.py")))
def test_policies_package_has_no_side_effects_at_import(module: str) -> None:
    text = (PACK_DIR / "policies" / module).read_text(encoding="utf-8")
    tree = ast.parse(text)
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        assert isinstance(node, allowed), ast.dump(node)[:80]
    assert "PolicyPack(" not in text


def test_main_imports_the_policies_as_a_script_does() -> None:
    """The engine runs __main__.py as a script (the analyzer launcher): with only the pack's
    folder on sys.path, `from policies import PACK_NAME, POLICIES` must work."""
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, sys.argv[1]); from policies import PACK_NAME, POLICIES; "
            "print(PACK_NAME, len(POLICIES))")
    out = subprocess.run([sys.executable, "-I", "-c", code, str(PACK_DIR)], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == ["no-static-credentials", str(len(policies()))]


def test_label_keys_are_the_projects() -> None:
    """The pack keeps copies of components/labels.py's keys (it imports nothing from the project)."""
    from components import labels

    pack = load_pack()
    assert (pack.AGENT_LABEL, pack.GATEWAY_LABEL, pack.SERVICE_LABEL) == (
        labels.AGENT_LABEL, labels.GATEWAY_LABEL, labels.SERVICE_LABEL)
    from components.render.audit import COLLECTOR

    assert pack.COLLECTOR_NAME == COLLECTOR  # audit-collector-no-keys recognises the audit collector


def test_project_files() -> None:
    project = yaml.safe_load((PACK_DIR / "PulumiPolicy.yaml").read_text(encoding="utf-8"))
    assert project["runtime"]["name"] == "python"
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    requirements = (PACK_DIR / "requirements.txt").read_text(encoding="utf-8")
    assert "pulumi-policy>=1.21.0" in requirements


def test_policy_names_are_unique_and_documented() -> None:
    names = [p.name for p in policies()]
    assert len(names) == len(set(names)) == 24
    for p in policies():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", p.name)
        assert p.description.endswith(".") and p.remediation_steps, p.name
        assert p.enforcement_level == EnforcementLevel.MANDATORY
    stack = {p.name for p in policies() if isinstance(p, StackValidationPolicy)}
    assert stack == {"one-identity-per-agent", "grants-enforced", "resource-count-ceiling",
                     "no-state-root-key-in-prod", "ca-chain-lifetimes", "vault-rate-limit-quotas"}
    assert all(isinstance(p, ResourceValidationPolicy) for p in policies() if p.name not in stack)


def test_every_config_property_has_a_default_and_description() -> None:
    for p in policies():
        for name, prop in (p.config_schema.properties if p.config_schema else {}).items():
            assert "default" in prop and prop["description"], f"{p.name}.{name}"
            if prop.get("pattern"):
                assert re.fullmatch(prop["pattern"], prop["default"]), f"{p.name}.{name}"


def _sdk_tokens() -> set[str]:
    tokens: set[str] = set()
    for pkg in ("pulumi_aws", "pulumi_kubernetes", "pulumi_vault", "pulumi_tls"):
        for path in (SITE / pkg).rglob("*.py"):
            tokens.update(re.findall(r'"((?:aws|kubernetes|vault|tls):[A-Za-z0-9./]+:[A-Za-z0-9]+)"',
                                     path.read_text(encoding="utf-8", errors="replace")))
    return tokens


def test_type_tokens_exist_in_the_installed_sdks() -> None:
    """Built-in tokens are the SDK classes' own; CRD tokens use the CRDs' group/version/kind."""
    pack = load_pack()
    tokens = {k: v for k, v in vars(pack.T).items() if k.isupper()}
    known = _sdk_tokens()
    crd_groups = ("spire.spiffe.io/", "policy.linkerd.io/", "windows.k8s.io/")
    for key, token in tokens.items():
        if token == "pulumi:pulumi:Stack":
            continue
        if any(g in token for g in crd_groups):
            group_version, kind = token.split(":")[1:]
            crds = (ROOT / "crds", ROOT / "tests/fixtures/crds")  # committed CRD data
            texts = " ".join(f.read_text(encoding="utf-8") for d in crds for f in d.rglob("*.yaml"))
            assert f"kind: {kind}" in texts, key
            assert group_version.split("/")[0] in {g.rstrip("/") for g in crd_groups}
            continue
        assert token in known, f"{key}={token} is not a type token of the installed SDKs"


@pytest.mark.parametrize(("text", "expected"), [
    ("15m", 900), ("1h30m", 5400), ("30d", 2592000), ("1h0m0s", 3600), ("500ms", 0.5),
    ("86400", 86400), (900, 900), (900.0, 900), (None, None), ("soon", None), (True, None),
])
def test_seconds(text: Any, expected: float | None) -> None:
    assert load_pack().seconds(text) == expected


@pytest.mark.parametrize(("secs", "text"), [(2592000, "30d"), (5400, "90m"), (14400, "4h"), (61, "61s")])
def test_human(secs: int, text: str) -> None:
    assert load_pack().human(secs) == text


def test_agent_attribution_order() -> None:
    pack = load_pack()
    agents = ["agent-cortex", "cortex", "invoice-processor"]
    labelled = {"metadata": {"labels": {"agentpassport.dev/agent": "ledger-sync"}}}
    assert pack.agent_of("kubernetes:core/v1:Secret", "agent-cortex-x", labelled, agents) == "ledger-sync"
    # the longest agent name made of whole dash-separated tokens wins
    assert pack.agent_of("aws:iam/role:Role", "agent-passport-agent-cortex-reports", {}, agents) == "agent-cortex"
    # no partial tokens: 'invoice-processors' is not 'invoice-processor'
    assert pack.agent_of("aws:iam/role:Role", "invoice-processors-x", {}, agents) is None
    # a registration is its SPIFFE ID's owner even without a label or name
    reg = {"spec": {"spiffeIDTemplate": "spiffe://td/ns/a/sa/b"}}
    assert pack.agent_of(pack.T.CLUSTER_SPIFFE_ID, "r1", reg, agents, {"cortex": "spiffe://td/ns/a/sa/b"}) == "cortex"
    # workload pod template labels count too
    pod = {"spec": {"template": {"metadata": {"labels": {"agentpassport.dev/agent": "cortex"}}}}}
    assert pack.agent_of(pack.T.K8S_DEPLOYMENT, "x", pod, agents) == "cortex"


@pytest.mark.parametrize(("name", "is_credential"), [
    ("DB_PASSWORD", True), ("OPENAI_API_KEY", True), ("api-token", True), ("client_secret", True),
    ("TOKEN_PATH", False), ("VAULT_ADDR", False), ("SPIFFE_ENDPOINT_SOCKET", False), ("LOG_LEVEL", False),
    ("SECRET_NAME", False), ("PRIVATE_KEY", True), ("cache.key", True),
])
def test_credential_names(name: str, is_credential: bool) -> None:
    pack = load_pack()
    suffixes = pack.LITERALS_SCHEMA.properties["ignoredNameSuffixes"]["default"]
    assert pack.credential_name(name, suffixes) is is_credential


@pytest.mark.parametrize(("text", "finding"), [
    ("aws_access_key_id=AKIAIOSFODNN7EXAMPLE", "an AWS access key id"),
    ("-----BEGIN EC PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY-----", "a PEM private key"),
    ("Authorization: xoxb-123456789012-abcdefghij", "an API token (xoxb-1...)"),
    ("$cred = ConvertTo-SecureString 'P@ss' -AsPlainText -Force", "ConvertTo-SecureString of a literal"),
    ("mysql --password=S3cretValue", "a literal passed to --password"),
    ("postgres://admin:pw123@db/x", "credentials embedded in a URL"),
])
def test_text_findings(text: str, finding: str) -> None:
    assert finding in load_pack().text_findings(text)


@pytest.mark.parametrize("text", [
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
    "postgresql://{{username}}:{{password}}@db:5432/postgres",
    "$password = $env:DB_PASSWORD",
    "password: {{ .Values.password }}",
    "Install-ADServiceAccount -Identity 'gmsa-ledgersync'",
])
def test_text_without_findings(text: str) -> None:
    assert load_pack().text_findings(text) == []


def _args(resource_type: str, props: dict[str, Any]) -> ResourceValidationArgs:
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
    return ResourceValidationArgs(resource_type, unknown_checking_proxy(props), "urn:pulumi:dev::p::t::n", "n",
                                  opts, None, {})


def test_values_unknown_during_preview_never_violate() -> None:
    pack = load_pack()
    pod = {"metadata": {"labels": {"agentpassport.dev/agent": "a"}},
           "spec": {"automountServiceAccountToken": UNKNOWN_STRING_VALUE}}
    cases: list[tuple[str, dict[str, Any]]] = [
        (pack.T.TLS_LOCALLY_SIGNED_CERT, {"validityPeriodHours": UNKNOWN_NUMBER_VALUE}),
        (pack.T.CLUSTER_SPIFFE_ID, {"spec": {"ttl": UNKNOWN_STRING_VALUE}}),
        (pack.T.VAULT_DB_ROLE, {"defaultTtl": UNKNOWN_NUMBER_VALUE, "maxTtl": UNKNOWN_NUMBER_VALUE}),
        (pack.T.K8S_CONFIGMAP, {"data": {"password": UNKNOWN_STRING_VALUE}}),
        (pack.T.K8S_DEPLOYMENT, {"spec": {"template": pod}}),
    ]
    found: list[str] = []

    def report(message: str, urn: str | None = None) -> None:
        found.append(message)

    for resource_type, props in cases:
        for p in policies():
            if isinstance(p, ResourceValidationPolicy):
                p.validate(_args(resource_type, props), report)
        assert found == [], (resource_type, found)


def test_config_defaults_are_overlaid_by_given_values() -> None:
    pack = load_pack()
    cfg = pack.config_of(pack.SVID_SCHEMA, {"maxX509SvidTtl": "30m"})
    assert cfg == {"maxX509SvidTtl": "30m", "maxJwtSvidTtl": "15m", "caTtl": "24h"}
    found: list[str] = []

    def report(message: str, urn: str | None = None) -> None:
        found.append(message)

    policy = pack.policy_named("svid-ttl-limits")
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
    args = ResourceValidationArgs(pack.T.CLUSTER_SPIFFE_ID, unknown_checking_proxy({"spec": {"ttl": "45m"}}),
                                  "urn:pulumi:prod::p::t::r", "r", opts, None, {"maxX509SvidTtl": "30m"})
    policy.validate(args, report)
    assert found == ["registration 'r': X.509-SVID TTL 45m exceeds the limit of 30m"]
