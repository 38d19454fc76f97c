"""What every observe object shares: scrape job names, the pods and ports the monitors select, labels
and metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.labels import COMPONENT_LABEL, GATEWAY_APP, GATEWAY_LABEL, NAME_LABEL, PART_OF_LABEL
from components.platform_model import Platform
from components.render import spire as spire_render

MONITORING_API = "monitoring.coreos.com/v1"
ECS_VERSION = "8.17.0"
DASHBOARD_UID = "agentpassport-identity"
DASHBOARD_FILE = "agentpassport-identity.json"

# Scrape jobs: the monitors relabel ``job`` to these names so every rule can select on them.
JOB_SPIRE_SERVER = "agentpassport-spire-server"
JOB_SPIRE_AGENT = "agentpassport-spire-agent"
JOB_OPA = "agentpassport-opa"
JOB_LINKERD_IDENTITY = "agentpassport-linkerd-identity"
JOB_VAULT = "agentpassport-vault"

# Pods the monitors select: the labels and ports the SPIRE and authz renderers give them.
SPIRE_SERVER_POD_LABELS = {NAME_LABEL: spire_render.SERVER}
SPIRE_AGENT_POD_LABELS = {NAME_LABEL: spire_render.AGENT}
SPIRE_AGENT_DAEMONSET = spire_render.AGENT
GATEWAY_POD_LABEL = (NAME_LABEL, GATEWAY_APP)
GATEWAY_SERVICE_LABEL = GATEWAY_LABEL
LINKERD_IDENTITY_POD_LABELS = {"linkerd.io/control-plane-component": "identity"}
LINKERD_IDENTITY_ADMIN_PORT = 9990

# gRPC codes that are not rejections: clients closing Workload API streams end them Canceled.
_NOT_REJECTED = "OK|Canceled"

# Vault paths every agent token may use besides its grants (its own token and leases).
VAULT_SELF_PATHS = (
    "auth/token/lookup-self",
    "auth/token/renew-self",
    "auth/token/revoke-self",
    "sys/leases/lookup",
    "sys/leases/renew",
)


def common_labels(platform: Platform) -> dict[str, str]:
    return {PART_OF_LABEL: "agent-passport", COMPONENT_LABEL: "observe"}


def _meta(platform: Platform, name: str, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    obs = platform.config.observe
    labels = common_labels(platform) | dict(sorted(obs.selector_labels.items())) | dict(extra or {})
    return {"name": name, "namespace": obs.namespace, "labels": dict(sorted(labels.items()))}
