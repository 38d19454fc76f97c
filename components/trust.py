"""The trust domain's CA hierarchy: a root CA and the intermediate SPIRE signs under.

Four upstreams, selected by ``agent-passport:trust.upstream``:

* ``spire`` — SPIRE is its own root: no UpstreamAuthority, the key in SPIRE's KeyManager (disk or
  AWS KMS), rotated by SPIRE every ``spire.caTtl``; nothing is created here;

* ``tls`` — pulumi-tls keys and certificates (dev only: the keys live, encrypted, in Pulumi state);
* ``aws-pca`` — AWS Private CA (root or subordinate); the signing key never leaves AWS;
* ``vault-pki`` — Vault's PKI engine (root mount + intermediate mount); keys stay in Vault.

The certificate profile (key algorithm, lifetimes, path lengths, subject names) is computed by
the pure :func:`trust_profile`, so tests can build the same chain with ``cryptography``; the CAs
are built by the one CA builder, :class:`components.ca.CaBuilder` (as Linkerd's are).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.ca import CaBuilder, VaultMount
from components.config import StackConfig
from components.durations import seconds
from components.labels import TRUST_DOMAIN_TAG
from components.platform_model import Platform
from components.render.trust import (
    TrustProfile,
    join_pems,
    last_pem_block,
    spire_upstream_policy,
    trust_bundle_with_previous,
)

# --------------------------------------------------------------------------- component


@dataclass(frozen=True)
class TrustDomainArgs:
    """Inputs of :class:`TrustDomain`."""

    platform: Platform
    """The validated platform; only ``platform.config`` (trust section, trust domain) is read."""
    profile: TrustProfile
    """The validated certificate profile (``Plans.trust``)."""


class TrustDomain(pulumi.ComponentResource):
    """Root CA and the intermediate SPIRE's UpstreamAuthority signs under."""

    trust_bundle_pem: pulumi.Output[str]
    """Root CA certificate(s), PEM, for verifiers (Vault cert auth, Roles Anywhere, Envoy): the
    current root first, then every ``trust.previousRoots`` entry during a root rotation."""

    upstream_chain_pem: pulumi.Output[str]
    """Intermediate (+ root) chain SPIRE's UpstreamAuthority signs under, leaf-to-root PEM."""

    upstream_key_pem: pulumi.Output[str] | None
    """Secret intermediate key, only for upstream tls (SPIRE's ``disk`` UpstreamAuthority)."""

    aws_pca_arn: pulumi.Output[str] | None
    """ARN of the AWS Private CA SPIRE's ``aws_pca`` UpstreamAuthority uses (upstream aws-pca)."""

    vault_pki_mount: str | None
    """Vault PKI mount SPIRE's ``vault`` UpstreamAuthority signs with (upstream vault-pki)."""

    profile: TrustProfile
    """The certificate profile this hierarchy was built with."""

    def __init__(self, name: str, args: TrustDomainArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:trust:TrustDomain", name, None, opts)
        platform = args.platform
        self.profile = args.profile
        self.upstream_key_pem = None
        self.aws_pca_arn = None
        self.vault_pki_mount = None
        upstream = self.profile.upstream
        if upstream == "spire":
            # SPIRE is its own root (its KeyManager holds the key): nothing to create here, and
            # the bundle is published by SPIRE itself (bundle endpoint, k8sbundle ConfigMap).
            self.trust_bundle_pem = pulumi.Output.from_input("")
            self.upstream_chain_pem = pulumi.Output.from_input("")
        elif upstream == "tls":
            self._tls(name)
        elif upstream == "aws-pca":
            self._aws_pca(name, platform.config)
        else:
            self._vault_pki(name, platform.config)
        previous = tuple(platform.config.trust.previous_roots)
        if previous:  # a root rotation: consumers keep trusting the old root(s) beside the new one
            self.trust_bundle_pem = self.trust_bundle_pem.apply(lambda pem: trust_bundle_with_previous(pem, previous))
        outputs: dict[str, object] = {
            "trustBundlePem": self.trust_bundle_pem,
            "upstreamChainPem": self.upstream_chain_pem,
            "upstream": upstream,
        }
        if self.upstream_key_pem is not None:
            outputs["upstreamKeyPem"] = self.upstream_key_pem
        if self.aws_pca_arn is not None:
            outputs["awsPcaArn"] = self.aws_pca_arn
        if self.vault_pki_mount is not None:
            outputs["vaultPkiMount"] = self.vault_pki_mount
        self.register_outputs(outputs)

    # ----------------------------------------------------------------------- tls (dev)

    def _tls(self, name: str) -> None:
        prof = self.profile
        build = CaBuilder(self, "tls")
        root = build.root(f"{name}-root", prof.root)
        int_key = build.private_key(f"{name}-intermediate-key", prof.key)
        csr = build.request(f"{name}-intermediate-csr", int_key, prof.intermediate)
        intermediate = build.sign(f"{name}-intermediate", root, csr, prof.intermediate)
        self.trust_bundle_pem = root.certificate_pem
        self.upstream_chain_pem = pulumi.Output.all(intermediate, root.certificate_pem).apply(
            lambda pems: join_pems(*pems)
        )
        self.upstream_key_pem = pulumi.Output.secret(int_key)

    # ----------------------------------------------------------------------- aws-pca

    def _aws_pca(self, name: str, cfg: StackConfig) -> None:
        from pulumi_aws import acmpca

        prof = self.profile
        pca = cfg.trust.aws_pca
        region = cfg.aws.region
        if pca.existing_arn is not None:
            found = acmpca.get_certificate_authority_output(
                arn=pca.existing_arn, region=region, opts=pulumi.InvokeOutputOptions(parent=self)
            )
            self.aws_pca_arn = pulumi.Output.from_input(pca.existing_arn)
            self.trust_bundle_pem = pulumi.Output.all(found.certificate_chain, found.certificate).apply(
                lambda c: last_pem_block(c[0] or "") or join_pems(c[1])
            )
            self.upstream_chain_pem = pulumi.Output.all(found.certificate, found.certificate_chain).apply(
                lambda c: join_pems(*c)
            )
            return
        build = CaBuilder(self, "aws-pca", region=region)
        tags = {TRUST_DOMAIN_TAG: prof.trust_domain}
        if pca.mode == "root":
            root = build.root(f"{name}-pca-root-cert", prof.root, pca_name=f"{name}-pca",
                              pca_install_name=f"{name}-pca-root-install", pca_usage_mode=pca.usage_mode,
                              pca_tags=tags)
            assert root.arn is not None
            self.aws_pca_arn = root.arn
            self.trust_bundle_pem = root.certificate_pem
            self.upstream_chain_pem = root.certificate_pem.apply(join_pems)
            return
        # Subordinate: its CSR is signed by the organisation's offline root out of band and
        # installed with `aws acm-pca import-certificate-authority-certificate` (docs/trust.md);
        # after `pulumi refresh` the chain (ending in that root) is read back from the CA.
        ca = build.pca_authority(f"{name}-pca", prof.intermediate, ca_type="SUBORDINATE", usage_mode=pca.usage_mode,
                                 tags=tags)
        assert isinstance(ca, acmpca.CertificateAuthority)
        self.aws_pca_arn = ca.arn
        self.trust_bundle_pem = pulumi.Output.all(ca.certificate_chain, ca.certificate).apply(
            lambda c: last_pem_block(c[0] or "") or join_pems(c[1])
        )
        self.upstream_chain_pem = pulumi.Output.all(ca.certificate, ca.certificate_chain).apply(lambda c: join_pems(*c))

    # ----------------------------------------------------------------------- vault-pki

    def _vault_pki(self, name: str, cfg: StackConfig) -> None:
        import pulumi_vault as vault

        prof = self.profile
        settings = cfg.trust.vault_pki
        build = CaBuilder(self, "vault-pki")
        root = build.root(
            f"{name}-pki-root-cert", prof.root, vault_issuer="root",
            vault_mount=VaultMount(
                f"{name}-pki-root", settings.root_mount,
                f"Root CA of trust domain {prof.trust_domain} (Agent Passport)",
                default_lease_ttl_seconds=prof.intermediate_validity_hours * 3600,
                max_lease_ttl_seconds=prof.root_validity_hours * 3600,
            ),
        )
        _, chain = build.vault_intermediate(
            f"{name}-pki-intermediate-cert", root, prof.intermediate,
            VaultMount(
                f"{name}-pki-intermediate", settings.intermediate_mount,
                f"Intermediate CA SPIRE signs under ({prof.trust_domain})",
                default_lease_ttl_seconds=seconds(cfg.spire.ca_ttl),
                max_lease_ttl_seconds=prof.intermediate_validity_hours * 3600,
            ),
            csr_name=f"{name}-pki-intermediate-csr", install_name=f"{name}-pki-intermediate-install",
        )
        vault.Policy(
            f"{name}-pki-spire-upstream",
            name=settings.role,
            policy=spire_upstream_policy(settings.intermediate_mount),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.trust_bundle_pem = root.certificate_pem
        self.upstream_chain_pem = chain
        self.vault_pki_mount = settings.intermediate_mount
