"""Registrations: one ClusterSPIFFEID (pods) or ClusterStaticEntry pair (VMs, Windows hosts) per active
agent, and Agent Passport's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from components.config import StackConfig
from components.labels import AGENT_LABEL, MANAGED_BY, NAME_LABEL, SPIRE_SERVER_ANNOTATION
from components.platform_model import Platform, ResolvedAgent
from components.render.spire.names import (
    CRD_GROUP,
    CRD_VERSION,
    OIDC,
    SERVER,
    go_duration,
    node_alias_id,
    oidc_spiffe_id,
    server_id,
)
from components.shard import Scope, deploys_agents, deploys_shared

# --------------------------------------------------------------------------- registrations


SERVER_ANNOTATION = SPIRE_SERVER_ANNOTATION
"""Names the server workload a registration belongs to. The component sets it from the
workload's Output so registrations are created after the server and its CRDs' controller."""


def _cr(kind: str, name: str, agent: str | None, spec: dict[str, Any]) -> dict[str, Any]:
    labels = dict(MANAGED_BY)
    if agent is not None:
        labels[AGENT_LABEL] = agent
    return {
        "apiVersion": f"{CRD_GROUP}/{CRD_VERSION}",
        "kind": kind,
        "metadata": {"name": name, "labels": labels, "annotations": {SERVER_ANNOTATION: SERVER}},
        "spec": spec,
    }


def _spiffeid_spec(
    cfg: StackConfig,
    spiffe_id: str,
    namespace: str,
    service_account: str,
    pod_labels: dict[str, str],
    ttl: str | None = None,
    jwt_ttl: str | None = None,
    dns_names: Iterable[str] = (),
    hint: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "className": cfg.spire.class_name,
        "spiffeIDTemplate": spiffe_id,
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchLabels": dict(sorted(pod_labels.items()))},
        # Pods selected by labels must also run as the ServiceAccount: SPIRE checks these at attestation.
        "workloadSelectorTemplates": [f"k8s:ns:{namespace}", f"k8s:sa:{service_account}"],
    }
    if ttl is not None:
        spec["ttl"] = go_duration(ttl)
    if jwt_ttl is not None:
        spec["jwtTtl"] = go_duration(jwt_ttl)
    dns = list(dns_names)
    if dns:
        spec["dnsNameTemplates"] = dns
    if hint is not None:
        spec["hint"] = hint
    return spec


def agent_registrations(platform: Platform, agent: ResolvedAgent) -> list[dict[str, Any]]:
    """The registration objects of one agent (empty for a suspended agent)."""
    if agent.suspended:
        return []
    cfg = platform.config
    ident = agent.identity
    spec = agent.manifest.spec
    p = spec.platform
    name = agent.name
    if p.kubernetes is not None or (p.windows is not None and p.windows.pod is not None):
        assert ident.namespace is not None and ident.service_account is not None
        labels = dict(p.kubernetes.pod_labels) if p.kubernetes is not None else {}
        return [
            _cr(
                "ClusterSPIFFEID",
                f"agent.{name}",
                name,
                _spiffeid_spec(
                    cfg,
                    ident.spiffe_id,
                    ident.namespace,
                    ident.service_account,
                    labels,
                    ttl=ident.x509_svid_ttl,
                    jwt_ttl=ident.jwt_svid_ttl,
                    dns_names=spec.identity.dns_names,
                    hint=name,
                ),
            )
        ]
    alias = node_alias_id(cfg, name)
    objs: list[dict[str, Any]] = []
    if p.vm is not None:
        workload_selectors = list(p.vm.workload_selectors)
        attestation = p.vm.attestation
        if attestation == "aws_iid":
            assert p.vm.aws_region is not None
            node = [f"aws_iid:region:{p.vm.aws_region}"]
            node += [f"aws_iid:tag:{k}:{v}" for k, v in sorted(p.vm.aws_instance_tags.items())]
            node += list(p.vm.node_selectors)
    else:
        assert p.windows is not None
        attestation = "aws_iid"
        tags = p.windows.ssm_target_tags or {"agentpassport:host-group": p.windows.host_group}
        node = [f"aws_iid:region:{cfg.aws.region}"] + [f"aws_iid:tag:{k}:{v}" for k, v in sorted(tags.items())]
        workload_selectors = [f"windows:user_name:{cfg.windows.netbios_domain}\\{p.windows.gmsa_account}$"]
    if attestation == "aws_iid":
        objs.append(
            _cr(
                "ClusterStaticEntry",
                f"node.{name}",
                name,
                {
                    "className": cfg.spire.class_name,
                    "spiffeID": alias,
                    "parentID": server_id(cfg),
                    "selectors": sorted(set(node)),
                },
            )
        )
    entry: dict[str, Any] = {
        "className": cfg.spire.class_name,
        "spiffeID": ident.spiffe_id,
        "parentID": alias,
        "selectors": sorted(set(workload_selectors)),
        "x509SVIDTTL": go_duration(ident.x509_svid_ttl),
        "jwtSVIDTTL": go_duration(ident.jwt_svid_ttl),
        "hint": name,
    }
    if spec.identity.dns_names:
        entry["dnsNames"] = list(spec.identity.dns_names)
    objs.append(_cr("ClusterStaticEntry", f"agent.{name}", name, entry))
    from components.render.egress import agent_proxy_entry  # imports this package's names: import here

    proxy = agent_proxy_entry(platform, agent)
    if proxy is not None:
        # The agent's Envoy egress proxy holds the agent's identity (docs/authz.md).
        objs.append(_cr("ClusterStaticEntry", f"proxy.{name}", name, proxy))
    return objs


def passport_registrations(platform: Platform) -> list[dict[str, Any]]:
    """Registrations Agent Passport itself needs: the OIDC discovery provider's identity."""
    cfg = platform.config
    return [
        _cr(
            "ClusterSPIFFEID",
            f"platform.{OIDC}",
            None,
            _spiffeid_spec(
                cfg, oidc_spiffe_id(cfg), cfg.spire.namespace, OIDC, {NAME_LABEL: OIDC}, hint=OIDC
            ),
        )
    ]


def registration_objects(platform: Platform, scope: Scope = "all") -> list[dict[str, Any]]:
    """Every registration of the stack, agents in name order, then Agent Passport's own
    (a shard: only its agents'; a base: only the platform's)."""
    out: list[dict[str, Any]] = []
    if deploys_agents(scope):
        for agent in platform.active_agents:
            out += agent_registrations(platform, agent)
    return out + (passport_registrations(platform) if deploys_shared(scope) else [])
