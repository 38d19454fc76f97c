"""Resource policy on gMSA DSC scripts: the password interval they create accounts with."""

from __future__ import annotations

import re
from collections.abc import Iterator

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .tokens import T
from .values import _cfg, _props, _schema, agent_of, agent_prefix

# gmsa-password-interval ------------------------------------------------------------------

GMSA_INTERVAL_SCHEMA = _schema(maxGmsaPasswordIntervalDays={
    "type": "integer", "default": 1, "minimum": 1,
    "description": "Longest gMSA password interval (days) a DSC script may create an account with.",
})

# New-ADServiceAccount -ManagedPasswordIntervalInDays 30, or a splatted table entry
# ManagedPasswordIntervalInDays = [int]'30' (the rendered DSC script).
_INTERVAL = re.compile(r"(?i)-?ManagedPasswordIntervalInDays\s*[=:]?\s*(?:\[int\])?\s*['\"]?(\d+)")


def intervals(text: str) -> Iterator[int]:
    """Every gMSA password interval a PowerShell text creates accounts with."""
    for match in _INTERVAL.finditer(text):
        yield int(match.group(1))


def _gmsa_password_interval(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in (T.SSM_DOCUMENT, T.S3_OBJECT):
        return
    props = _props(args)
    text = props.get("content")
    if not isinstance(text, str):
        return
    limit = int(_cfg(args, GMSA_INTERVAL_SCHEMA)["maxGmsaPasswordIntervalDays"])
    above = sorted({days for days in intervals(text.replace("\\\\", "\\")) if days > limit})
    if above:
        report(f"{agent_prefix(agent_of(args.resource_type, args.name, props))}{args.name!r} creates a gMSA "
               f"whose password changes every {above[-1]} days, above the stack's limit of {limit} "
               "(limits.maxGmsaPasswordIntervalDays)", None)
