"""Shared base for stack-config sections (``stacks/Pulumi.<env>.yaml``, ``agent-passport:*`` keys)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel


class Section(BaseModel):
    """Strict keys, camelCase aliases, immutable: like the manifests."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


SecretRef = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$"),
    Field(
        description="Name of a secret stack config key in the agent-passport namespace, set "
        "with `pulumi config set --secret <name> ...`. The value never appears in this file "
        "in clear text or in the rendered artifacts."
    ),
]
