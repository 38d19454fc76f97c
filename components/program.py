"""The Pulumi program: stack config + manifests -> Platform -> validated Plans -> AgentPassport.

Every user error is found before the first resource is registered and reported as a
``pulumi.RunError`` (file, field, reason; no traceback), so nothing is half-deployed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi

from components.compile import compile_plans
from components.config import NAMESPACE, StackConfig, config_from_runtime
from components.errors import PassportError
from components.kube import adopt, skip_await
from components.platform import AgentPassport, AgentPassportArgs
from components.platform_model import identity_bom, load_platform
from components.providers import stack_providers


def config_keys() -> list[str]:
    """The ``agent-passport:*`` keys StackConfig reads (camelCase, as written in stack files)."""
    return [f.alias or n for n, f in StackConfig.model_fields.items()]


def runtime_config(stack: str) -> dict[str, Any]:
    """The stack's configuration as the engine passes it (``pulumi.Config``)."""
    cfg = pulumi.Config(NAMESPACE)
    return config_from_runtime({key: cfg.get(key) for key in config_keys()}, stack)


def main(root: Path | None = None, adopt_orphans: bool = False) -> None:
    """The program. ``adopt_orphans``: `passport recover`'s first pass (components.kube.adopt)."""
    stack = pulumi.get_stack()
    try:
        platform = load_platform(stack, root=root or Path.cwd(), values=runtime_config(stack))
        # Every rule of every subsystem runs here, once: every user error surfaces before the
        # first resource is registered (no partial deployment), and the components take the plans.
        plans = compile_plans(platform)
        transformations: list[pulumi.ResourceTransformation] = (
            [skip_await] if platform.config.kubernetes.skip_await else [])
        if adopt_orphans:
            transformations.append(adopt)
        passport = AgentPassport(
            "agent-passport",
            AgentPassportArgs(plans=plans),
            pulumi.ResourceOptions(providers=stack_providers(platform.config), transformations=transformations),
        )
    except PassportError as exc:
        raise pulumi.RunError("\n" + exc.report()) from None
    pulumi.export("identityBom", identity_bom(platform))
    pulumi.export("trustDomain", platform.config.trust_domain)
    pulumi.export("outputs", passport.summary)
