"""Windows gMSA agents: PowerShell DSC scripts, SSM documents and Kubernetes credential specs.

Pure: a :class:`~components.platform_model.Platform` in, text and dicts out, no pulumi.

PowerShell safety. The DSC script is rendered from a jinja2 template with autoescape off
(HTML escaping means nothing to PowerShell). Instead, the template environment refuses to
emit any value that did not pass through :func:`ps_quote`, the one PowerShell string
escaper: every user value becomes a single-quoted (verbatim) PowerShell string in which
``$``, backticks and ``$(...)`` are inert, every single-quote character (ASCII ``'`` and the
typographic quotes U+2018..U+201B, which PowerShell also accepts as quotes) is doubled, and
characters that could end a line or hide text (newlines, NUL, other control and format
characters) are refused. The manifest patterns already forbid all of these; the escaper is
the second wall.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from components.config import StackConfig
from components.errors import ManifestError, Problem, input_error
from components.labels import AGENT_LABEL, MANAGED_BY
from components.manifest.loader import format_loc
from components.manifest.models import WindowsPlatform
from components.platform_model import Platform, ResolvedAgent
from components.render.artifacts import Artifact, kubernetes_artifacts
from components.shard import stack_scope

TEMPLATES = Path(__file__).parent / "templates"
DSC_TEMPLATE = "gmsa-dsc.ps1.j2"

# PowerShell's tokenizer treats all of these as single quotes (SpecialCharacters.IsSingleQuote).
SINGLE_QUOTES = frozenset("'\u2018\u2019\u201a\u201b")
# Characters PowerShell (or an editor, or SSM's line splitting) treats as a line break.
LINE_BREAKS = frozenset("\n\r\v\f\x85\u2028\u2029")

GMSA_CREDSPEC_API = "windows.k8s.io/v1"
GMSA_CREDSPEC_KIND = "GMSACredentialSpec"
DEFAULT_TARGET_TAG = "agentpassport:host-group"


class PowerShellQuoteError(ValueError):
    """A value that cannot be put into a PowerShell string literal safely."""


class PsCode(str):
    """Text that is safe to splice into PowerShell: a quoted literal or a fixed token."""

    __slots__ = ()


def ps_quote(value: object) -> PsCode:
    """``value`` as a PowerShell single-quoted (verbatim) string literal.

    Doubles every single-quote character; refuses line breaks, NUL and other control or
    format characters (``PowerShellQuoteError``). ``$``, ``$(...)`` and backticks stay as
    they are: inside single quotes PowerShell does not expand or escape anything.
    """
    if not isinstance(value, str):
        raise PowerShellQuoteError(f"only strings are quoted, not {type(value).__name__}")
    out = []
    for ch in value:
        if ch in LINE_BREAKS or ch == "\x00" or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            raise PowerShellQuoteError(
                f"{value!r} contains the character U+{ord(ch):04X}, which is not allowed in a "
                "PowerShell string here"
            )
        out.append(ch + ch if ch in SINGLE_QUOTES else ch)
    return PsCode("'" + "".join(out) + "'")


def ps_array(values: Iterable[object]) -> PsCode:
    """``@('a', 'b')``: a PowerShell array of quoted strings."""
    return PsCode("@(" + ", ".join(ps_quote(v) for v in values) + ")")


def _finalize(value: object) -> object:
    if isinstance(value, PsCode):
        return value
    raise TypeError(
        f"template emitted an unquoted value {value!r}: pipe it through `| ps` (or `| ps_array`)"
    )


def _environment() -> jinja2.Environment:
    # PowerShell, not HTML: HTML escaping means nothing here; every value goes through ps_quote.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=False,  # noqa: S701
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["ps"] = ps_quote
    env.filters["ps_array"] = ps_array
    return env


_ENV = _environment()


# --------------------------------------------------------------------------- per agent facts


@dataclass(frozen=True)
class GmsaAgent:
    """The Windows facts of one active agent, with stack defaults applied."""

    agent: ResolvedAgent
    windows: WindowsPlatform
    domain: str
    netbios_domain: str
    same_domain: bool

    @property
    def name(self) -> str:
        return self.agent.name

    @property
    def gmsa(self) -> str:
        return self.windows.gmsa_account

    @property
    def pool_identity(self) -> str:
        """The IIS pool user name: ``DOMAIN\\account$`` (no password: AD supplies it)."""
        return f"{self.netbios_domain}\\{self.gmsa}$"

    @property
    def target_tags(self) -> dict[str, str]:
        tags = self.windows.ssm_target_tags
        return dict(sorted((tags or {DEFAULT_TARGET_TAG: self.windows.host_group}).items()))

    @property
    def credspec_name(self) -> str:
        return f"agentpassport-{self.name}"[:253]


def gmsa_agents(platform: Platform) -> list[GmsaAgent]:
    """Active Windows agents only: suspended agents get no gMSA, association or credspec."""
    cfg = platform.config.windows
    out = []
    for a in platform.agents_on("windows"):
        win = a.manifest.spec.platform.windows
        assert win is not None
        domain = win.domain or cfg.domain
        out.append(GmsaAgent(a, win, domain, cfg.netbios_domain, domain.lower() == cfg.domain.lower()))
    return sorted(out, key=lambda g: g.name)


# --------------------------------------------------------------------------- validation


def _problem(g: GmsaAgent, loc: tuple[str | int, ...], message: str) -> Problem:
    return Problem(g.agent.source.file, g.agent.source.line_of(loc), format_loc(loc), message)


def windows_problems(platform: Platform) -> tuple[list[Problem], list[Problem]]:
    """(manifest problems, config problems) for the Windows subsystem, all at once."""
    manifest: list[Problem] = []
    config: list[Problem] = []
    agents = gmsa_agents(platform)
    base = ("spec", "platform", "windows")
    # One gMSA per agent is an identity rule of the whole environment:
    # components.platform_model.identity_problems.
    seen_pool: dict[tuple[str, str], GmsaAgent] = {}
    for g in agents:
        if g.windows.iis_app_pool is not None:
            pkey = (g.windows.host_group.lower(), g.windows.iis_app_pool.lower())
            pfirst = seen_pool.setdefault(pkey, g)
            if pfirst is not g:
                manifest.append(_problem(g, (*base, "iisAppPool"),
                                         f"app pool {g.windows.iis_app_pool!r} on host group "
                                         f"{g.windows.host_group!r} already runs as agent {pfirst.name!r}'s "
                                         "gMSA; give each agent its own pool"))
        if g.windows.iis_app_pool is not None and not g.same_domain:
            manifest.append(_problem(g, (*base, "iisAppPool"),
                                     f"the pool identity is DOMAIN\\{g.gmsa}$ and the stack knows the NetBIOS "
                                     f"name only of its own domain {platform.config.windows.domain!r}; run IIS "
                                     "agents in that domain (remove spec.platform.windows.domain)"))
        values: dict[tuple[str, ...], str] = {
            ("gmsaAccount",): g.gmsa, ("hostGroup",): g.windows.host_group,
            ("domain",): g.domain, ("iisAppPool",): g.windows.iis_app_pool or "",
            **{("ssmTargetTags", k): f"{k}={v}" for k, v in (g.windows.ssm_target_tags or {}).items()},
        }
        for loc, value in values.items():
            try:
                ps_quote(value)
            except PowerShellQuoteError as exc:
                manifest.append(_problem(g, (*base, *loc), str(exc)))
        if g.windows.pod is not None:
            cfg = platform.config.windows
            missing = [k for k, v in (("windows.domainSid", cfg.domain_sid),
                                      ("windows.domainGuid", cfg.domain_guid)) if v is None]
            for missing_key in missing:
                config.append(Problem(platform.config_file, None, f"agent-passport:{missing_key}",
                                      f"agent {g.name!r} runs as Windows pods (spec.platform.windows.pod), "
                                      "whose GMSACredentialSpec needs the domain's SID and GUID; set them "
                                      "from (Get-ADDomain).DomainSID / .ObjectGUID"))
            if not g.same_domain:
                manifest.append(_problem(g, (*base, "domain"),
                                         f"Windows pods use the stack's domain {cfg.domain!r} (its SID and GUID "
                                         "are in the stack config); remove spec.platform.windows.domain"))
            elif not missing:
                manifest.extend(credential_spec_problems(
                    credential_spec(g, platform.config), platform.config.windows.allow_stored_credential_specs,
                    g.agent.source.file, g.agent.source.line_of(("spec", "platform", "windows", "pod")),
                    "spec.platform.windows.pod",
                ))
    return manifest, sorted(set(config))


def validate_windows(platform: Platform) -> None:
    """Raise every problem :func:`windows_problems` finds (ManifestError, ConfigError, or both)."""
    manifest, config = windows_problems(platform)
    if manifest or config:
        raise input_error([*manifest, *config], [platform.config_file])


@dataclass(frozen=True)
class WindowsPlan:
    """The gMSA agents of a stack, validated (:func:`compile_windows`), with their DSC scripts and
    the Kubernetes objects of those that run as pods."""

    agents: tuple[GmsaAgent, ...]
    scripts: tuple[tuple[str, str], ...]
    """(agent name, rendered DSC script), in agent order."""
    kubernetes_objects: tuple[dict[str, Any], ...]


def compile_windows(platform: Platform) -> WindowsPlan:
    """The Windows plan of a stack; raises every problem first."""
    validate_windows(platform)
    gmsa_path = platform.config.windows.gmsa_path
    agents = tuple(gmsa_agents(platform))
    interval = platform.config.windows.gmsa_password_interval_days
    return WindowsPlan(agents, tuple((g.name, render_dsc(g, gmsa_path, interval, windows_egress(platform, g)))
                                     for g in agents),
                       tuple(windows_kubernetes_objects(platform)))


# --------------------------------------------------------------------------- DSC script


def egress_service_name(agent: str) -> str:
    """The Windows service running the agent's Envoy egress proxy."""
    return f"AgentPassportEgress-{agent}"[:80]


def windows_egress(platform: Platform, g: GmsaAgent) -> dict[str, str] | None:
    """What the DSC script needs to run the agent's egress proxy as a service under its gMSA
    (None when the agent has no http grant): the bootstrap as one line of JSON and the command."""
    from components.render.egress import egress_bootstrap, egress_proxies_of, out_of_mesh_callers, windows_paths

    if g.agent not in out_of_mesh_callers(platform) or g.windows.pod is not None:
        return None
    (proxy,) = egress_proxies_of(platform, [g.agent])
    paths = windows_paths(g.name)
    exe = platform.config.windows.envoy_exe
    return {
        **paths,
        "service": egress_service_name(g.name),
        "display": f"Agent Passport egress proxy of agent {g.name}",
        "exe": exe,
        "json": json.dumps(egress_bootstrap(platform, proxy), separators=(",", ":"), sort_keys=True),
        "command": f'"{exe}" -c "{paths["config"]}" --log-path "{paths["log"]}"',
    }


def render_dsc(g: GmsaAgent, gmsa_path: str | None = None, interval_days: int = 1,
               egress: Mapping[str, str] | None = None) -> str:
    """The agent's PowerShell DSC script: create the gMSA, install it, point the pool at it.

    ``gmsa_path`` is the OU (stack ``windows.gmsaPath``); None uses AD's default container.
    ``interval_days`` (stack ``windows.gmsaPasswordIntervalDays``) is the password interval a new
    gMSA is created with; an existing account with another interval is reported, never kept silently.
    """
    w = g.windows
    context: dict[str, Any] = {
        "agent": g.name,
        "gmsa": g.gmsa,
        "host_group": w.host_group,
        "domain": g.domain,
        "domain_controller": None if g.same_domain else g.domain,
        "pool_identity": g.pool_identity,
        "app_pool": w.iis_app_pool,
        "gmsa_path": gmsa_path,
        "gmsa_dns_host": f"{g.gmsa}.{g.domain}",
        "interval_days": str(interval_days),
        "description": f"Agent Passport: agent {g.name} (team {g.agent.identity.team})",
        "mof_dir": f"AgentPassport\\dsc\\{g.name}",
        "modules": ["ActiveDirectoryDsc", *(["WebAdministrationDsc"] if w.iis_app_pool else [])],
        "egress": egress,
    }
    return _ENV.get_template(DSC_TEMPLATE).render(context)


# --------------------------------------------------------------------------- SSM delivery


def ssm_document_name(stack: str, agent: str) -> str:
    """SSM document names: letters, digits, '_', '-', '.'; 3..128; not starting with aws/amazon."""
    safe = "".join(c if c.isalnum() or c in "_-." else "-" for c in stack)
    return f"AgentPassport-{safe}-gmsa-{agent}"[:128]


def ssm_document_content(script: str, agent: str) -> dict[str, Any]:
    """A Command document (schema 2.2) running the DSC script with aws:runPowerShellScript."""
    return {
        "schemaVersion": "2.2",
        "description": f"Agent Passport: apply the gMSA DSC configuration of agent {agent}. "
        "Contains no credentials.",
        "mainSteps": [
            {
                "action": "aws:runPowerShellScript",
                "name": "applyGmsaDsc",
                "precondition": {"StringEquals": ["platformType", "Windows"]},
                "inputs": {"timeoutSeconds": "1800", "runCommand": script.splitlines()},
            }
        ],
    }


def ssm_document_json(script: str, agent: str) -> str:
    return json.dumps(ssm_document_content(script, agent), indent=2, sort_keys=True)


def ssm_targets(g: GmsaAgent) -> list[dict[str, Any]]:
    """Association targets: ``tag:<key>`` = value for every target tag (sorted)."""
    return [{"key": f"tag:{k}", "values": [v]} for k, v in g.target_tags.items()]


# --------------------------------------------------------------------------- Kubernetes


def credential_spec(g: GmsaAgent, cfg: StackConfig) -> dict[str, Any]:
    """The agent's GMSACredentialSpec (cluster-scoped), body as in the windows-gmsa CRD."""
    win = cfg.windows
    return {
        "apiVersion": GMSA_CREDSPEC_API,
        "kind": GMSA_CREDSPEC_KIND,
        "metadata": {"name": g.credspec_name, "labels": _labels(g)},
        "credspec": {
            "ActiveDirectoryConfig": {
                "GroupManagedServiceAccounts": [
                    {"Name": g.gmsa, "Scope": win.netbios_domain},
                    {"Name": g.gmsa, "Scope": win.domain},
                ],
            },
            "CmsPlugins": ["ActiveDirectory"],
            "DomainJoinConfig": {
                "DnsName": win.domain,
                "DnsTreeName": win.tree_domain,
                "Guid": win.domain_guid or "",
                "MachineAccountName": g.gmsa,
                "NetBiosName": win.netbios_domain,
                "Sid": win.domain_sid or "",
            },
        },
    }


STORED_CREDENTIAL_KEYS = frozenset({"hostaccountconfig", "pluginguid", "plugininput", "portableccgversion"})


def _walk_keys(obj: Any, path: str = "credspec") -> Iterator[tuple[str, str, Any]]:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            here = f"{path}.{k}"
            yield here, str(k), v
            yield from _walk_keys(v, here)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk_keys(v, f"{path}[{i}]")


def stored_credential_findings(credspec_object: Mapping[str, Any]) -> list[str]:
    """Where a credential spec makes containers fetch a stored credential (CCG plugin).

    A credspec with ``ActiveDirectoryConfig.HostAccountConfig`` (PortableCcgVersion,
    PluginGUID, PluginInput) makes container.d's CCG call a plugin that reads a domain user's
    name and password from a secret store: a long-lived stored credential, exactly what
    gMSA exists to avoid. Also flags any CmsPlugins entry other than ActiveDirectory.
    """
    body = credspec_object.get("credspec", credspec_object)
    found = [f"{path} (a CCG plugin reading a stored credential)"
             for path, key, _ in _walk_keys(body) if key.lower() in STORED_CREDENTIAL_KEYS]
    plugins = body.get("CmsPlugins", []) if isinstance(body, Mapping) else []
    found += [f"credspec.CmsPlugins: {p!r} (only ActiveDirectory is allowed)"
              for p in (plugins if isinstance(plugins, list) else [plugins]) if p != "ActiveDirectory"]
    return sorted(set(found))


def check_credential_spec(credspec_object: Mapping[str, Any], allow_stored: bool, file: str,
                          line: int | None, field: str) -> None:
    """Refuse a credspec embedding a stored credential unless the stack allows it."""
    problems = credential_spec_problems(credspec_object, allow_stored, file, line, field)
    if problems:
        raise ManifestError(problems)


def credential_spec_problems(credspec_object: Mapping[str, Any], allow_stored: bool, file: str,
                             line: int | None, field: str) -> list[Problem]:
    """A credspec embedding a stored credential, unless the stack allows it."""
    if allow_stored:
        return []
    return [Problem(file, line, field,
                    f"the GMSACredentialSpec would embed a stored credential: {f}; use the hosts' "
                    "domain membership (no HostAccountConfig), or set windows.allowStoredCredentialSpecs "
                    "in the stack if you accept a stored credential")
            for f in stored_credential_findings(credspec_object)]


def _labels(g: GmsaAgent) -> dict[str, str]:
    return {**MANAGED_BY, AGENT_LABEL: g.name}


def credspec_rbac(g: GmsaAgent) -> list[dict[str, Any]]:
    """A ClusterRole allowing ``use`` of exactly this credspec, bound to the agent's ServiceAccount."""
    pod = g.windows.pod
    assert pod is not None
    role_name = f"agentpassport-gmsa-{g.name}"[:253]
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role_name, "labels": _labels(g)},
            "rules": [{
                "apiGroups": ["windows.k8s.io"],
                "resources": ["gmsacredentialspecs"],
                "verbs": ["use"],
                "resourceNames": [g.credspec_name],
            }],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role_name, "namespace": pod.namespace, "labels": _labels(g)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": pod.service_account, "namespace": pod.namespace}],
        },
    ]


def windows_kubernetes_objects(platform: Platform) -> list[dict[str, Any]]:
    """Credspec + RBAC for every active Windows agent that runs as pods."""
    objects: list[dict[str, Any]] = []
    for g in gmsa_agents(platform):
        if g.windows.pod is not None:
            objects.append(credential_spec(g, platform.config))
            objects.extend(credspec_rbac(g))
    return objects


# --------------------------------------------------------------------------- artifacts


def windows_artifacts(platform: Platform) -> Iterable[Artifact]:
    """The Windows artifacts of a stack, validated first."""
    if not platform.config.subsystems.windows or stack_scope(platform.config) == "shared":
        return []  # a base deploys no agent's gMSA: its shards do
    return plan_artifacts(compile_windows(platform))


def plan_artifacts(plan: WindowsPlan) -> list[Artifact]:
    """``windows/<agent>.ps1`` for every active Windows agent, plus ``kubernetes/windows/*``."""
    out = [Artifact(f"windows/{name}.ps1", script) for name, script in plan.scripts]
    out += kubernetes_artifacts("windows", plan.kubernetes_objects)
    return out
