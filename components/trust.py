"""The trust domain's CA hierarchy: a root CA and the intermediate SPIRE signs under.

Four upstreams, selected by ``agent-passport:trust.upstream``:

* ``spire`` — SPIRE is its own root: no UpstreamAuthority, the key in SPIRE's KeyManager (disk or
  AWS KMS), rotated by SPIRE every ``spire.caTtl``; nothing is created here;

* ``tls`` — pulumi-tls keys and certificates (dev only: the keys live, encrypted, in Pulumi state);
* ``aws-pca`` — AWS Private CA (root or subordinate); the signing key never leaves AWS;
* ``vault-pki`` — Vault's PKI engine (root mount + intermediate mount); keys stay in Vault.

The certificate profile (key algorithm, lifetimes, path lengths, subject names) is computed by
the pure :func:`trust_profile`, so tests can build the same chain with ``cryptography``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.config import StackConfig
from components.durations import seconds
from components.platform_model import Platform
from components.render.trust import (
    CA_USES,
    TrustProfile,
    join_pems,
    last_pem_block,
    spire_upstream_policy,
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
    """Root CA certificate(s), PEM, for verifiers (Vault cert auth, Roles Anywhere, Envoy)."""

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
        import pulumi_tls as tls

        prof = self.profile
        child = pulumi.ResourceOptions(parent=self)

        def key(suffix: str) -> tls.PrivateKey:
            return tls.PrivateKey(
                f"{name}-{suffix}-key",
                algorithm=prof.key.tls_algorithm,
                ecdsa_curve=prof.key.tls_ecdsa_curve,
                rsa_bits=prof.key.tls_rsa_bits,
                opts=child,
            )

        root_key = key("root")
        root = tls.SelfSignedCert(
            f"{name}-root",
            private_key_pem=root_key.private_key_pem,
            is_ca_certificate=True,
            max_path_length=prof.root_path_length,
            allowed_uses=list(CA_USES),
            subject=tls.SelfSignedCertSubjectArgs(common_name=prof.root_common_name, organization=prof.organization),
            uris=[f"spiffe://{prof.trust_domain}"],
            validity_period_hours=prof.root_validity_hours,
            early_renewal_hours=prof.early_renewal_hours,
            set_subject_key_id=True,
            set_authority_key_id=True,
            opts=child,
        )
        int_key = key("intermediate")
        csr = tls.CertRequest(
            f"{name}-intermediate-csr",
            private_key_pem=int_key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(
                common_name=prof.intermediate_common_name, organization=prof.organization
            ),
            uris=[f"spiffe://{prof.trust_domain}"],
            opts=child,
        )
        intermediate = tls.LocallySignedCert(
            f"{name}-intermediate",
            cert_request_pem=csr.cert_request_pem,
            ca_cert_pem=root.cert_pem,
            ca_private_key_pem=root_key.private_key_pem,
            is_ca_certificate=True,
            max_path_length=prof.intermediate_path_length,
            allowed_uses=list(CA_USES),
            validity_period_hours=prof.intermediate_validity_hours,
            early_renewal_hours=prof.early_renewal_hours,
            set_subject_key_id=True,
            opts=child,
        )
        self.trust_bundle_pem = root.cert_pem
        self.upstream_chain_pem = pulumi.Output.all(intermediate.cert_pem, root.cert_pem).apply(
            lambda pems: join_pems(*pems)
        )
        self.upstream_key_pem = pulumi.Output.secret(int_key.private_key_pem)

    # ----------------------------------------------------------------------- aws-pca

    def _aws_pca(self, name: str, cfg: StackConfig) -> None:
        from pulumi_aws import acmpca

        prof = self.profile
        pca = cfg.trust.aws_pca
        region = cfg.aws.region
        child = pulumi.ResourceOptions(parent=self)
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
        ca = acmpca.CertificateAuthority(
            f"{name}-pca",
            type="ROOT" if pca.mode == "root" else "SUBORDINATE",
            usage_mode=pca.usage_mode,
            key_storage_security_standard="FIPS_140_2_LEVEL_3_OR_HIGHER",
            certificate_authority_configuration=acmpca.CertificateAuthorityCertificateAuthorityConfigurationArgs(
                key_algorithm=prof.key.pca_key_algorithm,
                signing_algorithm=prof.key.pca_signing_algorithm,
                subject=acmpca.CertificateAuthorityCertificateAuthorityConfigurationSubjectArgs(
                    common_name=(prof.root_common_name if pca.mode == "root" else prof.intermediate_common_name)[:64],
                    organization=prof.organization,
                ),
            ),
            permanent_deletion_time_in_days=30,
            region=region,
            tags={"agentpassport.dev/trust-domain": prof.trust_domain},
            opts=child,
        )
        self.aws_pca_arn = ca.arn
        if pca.mode == "root":
            # A PCA root signs its own certificate from its CSR, then installs it.
            cert = acmpca.Certificate(
                f"{name}-pca-root-cert",
                certificate_authority_arn=ca.arn,
                certificate_signing_request=ca.certificate_signing_request,
                signing_algorithm=prof.key.pca_signing_algorithm,
                template_arn="arn:aws:acm-pca:::template/RootCACertificate/V1",
                validity=acmpca.CertificateValidityArgs(type="DAYS", value=str(prof.root_validity_days)),
                region=region,
                opts=child,
            )
            acmpca.CertificateAuthorityCertificate(
                f"{name}-pca-root-install",
                certificate_authority_arn=ca.arn,
                certificate=cert.certificate,
                region=region,
                opts=child,
            )
            self.trust_bundle_pem = cert.certificate
            self.upstream_chain_pem = cert.certificate.apply(join_pems)
            return
        # Subordinate: its CSR is signed by the organisation's offline root out of band and
        # installed with `aws acm-pca import-certificate-authority-certificate` (docs/trust.md);
        # after `pulumi refresh` the chain (ending in that root) is read back from the CA.
        self.trust_bundle_pem = pulumi.Output.all(ca.certificate_chain, ca.certificate).apply(
            lambda c: last_pem_block(c[0] or "") or join_pems(c[1])
        )
        self.upstream_chain_pem = pulumi.Output.all(ca.certificate, ca.certificate_chain).apply(lambda c: join_pems(*c))

    # ----------------------------------------------------------------------- vault-pki

    def _vault_pki(self, name: str, cfg: StackConfig) -> None:
        import pulumi_vault as vault
        import pulumi_vault.pkisecret as pki

        prof = self.profile
        settings = cfg.trust.vault_pki
        child = pulumi.ResourceOptions(parent=self)
        root_mount = vault.Mount(
            f"{name}-pki-root",
            path=settings.root_mount,
            type="pki",
            description=f"Root CA of trust domain {prof.trust_domain} (Agent Passport)",
            default_lease_ttl_seconds=prof.intermediate_validity_hours * 3600,
            max_lease_ttl_seconds=prof.root_validity_hours * 3600,
            opts=child,
        )
        int_mount = vault.Mount(
            f"{name}-pki-intermediate",
            path=settings.intermediate_mount,
            type="pki",
            description=f"Intermediate CA SPIRE signs under ({prof.trust_domain})",
            default_lease_ttl_seconds=seconds(cfg.spire.ca_ttl),
            max_lease_ttl_seconds=prof.intermediate_validity_hours * 3600,
            opts=child,
        )
        root = pki.SecretBackendRootCert(
            f"{name}-pki-root-cert",
            backend=root_mount.path,
            type="internal",
            common_name=prof.root_common_name,
            organization=prof.organization,
            uri_sans=[f"spiffe://{prof.trust_domain}"],
            key_type=prof.key.vault_key_type,
            key_bits=prof.key.vault_key_bits,
            max_path_length=prof.root_path_length,
            ttl=f"{prof.root_validity_hours}h",
            issuer_name="root",
            opts=child,
        )
        csr = pki.SecretBackendIntermediateCertRequest(
            f"{name}-pki-intermediate-csr",
            backend=int_mount.path,
            type="internal",
            common_name=prof.intermediate_common_name,
            organization=prof.organization,
            uri_sans=[f"spiffe://{prof.trust_domain}"],
            key_type=prof.key.vault_key_type,
            key_bits=prof.key.vault_key_bits,
            opts=child,
        )
        signed = pki.SecretBackendRootSignIntermediate(
            f"{name}-pki-intermediate-cert",
            backend=root_mount.path,
            csr=csr.csr,
            common_name=prof.intermediate_common_name,
            organization=prof.organization,
            uri_sans=[f"spiffe://{prof.trust_domain}"],
            max_path_length=prof.intermediate_path_length,
            ttl=f"{prof.intermediate_validity_hours}h",
            issuer_ref="root",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[root]),
        )
        chain = pulumi.Output.all(signed.certificate, root.certificate).apply(lambda c: join_pems(*c))
        pki.SecretBackendIntermediateSetSigned(
            f"{name}-pki-intermediate-install",
            backend=int_mount.path,
            certificate=chain,
            opts=child,
        )
        vault.Policy(
            f"{name}-pki-spire-upstream",
            name=settings.role,
            policy=spire_upstream_policy(settings.intermediate_mount),
            opts=child,
        )
        self.trust_bundle_pem = root.certificate
        self.upstream_chain_pem = chain
        self.vault_pki_mount = settings.intermediate_mount
