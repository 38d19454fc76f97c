"""Every label, annotation and tag key Agent Passport writes or reads, defined once.

Kubernetes objects carry the ``app.kubernetes.io/*`` recommended labels and our own
``agentpassport.dev/*`` keys; AWS resources carry ``agentpassport.dev/*`` tags. Renderers,
components and tests import them from here. The policy pack keeps its own copies (it imports
nothing from the project, so it runs in the engine's analyzer without it); a test keeps them equal.
"""

from __future__ import annotations

DOMAIN = "agentpassport.dev"

# --------------------------------------------------------------------------- Kubernetes labels

NAME_LABEL = "app.kubernetes.io/name"
PART_OF_LABEL = "app.kubernetes.io/part-of"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "agent-passport"
MANAGED_BY = {MANAGED_BY_LABEL: MANAGED_BY_VALUE}
"""``app.kubernetes.io/managed-by: agent-passport``, on every object the program creates."""

AGENT_LABEL = f"{DOMAIN}/agent"
"""The agent an object belongs to (registrations, policy objects, credential specs)."""
SERVICE_LABEL = f"{DOMAIN}/service"
"""The service a Linkerd policy object protects."""
GATEWAY_LABEL = f"{DOMAIN}/gateway"
"""The service whose Envoy + OPA gateway a pod or object belongs to."""
SHARD_LABEL = f"{DOMAIN}/shard"
"""The shard stack that wrote a gateway's data ConfigMap."""
REVOCATIONS_LABEL = f"{DOMAIN}/revocations"
"""A gateway's revocation-list ConfigMap (``passport revoke`` finds them by it)."""
SCRAPE_JOB_LABEL = f"{DOMAIN}/scrape-job"
"""The Prometheus job name a scraped pod's metrics are relabelled to."""
GATEWAY_APP = "agentpassport-gateway"
"""``app.kubernetes.io/name`` of every gateway pod."""

# --------------------------------------------------------------------------- annotations

CONFIG_HASH_ANNOTATION = f"{DOMAIN}/config-sha256"
"""A gateway pod's hash of its ConfigMaps: a changed config rolls the pods."""
IGNORE_CHANGES_ANNOTATION = f"{DOMAIN}/ignore-changes"
"""Comma-separated top-level fields of a rendered object that ``pulumi up`` creates and then never
overwrites (e.g. a gateway's revocation list, written by ``passport revoke``)."""
SPIRE_SERVER_ANNOTATION = f"{DOMAIN}/spire-server"
"""Names the SPIRE server workload a registration belongs to (it is created after the server)."""

# --------------------------------------------------------------------------- AWS tags

TRUST_DOMAIN_TAG = f"{DOMAIN}/trust-domain"
LINKERD_ANCHOR_TAG = f"{DOMAIN}/linkerd-anchor"
