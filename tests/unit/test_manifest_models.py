"""Manifest models, YAML loading and identity derivation (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.durations import format_duration, parse_duration
from components.errors import ManifestError
from components.identity import derive_identity
from components.manifest.loader import load_manifests, parse_yaml_documents
from components.manifest.models import AgentManifest

MINIMAL = """\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata: {name: minimal, team: qa, owner: qa@acme-corp.net}
spec:
  platform:
    kubernetes: {namespace: agents, serviceAccount: minimal-sa}
"""


def _one(text: str) -> AgentManifest:
    value, _, _ = next(parse_yaml_documents(text, "x.yaml"))
    return AgentManifest.model_validate(value)


def test_secure_defaults() -> None:
    m = _one(MINIMAL)
    assert m.spec.identity.x509_svid_ttl == "15m"
    assert m.spec.identity.jwt_svid_ttl == "5m"
    assert m.spec.identity.jwt_audiences == ["vault"]
    assert m.spec.grants == []
    assert m.spec.suspended is False


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("kubernetes: {namespace: agents, serviceAccount: minimal-sa}", "/ns/agents/sa/minimal-sa"),
        ("windows: {gmsaAccount: gmsa-App1, hostGroup: App Hosts}", "/windows/app-hosts/gmsa-app1"),
        ("vm: {attestation: join_token, workloadSelectors: ['unix:uid:1000']}", "/vm/minimal"),
    ],
)
def test_default_spiffe_path_per_platform(platform: str, expected: str) -> None:
    text = MINIMAL.replace("kubernetes: {namespace: agents, serviceAccount: minimal-sa}", platform)
    ident = derive_identity(_one(text), "prod.acme-corp.net", "cluster.local")
    assert ident.spiffe_id == f"spiffe://prod.acme-corp.net{expected}"


def test_identity_names_derive_from_one_place() -> None:
    ident = derive_identity(_one(MINIMAL), "td.acme-corp.net", "cluster.local")
    assert ident.linkerd_identity == "minimal-sa.agents.serviceaccount.identity.linkerd.cluster.local"
    assert ident.vault_role == "agent-minimal"
    assert ident.x509_svid_ttl_seconds == 900


def test_explicit_spiffe_path_wins() -> None:
    text = MINIMAL.replace("spec:\n", "spec:\n  identity: {spiffePath: /agents/minimal}\n")
    assert derive_identity(_one(text), "td.io", "cluster.local").spiffe_id == "spiffe://td.io/agents/minimal"


def test_yaml_12_scalars_keep_clock_times_and_norway() -> None:
    value, _, _ = next(parse_yaml_documents("a: 17:00\nb: no\nc: on\nd: true\ne: 8080\nf: '1'\n", "x.yaml"))
    assert value == {"a": "17:00", "b": "no", "c": "on", "d": True, "e": 8080, "f": "1"}


def test_unquoted_office_hours_are_read_as_times(tmp_path: Path) -> None:
    text = MINIMAL + """  grants:
    - http:
        service: svc
        methods: [GET]
        paths: [{prefix: /api}]
        timeWindows: [{start: 09:00, end: 17:00}]
"""
    window = _one(text).spec.grants[0].http.time_windows[0]  # type: ignore[union-attr]
    assert (window.start, window.end) == ("09:00", "17:00")


def test_line_numbers_point_at_the_field(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(MINIMAL.replace("spec:\n", "spec:\n  identity:\n    x509SvidTtl: soon\n"))
    with pytest.raises(ManifestError) as info:
        load_manifests([path])
    (problem,) = info.value.problems
    assert (problem.line, problem.field) == (6, "spec.identity.x509SvidTtl")


def test_multi_document_files_and_empty_documents(tmp_path: Path) -> None:
    second = MINIMAL.replace("name: minimal", "name: second").replace("minimal-sa", "second-sa")
    (tmp_path / "many.yaml").write_text(f"---\n{MINIMAL}---\n---\n{second}")
    loaded = load_manifests([tmp_path])
    assert [a.name for a in loaded.agents] == ["minimal", "second"]


def test_no_manifest_files_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest files"):
        load_manifests([tmp_path])


@pytest.mark.parametrize(("text", "secs"), [("15m", 900), ("1h30m", 5400), ("365d", 31536000), ("90s", 90)])
def test_durations(text: str, secs: int) -> None:
    assert parse_duration(text) == secs


@pytest.mark.parametrize("text", ["15", "m", "1.5h", "-5m", "0m", "15 m", "1w"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|longer than zero"):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (900, 3600, 86400, 61)] == ["15m", "1h", "1d", "61s"]


def test_example_agents_all_load() -> None:
    loaded = load_manifests(["agents"])
    assert sorted(a.name for a in loaded.agents) == [
        "agent-cortex", "invoice-processor", "ledger-sync", "report-summarizer"]
    assert sorted(s.name for s in loaded.services) == ["inference", "payments-api", "slack-gateway"]
    cortex = loaded.agent("agent-cortex")
    assert cortex is not None
    slack = cortex.manifest.spec.grants[0].http
    assert slack is not None and slack.headers == {"x-slack-channel": "security-alerts"}
    assert (slack.time_windows[0].start, slack.time_windows[0].end) == ("09:00", "17:00")


def test_every_example_manifest_declares_the_schema() -> None:
    for path in Path("agents").glob("*.yaml"):
        assert path.read_text().startswith(
            "# yaml-language-server: $schema=../schema/agent-manifest.schema.json\n"), path
