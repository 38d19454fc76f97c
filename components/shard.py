"""Shard selection (pure): which agents a stack deploys, and whether shards cover a fleet exactly once."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from components.config import StackConfig
from components.config.shard import ShardSelector
from components.manifest.models import AgentManifest


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


def in_stack(cfg: StackConfig, manifest: AgentManifest) -> bool:
    """Whether a stack deploys the agent's per-agent pieces (environment and shard selection)."""
    envs = manifest.spec.environments
    if envs is not None and cfg.environment not in envs:
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
