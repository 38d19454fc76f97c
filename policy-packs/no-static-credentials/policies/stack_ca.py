"""Stack policies no-state-root-key-in-prod and ca-chain-lifetimes."""

from __future__ import annotations

import re

from pulumi_policy import ReportViolation, StackValidationArgs

from .tokens import TLS_CERTS, T
from .values import _cfg, _resources, _schema, human, stack_of

# no-state-root-key-in-prod --------------------------------------------------------------------

ROOT_KEY_SCHEMA = _schema(productionStacks={
    "type": "array", "items": {"type": "string"}, "default": ["^prod"],
    "description": "Regular expressions matching production stack names.",
})


def _no_state_root_key(args: StackValidationArgs, report: ReportViolation) -> None:
    patterns = _cfg(args, ROOT_KEY_SCHEMA)["productionStacks"]
    resources = _resources(args, {T.TLS_PRIVATE_KEY, T.TLS_SELF_SIGNED_CERT})
    keys = {r.urn: r for r in resources if r.type == T.TLS_PRIVATE_KEY}
    for cert in resources:
        if cert.type != T.TLS_SELF_SIGNED_CERT or cert.props.get("isCaCertificate") is not True:
            continue
        stack = stack_of(cert.urn)
        if not any(re.search(p, stack) for p in patterns):
            continue
        key = next((keys[d] for d in cert.dependencies if d in keys), None)
        target = key or cert
        report(f"root CA {cert.name!r} of production stack {stack} is signed by "
               f"{'tls PrivateKey ' + repr(key.name) if key else 'a key'} kept in Pulumi state", target.urn)


# ca-chain-lifetimes -----------------------------------------------------------------------------


def _ca_chain_lifetimes(args: StackValidationArgs, report: ReportViolation) -> None:
    certs = {r.urn: r for r in _resources(args, TLS_CERTS)}
    for cert in certs.values():
        if cert.type != T.TLS_LOCALLY_SIGNED_CERT:
            continue
        hours = cert.props.get("validityPeriodHours")
        if not isinstance(hours, int | float):
            continue
        for dep in cert.dependencies:
            issuer = certs.get(dep)
            if issuer is None or issuer.props.get("isCaCertificate") is not True:
                continue
            parent_hours = issuer.props.get("validityPeriodHours")
            if isinstance(parent_hours, int | float) and hours >= parent_hours:
                what = "Linkerd issuer" if "linkerd" in cert.name.lower() else "certificate"
                report(f"{what} {cert.name!r} ({human(hours * 3600)}) outlives or matches its "
                       f"issuer {issuer.name!r} ({human(parent_hours * 3600)})", cert.urn)
