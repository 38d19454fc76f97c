"""Stack policies resource-count-ceiling and grants-enforced: every granted call has a gateway or mesh
route that enforces it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy import ReportViolation, StackValidationArgs

from .tokens import GATEWAY_LABEL, SERVICE_LABEL, WORKLOADS, T
from .values import _cfg, _schema, as_dict, as_list, dig, find_bom, labels_of, name_tokens, plain, strings

# resource-count-ceiling ----------------------------------------------------------------------

COUNT_SCHEMA = _schema(maxResources={"type": "integer", "default": 5000, "minimum": 1,
                                     "description": "Most resources one stack may hold."})


def _resource_count(args: StackValidationArgs, report: ReportViolation) -> None:
    limit = int(_cfg(args, COUNT_SCHEMA)["maxResources"])
    count = sum(1 for r in args.resources if r.resource_type != T.STACK)
    if count > limit:
        report(f"the stack holds {count} resources, above the ceiling of {limit}; split it into "
               "shards", None)


# grants-enforced -----------------------------------------------------------------------------


def _tokens(*texts: str) -> set[str]:
    """Every run of whole dash-separated tokens in the words of some texts."""
    found: set[str] = set()
    for text in texts:
        for word in re.split(r"[^a-z0-9-]+", text.lower()):
            if word:
                found.update(name_tokens(word))
    return found


Key = tuple[str, str]  # (namespace, name) of a namespaced object


@dataclass
class _Enforcement:
    """What the stack deploys that can enforce grants, indexed once per evaluation."""

    authn_by_identity: dict[str, set[Key]] = field(default_factory=dict)  # Linkerd identity -> authns
    authn_by_account: dict[Key, set[Key]] = field(default_factory=dict)  # (namespace, SA) -> authns
    targets_by_authn: dict[Key, list[set[str]]] = field(default_factory=dict)  # authn -> policy tokens
    gateways: set[str] = field(default_factory=set)
    data_texts: list[str] = field(default_factory=list)
    data_by_service: dict[str, list[str]] = field(default_factory=dict)
    db_roles: set[str] = field(default_factory=set)  # Vault database role names
    iam_roles: set[str] = field(default_factory=set)
    vault_policies: dict[str, str] = field(default_factory=dict)  # Vault policy name -> HCL

    def data_for(self, service: str) -> list[str]:
        """ConfigMap data mentioning a service (computed once per service)."""
        if service not in self.data_by_service:
            self.data_by_service[service] = [t for t in self.data_texts if service in t]
        return self.data_by_service[service]


def _index(args: StackValidationArgs) -> _Enforcement:
    ix = _Enforcement()
    for r in args.resources:
        t = r.resource_type
        if t not in (T.LINKERD_MESH_TLS_AUTHN, T.LINKERD_AUTHZ_POLICY, T.K8S_CONFIGMAP, T.VAULT_DB_ROLE,
                     T.IAM_ROLE, T.VAULT_POLICY) and t not in WORKLOADS:
            continue
        p = plain(r.props)
        key = (str(dig(p, "metadata", "namespace") or ""), str(dig(p, "metadata", "name") or r.name))
        if t == T.LINKERD_MESH_TLS_AUTHN:
            for identity in as_list(dig(p, "spec", "identities")):
                if isinstance(identity, str) and identity != "*":
                    ix.authn_by_identity.setdefault(identity, set()).add(key)
            for ref in as_list(dig(p, "spec", "identityRefs")):
                if isinstance(ref, dict) and ref.get("kind") == "ServiceAccount" and ref.get("name"):
                    account = (str(ref.get("namespace") or key[0]), str(ref["name"]))
                    ix.authn_by_account.setdefault(account, set()).add(key)
        elif t == T.LINKERD_AUTHZ_POLICY:
            tokens = _tokens(r.name, key[1], str(dig(p, "spec", "targetRef", "name") or ""))
            service = labels_of(p).get(SERVICE_LABEL)
            if isinstance(service, str):
                tokens.add(service)
            for ref in as_list(dig(p, "spec", "requiredAuthenticationRefs")):
                if isinstance(ref, dict) and ref.get("kind") == "MeshTLSAuthentication":
                    authn = (str(ref.get("namespace") or key[0]), str(ref.get("name")))
                    ix.targets_by_authn.setdefault(authn, []).append(tokens)
        elif t in WORKLOADS:
            gw = labels_of(p).get(GATEWAY_LABEL)
            if isinstance(gw, str):
                ix.gateways.add(gw)
        elif t == T.K8S_CONFIGMAP:
            ix.data_texts.append("\n".join(strings(p.get("data"))))
        elif t == T.VAULT_DB_ROLE:
            ix.db_roles.add(str(p.get("name") or r.name))
        elif t == T.IAM_ROLE:
            ix.iam_roles.add(str(p.get("name") or r.name))
        elif t == T.VAULT_POLICY:
            ix.vault_policies[str(p.get("name") or r.name)] = str(p.get("policy") or "")
    return ix


def _mesh_enforces(ix: _Enforcement, mesh_identity: str, service: str) -> bool:
    """A Linkerd AuthorizationPolicy about the service requires an authn naming the identity."""
    sa, _, rest = mesh_identity.partition(".")
    namespace = rest.split(".", 1)[0]
    authns = ix.authn_by_identity.get(mesh_identity, set()) | ix.authn_by_account.get((namespace, sa), set())
    return any(service in tokens for authn in authns for tokens in ix.targets_by_authn.get(authn, []))


def _http_problem(ix: _Enforcement, info: Mapping[str, Any], grant: Mapping[str, Any]) -> str | None:
    service = str(grant.get("service"))
    subsystems = as_list(info.get("subsystems"))
    points: list[str] = []
    missing: list[str] = []
    if "mesh" in subsystems and isinstance(info.get("meshIdentity"), str):
        if _mesh_enforces(ix, str(info["meshIdentity"]), service):
            points.append("linkerd")
        else:
            missing.append("no Linkerd AuthorizationPolicy for the service requires a "
                           f"MeshTLSAuthentication naming {info['meshIdentity']}")
    if "authz" in subsystems and service in ix.gateways:
        sid = str(info.get("spiffeId"))
        if any(sid in text for text in ix.data_for(service)):
            points.append("opa")
        else:
            missing.append(f"the gateway of {service} has no OPA data naming {sid}")
    if missing:
        return f"http grant to {service}: " + "; ".join(missing)
    if not points:
        return f"http grant to {service} is enforced nowhere (no Linkerd policy, no OPA gateway)"
    return None


def _grants_enforced(args: StackValidationArgs, report: ReportViolation) -> None:
    bom = find_bom(args.resources)
    if bom is None:
        args.not_applicable("the stack exports no identityBom")
        return
    ix = _index(args)
    for agent, raw in sorted(as_dict(bom.get("agents")).items()):
        info = as_dict(raw)
        if info.get("suspended") is True:
            continue
        subsystems = as_list(info.get("subsystems"))
        for raw_grant in as_list(info.get("grants")):
            grant = as_dict(raw_grant)
            kind = grant.get("kind")
            problem: str | None = None
            if kind == "http":
                problem = _http_problem(ix, info, grant)
            elif kind == "database" and "vault" in subsystems:
                # the role name components.identity.AgentIdentity.database_role derives
                role = f"{agent}-{grant.get('cluster')}-{grant.get('database')}".lower().replace("_", "-")
                if role not in ix.db_roles:
                    problem = (f"database grant on {grant.get('cluster')}/{grant.get('database')} has "
                               f"no Vault database role {role}")
            elif kind == "aws" and "aws" in subsystems:
                role = f"{agent}-{grant.get('role')}"[:64]
                if role not in ix.iam_roles:
                    problem = f"aws grant {grant.get('role')!r} has no IAM role {role}"
            elif kind == "vault" and "vault" in subsystems:
                path = str(grant.get("path"))
                policy = ix.vault_policies.get(f"agent-{agent}", "")
                if f'path "{path}"' not in policy:
                    problem = f"vault grant on {path} is not a path of the agent's Vault policy agent-{agent}"
            if problem:
                report(f"agent {agent}: {problem}", None)
