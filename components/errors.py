"""User-facing errors: every problem names a file, a line where known, a field and what to do.

Nothing here raises a traceback at a user: the CLI and the Pulumi program print
:meth:`PassportError.report` and exit (code 2 / ``pulumi.RunError``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with one input file."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class PassportError(Exception):
    """A set of problems found in user input, reported all at once."""

    kind = "input"

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(set(problems), key=lambda p: (p.file, p.line or 0, p.field, p.message))
        super().__init__(self.report())

    def report(self) -> str:
        lines = [str(p) for p in self.problems]
        noun = "problem" if len(lines) == 1 else "problems"
        return "\n".join([*lines, f"{len(lines)} {noun} found in {self.kind}"])


class ManifestError(PassportError):
    """Problems in agent/service manifests (``agents/*.yaml``)."""

    kind = "agent manifests"


class ConfigError(PassportError):
    """Problems in a stack's configuration (``stacks/Pulumi.<env>.yaml``)."""

    kind = "stack configuration"


class InputError(ConfigError, ManifestError):
    """Problems in both a stack's configuration and the agent manifests, found in one run.

    Both a :class:`ConfigError` and a :class:`ManifestError`, so callers that catch either keep working.
    """

    kind = "stack configuration and agent manifests"


def input_error(problems: Iterable[Problem], config_files: Iterable[str]) -> PassportError:
    """The error for ``problems``: a ConfigError when every one is in a stack file (``config_files``),
    a ManifestError when none is, an InputError when both kinds are there."""
    found = list(problems)
    files = set(config_files)
    in_config = sum(p.file in files for p in found)
    if in_config == len(found):
        return ConfigError(found)
    if in_config == 0:
        return ManifestError(found)
    return InputError(found)
