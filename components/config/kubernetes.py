"""Kubernetes target section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from components.config.base import Section


class KubernetesTarget(Section):
    """Where Kubernetes objects go."""

    mode: Literal["render", "cluster"] = Field(
        default="render",
        description="render: the kubernetes provider writes YAML to renderDir (no cluster "
        "needed); cluster: apply to the cluster of kubeconfig/context.",
    )
    render_dir: str = Field(default="build/k8s", description="Directory for rendered YAML (mode render).")
    kubeconfig: str | None = Field(default=None, description="Path of a kubeconfig (mode cluster).")
    context: str | None = Field(default=None, description="kubeconfig context (mode cluster).")
    skip_await: bool = Field(
        default=False,
        description="Annotate workloads with pulumi.com/skipAwait so that `pulumi up` does not wait "
        "for them to become ready. Only for an API server without nodes (the local stack): on a real "
        "cluster the await is what makes a failed rollout fail the update.",
    )
