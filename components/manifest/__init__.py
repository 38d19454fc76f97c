"""Agent and service manifests: models, loader, JSON Schema."""

from components.manifest.loader import ManifestSet, SourcedAgent, SourcedService, load_manifests
from components.manifest.models import AgentManifest, Grant, ServiceManifest

__all__ = [
    "AgentManifest",
    "Grant",
    "ManifestSet",
    "ServiceManifest",
    "SourcedAgent",
    "SourcedService",
    "load_manifests",
]
