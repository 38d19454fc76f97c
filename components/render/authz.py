"""Envoy + OPA authorization gateways, the pure half: Kubernetes objects and artifacts.

One gateway per Service manifest with ``spec.gateway: true`` that at least one active agent
calls. Its names, SPIFFE ID and pod labels come from
:func:`components.identity.gateway_identity` only. Per gateway, in the service's namespace:
a ServiceAccount (no token mounted), four ConfigMaps (Envoy bootstrap, OPA config, the fixed
Rego policy, the service's data document), a Deployment running Envoy and OPA
(opa-envoy-plugin), a Service, a PodDisruptionBudget when it runs two or more pods, and a
cluster-scoped ClusterSPIFFEID so SPIRE issues the gateway its X.509-SVID.

:func:`validate_authz` holds every check a user can fail; the component calls it before it
registers anything.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from components.config import authz as authz_config
from components.config.authz import OPA_API_PORT, OPA_GRPC_PORT
from components.errors import ManifestError, Problem
from components.identity import GatewayIdentity
from components.labels import CONFIG_HASH_ANNOTATION, IGNORE_CHANGES_ANNOTATION, REVOCATIONS_LABEL, SHARD_LABEL
from components.manifest.loader import SourcedService
from components.platform_model import Platform
from components.render import envoy, rego
from components.render.artifacts import Artifact, kubernetes_artifacts
from components.render.yamlout import dump_json, dump_yaml
from components.shard import Scope, stack_scope

SUBSYSTEM = "authz"
OPA_DIAGNOSTIC_PORT = authz_config.OPA_DIAGNOSTIC_PORT
"""OPA's /health and /metrics (the only OPA port reachable from outside the pod)."""
SPIRE_API = "spire.spiffe.io/v1alpha1"
LINKERD_OPAQUE_PORTS = "config.linkerd.io/opaque-ports"
RUN_AS = 65532
"""Unprivileged UID/GID of both containers (neither image needs root)."""
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

ENVOY_CONFIG_DIR = "/etc/envoy"
OPA_CONFIG_DIR = "/config"
POLICY_DIR = "/policy"
DATA_DIR = "/data"


# --------------------------------------------------------------------------- validation


def validate_authz(platform: Platform) -> None:
    """Raise ManifestError listing every manifest problem that would break a gateway."""
    problems = authz_problems(platform)
    if problems:
        raise ManifestError(problems)


def authz_problems(platform: Platform) -> list[Problem]:
    """Every manifest problem that would break a gateway.

    (The stack config's own rule, a gateway port clear of the pod's internal ports, is
    checked when the config loads: :class:`components.config.authz.AuthzConfig`.)
    """
    problems: list[Problem] = []
    for svc in rego.gateway_services(platform):
        gw = platform.gateway(svc)
        if gw.name != f"gw-{svc.name}" or not _DNS1035.match(gw.name):
            problems.append(Problem(
                svc.file, svc.line_of(("metadata", "name")), "metadata.name",
                f"{svc.name!r} is {len(svc.name)} characters; its gateway is named "
                f"'gw-<name>', which must fit a 63-character DNS label: shorten the name to at "
                "most 60 characters (or set spec.gateway: false)",
            ))
    return problems


# --------------------------------------------------------------------------- objects


def _meta(gw: GatewayIdentity, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": gw.namespace, "labels": dict(gw.pod_labels)}


def opa_config(platform: Platform, service: SourcedService) -> dict[str, Any]:
    """opa-envoy-plugin configuration: ext_authz on loopback, the decision object, logs."""
    gw = platform.gateway(service)
    out: dict[str, Any] = {
        "labels": {
            "environment": platform.config.environment,
            "gateway": gw.name,
            "service": service.name,
        },
        "plugins": {
            "envoy_ext_authz_grpc": {
                "addr": f"127.0.0.1:{OPA_GRPC_PORT}",
                "path": rego.DECISION_PATH,
                "dry-run": False,
                "enable-reflection": False,
            }
        },
    }
    if platform.config.authz.decision_logs:
        out["decision_logs"] = {"console": True}
    return out


def config_maps(platform: Platform, service: SourcedService) -> list[dict[str, Any]]:
    """Envoy bootstrap, OPA config, Rego policy (+ log mask), and this service's data."""
    gw = platform.gateway(service)
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(gw, f"{gw.name}-envoy"),
         "data": {"envoy.yaml": dump_yaml(envoy.envoy_bootstrap(platform, service))}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(gw, f"{gw.name}-opa"),
         "data": {"config.yaml": dump_yaml(opa_config(platform, service))}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(gw, f"{gw.name}-policy"),
         "data": {"mask.rego": rego.MASK_POLICY, "policy.rego": rego.POLICY}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(gw, f"{gw.name}-data"),
         "data": {"data.json": dump_json(_own_data(platform, service))}},
    ]




def revocations_configmap_name(gw: GatewayIdentity) -> str:
    return f"{gw.name}-revocations"


def revocations_configmap(platform: Platform, service: SourcedService) -> dict[str, Any]:
    """The gateway's revocation list: created empty by ``pulumi up``, then written only by
    ``passport revoke`` (``pulumi up`` never overwrites its data, so it cannot lift a
    revocation). OPA watches it; without it the gateway denies every request."""
    gw = platform.gateway(service)
    meta = _meta(gw, revocations_configmap_name(gw))
    meta["labels"] = {**meta["labels"], REVOCATIONS_LABEL: "true"}
    meta["annotations"] = {IGNORE_CHANGES_ANNOTATION: "data"}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {rego.REVOCATIONS_FILE: dump_json(rego.revocation_document())}}


def _own_data(platform: Platform, service: SourcedService) -> dict[str, Any]:
    """The gateway's own data document: every entry (standalone) or none (a base: shards hold them)."""
    if stack_scope(platform.config) == "shared":
        return rego.base_data([service.name])
    return rego.authz_data(platform, [service.name])


def shard_configmap_name(gw: GatewayIdentity, shard: str) -> str:
    """The ConfigMap a shard stack writes its entries for ``gw`` into."""
    return f"{gw.name}-data-{shard}"


def shard_data_configmaps(platform: Platform) -> list[dict[str, Any]]:
    """A shard's OPA data: per gateway its agents call, one ConfigMap (named with the shard)
    holding ``agentpassport.shards.<shard>``; the base's gateway mounts it (optional)."""
    out = []
    for svc in rego.gateway_services(platform):
        gw = platform.gateway(svc)
        meta = _meta(gw, shard_configmap_name(gw, platform.stack))
        meta["labels"] = {**meta["labels"], SHARD_LABEL: platform.stack}
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                    "data": {"data.json": dump_json(rego.shard_data(platform, [svc.name]))}})
    return out


def _data_volume(platform: Platform, gw: GatewayIdentity, own: str) -> dict[str, Any]:
    """The ``data`` volume: the own ConfigMap, the revocation list (not optional: a pod without
    it does not start), and in a base every listed shard's (optional); flat ``*.json`` files OPA
    merges, and OPA watches the directory."""
    sources: list[dict[str, Any]] = [
        {"configMap": {"name": own, "items": [{"key": "data.json", "path": "data.json"}]}},
        {"configMap": {"name": revocations_configmap_name(gw),
                       "items": [{"key": rego.REVOCATIONS_FILE, "path": rego.REVOCATIONS_FILE}]}},
    ]
    if stack_scope(platform.config) != "shared":
        return {"name": "data", "projected": {"sources": sources}}
    for shard in platform.config.shard.shards:
        sources.append({"configMap": {"name": shard_configmap_name(gw, shard), "optional": True,
                                      "items": [{"key": "data.json", "path": f"{shard}.json"}]}})
    return {"name": "data", "projected": {"sources": sources}}


def _data_args(platform: Platform) -> list[str]:
    """OPA's policy and data paths: the data directory, watched (the revocation list, and a
    base's shard documents, change while it runs), without Kubernetes' ``..data`` internals."""
    return ["--watch", "--ignore=..*", f"{POLICY_DIR}/policy.rego", f"{POLICY_DIR}/mask.rego", DATA_DIR]


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def deployment(platform: Platform, service: SourcedService, maps: list[dict[str, Any]]) -> dict[str, Any]:
    """Envoy + OPA in one pod; a changed ConfigMap rolls the pods (the hash annotation)."""
    gw = platform.gateway(service)
    cfg = platform.config.authz
    digest = hashlib.sha256(
        json.dumps([m["data"] for m in maps], sort_keys=True).encode()
    ).hexdigest()
    port = cfg.gateway_port
    envoy_container = {
        "name": "envoy",
        "image": cfg.envoy_image,
        "command": ["envoy"],
        "args": ["--config-path", f"{ENVOY_CONFIG_DIR}/envoy.yaml", "--disable-hot-restart",
                 "--log-level", "warn"],
        "ports": [{"name": "mtls", "containerPort": port, "protocol": "TCP"}],
        # The listener only opens once SDS delivered the SVID and the bundle.
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "envoy-config", "mountPath": ENVOY_CONFIG_DIR, "readOnly": True},
            {"name": "spiffe-workload-api", "mountPath": envoy.SPIFFE_SOCKET_DIR, "readOnly": True},
        ],
    }
    health = {"port": OPA_DIAGNOSTIC_PORT, "scheme": "HTTP"}
    opa_container = {
        "name": "opa",
        "image": cfg.opa_image,
        "args": [
            "run", "--server",
            f"--addr=127.0.0.1:{OPA_API_PORT}",
            f"--diagnostic-addr=0.0.0.0:{OPA_DIAGNOSTIC_PORT}",
            f"--config-file={OPA_CONFIG_DIR}/config.yaml",
            "--disable-telemetry",
            *_data_args(platform),
        ],
        "livenessProbe": {"httpGet": {"path": "/health", **health}, "periodSeconds": 10},
        "readinessProbe": {"httpGet": {"path": "/health?plugins", **health}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "opa-config", "mountPath": OPA_CONFIG_DIR, "readOnly": True},
            {"name": "policy", "mountPath": POLICY_DIR, "readOnly": True},
            {"name": "data", "mountPath": DATA_DIR, "readOnly": True},
        ],
    }
    names = {m["metadata"]["name"].removeprefix(f"{gw.name}-"): m["metadata"]["name"] for m in maps}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(gw, gw.name),
        "spec": {
            "replicas": cfg.replicas,
            "selector": {"matchLabels": dict(gw.pod_labels)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": dict(gw.pod_labels),
                    "annotations": {CONFIG_HASH_ANNOTATION: digest, LINKERD_OPAQUE_PORTS: str(port)},
                },
                "spec": {
                    "serviceAccountName": gw.name,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [envoy_container, opa_container],
                    "volumes": [
                        {"name": "envoy-config", "configMap": {"name": names["envoy"]}},
                        {"name": "opa-config", "configMap": {"name": names["opa"]}},
                        {"name": "policy", "configMap": {"name": names["policy"]}},
                        _data_volume(platform, gw, names["data"]),
                        {"name": "spiffe-workload-api",
                         "csi": {"driver": "csi.spiffe.io", "readOnly": True}},
                    ],
                },
            },
        },
    }


def cluster_spiffe_id(platform: Platform, service: SourcedService) -> dict[str, Any]:
    """SPIRE registration of the gateway pods: their SVID is ``gateway_identity(...).spiffe_id``.

    The template takes namespace and ServiceAccount from the pod, so a pod that merely copies
    the labels under another ServiceAccount gets a different ID, which no agent trusts.
    """
    gw = platform.gateway(service)
    return {
        "apiVersion": SPIRE_API,
        "kind": "ClusterSPIFFEID",
        "metadata": {"name": f"agentpassport.{gw.name}.{gw.namespace}", "labels": dict(gw.pod_labels)},
        "spec": {
            "className": platform.config.spire.class_name,
            "spiffeIDTemplate": (
                f"spiffe://{gw.trust_domain}/ns/{{{{ .PodMeta.Namespace }}}}"
                "/sa/{{ .PodSpec.ServiceAccountName }}"
            ),
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": gw.namespace}},
            "podSelector": {"matchLabels": dict(gw.pod_labels)},
        },
    }


def gateway_objects(platform: Platform, service: SourcedService) -> list[dict[str, Any]]:
    """Every Kubernetes object of ``service``'s gateway, in apply order."""
    gw = platform.gateway(service)
    cfg = platform.config.authz
    maps = config_maps(platform, service)
    objects: list[dict[str, Any]] = [
        cluster_spiffe_id(platform, service),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(gw, gw.name),
         "automountServiceAccountToken": False},
        *maps,
        revocations_configmap(platform, service),
        deployment(platform, service, maps),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {**_meta(gw, gw.name), "annotations": {LINKERD_OPAQUE_PORTS: str(cfg.gateway_port)}},
            "spec": {
                "selector": dict(gw.pod_labels),
                "ports": [{"name": "mtls", "port": cfg.gateway_port, "targetPort": "mtls",
                           "protocol": "TCP"}],
            },
        },
    ]
    if cfg.replicas >= 2:
        objects.append({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(gw, gw.name),
            "spec": {"minAvailable": 1, "selector": {"matchLabels": dict(gw.pod_labels)}},
        })
    return objects


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class GatewayPlan:
    """One gateway: its service, names and identity, and every Kubernetes object, in apply order."""

    service: SourcedService
    identity: GatewayIdentity
    objects: tuple[dict[str, Any], ...]
    address: str
    """Where agents send requests: ``gw-<service>.<namespace>.svc:<port>`` (mTLS)."""
    principals: tuple[str, ...]
    """SPIFFE IDs with a data entry (active agents granted calls to the service), sorted."""


@dataclass(frozen=True)
class AuthzPlan:
    """The Envoy + OPA gateways of a stack, validated (:func:`compile_authz`): every gateway (a
    standalone or base stack), or a shard's data ConfigMaps for the base's gateways."""

    scope: Scope
    gateways: tuple[GatewayPlan, ...]
    shard_configmaps: tuple[dict[str, Any], ...]

    def gateway(self, service: str) -> GatewayPlan:
        found = next((g for g in self.gateways if g.service.name == service), None)
        if found is None:
            raise ValueError(
                f"{service!r} is not a gateway service (spec.gateway: true and called by an active agent)")
        return found


def compile_authz(platform: Platform) -> AuthzPlan:
    """The gateways of a stack; raises ManifestError listing every problem first."""
    validate_authz(platform)
    scope = stack_scope(platform.config)
    if scope == "agents":  # a shard deploys only its data ConfigMaps
        return AuthzPlan(scope, (), tuple(shard_data_configmaps(platform)))
    port = platform.config.authz.gateway_port
    gateways = []
    for svc in rego.gateway_services(platform):
        gw = platform.gateway(svc)
        gateways.append(GatewayPlan(
            service=svc, identity=gw, objects=tuple(gateway_objects(platform, svc)),
            address=f"{gw.name}.{gw.namespace}.svc:{port}",
            principals=tuple(sorted(rego.service_principals(platform, svc.name))),
        ))
    return AuthzPlan(scope, tuple(gateways), ())


# --------------------------------------------------------------------------- artifacts


def authz_artifacts(platform: Platform) -> Iterable[Artifact]:
    """The authz artifacts of a stack, validated first (nothing when authz is off)."""
    if not platform.config.subsystems.authz:
        return []
    return plan_artifacts(platform, compile_authz(platform))


def plan_artifacts(platform: Platform, plan: AuthzPlan) -> list[Artifact]:
    """``envoy/<service>.yaml``, ``rego/*`` and ``kubernetes/authz/*``."""
    out = [
        Artifact("rego/policy.rego", rego.POLICY),
        Artifact("rego/mask.rego", rego.MASK_POLICY),
        Artifact("rego/data.json", dump_json(rego.stack_data(platform))),
        # the empty revocation list a gateway starts with (`opa test rego/` loads it too)
        Artifact(f"rego/{rego.REVOCATIONS_FILE}", dump_json(rego.revocation_document())),
        Artifact("rego/policy_test.rego", rego.render_tests(rego.rego_cases(platform))),
    ]
    if plan.scope == "agents":  # a shard deploys only its data ConfigMaps
        return out + kubernetes_artifacts(SUBSYSTEM, plan.shard_configmaps)
    for gw in plan.gateways:
        out.append(Artifact(f"envoy/{gw.service.name}.yaml", dump_yaml(envoy.envoy_bootstrap(platform, gw.service))))
        out.extend(kubernetes_artifacts(SUBSYSTEM, gw.objects))
    return out
