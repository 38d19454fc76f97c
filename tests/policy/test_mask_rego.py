"""The gateways' decision-log mask (opa/mask.rego, rendered with the shared credential query
pattern) evaluated by the real OPA binary: credentials in the path's query string are masked, the
rest of the path is kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.render import credentials, rego
from tests.policy.test_rego_policy import run_opa

PATH = "/orders/7?access_token=secret&page=2"


def _mask(tmp_path: Path, request_http: dict[str, Any]) -> list[Any]:
    """``data.system.log.mask`` for a decision event whose input carries ``request_http`` (a mask rule's
    input is the whole event, the request under ``input.input``)."""
    (tmp_path / "mask.rego").write_text(rego.MASK_POLICY, encoding="utf-8")
    event = {"decision_id": "d1", "input": {"attributes": {"request": {"http": request_http}}}}
    proc = run_opa("eval", "--format", "json", "--stdin-input", "-d", str(tmp_path / "mask.rego"),
                   "data.system.log.mask", stdin=json.dumps(event))
    assert proc.returncode == 0, proc.stderr
    value: list[Any] = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    return value


def test_mask_upserts_the_path_and_path_header_with_the_credential_masked(tmp_path: Path) -> None:
    mask = _mask(tmp_path, {"method": "GET", "path": PATH,
                            "headers": {":path": PATH, "x-envoy-original-path": "/o?api_key=k&x=1", "host": "h"}})
    upserts = {m["path"]: m for m in mask if isinstance(m, dict)}
    assert upserts == {
        "/input/attributes/request/http/path":
            {"op": "upsert", "path": "/input/attributes/request/http/path",
             "value": "/orders/7?access_token=[masked]&page=2"},
        "/input/attributes/request/http/headers/:path":
            {"op": "upsert", "path": "/input/attributes/request/http/headers/:path",
             "value": "/orders/7?access_token=[masked]&page=2"},
        "/input/attributes/request/http/headers/x-envoy-original-path":
            {"op": "upsert", "path": "/input/attributes/request/http/headers/x-envoy-original-path",
             "value": "/o?api_key=[masked]&x=1"},
    }
    # the erased fields are still erased
    assert "/input/parsed_query" in mask and "/input/attributes/request/http/headers/authorization" in mask


def test_mask_leaves_a_path_without_credentials_alone(tmp_path: Path) -> None:
    mask = _mask(tmp_path, {"method": "GET", "path": "/orders/7?page=2", "headers": {":path": "/orders/7?page=2"}})
    assert not [m for m in mask if isinstance(m, dict)]


def test_mask_rego_uses_the_shared_pattern_not_a_copy() -> None:
    assert "@QUERY_MASK" not in rego.MASK_POLICY
    assert json.dumps(credentials.QUERY_MASK_PATTERN) in rego.MASK_POLICY
    assert json.dumps(credentials.QUERY_MASK_REPLACEMENT_GO) in rego.MASK_POLICY
    source = (Path(rego.__file__).parent.parent / "opa" / "mask.rego").read_text(encoding="utf-8")
    assert "token|secret" not in source  # the file holds only the placeholder


def test_rendered_mask_policy_is_opa_fmt_and_check_strict_clean(tmp_path: Path) -> None:
    (tmp_path / "mask.rego").write_text(rego.MASK_POLICY, encoding="utf-8")
    fmt = run_opa("fmt", "--fail", str(tmp_path / "mask.rego"))
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
    check = run_opa("check", "--strict", str(tmp_path))
    assert check.returncode == 0, check.stderr
