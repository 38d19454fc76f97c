"""Plain values from the engine's proxies, durations, attribution of resources to agents, policy
config, and a stack's resources as the stack policies see them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.proxy import UnknownValueError

from .tokens import AGENT_LABEL, BOM_KEY, REGISTRATIONS, T

# --------------------------------------------------------------------------- plain values


class _Unknown:
    """A value the engine does not know yet (preview)."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN: Any = _Unknown()


def plain(value: Any) -> Any:
    """Copy policy props (unknown-checking proxies) into dicts/lists; unknowns become UNKNOWN."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key in value:
            try:
                out[key] = plain(value[key])
            except UnknownValueError:
                out[key] = UNKNOWN
        return out
    if isinstance(value, Sequence):
        items: list[Any] = []
        for i in range(len(value)):
            try:
                items.append(plain(value[i]))
            except UnknownValueError:
                items.append(UNKNOWN)
        return items
    return value


def dig(value: Any, *path: str | int) -> Any:
    """``value[p0][p1]...`` or None when any step is missing, unknown or of the wrong shape."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(value, list) or step >= len(value):
                return None
            value = value[step]
        else:
            if not isinstance(value, dict):
                return None
            value = value.get(step)
        if value is UNKNOWN:
            return None
    return value


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def strings(value: Any) -> Iterator[str]:
    """Every string inside a value (dict values and list items, recursively)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


# --------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_DURATION_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w))+$")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600,
                 "d": 86400, "w": 604800}


def seconds(value: Any) -> float | None:
    """Seconds in a duration: an int (seconds), digits, or Go/Vault/ours ("90s", "1h30m", "30d")."""
    if value is None or value is UNKNOWN or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    if not _DURATION_WHOLE.match(text):
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def human(secs: float) -> str:
    """``2592000`` -> ``30d``; ``5400`` -> ``90m``."""
    whole = round(secs)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


# --------------------------------------------------------------------------- attribution


def labels_of(props: Mapping[str, Any]) -> dict[str, Any]:
    """Object labels, falling back to a workload's pod template labels."""
    meta = as_dict(props.get("metadata"))
    found = dict(as_dict(meta.get("labels")))
    template = as_dict(dig(props, "spec", "template", "metadata", "labels"))
    for k, v in template.items():
        found.setdefault(k, v)
    return found


def name_tokens(name: str) -> Iterator[str]:
    """Every run of whole dash-separated tokens in a name (``a-b-c``: a, a-b, a-b-c, b, ...)."""
    parts = name.split("-")
    for i in range(len(parts)):
        for j in range(i + 1, len(parts) + 1):
            yield "-".join(parts[i:j])


def agent_of(
    resource_type: str,
    name: str,
    props: Mapping[str, Any],
    agents: Iterable[str] = (),
    spiffe_ids: Mapping[str, str] | None = None,
) -> str | None:
    """The agent a resource belongs to, if any.

    In order: the ``agentpassport.dev/agent`` label; the SPIFFE ID a registration issues;
    the longest agent name that appears as whole dash-separated tokens in the resource name
    (or its ``metadata.name``).
    """
    label = labels_of(props).get(AGENT_LABEL)
    if isinstance(label, str) and label:
        return label
    if spiffe_ids and resource_type in REGISTRATIONS:
        issued = registration_spiffe_id(resource_type, props)
        owner = next((a for a, sid in spiffe_ids.items() if sid == issued), None)
        if owner is not None:
            return owner
    known = set(agents)
    if not known:
        return None
    best: str | None = None
    meta_name = dig(props, "metadata", "name")
    for candidate in (name, meta_name if isinstance(meta_name, str) else ""):
        for token in name_tokens(candidate):
            if token in known and (best is None or len(token) > len(best)):
                best = token
    return best


def registration_spiffe_id(resource_type: str, props: Mapping[str, Any]) -> str | None:
    """The literal SPIFFE ID a SPIRE registration issues (None for templates or unknowns)."""
    if resource_type == T.CLUSTER_SPIFFE_ID:
        value = dig(props, "spec", "spiffeIDTemplate")
    elif resource_type == T.CLUSTER_STATIC_ENTRY:
        value = dig(props, "spec", "spiffeID")
    else:
        return None
    if not isinstance(value, str) or "{{" in value:
        return None
    return value


def is_node_entry(resource_type: str, props: Mapping[str, Any]) -> bool:
    """A SPIRE node (alias) entry: parented to the server, it names hosts, not workloads."""
    parent = dig(props, "spec", "parentID")
    return resource_type == T.CLUSTER_STATIC_ENTRY and isinstance(parent, str) and parent.endswith("/spire/server")


def find_bom(resources: Iterable[PolicyResource]) -> dict[str, Any] | None:
    """The identity bill of materials the program exports (stack output ``identityBom``).

    Stack policies see the Stack resource with its outputs; a component that registers the
    same key as an output is accepted too.
    """
    for r in resources:
        if r.resource_type != T.STACK and not r.resource_type.startswith("agentpassport:"):
            continue
        try:
            bom = plain(r.props.get(BOM_KEY))
        except UnknownValueError:
            continue
        if isinstance(bom, dict) and isinstance(bom.get("agents"), dict):
            return bom
    return None


def stack_of(urn: str) -> str:
    """``urn:pulumi:<stack>::<project>::...`` -> ``<stack>``."""
    head = urn.split("::", 1)[0]
    return head.split(":", 2)[2] if head.count(":") >= 2 else ""


def agent_prefix(agent: str | None) -> str:
    return f"agent {agent}: " if agent else ""


# --------------------------------------------------------------------------- config


def _schema(**properties: dict[str, Any]) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties=properties)


def _duration(default: str, description: str) -> dict[str, Any]:
    return {"type": "string", "pattern": r"^(\d+[smhd])+$", "default": default,
            "description": description}


def config_of(policy_schema: PolicyConfigSchema | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """Schema defaults overlaid with the configured values."""
    defaults = {k: v["default"] for k, v in (policy_schema.properties if policy_schema else {}).items()
                if "default" in v}
    return {**defaults, **dict(given)}


def _limit(cfg: Mapping[str, Any], key: str) -> float:
    value = seconds(cfg[key])
    if value is None:
        raise ValueError(f"policy config {key}={cfg[key]!r} is not a duration such as 15m or 24h")
    return value




def pod_spec(resource_type: str, props: Mapping[str, Any]) -> dict[str, Any]:
    if resource_type == T.K8S_POD:
        return as_dict(props.get("spec"))
    if resource_type == T.K8S_CRONJOB:
        return as_dict(dig(props, "spec", "jobTemplate", "spec", "template", "spec"))
    return as_dict(dig(props, "spec", "template", "spec"))


def containers(spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in as_list(spec.get(key)):
            if isinstance(c, dict):
                yield c


# --------------------------------------------------------------------------- resource policies

Validate = Callable[[ResourceValidationArgs, ReportViolation], None]


def _props(args: ResourceValidationArgs) -> dict[str, Any]:
    props: dict[str, Any] = plain(args.props)
    return props


def _cfg(args: ResourceValidationArgs | StackValidationArgs, schema: PolicyConfigSchema) -> dict[str, Any]:
    return config_of(schema, args.get_config())


# --------------------------------------------------------------------------- stack policies


@dataclass(frozen=True)
class Res:
    """A stack resource with plain props."""

    type: str
    name: str
    urn: str
    props: dict[str, Any]
    dependencies: tuple[str, ...]


def _resources(args: StackValidationArgs, types: Iterable[str] | None = None) -> list[Res]:
    wanted = set(types) if types is not None else None
    out = []
    for r in args.resources:
        if wanted is not None and r.resource_type not in wanted:
            continue
        out.append(Res(r.resource_type, r.name, r.urn, plain(r.props),
                       tuple(d.urn for d in r.dependencies)))
    return out
