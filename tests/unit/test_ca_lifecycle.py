"""The pure half of ``passport ca``: parsing what ``spire-server`` prints, and the rotation and
compromise plans decided from it. The JSON shapes are those of spire-server 1.15.3's
``-output json`` (protojson with proto field names; int64 as strings), checked against the
real binary in tests/e2e/test_ca_lifecycle_e2e.py."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.ca_lifecycle import (
    CaError,
    Journal,
    ServerState,
    jwt_key_id,
    jwt_trusted,
    plan_compromise,
    plan_rotation,
    server_state,
    spire_activates_at,
    spire_prepares_at,
    x509_trusted,
)
from components.ca_status import format_json, format_table, spire_rows

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
TD = "local.agentpassport.internal"
MIN = dt.timedelta(minutes=1)


def spire_ca(not_before: dt.datetime, hours: int = 24) -> tuple[str, str]:
    """(authority ID, base64 DER) of a self-signed CA like SPIRE's own root."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(not_before).not_valid_after(not_before + dt.timedelta(hours=hours))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(ski, critical=False).sign(key, hashes.SHA256()))
    return ski.digest.hex(), base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


A_NB = NOW - dt.timedelta(hours=2)
A_ID, A_DER = spire_ca(A_NB)
B_ID, B_DER = spire_ca(NOW - dt.timedelta(minutes=30))


def slot(authority_id: str, expires: dt.datetime, upstream: str = "") -> dict[str, Any]:
    return {"authority_id": authority_id, "expires_at": str(int(expires.timestamp())),
            "upstream_authority_subject_key_id": upstream}


def state(*, x509_slots: dict[str, Any], jwt_slots: dict[str, Any] | None = None,
          x509_bundle: list[tuple[str, bool]] | None = None,
          jwt_bundle: list[tuple[str, bool]] | None = None) -> ServerState:
    bundle = {
        "trust_domain": TD,
        "x509_authorities": [{"asn1": der, "tainted": t} for der, t in (x509_bundle or [(A_DER, False)])],
        "jwt_authorities": [{"public_key": "", "key_id": kid, "expires_at": str(int((NOW + 3600 * MIN).timestamp())),
                             "tainted": t} for kid, t in (jwt_bundle or [("jA", False)])],
        "refresh_hint": "300", "sequence_number": "3",
    }
    jwt = jwt_slots if jwt_slots is not None else {"active": slot("jA", NOW + 20 * 60 * MIN), "prepared": None,
                                                   "old": None}
    return server_state({"prepared": None, "old": None, **x509_slots}, jwt, bundle)


ONLY_A = state(x509_slots={"active": slot(A_ID, A_NB + 24 * 60 * MIN)})
A_AND_PREPARED_B = state(x509_slots={"active": slot(A_ID, A_NB + 24 * 60 * MIN),
                                     "prepared": slot(B_ID, NOW + 23 * 60 * MIN)},
                         x509_bundle=[(A_DER, False), (B_DER, False)])
B_ACTIVE_A_OLD = state(x509_slots={"active": slot(B_ID, NOW + 23 * 60 * MIN),
                                   "old": slot(A_ID, A_NB + 24 * 60 * MIN)},
                       x509_bundle=[(A_DER, False), (B_DER, False)])


# --------------------------------------------------------------------------- parsing


def test_server_state_joins_slots_and_bundle() -> None:
    s = B_ACTIVE_A_OLD
    assert s.trust_domain == TD and s.refresh_hint_s == 300 and not s.upstream
    active, old = s.slot("x509", "active"), s.slot("x509", "old")
    assert active is not None and old is not None
    assert (active.id, old.id) == (B_ID, A_ID)
    assert old.not_before == A_NB.replace(microsecond=0) and old.in_bundle and not old.tainted
    assert s.slot("x509", "prepared") is None
    assert [(a.kind, a.id, a.slot) for a in s.of("jwt")] == [("jwt", "jA", "active")]
    assert len(s.x509_roots_pem) == 2 and all(p.startswith("-----BEGIN CERTIFICATE-----") for p in s.x509_roots_pem)
    assert s.find(A_ID.upper()) == old  # IDs are hex: case does not matter


def test_bundle_only_keys_and_taint_are_reported() -> None:
    s = state(x509_slots={"active": slot(B_ID, NOW + 23 * 60 * MIN)},
              x509_bundle=[(A_DER, True), (B_DER, False)],
              jwt_bundle=[("jA", False), ("jOld", True)])
    (a,) = [x for x in s.of("x509") if x.id == A_ID]
    assert (a.slot, a.tainted) == ("bundle", True)
    (j,) = [x for x in s.of("jwt") if x.id == "jOld"]
    assert (j.slot, j.tainted) == ("bundle", True)


def test_upstream_is_recognised_from_the_slots() -> None:
    s = state(x509_slots={"active": slot(A_ID, NOW + 60 * MIN, upstream="abcd")})
    assert s.upstream and s.slot("x509", "active").upstream_ski == "abcd"  # type: ignore[union-attr]


def test_spire_schedule_matches_its_thresholds() -> None:
    nb = NOW
    assert spire_prepares_at(nb, nb + dt.timedelta(hours=24)) == nb + dt.timedelta(hours=12)
    assert spire_activates_at(nb, nb + dt.timedelta(hours=24)) == nb + dt.timedelta(hours=20)
    # long-lived CAs: prepared 30 days and activated 7 days before expiry at most
    year = dt.timedelta(days=365)
    assert spire_prepares_at(nb, nb + year) == nb + year - dt.timedelta(days=30)
    assert spire_activates_at(nb, nb + year) == nb + year - dt.timedelta(days=7)


# --------------------------------------------------------------------------- status


def test_status_rows_say_what_happens_next_and_when() -> None:
    rows = {r.id: r for r in spire_rows(A_AND_PREPARED_B, "disk (spire-server data volume)")}
    a = rows[A_ID]
    assert (a.layer, a.state, a.custody) == ("spire-x509", "active", "disk (spire-server data volume)")
    assert a.next_action == "SPIRE activates the prepared authority"
    assert a.next_date == spire_activates_at(A_NB.replace(microsecond=0), A_NB.replace(microsecond=0)
                                             + dt.timedelta(hours=24))
    assert a.time_left(NOW) == "22h0m"
    assert rows[B_ID].state == "prepared"
    table = format_table(list(rows.values()), NOW)
    assert table.splitlines()[0].split() == ["LAYER", "ID", "KEY", "STATE", "NOT", "BEFORE", "NOT", "AFTER", "LEFT",
                                             "NEXT", "WHEN"]
    assert A_ID in table and "2026-12-05T10:00:00Z" in table
    doc = json.loads(format_json(list(rows.values()), NOW, stack="local"))
    (ja,) = [r for r in doc["authorities"] if r["id"] == A_ID]
    assert (ja["time_left_seconds"], ja["not_before"], ja["state"]) == (22 * 3600, "2026-12-05T10:00:00Z", "active")


def test_with_replicas_a_key_only_the_bundle_holds_may_be_another_servers() -> None:
    """Each SPIRE server replica has its own CA and JWT key; through one pod's socket the others'
    show only in the shared bundle: never claim they are merely kept until they expire."""
    other = state(x509_slots={"active": slot(A_ID, A_NB + 24 * 60 * MIN)}, jwt_slots={"active": slot("jA", NOW)},
                  x509_bundle=[(A_DER, False), (B_DER, False)], jwt_bundle=[("jA", False), ("jOther", False)])
    one = {r.id: r for r in spire_rows(other, "disk")}
    assert one[B_ID].next_action == one["jOther"].next_action == "kept in the bundle until it expires"
    three = {r.id: r for r in spire_rows(other, "disk", replicas=3)}
    for key in (B_ID, "jOther"):
        assert three[key].next_action.startswith("another server's authority (3 replicas: query each server pod), "
                                                 "or retired")
    assert three[A_ID].next_action == one[A_ID].next_action  # the queried server's own rows are unchanged
    with pytest.raises(CaError, match=rf"{B_ID} is in the bundle but is none of this server's authorities: with 3 "
                                      r"SPIRE server replicas .* run this against the server pod that holds it"):
        plan_compromise(other, B_ID, x509_ttl=MIN, jwt_ttl=MIN, now=NOW, replicas=3)
    with pytest.raises(CaError, match=r"unknown authority 'jGone': this server has .*; with 3 SPIRE server replicas "
                                      r"it may be another server's: run this against the server pod that holds it"):
        plan_compromise(other, "jGone", x509_ttl=MIN, jwt_ttl=MIN, now=NOW, replicas=3)


# --------------------------------------------------------------------------- rotation


def kinds(plan: Any) -> list[tuple[str, str]]:
    return [(s.name, s.status) for s in plan.steps]


def test_a_fresh_rotation_starts_by_preparing() -> None:
    plan = plan_rotation("x509", ONLY_A, None, NOW, propagation=2 * MIN, overlap=15 * MIN)
    assert kinds(plan) == [("prepare", "next"), ("propagate", "pending"), ("activate", "pending"),
                           ("overlap", "pending")]
    assert plan.journal == Journal("x509", A_ID)


def test_after_prepare_it_waits_for_propagation_then_activates() -> None:
    journal = Journal("x509", A_ID, B_ID, prepared_at=(NOW - MIN).timestamp())
    plan = plan_rotation("x509", A_AND_PREPARED_B, journal, NOW, propagation=2 * MIN, overlap=15 * MIN)
    assert kinds(plan) == [("prepare", "done"), ("propagate", "next"), ("activate", "pending"), ("overlap", "pending")]
    assert plan.steps[1].until == NOW + MIN
    assert "until 2026-12-05T12:01:00Z, 1m" in plan.steps[1].line(NOW)
    later = plan_rotation("x509", A_AND_PREPARED_B, journal, NOW + 2 * MIN, propagation=2 * MIN, overlap=15 * MIN)
    assert kinds(later)[:3] == [("prepare", "done"), ("propagate", "done"), ("activate", "next")]


def test_after_activation_the_old_authority_is_kept_for_the_longest_svid_ttl() -> None:
    journal = Journal("x509", A_ID, B_ID, prepared_at=(NOW - 5 * MIN).timestamp(),
                      activated_at=(NOW - 5 * MIN).timestamp())
    plan = plan_rotation("x509", B_ACTIVE_A_OLD, journal, NOW, propagation=2 * MIN, overlap=15 * MIN)
    assert kinds(plan) == [("prepare", "done"), ("propagate", "done"), ("activate", "done"), ("overlap", "next")]
    assert plan.next is not None and plan.next.until == NOW + 10 * MIN
    assert "15m" in plan.next.detail and A_ID in plan.next.detail
    done = plan_rotation("x509", B_ACTIVE_A_OLD, journal, NOW + 10 * MIN, propagation=2 * MIN, overlap=15 * MIN)
    assert done.complete


def test_a_journal_the_server_disagrees_with_is_ignored() -> None:
    # the journal says B was prepared, but the server has only A (restored from backup, say)
    stale = Journal("x509", A_ID, B_ID, prepared_at=NOW.timestamp())
    plan = plan_rotation("x509", ONLY_A, stale, NOW, propagation=MIN, overlap=MIN)
    assert plan.journal == Journal("x509", A_ID) and kinds(plan)[0] == ("prepare", "next")


def test_an_authority_prepared_elsewhere_is_adopted() -> None:
    plan = plan_rotation("x509", A_AND_PREPARED_B, None, NOW, propagation=20 * MIN, overlap=MIN)
    assert plan.journal.new_id == B_ID
    assert kinds(plan)[:3] == [("prepare", "done"), ("propagate", "done"),  # prepared 30 min ago (its notBefore)
                               ("activate", "next")]
    longer = plan_rotation("x509", A_AND_PREPARED_B, None, NOW, propagation=60 * MIN, overlap=MIN)
    assert longer.steps[1].status == "next" and longer.steps[1].until == NOW + 30 * MIN


def test_rotation_needs_an_active_authority() -> None:
    with pytest.raises(CaError, match="no active jwt authority"):
        plan_rotation("jwt", state(x509_slots={"active": slot(A_ID, NOW)}, jwt_slots={}), None, NOW,
                      propagation=MIN, overlap=MIN)


# --------------------------------------------------------------------------- compromise


def test_compromise_of_the_old_authority_taints_waits_and_revokes() -> None:
    plan = plan_compromise(B_ACTIVE_A_OLD, A_ID, x509_ttl=15 * MIN, jwt_ttl=5 * MIN, now=NOW)
    assert not plan.rotate_first
    assert kinds(plan) == [("taint", "next"), ("resign", "pending"), ("revoke", "pending")]
    (line,) = plan.unrecallable
    assert "at most 15m" in line and "until 2026-12-05T12:15:00Z" in line


def test_compromise_of_the_active_authority_rotates_first() -> None:
    plan = plan_compromise(ONLY_A, A_ID, x509_ttl=15 * MIN, jwt_ttl=5 * MIN, now=NOW)
    assert plan.rotate_first
    assert [s.name for s in plan.steps] == ["prepare", "propagate", "activate", "taint", "resign", "revoke"]


def test_compromise_of_a_tainted_authority_resumes_at_the_wait() -> None:
    s = state(x509_slots={"active": slot(B_ID, NOW + 60 * MIN), "old": slot(A_ID, NOW + 60 * MIN)},
              x509_bundle=[(A_DER, True), (B_DER, False)])
    plan = plan_compromise(s, A_ID, x509_ttl=15 * MIN, jwt_ttl=5 * MIN, now=NOW)
    assert kinds(plan) == [("taint", "done"), ("resign", "next"), ("revoke", "pending")]


def test_jwt_compromise_names_the_jwks_caches() -> None:
    s = state(x509_slots={"active": slot(A_ID, NOW + 60 * MIN)},
              jwt_slots={"active": slot("jB", NOW + 60 * MIN), "old": slot("jA", NOW + 60 * MIN)},
              jwt_bundle=[("jA", False), ("jB", False)])
    plan = plan_compromise(s, "jA", x509_ttl=15 * MIN, jwt_ttl=5 * MIN, now=NOW)
    assert plan.kind == "jwt" and "at most 5m" in plan.unrecallable[0] and "JWKS" in plan.unrecallable[1]


@pytest.mark.parametrize(("authority", "message"), [
    ("nope", r"unknown authority 'nope': this server has \w+ \(x509 active\), \w+ \(x509 prepared\), "
             r"jA \(jwt active\)"),
    ("", "--authority is empty"),
    (B_ID, "is prepared, not yet signing"),
])
def test_compromise_refusals(authority: str, message: str) -> None:
    with pytest.raises(CaError, match=message):
        plan_compromise(A_AND_PREPARED_B, authority, x509_ttl=MIN, jwt_ttl=MIN, now=NOW)


def test_with_an_upstream_the_local_authority_cannot_be_tainted_and_the_order_is_printed() -> None:
    s = state(x509_slots={"active": slot(B_ID, NOW + 60 * MIN, upstream="up2"),
                          "old": slot(A_ID, NOW + 60 * MIN, upstream="up1")})
    with pytest.raises(CaError, match=r"issue a new upstream intermediate .* `pulumi up`, `passport ca rotate "
                                      r"--authority x509` .* compromise --authority up1"):
        plan_compromise(s, A_ID, x509_ttl=MIN, jwt_ttl=MIN, now=NOW)
    with pytest.raises(CaError, match=r"upstream up2 signs the active X\.509 authority"):
        plan_compromise(s, "up2", x509_ttl=MIN, jwt_ttl=MIN, now=NOW)
    plan = plan_compromise(s, "up1", x509_ttl=MIN, jwt_ttl=MIN, now=NOW)
    assert plan.kind == "upstream" and [x.name for x in plan.steps] == ["taint", "resign", "revoke"]


def test_an_upstream_root_in_the_bundle_is_compromised_through_the_upstream_plan() -> None:
    """aws-pca/tls whose root signs SPIRE's CA directly: the roots are in the bundle, so their SKIs
    are also "bundle" rows; naming the old root must reach the upstream plan, not loop on the
    "run compromise --authority <that SKI>" refusal."""
    up1, up1_der = spire_ca(NOW - dt.timedelta(days=2), hours=24 * 30)
    up2, up2_der = spire_ca(NOW - dt.timedelta(hours=1), hours=24 * 30)
    up0, up0_der = spire_ca(NOW - dt.timedelta(days=9), hours=24 * 30)
    s = state(x509_slots={"active": slot(B_ID, NOW + 60 * MIN, upstream=up2),
                          "old": slot(A_ID, NOW + 60 * MIN, upstream=up1)},
              x509_bundle=[(up0_der, False), (up1_der, False), (up2_der, False)])
    assert s.find(up1) is not None and s.find(up1).slot == "bundle"  # type: ignore[union-attr]
    plan = plan_compromise(s, up1.upper(), x509_ttl=MIN, jwt_ttl=MIN, now=NOW)
    assert plan.kind == "upstream" and plan.authority_id == up1
    with pytest.raises(CaError, match=rf"upstream {up2} signs the active X\.509 authority"):
        plan_compromise(s, up2, x509_ttl=MIN, jwt_ttl=MIN, now=NOW)
    with pytest.raises(CaError, match=rf"{up0} is an upstream root in the bundle that signs none of this server's "
                                      rf"X\.509 authorities: .*old authority \({up1}\)") as refused:
        plan_compromise(s, up0, x509_ttl=MIN, jwt_ttl=MIN, now=NOW)
    assert f"compromise --authority {up0}" not in str(refused.value)


# --------------------------------------------------------------------------- what a peer with the bundle accepts


def _jwt(key: ec.EllipticCurvePrivateKey, kid: str) -> str:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "ES256", "kid": kid, "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "spiffe://td/x", "aud": ["vault"]}).encode())
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{head}.{body}.{b64(r.to_bytes(32) + s.to_bytes(32))}"


def _der(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_jwt_trusted_needs_the_named_key_and_a_good_signature() -> None:
    a, b = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    token = _jwt(a, "kA")
    assert jwt_key_id(token) == "kA"
    assert jwt_trusted(token, [("kA", _der(a)), ("kB", _der(b))])
    assert not jwt_trusted(token, [("kB", _der(b))])  # the key was revoked from the JWKS
    assert not jwt_trusted(token, [("kA", _der(b))])  # another key under that ID
    head, body, sig = token.split(".")
    assert not jwt_trusted(f"{head}.{body}x.{sig}", [("kA", _der(a))])  # tampered


def test_x509_trusted_follows_signatures_to_a_root_of_the_bundle() -> None:
    def cert(subject_key: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey, cn: str,
             issuer_cn: str, ca: bool) -> str:
        built = (x509.CertificateBuilder()
                 .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                 .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
                 .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(NOW - MIN).not_valid_after(NOW + 60 * MIN)
                 .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                 .sign(issuer_key, hashes.SHA256()))
        return built.public_bytes(serialization.Encoding.PEM).decode()

    ka, kb, kleaf = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root_a, root_b = cert(ka, ka, "A", "A", True), cert(kb, kb, "B", "B", True)
    leaf = cert(kleaf, ka, "leaf", "A", False)
    assert x509_trusted(leaf, [root_b, root_a])
    assert not x509_trusted(leaf, [root_b])  # the bundle without the revoked authority
