"""Resource policies on Kubernetes objects: ServiceAccount tokens, Linkerd's default inbound policy,
gMSA credential specs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .secrets import text_findings
from .tokens import AGENT_LABEL, GATEWAY_LABEL, GMSA_CREDSPECS, WORKLOADS, T
from .values import (
    UNKNOWN,
    _cfg,
    _props,
    _schema,
    agent_of,
    agent_prefix,
    as_dict,
    as_list,
    containers,
    dig,
    labels_of,
    pod_spec,
)

# no-service-account-token-secrets ------------------------------------------------


def _no_sa_token_secrets(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != T.K8S_SECRET:
        return
    props = _props(args)
    if props.get("type") != "kubernetes.io/service-account-token":
        return
    sa = dig(props, "metadata", "annotations", "kubernetes.io/service-account.name")
    whose = f" for ServiceAccount {sa!r}" if isinstance(sa, str) else ""
    report(f"{agent_prefix(agent_of(args.resource_type, args.name, props))}Secret {args.name!r} "
           f"of type kubernetes.io/service-account-token{whose} holds a token that never expires",
           None)


# no-automounted-token-with-spiffe ------------------------------------------------


def uses_spiffe(spec: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    """Pods that get SPIFFE identities: the SPIFFE CSI volume, the socket env var, our labels."""
    if AGENT_LABEL in labels or GATEWAY_LABEL in labels:
        return True
    for v in as_list(spec.get("volumes")):
        if dig(v, "csi", "driver") == "csi.spiffe.io":
            return True
    for c in containers(spec):
        for e in as_list(c.get("env")):
            if isinstance(e, dict) and e.get("name") == "SPIFFE_ENDPOINT_SOCKET":
                return True
    return False


def _no_automounted_token(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == T.K8S_SERVICE_ACCOUNT:
        props = _props(args)
        agent = as_dict(dig(props, "metadata", "labels")).get(AGENT_LABEL)
        if agent and props.get("automountServiceAccountToken") is not False:
            report(f"agent {agent}: ServiceAccount {args.name!r} leaves "
                   "automountServiceAccountToken on", None)
        return
    if args.resource_type not in WORKLOADS:
        return
    props = _props(args)
    spec = pod_spec(args.resource_type, props)
    if not spec or not uses_spiffe(spec, labels_of(props)):
        return
    if spec.get("automountServiceAccountToken") is UNKNOWN:
        return
    if spec.get("automountServiceAccountToken") is not False:
        report(f"{agent_prefix(agent_of(args.resource_type, args.name, props))}pods of "
               f"{args.name!r} use SPIFFE identities but still mount a Kubernetes "
               "ServiceAccount token (automountServiceAccountToken is not false)", None)


# linkerd-default-inbound-policy -----------------------------------------------------------

INBOUND_SCHEMA = _schema(allowedPolicies={
    "type": "array", "items": {"type": "string"},
    "default": ["deny", "all-authenticated", "cluster-authenticated"],
    "description": "Default inbound policies meshed namespaces and Servers may use.",
})
INBOUND_ANNOTATION = "config.linkerd.io/default-inbound-policy"


def _linkerd_inbound(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    if t not in (T.K8S_NAMESPACE, T.LINKERD_SERVER):
        return
    props = _props(args)
    allowed = _cfg(args, INBOUND_SCHEMA)["allowedPolicies"]
    if t == T.LINKERD_SERVER:
        policy = dig(props, "spec", "accessPolicy")
        if isinstance(policy, str) and policy not in allowed:
            report(f"Server {args.name!r} sets accessPolicy {policy}", None)
        return
    annotations = as_dict(dig(props, "metadata", "annotations"))
    if annotations.get("linkerd.io/inject") != "enabled":
        return
    policy = annotations.get(INBOUND_ANNOTATION)
    if policy is UNKNOWN:
        return
    if policy is None:
        report(f"meshed namespace {args.name!r} has no {INBOUND_ANNOTATION} annotation, so "
               "Linkerd's cluster default (all-unauthenticated unless changed) applies", None)
    elif policy not in allowed:
        report(f"meshed namespace {args.name!r} sets {INBOUND_ANNOTATION}={policy}", None)


# gmsa-no-stored-credentials -----------------------------------------------------------------

GMSA_SCHEMA = _schema(allowStoredCredentials={
    "type": "boolean", "default": False,
    "description": "Tolerate credspecs whose CCG plugin reads a stored credential (non-domain-"
                   "joined hosts). Literal credentials in PluginInput are refused regardless.",
})


def _gmsa_no_stored_credentials(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in GMSA_CREDSPECS:
        return
    props = _props(args)
    host = dig(props, "credspec", "ActiveDirectoryConfig", "HostAccountConfig")
    if not isinstance(host, dict):
        return
    plugin_input = host.get("PluginInput")
    who = agent_prefix(agent_of(args.resource_type, args.name, props))
    if isinstance(plugin_input, str) and (text_findings(plugin_input) or re.search(
            r"(?i)password|[^\s:\\/]+\\[^\s:]+:[^\s]+", plugin_input)):
        report(f"{who}credspec {args.name!r} carries a literal credential in HostAccountConfig."
               "PluginInput", None)
        return
    if not _cfg(args, GMSA_SCHEMA)["allowStoredCredentials"]:
        report(f"{who}credspec {args.name!r} has a HostAccountConfig: its CCG plugin retrieves "
               "the gMSA with a stored domain-user credential", None)
