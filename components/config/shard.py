"""Shard section: split one environment's agents across many stacks."""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, model_validator

from components.config.base import Section

_STACK_NAME = re.compile(r"^[a-z0-9]([-a-z0-9._]{0,61}[a-z0-9])?$")
"""A shard's stack name, as it appears in Kubernetes object names and OPA data keys."""


class HashBuckets(Section):
    """A stable bucket of agent names: sha256(name) mod count == index."""

    count: int = Field(ge=2, le=4096, description="Number of buckets the environment is split into.")
    index: int = Field(ge=0, description="This stack's bucket (0-based, below count).")

    @model_validator(mode="after")
    def _index(self) -> Self:
        if self.index >= self.count:
            raise ValueError(f"index {self.index} must be below count {self.count}")
        return self


class ShardSelector(Section):
    """Which agents a shard deploys: every criterion given must match (AND); lists match any entry."""

    labels: dict[str, str] = Field(default_factory=dict, description="metadata.labels the agent must carry.")
    teams: list[str] = Field(default_factory=list, description="metadata.team values; empty: any team.")
    namespaces: list[str] = Field(
        default_factory=list, description="Kubernetes namespaces of the agent's pods; empty: any."
    )
    hash_buckets: HashBuckets | None = Field(
        default=None, description="A stable hash bucket of agent names (even split without labels)."
    )

    @property
    def is_empty(self) -> bool:
        return not (self.labels or self.teams or self.namespaces or self.hash_buckets)


class ShardConfig(Section):
    """How this stack takes part in splitting an environment."""

    role: Literal["standalone", "base", "shard"] = Field(
        default="standalone",
        description="standalone: one stack holds everything; base: only the shared pieces (trust, "
        "SPIRE server, Vault mounts, gateways) for every shard of the environment; shard: only the "
        "per-agent pieces of the selected agents, referencing the base stack's outputs.",
    )
    base_stack: str | None = Field(
        default=None,
        description="Fully qualified base stack (org/agent-passport/<stack>) a shard references "
        "through pulumi.StackReference.",
    )
    select: ShardSelector = Field(default_factory=ShardSelector, description="Agents this shard deploys.")
    shards: list[str] = Field(
        default_factory=list,
        description="Base only: the shard stacks (stack names) of this environment. Each gateway the base "
        "deploys loads every listed shard's OPA data ConfigMap (optional: a shard not yet deployed is "
        "simply absent); an unlisted shard's agents are denied at the gateways.",
    )

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if self.role == "shard":
            if self.base_stack is None:
                raise ValueError("a shard needs baseStack (the stack holding the shared pieces)")
            if self.select.is_empty:
                raise ValueError("a shard needs a select criterion; otherwise it deploys every agent")
        elif not self.select.is_empty:
            raise ValueError(f"select only applies to role shard (this stack's role is {self.role})")
        if self.shards and self.role != "base":
            raise ValueError(f"shards only applies to role base (this stack's role is {self.role})")
        bad = [s for s in self.shards if not _STACK_NAME.match(s)]
        if bad:
            raise ValueError(f"shards {bad} are not stack names (lowercase letters, digits, '-', '.', '_')")
        if len(set(self.shards)) != len(self.shards):
            raise ValueError("shards lists a stack twice")
        return self
