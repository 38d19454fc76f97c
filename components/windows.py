"""GmsaAgents: gMSA for every active Windows agent — DSC via AWS SSM, credential specs on Kubernetes.

The DSC scripts, SSM document bodies and Kubernetes objects come from the pure renderer
:mod:`components.render.windows`; this component only registers them. Without AWS
(``subsystems.aws`` off, e.g. the dev stack) the scripts are still rendered (``passport
render`` writes ``windows/<agent>.ps1``) but no AWS resource is created: apply them by hand
or with your own tooling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi

from components.kube import kube_objects
from components.platform_model import Platform
from components.render.windows import (
    WindowsPlan,
    ssm_document_json,
    ssm_document_name,
    ssm_targets,
)
from components.ssm import ssm_command


@dataclass(frozen=True)
class GmsaAgentsArgs:
    """Inputs of :class:`GmsaAgents`."""

    platform: Platform
    """The validated platform (the stack's name and Windows settings)."""

    plan: WindowsPlan
    """The validated gMSA agents, their scripts and Kubernetes objects (``Plans.windows``)."""

    deliver_with_ssm: bool
    """Create the SSM documents and associations (needs AWS; the stack's subsystems.aws)."""

    namespaces: Mapping[str, pulumi.Resource] = field(default_factory=dict)
    """Namespaces this stack creates (MeshNamespace), by name: objects in them are created after."""


class GmsaAgents(pulumi.ComponentResource):
    """Per active Windows agent: an SSM document + association applying its DSC script, and
    for agents running as Windows pods a GMSACredentialSpec with ``use`` RBAC."""

    scripts: pulumi.Output[dict[str, str]]
    """Agent name -> rendered DSC script (also written by ``passport render``)."""

    ssm_documents: pulumi.Output[dict[str, str]]
    """Agent name -> SSM document name (empty when SSM delivery is off)."""

    credential_specs: pulumi.Output[list[str]]
    """Names of the GMSACredentialSpecs created."""

    def __init__(self, name: str, args: GmsaAgentsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:windows:GmsaAgents", name, None, opts)
        platform = args.platform
        scripts: dict[str, str] = dict(args.plan.scripts)
        documents: dict[str, pulumi.Output[str]] = {}
        for g in args.plan.agents:
            script = scripts[g.name]
            if not args.deliver_with_ssm:
                continue
            documents[g.name] = ssm_command(
                self, f"{name}-{g.name}-dsc", platform=platform, agent=g.name, team=g.agent.identity.team,
                document_name=ssm_document_name(platform.stack, g.name),
                association_name=f"agentpassport-{platform.stack}-gmsa-{g.name}",
                content=ssm_document_json(script, g.name), targets=ssm_targets(g),
            )
        objects: list[Mapping[str, Any]] = list(args.plan.kubernetes_objects)
        kube_objects(f"{name}-k8s", objects, self, args.namespaces)
        self.scripts = pulumi.Output.from_input(scripts)
        self.ssm_documents = (
            pulumi.Output.all(**documents).apply(lambda d: dict(sorted(d.items())))
            if documents else pulumi.Output.from_input({})
        )
        self.credential_specs = pulumi.Output.from_input(
            sorted(o["metadata"]["name"] for o in objects if o["kind"] == "GMSACredentialSpec")
        )
        self.register_outputs({
            "scripts": self.scripts,
            "ssmDocuments": self.ssm_documents,
            "credentialSpecs": self.credential_specs,
        })
