"""SPIRE as data: server.conf, agent.conf, Kubernetes objects and registrations (pure, no pulumi).

SPIRE reads JSON as HCL, so the configurations are dicts dumped as JSON — plugin names and
keys spelled exactly as in SPIRE's documentation (doc/spire_server.md, doc/spire_agent.md,
doc/plugin_*). Plugin sections use SPIRE's list form (``"DataStore": [{"sql": {...}}]``),
which keeps plugin order explicit.

Values that only exist at deploy time never appear in these files: the postgres connection
string and the AWS Private CA ARN are read from the environment (``spire-server -expandEnv``,
``${SPIRE_DB_CONNECTION}`` / ``${SPIRE_UPSTREAM_PCA_ARN}``), filled from a Secret and a
ConfigMap the component creates. So the reviewed file and the deployed one are identical.

Registrations (spire-controller-manager, ``spire.spiffe.io/v1alpha1``):

* Kubernetes agents and Windows agents with ``pod``: one ``ClusterSPIFFEID`` each, whose
  ``spiffeIDTemplate`` is the agent's SPIFFE ID literally (a template without actions
  evaluates to itself), restricted to the agent's namespace, pod labels and — through
  ``workloadSelectorTemplates`` — its ServiceAccount;
* VM agents and Windows host agents: ``ClusterStaticEntry`` objects. aws_iid: a node alias
  entry (parent: the SPIRE server, selectors: region + instance tags) and the agent's entry
  parented to that alias. join_token: only the agent's entry, parented to the alias the
  operator names when minting the token (``spire-server token generate -spiffeID <alias>``).

Only ``platform.active_agents`` get registrations: a suspended agent has none.

The package, along SPIRE's seams (everything is re-exported here):

* :mod:`.names` — names, ports, paths, images, SPIFFE IDs of SPIRE itself, object helpers;
* :mod:`.checks` — what a stack or manifest can get wrong (:func:`spire_problems`);
* :mod:`.server_conf` — server.conf, the controller manager's and the OIDC provider's config;
* :mod:`.agent_conf` — agent.conf (DaemonSet) and the host agents' (VMs, Windows hosts);
* :mod:`.workloads` — the server's Kubernetes objects (+ controller manager, OIDC provider, webhook);
* :mod:`.agent_workloads` — the agents' DaemonSet and the SPIFFE CSI driver;
* :mod:`.registrations` — ClusterSPIFFEID / ClusterStaticEntry objects;
* this module — the validated :class:`SpirePlan` (:func:`compile_spire`) and the artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.config import StackConfig
from components.labels import AGENT_LABEL, MANAGED_BY
from components.platform_model import Platform
from components.render.spire.agent_conf import (
    VM_BUNDLE,
    VM_DATA_DIR,
    VM_JOIN_TOKEN,
    WINDOWS_BUNDLE,
    WINDOWS_DATA_DIR,
    agent_config,
    host_agent_config,
    host_agent_kinds,
)
from components.render.spire.agent_workloads import (
    agent_objects,
)
from components.render.spire.checks import (
    check,
    spire_problems,
)
from components.render.spire.names import (
    AGENT,
    AGENT_BUNDLE_DIR,
    AGENT_CONFIG_DIR,
    AGENT_DATA_DIR,
    AGENT_HEALTH_PORT,
    AGENT_METRICS_PORT,
    AGENT_TOKEN_AUDIENCE,
    AGENT_TOKEN_DIR,
    BUNDLE_CONFIGMAP,
    BUNDLE_KEY,
    CONTROLLER,
    CONTROLLER_CONFIG_DIR,
    CONTROLLER_CONFIG_FILE,
    CONTROLLER_HEALTH_PORT,
    CONTROLLER_METRICS_PORT,
    CRD_GROUP,
    CRD_VERSION,
    CSI_DAEMONSET,
    CSI_DRIVER,
    DATASTORE_SECRET,
    DB_CONNECTION_ENV,
    IMAGES,
    OIDC,
    OIDC_HEALTH_PORT,
    OIDC_PORT,
    PCA_ARN_ENV,
    PCA_CA_TEMPLATE,
    SDS_ALL_BUNDLES,
    SDS_DEFAULT_BUNDLE,
    SDS_DEFAULT_SVID,
    SERVER,
    SERVER_CONFIG_DIR,
    SERVER_DATA_DIR,
    SERVER_HEALTH_PORT,
    SERVER_METRICS_PORT,
    SERVER_PORT,
    SERVER_SOCKET,
    SERVER_SOCKET_DIR,
    SOCKET_DIR,
    SOCKET_NAME,
    SOCKET_PATH,
    UPSTREAM_CONFIGMAP,
    UPSTREAM_DIR,
    UPSTREAM_KEY_SECRET,
    VAULT_TOKEN_AUDIENCE,
    VAULT_TOKEN_DIR,
    WEBHOOK,
    WEBHOOK_PORT,
    go_duration,
    needs_expand_env,
    node_alias_id,
    oidc_spiffe_id,
    server_address,
    server_id,
    trust_domain_id,
)
from components.render.spire.registrations import (
    SERVER_ANNOTATION,
    agent_registrations,
    passport_registrations,
    registration_objects,
)
from components.render.spire.server_conf import (
    controller_manager_config,
    key_manager,
    node_attestations,
    oidc_config,
    server_config,
    upstream_plugin,
)
from components.render.spire.workloads import (
    oidc_objects,
    server_objects,
    server_workload,
    webhook_configuration,
    webhook_objects,
)
from components.render.yamlout import dump_json, dump_yaml
from components.shard import Scope, deploys_agents, deploys_shared, stack_scope

# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class AgentRegistrations:
    """One active agent's registration objects."""

    agent: str
    spiffe_id: str
    objects: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class SpirePlan:
    """Everything SPIRE deploys for one stack, validated (:func:`compile_spire`).

    The server, webhook and agent objects exist for stacks that deploy the shared pieces (not a
    shard); registrations are planned for every active agent and for Agent Passport itself, and each
    consumer takes those of its scope (:func:`components.shard.deploys_agents` / ``deploys_shared``).
    """

    config: StackConfig
    config_file: str
    scope: Scope
    server_objects: tuple[dict[str, Any], ...]
    webhook_objects: tuple[dict[str, Any], ...]
    agent_objects: tuple[dict[str, Any], ...]
    agent_registrations: tuple[AgentRegistrations, ...]
    passport_registrations: tuple[dict[str, Any], ...]

    def registration_objects(self, scope: Scope | None = None) -> list[dict[str, Any]]:
        """Agents' registrations in name order, then Agent Passport's own, as ``scope`` deploys them."""
        scope = self.scope if scope is None else scope
        out = [o for r in self.agent_registrations for o in r.objects] if deploys_agents(scope) else []
        return out + (list(self.passport_registrations) if deploys_shared(scope) else [])


def compile_spire(platform: Platform) -> SpirePlan:
    """The SPIRE plan of a stack; raises every problem :func:`spire_problems` finds."""
    check(platform)
    scope = stack_scope(platform.config)
    shared = deploys_shared(scope)
    return SpirePlan(
        config=platform.config,
        config_file=platform.config_file,
        scope=scope,
        server_objects=tuple(server_objects(platform)) if shared else (),
        webhook_objects=tuple(webhook_objects(platform)) if shared else (),
        agent_objects=tuple(agent_objects(platform)) if shared else (),
        agent_registrations=tuple(
            AgentRegistrations(a.name, a.identity.spiffe_id, tuple(agent_registrations(platform, a)))
            for a in platform.active_agents),
        passport_registrations=tuple(passport_registrations(platform)),
    )


# --------------------------------------------------------------------------- artifacts


def spire_artifacts(platform: Platform) -> list[Any]:
    """The SPIRE artifacts of a stack (validated first); nothing when subsystems.spire is off."""
    if not platform.config.subsystems.spire:
        return []
    return plan_artifacts(platform, compile_spire(platform))


def plan_artifacts(platform: Platform, plan: SpirePlan) -> list[Any]:
    """``spire/server.conf``, ``spire/agent.conf``, ``spire/oidc-discovery-provider.conf`` and
    ``kubernetes/spire/*.yaml`` (objects holding deploy-time secrets/ARNs are not rendered)."""
    from components.render.artifacts import Artifact, kubernetes_artifacts

    if not deploys_shared(plan.scope):  # a shard: its agents' registrations only
        return kubernetes_artifacts("spire", plan.registration_objects())
    objects = [
        *plan.server_objects,
        *plan.webhook_objects,
        *plan.agent_objects,
        *plan.registration_objects(),
    ]
    return [
        Artifact("spire/server.conf", dump_json(server_config(platform))),
        Artifact("spire/agent.conf", dump_json(agent_config(platform))),
        Artifact("spire/oidc-discovery-provider.conf", dump_json(oidc_config(platform))),
        Artifact("spire/controller-manager-config.yaml", dump_yaml(controller_manager_config(platform))),
        *(
            Artifact(f"spire/agent-{kind}.conf", dump_json(host_agent_config(platform, kind)))
            for kind in host_agent_kinds(platform)
        ),
        *kubernetes_artifacts("spire", objects),
    ]


__all__ = [
    "AGENT",
    "AGENT_BUNDLE_DIR",
    "AGENT_CONFIG_DIR",
    "AGENT_DATA_DIR",
    "AGENT_HEALTH_PORT",
    "AGENT_LABEL",
    "AGENT_METRICS_PORT",
    "AGENT_TOKEN_AUDIENCE",
    "AGENT_TOKEN_DIR",
    "BUNDLE_CONFIGMAP",
    "BUNDLE_KEY",
    "CONTROLLER",
    "CONTROLLER_CONFIG_DIR",
    "CONTROLLER_CONFIG_FILE",
    "CONTROLLER_HEALTH_PORT",
    "CONTROLLER_METRICS_PORT",
    "CRD_GROUP",
    "CRD_VERSION",
    "CSI_DAEMONSET",
    "CSI_DRIVER",
    "DATASTORE_SECRET",
    "DB_CONNECTION_ENV",
    "IMAGES",
    "MANAGED_BY",
    "OIDC",
    "OIDC_HEALTH_PORT",
    "OIDC_PORT",
    "PCA_ARN_ENV",
    "PCA_CA_TEMPLATE",
    "SDS_ALL_BUNDLES",
    "SDS_DEFAULT_BUNDLE",
    "SDS_DEFAULT_SVID",
    "SERVER",
    "SERVER_ANNOTATION",
    "SERVER_CONFIG_DIR",
    "SERVER_DATA_DIR",
    "SERVER_HEALTH_PORT",
    "SERVER_METRICS_PORT",
    "SERVER_PORT",
    "SERVER_SOCKET",
    "SERVER_SOCKET_DIR",
    "SOCKET_DIR",
    "SOCKET_NAME",
    "SOCKET_PATH",
    "UPSTREAM_CONFIGMAP",
    "UPSTREAM_DIR",
    "UPSTREAM_KEY_SECRET",
    "VAULT_TOKEN_AUDIENCE",
    "VAULT_TOKEN_DIR",
    "VM_BUNDLE",
    "VM_DATA_DIR",
    "VM_JOIN_TOKEN",
    "WEBHOOK",
    "WEBHOOK_PORT",
    "WINDOWS_BUNDLE",
    "WINDOWS_DATA_DIR",
    "AgentRegistrations",
    "SpirePlan",
    "agent_config",
    "agent_objects",
    "agent_registrations",
    "check",
    "compile_spire",
    "controller_manager_config",
    "go_duration",
    "host_agent_config",
    "host_agent_kinds",
    "key_manager",
    "needs_expand_env",
    "node_alias_id",
    "node_attestations",
    "oidc_config",
    "oidc_objects",
    "oidc_spiffe_id",
    "passport_registrations",
    "plan_artifacts",
    "registration_objects",
    "server_address",
    "server_config",
    "server_id",
    "server_objects",
    "server_workload",
    "spire_artifacts",
    "spire_problems",
    "trust_domain_id",
    "upstream_plugin",
    "webhook_configuration",
    "webhook_objects",
]
