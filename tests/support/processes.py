"""Stopping the servers tests start: politely, then firmly, always bounded in time."""

from __future__ import annotations

import subprocess
from typing import Any


def stop(proc: subprocess.Popen[Any], grace_s: float = 10) -> None:
    """SIGTERM, wait up to ``grace_s``; then SIGKILL and wait again (bounded)."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
