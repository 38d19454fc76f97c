"""audit-collector-no-keys: a log collector's config carries no AWS key.

The audit collector (components/render/audit.py) writes to S3 with sessions from IRSA, EKS Pod
Identity or IAM Roles Anywhere. A collector config (an OpenTelemetry Collector config, or the AWS
shared config beside it), in a ConfigMap or a Secret, with ``access_key``/``secret_key``/
``aws_secret_access_key``/... is refused, whether the value is a literal or a ``${env:...}``
reference: a reference to a static key is still a static key. The config is parsed (YAML, so
JSON on one line too) and every key at any depth is looked at, not lines; a Secret's ``data`` is
base64-decoded first. So is a collector container that sets ``AWS_ACCESS_KEY_ID``/
``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, from a literal or a Secret, or that takes its
whole environment from a Secret (``envFrom: secretRef``), where such variables would hide.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from typing import Any

import yaml
from pulumi_policy import ReportViolation, ResourceValidationArgs

from .tokens import WORKLOADS, T
from .values import _props, as_dict, as_list, containers, labels_of, pod_spec

COLLECTOR_NAME = "agentpassport-audit-collector"
"""components/render/audit.py COLLECTOR (the pack imports nothing from the project; the tests keep it equal)."""
KEY_SETTINGS = frozenset({"access_key", "secret_key", "session_token", "access_key_id", "secret_access_key",
                          "aws_access_key_id", "aws_secret_access_key", "aws_session_token"})
"""Config keys (any case, ``-`` or ``_``) whose value is a static AWS key."""
_COLLECTOR_SECTIONS = frozenset({"receivers", "exporters", "processors", "extensions", "service"})
_COLLECTOR_CONFIG = re.compile(r"(?m)^\s*[\"']?(receivers|exporters|service)[\"']?\s*:")
_KEY_SETTING = re.compile(r"""(?im)^[\s"'-]*([a-z_-]+)["']?\s*[:=]\s*["']?(?=[^\s"'#])""")
_AWS_SHARED_CONFIG = re.compile(r"(?m)^\s*\[(default|profile [^\]]+)\]\s*$")
KEY_ENV = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})


def _key_name(key: object) -> str:
    return str(key).strip().lower().replace("-", "_")


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) of a parsed document, at any depth."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield _key_name(k), v
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def _set(value: Any) -> bool:
    """A key setting with a value (an empty one sets nothing)."""
    return value is not None and value not in ("", {}, [])


def _line_settings(text: str) -> set[str]:
    """Key settings found line by line (INI, or a config YAML cannot read)."""
    return {name for m in _KEY_SETTING.finditer(text) if (name := _key_name(m.group(1))) in KEY_SETTINGS}


def collector_key_settings(text: str) -> list[str]:
    """The key settings in a collector config or AWS shared config (empty for anything else)."""
    if _AWS_SHARED_CONFIG.search(text):
        return sorted(_line_settings(text))
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        # unreadable as YAML/JSON: still a collector config if it looks like one, read by lines
        return sorted(_line_settings(text)) if _COLLECTOR_CONFIG.search(text) else []
    if not isinstance(doc, dict) or not _COLLECTOR_SECTIONS & {_key_name(k) for k in doc}:
        return []
    return sorted({k for k, v in _walk(doc) if k in KEY_SETTINGS and _set(v)})


def _decoded(value: Any) -> str | None:
    """A Secret's ``data`` value as text (None when it is not base64 of UTF-8)."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _config_values(resource_type: str, props: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(``data[key]`` / ``stringData[key]``, text) of a ConfigMap or Secret."""
    for field in ("data", "stringData"):
        for k, v in sorted(as_dict(props.get(field)).items()):
            text = _decoded(v) if resource_type == T.K8S_SECRET and field == "data" else v
            if isinstance(text, str):
                yield f"{field}[{k}]", text


def _is_collector(props: dict[str, Any], container: dict[str, Any]) -> bool:
    if labels_of(props).get("app.kubernetes.io/name") == COLLECTOR_NAME:
        return True
    image = str(container.get("image") or "").lower()
    return "opentelemetry-collector" in image or "otelcol" in image


def _audit_collector_no_keys(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    if t in (T.K8S_CONFIGMAP, T.K8S_SECRET):
        found = [f"{where}: {', '.join(keys)}" for where, text in _config_values(t, _props(args))
                 if (keys := collector_key_settings(text))]
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
        secrets = sorted({str(as_dict(as_dict(e).get("secretRef")).get("name"))
                          for e in as_list(c.get("envFrom")) if as_dict(e).get("secretRef") is not None})
        if secrets:
            report(f"collector container {c.get('name')!r} of {args.name!r} takes its environment from "
                   f"Secret {', '.join(repr(s) for s in secrets)} (envFrom secretRef), where AWS_* keys would "
                   "hide: set the variables it needs one by one", None)
