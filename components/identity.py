"""The one place an agent's identity is derived.

Every consumer — SPIRE registrations, Linkerd MeshTLSAuthentication, OPA data, Vault bound
subjects, AWS trust conditions, database user names — takes its names from
:class:`AgentIdentity`; nothing else formats a SPIFFE ID or a mesh identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.durations import seconds
from components.labels import GATEWAY_APP, GATEWAY_LABEL, NAME_LABEL
from components.manifest.models import AgentManifest, DatabaseGrant


@dataclass(frozen=True)
class AgentIdentity:
    """Names and lifetimes of one agent in one trust domain."""

    name: str
    team: str
    trust_domain: str
    spiffe_path: str
    platform: str
    x509_svid_ttl: str
    jwt_svid_ttl: str
    jwt_audiences: tuple[str, ...]
    namespace: str | None
    service_account: str | None
    cluster_domain: str
    mesh_control_plane: str = "linkerd"
    """Namespace of Linkerd's control plane: part of every Linkerd identity."""

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{self.trust_domain}{self.spiffe_path}"

    @property
    def x509_svid_ttl_seconds(self) -> int:
        return seconds(self.x509_svid_ttl)

    @property
    def jwt_svid_ttl_seconds(self) -> int:
        return seconds(self.jwt_svid_ttl)

    @property
    def linkerd_identity(self) -> str | None:
        """Linkerd's DNS-form mesh identity; only for pods meshed by Linkerd (Linux pods)."""
        if self.platform != "kubernetes" or self.namespace is None or self.service_account is None:
            return None
        return (
            f"{self.service_account}.{self.namespace}.serviceaccount.identity.{self.mesh_control_plane}."
            f"{self.cluster_domain}"
        )

    @property
    def vault_role(self) -> str:
        """Vault auth role (JWT or cert) the agent logs in with."""
        return f"agent-{self.name}"

    @property
    def vault_policy(self) -> str:
        return f"agent-{self.name}"

    def database_role(self, grant: DatabaseGrant) -> str:
        """Vault database role for one grant: unique per agent, cluster and database."""
        return f"{self.name}-{grant.cluster}-{grant.database}".lower().replace("_", "-")

    def aws_role_name(self, role: str) -> str:
        return f"{self.name}-{role}"[:64]


def default_spiffe_path(manifest: AgentManifest) -> str:
    """Derived path when the manifest sets none (SPIRE's conventional layout)."""
    platform = manifest.spec.platform
    if platform.kubernetes is not None:
        return f"/ns/{platform.kubernetes.namespace}/sa/{platform.kubernetes.service_account}"
    if platform.windows is not None:
        group = "".join(c if c.isalnum() or c in "._-" else "-" for c in platform.windows.host_group.lower())
        return f"/windows/{group}/{platform.windows.gmsa_account.lower()}"
    return f"/vm/{manifest.metadata.name}"


def derive_identity(
    manifest: AgentManifest, trust_domain: str, cluster_domain: str, mesh_control_plane: str = "linkerd"
) -> AgentIdentity:
    """The agent's identity in a trust domain; pure, deterministic."""
    spec = manifest.spec
    namespace = service_account = None
    if spec.platform.kubernetes is not None:
        namespace = spec.platform.kubernetes.namespace
        service_account = spec.platform.kubernetes.service_account
    elif spec.platform.windows is not None and spec.platform.windows.pod is not None:
        namespace = spec.platform.windows.pod.namespace
        service_account = spec.platform.windows.pod.service_account
    return AgentIdentity(
        name=manifest.metadata.name,
        team=manifest.metadata.team,
        trust_domain=trust_domain,
        spiffe_path=spec.identity.spiffe_path or default_spiffe_path(manifest),
        platform=spec.platform.kind,
        x509_svid_ttl=spec.identity.x509_svid_ttl,
        jwt_svid_ttl=spec.identity.jwt_svid_ttl,
        jwt_audiences=tuple(spec.identity.jwt_audiences),
        namespace=namespace,
        service_account=service_account,
        cluster_domain=cluster_domain,
        mesh_control_plane=mesh_control_plane,
    )


@dataclass(frozen=True)
class GatewayIdentity:
    """The Envoy + OPA gateway in front of one service (its pods, mesh and SPIFFE identity)."""

    service: str
    namespace: str
    trust_domain: str
    cluster_domain: str
    mesh_control_plane: str = "linkerd"

    @property
    def name(self) -> str:
        """Deployment, ServiceAccount and Service name of the gateway."""
        return f"gw-{self.service}"[:63]

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.name}"

    @property
    def linkerd_identity(self) -> str:
        return (f"{self.name}.{self.namespace}.serviceaccount.identity.{self.mesh_control_plane}."
                f"{self.cluster_domain}")

    @property
    def pod_labels(self) -> dict[str, str]:
        return {NAME_LABEL: GATEWAY_APP, GATEWAY_LABEL: self.service}


def gateway_identity(
    service: str, namespace: str, trust_domain: str, cluster_domain: str, mesh_control_plane: str = "linkerd"
) -> GatewayIdentity:
    return GatewayIdentity(service, namespace, trust_domain, cluster_domain, mesh_control_plane)
