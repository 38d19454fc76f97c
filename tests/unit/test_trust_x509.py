"""Real X.509: a chain built with ``cryptography`` following the TrustDomain profile (same key
types, lifetimes, path lengths; SPIRE's CA under the intermediate) verifies an SVID-shaped
leaf, and rejects leaves from another trust domain, expired leaves and over-deep chains.

No name constraints are used: pulumi-tls cannot set them, so the profile has none on any
upstream; the trust domain of a SPIFFE ID is checked by the verifier (as SPIFFE requires).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from components.platform_model import load_platform
from components.render.trust import KEY_SPECS, TrustProfile, trust_profile

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _key(profile_key: str) -> PrivateKey:
    spec = KEY_SPECS[profile_key]
    if spec.tls_algorithm == "RSA":
        assert spec.tls_rsa_bits is not None
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.tls_rsa_bits)
    curve = {"P256": ec.SECP256R1(), "P384": ec.SECP384R1()}[str(spec.tls_ecdsa_curve)]
    return ec.generate_private_key(curve)


def _hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size == 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


@dataclass
class Issued:
    cert: x509.Certificate
    key: PrivateKey


def _ca(
    subject: x509.Name,
    key: PrivateKey,
    issuer: Issued | None,
    hours: float,
    path_len: int | None,
    uri: str,
    now: dt.datetime = NOW,
) -> Issued:
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=hours))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    return Issued(builder.sign(signer_key, _hash(signer_key)), key)


def _svid(spiffe_id: str, issuer: Issued, ttl_seconds: int) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())  # SPIRE's default workload key type (ec-p256)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(seconds=10))
        .not_valid_after(NOW - dt.timedelta(seconds=10) + dt.timedelta(seconds=ttl_seconds))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .sign(issuer.key, _hash(issuer.key))
    )


@dataclass
class Chain:
    root: Issued
    intermediate: Issued
    spire_ca: Issued


def _chain(profile: TrustProfile, ca_ttl_hours: float, now: dt.datetime = NOW) -> Chain:
    td = f"spiffe://{profile.trust_domain}"
    root = _ca(
        _name(profile.root_common_name, profile.organization),
        _key(profile.key.name),
        None,
        profile.root_validity_hours,
        profile.root_path_length,
        td,
        now,
    )
    inter = _ca(
        _name(profile.intermediate_common_name, profile.organization),
        _key(profile.key.name),
        root,
        profile.intermediate_validity_hours,
        profile.intermediate_path_length,
        td,
        now,
    )
    # SPIRE's own signing CA (ca_key_type ec-p256, ca_ttl), minted by the UpstreamAuthority
    spire = _ca(
        _name("SPIRE Server CA", "SPIFFE"), ec.generate_private_key(ec.SECP256R1()), inter, ca_ttl_hours, None, td, now
    )
    return Chain(root, inter, spire)


def _verify(
    chain_root: x509.Certificate,
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    when: dt.datetime,
    trust_domain: str,
) -> str:
    """Path validation against the bundle, then SPIFFE's trust-domain check; the SPIFFE ID."""
    verifier = PolicyBuilder().store(Store([chain_root])).time(when).build_client_verifier()
    verified = verifier.verify(leaf, intermediates)
    uris = [n.value for n in verified.subjects or [] if isinstance(n, x509.UniformResourceIdentifier)]
    if len(uris) != 1 or not uris[0].startswith(f"spiffe://{trust_domain}/"):
        raise VerificationError(f"SVID {uris} is not in trust domain {trust_domain}")
    return str(uris[0])


@pytest.fixture(scope="module")
def dev() -> tuple[TrustProfile, Chain]:
    platform = load_platform("dev")
    profile = trust_profile(platform.config)
    ca_ttl_hours = 24  # spire.caTtl in stacks/Pulumi.dev.yaml
    return profile, _chain(profile, ca_ttl_hours)


def test_profile_matches_the_stack() -> None:
    profile = trust_profile(load_platform("dev").config)
    assert profile.key.name == "ecdsa-p256"
    assert profile.root_validity_hours == 3650 * 24
    assert profile.intermediate_validity_hours == 365 * 24
    assert profile.early_renewal_hours == 720
    assert (profile.root_path_length, profile.intermediate_path_length) == (2, 1)


def test_svid_of_an_agent_verifies_with_its_spiffe_id_and_ttl(dev: tuple[TrustProfile, Chain]) -> None:
    profile, chain = dev
    platform = load_platform("dev")
    agent = platform.agent("agent-cortex")
    assert agent is not None
    leaf = _svid(agent.identity.spiffe_id, chain.spire_ca, agent.identity.x509_svid_ttl_seconds)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(minutes=15)
    got = _verify(chain.root.cert, leaf, [chain.spire_ca.cert, chain.intermediate.cert], NOW, profile.trust_domain)
    assert got == "spiffe://dev.agentpassport.internal/ns/agents/sa/agent-cortex"
    # and it stops verifying once its manifest TTL has passed
    with pytest.raises(VerificationError):
        _verify(
            chain.root.cert,
            leaf,
            [chain.spire_ca.cert, chain.intermediate.cert],
            NOW + dt.timedelta(minutes=15),
            profile.trust_domain,
        )


def test_leaf_from_another_trust_domain_is_rejected(dev: tuple[TrustProfile, Chain]) -> None:
    profile, chain = dev
    other_cfg = load_platform("dev").config.model_copy(update={"trust_domain": "other.acme-corp.net"})
    other = _chain(trust_profile(other_cfg), 24)
    foreign = _svid("spiffe://other.acme-corp.net/ns/agents/sa/agent-cortex", other.spire_ca, 900)
    # (positive control: it is a valid SVID in its own trust domain)
    assert _verify(
        other.root.cert, foreign, [other.spire_ca.cert, other.intermediate.cert], NOW, "other.acme-corp.net"
    ).startswith("spiffe://other.acme-corp.net/")
    # its own chain does not lead to our root ...
    with pytest.raises(VerificationError):
        _verify(chain.root.cert, foreign, [other.spire_ca.cert, other.intermediate.cert], NOW, profile.trust_domain)
    # ... and even presented with our intermediates it has no path
    with pytest.raises(VerificationError):
        _verify(chain.root.cert, foreign, [chain.spire_ca.cert, chain.intermediate.cert], NOW, profile.trust_domain)
    # a leaf signed in our chain but naming another trust domain fails SPIFFE's check
    misnamed = _svid("spiffe://other.acme-corp.net/x", chain.spire_ca, 900)
    with pytest.raises(VerificationError, match="not in trust domain"):
        _verify(chain.root.cert, misnamed, [chain.spire_ca.cert, chain.intermediate.cert], NOW, profile.trust_domain)


def test_path_length_stops_an_extra_ca_level(dev: tuple[TrustProfile, Chain]) -> None:
    profile, chain = dev
    rogue = _ca(
        _name("rogue"),
        ec.generate_private_key(ec.SECP256R1()),
        chain.spire_ca,
        1,
        None,
        f"spiffe://{profile.trust_domain}",
    )
    leaf = _svid(f"spiffe://{profile.trust_domain}/ns/agents/sa/agent-cortex", rogue, 900)
    with pytest.raises(VerificationError, match="path length"):
        _verify(
            chain.root.cert, leaf, [rogue.cert, chain.spire_ca.cert, chain.intermediate.cert], NOW, profile.trust_domain
        )


@pytest.mark.parametrize("algorithm", ["ecdsa-p384", "rsa-3072"])
def test_other_key_algorithms_build_valid_chains(algorithm: str) -> None:
    cfg = load_platform("dev").config
    cfg = cfg.model_copy(update={"trust": cfg.trust.model_copy(update={"key_algorithm": algorithm})})
    profile = trust_profile(cfg)
    chain = _chain(profile, 24)
    pub = chain.root.cert.public_key()
    if algorithm == "rsa-3072":
        assert isinstance(pub, rsa.RSAPublicKey)
        assert pub.key_size == 3072
    else:
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        assert pub.curve.name == "secp384r1"
    leaf = _svid(f"spiffe://{profile.trust_domain}/vm/report-summarizer", chain.spire_ca, 900)
    assert _verify(
        chain.root.cert, leaf, [chain.spire_ca.cert, chain.intermediate.cert], NOW, profile.trust_domain
    ).endswith("/vm/report-summarizer")


def test_profile_is_a_frozen_value() -> None:
    profile = trust_profile(load_platform("dev").config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.root_path_length = 5  # type: ignore[misc]
