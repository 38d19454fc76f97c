"""SPIRE section: server, agents, controller manager, OIDC discovery."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from components.config.base import SecretRef, Section
from components.durations import Duration, seconds

CA_ROTATION_FACTOR = 6
"""SPIRE prepares its next CA at half of caTtl and switches at 5/6 of it; an X.509-SVID must not
outlive that switch, so it lives at most caTtl/6."""


def ca_rotation_problem(svid_ttl: str, ca_ttl: str) -> str | None:
    """The caTtl/6 rule, the one home of it (the stack's default SVID TTL and every agent's go
    through here): why ``svid_ttl`` is too long for SPIRE's CA rotation, or None."""
    if seconds(svid_ttl) * CA_ROTATION_FACTOR > seconds(ca_ttl):
        return (f"{svid_ttl} is above caTtl/{CA_ROTATION_FACTOR} ({ca_ttl}/{CA_ROTATION_FACTOR}): SPIRE could "
                "not rotate its CA before the SVID expires")
    return None


class SpireConfig(Section):
    """How SPIRE runs in this stack."""

    namespace: str = Field(default="spire-system", description="Namespace of the SPIRE server and agents.")
    cluster_name: str | None = Field(
        default=None, description="Cluster name used by k8s_psat (default: the environment name)."
    )
    version: str = Field(
        default="1.15.3",
        description="SPIRE release (server, agent, OIDC provider images); the tests run this release's binaries.",
    )
    controller_manager_version: str = Field(
        default="0.6.6", description="spire-controller-manager release (the CRD schemas tested against are v0.6.6)."
    )
    ca_ttl: Duration = Field(default="24h", description="Lifetime of SPIRE's own signing CA (ca_ttl).")
    ca_key_type: Literal["ec-p256", "ec-p384"] = Field(default="ec-p256", description="SPIRE CA key type.")
    default_x509_svid_ttl: Duration = Field(default="15m", description="X.509-SVID TTL when an entry sets none.")
    default_jwt_svid_ttl: Duration = Field(default="5m", description="JWT-SVID TTL when an entry sets none.")
    datastore: Literal["sqlite3", "postgres"] = Field(
        default="sqlite3", description="sqlite3 (single replica, dev) or postgres (HA)."
    )
    datastore_connection_secret: SecretRef | None = Field(
        default=None, description="Secret config key holding the postgres connection string."
    )
    replicas: int = Field(default=1, ge=1, le=9, description="SPIRE server replicas (≥2 needs postgres).")
    jwt_issuer: str | None = Field(
        default=None,
        description="JWT issuer URL (the OIDC discovery provider's public URL). Default: "
        "https://oidc-discovery.<trustDomain>.",
    )
    class_name: str = Field(
        default="agent-passport",
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$",
        description="spire-controller-manager className: it only manages entries of this class.",
    )
    csi_driver_version: str = Field(
        default="0.2.7", description="SPIFFE CSI driver release (csi.spiffe.io, mounts the Workload API)."
    )
    node_driver_registrar_version: str = Field(
        default="v2.12.0", description="Kubernetes CSI node-driver-registrar release for the SPIFFE CSI driver."
    )
    skip_kubelet_verification: bool = Field(
        default=False,
        description="Let the k8s workload attestor skip verifying the kubelet's serving certificate. "
        "Hazard: only for clusters whose kubelets serve self-signed certificates (kind, minikube); "
        "a spoofed kubelet could then feed the agent false pod data.",
    )
    vm_server_address: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.-]+:[0-9]{1,5}$",
        description="host:port that SPIRE agents on VMs and Windows hosts dial (an internal load "
        "balancer or DNS name in front of the spire-server Service). Default: the in-cluster Service "
        "name, which only resolves inside the cluster.",
    )
    key_manager: Literal["disk", "aws_kms"] = Field(
        default="disk",
        description="Where the SPIRE server keeps its CA and JWT signing keys. disk: a file in "
        "the server's data volume (never in Pulumi state); aws_kms: AWS KMS keys in aws.region "
        "(the key never leaves KMS; the server's ServiceAccount needs a KMS role, e.g. IRSA).",
    )
    controller_manager_webhook: bool = Field(
        default=True,
        description="Register spire-controller-manager's validating webhook for ClusterSPIFFEID / "
        "ClusterStaticEntry objects. Turn off only where no pod can answer it (a bare local API "
        "server without a kubelet), since the webhook fails closed.",
    )
    log_level: Literal["DEBUG", "INFO", "WARN", "ERROR"] = Field(
        default="INFO", description="Log level of the SPIRE server, agents and OIDC discovery provider."
    )
