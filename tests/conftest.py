"""Shared fixtures: the repository root, and the program's resource graph per stack (mocks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from components.mockrun import Graph, run_program

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("dev", "staging", "prod")
_GRAPHS: dict[str, Graph] = {}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run from the repository root, as a user would run `passport`/`pulumi`."""
    monkeypatch.chdir(ROOT)


@pytest.fixture
def stack_graph() -> Callable[[str], Graph]:
    """Run __main__.py under mocks for a stack (once per session per stack) and return its graph."""

    def get(stack: str) -> Graph:
        if stack not in _GRAPHS:
            _GRAPHS[stack] = run_program(stack, ROOT)
        return _GRAPHS[stack]

    return get
