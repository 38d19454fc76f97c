"""The one CA builder: CA certificates from a :class:`~components.render.trust.CaProfile`, with
the keys held by pulumi-tls, Vault PKI or AWS Private CA.

Used by :class:`components.trust.TrustDomain` (the trust domain's root and the intermediate SPIRE
signs under) and :class:`components.mesh.LinkerdIdentity` (Linkerd's trust anchors and identity
issuer). Every resource is a child of the component that builds it, under the name it gives, so
resource names (and state) stay the component's. Two custodies create no CA resources at all and
never reach here: ``trust.upstream: spire`` (SPIRE is its own root) and ``mesh.anchorCustody:
cert-manager`` (cert-manager issues in the cluster).

* :meth:`CaBuilder.root` — a self-signed root (tls: key + self-signed certificate; vault-pki: a
  PKI mount and a root generated inside it; aws-pca: a ROOT Private CA that signs and installs
  its own certificate);
* :meth:`CaBuilder.sign` — a CA certificate signed by a root from a CSR (tls: locally signed;
  vault-pki: root/sign-intermediate; aws-pca: a subordinate CA template);
* :meth:`CaBuilder.private_key` / :meth:`CaBuilder.request` — a pulumi-tls key and CSR, for a CA
  whose key must leave its signer (Linkerd's issuer key goes to the cluster);
* :meth:`CaBuilder.vault_intermediate` — an intermediate whose key stays in a Vault mount;
* :meth:`CaBuilder.pca_authority` — an AWS Private CA (a subordinate is signed out of band).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import pulumi

from components.render.trust import CaProfile, KeySpec, join_pems

Custody = Literal["tls", "vault-pki", "aws-pca"]
"""Who holds a CA's key: pulumi-tls (in Pulumi state), Vault PKI or AWS Private CA (an HSM)."""

PCA_ROOT_TEMPLATE = "arn:aws:acm-pca:::template/RootCACertificate/V1"
PCA_SUBJECT_MAX = 64
"""AWS Private CA's limit on each subject field (the X.520 upper bound)."""


def pca_subordinate_template(path_length: int) -> str:
    """The AWS Private CA template of a subordinate CA allowing ``path_length`` CAs below it."""
    return f"arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen{path_length}/V1"


@dataclass(frozen=True)
class VaultMount:
    """A Vault PKI mount a CA lives in."""

    resource_name: str
    path: str
    description: str
    default_lease_ttl_seconds: int
    max_lease_ttl_seconds: int


@dataclass
class Ca:
    """A CA built here: its certificate and what signing with it needs."""

    certificate_pem: pulumi.Output[str]
    resource: pulumi.Resource
    """The resource holding the certificate (what signing waits for)."""
    key: KeySpec
    """The CA's key algorithm (what it signs with)."""
    key_pem: pulumi.Output[str] | None = None
    """tls: the private key (in Pulumi state)."""
    vault_mount: pulumi.Output[str] | None = None
    """vault-pki: the path of the PKI mount holding the key."""
    vault_issuer: str | None = None
    """vault-pki: the issuer's name inside its mount."""
    arn: pulumi.Output[str] | None = None
    """aws-pca: the Private CA."""
    signing_arn: pulumi.Output[str] | None = None
    """aws-pca: the Private CA's ARN once its certificate is installed (it can sign from then on)."""


class CaBuilder:
    """Builds CAs of one custody as children of ``parent``."""

    def __init__(self, parent: pulumi.Resource, custody: Custody, *, region: str | None = None) -> None:
        self.parent = parent
        self.custody = custody
        self.region = region

    def _opts(self, depends_on: list[pulumi.Resource] | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self.parent, depends_on=depends_on)

    # ----------------------------------------------------------------------- pulumi-tls keys and CSRs

    def private_key(self, name: str, key: KeySpec) -> pulumi.Output[str]:
        """A pulumi-tls private key (PEM, in Pulumi state)."""
        import pulumi_tls as tls

        created = tls.PrivateKey(name, algorithm=key.tls_algorithm, ecdsa_curve=key.tls_ecdsa_curve,
                                 rsa_bits=key.tls_rsa_bits, opts=self._opts())
        return created.private_key_pem

    def request(self, name: str, key_pem: pulumi.Input[str], profile: CaProfile) -> pulumi.Output[str]:
        """A pulumi-tls CSR for ``profile``'s subject and URI SANs."""
        import pulumi_tls as tls

        csr = tls.CertRequest(
            name,
            private_key_pem=key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=profile.common_name, organization=profile.organization,
                                               organizational_unit=profile.unit),
            uris=list(profile.uris) or None,
            opts=self._opts(),
        )
        return csr.cert_request_pem

    # ----------------------------------------------------------------------- roots

    def root(self, name: str, profile: CaProfile, *, vault_mount: VaultMount | None = None,
             vault_issuer: str | None = None, pca_name: str | None = None, pca_install_name: str | None = None,
             pca_usage_mode: str = "GENERAL_PURPOSE", pca_tags: Mapping[str, str] | None = None) -> Ca:
        """A self-signed root CA named ``name``: tls ``<name>-key`` + ``<name>``; vault-pki the mount
        and ``<name>``; aws-pca ``pca_name`` (the CA), ``<name>`` (its certificate) and
        ``pca_install_name``."""
        if self.custody == "tls":
            return self._tls_root(name, profile)
        if self.custody == "vault-pki":
            assert vault_mount is not None and vault_issuer is not None
            return self._vault_root(name, profile, vault_mount, vault_issuer)
        assert pca_name is not None and pca_install_name is not None
        ca = self.pca_authority(pca_name, profile, ca_type="ROOT", usage_mode=pca_usage_mode, tags=pca_tags or {})
        return self._pca_self_sign(name, pca_install_name, ca, profile)

    def _tls_root(self, name: str, profile: CaProfile) -> Ca:
        import pulumi_tls as tls

        key_pem = self.private_key(f"{name}-key", profile.key)
        cert = tls.SelfSignedCert(
            name,
            private_key_pem=key_pem,
            is_ca_certificate=True,
            max_path_length=profile.path_length,
            allowed_uses=list(profile.allowed_uses),
            subject=tls.SelfSignedCertSubjectArgs(common_name=profile.common_name, organization=profile.organization,
                                                  organizational_unit=profile.unit),
            uris=list(profile.uris) or None,
            validity_period_hours=profile.validity_hours,
            early_renewal_hours=profile.early_renewal_hours,
            set_subject_key_id=True,
            set_authority_key_id=True if profile.authority_key_id else None,
            opts=self._opts(),
        )
        return Ca(certificate_pem=cert.cert_pem, resource=cert, key=profile.key, key_pem=key_pem)

    def mount(self, spec: VaultMount) -> pulumi.Output[str]:
        """A Vault PKI mount; its path (an Output: what is created in it waits for it)."""
        import pulumi_vault as vault

        created = vault.Mount(
            spec.resource_name,
            path=spec.path,
            type="pki",
            description=spec.description,
            default_lease_ttl_seconds=spec.default_lease_ttl_seconds,
            max_lease_ttl_seconds=spec.max_lease_ttl_seconds,
            opts=self._opts(),
        )
        return created.path

    def _vault_root(self, name: str, profile: CaProfile, mount: VaultMount, issuer: str) -> Ca:
        import pulumi_vault.pkisecret as pki

        path = self.mount(mount)
        root = pki.SecretBackendRootCert(
            name,
            backend=path,
            type="internal",  # the key is generated in Vault and never exported
            common_name=profile.common_name,
            organization=profile.organization,
            ou=profile.unit,
            uri_sans=list(profile.uris) or None,
            key_type=profile.key.vault_key_type,
            key_bits=profile.key.vault_key_bits,
            max_path_length=profile.path_length,
            exclude_cn_from_sans=None if profile.cn_in_sans else True,
            ttl=f"{profile.validity_hours}h",
            issuer_name=issuer,
            opts=self._opts(),
        )
        return Ca(certificate_pem=root.certificate, resource=root, key=profile.key, vault_mount=path,
                  vault_issuer=issuer)

    def pca_authority(self, name: str, profile: CaProfile, *, ca_type: Literal["ROOT", "SUBORDINATE"],
                      usage_mode: str, tags: Mapping[str, str]) -> pulumi.Resource:
        """An AWS Private CA for ``profile`` (its key in the HSM; a subordinate's certificate is
        signed out of band and installed with ``import-certificate-authority-certificate``)."""
        from pulumi_aws import acmpca

        def cut(text: str | None) -> str | None:
            return None if text is None else text[:PCA_SUBJECT_MAX]

        return acmpca.CertificateAuthority(
            name,
            type=ca_type,
            usage_mode=usage_mode,
            key_storage_security_standard="FIPS_140_2_LEVEL_3_OR_HIGHER",
            certificate_authority_configuration=acmpca.CertificateAuthorityCertificateAuthorityConfigurationArgs(
                key_algorithm=profile.key.pca_key_algorithm,
                signing_algorithm=profile.key.pca_signing_algorithm,
                subject=acmpca.CertificateAuthorityCertificateAuthorityConfigurationSubjectArgs(
                    common_name=cut(profile.common_name), organization=cut(profile.organization),
                    organizational_unit=cut(profile.unit),
                ),
            ),
            permanent_deletion_time_in_days=30,
            region=self.region,
            tags=dict(tags),
            opts=self._opts(),
        )

    def _pca_self_sign(self, name: str, install_name: str, ca: pulumi.Resource, profile: CaProfile) -> Ca:
        """A PCA root signs its own certificate from its CSR, then installs it."""
        from pulumi_aws import acmpca

        assert isinstance(ca, acmpca.CertificateAuthority)
        cert = acmpca.Certificate(
            name,
            certificate_authority_arn=ca.arn,
            certificate_signing_request=ca.certificate_signing_request,
            signing_algorithm=profile.key.pca_signing_algorithm,
            template_arn=PCA_ROOT_TEMPLATE,
            validity=acmpca.CertificateValidityArgs(type="DAYS", value=str(profile.validity_days)),
            region=self.region,
            opts=self._opts(),
        )
        installed = acmpca.CertificateAuthorityCertificate(
            install_name,
            certificate_authority_arn=ca.arn,
            certificate=cert.certificate,
            region=self.region,
            opts=self._opts(),
        )
        # The CA can only sign once its own certificate is installed: sign with the ARN from there.
        return Ca(certificate_pem=cert.certificate, resource=cert, key=profile.key, arn=ca.arn,
                  signing_arn=installed.certificate_authority_arn)

    # ----------------------------------------------------------------------- signing

    def sign(self, name: str, issuer: Ca, csr_pem: pulumi.Input[str], profile: CaProfile) -> pulumi.Output[str]:
        """The certificate (PEM) of a CA for ``profile``, signed by ``issuer`` from ``csr_pem``."""
        if self.custody == "tls":
            import pulumi_tls as tls

            assert issuer.key_pem is not None
            cert = tls.LocallySignedCert(
                name,
                cert_request_pem=csr_pem,
                ca_cert_pem=issuer.certificate_pem,
                ca_private_key_pem=issuer.key_pem,
                is_ca_certificate=True,
                max_path_length=profile.path_length,
                allowed_uses=list(profile.allowed_uses),
                validity_period_hours=profile.validity_hours,
                early_renewal_hours=profile.early_renewal_hours,
                set_subject_key_id=True,
                opts=self._opts(),
            )
            return cert.cert_pem
        if self.custody == "vault-pki":
            import pulumi_vault.pkisecret as pki

            assert issuer.vault_mount is not None and issuer.vault_issuer is not None
            signed = pki.SecretBackendRootSignIntermediate(
                name,
                backend=issuer.vault_mount,
                csr=csr_pem,
                common_name=profile.common_name,
                organization=profile.organization,
                ou=profile.unit,
                uri_sans=list(profile.uris) or None,
                max_path_length=profile.path_length,
                exclude_cn_from_sans=None if profile.cn_in_sans else True,
                ttl=f"{profile.validity_hours}h",
                issuer_ref=issuer.vault_issuer,
                # the issuer's certificate, not just its mount: Vault must hold the root first
                opts=self._opts(depends_on=[issuer.resource]),
            )
            return signed.certificate
        from pulumi_aws import acmpca

        assert issuer.signing_arn is not None
        signed_cert = acmpca.Certificate(
            name,
            certificate_authority_arn=issuer.signing_arn,
            certificate_signing_request=csr_pem,
            signing_algorithm=issuer.key.pca_signing_algorithm,
            template_arn=pca_subordinate_template(profile.path_length),
            validity=acmpca.CertificateValidityArgs(type="DAYS", value=str(profile.validity_days)),
            region=self.region,
            opts=self._opts(),
        )
        return signed_cert.certificate

    def vault_intermediate(self, name: str, issuer: Ca, profile: CaProfile, mount: VaultMount, *,
                           install_name: str, csr_name: str) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        """An intermediate whose key is generated in (and never leaves) ``mount``, signed by
        ``issuer`` and installed with its chain: (its mount's path, the chain, leaf-to-root PEM)."""
        import pulumi_vault.pkisecret as pki

        path = self.mount(mount)
        csr = pki.SecretBackendIntermediateCertRequest(
            csr_name,
            backend=path,
            type="internal",
            common_name=profile.common_name,
            organization=profile.organization,
            ou=profile.unit,
            uri_sans=list(profile.uris) or None,
            key_type=profile.key.vault_key_type,
            key_bits=profile.key.vault_key_bits,
            opts=self._opts(),
        )
        signed = self.sign(name, issuer, csr.csr, profile)
        chain = pulumi.Output.all(signed, issuer.certificate_pem).apply(lambda c: join_pems(*c))
        pki.SecretBackendIntermediateSetSigned(install_name, backend=path, certificate=chain, opts=self._opts())
        return path, chain
