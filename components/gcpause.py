"""Bulk work that keeps everything it allocates alive (loading, resolving, rendering a fleet).

Each automatic cyclic-GC collection rescans every live object, so a load of N manifests that
keeps N models alive became quadratic in N. Nothing such work creates is cyclic garbage, so
collection waits until it is done.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the duration of the block (re-entrant)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
