"""The compile step: a stack's platform in, one validated plan per subsystem out, or every problem.

Validation runs in stages, each reporting every problem it finds at once:

1. the stack configuration (:func:`components.config.build_stack_config`: the models, the
   strict-stack guard rails, lifetimes that contradict each other, secrets that are not set);
2. the manifests (:func:`components.manifest.loader.load_manifests`: YAML and the models);
3. the rules across manifests and the stack (:func:`components.platform_model.build_platform`:
   one identity per agent, undeclared services and clusters, limits);
4. :func:`compile`: every subsystem's own rules, all subsystems in one run.

A rule has one home, in the module of the subsystem it is about (``spire_problems``,
``linkerd_identity_problems``, ``authz_problems``, ...), and runs once per stack, here. Whatever
consumes the result (``passport validate``, ``render``, ``check`` and ``diff``, the engine's
preflight, the Pulumi program and its components) takes the plans and never validates again.

A subsystem's plan is None when the stack does not deploy it (``subsystems`` off, or a piece a
base or shard stack leaves to the other: :mod:`components.shard`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from components.errors import PassportError, Problem, input_error
from components.platform_model import Platform
from components.render.audit import AuditTarget, compile_audit
from components.render.authz import AuthzPlan, compile_authz
from components.render.aws import AwsPlan, compile_aws
from components.render.egress import EgressPlan, compile_egress
from components.render.mesh import MeshPlan, compile_mesh
from components.render.spire import SpirePlan, compile_spire
from components.render.trust import TrustProfile, trust_profile
from components.render.vault import VaultPlan, plan_vault
from components.render.windows import WindowsPlan, compile_windows
from components.shard import Scope, deploys_agents, deploys_shared, stack_scope

T = TypeVar("T")


@dataclass(frozen=True)
class Plans:
    """One stack, validated: the platform and one plan per subsystem it deploys."""

    platform: Platform
    scope: Scope
    """What this stack deploys: ``all`` (standalone), ``shared`` (a base), ``agents`` (a shard)."""
    trust: TrustProfile | None
    """The CA hierarchy's certificate profile (not in a shard: the base holds the CAs)."""
    spire: SpirePlan | None
    mesh: MeshPlan | None
    authz: AuthzPlan | None
    vault: VaultPlan | None
    windows: WindowsPlan | None
    """gMSA agents (not in a base: its shards deploy them)."""
    aws: AwsPlan | None
    audit: AuditTarget | None = None
    """The audit collector's target (not in a shard: the base ships every node's logs)."""
    egress: EgressPlan | None = None
    """Envoy egress proxies of agents outside the mesh with http grants (not in a base)."""


@dataclass(frozen=True)
class Problems:
    """Everything wrong with one or more stacks' inputs, found in one run."""

    problems: tuple[Problem, ...]
    config_files: tuple[str, ...]
    """The stack files among the problems' files (their problems are configuration problems)."""

    def error(self) -> PassportError:
        """The error to raise: ConfigError, ManifestError, or InputError when both kinds are there."""
        return input_error(self.problems, self.config_files)

    def __add__(self, other: Problems) -> Problems:
        return Problems((*self.problems, *other.problems), (*self.config_files, *other.config_files))


def compile(platform: Platform) -> Plans | Problems:
    """Run every subsystem's rules once; return the plans, or every problem of every subsystem."""
    cfg = platform.config
    on = cfg.subsystems
    scope = stack_scope(cfg)
    problems: list[Problem] = []

    def plan(enabled: bool, planner: Callable[[Platform], T]) -> T | None:
        if not enabled:
            return None
        try:
            return planner(platform)
        except PassportError as exc:
            problems.extend(exc.problems)
            return None

    plans = Plans(
        platform=platform,
        scope=scope,
        trust=plan(deploys_shared(scope), lambda p: trust_profile(p.config, p.config_file)),
        spire=plan(on.spire, compile_spire),
        mesh=plan(on.mesh, compile_mesh),
        authz=plan(on.authz, compile_authz),
        vault=plan(on.vault, plan_vault),
        windows=plan(on.windows and deploys_agents(scope), compile_windows),
        aws=plan(on.aws, compile_aws),
        audit=plan(on.audit and deploys_shared(scope), compile_audit),
        egress=plan(deploys_agents(scope), compile_egress),
    )
    if problems:
        return Problems(tuple(problems), (platform.config_file,))
    return plans


def compile_plans(platform: Platform) -> Plans:
    """:func:`compile`, raising every problem as one :class:`~components.errors.PassportError`."""
    result = compile(platform)
    if isinstance(result, Problems):
        raise result.error()
    return result
