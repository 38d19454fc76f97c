"""``passport ca status``, pure: every authority of a stack's trust chain as rows, from the
stack's configuration (the trust domain's root and intermediate, ``trust.previousRoots``,
Linkerd's anchors and issuer) and from what a SPIRE server reports (its X.509 authorities and
JWT keys), each with where its key lives, its dates and what happens to it next; as a table or
JSON. :mod:`components.ca_runner` reads the server and prints.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from cryptography import x509

from components.ca_lifecycle import (
    CaError,
    ServerState,
    human_duration,
    iso_time,
    ski_hex,
    spire_activates_at,
    spire_prepares_at,
    stack_ttls,
)
from components.durations import format_duration

# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class StatusRow:
    """One authority in the trust chain, for ``passport ca status``."""

    layer: str
    """root | intermediate | spire-x509 | spire-jwt | linkerd-anchor | linkerd-issuer | previous-root ..."""
    id: str
    custody: str
    """Where the key lives."""
    state: str
    not_before: datetime | None = None
    not_after: datetime | None = None
    next_action: str = ""
    next_date: datetime | None = None

    def time_left(self, now: datetime) -> str:
        if self.not_after is None:
            return "-"
        left = int((self.not_after - now).total_seconds())
        return "expired" if left <= 0 else human_duration(left)

    def as_dict(self, now: datetime) -> dict[str, Any]:
        out = asdict(self)
        for key in ("not_before", "not_after", "next_date"):
            out[key] = iso_time(out[key])
        out["time_left"] = self.time_left(now)
        out["time_left_seconds"] = None if self.not_after is None else int((self.not_after - now).total_seconds())
        return out


def cert_row(layer: str, custody: str, state: str, pem: str, next_action: str) -> StatusRow:
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise CaError(f"{layer}: not a PEM certificate ({exc})") from None
    return StatusRow(layer, ski_hex(cert) or cert.subject.rfc4514_string(), custody, state,
                     cert.not_valid_before_utc, cert.not_valid_after_utc, next_action)


def spire_rows(state: ServerState, custody: str, *, replicas: int = 1) -> list[StatusRow]:
    """SPIRE's X.509 authorities and JWT keys, each with what happens to it next and when.

    With ``replicas`` > 1 every server has its own X.509 CA and JWT key and only the bundle is
    shared: a bundle key that is none of the queried server's slots may be another server's."""
    rows = []
    for a in state.authorities:
        revoked = a.slot == "old" and not a.in_bundle
        what = f"{a.slot}{', tainted' if a.tainted else ''}{', revoked (not in the bundle)' if revoked else ''}"
        action, when = "", None
        if a.slot == "active" and a.not_before and a.expires_at:
            prepared = state.slot(a.kind, "prepared")
            if prepared is None:
                action, when = "SPIRE prepares the next authority", spire_prepares_at(a.not_before, a.expires_at)
            else:
                action, when = "SPIRE activates the prepared authority", spire_activates_at(a.not_before,
                                                                                              a.expires_at)
        elif a.slot == "active":
            action, when = "SPIRE rotates it before it expires", a.expires_at
        elif a.slot == "prepared":
            action = f"activated by SPIRE's schedule or `passport ca rotate --authority {a.kind}`"
        elif revoked:
            action = "none: peers that fetched the bundle since refuse what it signed"
        elif a.tainted:
            action = f"revoke: `passport ca compromise --authority {a.id} --yes`"
        elif a.slot == "bundle" and replicas > 1 and not (a.kind == "x509" and state.upstream):
            action, when = (f"another server's authority ({replicas} replicas: query each server pod), "
                            "or retired and kept in the bundle until it expires"), a.expires_at
        else:
            action, when = "kept in the bundle until it expires", a.expires_at
        layer = "spire-x509" if a.kind == "x509" else "spire-jwt"
        rows.append(StatusRow(layer, a.id, custody, what, a.not_before, a.expires_at, action, when))
    return rows


def format_table(rows: Sequence[StatusRow], now: datetime) -> str:
    head = ("LAYER", "ID", "KEY", "STATE", "NOT BEFORE", "NOT AFTER", "LEFT", "NEXT", "WHEN")
    body = [(r.layer, r.id, r.custody, r.state, iso_time(r.not_before) or "-", iso_time(r.not_after) or "-",
             r.time_left(now), r.next_action or "-", iso_time(r.next_date) or "-") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in (head, *body)]
    return "\n".join(lines) + "\n"


def format_json(rows: Sequence[StatusRow], now: datetime, **extra: Any) -> str:
    return json.dumps({"generated_at": iso_time(now), **extra, "authorities": [r.as_dict(now) for r in rows]},
                      indent=2, sort_keys=True) + "\n"


# --------------------------------------------------------------------------- what the stack config says


UPSTREAM_CUSTODY = {
    "tls": "pulumi-tls (Pulumi state, encrypted)",
    "vault-pki": "Vault PKI ({mount})",
    "aws-pca": "AWS Private CA (HSM)",
}
LINKERD_CUSTODY = {**UPSTREAM_CUSTODY, "cert-manager": "cert-manager (Secret in {ns})"}


def spire_key_custody(cfg: Any) -> str:
    """Where SPIRE's own signing keys live (its KeyManager)."""
    if cfg.spire.key_manager == "aws_kms":
        return f"AWS KMS ({cfg.aws.region})"
    return "disk (spire-server data volume)"


def config_rows(platform: Any, now: datetime) -> list[StatusRow]:
    """The authorities the stack's configuration defines, beside SPIRE's: the trust domain's root
    and intermediate (their certificates are in the deployed stack, not here), the roots kept
    during a rotation (trust.previousRoots, with their dates), Linkerd's anchors and issuer."""
    cfg = platform.config
    t = cfg.trust
    ttls = stack_ttls(platform)
    rows: list[StatusRow] = []
    if t.upstream == "spire":
        rows.append(StatusRow("root", "(SPIRE's X.509 authorities)", spire_key_custody(cfg), "SPIRE is its own root",
                              next_action=f"SPIRE rotates it every spire.caTtl ({cfg.spire.ca_ttl})"))
    else:
        custody = UPSTREAM_CUSTODY[t.upstream]
        renew = (f"re-issued by `pulumi up` within trust.earlyRenewal ({t.early_renewal}) of expiry"
                 if t.upstream == "tls" else "rotate: a new root in the upstream, the old one in trust.previousRoots")
        rows.append(StatusRow("root", "(deployed: `pulumi stack output`)", custody.format(mount=t.vault_pki.root_mount),
                              f"lifetime {t.root_lifetime}", next_action=renew))
        rows.append(StatusRow("intermediate", "(deployed: `pulumi stack output`)",
                              custody.format(mount=t.vault_pki.intermediate_mount),
                              f"lifetime {t.intermediate_lifetime}; SPIRE signs its CA under it",
                              next_action=f"re-issued by `pulumi up` within trust.earlyRenewal ({t.early_renewal})"))
        for pem in t.previous_roots:
            row = cert_row("previous-root", "(retired)", "overlap: trusted beside the current root", pem,
                           f"remove from trust.previousRoots once the new root's SPIRE CA has been active "
                           f"{format_duration(int(ttls.x509.total_seconds()))} (the longest X.509-SVID TTL)")
            if row.not_after is not None and row.not_after <= now:
                row = replace(row, state="expired", next_action="remove from trust.previousRoots now")
            rows.append(row)
    if cfg.subsystems.mesh:
        from components.render.mesh.identity import anchor_custody

        custody = anchor_custody(cfg)
        m = cfg.mesh
        where = LINKERD_CUSTODY[custody]
        for gen in m.trust_anchors:
            mount = f"{m.vault_pki_mount}-{gen}" if custody == "vault-pki" else ""
            signing = gen == m.signing_anchor
            rows.append(StatusRow(
                "linkerd-anchor", gen, where.format(mount=mount, ns=m.cert_manager_namespace),
                "signs the issuer" if signing else "in the bundle only (rotation)",
                next_action=f"lifetime {m.trust_anchor_lifetime}; rotate: add a generation to mesh.trustAnchors, "
                "restart proxies, switch mesh.issuerAnchor, remove the old one (docs/mesh.md)"))
        issuer_key = ("pulumi-tls (Pulumi state) -> Secret linkerd-identity-issuer" if custody != "cert-manager"
                      else where.format(ns=m.control_plane_namespace))
        renews = ("cert-manager renews it" if custody == "cert-manager" else "re-issued by `pulumi up`")
        rows.append(StatusRow(
            "linkerd-issuer", f"issuer ({m.signing_anchor})", issuer_key, f"lifetime {m.issuer_lifetime}",
            next_action=f"{renews} within mesh.issuerEarlyRenewal ({m.issuer_early_renewal})"))
        for pem in m.extra_trust_anchors_pem:
            rows.append(cert_row("linkerd-extra", "(outside this stack)", "in the bundle (mesh.extraTrustAnchorsPem)",
                                 pem, "remove once no proxy holds an issuer certificate under it"))
    return rows
