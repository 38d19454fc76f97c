"""EgressProxies: delivery of the Envoy egress proxies of VM agents through AWS Systems Manager.

The bootstraps, systemd units and install scripts come from the pure renderer
:mod:`components.render.egress`; this component only registers them. An aws_iid VM agent with
``awsInstanceTags`` gets an SSM ``Command`` document (``aws:runShellScript``: the config, the unit,
``systemctl restart``; no credentials) and an association on those tags, re-applied on
``windows.ssmSchedule``. Other VMs (join_token, untagged) and stacks without AWS get the same files
from ``passport render`` (``egress/<agent>.yaml``, ``egress/<agent>.service``) for their host
tooling. Windows agents' proxies travel in their gMSA DSC script (:mod:`components.windows`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi

from components.platform_model import Platform
from components.render.egress import EgressPlan, vm_ssm_document, vm_ssm_document_name, vm_ssm_targets
from components.render.yamlout import dump_yaml
from components.ssm import ssm_command


@dataclass(frozen=True)
class EgressProxiesArgs:
    """Inputs of :class:`EgressProxies`."""

    platform: Platform
    """The validated platform (the stack's name and schedule)."""

    plan: EgressPlan
    """The validated egress proxies and their bootstraps (``Plans.egress``)."""

    deliver_with_ssm: bool
    """Create SSM documents and associations (needs AWS; the stack's subsystems.aws)."""


class EgressProxies(pulumi.ComponentResource):
    """Per VM agent with http grants whose hosts SSM can target: a document + association
    installing its Envoy egress proxy."""

    configs: pulumi.Output[dict[str, str]]
    """Agent name -> rendered Envoy bootstrap (YAML), for every out-of-mesh agent with http grants."""

    ssm_documents: pulumi.Output[dict[str, str]]
    """Agent name -> SSM document name (VM agents delivered by SSM)."""

    def __init__(self, name: str, args: EgressProxiesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:egress:EgressProxies", name, None, opts)
        platform = args.platform
        configs = {agent: dump_yaml(cfg) for agent, cfg in args.plan.bootstraps}
        documents: dict[str, pulumi.Output[str]] = {}
        for proxy in args.plan.proxies:
            targets = vm_ssm_targets(proxy) if proxy.os == "linux" and args.deliver_with_ssm else None
            if targets is None:
                continue
            documents[proxy.name] = ssm_command(
                self, f"{name}-{proxy.name}", platform=platform, agent=proxy.name,
                team=proxy.agent.identity.team, document_name=vm_ssm_document_name(platform.stack, proxy.name),
                association_name=f"agentpassport-{platform.stack}-egress-{proxy.name}",
                content=json.dumps(vm_ssm_document(proxy, configs[proxy.name]), indent=2, sort_keys=True),
                targets=targets,
            )
        self.configs = pulumi.Output.from_input(configs)
        self.ssm_documents = (
            pulumi.Output.all(**documents).apply(lambda d: dict(sorted(d.items())))
            if documents else pulumi.Output.from_input({})
        )
        self.register_outputs({"configs": self.configs, "ssmDocuments": self.ssm_documents})
