"""``passport check``: the policy pack, evaluated offline against the program's resource graph.

The real ``__main__.py`` runs under Pulumi's mocks (:func:`components.mockrun.run_program`);
every captured resource becomes a public ``pulumi_policy`` argument object
(``ResourceValidationArgs`` per resource, one ``StackValidationArgs`` with every resource, the
Stack resource carrying the stack outputs as the engine gives them) and each policy of
``policy-packs/no-static-credentials/policies/`` — the very objects the pack's
``__main__.py`` serves to ``pulumi preview --policy-pack`` — validates them directly. No
engine, no backend, no cloud credentials, no network.

The stack's ``limits`` (and SPIRE's ``caTtl``, the Windows credspec switch) become the pack's
config, so the pack enforces exactly what the stack promises; ``--policy-config`` overlays a
file in the format of ``pulumi preview --policy-pack-config`` (enforcement levels included).
Violations are attributed to the agent manifest they come from where possible.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pulumi
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import unknown_checking_proxy

from components import PROJECT
from components.compile import Plans, compile_plans
from components.config import StackConfig, stack_file
from components.errors import ConfigError, Problem
from components.mockrun import Captured, Graph, run_program
from components.platform_model import Platform, load_platform

PACK_DIR = Path(__file__).resolve().parent.parent / "policy-packs" / "no-static-credentials"
SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")
LEVELS = {level.value for level in EnforcementLevel}
# Where in a manifest a violation of a policy points (else the agent's metadata.name).
POLICY_FIELDS: dict[str, tuple[str | int, ...]] = {
    "svid-ttl-limits": ("spec", "identity"),
    "grants-enforced": ("spec", "grants"),
    "one-identity-per-agent": ("spec", "identity"),
    "vault-credential-ttl-limits": ("spec", "grants"),
}

Policy = ResourceValidationPolicy | StackValidationPolicy


@cache
def load_pack() -> ModuleType:
    """Import the pack's ``policies`` package (its folder is not a Python package name, so it is
    loaded from its path; ``__main__.py`` imports it as ``policies``, with the pack's folder on
    ``sys.path``)."""
    name = "agentpassport_policies"
    package = PACK_DIR / "policies"
    spec = importlib.util.spec_from_file_location(name, package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    if spec is None or spec.loader is None:  # pragma: no cover - the package ships with the repo
        raise ImportError(f"cannot load {package}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def policies() -> list[Policy]:
    found: list[Policy] = load_pack().POLICIES
    return found


# --------------------------------------------------------------------------- config


def stack_policy_config(cfg: StackConfig) -> dict[str, Any]:
    """The pack config a stack implies: its limits are the pack's limits."""
    lim = cfg.limits
    return {
        "svid-ttl-limits": {"maxX509SvidTtl": lim.max_x509_svid_ttl, "maxJwtSvidTtl": lim.max_jwt_svid_ttl,
                            "caTtl": cfg.spire.ca_ttl},
        "vault-credential-ttl-limits": {"maxDbCredentialTtl": lim.max_db_credential_ttl},
        "leaf-lifetime-limit": {"maxLeafLifetime": lim.max_leaf_lifetime},
        "resource-count-ceiling": {"maxResources": lim.max_resources},
        "gmsa-no-stored-credentials": {"allowStoredCredentials": cfg.windows.allow_stored_credential_specs},
        "gmsa-password-interval": {"maxGmsaPasswordIntervalDays": lim.max_gmsa_password_interval_days},
    }


def read_policy_config(path: Path, known: Iterable[Policy]) -> dict[str, Any]:
    """A ``--policy-pack-config`` JSON file, checked against the policies' schemas."""
    file = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([Problem(file, None, "", f"cannot read policy config: {exc}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, None, "", "a policy config is a JSON object keyed by policy name")])
    by_name = {p.name: p for p in known}
    problems: list[Problem] = []
    for key, entry in data.items():
        if key != "all" and key not in by_name:
            problems.append(Problem(file, None, key, f"no such policy (known: {', '.join(sorted(by_name))})"))
            continue
        if isinstance(entry, str):
            if entry not in LEVELS:
                problems.append(Problem(file, None, key, f"enforcement level must be one of {sorted(LEVELS)}"))
            continue
        if not isinstance(entry, dict):
            problems.append(Problem(file, None, key, "must be an enforcement level or an object"))
            continue
        schema = by_name[key].config_schema if key != "all" else None
        props = schema.properties if schema else {}
        for prop, value in entry.items():
            if prop == "enforcementLevel":
                if value not in LEVELS:
                    problems.append(Problem(file, None, f"{key}.{prop}", f"must be one of {sorted(LEVELS)}"))
            elif prop not in props:
                problems.append(Problem(file, None, f"{key}.{prop}",
                                        f"unknown property (known: {', '.join(sorted(props)) or 'none'})"))
            elif not _type_ok(value, props[prop]):
                problems.append(Problem(file, None, f"{key}.{prop}", f"must be of type {props[prop]['type']}"))
    if problems:
        raise ConfigError(problems)
    return data


def _type_ok(value: Any, schema: Mapping[str, Any]) -> bool:
    """``value`` has the JSON type the property's schema declares (JSON Schema draft 4's rules, by
    ``jsonschema``: a boolean is not a number and 1.0 is not an integer); no type: anything goes."""
    import jsonschema

    declared = schema.get("type")
    return not declared or bool(jsonschema.Draft4Validator({"type": declared}).is_valid(value))


def merge_config(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win, per policy and per property."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, entry in layer.items():
            values = {"enforcementLevel": entry} if isinstance(entry, str) else dict(entry)
            out[key] = {**out.get(key, {}), **values}
    return out


def level_of(policy: Policy, config: Mapping[str, Any]) -> str:
    """Per-policy level, else the ``all`` level, else the policy's own (Pulumi's precedence)."""
    for key in (policy.name, "all"):
        entry = config.get(key)
        if isinstance(entry, dict) and "enforcementLevel" in entry:
            return str(entry["enforcementLevel"])
    return (policy.enforcement_level or EnforcementLevel.ADVISORY).value


def properties_of(policy: Policy, config: Mapping[str, Any]) -> dict[str, Any]:
    entry = config.get(policy.name) or {}
    return {k: v for k, v in entry.items() if k != "enforcementLevel"}


def effective_config(cfg: StackConfig, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every policy's enforcement level and full config (defaults filled in) for one stack."""
    pack = load_pack()
    merged = merge_config(stack_policy_config(cfg), overrides or {})
    out: dict[str, Any] = {}
    for p in policies():
        out[p.name] = {"enforcementLevel": level_of(p, merged),
                       **pack.config_of(p.config_schema, properties_of(p, merged))}
    return out


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Violation:
    """One policy violation, attributed to a manifest where possible."""

    policy: str
    level: str
    severity: str
    description: str
    message: str
    remediation: str
    urn: str | None
    resource_type: str | None
    resource_name: str | None
    agent: str | None
    file: str
    line: int | None

    @property
    def mandatory(self) -> bool:
        return self.level == "mandatory"


@dataclass
class CheckResult:
    stack: str
    violations: list[Violation]
    resources: int
    policies: list[Policy] = field(repr=False)
    config: dict[str, Any] = field(repr=False)

    @property
    def mandatory(self) -> int:
        return sum(v.mandatory for v in self.violations)


@dataclass(frozen=True)
class RawViolation:
    policy: Policy
    level: str
    message: str
    urn: str | None


def engine_view(value: Any) -> Any:
    """Props as the analyzer sees them: secrets unwrapped to their plain values."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG[0]) == SECRET_SIG[1]:
            return engine_view(value.get("value"))
        return {k: engine_view(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [engine_view(v) for v in value]
    if isinstance(value, pulumi.Resource):  # resource references travel as URNs
        return str(getattr(value, "urn", ""))
    return value


def stack_urn(stack: str) -> str:
    return f"urn:pulumi:{stack}::{PROJECT}::pulumi:pulumi:Stack::{PROJECT}-{stack}"


_NO_TIMEOUTS = PolicyCustomTimeouts(0, 0, 0)


def _options(parent: str) -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], _NO_TIMEOUTS, [], parent or None)


def policy_resources(graph: Graph) -> tuple[list[PolicyResource], dict[str, Captured]]:
    """Every captured resource (and the Stack, holding the outputs) as a PolicyResource."""
    stack = PolicyResource("pulumi:pulumi:Stack", unknown_checking_proxy(engine_view(graph.outputs)),
                           stack_urn(graph.stack), f"{PROJECT}-{graph.stack}", _options(""), None, None, [], {})
    by_urn: dict[str, PolicyResource] = {stack.urn: stack}
    captured: dict[str, Captured] = {}
    ordered = [stack]
    for r in graph.resources:
        pr = PolicyResource(r.type, unknown_checking_proxy(engine_view(r.inputs)), r.urn, r.name,
                            _options(r.parent), None, None, [], {})
        by_urn[r.urn] = pr
        captured[r.urn] = r
        ordered.append(pr)
    for r in graph.resources:
        pr = by_urn[r.urn]
        pr.parent = by_urn.get(r.parent)
        pr.dependencies = [by_urn[d] for d in r.dependencies if d in by_urn]
        provider_urn = r.provider.split("::", 4)
        prov = by_urn.get("::".join(provider_urn[:4])) if r.provider else None
        if prov is not None:
            pr.provider = PolicyProviderResource(prov.resource_type, prov.props, prov.urn, prov.name)
    return ordered, captured


def evaluate(graph: Graph, config: Mapping[str, Any], selected: Iterable[Policy] | None = None) -> list[RawViolation]:
    """Run every policy (resource policies per resource, stack policies once) on the graph."""
    resources, _ = policy_resources(graph)
    found: list[RawViolation] = []
    for policy in selected if selected is not None else policies():
        level = level_of(policy, config)
        if level == "disabled":
            continue
        level = "mandatory" if level == "remediate" else level
        props = properties_of(policy, config)

        def report(message: str, urn: str | None = None, *, _p: Policy = policy, _l: str = level) -> None:
            found.append(RawViolation(_p, _l, message, urn or None))

        if isinstance(policy, StackValidationPolicy):
            _run(policy.validate(StackValidationArgs(resources, props), report))
            continue
        for r in resources[1:]:
            args = ResourceValidationArgs(r.resource_type, r.props, r.urn, r.name, r.opts, r.provider, props)

            def report_resource(message: str, urn: str | None = None, *, _urn: str = r.urn,
                                _p: Policy = policy, _l: str = level) -> None:
                # Like the engine: a resource policy's violation is always about its resource.
                found.append(RawViolation(_p, _l, message, _urn))

            _run(policy.validate(args, report_resource))
    return found


def _run(result: Any) -> None:
    if result is not None:  # an async policy: run it to completion, as the analyzer does
        import asyncio

        asyncio.run(result)


# --------------------------------------------------------------------------- attribution


def attribute(raw: Iterable[RawViolation], graph: Graph, platform: Platform | None) -> list[Violation]:
    """Attach each violation to an agent manifest (or the stack file) and a line."""
    pack = load_pack()
    bom = graph.outputs.get("identityBom") if isinstance(graph.outputs.get("identityBom"), dict) else None
    agents: dict[str, Any] = dict((bom or {}).get("agents") or {})
    spiffe = {a: str(v.get("spiffeId")) for a, v in agents.items()}
    by_urn = {r.urn: r for r in graph.resources}
    stack_path = str(stack_file(graph.stack))
    out = []
    for v in raw:
        res = by_urn.get(v.urn or "")
        agent: str | None = None
        if v.message.startswith("agent "):
            named = v.message[len("agent "):].split(":", 1)[0]
            agent = named if named in agents else None
        if agent is None and res is not None:
            agent = pack.agent_of(res.type, res.name, engine_view(res.inputs), agents, spiffe)
            agent = agent if agent in agents else None
        file, line = stack_path, None
        if agent is not None:
            file = str(agents[agent].get("manifest") or stack_path)
            resolved = platform.agent(agent) if platform is not None else None
            if resolved is not None:
                line = resolved.source.line_of(POLICY_FIELDS.get(v.policy.name, ("metadata", "name")))
        out.append(Violation(
            policy=v.policy.name, level=v.level,
            severity=v.policy.severity.value if v.policy.severity else "medium",
            description=v.policy.description, message=v.message,
            remediation=v.policy.remediation_steps or "",
            urn=v.urn if res is not None else None,
            resource_type=res.type if res is not None else None,
            resource_name=res.name if res is not None else None,
            agent=agent, file=file, line=line,
        ))
    return sorted(out, key=lambda x: (x.file, x.line or 0, x.policy, x.resource_name or "", x.message))


# --------------------------------------------------------------------------- running


def load_inputs(stack: str, root: Path) -> tuple[StackConfig, Platform]:
    """Stack config and manifests, validated (ConfigError / ManifestError on bad input); manifest
    files named relative to ``root``."""
    with contextlib.chdir(root):
        platform = load_platform(stack, root=root)
        return platform.config, platform


def load_plans(stack: str, root: Path) -> Plans:
    """:func:`load_inputs` and the compile step: every problem of the stack (PassportError) at once."""
    _, platform = load_inputs(stack, root)
    return compile_plans(platform)


def run_check(stack: str, root: Path | None = None, overrides: Mapping[str, Any] | None = None) -> CheckResult:
    """Validate inputs (every rule, components.compile), run the program under mocks, evaluate the
    pack, attribute violations."""
    root = (root or Path.cwd()).resolve()
    platform = load_plans(stack, root).platform
    cfg = platform.config
    try:
        graph = run_program(stack, root)
    except (pulumi.RunError, pulumi.ConfigMissingError, pulumi.ConfigTypeError) as exc:
        # The program refused its input (anything else is a bug and keeps its traceback).
        raise ConfigError([Problem(str(stack_file(stack)), None, "",
                                   f"the program refused this stack: {str(exc).strip()}")]) from None
    config = merge_config(stack_policy_config(cfg), overrides or {})
    raw = evaluate(graph, config)
    violations = attribute(raw, graph, platform) + workflow_warnings(root)
    return CheckResult(stack, violations, len(graph.resources), policies(), config)


def workflow_warnings(root: Path) -> list[Violation]:
    """Static credentials in the repository's CI workflows: advisory (never counted as mandatory)."""
    from components import workflow_secrets as ws

    return [Violation(policy=ws.RULE, level="advisory", severity=ws.SEVERITY, description=ws.DESCRIPTION,
                      message=f.message, remediation=f.fix, urn=None, resource_type=None, resource_name=None,
                      agent=None, file=f.file, line=f.line)
            for f in ws.scan_workflows(root)]


# --------------------------------------------------------------------------- output


def format_text(result: CheckResult) -> str:
    n = len(result.violations)
    head = (f"stack {result.stack}: {n} violation{'s' if n != 1 else ''} "
            f"({result.mandatory} mandatory, {n - result.mandatory} advisory) from "
            f"{len(result.policies)} policies over {result.resources} resources")
    lines = [head]
    current = None
    for v in result.violations:
        if v.file != current:
            current = v.file
            note = ("" if v.agent else "  (the CI pipeline, not the stack)" if v.urn is None and
                    v.file.startswith(".github/") else "  (stack-wide, not attributable to one agent)")
            lines += ["", v.file + note]
        where = f"{v.file}:{v.line}" if v.line else v.file
        kind = "error" if v.mandatory else "warning"
        lines.append(f"  {where}: {kind} [{v.policy}] {v.message}")
        if v.resource_type:
            lines.append(f"      resource: {v.resource_type} {v.resource_name}")
        lines.append(f"      fix: {v.remediation}")
    if not result.violations:
        lines.append("no violations")
    return "\n".join(lines)


def format_json(result: CheckResult) -> str:
    return json.dumps({
        "stack": result.stack,
        "resources": result.resources,
        "policies": [p.name for p in result.policies],
        "mandatory": result.mandatory,
        "violations": [asdict(v) for v in result.violations],
    }, indent=2, sort_keys=True)


_SARIF_LEVEL = {"mandatory": "error", "advisory": "warning"}
_SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0"}


def format_sarif(result: CheckResult) -> str:
    """SARIF 2.1.0 for GitHub code scanning (one rule per policy)."""
    rules = []
    index = {}
    for i, p in enumerate(result.policies):
        index[p.name] = i
        level = level_of(p, result.config)
        severity = p.severity.value if p.severity else "medium"
        rules.append({
            "id": p.name,
            "name": "".join(w.capitalize() for w in p.name.split("-")),
            "shortDescription": {"text": p.description},
            "fullDescription": {"text": p.description},
            "help": {"text": p.remediation_steps or p.description,
                     "markdown": f"**{p.description}**\n\n{p.remediation_steps or ''}"},
            "defaultConfiguration": {"level": _SARIF_LEVEL.get(level, "none")},
            "properties": {"tags": ["security", "agent-passport"],
                           "security-severity": _SECURITY_SEVERITY.get(severity, "5.5")},
        })
    for v in result.violations:  # findings outside the pack (CI workflows): one rule each, as used
        if v.policy not in index:
            index[v.policy] = len(rules)
            rules.append({
                "id": v.policy, "name": "".join(w.capitalize() for w in v.policy.split("-")),
                "shortDescription": {"text": v.description}, "fullDescription": {"text": v.description},
                "help": {"text": v.remediation, "markdown": f"**{v.description}**\n\n{v.remediation}"},
                "defaultConfiguration": {"level": _SARIF_LEVEL.get(v.level, "note")},
                "properties": {"tags": ["security", "agent-passport", "ci"],
                               "security-severity": _SECURITY_SEVERITY.get(v.severity, "5.5")},
            })
    results = []
    for v in result.violations:
        fingerprint = hashlib.sha256(f"{v.policy}|{v.urn}|{v.message}".encode()).hexdigest()
        location: dict[str, Any] = {
            "physicalLocation": {"artifactLocation": {"uri": v.file},
                                 "region": {"startLine": v.line or 1}},
        }
        if v.urn:
            location["logicalLocations"] = [{"fullyQualifiedName": v.urn, "kind": "resource"}]
        results.append({
            "ruleId": v.policy,
            "ruleIndex": index[v.policy],
            "level": _SARIF_LEVEL.get(v.level, "note"),
            "message": {"text": f"{v.message} — fix: {v.remediation}"},
            "locations": [location],
            "partialFingerprints": {"passportCheck/v1": fingerprint},
        })
    sarif = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "passport check", "rules": rules}},
            "automationDetails": {"id": f"passport-check/{result.stack}/"},
            "results": results,
        }],
    }
    return json.dumps(sarif, indent=2, sort_keys=True)


FORMATTERS = {"text": format_text, "json": format_json, "sarif": format_sarif}
