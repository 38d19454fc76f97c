"""Literal credentials: keys, tokens, passwords and PEM private keys in resource values and script text
(no-literal-credentials).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .tokens import WORKLOADS, T
from .values import _cfg, _props, _schema, agent_of, agent_prefix, as_dict, as_list, containers, pod_spec

# --------------------------------------------------------------------------- literal credentials

_AWS_KEY_ID = re.compile(r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
_PEM_PRIVATE = re.compile(r"-----BEGIN ((RSA|EC|DSA|OPENSSH|ENCRYPTED) )?PRIVATE KEY-----")
_KNOWN_TOKENS = re.compile(
    r"(ghp_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|hv[sb]\.[A-Za-z0-9_-]{20,}|sk-[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{35}"
    r"|glpat-[A-Za-z0-9_-]{20})"
)
_SCRIPT_ASSIGNMENT = re.compile(
    r"(?i)(\$?[A-Za-z0-9_-]*(?:password|passwd|secret|token|api_?key|access_?key)"
    r"[A-Za-z0-9_-]*)\s*[:=]\s*([\"'])(?!\$|\{\{|\$\{)([^\"'\r\n]{4,})\2"
)
_SECURE_STRING = re.compile(
    r"(?i)ConvertTo-SecureString\s+(?:-String\s+)?([\"'])[^\"'\r\n]+\1\s+(?:-AsPlainText|-Force)"
)
_CLI_SECRET_FLAG = re.compile(r"(?i)(--?(?:password|passwd|secret|token|api-?key)[= ])(?![$\"'{])(\S{4,})")
_URL_CREDENTIALS = re.compile(r"(?:^|://)([^:/@\s]+):([^@\s/]+)@", re.IGNORECASE)
"""user:password@ in a connection URL: ``scheme://user:pw@host`` or a Go DSN ``user:pw@tcp(host)``."""
_REFERENCE = re.compile(r"^(\$\(|\$\{|\{\{|/|file://|arn:|vault:|secretsmanager:|ssm:|env:|ref\+)")
_TOKENISH = re.compile(r"^[A-Za-z0-9+/=_-]+$")


def shannon_entropy(text: str) -> float:
    """Bits per character."""
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def credential_name(name: str, ignored_suffixes: Sequence[str]) -> bool:
    """``DB_PASSWORD``, ``api-token``, ``OPENAI_API_KEY`` — but not ``TOKEN_PATH``."""
    upper = name.upper().replace("-", "_").replace(".", "_")
    if any(upper.endswith(s.upper()) for s in ignored_suffixes):
        return False
    if re.search(r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|APIKEY|API_KEY|CREDENTIAL|PRIVATE_?KEY", upper):
        return True
    return upper.endswith("_KEY") or upper == "KEY"


def literal_value(value: Any) -> str | None:
    """A literal string that could be a credential (not a reference, flag or number)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or text.lower() in ("true", "false", "yes", "no", "none", "null", "changeme-not-used"):
        return None
    if _REFERENCE.match(text) or text.isdigit():
        return None
    return text


def high_entropy(text: str, cfg: Mapping[str, Any]) -> bool:
    """A single random-looking token (API key, secret) rather than words or identifiers."""
    if len(text) < int(cfg["minEntropyLength"]) or not _TOKENISH.match(text):
        return False
    classes = sum(bool(re.search(p, text)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]"))
    return classes >= 2 and shannon_entropy(text) >= float(cfg["entropyThreshold"])


def text_findings(text: str) -> list[str]:
    """Credential patterns inside free text (scripts, configs, documents)."""
    found: list[str] = []
    if _AWS_KEY_ID.search(text):
        found.append("an AWS access key id")
    if _PEM_PRIVATE.search(text):
        found.append("a PEM private key")
    token = _KNOWN_TOKENS.search(text)
    if token:
        found.append(f"an API token ({token.group(0)[:6]}...)")
    for m in _SCRIPT_ASSIGNMENT.finditer(text):
        found.append(f"a literal assigned to {m.group(1)}")
    if _SECURE_STRING.search(text):
        found.append("ConvertTo-SecureString of a literal")
    for m in _CLI_SECRET_FLAG.finditer(text):
        found.append(f"a literal passed to {m.group(1).strip('= ')}")
    for m in _URL_CREDENTIALS.finditer(text):
        if m.group(2) not in ("{{password}}", "{{ password }}"):
            found.append("credentials embedded in a URL")
    return sorted(set(found))


def keyed_findings(key: str, value: Any, cfg: Mapping[str, Any]) -> list[str]:
    """Findings for one named value (env var, ConfigMap key, SSM parameter)."""
    text = literal_value(value)
    if text is None:
        return []
    found = text_findings(text)
    if credential_name(key, cfg["ignoredNameSuffixes"]) and len(text) >= int(cfg["minLiteralLength"]):
        found.append(f"{key} is set to a literal")
    elif "\n" not in text and high_entropy(text, cfg):
        found.append(f"{key} holds a high-entropy literal")
    return found
# no-literal-credentials ----------------------------------------------------------

LITERALS_SCHEMA = _schema(
    entropyThreshold={"type": "number", "default": 4.0, "minimum": 0,
                      "description": "Shannon entropy (bits/char) above which a single token "
                                     "counts as a random secret."},
    minEntropyLength={"type": "integer", "default": 20, "minimum": 8,
                      "description": "Shortest token the entropy test looks at."},
    minLiteralLength={"type": "integer", "default": 4, "minimum": 1,
                      "description": "Shortest literal a credential-named variable may not hold."},
    ignoredNameSuffixes={
        "type": "array", "items": {"type": "string"},
        "default": ["_FILE", "_PATH", "_DIR", "_URL", "_ADDR", "_NAME", "_REF", "_ARN", "_MOUNT",
                    "_ROLE", "_AUDIENCE", "_TTL", "_ENDPOINT", "_SOCKET", "_TYPE", "_MODE",
                    "_HEADER", "_ID_CLAIM"],
        "description": "Names ending like this hold references or settings, not credentials.",
    },
)


def _no_literal_credentials(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    if t not in WORKLOADS and t not in (T.K8S_CONFIGMAP, T.SSM_DOCUMENT, T.SSM_ASSOCIATION, T.S3_OBJECT):
        return
    props = _props(args)
    cfg = _cfg(args, LITERALS_SCHEMA)
    findings: list[str] = []
    if t in WORKLOADS:
        for c in containers(pod_spec(t, props)):
            cname = c.get("name", "?")
            for e in as_list(c.get("env")):
                if isinstance(e, dict) and isinstance(e.get("name"), str) and "value" in e:
                    findings += [f"container {cname}: {f}" for f in keyed_findings(e["name"], e["value"], cfg)]
            for arg in [*as_list(c.get("command")), *as_list(c.get("args"))]:
                if isinstance(arg, str):
                    findings += [f"container {cname} arguments: {f}" for f in text_findings(arg)]
    elif t == T.K8S_CONFIGMAP:
        for key, value in sorted(as_dict(props.get("data")).items()):
            findings += [f"data[{key}]: {f}" for f in keyed_findings(key, value, cfg)]
    elif t == T.SSM_ASSOCIATION:
        for key, value in sorted(as_dict(props.get("parameters")).items()):
            findings += [f"parameter {key}: {f}" for f in keyed_findings(key, value, cfg)]
    elif t == T.SSM_DOCUMENT:
        content = props.get("content")
        if isinstance(content, str):
            findings += [f"document content: {f}" for f in text_findings(content)]
    elif t == T.S3_OBJECT:
        object_key, body = props.get("key"), props.get("content")
        if (isinstance(object_key, str) and object_key.lower().endswith((".ps1", ".psm1", ".mof"))
                and isinstance(body, str)):
            findings += [f"script {object_key}: {f}" for f in text_findings(body)]
    if findings:
        report(f"{agent_prefix(agent_of(t, args.name, props))}{args.name!r} contains "
               + "; ".join(sorted(set(findings))), None)
