"""Mesh section: Linkerd namespaces and identity."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from components.config.base import Section
from components.durations import Duration


class MeshConfig(Section):
    """Linkerd strict mTLS settings."""

    default_inbound_policy: Literal["deny", "all-authenticated", "cluster-authenticated", "all-unauthenticated"] = Field(
        default="deny",
        description="Namespace default inbound policy. Strict stacks accept only deny or "
        "all-authenticated; unauthenticated values are refused there.",
    )
    cluster_domain: str = Field(default="cluster.local", description="Kubernetes cluster domain.")
    trust_anchor_lifetime: Duration = Field(default="3650d", description="Linkerd trust anchor validity.")
    issuer_lifetime: Duration = Field(
        default="2160h", description="Linkerd identity issuer validity (shorter than the anchor)."
    )
    extra_trust_anchors_pem: list[str] = Field(
        default_factory=list,
        description="Additional trust anchor certificates (PEM) kept in the bundle during an "
        "anchor rotation (see docs: add new anchor, wait, switch issuer, remove old).",
    )
