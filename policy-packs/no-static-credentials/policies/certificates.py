"""Resource policies on certificates and keys: leaf lifetimes, SVID TTLs (caTtl/6), RSA key sizes."""

from __future__ import annotations

import re
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .tokens import REGISTRATIONS, TLS_CERTS, T
from .values import (
    UNKNOWN,
    _cfg,
    _duration,
    _limit,
    _props,
    _schema,
    agent_of,
    agent_prefix,
    as_dict,
    dig,
    human,
    seconds,
)

# leaf-lifetime-limit ----------------------------------------------------------------

LEAF_SCHEMA = _schema(maxLeafLifetime=_duration("24h", "Longest validity of a leaf certificate."))


def _leaf_lifetime(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in TLS_CERTS:
        return
    props = _props(args)
    if props.get("isCaCertificate") is True or props.get("isCaCertificate") is UNKNOWN:
        return
    hours = props.get("validityPeriodHours")
    if not isinstance(hours, int | float) or isinstance(hours, bool):
        return
    limit = _limit(_cfg(args, LEAF_SCHEMA), "maxLeafLifetime")
    if hours * 3600 > limit:
        report(f"{agent_prefix(agent_of(args.resource_type, args.name, props))}leaf certificate "
               f"{args.name!r} is valid for {human(hours * 3600)}, above {human(limit)}", None)


# svid-ttl-limits ---------------------------------------------------------------------

SVID_SCHEMA = _schema(
    maxX509SvidTtl=_duration("1h", "Longest X.509-SVID TTL a registration may ask for."),
    maxJwtSvidTtl=_duration("15m", "Longest JWT-SVID TTL a registration may ask for."),
    caTtl=_duration("24h", "SPIRE's CA TTL (ca_ttl): X.509-SVIDs may live at most caTtl/6."),
)


def _svid_ttl_limits(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    if t not in REGISTRATIONS:
        return
    props = _props(args)
    cfg = _cfg(args, SVID_SCHEMA)
    x509_key, jwt_key = ("ttl", "jwtTtl") if t == T.CLUSTER_SPIFFE_ID else ("x509SVIDTTL", "jwtSVIDTTL")
    spec = as_dict(props.get("spec"))
    problems = []
    x509 = seconds(spec.get(x509_key))
    if x509 is not None:
        limit, ca = _limit(cfg, "maxX509SvidTtl"), _limit(cfg, "caTtl")
        if x509 > limit:
            problems.append(f"X.509-SVID TTL {human(x509)} exceeds the limit of {human(limit)}")
        if x509 * 6 > ca:
            problems.append(f"X.509-SVID TTL {human(x509)} exceeds caTtl/6 ({human(ca)}/6 = "
                            f"{human(ca / 6)}), so SPIRE could not rotate its CA in time")
    jwt = seconds(spec.get(jwt_key))
    if jwt is not None and jwt > _limit(cfg, "maxJwtSvidTtl"):
        problems.append(f"JWT-SVID TTL {human(jwt)} exceeds the limit of "
                        f"{human(_limit(cfg, 'maxJwtSvidTtl'))}")
    if problems:
        report(f"{agent_prefix(agent_of(t, args.name, props))}registration {args.name!r}: "
               + "; ".join(problems), None)


# rsa-key-size -------------------------------------------------------------------------

RSA_SCHEMA = _schema(minRsaBits={"type": "integer", "default": 2048, "minimum": 1024,
                                 "description": "Smallest RSA modulus accepted."})


def _rsa_key_size(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    if t not in (T.TLS_PRIVATE_KEY, T.VAULT_PKI_ROLE, T.VAULT_PKI_ROOT_CERT,
                 T.VAULT_PKI_INTERMEDIATE_CSR, T.PCA):
        return
    props = _props(args)
    minimum = int(_cfg(args, RSA_SCHEMA)["minRsaBits"])
    bits: Any = None
    if t == T.TLS_PRIVATE_KEY and props.get("algorithm") == "RSA":
        bits = props.get("rsaBits") or 2048  # the provider's default
    elif t in (T.VAULT_PKI_ROLE, T.VAULT_PKI_ROOT_CERT, T.VAULT_PKI_INTERMEDIATE_CSR) and props.get("keyType") == "rsa":
        bits = props.get("keyBits") or 2048  # 0 / unset means Vault's default, 2048
    if isinstance(bits, float) and bits.is_integer():  # numbers travel as JSON numbers
        bits = int(bits)
    elif t == T.PCA:
        algo = dig(props, "certificateAuthorityConfiguration", "keyAlgorithm")
        match = re.fullmatch(r"RSA_(\d+)", algo) if isinstance(algo, str) else None
        bits = int(match.group(1)) if match else None
    if isinstance(bits, int) and bits < minimum:
        report(f"{args.name!r} uses a {bits}-bit RSA key, below {minimum}", None)
