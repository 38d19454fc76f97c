"""Paths, header values and DNS names a gateway, Vault or a TLS client would read differently are
refused at validation, naming the field (items 8, 9 and 11 of the identity review)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from components.cli import main
from components.errors import ManifestError, Problem
from components.manifest.loader import load_manifests
from tests.conftest import ROOT

AGENT = """\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata: {{name: probe, team: qa, owner: qa@acme-corp.net}}
spec:
  platform:
    kubernetes: {{namespace: agents, serviceAccount: probe}}
{spec}"""


def load(tmp_path: Path, spec: str) -> list[Problem]:
    path = tmp_path / "probe.yaml"
    path.write_text(AGENT.format(spec=spec))
    try:
        load_manifests([path])
    except ManifestError as exc:
        return exc.problems
    return []


def vault(path: str) -> str:
    return f"  grants:\n    - vault: {{path: '{path}', capabilities: [read]}}\n"


def http(path: str, kind: str = "exact") -> str:
    return f"  grants:\n    - http: {{service: s, methods: [GET], paths: [{{{kind}: '{path}'}}]}}\n"


# --------------------------------------------------------------------------- 8. Vault paths


@pytest.mark.parametrize("path", ["secret/data/../../sys/policies/acl/x", "./sys/policies/acl/x",
                                  "secret/./data/x", "..", "secret/..", "secret/../*"])
def test_vault_paths_with_dot_segments_are_refused(tmp_path: Path, path: str) -> None:
    (p,) = load(tmp_path, vault(path))
    assert p.field == "spec.grants[0].vault.path" and p.line == 8
    assert "segment; write the path without '.' or '..' segments" in p.message


@pytest.mark.parametrize("path", ["secret/data/.hidden", "secret/data/x..y", "secret/data/team/*", "a.b/c"])
def test_vault_paths_with_dots_inside_segments_are_fine(tmp_path: Path, path: str) -> None:
    assert load(tmp_path, vault(path)) == []


def test_validate_refuses_the_sys_escape_it_used_to_accept(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    agents = tmp_path / "agents"
    shutil.copytree(ROOT / "agents", agents)
    (agents / "zz-climber.yaml").write_text(AGENT.format(spec=vault("secret/data/../../sys/policies/acl/x")))
    assert main(["validate", str(agents)]) == 2
    assert "spec.grants[0].vault.path: 'secret/data/../../sys/policies/acl/x' has a '..' segment" in (
        capsys.readouterr().err)


# --------------------------------------------------------------------------- 9. HTTP paths


@pytest.mark.parametrize(("path", "suggestion"), [
    ("/api/../admin", "/admin"), ("/api/./admin", "/api/admin"), ("//admin", "/admin"),
    ("/api//x", "/api/x"), ("/api/x/..", "/api/"), ("/..", "/"), ("/api/./", "/api/"),
])
@pytest.mark.parametrize("kind", ["exact", "prefix"])
def test_non_normalized_http_paths_are_refused_with_the_normal_form(tmp_path: Path, path: str, suggestion: str,
                                                                    kind: str) -> None:
    (p,) = load(tmp_path, http(path, kind))
    assert p.field == f"spec.grants[0].http.paths[0].{kind}"
    assert "is not a normalized path" in p.message and "could never match" in p.message
    assert p.message.endswith(f"write {suggestion!r}")


@pytest.mark.parametrize(("path", "reason"), [
    ("/api/%2e%2e/admin", "percent-encodes '.'"), ("/api/%2E/x", "percent-encodes '.'"),
    ("/%41pi", "percent-encodes 'A'"), ("/a%2Fb", "escaped slash"), ("/a%5cb", "escaped slash"),
    ("/a%zz", "not followed by two hex digits"), ("/a%", "not followed by two hex digits"),
])
def test_escapes_the_gateway_rewrites_or_rejects_are_refused(tmp_path: Path, path: str, reason: str) -> None:
    (p,) = load(tmp_path, http(path))
    assert p.field == "spec.grants[0].http.paths[0].exact" and reason in p.message


@pytest.mark.parametrize("path", ["/", "/api/", "/api/x.y", "/a..b", "/a%20b", "/~user", "/v1/*", "/a/.well-known"])
def test_normalized_http_paths_are_fine(tmp_path: Path, path: str) -> None:
    assert load(tmp_path, http(path)) == []


# --------------------------------------------------------------------------- 11. header values and DNS names


@pytest.mark.parametrize(("escaped", "char"), [("\\r\\nx-admin: 1", "\\r"), ("a\\nb", "\\n"), ("a\\0b", "\\x00"),
                                               ("a\\x7fb", "\\x7f")])
def test_header_values_with_control_characters_are_refused(tmp_path: Path, escaped: str, char: str) -> None:
    spec = ("  grants:\n    - http: {service: s, methods: [GET], paths: [{exact: /x}],\n"
            f'              headers: {{x-h: "{escaped}"}}}}\n')
    (p,) = load(tmp_path, spec)
    assert p.field == "spec.grants[0].http.headers.x-h" and p.line == 9
    assert f"control character '{char}'" in p.message


def test_header_values_with_tabs_and_spaces_are_fine(tmp_path: Path) -> None:
    spec = ('  grants:\n    - http: {service: s, methods: [GET], paths: [{exact: /x}], '
            'headers: {x-h: "a\\tb c"}}\n')
    assert load(tmp_path, spec) == []


@pytest.mark.parametrize(("name", "reason"), [
    ("a..b", "has an empty label"), ("a." + "b" * 64, "a label of 64 characters"),
    (".".join(["a" * 63] * 4), "has 255 characters"),
])
def test_bad_dns_names_are_refused(tmp_path: Path, name: str, reason: str) -> None:
    (p,) = load(tmp_path, f"  identity: {{dnsNames: [ok.example.com, '{name}']}}\n")
    assert p.field == "spec.identity.dnsNames[1]" and reason in p.message


def test_dns_labels_of_63_characters_are_fine(tmp_path: Path) -> None:
    assert load(tmp_path, f"  identity: {{dnsNames: ['{'a' * 63}.example.com']}}\n") == []
