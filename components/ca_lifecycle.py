"""CA lifecycle, pure: what ``passport ca rotate | compromise | drill`` know and decide (the
status rows are :mod:`components.ca_status`).

Nothing here talks to a server. :mod:`components.ca_runner` runs ``spire-server`` over its admin
socket, hands the JSON it prints to the parsers below, and executes the steps the planners
return, so every decision (which step comes next, what is refused, what cannot be recalled) is
a function of data and is unit-tested.

SPIRE's rules, as its server enforces them (``pkg/server/api/localauthority/v1``):

* an authority is *prepared* (its key already in the bundle), then *activated* (it signs from
  then on); the one it replaces becomes *old* and stays in the bundle;
* only an *old* authority can be tainted (agents and workloads then re-sign away from it at
  their next sync) and only a *tainted* one revoked (removed from the bundle);
* with an UpstreamAuthority, local X.509 authorities can be neither tainted nor revoked: the
  upstream that signed the old one is (``upstreamauthority taint|revoke -subjectKeyID``);
* SPIRE rotates on its own: it prepares at ``notAfter - min(lifetime/2, 30d)`` and activates at
  ``notAfter - min(lifetime/6, 7d)``.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography import x509

from components.durations import format_duration, seconds

Kind = Literal["x509", "jwt"]
KINDS: tuple[Kind, ...] = ("x509", "jwt")
Slot = Literal["active", "prepared", "old", "bundle"]
"""``bundle``: a key only the bundle still holds (an authority older than the server's two slots)."""

PREPARE_DIVISOR, PREPARE_CAP = 2, timedelta(days=30)
ACTIVATE_DIVISOR, ACTIVATE_CAP = 6, timedelta(days=7)
CONFIGMAP_SYNC = timedelta(seconds=60)
"""How long a kubelet may take to refresh a ConfigMap volume (the k8sbundle bundle's consumers)."""


class CaError(Exception):
    """One line naming what was wrong: an unknown authority, a refused step, an unreachable server."""


# --------------------------------------------------------------------------- the server's state


@dataclass(frozen=True)
class LocalAuthority:
    """One of SPIRE's signing authorities (an X.509 CA or a JWT key)."""

    kind: Kind
    id: str
    """X.509: the CA certificate's subject key ID in hex; JWT: the key ID."""
    slot: Slot
    expires_at: datetime | None = None
    not_before: datetime | None = None
    """X.509 only: from the CA certificate in the bundle."""
    upstream_ski: str = ""
    """X.509 with an UpstreamAuthority: the subject key ID of the upstream CA that signed it."""
    tainted: bool = False
    in_bundle: bool = False


@dataclass(frozen=True)
class ServerState:
    """What one ``spire-server`` reports about its authorities and its bundle."""

    trust_domain: str
    authorities: tuple[LocalAuthority, ...]
    refresh_hint_s: int = 0
    x509_roots_pem: tuple[str, ...] = ()
    """The bundle's X.509 authorities, PEM, in the server's order (what a peer trusts)."""
    jwt_keys: tuple[tuple[str, bytes], ...] = ()
    """The bundle's JWT keys: (key ID, PKIX DER), what the OIDC discovery provider's JWKS serves."""

    def of(self, kind: Kind) -> tuple[LocalAuthority, ...]:
        return tuple(a for a in self.authorities if a.kind == kind)

    def slot(self, kind: Kind, slot: Slot) -> LocalAuthority | None:
        return next((a for a in self.authorities if a.kind == kind and a.slot == slot), None)

    def find(self, authority_id: str) -> LocalAuthority | None:
        wanted = authority_id.strip().lower()
        return next((a for a in self.authorities if a.id.lower() == wanted), None)

    @property
    def upstream(self) -> bool:
        """The server signs under an UpstreamAuthority (its X.509 authorities name one)."""
        return any(a.upstream_ski for a in self.of("x509"))


def _time(value: Any) -> datetime | None:
    if value in (None, "", "0", 0):
        return None
    return datetime.fromtimestamp(int(value), UTC)


def parse_authority_state(kind: Kind, show: Mapping[str, Any]) -> list[LocalAuthority]:
    """``spire-server localauthority x509|jwt show -output json`` -> its active, prepared, old."""
    out = []
    for slot in ("active", "prepared", "old"):
        entry = show.get(slot)
        if not entry or not entry.get("authority_id"):
            continue
        out.append(LocalAuthority(kind, str(entry["authority_id"]), slot, _time(entry.get("expires_at")),
                                  upstream_ski=str(entry.get("upstream_authority_subject_key_id") or "")))
    return out


@dataclass(frozen=True)
class BundleKey:
    id: str
    not_before: datetime | None
    not_after: datetime | None
    tainted: bool
    pem: str = ""
    public_key_der: bytes = b""
    """JWT keys: the PKIX public key (what a JWKS serves)."""


def ski_hex(cert: x509.Certificate) -> str:
    """A certificate's subject key ID as SPIRE spells an X.509 authority ID (lowercase hex)."""
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return ""
    return ski.hex()


def parse_bundle(bundle: Mapping[str, Any]) -> tuple[str, list[BundleKey], list[BundleKey], int]:
    """``spire-server bundle show -output json`` -> (trust domain, X.509 keys, JWT keys, refresh hint s)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    x509_keys = []
    for entry in bundle.get("x509_authorities") or []:
        cert = x509.load_der_x509_certificate(base64.b64decode(entry["asn1"]))
        x509_keys.append(BundleKey(ski_hex(cert), cert.not_valid_before_utc, cert.not_valid_after_utc,
                                   bool(entry.get("tainted")), cert.public_bytes(Encoding.PEM).decode()))
    jwt_keys = [BundleKey(str(e.get("key_id", "")), None, _time(e.get("expires_at")), bool(e.get("tainted")),
                          public_key_der=base64.b64decode(e.get("public_key") or ""))
                for e in bundle.get("jwt_authorities") or []]
    td = str(bundle.get("trust_domain") or bundle.get("trustDomain") or "")
    return td, x509_keys, jwt_keys, int(bundle.get("refresh_hint") or 0)


def server_state(x509_show: Mapping[str, Any], jwt_show: Mapping[str, Any] | None,
                 bundle: Mapping[str, Any]) -> ServerState:
    """One view of the server: its slots, completed with what the bundle says (dates, taint)."""
    td, x509_keys, jwt_keys, hint = parse_bundle(bundle)
    found: list[LocalAuthority] = []
    sources: tuple[tuple[Kind, list[LocalAuthority], list[BundleKey]], ...] = (
        ("x509", parse_authority_state("x509", x509_show), x509_keys),
        ("jwt", parse_authority_state("jwt", jwt_show or {}), jwt_keys))
    for kind, slots, keys in sources:
        by_id = {k.id.lower(): k for k in keys}
        for a in slots:
            k = by_id.pop(a.id.lower(), None)
            found.append(replace(a, in_bundle=k is not None, tainted=bool(k and k.tainted),
                                 not_before=k.not_before if k else None,
                                 expires_at=a.expires_at or (k.not_after if k else None)))
        found += [LocalAuthority(kind, k.id, "bundle", k.not_after, k.not_before, tainted=k.tainted, in_bundle=True)
                  for k in by_id.values() if k.id]
    return ServerState(td, tuple(found), hint, tuple(k.pem for k in x509_keys),
                       tuple((k.id, k.public_key_der) for k in jwt_keys))


# --------------------------------------------------------------------------- SPIRE's own schedule


def spire_prepares_at(not_before: datetime, not_after: datetime) -> datetime:
    return not_after - min((not_after - not_before) / PREPARE_DIVISOR, PREPARE_CAP)


def spire_activates_at(not_before: datetime, not_after: datetime) -> datetime:
    return not_after - min((not_after - not_before) / ACTIVATE_DIVISOR, ACTIVATE_CAP)


# --------------------------------------------------------------------------- time, as printed


def iso_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_duration(secs: int) -> str:
    """``3d4h``, ``5h12m``, ``14m``, ``40s``: the two largest units."""
    if secs >= 86400:
        return f"{secs // 86400}d{secs % 86400 // 3600}h"
    if secs >= 3600:
        return f"{secs // 3600}h{secs % 3600 // 60}m"
    return f"{secs // 60}m" if secs >= 60 else f"{secs}s"


# --------------------------------------------------------------------------- rotation


@dataclass
class Journal:
    """What a rotation has done so far (kept beside the stack's local state: ``--state-dir``), so
    a second ``passport ca rotate`` continues where the first stopped. It is trusted only while
    the server agrees with it."""

    kind: Kind
    old_id: str
    new_id: str = ""
    prepared_at: float | None = None
    activated_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str) -> Journal:
        data = json.loads(text)
        return Journal(data["kind"], data["old_id"], data.get("new_id", ""), data.get("prepared_at"),
                       data.get("activated_at"))


StepStatus = Literal["done", "next", "pending"]
StepName = Literal["prepare", "propagate", "activate", "overlap", "taint", "resign", "revoke"]


@dataclass(frozen=True)
class Step:
    name: StepName
    status: StepStatus
    detail: str
    until: datetime | None = None
    """A wait step: when it is over."""

    def line(self, now: datetime) -> str:
        mark = {"done": "[done]", "next": "[next]", "pending": "[    ]"}[self.status]
        wait = ""
        if self.until is not None and self.status != "done":
            left = max(0, int((self.until - now).total_seconds()))
            wait = f" (until {iso_time(self.until)}, {human_duration(left) if left else 'now'})"
        return f"{mark} {self.name:<9} {self.detail}{wait}"


@dataclass(frozen=True)
class RotationPlan:
    kind: Kind
    journal: Journal
    steps: tuple[Step, ...]

    @property
    def next(self) -> Step | None:
        return next((s for s in self.steps if s.status != "done"), None)

    @property
    def complete(self) -> bool:
        return self.next is None


def _journal_fits(j: Journal, state: ServerState) -> bool:
    active, prepared, old = (state.slot(j.kind, s) for s in ("active", "prepared", "old"))
    if active is None:
        return False
    if not j.new_id:
        return active.id == j.old_id and prepared is None
    if prepared is not None and prepared.id == j.new_id:
        return active.id == j.old_id
    return active.id == j.new_id and (old is None or old.id == j.old_id)


def plan_rotation(kind: Kind, state: ServerState, journal: Journal | None, now: datetime, *,
                  propagation: timedelta, overlap: timedelta) -> RotationPlan:
    """The steps of a planned rotation of ``kind`` and which are done, from the server's state
    and the journal of an earlier run (ignored where the server disagrees with it).

    prepare -> propagate (the bundle carries both; consumers have fetched it) -> activate ->
    overlap (the old authority stays trusted until every SVID it signed has expired).
    """
    active = state.slot(kind, "active")
    if active is None:
        raise CaError(f"the SPIRE server reports no active {kind} authority (is it still starting?)")
    prepared = state.slot(kind, "prepared")
    j = journal if journal is not None and journal.kind == kind and _journal_fits(journal, state) else None
    if j is None:
        j = Journal(kind, active.id)
        if prepared is not None:  # prepared by SPIRE's schedule or by hand: adopt it
            j.new_id = prepared.id
            j.prepared_at = (prepared.not_before or now).timestamp()
    if j.new_id and active.id == j.new_id and j.activated_at is None:
        j.activated_at = now.timestamp()  # activated outside this journal (SPIRE's schedule)
    if j.new_id and j.prepared_at is None:
        j.prepared_at = now.timestamp()
    what = "X.509 CA" if kind == "x509" else "JWT signing key"
    steps: list[Step] = []

    def add(name: StepName, done: bool, detail: str, until: datetime | None = None) -> None:
        first_open = all(s.status == "done" for s in steps)
        steps.append(Step(name, "done" if done else ("next" if first_open else "pending"), detail, until))

    add("prepare", bool(j.new_id), f"a new {what} ({j.new_id or 'to be prepared'}) is added to the bundle "
        f"beside the active one ({j.old_id}); it signs nothing yet")
    ready = None if j.prepared_at is None else datetime.fromtimestamp(j.prepared_at, UTC) + propagation
    activated = bool(j.new_id) and active.id == j.new_id
    add("propagate", activated or (ready is not None and now >= ready),
        f"wait {format_duration(int(propagation.total_seconds()))} for every agent, workload and bundle "
        "consumer to fetch the bundle carrying both", ready)
    add("activate", activated, f"the new {what} signs every SVID from now on; {j.old_id} becomes old")
    end = None if j.activated_at is None else datetime.fromtimestamp(j.activated_at, UTC) + overlap
    add("overlap", end is not None and now >= end,
        f"keep {j.old_id} trusted until every SVID it signed has expired "
        f"(the longest {'X.509' if kind == 'x509' else 'JWT'}-SVID TTL, "
        f"{format_duration(int(overlap.total_seconds()))})",
        end)
    return RotationPlan(kind, j, tuple(steps))


# --------------------------------------------------------------------------- compromise


@dataclass(frozen=True)
class CompromisePlan:
    kind: Kind | Literal["upstream"]
    authority_id: str
    steps: tuple[Step, ...]
    unrecallable: tuple[str, ...]
    """What cannot be recalled, with its upper bound."""
    rotate_first: bool = False
    """The compromised authority is the active one: prepare and activate a replacement first."""


def _upstream_procedure(ski: str) -> str:
    return ("the upstream CA signs SPIRE's CA here, so SPIRE refuses to taint or revoke its local X.509 "
            "authorities; in this order: issue a new upstream intermediate (trust.upstream), `pulumi up`, "
            "`passport ca rotate --authority x509` so the active authority is signed by it, then `passport ca "
            f"compromise --authority {ski or '<old upstream subject key ID>'} --yes` (upstreamauthority taint, "
            "then revoke)")


def plan_compromise(state: ServerState, authority_id: str, *, x509_ttl: timedelta, jwt_ttl: timedelta,
                    now: datetime, replicas: int = 1) -> CompromisePlan:
    """The incident path for one authority, or :class:`CaError` saying why it cannot be taken.

    ``replicas``: the stack's SPIRE servers; each has its own authorities, so one only the bundle
    holds may be another server's."""
    wanted = authority_id.strip().lower()
    if not wanted:
        raise CaError("--authority is empty: give an authority ID from `passport ca status`")
    # an upstream's root is in the bundle too (a "bundle" row): its SKI names the upstream first
    upstreams = {a.upstream_ski.lower(): a for a in state.of("x509") if a.upstream_ski and a.slot != "bundle"}
    if wanted in upstreams:
        return _plan_upstream(state, wanted, upstreams[wanted], x509_ttl)
    found = state.find(wanted)
    if found is None:
        known = ", ".join(f"{a.id} ({a.kind} {a.slot})" for a in state.authorities) or "none"
        elsewhere = (f"; with {replicas} SPIRE server replicas it may be another server's: run this against the "
                     "server pod that holds it (its --spire-server-socket)") if replicas > 1 else ""
        raise CaError(f"unknown authority {authority_id!r}: this server has {known}{elsewhere}")
    if found.kind == "x509" and state.upstream and found.slot == "bundle":
        old = state.slot("x509", "old")
        raise CaError(f"{found.id} is an upstream root in the bundle that signs none of this server's X.509 "
                      "authorities: SPIRE taints an upstream only while it signs the server's old authority "
                      f"({old.upstream_ski if old is not None else 'none now'}), and keeps it in the bundle until it "
                      "expires; revoke it where it lives (Vault PKI, AWS Private CA, the offline root's CRL)")
    if found.kind == "x509" and state.upstream:
        raise CaError(f"{found.id}: {_upstream_procedure(found.upstream_ski)}")
    if found.slot == "bundle" and replicas > 1:
        raise CaError(f"{found.id} is in the bundle but is none of this server's authorities: with {replicas} SPIRE "
                      "server replicas it is likely another server's; run this against the server pod that holds it "
                      "(its --spire-server-socket; `passport ca status` there lists it as active or old)")
    if found.slot == "old" and not found.in_bundle:
        raise CaError(f"{found.id} is already revoked: it is no longer in the bundle")
    if found.slot == "prepared":
        raise CaError(f"{found.id} is prepared, not yet signing: SPIRE can neither taint nor revoke a prepared "
                      f"authority; activate it (`passport ca rotate --authority {found.kind}`), then run this again "
                      "so a fresh one replaces it")
    ttl = x509_ttl if found.kind == "x509" else jwt_ttl
    label = "X.509-SVIDs" if found.kind == "x509" else "JWT-SVIDs"
    steps: list[Step] = []
    rotate_first = found.slot == "active"
    if rotate_first:
        steps += [Step("prepare", "next", f"a replacement {found.kind} authority, because {found.id} is the active one "
                       "and SPIRE never taints or revokes its only active authority"),
                  Step("propagate", "pending", "a short wait for agents to fetch the bundle carrying the replacement"),
                  Step("activate", "pending", f"the replacement signs from now on; {found.id} becomes old")]
    first: StepStatus = "next" if not rotate_first else "pending"
    steps.append(Step("taint", "done" if found.tainted else first,
                      f"mark {found.id} tainted: agents and workloads re-sign under the active authority at their "
                      "next sync"))
    steps.append(Step("resign", "pending" if not found.tainted or rotate_first else "next",
                      "wait (bounded) until every agent reports an SVID signed after the taint"
                      if found.kind == "x509" else "wait (bounded) for every agent to sync and drop its cached "
                      "JWT-SVIDs signed by the tainted key"))
    steps.append(Step("revoke", "pending", f"remove {found.id} from the bundle: peers that fetch it refuse "
                      f"{label} it signed"))
    end = now + ttl
    unrecallable: tuple[str, ...] = (
        f"{label} {found.id} signed before the revocation stay valid to peers that have not fetched the new bundle "
        f"until they expire: at most {format_duration(int(ttl.total_seconds()))} (the longest {label[:-1]} TTL), "
        f"so until {iso_time(end)} at the latest",
    )
    if found.kind == "jwt":
        unrecallable += ("verifiers that cache the JWKS (Vault's jwt auth, AWS STS) keep the key until they "
                         "refetch it; the OIDC discovery provider serves the new JWKS at once",)
    return CompromisePlan(found.kind, found.id, tuple(steps), unrecallable, rotate_first)


def _plan_upstream(state: ServerState, ski: str, signed: LocalAuthority, ttl: timedelta) -> CompromisePlan:
    active = state.slot("x509", "active")
    if active is not None and active.upstream_ski.lower() == ski:
        raise CaError(f"upstream {ski} signs the active X.509 authority: {_upstream_procedure(ski)}")
    if signed.slot != "old":
        raise CaError(f"upstream {ski} signed the {signed.slot} authority {signed.id}; SPIRE taints only the "
                      "upstream of its old authority: `passport ca rotate --authority x509` first")
    steps = (Step("taint", "next", f"upstreamauthority taint -subjectKeyID {ski}: agents re-sign away from it"),
             Step("resign", "pending", "wait (bounded) until every agent reports an SVID signed after the taint"),
             Step("revoke", "pending", f"upstreamauthority revoke -subjectKeyID {ski}: removed from the bundle"))
    return CompromisePlan("upstream", ski, steps, (
        f"X.509-SVIDs under {ski} stay valid to peers without the new bundle for at most "
        f"{format_duration(int(ttl.total_seconds()))}; the upstream CA itself must be revoked where it lives "
        "(Vault PKI / AWS Private CA / the offline root's CRL)",))


@dataclass(frozen=True)
class Ttls:
    """The longest SVID TTLs a stack issues (what an overlap must outlast)."""

    x509: timedelta
    jwt: timedelta


def stack_ttls(platform: Any) -> Ttls:
    """The longest X.509- and JWT-SVID TTL among the stack's agents and SPIRE's defaults."""
    spire = platform.config.spire
    x509s = [seconds(spire.default_x509_svid_ttl), *(a.identity.x509_svid_ttl_seconds for a in platform.agents)]
    jwts = [seconds(spire.default_jwt_svid_ttl), *(a.identity.jwt_svid_ttl_seconds for a in platform.agents)]
    return Ttls(timedelta(seconds=max(x509s)), timedelta(seconds=max(jwts)))


# --------------------------------------------------------------------------- what a peer with the bundle accepts


def x509_trusted(leaf_pem: str, roots_pem: Iterable[str]) -> bool:
    """Whether an X.509-SVID (leaf first, then any intermediates) chains to one of ``roots_pem``
    by signature: what a peer holding exactly that bundle decides about the certificate."""
    from cryptography.exceptions import InvalidSignature

    chain = x509.load_pem_x509_certificates(leaf_pem.encode())
    top = chain[-1]
    for link, issuer in itertools.pairwise(chain):
        try:
            link.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError):
            return False
    for root_pem in roots_pem:
        root = x509.load_pem_x509_certificate(root_pem.encode())
        try:
            top.verify_directly_issued_by(root)
            return True
        except (InvalidSignature, ValueError, TypeError):
            continue
    return False


def jwt_key_id(token: str) -> str:
    header = json.loads(_b64url(token.split(".", maxsplit=1)[0]))
    return str(header.get("kid", ""))


def jwt_trusted(token: str, keys: Iterable[tuple[str, bytes]]) -> bool:
    """Whether a JWT-SVID's signature verifies with the key its ``kid`` names in ``keys`` (a
    JWKS as (kid, PKIX DER)): a key that is not there, or a bad signature, is a refusal."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    head, body, sig = token.strip().split(".")
    header = json.loads(_b64url(head))
    der = dict(keys).get(str(header.get("kid", "")))
    if not der:
        return False
    key = load_der_public_key(der)
    signed, raw = f"{head}.{body}".encode(), _b64url(sig)
    alg = str(header.get("alg", ""))
    digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}.get(alg[-3:])
    if digest is None:
        return False
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and alg.startswith("ES"):
            half = len(raw) // 2
            key.verify(encode_dss_signature(int.from_bytes(raw[:half]), int.from_bytes(raw[half:])), signed,
                       ec.ECDSA(digest))
        elif isinstance(key, rsa.RSAPublicKey) and alg.startswith("RS"):
            key.verify(raw, signed, padding.PKCS1v15(), digest)
        elif isinstance(key, rsa.RSAPublicKey) and alg.startswith("PS"):
            key.verify(raw, signed, padding.PSS(padding.MGF1(digest), digest.digest_size), digest)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
