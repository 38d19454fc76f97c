"""Shard selection (pure): which agents a stack deploys, and whether shards cover a fleet exactly once."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from components.config import StackConfig
from components.config.shard import ShardSelector
from components.manifest.models import AgentManifest

Scope = Literal["all", "shared", "agents"]
"""What one stack deploys: ``all`` (standalone), ``shared`` (a base: every piece that names no
agent, for the whole fleet) or ``agents`` (a shard: only its selected agents' pieces)."""


SHARED_OUTPUT = "shared"
"""Key, inside a base stack's ``outputs`` export, of what its shards read (non-secret only):
``trustBundlePem``, ``spireServerWorkload``, ``awsTrustAnchorArn`` / ``awsOidcProviderArn``, and
during a root rotation ``awsTrustAnchorArns`` (every Roles Anywhere anchor, trust.previousRoots)."""


def placeholder_base_outputs(base_stack: str) -> dict[str, Any]:
    """A base stack's exports with mock values, for offline runs of a shard (``passport check``)."""
    digest = hashlib.sha256(base_stack.encode()).hexdigest()
    short = base_stack.rsplit("/", 1)[-1]
    return {"outputs": {SHARED_OUTPUT: {
        "trustBundlePem": f"-----BEGIN CERTIFICATE-----\nMOCK{digest}\n-----END CERTIFICATE-----\n",
        "spireServerWorkload": "spire-server",
        "awsTrustAnchorArn": f"arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/mock-{short}",
        "awsOidcProviderArn": f"arn:aws:iam::123456789012:oidc-provider/mock-{short}",
    }}}


def stack_scope(cfg: StackConfig) -> Scope:
    """The one place a stack's role becomes what its components and renderers deploy."""
    return {"standalone": "all", "base": "shared", "shard": "agents"}[cfg.shard.role]  # type: ignore[return-value]


def deploys_shared(scope: Scope) -> bool:
    return scope != "agents"


def deploys_agents(scope: Scope) -> bool:
    return scope != "shared"


def hash_bucket(name: str, count: int) -> int:
    """Stable bucket of an agent name (sha256, independent of Python's hash seed)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count


def _namespace(manifest: AgentManifest) -> str | None:
    platform = manifest.spec.platform
    if platform.kubernetes is not None:
        return platform.kubernetes.namespace
    if platform.windows is not None and platform.windows.pod is not None:
        return platform.windows.pod.namespace
    return None


def selects(selector: ShardSelector, manifest: AgentManifest) -> bool:
    """True when every criterion of ``selector`` matches the agent."""
    meta = manifest.metadata
    if any(meta.labels.get(k) != v for k, v in selector.labels.items()):
        return False
    if selector.teams and meta.team not in selector.teams:
        return False
    if selector.namespaces and _namespace(manifest) not in selector.namespaces:
        return False
    buckets = selector.hash_buckets
    return buckets is None or hash_bucket(meta.name, buckets.count) == buckets.index


def in_environment(cfg: StackConfig, manifest: AgentManifest) -> bool:
    """Whether the agent exists in the stack's environment (whichever stack of it deploys the agent)."""
    envs = manifest.spec.environments
    return envs is None or cfg.environment in envs


def in_stack(cfg: StackConfig, manifest: AgentManifest) -> bool:
    """Whether a stack deploys the agent's per-agent pieces (environment and shard selection)."""
    if not in_environment(cfg, manifest):
        return False
    return cfg.shard.role != "shard" or selects(cfg.shard.select, manifest)


@dataclass(frozen=True)
class Coverage:
    """How the shard stacks of one environment cover its agents."""

    environment: str
    shards: tuple[str, ...]
    unselected: tuple[str, ...]
    overlapping: tuple[tuple[str, tuple[str, ...]], ...]

    @property
    def ok(self) -> bool:
        return not self.unselected and not self.overlapping


def coverage(environment: str, stacks: Sequence[tuple[str, StackConfig]],
             agents: Iterable[AgentManifest]) -> Coverage:
    """Agents of ``environment`` selected by no shard, or by more than one."""
    shards = [(name, cfg) for name, cfg in stacks if cfg.environment == environment and cfg.shard.role == "shard"]
    unselected: list[str] = []
    overlapping: list[tuple[str, tuple[str, ...]]] = []
    for manifest in agents:
        envs = manifest.spec.environments
        if envs is not None and environment not in envs:
            continue
        chosen = tuple(name for name, cfg in shards if selects(cfg.shard.select, manifest))
        if not chosen:
            unselected.append(manifest.metadata.name)
        elif len(chosen) > 1:
            overlapping.append((manifest.metadata.name, chosen))
    return Coverage(environment, tuple(n for n, _ in shards), tuple(sorted(unselected)), tuple(sorted(overlapping)))


def gatewayless_callers(cfg: StackConfig, agents: Iterable[AgentManifest],
                        gatewayless: set[str]) -> dict[str, list[str]]:
    """Service without a gateway -> active agents of ``cfg``'s environment calling it."""
    out: dict[str, list[str]] = {}
    for manifest in agents:
        envs = manifest.spec.environments
        if manifest.spec.suspended or (envs is not None and cfg.environment not in envs):
            continue
        for grant in manifest.spec.grants:
            if grant.http is not None and grant.http.service in gatewayless:
                out.setdefault(grant.http.service, []).append(manifest.metadata.name)
    return {k: sorted(set(v)) for k, v in sorted(out.items())}


def split_gatewayless(shards: Sequence[tuple[str, StackConfig]], agents: Sequence[AgentManifest],
                      gatewayless: set[str]) -> list[tuple[str, dict[str, tuple[str, ...]]]]:
    """Services without a gateway whose active callers land in more than one shard.

    Linkerd applies, per request, only the one HTTPRoute whose match wins; routes of one
    service deployed from two stacks would shadow each other (a caller of one shard denied on
    the other shard's more specific or older route). Such a service needs a gateway (the OPA
    data is merged per shard) or all its callers in one shard.
    """
    out: list[tuple[str, dict[str, tuple[str, ...]]]] = []
    if not shards:
        return out
    by_name = {m.metadata.name: m for m in agents}
    for service, callers in gatewayless_callers(shards[0][1], agents, gatewayless).items():
        placed: dict[str, list[str]] = {}
        for agent in callers:
            for name, cfg in shards:
                if selects(cfg.shard.select, by_name[agent]):
                    placed.setdefault(name, []).append(agent)
        if len(placed) > 1:
            out.append((service, {k: tuple(v) for k, v in sorted(placed.items())}))
    return out
