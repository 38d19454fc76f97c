"""The one way the program delivers a script to hosts with AWS Systems Manager: a Command
document and the association that runs it on ``windows.ssmSchedule`` on the targeted instances.

Used by the gMSA DSC scripts (:mod:`components.windows`) and the VM egress proxies
(:mod:`components.egress`); the Pulumi resource names are the caller's, so state keeps them.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi_aws import ssm

from components.platform_model import Platform


def ssm_command(
    parent: pulumi.Resource, resource_name: str, *, platform: Platform, agent: str, team: str,
    document_name: str, association_name: str, content: str, targets: list[Any],
) -> pulumi.Output[str]:
    """Document ``<resource_name>-document`` and association ``<resource_name>-association``,
    children of ``parent``, tagged with the agent, its team and the stack; the document's name."""
    tags = {"agentpassport:agent": agent, "agentpassport:team": team, "agentpassport:stack": platform.stack}
    document = ssm.Document(
        f"{resource_name}-document",
        name=document_name,
        document_type="Command",
        document_format="JSON",
        content=content,
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    ssm.Association(
        f"{resource_name}-association",
        name=document.name,
        association_name=association_name[:128],
        targets=targets,
        schedule_expression=platform.config.windows.ssm_schedule,
        compliance_severity="HIGH",
        max_concurrency="25%",
        max_errors="1",
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return document.name
