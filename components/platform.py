"""AgentPassport: the root component composing every subsystem for one stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from components.platform_model import Platform


@dataclass(frozen=True)
class AgentPassportArgs:
    """Inputs of the root component."""

    platform: Platform
    """The validated platform (stack config + this environment's agents)."""


class AgentPassport(pulumi.ComponentResource):
    """Everything Agent Passport deploys for one stack, composed per stack config."""

    summary: pulumi.Output[dict[str, Any]]
    """Non-secret facts other stacks and tools read (trust bundle, issuer, endpoints)."""

    def __init__(self, name: str, args: AgentPassportArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:index:AgentPassport", name, None, opts)
        platform = args.platform
        summary: dict[str, Any] = {
            "agents": len(platform.active_agents),
            "suspended": [a.name for a in platform.suspended_agents],
        }
        self.summary = pulumi.Output.from_input(summary)
        self.register_outputs({"summary": self.summary})
