"""Real X.509 (``cryptography``) built to the Linkerd identity profile the component hands pulumi-tls.

``test_mesh_graph`` asserts that the pulumi-tls inputs are exactly this profile (curve, CA flags,
path lengths, lifetimes, uses, subjects); here the same profile becomes real certificates and a
real chain: the issuer chains to the anchor, both are P-256, the issuer expires first, and a
Linkerd-style proxy leaf verifies against the rendered ``ca-bundle.crt`` — including the
two-anchor bundle of a rotation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from components.config import build_stack_config, load_stack_config, read_stack_file
from components.errors import ConfigError
from components.render.mesh import LinkerdIdentityProfile, linkerd_identity_profile, trust_bundle
from tests.conftest import ROOT

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
PROXY = "agent-cortex.agents.serviceaccount.identity.linkerd.cluster.local"

Key = ec.EllipticCurvePrivateKey


def _name(cn: str, org: str | None = None, unit: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    if unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    return x509.Name(attrs)


_USES = {"cert_signing": "key_cert_sign", "crl_signing": "crl_sign"}


def _ca_usage(uses: tuple[str, ...]) -> x509.KeyUsage:
    flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                           "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
    for use in uses:
        flags[_USES[use]] = True
    return x509.KeyUsage(**flags)


def _cert(subject: x509.Name, key: Key, issuer: x509.Name, signer: Key, hours: int,
          ca: bool, path_length: int | None, usage: x509.KeyUsage, start: dt.datetime = NOW,
          san: str | None = None) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(start)
         .not_valid_after(start + dt.timedelta(hours=hours))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
         .add_extension(usage, critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False))
    if san:
        # The mesh identity is too long for a CN (64 characters): empty subject, critical SAN (RFC 5280).
        b = (b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=not subject)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False))
    return b.sign(signer, hashes.SHA256())


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _p256() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def build_anchor(p: LinkerdIdentityProfile, generation: str, start: dt.datetime = NOW) -> tuple[Key, x509.Certificate]:
    """What tls.SelfSignedCert produces for the profile (ECDSA P-256 key from tls.PrivateKey)."""
    key = _p256()
    name = _name(p.anchor_common_name, p.organization, p.anchor_unit(generation))
    return key, _cert(name, key, name, key, p.anchor_validity_hours, True, p.anchor_path_length,
                      _ca_usage(p.ca_uses), start)


def build_issuer(p: LinkerdIdentityProfile, anchor: tuple[Key, x509.Certificate]) -> tuple[Key, x509.Certificate]:
    """What tls.CertRequest + tls.LocallySignedCert produce for the profile."""
    key = _p256()
    return key, _cert(_name(p.issuer_common_name, p.organization, p.issuer_unit), key, anchor[1].subject, anchor[0],
                      p.issuer_validity_hours, True, p.issuer_path_length, _ca_usage(p.ca_uses))


def proxy_leaf(issuer: tuple[Key, x509.Certificate], identity: str = PROXY) -> x509.Certificate:
    """A leaf as Linkerd's identity controller issues to a proxy (24h, DNS SAN = mesh identity)."""
    key = _p256()
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    return _cert(x509.Name([]), key, issuer[1].subject, issuer[0], 24, False, None, usage, san=identity)


def make_anchor(cn: str, unit: str) -> tuple[Key, str]:
    """A real P-256 CA certificate (PEM), e.g. an anchor from an earlier installation."""
    key = _p256()
    name = _name(cn, "Elsewhere", unit)
    return key, _pem(_cert(name, key, name, key, 24 * 365, True, 1, _ca_usage(("cert_signing", "crl_signing"))))


def verifies(bundle_pem: str, leaf: x509.Certificate, issuer: x509.Certificate) -> bool:
    store = Store(x509.load_pem_x509_certificates(bundle_pem.encode()))
    verifier = (PolicyBuilder().store(store).time(NOW + dt.timedelta(hours=1))
                .build_server_verifier(x509.DNSName(PROXY)))
    try:
        verifier.verify(leaf, [issuer])
    except VerificationError:
        return False
    return True


@pytest.fixture
def profile() -> LinkerdIdentityProfile:
    return linkerd_identity_profile(load_stack_config("prod", ROOT))


def test_issuer_chains_to_the_anchor_both_p256_and_the_issuer_expires_first(profile: LinkerdIdentityProfile) -> None:
    anchor = build_anchor(profile, "g1")
    issuer = build_issuer(profile, anchor)
    issuer[1].verify_directly_issued_by(anchor[1])
    anchor[1].verify_directly_issued_by(anchor[1])  # self-signed root
    for cert in (anchor[1], issuer[1]):
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert issuer[1].not_valid_after_utc < anchor[1].not_valid_after_utc
    assert anchor[1].not_valid_after_utc - anchor[1].not_valid_before_utc == dt.timedelta(days=3650)
    assert issuer[1].not_valid_after_utc - issuer[1].not_valid_before_utc == dt.timedelta(hours=2160)
    assert issuer[1].extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert issuer[1].subject.rfc4514_string() == (
        "OU=linkerd identity issuer 1,O=Agent Passport,CN=identity.linkerd.cluster.local")
    # A proxy certificate issued by the issuer verifies against the rendered bundle.
    assert verifies(trust_bundle([_pem(anchor[1])]), proxy_leaf(issuer), issuer[1])


@pytest.mark.parametrize(("issuer_path_length", "ok"), [(0, False), (1, True)])
def test_the_issuers_path_length_forbids_sub_cas(profile: LinkerdIdentityProfile, issuer_path_length: int,
                                                 ok: bool) -> None:
    """Path length 0 (the profile's) stops a stolen issuer key from minting CAs; 1 would not."""
    # Loosen the anchor so only the issuer's constraint is under test.
    p = dataclasses.replace(profile, anchor_path_length=2, issuer_path_length=issuer_path_length)
    anchor = build_anchor(p, "g1")
    issuer = build_issuer(p, anchor)
    rogue_key = _p256()
    rogue = _cert(_name("rogue"), rogue_key, issuer[1].subject, issuer[0], 24, True, None, _ca_usage(p.ca_uses))
    verifier = (PolicyBuilder().store(Store([anchor[1]])).time(NOW + dt.timedelta(hours=1))
                .build_server_verifier(x509.DNSName(PROXY)))
    leaf = proxy_leaf((rogue_key, rogue))
    if ok:
        verifier.verify(leaf, [rogue, issuer[1]])
    else:
        with pytest.raises(VerificationError, match="path length constraint violated"):
            verifier.verify(leaf, [rogue, issuer[1]])
    assert profile.issuer_path_length == 0


def test_rotation_with_a_two_anchor_bundle(profile: LinkerdIdentityProfile) -> None:
    """add new anchor to the bundle -> proxies restarted -> switch issuer -> remove old anchor."""
    old, new = build_anchor(profile, "g1"), build_anchor(profile, "g2")
    old_issuer, new_issuer = build_issuer(profile, old), build_issuer(profile, new)
    old_leaf, new_leaf = proxy_leaf(old_issuer), proxy_leaf(new_issuer)
    only_old = trust_bundle([_pem(old[1])])
    both = trust_bundle([_pem(old[1]), _pem(new[1])])
    only_new = trust_bundle([_pem(new[1])])
    assert both.count("BEGIN CERTIFICATE") == 2
    # Step 1: the two-anchor bundle trusts leaves of the old issuer still in use...
    assert verifies(both, old_leaf, old_issuer[1])
    # Step 3: ...and of the new issuer, which a proxy still holding the old bundle would refuse.
    assert verifies(both, new_leaf, new_issuer[1])
    assert not verifies(only_old, new_leaf, new_issuer[1])
    # Step 4: once every old leaf has expired the old anchor goes; old leaves are then refused.
    assert verifies(only_new, new_leaf, new_issuer[1])
    assert not verifies(only_new, old_leaf, old_issuer[1])


def _with_extra(pem: str) -> object:
    values, lines, secrets = read_stack_file(ROOT / "stacks/Pulumi.dev.yaml")
    values["mesh"] = {**values["mesh"], "extraTrustAnchorsPem": [pem]}
    cfg = build_stack_config(values | {"environment": "dev"}, "stacks/Pulumi.dev.yaml", lines, secrets)
    return linkerd_identity_profile(cfg, "stacks/Pulumi.dev.yaml")


def test_extra_anchors_must_be_p256_cas() -> None:
    good = make_anchor("root.linkerd.cluster.local", "previous")[1]
    assert _with_extra(good).extra_anchors_pem == (good,)  # type: ignore[attr-defined]

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = _name("rsa root")
    rsa_ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(rsa_key.public_key())
              .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(rsa_key, hashes.SHA256()))
    with pytest.raises(ConfigError, match=r"extraTrustAnchorsPem\[0\]: .*does not use an ECDSA P-256 key"):
        _with_extra(_pem(rsa_ca))

    anchor_key, anchor_pem = make_anchor("root.linkerd.cluster.local", "x")
    anchor = x509.load_pem_x509_certificate(anchor_pem.encode())
    leaf = proxy_leaf((anchor_key, anchor))
    with pytest.raises(ConfigError, match=r"is not a CA certificate"):
        _with_extra(_pem(leaf))
