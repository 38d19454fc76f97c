"""Progress on long commands: a spinner (and a bar, when the amount of work is known) on a
terminal; nothing at all otherwise.

Commands wrap each phase in :func:`activity`::

    with activity("rendering artifacts"):
        ...
    with activity("validating", total=len(stacks)) as step:
        for stack in stacks:
            step.advance(f"stack {stack}")

Shown only when both stdout and stderr are terminals, ``CI`` is not set and ``TERM`` is not
``dumb``; drawn on stderr with `rich <https://rich.readthedocs.io>`_, transient (the lines
disappear when the phase ends), so a command's own output is never mixed with it. In CI or
when piped, commands stay quiet and line-oriented. ``PASSPORT_PROGRESS=never`` turns it off
on a terminal too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

_on_screen: list[Any] = []
"""The one rich Progress on screen, if any (nested activities add a line to it)."""


def _isatty(stream: IO[str] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def enabled(environ: Mapping[str, str] | None = None, stdout: IO[str] | None = None,
            stderr: IO[str] | None = None) -> bool:
    """Whether progress is shown: both streams are terminals, not CI, not a dumb terminal."""
    env = os.environ if environ is None else environ
    if env.get("PASSPORT_PROGRESS", "").lower() in {"never", "off", "0", "no"}:
        return False
    if env.get("CI", "").lower() in {"1", "true", "yes"} or env.get("TERM") == "dumb":
        return False
    return _isatty(sys.stdout if stdout is None else stdout) and _isatty(sys.stderr if stderr is None else stderr)


class Step:
    """Handle of one activity: change its text, count work done."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress = progress
        self._task = task

    def update(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def advance(self, description: str | None = None, amount: int = 1) -> None:
        """Count ``amount`` done; ``description`` says what comes next."""
        if self._progress is not None:
            self._progress.advance(self._task, amount)
            if description is not None:
                self._progress.update(self._task, description=description)


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Count(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text("" if task.total is None else f"{int(task.completed)}/{int(task.total)}")

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20), Count(),
                    TimeElapsedColumn(), console=Console(file=sys.stderr), transient=True)


@contextmanager
def activity(description: str, total: int | None = None) -> Iterator[Step]:
    """Show ``description`` (with a bar of ``total`` steps) while the block runs, on a terminal."""
    if not _on_screen and not enabled():
        yield Step()
        return
    owner = not _on_screen
    if owner:
        _on_screen.append(_progress())
        _on_screen[0].start()
    progress = _on_screen[0]
    task = progress.add_task(description, total=total)
    try:
        yield Step(progress, task)
    finally:
        progress.remove_task(task)
        if owner:
            progress.stop()
            _on_screen.clear()
