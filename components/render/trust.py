"""Pure trust profile: key algorithms, lifetimes, path lengths, validation, PEM helpers, and
the Vault policy SPIRE's ``vault`` UpstreamAuthority uses. No Pulumi imports: the component in
:mod:`components.trust` and the tests (which build the same chain with ``cryptography``) share it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from components.config import NAMESPACE, StackConfig
from components.durations import seconds
from components.errors import ConfigError, Problem
from components.platform_model import Platform
from components.render.artifacts import Artifact

CA_USES = ("cert_signing", "crl_signing", "digital_signature")
"""pulumi-tls allowed_uses of every CA certificate (keyCertSign, cRLSign, digitalSignature)."""

ROOT_PATH_LENGTH = 2
"""Root: at most two CAs below it — our intermediate and SPIRE's own signing CA."""

INTERMEDIATE_PATH_LENGTH = 1
"""Intermediate: exactly one CA below it — SPIRE's signing CA (whose SVIDs are leaves)."""


@dataclass(frozen=True)
class KeySpec:
    """One key algorithm as each upstream spells it."""

    name: Literal["ecdsa-p256", "ecdsa-p384", "rsa-3072"]
    tls_algorithm: Literal["ECDSA", "RSA"]
    tls_ecdsa_curve: str | None
    tls_rsa_bits: int | None
    pca_key_algorithm: str
    pca_signing_algorithm: str
    vault_key_type: Literal["ec", "rsa"]
    vault_key_bits: int


KEY_SPECS: dict[str, KeySpec] = {
    "ecdsa-p256": KeySpec("ecdsa-p256", "ECDSA", "P256", None, "EC_prime256v1", "SHA256WITHECDSA", "ec", 256),
    "ecdsa-p384": KeySpec("ecdsa-p384", "ECDSA", "P384", None, "EC_secp384r1", "SHA384WITHECDSA", "ec", 384),
    "rsa-3072": KeySpec("rsa-3072", "RSA", None, 3072, "RSA_3072", "SHA256WITHRSA", "rsa", 3072),
}


@dataclass(frozen=True)
class CaProfile:
    """One CA certificate, whoever holds its key (pulumi-tls, Vault PKI, AWS Private CA): the one
    profile type :mod:`components.ca` builds from, for the trust domain's root and intermediate
    (:class:`TrustProfile`) and Linkerd's trust anchors and issuer
    (:class:`components.render.mesh.LinkerdIdentityProfile`)."""

    common_name: str
    organization: str
    key: KeySpec
    path_length: int
    """CAs allowed below this one."""
    validity_hours: int
    allowed_uses: tuple[str, ...]
    """pulumi-tls allowed_uses (Vault and AWS Private CA set a CA's key usage themselves)."""
    unit: str | None = None
    """Subject OU (Linkerd tells anchor generations and issuer rotations apart by it)."""
    uris: tuple[str, ...] = ()
    """URI SANs (the trust domain's SPIFFE ID on its CAs)."""
    early_renewal_hours: int | None = None
    """pulumi-tls re-issues the certificate this long before it expires (None: never early)."""
    authority_key_id: bool = False
    """pulumi-tls: set the authority key identifier (a self-signed root pointing at itself)."""
    cn_in_sans: bool = True
    """False: Vault must not copy the common name into the DNS SANs (it looks like a DNS name)."""

    @property
    def validity_days(self) -> int:
        return self.validity_hours // 24


@dataclass(frozen=True)
class TrustProfile:
    """Everything about the CA certificates that does not depend on who holds the keys."""

    trust_domain: str
    upstream: Literal["tls", "aws-pca", "vault-pki", "spire"]
    key: KeySpec
    organization: str
    root_common_name: str
    intermediate_common_name: str
    root_validity_hours: int
    intermediate_validity_hours: int
    early_renewal_hours: int
    root_path_length: int = ROOT_PATH_LENGTH
    intermediate_path_length: int = INTERMEDIATE_PATH_LENGTH

    @property
    def root_validity_days(self) -> int:
        return self.root_validity_hours // 24

    @property
    def intermediate_validity_days(self) -> int:
        return self.intermediate_validity_hours // 24

    @property
    def root(self) -> CaProfile:
        """The root CA (self-signed; with the aws-pca upstream in subordinate mode, signed offline)."""
        return CaProfile(
            common_name=self.root_common_name, organization=self.organization, key=self.key,
            path_length=self.root_path_length, validity_hours=self.root_validity_hours, allowed_uses=CA_USES,
            uris=(f"spiffe://{self.trust_domain}",), early_renewal_hours=self.early_renewal_hours,
            authority_key_id=True,
        )

    @property
    def intermediate(self) -> CaProfile:
        """The intermediate SPIRE's UpstreamAuthority signs under."""
        return CaProfile(
            common_name=self.intermediate_common_name, organization=self.organization, key=self.key,
            path_length=self.intermediate_path_length, validity_hours=self.intermediate_validity_hours,
            allowed_uses=CA_USES, uris=(f"spiffe://{self.trust_domain}",),
            early_renewal_hours=self.early_renewal_hours,
        )


def trust_problems(cfg: StackConfig, file: str) -> list[Problem]:
    """Stack-config problems of the trust section the generic checks do not cover."""
    t = cfg.trust
    out: list[Problem] = []

    def p(field: str, message: str) -> None:
        out.append(Problem(file, None, f"{NAMESPACE}:trust.{field}", message))

    for field, value in (
        ("rootLifetime", t.root_lifetime),
        ("intermediateLifetime", t.intermediate_lifetime),
        ("earlyRenewal", t.early_renewal),
    ):
        if seconds(value) % 3600:
            p(
                field,
                f"{value} is not a whole number of hours (e.g. 720h, 365d)",
            )
    if t.upstream in ("aws-pca", "vault-pki"):
        for field, value in (
            ("rootLifetime", t.root_lifetime),
            ("intermediateLifetime", t.intermediate_lifetime),
        ):
            if seconds(value) % 86400:
                p(
                    field,
                    f"{value} is not a whole number of days, which {t.upstream} needs (e.g. 365d)",
                )
    if seconds(t.early_renewal) >= seconds(t.intermediate_lifetime):
        p(
            "earlyRenewal",
            f"{t.early_renewal} is not shorter than intermediateLifetime "
            f"({t.intermediate_lifetime}): "
            "the intermediate would be re-issued on every `pulumi up`",
        )
    if t.upstream == "tls" and seconds(cfg.spire.ca_ttl) > seconds(t.early_renewal):
        # The intermediate is re-issued earlyRenewal before it expires, so its remaining life is
        # at least earlyRenewal whenever `pulumi up` runs on schedule: SPIRE's CA (caTtl) must fit.
        out.append(
            Problem(
                file,
                None,
                f"{NAMESPACE}:spire.caTtl",
                f"{cfg.spire.ca_ttl} is longer than trust.earlyRenewal ({t.early_renewal}), the "
                "shortest remaining life of the upstream intermediate; shorten caTtl or "
                "renew earlier",
            )
        )
    if (
        t.upstream == "aws-pca"
        and t.aws_pca.existing_arn is None
        and t.aws_pca.mode == "root"
        and seconds(t.root_lifetime) > 10 * 365 * 86400
    ):
        p("rootLifetime", "AWS Private CA roots are limited to 10 years here; shorten rootLifetime")
    if t.upstream == "aws-pca" and t.aws_pca.existing_arn is None and len(t.organization) > 64:
        # AWS Private CA refuses a longer subject O (the CA would fail to create at deploy time)
        p("organization", f"{len(t.organization)} characters: AWS Private CA takes at most 64 in a subject's O")
    if t.upstream == "vault-pki" and not cfg.subsystems.vault:
        p(
            "upstream",
            "vault-pki needs subsystems.vault (the Vault provider and address come from the vault "
            "section); enable it or choose another upstream",
        )
    if t.upstream == "aws-pca" and not cfg.subsystems.aws:
        p("upstream", "aws-pca needs subsystems.aws (AWS credentials and region); enable it or choose another upstream")
    for i, problem in previous_root_problems(t.previous_roots):
        p(f"previousRoots[{i}]", problem)
    if t.upstream == "spire" and t.previous_roots:
        p("previousRoots", "spire keeps its old roots in its own bundle until they expire; previousRoots is for "
          "the upstreams tls, vault-pki and aws-pca: remove it")
    if t.upstream == "spire":
        # SPIRE's own root rotates every caTtl and exists only inside SPIRE: consumers that pin a
        # CA certificate at deploy time cannot follow it.
        if cfg.subsystems.vault and cfg.vault.auth == "cert":
            p("upstream", "spire keeps its root inside SPIRE and rotates it every spire.caTtl, so Vault cert "
              "auth (vault.auth: cert) would pin a CA that goes away; use vault.auth: jwt, or an upstream "
              "CA (tls, vault-pki, aws-pca)")
        if cfg.subsystems.aws and cfg.aws.federation == "roles-anywhere":
            p("upstream", "spire keeps its root inside SPIRE and rotates it every spire.caTtl, so an IAM Roles "
              "Anywhere trust anchor would pin a CA that goes away; use aws.federation: oidc, or an upstream "
              "CA (tls, vault-pki, aws-pca)")
    return out


def trust_profile(cfg: StackConfig, file: str = "stack configuration") -> TrustProfile:
    """The validated certificate profile of a stack; raises ConfigError listing every problem."""
    problems = trust_problems(cfg, file)
    if problems:
        raise ConfigError(problems)
    t = cfg.trust
    return TrustProfile(
        trust_domain=cfg.trust_domain,
        upstream=t.upstream,
        key=KEY_SPECS[t.key_algorithm],
        organization=t.organization,
        root_common_name=f"{t.organization} Root CA ({cfg.trust_domain})",
        intermediate_common_name=f"{t.organization} SPIRE Upstream CA ({cfg.trust_domain})",
        root_validity_hours=seconds(t.root_lifetime) // 3600,
        intermediate_validity_hours=seconds(t.intermediate_lifetime) // 3600,
        early_renewal_hours=seconds(t.early_renewal) // 3600,
    )


def previous_root_problems(pems: Iterable[str]) -> Iterable[tuple[int, str]]:
    """(index, what is wrong) for every trust.previousRoots entry that is not a CA certificate."""
    from cryptography import x509

    for i, pem in enumerate(pems):
        try:
            cert = x509.load_pem_x509_certificate(pem.strip().encode())
        except ValueError as exc:
            yield i, f"not a PEM certificate ({exc}); paste the old root as `pulumi stack output` printed it"
            continue
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            yield i, f"{cert.subject.rfc4514_string()} is not a CA certificate; list only former root CAs"


def trust_bundle_with_previous(current_pem: str, previous: Iterable[str]) -> str:
    """What consumers pinning the trust domain's roots trust during a root rotation: the current
    root first, then each previous root not already there (one PEM block each, duplicates of the
    same certificate dropped). With no previous roots it is the current root, unchanged."""
    rest = [p for p in previous if p.strip()]
    if not rest:
        return current_pem
    seen: set[str] = set()
    out = []
    for pem in [*pem_blocks(current_pem), *(b for p in rest for b in pem_blocks(p))]:
        body = "".join(pem.split())  # the same certificate, however it was wrapped
        if body not in seen:
            seen.add(body)
            out.append(pem)
    return "".join(out)


def pem_blocks(text: str) -> list[str]:
    """Every certificate of a PEM text, one newline-terminated block each, in order."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    return [begin + part.split(end)[0] + end + "\n" for part in text.split(begin)[1:] if end in part]


def last_pem_block(chain: str) -> str:
    """The last certificate of a PEM chain (the root, in leaf-to-root order); '' if none."""
    marker = "-----BEGIN CERTIFICATE-----"
    idx = chain.rfind(marker)
    return "" if idx < 0 else chain[idx:].strip() + "\n"


def join_pems(*pems: str | None) -> str:
    """Concatenate PEM blocks, one newline-terminated block after another, skipping empties."""
    return "".join(p.strip() + "\n" for p in pems if p and p.strip())


def spire_upstream_policy(mount: str) -> str:
    """Vault policy (HCL) for SPIRE's ``vault`` UpstreamAuthority: sign its CA, read the chain."""
    return (
        f'path "{mount}/root/sign-intermediate" {{\n  capabilities = ["update"]\n}}\n\n'
        f'path "{mount}/cert/ca_chain" {{\n  capabilities = ["read"]\n}}\n'
    )


def trust_artifacts(platform: Platform) -> Iterable[Artifact]:
    """The Vault policy SPIRE signs with, when Vault PKI is the upstream (other upstreams add no file)."""
    cfg = platform.config
    if cfg.trust.upstream == "vault-pki":
        settings = cfg.trust.vault_pki
        yield Artifact(f"vault/policies/{settings.role}.hcl", spire_upstream_policy(settings.intermediate_mount))
