"""Pure tests of the trust profile and its stack-config checks."""

from __future__ import annotations

from typing import Any

import pytest

from components.cli import load_platform
from components.config import StackConfig
from components.errors import ConfigError
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
