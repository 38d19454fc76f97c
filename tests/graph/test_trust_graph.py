"""TrustDomain under mocks: the real program per stack, plus variants of the trust section."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from components.mockrun import Captured, Graph

TRUST = "agentpassport:trust:TrustDomain"


def _trust(graph: Graph) -> Captured:
    (trust,) = graph.of_type(TRUST)
    return trust


def _children(graph: Graph, parent: Captured) -> dict[str, Captured]:
    return {r.name: r for r in graph.children_of(parent.urn)}


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_trust_domain_is_a_child_of_the_root_component(stack_graph: Callable[[str], Graph], stack: str) -> None:
    graph = stack_graph(stack)
    trust = _trust(graph)
    assert trust.name == "agent-passport-trust"
    parent = graph.by_urn(trust.parent)
    assert parent is not None
    assert parent.type == "agentpassport:index:AgentPassport"
    assert graph.outputs["outputs"]["trustBundlePem"].startswith("-----BEGIN CERTIFICATE-----")


def test_dev_tls_hierarchy(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("dev")
    kids = _children(graph, _trust(graph))
    assert sorted((r.type, n) for n, r in kids.items()) == [
        ("tls:index/certRequest:CertRequest", "agent-passport-trust-intermediate-csr"),
        ("tls:index/locallySignedCert:LocallySignedCert", "agent-passport-trust-intermediate"),
        ("tls:index/privateKey:PrivateKey", "agent-passport-trust-intermediate-key"),
        ("tls:index/privateKey:PrivateKey", "agent-passport-trust-root-key"),
        ("tls:index/selfSignedCert:SelfSignedCert", "agent-passport-trust-root"),
    ]
    for key in ("agent-passport-trust-root-key", "agent-passport-trust-intermediate-key"):
        assert kids[key].inputs == {"algorithm": "ECDSA", "ecdsaCurve": "P256"}
    root = kids["agent-passport-trust-root"].inputs
    assert root["isCaCertificate"] is True
    assert root["maxPathLength"] == 2
    assert root["validityPeriodHours"] == 3650 * 24
    assert root["earlyRenewalHours"] == 720
    assert root["allowedUses"] == ["cert_signing", "crl_signing", "digital_signature"]
    assert root["subject"] == {
        "commonName": "Agent Passport Root CA (dev.agentpassport.internal)",
        "organization": "Agent Passport",
    }
    inter = kids["agent-passport-trust-intermediate"].inputs
    assert inter["isCaCertificate"] is True
    assert inter["maxPathLength"] == 1
    assert inter["validityPeriodHours"] == 365 * 24
    assert inter["earlyRenewalHours"] == 720


def test_staging_vault_pki_hierarchy(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("staging")
    kids = _children(graph, _trust(graph))
    assert {r.type for r in kids.values()} == {
        "vault:index/mount:Mount",
        "vault:pkiSecret/secretBackendRootCert:SecretBackendRootCert",
        "vault:pkiSecret/secretBackendIntermediateCertRequest:SecretBackendIntermediateCertRequest",
        "vault:pkiSecret/secretBackendRootSignIntermediate:SecretBackendRootSignIntermediate",
        "vault:pkiSecret/secretBackendIntermediateSetSigned:SecretBackendIntermediateSetSigned",
        "vault:index/policy:Policy",
    }
    root_mount = kids["agent-passport-trust-pki-root"].inputs
    assert (root_mount["path"], root_mount["type"], root_mount["maxLeaseTtlSeconds"]) == (
        "pki-root",
        "pki",
        3650 * 86400,
    )
    int_mount = kids["agent-passport-trust-pki-intermediate"].inputs
    assert (int_mount["path"], int_mount["maxLeaseTtlSeconds"]) == ("pki-spire", 180 * 86400)
    root = kids["agent-passport-trust-pki-root-cert"].inputs
    assert (root["keyType"], root["keyBits"], root["maxPathLength"], root["ttl"]) == (
        "ec",
        256,
        2,
        "87600h",
    )
    signed = kids["agent-passport-trust-pki-intermediate-cert"].inputs
    assert (signed["maxPathLength"], signed["ttl"], signed["backend"]) == (1, "4320h", "pki-root")
    policy = kids["agent-passport-trust-pki-spire-upstream"].inputs
    assert policy["name"] == "spire-upstream"
    assert 'path "pki-spire/root/sign-intermediate"' in policy["policy"]


def test_prod_aws_pca_subordinate(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("prod")
    kids = _children(graph, _trust(graph))
    assert [r.type for r in kids.values()] == ["aws:acmpca/certificateAuthority:CertificateAuthority"]
    ca = kids["agent-passport-trust-pca"].inputs
    assert ca["type"] == "SUBORDINATE"
    assert ca["usageMode"] == "SHORT_LIVED_CERTIFICATE"
    assert ca["region"] == "us-east-1"
    assert ca["certificateAuthorityConfiguration"]["keyAlgorithm"] == "EC_prime256v1"
    assert ca["certificateAuthorityConfiguration"]["signingAlgorithm"] == "SHA256WITHECDSA"
