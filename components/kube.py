"""Register rendered Kubernetes objects (plain dicts) as typed pulumi-kubernetes resources.

Renderers in :mod:`components.render` produce native Kubernetes objects (camelCase dicts);
the same dict is written by ``passport render`` and registered here, so the reviewed YAML
and the deployed object cannot drift. Built-in kinds use the typed SDK classes (real type
tokens such as ``kubernetes:apps/v1:Deployment``); custom resources use ``CustomResource``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.labels import IGNORE_CHANGES_ANNOTATION

_TYPED: dict[tuple[str, str], Any] = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("v1", "Service"): k8s.core.v1.Service,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("apps/v1", "StatefulSet"): k8s.apps.v1.StatefulSet,
    ("apps/v1", "DaemonSet"): k8s.apps.v1.DaemonSet,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): k8s.rbac.v1.ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): k8s.rbac.v1.ClusterRoleBinding,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("storage.k8s.io/v1", "CSIDriver"): k8s.storage.v1.CSIDriver,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
}

_TOP_LEVEL = {
    "metadata": "metadata", "spec": "spec", "data": "data", "binaryData": "binary_data",
    "stringData": "string_data", "type": "type", "immutable": "immutable", "rules": "rules",
    "roleRef": "role_ref", "subjects": "subjects", "aggregationRule": "aggregation_rule",
    "automountServiceAccountToken": "automount_service_account_token",
    "imagePullSecrets": "image_pull_secrets", "secrets": "secrets",
}


def object_key(obj: Mapping[str, Any]) -> str:
    """Stable, unique-per-cluster key of an object: kind[-namespace]-name (lowercase)."""
    meta = obj.get("metadata") or {}
    parts = [str(obj["kind"]).lower(), meta.get("namespace"), meta["name"]]
    return "-".join(str(p) for p in parts if p)


class _CustomResourceBody(k8s.apiextensions.CustomResource):
    """A custom resource whose body has top-level fields besides ``spec`` (GMSACredentialSpec's
    ``credspec``): ``CustomResource``'s constructor accepts only ``spec``, so the whole object is
    registered as is, with the same type token (``kubernetes:<apiVersion>:<kind>``)."""

    def __init__(self, resource_name: str, obj: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        version = k8s._utilities.get_version()  # type: ignore[no-untyped-call]
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(version=version))
        pulumi.CustomResource.__init__(self, f"kubernetes:{obj['apiVersion']}:{obj['kind']}", resource_name, obj, opts)




def kube_object(resource_name: str, obj: Mapping[str, Any], parent: pulumi.Resource,
                depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.CustomResource:
    """Register one object with ``parent`` as its parent (and provider source)."""
    api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    ignored = [f for f in str(annotations.get(IGNORE_CHANGES_ANNOTATION, "")).split(",") if f]
    opts = pulumi.ResourceOptions(parent=parent, ignore_changes=ignored or None,
                                  depends_on=list(depends_on) or None)
    cls = _TYPED.get((api_version, kind))
    if cls is None:
        extra = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        if set(extra) - {"spec"}:
            return _CustomResourceBody(resource_name, dict(obj), opts)
        return k8s.apiextensions.CustomResource(
            resource_name, api_version=api_version, kind=kind, metadata=obj.get("metadata"),
            opts=opts, **extra,
        )
    kwargs = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if key not in _TOP_LEVEL:
            raise ValueError(f"{kind} field {key!r} has no mapping in components.kube")
        kwargs[_TOP_LEVEL[key]] = value
    resource: pulumi.CustomResource = cls(resource_name, opts=opts, **kwargs)
    return resource


def kube_objects(
    prefix: str, objects: Sequence[Mapping[str, Any]], parent: pulumi.Resource,
    namespaces: Mapping[str, pulumi.Resource] | None = None,
) -> dict[str, pulumi.CustomResource]:
    """Register many objects; resource names are ``<prefix>-<object_key>`` and must be unique.

    An object in a namespace this stack creates is created after that Namespace: the ones in
    ``objects`` (registered first) and the ones in ``namespaces`` (created by another component).
    The API server refuses an object whose namespace does not exist yet, and the engine would
    otherwise create both at once.
    """
    out: dict[str, pulumi.CustomResource] = {}
    created_ns: dict[str, pulumi.Resource] = dict(namespaces or {})
    ordered = sorted(objects, key=lambda o: o["kind"] != "Namespace")  # stable: Namespaces first
    for obj in ordered:
        key = object_key(obj)
        if key in out:
            raise ValueError(f"two rendered objects share the key {key!r}")
        ns = (obj.get("metadata") or {}).get("namespace")
        after = [created_ns[ns]] if ns in created_ns else []
        out[key] = kube_object(f"{prefix}-{key}", obj, parent, after)
        if obj["kind"] == "Namespace":
            created_ns[obj["metadata"]["name"]] = out[key]
    return out


# Kinds whose readiness pulumi-kubernetes awaits (a bare API server never makes them ready).
AWAITED_TYPES = frozenset(
    f"kubernetes:{t}"
    for t in ("apps/v1:Deployment", "apps/v1:StatefulSet", "apps/v1:DaemonSet", "core/v1:Service",
              "batch/v1:Job", "core/v1:PersistentVolumeClaim", "networking.k8s.io/v1:Ingress", "core/v1:Pod")
)
SKIP_AWAIT_ANNOTATION = "pulumi.com/skipAwait"


PATCH_FORCE_ANNOTATION = "pulumi.com/patchForce"


def _annotated(args: pulumi.ResourceTransformationArgs, key: str) -> pulumi.ResourceTransformationResult:
    props = dict(args.props)
    meta = props.get("metadata")
    meta = dict(meta) if isinstance(meta, Mapping) else {}
    meta["annotations"] = {**dict(meta.get("annotations") or {}), key: "true"}
    props["metadata"] = meta
    return pulumi.ResourceTransformationResult(props, args.opts)


def skip_await(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
    """Transformation for ``kubernetes.skipAwait``: annotate awaited kinds so `up` does not wait
    for pods that an API server without nodes never runs. Everything else is left unchanged."""
    return _annotated(args, SKIP_AWAIT_ANNOTATION) if args.type_ in AWAITED_TYPES else None


def adopt(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
    """Transformation for `passport recover`'s adopting pass: objects a crashed run created but did
    not record may carry fields owned by that run's field manager; ``patchForce`` takes them over
    (the next, normal `up` then drops the annotation again)."""
    if not args.type_.startswith("kubernetes:") or args.type_ == "pulumi:providers:kubernetes":
        return None
    return _annotated(args, PATCH_FORCE_ANNOTATION)
