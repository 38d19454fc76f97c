"""``passport ca status`` from the deployed certificates: an exported stack state (the shape
``pulumi stack export`` prints) and cert-manager's Secrets, holding real certificates made here,
in; status rows with their dates and next action out. The real CLI and API server are
tests/e2e/test_ca_deployed_e2e.py."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.ca_deployed import SECRET_SIG, cluster_rows, find_certificates, state_rows
from components.ca_lifecycle import iso_time
from components.ca_runner import Clock, status
from components.ca_sources import Deployed, export_state, read_deployed
from components.platform_model import Platform, load_platform
from components.render.mesh.identity import linkerd_identity_profile
from components.render.trust import trust_profile

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
STACK_URN = "urn:pulumi:dev::agent-passport::pulumi:pulumi:Stack::agent-passport-dev"


def make_ca(cn: str, *, ou: str | None = None, start: datetime, hours: int,
            signer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme")]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    subject = x509.Name(attrs)
    issuer_name, issuer_key = (subject, key) if signer is None else (signer[0].subject, signer[1])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + timedelta(hours=hours))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(issuer_key, hashes.SHA256()))
    return cert, key


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def ski(cert: x509.Certificate) -> str:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


def component(typ: str, name: str) -> dict[str, Any]:
    return {"urn": f"urn:pulumi:dev::agent-passport::{typ}::{name}", "custom": False, "type": typ,
            "parent": STACK_URN}


def child(parent: dict[str, Any], typ: str, name: str, outputs: dict[str, Any]) -> dict[str, Any]:
    qualified = f"{parent['type']}${typ}"
    return {"urn": f"urn:pulumi:dev::agent-passport::{qualified}::{name}", "custom": True, "id": name,
            "type": typ, "parent": parent["urn"], "inputs": {}, "outputs": outputs,
            "provider": "urn:pulumi:dev::agent-passport::pulumi:providers:tls::default_5_2_0::x"}


def exported(*resources: dict[str, Any]) -> dict[str, Any]:
    """What `pulumi stack export` prints (version 3 deployment)."""
    return {"version": 3, "deployment": {
        "manifest": {"time": "2026-12-01T10:00:00Z", "magic": "x", "version": "v3.276.0"},
        "secrets_providers": {"type": "passphrase", "state": {"salt": "v1:x"}},
        "resources": [{"urn": STACK_URN, "custom": False, "type": "pulumi:pulumi:Stack"}, *resources]}}


SECRET = {SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270", "ciphertext": "v1:abc"}
TLS_SELF = "tls:index/selfSignedCert:SelfSignedCert"
TLS_SIGNED = "tls:index/locallySignedCert:LocallySignedCert"


@pytest.fixture(scope="module")
def dev() -> Platform:
    return load_platform("dev")


@pytest.fixture(scope="module")
def dev_state(dev: Platform) -> dict[str, Any]:
    """The dev stack's CAs (pulumi-tls) as components/ca.py creates them, with real certificates."""
    gen = linkerd_identity_profile(dev.config).signing_anchor
    root, root_key = make_ca("Acme Root CA", start=NOW - timedelta(days=100), hours=3650 * 24)
    inter, _ = make_ca("Acme SPIRE Upstream CA", start=NOW - timedelta(days=100), hours=365 * 24,
                       signer=(root, root_key))
    anchor, anchor_key = make_ca("root.linkerd.cluster.local", ou=f"linkerd trust anchor {gen}",
                                 start=NOW - timedelta(days=10), hours=3650 * 24)
    issuer, _ = make_ca("identity.linkerd.cluster.local", ou="linkerd identity issuer 1",
                        start=NOW - timedelta(days=10), hours=24 * 365, signer=(anchor, anchor_key))
    trust = component("agentpassport:trust:TrustDomain", "trust")
    mesh = component("agentpassport:mesh:LinkerdIdentity", "linkerd-identity")
    other = component("agentpassport:spire:Spire", "spire")
    return exported(
        trust,
        child(trust, "tls:index/privateKey:PrivateKey", "trust-root-key", {"privateKeyPem": SECRET}),
        child(trust, TLS_SELF, "trust-root", {"certPem": pem(root), "validityPeriodHours": 87600}),
        child(trust, "tls:index/certRequest:CertRequest", "trust-intermediate-csr", {"certRequestPem": "x"}),
        child(trust, TLS_SIGNED, "trust-intermediate", {"certPem": pem(inter)}),
        mesh,
        child(mesh, TLS_SELF, "linkerd-identity-anchor", {"certPem": pem(anchor)}),
        child(mesh, TLS_SIGNED, "linkerd-identity-issuer", {"certPem": pem(issuer)}),
        other,  # a certificate under another component is not one of the trust chain's
        child(other, TLS_SELF, "something-else", {"certPem": pem(make_ca("x", start=NOW, hours=1)[0])}),
        child(trust, "pulumi:providers:tls", "ignored", {"certPem": pem(inter)}),  # not a CA resource type
    )


def certs_of(state: dict[str, Any]) -> dict[str, x509.Certificate]:
    out = {}
    for r in state["deployment"]["resources"]:
        text = (r.get("outputs") or {}).get("certPem")
        if isinstance(text, str):
            out[r["urn"].rsplit("::", 1)[-1]] = x509.load_pem_x509_certificate(text.encode())
    return out


def test_the_trust_domain_and_linkerd_certificates_come_from_the_state(dev: Platform,
                                                                        dev_state: dict[str, Any]) -> None:
    certs = certs_of(dev_state)
    gen = linkerd_identity_profile(dev.config).signing_anchor
    rows, notes = state_rows(dev_state, trust_profile(dev.config), linkerd_identity_profile(dev.config), NOW)
    assert notes == []
    assert [(r.layer, r.id) for r in rows] == [
        ("root", ski(certs["trust-root"])), ("intermediate", ski(certs["trust-intermediate"])),
        ("linkerd-anchor", f"{gen} {ski(certs['linkerd-identity-anchor'])}"),
        ("linkerd-issuer", ski(certs["linkerd-identity-issuer"]))]
    root, inter, anchor, issuer = rows
    assert (root.not_before, root.not_after) == (certs["trust-root"].not_valid_before_utc,
                                                  certs["trust-root"].not_valid_after_utc)
    # pulumi-tls re-issues within trust.earlyRenewal (720h in dev) of expiry, at the next `pulumi up`
    assert inter.next_date == certs["trust-intermediate"].not_valid_after_utc - timedelta(hours=720)
    assert "re-issued by the first `pulumi up`" in inter.next_action and "720h" in inter.next_action
    assert root.custody == "pulumi-tls (Pulumi state, encrypted)"
    # an anchor's rotation must start while a new issuer (mesh.issuerLifetime) would expire before it
    life = timedelta(hours=linkerd_identity_profile(dev.config).issuer_validity_hours)
    assert anchor.next_date == certs["linkerd-identity-anchor"].not_valid_after_utc - life
    assert anchor.state == "signs the issuer" and "two-anchor rotation" in anchor.next_action
    early = timedelta(hours=linkerd_identity_profile(dev.config).issuer_early_renewal_hours)
    assert issuer.next_date == certs["linkerd-identity-issuer"].not_valid_after_utc - early
    assert root.time_left(NOW) == "3550d0h"


def test_expired_and_overdue_certificates_say_so(dev: Platform) -> None:
    old, _ = make_ca("Old Root", start=NOW - timedelta(days=20), hours=24 * 10)
    late, late_key = make_ca("Late Root", start=NOW - timedelta(days=364), hours=24 * 365)
    trust = component("agentpassport:trust:TrustDomain", "trust")
    inter, _ = make_ca("Inter", start=NOW - timedelta(days=364), hours=24 * 365, signer=(late, late_key))
    state = exported(trust, child(trust, TLS_SELF, "trust-root", {"certPem": pem(old)}),
                     child(trust, TLS_SIGNED, "trust-intermediate", {"certPem": pem(inter)}))
    rows, _ = state_rows(state, trust_profile(dev.config), None, NOW)
    assert rows[0].state == "EXPIRED" and rows[0].time_left(NOW) == "expired"
    assert rows[0].next_action.startswith("OVERDUE, it has expired: ")
    assert rows[1].state == "deployed" and rows[1].next_action.startswith("OVERDUE since the date shown: ")


def test_a_secret_or_broken_certificate_is_a_note_not_an_error(dev: Platform) -> None:
    trust = component("agentpassport:trust:TrustDomain", "trust")
    state = exported(trust, child(trust, TLS_SELF, "trust-root", {"certPem": SECRET}),
                     child(trust, TLS_SIGNED, "trust-intermediate", {"certPem": "-----BEGIN CERTIFICATE-----\nAAAA"
                                                                                 "\n-----END CERTIFICATE-----\n"}))
    rows, notes = state_rows(state, trust_profile(dev.config), None, NOW)
    assert rows == []
    assert notes[0] == ("trust-root: its certificate is a secret in the state (`pulumi stack export --show-secrets` "
                        "it, then --state FILE)")
    assert notes[1].startswith("trust-intermediate: certPem is not a certificate (")


def test_vault_pki_and_aws_pca_certificates_are_rotated_by_hand() -> None:
    staging = load_platform("staging")
    root, root_key = make_ca("Root", start=NOW - timedelta(days=1), hours=24 * 3650)
    inter, _ = make_ca("Inter", start=NOW - timedelta(days=1), hours=24 * 365, signer=(root, root_key))
    trust = component("agentpassport:trust:TrustDomain", "trust")
    vault_state = exported(
        trust,
        child(trust, "vault:pkiSecret/secretBackendRootCert:SecretBackendRootCert", "trust-pki-root-cert",
              {"certificate": pem(root)}),
        child(trust, "vault:pkiSecret/secretBackendRootSignIntermediate:SecretBackendRootSignIntermediate",
              "trust-pki-intermediate-cert", {"certificate": pem(inter), "caChain": [pem(inter), pem(root)]}))
    profile = trust_profile(staging.config)
    rows, _ = state_rows(vault_state, profile, None, NOW)
    assert [(r.layer, r.custody) for r in rows] == [("root", "Vault PKI"), ("intermediate", "Vault PKI")]
    assert rows[0].next_action.startswith("rotate the root by this date: `passport ca rotate --authority upstream`")
    assert rows[1].next_date == inter.not_valid_after_utc - timedelta(hours=profile.early_renewal_hours)

    # aws-pca in subordinate mode: the CA's installed certificate, and the offline root ending its chain
    pca_state = exported(trust, child(trust, "aws:acmpca/certificateAuthority:CertificateAuthority", "trust-pca",
                                      {"certificate": pem(inter), "certificateChain": pem(root)}))
    rows, _ = state_rows(pca_state, profile, None, NOW)
    assert [(r.layer, r.id, r.custody) for r in rows] == [("root", ski(root), "AWS Private CA (HSM)"),
                                                          ("intermediate", ski(inter), "AWS Private CA (HSM)")]


def tls_secret(cert: x509.Certificate, ca: x509.Certificate) -> dict[str, Any]:
    """A Secret as cert-manager writes it (type kubernetes.io/tls; tls.crt, tls.key, ca.crt)."""
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "x", "annotations": {"cert-manager.io/certificate-name": "x"}},
            "data": {"tls.crt": b64(pem(cert)), "tls.key": b64("-----BEGIN EC PRIVATE KEY-----\n"),
                     "ca.crt": b64(pem(ca))}}


def test_cert_manager_secrets_give_linkerd_anchor_and_issuer_dates() -> None:
    local = load_platform("local")
    profile = linkerd_identity_profile(local.config)
    assert profile.custody == "cert-manager"
    anchor, anchor_key = make_ca("root.linkerd.cluster.local", ou="linkerd trust anchor a",
                                 start=NOW - timedelta(days=30), hours=24 * 90)
    issuer, _ = make_ca("identity.linkerd.cluster.local", start=NOW - timedelta(hours=10), hours=48,
                        signer=(anchor, anchor_key))
    gen = profile.signing_anchor
    secrets: dict[str, Any] = {
        f"cert-manager/linkerd-trust-anchor-{gen}": tls_secret(anchor, anchor),
        "linkerd/linkerd-identity-issuer": tls_secret(issuer, anchor),
    }
    rows, notes = cluster_rows(secrets, profile, NOW)
    assert notes == []
    assert [(r.layer, r.id) for r in rows] == [("linkerd-anchor", f"{gen} {ski(anchor)}"),
                                               ("linkerd-issuer", ski(issuer))]
    # no renewBefore on the anchor: cert-manager renews with a third of its 90 days left
    assert rows[0].next_date == anchor.not_valid_after_utc - timedelta(days=30)
    assert rows[0].custody == f"cert-manager (Secret cert-manager/linkerd-trust-anchor-{gen})"
    assert rows[1].next_date == issuer.not_valid_after_utc - timedelta(hours=profile.issuer_early_renewal_hours)

    missing, notes = cluster_rows({"linkerd/linkerd-identity-issuer": 'secrets "x" is forbidden',
                                   f"cert-manager/linkerd-trust-anchor-{gen}": tls_secret(anchor, anchor)},
                                  profile, NOW)
    assert [r.layer for r in missing] == ["linkerd-anchor"]
    assert notes == ["cluster: Secret linkerd/linkerd-identity-issuer not read (secrets \"x\" is forbidden)"]
    unreachable = "The connection to the server 127.0.0.1:6443 was refused"
    _, notes = cluster_rows(dict.fromkeys(secrets, unreachable), profile, NOW)
    assert notes == [f"cluster not read: {unreachable}"]


def test_status_prints_the_deployed_rows_and_notes_and_still_the_spire_rows(dev: Platform,
                                                                            dev_state: dict[str, Any]) -> None:
    def deployed(now: datetime) -> Deployed:
        rows, notes = state_rows(dev_state, trust_profile(dev.config), linkerd_identity_profile(dev.config), now)
        return Deployed(rows, [*notes, "cluster not read: for the test"])

    out = io.StringIO()
    status(dev, None, out, fmt="json", clock=Clock(now=lambda: NOW), deployed=deployed)
    doc = json.loads(out.getvalue())
    layers = [r["layer"] for r in doc["authorities"]]
    assert layers.count("root") == 1 and layers.count("intermediate") == 1 and layers.count("linkerd-issuer") == 1
    assert "(deployed: `pulumi stack output`)" not in out.getvalue()
    assert {"spire-x509", "spire-jwt"} <= set(layers)
    assert doc["notes"] == ["cluster not read: for the test"]
    root = doc["authorities"][0]
    end = NOW + timedelta(days=3550)
    assert root["not_after"] == iso_time(end) and root["next_date"] == iso_time(end - timedelta(hours=720))

    table = io.StringIO()
    status(dev, None, table, clock=Clock(now=lambda: NOW), deployed=deployed)
    assert table.getvalue().rstrip().splitlines()[-1] == "note: cluster not read: for the test"


def test_read_deployed_uses_a_given_state_and_notes_what_it_cannot_read(dev: Platform, dev_state: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    got = read_deployed(dev, tmp_path, NOW, state=dev_state, kubectl=None)
    assert [r.layer for r in got.rows] == ["root", "intermediate", "linkerd-anchor", "linkerd-issuer"]
    assert got.notes == []

    local = load_platform("local")  # SPIRE is its own root; cert-manager holds Linkerd's anchor
    got = read_deployed(local, tmp_path, NOW, kubectl=None)
    assert got.rows == []
    assert got.notes == ["cluster not read: kubectl not found (pass --kubectl-bin or put it on PATH)"]
    got = read_deployed(local, tmp_path, NOW, kubectl="kubectl")
    assert got.notes == ["cluster not read: no kubeconfig .pulumi-local/cluster/kubeconfig (kubernetes.kubeconfig "
                         "of stack local; the local stack's comes from scripts/local-cluster start)"]

    empty = exported(component("agentpassport:trust:TrustDomain", "trust"))
    got = read_deployed(dev, tmp_path, NOW, state=empty)
    assert got.notes == ["Pulumi state of stack dev: no CA certificate found (not deployed?)"]


def test_a_strict_stack_without_a_backend_is_a_one_line_note(monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).resolve().parents[2]
    state, why = export_state("prod", root, environ={"PATH": "/nonexistent"})
    assert state is None
    assert why.startswith("stacks/Pulumi.prod.yaml: stack 'prod' is strict, so its state belongs in your team's "
                          "backend: set PULUMI_BACKEND_URL")
    assert "\n" not in why


def test_no_pulumi_cli_is_a_one_line_note(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from components import engine

    monkeypatch.setattr(engine, "find_pulumi", lambda: None)
    root = Path(__file__).resolve().parents[2]
    state, why = export_state("dev", root, environ={"PULUMI_BACKEND_URL": tmp_path.as_uri()})
    assert state is None and why == "the Pulumi CLI (`pulumi`) is not installed: scripts/bootstrap-tools --only pulumi"


def test_the_cli_reads_an_exported_state_file_and_refuses_a_broken_one(dev_state: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    import contextlib

    from components import cli

    state = tmp_path / "dev.json"
    state.write_text(json.dumps(dev_state))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["ca", "status", "--stack", "dev", "--format", "json", "--state", str(state)])
    assert code == 0, err.getvalue()
    doc = json.loads(out.getvalue())
    assert doc["notes"] == []
    assert [r["layer"] for r in doc["authorities"] if r["not_after"]] == [
        "root", "intermediate", "linkerd-anchor", "linkerd-issuer"]

    state.write_text("{not json")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err := io.StringIO()):
        code = cli.main(["ca", "status", "--stack", "dev", "--state", str(state)])
    assert code == 2 and err.getvalue().startswith(f"error: --state {state}: not an exported stack state (")


def test_cert_managers_own_renewal_time_and_readiness_win_over_the_rule() -> None:
    profile = linkerd_identity_profile(load_platform("local").config)
    gen = profile.signing_anchor
    anchor, anchor_key = make_ca("root", start=NOW - timedelta(days=30), hours=24 * 90)
    issuer, _ = make_ca("identity", start=NOW - timedelta(hours=10), hours=48, signer=(anchor, anchor_key))
    anchor_at, issuer_at = f"cert-manager/linkerd-trust-anchor-{gen}", "linkerd/linkerd-identity-issuer"
    secrets: dict[str, Any] = {anchor_at: tls_secret(anchor, anchor), issuer_at: tls_secret(issuer, anchor)}
    certificates: dict[str, Any] = {
        anchor_at: {"kind": "Certificate", "status": {
            "renewalTime": "2027-01-01T00:00:00Z", "notAfter": "2027-01-03T12:00:00Z",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}]}},
        issuer_at: {"kind": "Certificate", "status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "Pending", "message": "Issuing certificate as Secret "
             "was previously issued by ClusterIssuer.cert-manager.io/other"}]}},
    }
    rows, notes = cluster_rows(secrets, profile, NOW, certificates)
    assert notes == []
    assert rows[0].next_date == datetime(2027, 1, 1, tzinfo=UTC)
    assert rows[0].next_action == "cert-manager renews it (its Certificate's status.renewalTime)"
    assert rows[0].state == "signs the issuer"
    assert rows[1].next_date == issuer.not_valid_after_utc - timedelta(hours=profile.issuer_early_renewal_hours)
    assert rows[1].state == (f"signed by {gen}; Certificate not Ready: Issuing certificate as Secret was previously "
                             "issued by ClusterIssuer.cert-manager.io/other")


def test_an_anchor_generation_configured_but_not_deployed_keeps_its_row(dev: Platform,
                                                                        dev_state: dict[str, Any]) -> None:
    import dataclasses

    gen = linkerd_identity_profile(dev.config).signing_anchor
    mesh = dev.config.mesh.model_copy(update={"trust_anchors": [gen, "g9"]})
    platform = dataclasses.replace(dev, config=dev.config.model_copy(update={"mesh": mesh}))

    def deployed(now: datetime) -> Deployed:
        rows, notes = state_rows(dev_state, trust_profile(platform.config),
                                 linkerd_identity_profile(platform.config), now)
        return Deployed(rows, notes)

    out = io.StringIO()
    status(platform, None, out, fmt="json", clock=Clock(now=lambda: NOW), deployed=deployed)
    anchors = [(r["id"].split()[0], r["not_after"] is not None) for r in json.loads(out.getvalue())["authorities"]
               if r["layer"] == "linkerd-anchor"]
    assert anchors == [(gen, True), ("g9", False)]


# --------------------------------------------------------------------------- bad input: never a traceback


def test_bad_state_chain_renewal_time_and_trust_bundle_are_notes_or_one_line_errors(
        dev: Platform, tmp_path: Path) -> None:
    import contextlib

    from components import cli

    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["ca", "status", "--stack", "dev", *args])
        return code, out.getvalue(), err.getvalue()

    state = tmp_path / "state.json"
    for text, kind in (("[]", "list"), ('"x"', "str"), ("3", "int")):
        state.write_text(text)
        code, _, err = run("--state", str(state))
        assert (code, err) == (2, f"error: --state {state}: not an exported stack state (a JSON {kind}, not the "
                                  "object `pulumi stack export` writes)\n")
    assert find_certificates([]) == ([], [])  # type: ignore[arg-type]
    assert find_certificates({"deployment": {"resources": ["x", 3]}}) == ([], [])

    root, root_key = make_ca("Root", start=NOW - timedelta(days=1), hours=24 * 3650)
    inter, _ = make_ca("Inter", start=NOW - timedelta(days=1), hours=24 * 365, signer=(root, root_key))
    trust = component("agentpassport:trust:TrustDomain", "trust")
    pca = exported(trust, child(trust, "aws:acmpca/certificateAuthority:CertificateAuthority", "trust-pca",
                                {"certificate": pem(inter), "certificateChain": "-----BEGIN CERTIFICATE-----\nAAAA\n"
                                 "-----END CERTIFICATE-----\n"}))
    found, notes = find_certificates(pca)
    assert [f.name for f in found] == ["trust-pca"]
    assert notes[0].startswith("trust-pca: the last of its certificateChain is not a certificate (")

    profile = linkerd_identity_profile(load_platform("local").config)
    anchor, anchor_key = make_ca("root", start=NOW - timedelta(days=30), hours=24 * 90)
    issuer, _ = make_ca("identity", start=NOW - timedelta(hours=10), hours=48, signer=(anchor, anchor_key))
    anchor_at = f"cert-manager/linkerd-trust-anchor-{profile.signing_anchor}"
    issuer_at = "linkerd/linkerd-identity-issuer"
    rows, notes = cluster_rows({anchor_at: tls_secret(anchor, anchor), issuer_at: tls_secret(issuer, anchor)},
                               profile, NOW, {anchor_at: {"status": {"renewalTime": "next tuesday"}},
                                              issuer_at: {"status": {"renewalTime": "2026-12-06T00:00:00"}}})
    assert notes == [f"cluster: Certificate {anchor_at}: status.renewalTime 'next tuesday' is not an RFC 3339 "
                     "time; the date shown follows the rule instead"]
    assert rows[0].next_date == anchor.not_valid_after_utc - (anchor.not_valid_after_utc
                                                               - anchor.not_valid_before_utc) / 3
    assert rows[1].next_date == datetime(2026, 12, 6, tzinfo=UTC)  # no offset: UTC, as cert-manager writes it

    bundle = tmp_path / "bundle.pem"
    bundle.write_text(pem(root) + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    code, _, err = run("--no-deployed", "--trust-bundle", str(bundle))
    assert code == 2 and err.startswith("error: --trust-bundle, certificate 2: previous-root: not a PEM certificate (")
    assert len(err.splitlines()) == 1
    bundle.write_bytes(b"\xff\xfe")
    code, _, err = run("--no-deployed", "--trust-bundle", str(bundle))
    assert code == 2 and err.startswith(f"error: --trust-bundle {bundle}: cannot be read (")
