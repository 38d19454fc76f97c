"""audit-collector-no-keys: a log collector's config carries no AWS key.

The audit collector (components/render/audit.py) writes to S3 with sessions from IRSA, EKS Pod
Identity or IAM Roles Anywhere. A collector config (an OpenTelemetry Collector config, or the AWS
shared config beside it) with ``access_key``/``secret_key``/``aws_secret_access_key`` is refused,
whether the value is a literal or a ``${env:...}`` reference: a reference to a static key is still
a static key. So is a collector container that sets ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``, from a literal or a Secret.
"""

from __future__ import annotations

import re
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .tokens import WORKLOADS, T
from .values import _props, as_dict, as_list, containers, labels_of, pod_spec

COLLECTOR_NAME = "agentpassport-audit-collector"
"""components/render/audit.py COLLECTOR (the pack imports nothing from the project; the tests keep it equal)."""
_KEY_SETTING = re.compile(
    r"""(?im)^[\s"'-]*(access_key|secret_key|session_token|aws_access_key_id|aws_secret_access_key|aws_session_token)"""
    r"""["']?\s*[:=]\s*["']?(?=[^\s"'#])""")
_COLLECTOR_CONFIG = re.compile(r"(?m)^(receivers|exporters|service)\s*:")
_AWS_SHARED_CONFIG = re.compile(r"(?m)^\s*\[(default|profile [^\]]+)\]\s*$")
KEY_ENV = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})


def collector_key_settings(text: str) -> list[str]:
    """The key settings in a collector config or AWS shared config (empty for anything else)."""
    if not (_COLLECTOR_CONFIG.search(text) or _AWS_SHARED_CONFIG.search(text)):
        return []
    return sorted({m.group(1).lower() for m in _KEY_SETTING.finditer(text)})


def _is_collector(props: dict[str, Any], container: dict[str, Any]) -> bool:
    if labels_of(props).get("app.kubernetes.io/name") == COLLECTOR_NAME:
        return True
    image = str(container.get("image") or "").lower()
    return "opentelemetry-collector" in image or "otelcol" in image


def _audit_collector_no_keys(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    if t == T.K8S_CONFIGMAP:
        data = as_dict(_props(args).get("data"))
        found = [f"data[{k}]: {', '.join(keys)}" for k, v in sorted(data.items()) if isinstance(v, str)
                 if (keys := collector_key_settings(v))]
        if found:
            report(f"collector config {args.name!r} carries AWS keys: {'; '.join(found)}", None)
        return
    if t not in WORKLOADS:
        return
    props = _props(args)
    for c in containers(pod_spec(t, props)):
        if not _is_collector(props, c):
            continue
        names = sorted({str(as_dict(e).get("name")) for e in as_list(c.get("env"))} & KEY_ENV)
        if names:
            report(f"collector container {c.get('name')!r} of {args.name!r} sets {', '.join(names)}", None)
