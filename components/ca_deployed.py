"""``passport ca status``, pure: the deployed CA certificates as status rows, read from where they
actually live, with the next action computed from the CA profiles' renewal rules.

* :func:`state_rows` — the trust domain's root and intermediate and Linkerd's trust anchors and
  identity issuer held by pulumi-tls, Vault PKI or AWS Private CA: their certificates are outputs
  of the CA resources :mod:`components.ca` creates under :class:`components.trust.TrustDomain`
  and :class:`components.mesh.LinkerdIdentity`, read here from an exported stack state (the JSON
  of ``pulumi stack export``).
* :func:`cluster_rows` — Linkerd's anchors and issuer under ``mesh.anchorCustody: cert-manager``:
  the ``kubernetes.io/tls`` Secrets cert-manager writes (``kubectl get secret -o json``).

Which certificate is which comes from the state itself, not from resource names: a
self-signed certificate under the trust domain is its root, one signed by another its
intermediate; under Linkerd's identity a self-signed one is an anchor (its generation is in the
subject OU the profile sets) and the other the issuer. The I/O is in :mod:`components.ca_sources`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509

from components.ca_lifecycle import ski_hex
from components.ca_status import StatusRow
from components.render.mesh.identity import LinkerdIdentityProfile
from components.render.trust import TrustProfile, pem_blocks

TRUST_COMPONENT = "agentpassport:trust:TrustDomain"
LINKERD_COMPONENT = "agentpassport:mesh:LinkerdIdentity"

SECRET_SIG = "4dabf18193072939515e22adb298388d"
"""The key Pulumi marks a secret value with in an exported state."""

# resource type -> (custody, the outputs holding its CA certificate, first found wins)
CA_RESOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "tls:index/selfSignedCert:SelfSignedCert": ("tls", ("certPem",)),
    "tls:index/locallySignedCert:LocallySignedCert": ("tls", ("certPem",)),
    "vault:pkiSecret/secretBackendRootCert:SecretBackendRootCert": ("vault-pki", ("certificate",)),
    "vault:pkiSecret/secretBackendRootSignIntermediate:SecretBackendRootSignIntermediate":
        ("vault-pki", ("certificate",)),
    "aws:acmpca/certificate:Certificate": ("aws-pca", ("certificate",)),
    # a subordinate Private CA: its own certificate once installed (certificateChain ends in the root)
    "aws:acmpca/certificateAuthority:CertificateAuthority": ("aws-pca", ("certificate",)),
}
CUSTODY_TEXT = {
    "tls": "pulumi-tls (Pulumi state, encrypted)",
    "vault-pki": "Vault PKI",
    "aws-pca": "AWS Private CA (HSM)",
    "cert-manager": "cert-manager (Secret {where})",
}


@dataclass(frozen=True)
class Found:
    """One CA certificate found in the state."""

    component: str
    """The component type it was created under (TRUST_COMPONENT or LINKERD_COMPONENT)."""
    name: str
    """The resource's name (the last part of its URN)."""
    custody: str
    cert: x509.Certificate


def _component_type(parent_urn: str) -> str:
    """``urn:pulumi:stack::project::a$b$agentpassport:trust:TrustDomain::name`` -> its type."""
    parts = parent_urn.split("::")
    return parts[2].split("$")[-1] if len(parts) >= 4 else ""


def _resources(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The resources of ``pulumi stack export`` output (or of its ``deployment`` alone)."""
    if not isinstance(state, Mapping):
        return []
    deployment = state.get("deployment", state)
    resources = deployment.get("resources") if isinstance(deployment, Mapping) else None
    return [r for r in resources if isinstance(r, Mapping)] if isinstance(resources, list) else []


def find_certificates(state: Mapping[str, Any]) -> tuple[list[Found], list[str]]:
    """Every CA certificate under the trust domain and Linkerd's identity; and a note for each one
    that could not be read (a secret output, text that is not a certificate)."""
    found: list[Found] = []
    notes: list[str] = []
    for res in _resources(state):
        kind = CA_RESOURCES.get(str(res.get("type", "")))
        component = _component_type(str(res.get("parent", "")))
        if kind is None or component not in (TRUST_COMPONENT, LINKERD_COMPONENT):
            continue
        custody, keys = kind
        name = str(res.get("urn", "")).rsplit("::", 1)[-1]
        outputs = res.get("outputs") or {}
        value = next((outputs[k] for k in keys if outputs.get(k)), None)
        if value is None:
            continue  # e.g. a subordinate Private CA whose certificate is not installed yet
        if isinstance(value, Mapping) and SECRET_SIG in value:
            notes.append(f"{name}: its certificate is a secret in the state (`pulumi stack export --show-secrets` "
                         "it, then --state FILE)")
            continue
        blocks = pem_blocks(str(value))
        if not blocks:
            notes.append(f"{name}: {keys[0]} holds no PEM certificate")
            continue
        try:
            found.append(Found(component, name, custody, x509.load_pem_x509_certificate(blocks[0].encode())))
        except ValueError as exc:
            notes.append(f"{name}: {keys[0]} is not a certificate ({exc})")
            continue
        chain = outputs.get("certificateChain")
        if res.get("type") == "aws:acmpca/certificateAuthority:CertificateAuthority" and isinstance(chain, str):
            roots = pem_blocks(chain)
            try:
                if roots:  # the offline root that signed the subordinate: the last of its chain
                    found.append(Found(component, f"{name} (chain)", custody,
                                       x509.load_pem_x509_certificate(roots[-1].encode())))
            except ValueError as exc:
                notes.append(f"{name}: the last of its certificateChain is not a certificate ({exc})")
    return found, notes


def self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def subject_ou(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(values[0].value) if values else ""


def _dated(row: StatusRow, now: datetime) -> StatusRow:
    """An expired certificate says so whatever its planned next step was."""
    if row.not_after is not None and row.not_after <= now:
        return StatusRow(row.layer, row.id, row.custody, "EXPIRED", row.not_before, row.not_after,
                         f"OVERDUE, it has expired: {row.next_action}", row.next_date)
    if row.next_date is not None and row.next_date <= now:
        return StatusRow(row.layer, row.id, row.custody, row.state, row.not_before, row.not_after,
                         f"OVERDUE since the date shown: {row.next_action}", row.next_date)
    return row


def _row(layer: str, found: Found, state: str, action: str, renew_before: timedelta | None,
         now: datetime, custody_text: str | None = None) -> StatusRow:
    cert = found.cert
    not_after = cert.not_valid_after_utc
    when = None if renew_before is None else not_after - renew_before
    return _dated(StatusRow(layer, ski_hex(cert) or cert.subject.rfc4514_string(),
                            custody_text or CUSTODY_TEXT[found.custody], state, cert.not_valid_before_utc,
                            not_after, action, when), now)


def trust_rows(found: Iterable[Found], profile: TrustProfile, now: datetime) -> list[StatusRow]:
    """The trust domain's root(s) and intermediate, from what was found under TrustDomain.

    pulumi-tls re-issues a certificate at the first ``pulumi up`` within trust.earlyRenewal of its
    expiry; Vault PKI and AWS Private CA certificates are never re-issued by ``pulumi up``, so the
    same date is when the operator must rotate them."""
    early = timedelta(hours=profile.early_renewal_hours)
    rows = []
    for f in sorted((f for f in found if f.component == TRUST_COMPONENT), key=lambda f: not self_signed(f.cert)):
        layer = "root" if self_signed(f.cert) else "intermediate"
        if f.custody == "tls":
            action = (f"re-issued by the first `pulumi up` from this date (trust.earlyRenewal "
                      f"{profile.early_renewal_hours}h)")
        elif layer == "root":
            action = "rotate the root by this date: `passport ca rotate --authority upstream` (by hand)"
        else:
            action = "re-issue the intermediate by this date (by hand; `pulumi up` does not renew it)"
        state = "deployed" if layer == "intermediate" else "deployed; SPIRE's upstream root"
        rows.append(_row(layer, f, state, action, early, now))
    return rows


def linkerd_rows(found: Iterable[Found], profile: LinkerdIdentityProfile, now: datetime) -> list[StatusRow]:
    """Linkerd's trust anchors and identity issuer, from what was found under LinkerdIdentity.

    An anchor is never renewed by ``pulumi up``: its two-anchor rotation must start while an
    issuer signed now (mesh.issuerLifetime) would still expire before it. The issuer is re-issued
    by ``pulumi up`` within mesh.issuerEarlyRenewal when pulumi-tls signs it; under Vault PKI or
    AWS Private CA the operator re-issues it (mesh.issuerRotation)."""
    issuer_life = timedelta(hours=profile.issuer_validity_hours)
    early = timedelta(hours=profile.issuer_early_renewal_hours)
    rows = []
    mine = [f for f in found if f.component == LINKERD_COMPONENT]
    for f in sorted(mine, key=lambda f: (not self_signed(f.cert), subject_ou(f.cert))):
        if self_signed(f.cert):
            gen = subject_ou(f.cert).removeprefix("linkerd trust anchor ").strip() or f.name
            state = "signs the issuer" if gen == profile.signing_anchor else "in the bundle only (rotation)"
            if gen not in profile.anchor_generations:
                state = "deployed, but no longer in mesh.trustAnchors"
            rows.append(_replace_id(_row("linkerd-anchor", f, state,
                                         "start the two-anchor rotation by this date (`passport ca rotate "
                                         "--authority linkerd`): an issuer signed later would outlive it",
                                         issuer_life, now), gen))
        else:
            action = ("re-issued by the first `pulumi up` from this date (mesh.issuerEarlyRenewal)"
                      if f.custody == "tls" else "re-issue by this date: bump mesh.issuerRotation, `pulumi up`")
            custody = "pulumi-tls (Pulumi state) -> Secret linkerd-identity-issuer"
            rows.append(_row("linkerd-issuer", f, f"signed by {profile.signing_anchor}", action, early, now,
                             custody_text=custody))
    return rows


def _replace_id(row: StatusRow, gen: str) -> StatusRow:
    return StatusRow(row.layer, f"{gen} {row.id}", row.custody, row.state, row.not_before, row.not_after,
                     row.next_action, row.next_date)


def state_rows(state: Mapping[str, Any], trust: TrustProfile | None, linkerd: LinkerdIdentityProfile | None,
               now: datetime) -> tuple[list[StatusRow], list[str]]:
    """The deployed CA certificates of an exported stack state, as status rows; and notes."""
    found, notes = find_certificates(state)
    rows: list[StatusRow] = []
    if trust is not None:
        rows += trust_rows(found, trust, now)
    if linkerd is not None:
        rows += linkerd_rows(found, linkerd, now)
    return rows, notes


# --------------------------------------------------------------------------- cert-manager, in the cluster


def secret_certificate(secret: Mapping[str, Any]) -> x509.Certificate | None:
    """The certificate cert-manager wrote into a ``kubernetes.io/tls`` Secret (``tls.crt``, its first block)."""
    data = (secret.get("data") or {}).get("tls.crt")
    if not data:
        return None
    blocks = pem_blocks(base64.b64decode(data).decode(errors="replace"))
    return x509.load_pem_x509_certificate(blocks[0].encode()) if blocks else None


def cluster_rows(secrets: Mapping[str, Mapping[str, Any] | str], profile: LinkerdIdentityProfile,
                 now: datetime, certificates: Mapping[str, Mapping[str, Any] | str] | None = None,
                 ) -> tuple[list[StatusRow], list[str]]:
    """Linkerd's anchors and issuer from cert-manager's Secrets: ``secrets`` maps each
    ``namespace/name`` of :func:`cert_manager_secrets` to the Secret read (or why it could not be);
    ``certificates`` the same to cert-manager's Certificate of that name, when it could be read.

    cert-manager renews an anchor (no renewBefore) when a third of its life is left, keeping its
    key; the issuer mesh.issuerEarlyRenewal before it expires. A Certificate's
    ``status.renewalTime`` (cert-manager's own plan) wins over that rule, and a Certificate that is
    not Ready says why in the state."""
    rows: list[StatusRow] = []
    notes: list[str] = []
    wanted = cert_manager_secrets(profile)
    got = [secrets.get(where) for where in wanted.values()]
    if all(isinstance(g, str) and g == got[0] for g in got):  # the cluster itself could not be read
        return [], [f"cluster not read: {got[0]}"]
    for (layer, gen), where in wanted.items():
        secret = secrets.get(where)
        if secret is None or isinstance(secret, str):
            notes.append(f"cluster: Secret {where} not read ({secret or 'not asked'})")
            continue
        try:
            cert = secret_certificate(secret)
        except ValueError as exc:
            notes.append(f"cluster: Secret {where}: tls.crt is not a certificate ({exc})")
            continue
        if cert is None:
            notes.append(f"cluster: Secret {where} has no tls.crt (cert-manager has not issued it yet)")
            continue
        found = Found(LINKERD_COMPONENT, where, "cert-manager", cert)
        custody = CUSTODY_TEXT["cert-manager"].format(where=where)
        if layer == "linkerd-anchor":
            life = cert.not_valid_after_utc - cert.not_valid_before_utc
            state = "signs the issuer" if gen == profile.signing_anchor else "in the bundle only (rotation)"
            action, before = "cert-manager renews it, same key (a third of its life left)", life / 3
        else:
            state = f"signed by {profile.signing_anchor}"
            action = "cert-manager renews it (mesh.issuerEarlyRenewal)"
            before = timedelta(hours=profile.issuer_early_renewal_hours)
        try:
            planned, not_ready = certificate_status((certificates or {}).get(where))
        except ValueError as exc:
            notes.append(f"cluster: Certificate {where}: {exc}; the date shown follows the rule instead")
            planned, not_ready = None, ""
        if planned is not None:
            action, before = "cert-manager renews it (its Certificate's status.renewalTime)", \
                cert.not_valid_after_utc - planned
        if not_ready:
            state += f"; Certificate not Ready: {not_ready}"
        row = _row(layer, found, state, action, before, now, custody_text=custody)
        rows.append(_replace_id(row, gen) if layer == "linkerd-anchor" else row)
    return rows, notes


def certificate_status(certificate: Mapping[str, Any] | str | None) -> tuple[datetime | None, str]:
    """(status.renewalTime, why it is not Ready or '') of a cert-manager Certificate."""
    if not isinstance(certificate, Mapping):
        return None, ""
    status = certificate.get("status")
    if not isinstance(status, Mapping):
        return None, ""
    renewal = status.get("renewalTime")
    try:
        when = datetime.fromisoformat(str(renewal).replace("Z", "+00:00")) if renewal else None
    except ValueError:
        raise ValueError(f"status.renewalTime {renewal!r} is not an RFC 3339 time") from None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    conditions = status.get("conditions")
    ready = next((c for c in conditions if isinstance(c, Mapping) and c.get("type") == "Ready"),
                 None) if isinstance(conditions, list) else None
    why = "" if ready is None or ready.get("status") == "True" else str(ready.get("message") or
                                                                       ready.get("reason") or "")
    return when, why


def cert_manager_secrets(profile: LinkerdIdentityProfile) -> dict[tuple[str, str], str]:
    """(layer, generation) -> ``namespace/name`` of each Secret cert-manager writes for Linkerd
    (the names :func:`components.render.mesh.identity.cert_manager_identity_objects` gives)."""
    from components.render.mesh.names import ISSUER_SECRET

    out = {("linkerd-anchor", gen): f"{profile.cert_manager_namespace}/linkerd-trust-anchor-{gen}"
           for gen in profile.anchor_generations}
    out[("linkerd-issuer", profile.signing_anchor)] = f"{profile.control_plane_namespace}/{ISSUER_SECRET}"
    return out
