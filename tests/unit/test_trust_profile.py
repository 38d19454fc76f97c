"""Pure tests of the trust profile and its stack-config checks."""

from __future__ import annotations

from typing import Any

import pytest

from components.config import StackConfig
from components.errors import ConfigError
from components.platform_model import load_platform
from components.render.trust import (
    KEY_SPECS,
    join_pems,
    last_pem_block,
    spire_upstream_policy,
    trust_problems,
    trust_profile,
)


def _cfg(stack: str = "dev", **trust: Any) -> StackConfig:
    base = load_platform(stack).config
    data = base.model_dump(by_alias=True)
    data["trust"] = {**data["trust"], **trust}
    return StackConfig.model_validate(data)


def test_key_specs_spell_each_upstream() -> None:
    p256 = KEY_SPECS["ecdsa-p256"]
    assert (p256.tls_algorithm, p256.tls_ecdsa_curve, p256.tls_rsa_bits) == ("ECDSA", "P256", None)
    assert (p256.pca_key_algorithm, p256.pca_signing_algorithm) == ("EC_prime256v1", "SHA256WITHECDSA")
    assert (p256.vault_key_type, p256.vault_key_bits) == ("ec", 256)
    rsa = KEY_SPECS["rsa-3072"]
    assert (rsa.tls_algorithm, rsa.tls_rsa_bits, rsa.pca_key_algorithm, rsa.vault_key_bits) == (
        "RSA",
        3072,
        "RSA_3072",
        3072,
    )
    assert KEY_SPECS["ecdsa-p384"].pca_signing_algorithm == "SHA384WITHECDSA"


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_committed_stacks_have_valid_profiles(stack: str) -> None:
    assert trust_problems(load_platform(stack).config, "f") == []


def test_early_renewal_must_be_shorter_than_the_intermediate() -> None:
    problems = trust_problems(_cfg(earlyRenewal="400d"), "stacks/Pulumi.dev.yaml")
    assert [p.field for p in problems] == ["agent-passport:trust.earlyRenewal"]
    assert "re-issued on every `pulumi up`" in problems[0].message


def test_lifetimes_must_be_whole_hours_and_days_for_managed_upstreams() -> None:
    fields = {p.field for p in trust_problems(_cfg(earlyRenewal="90m"), "f")}
    assert "agent-passport:trust.earlyRenewal" in fields
    pca = trust_problems(_cfg("prod", intermediateLifetime="8770h"), "f")
    assert [p.field for p in pca] == ["agent-passport:trust.intermediateLifetime"]
    assert "whole number of days" in pca[0].message


def test_spire_ca_must_fit_in_the_intermediates_remaining_life() -> None:
    cfg = _cfg(earlyRenewal="12h")  # caTtl is 24h in dev
    problems = trust_problems(cfg, "stacks/Pulumi.dev.yaml")
    assert [p.field for p in problems] == ["agent-passport:spire.caTtl"]
    with pytest.raises(ConfigError) as err:
        trust_profile(cfg, "stacks/Pulumi.dev.yaml")
    assert "shortest remaining life" in err.value.report()


def test_a_new_private_ca_takes_at_most_64_characters_of_organization() -> None:
    """AWS Private CA refuses a longer subject O at deploy time: the stack says so first."""
    long_org = "O" * 65
    problems = trust_problems(_cfg("prod", organization=long_org), "f")
    assert [p.field for p in problems] == ["agent-passport:trust.organization"]
    assert trust_problems(_cfg("prod", organization="O" * 64), "f") == []
    existing = {"mode": "subordinate", "existingArn": "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/x"}
    assert trust_problems(_cfg("prod", organization=long_org, awsPca=existing), "f") == []  # nothing created
    assert trust_problems(_cfg("dev", organization=long_org), "f") == []  # pulumi-tls has no such limit


def test_ca_profiles_of_the_trust_domain() -> None:
    """The CA builder's one profile type: root and intermediate of the trust domain."""
    prof = trust_profile(load_platform("dev").config)
    root, intermediate = prof.root, prof.intermediate
    assert (root.common_name, root.path_length, root.validity_hours) == (
        prof.root_common_name, prof.root_path_length, prof.root_validity_hours)
    assert root.uris == intermediate.uris == (f"spiffe://{prof.trust_domain}",)
    assert root.authority_key_id and not intermediate.authority_key_id
    assert (intermediate.path_length, intermediate.early_renewal_hours) == (1, prof.early_renewal_hours)
    assert root.key == intermediate.key == prof.key and root.cn_in_sans


def test_ca_profiles_of_linkerd() -> None:
    """Linkerd's anchors and issuer are the same profile type (ECDSA P-256, CN kept out of SANs)."""
    from components.render.mesh import linkerd_identity_profile

    prof = linkerd_identity_profile(load_platform("staging").config)
    anchor, issuer = prof.anchor(prof.signing_anchor), prof.issuer
    assert anchor.key == issuer.key == KEY_SPECS["ecdsa-p256"]
    assert (anchor.unit, issuer.unit) == (prof.anchor_unit(prof.signing_anchor), prof.issuer_unit)
    assert (anchor.path_length, issuer.path_length) == (prof.anchor_path_length, prof.issuer_path_length)
    assert anchor.early_renewal_hours is None and issuer.early_renewal_hours == prof.issuer_early_renewal_hours
    assert not anchor.cn_in_sans and not issuer.cn_in_sans and anchor.uris == ()


def test_managed_upstreams_need_their_subsystem() -> None:
    data = load_platform("staging").config.model_dump(by_alias=True)
    data["subsystems"] = {**data["subsystems"], "vault": False}
    problems = trust_problems(StackConfig.model_validate(data), "f")
    assert [p.field for p in problems] == ["agent-passport:trust.upstream"]
    assert "subsystems.vault" in problems[0].message


def test_pem_helpers() -> None:
    a = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----"
    b = "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n"
    assert join_pems(a, None, "", b) == a + "\n" + b
    assert last_pem_block(join_pems(a, b)) == b
    assert last_pem_block("") == ""


def test_spire_upstream_policy_allows_only_signing_and_chain_reads() -> None:
    hcl = spire_upstream_policy("pki-spire")
    assert hcl == (
        'path "pki-spire/root/sign-intermediate" {\n  capabilities = ["update"]\n}\n\n'
        'path "pki-spire/cert/ca_chain" {\n  capabilities = ["read"]\n}\n'
    )
