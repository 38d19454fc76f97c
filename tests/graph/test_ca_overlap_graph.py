"""Two authorities at once in every consumer of the trust bundle during a root rotation, in the
real program's resource graph (mocks), and only the new one after it:

* Vault cert auth: each login role's ``certificate`` holds the current root and every
  ``trust.previousRoots`` entry;
* IAM Roles Anywhere: one trust anchor per root, and every role's trust policy accepts each;
* Linkerd: the ``ca-bundle.crt`` carries every anchor generation while two are listed, and only
  the new one once the old generation is removed;
* SPIRE's ``disk`` UpstreamAuthority bundle (dev) carries both roots.

Envoy gets the bundle streamed from the SPIRE agent over SDS, which carries every authority in
SPIRE's bundle: tests/e2e/test_ca_lifecycle_e2e.py.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.config import build_stack_config, read_stack_file, stack_file, stack_runtime_config
from components.errors import ConfigError
from components.mockrun import Captured, Graph, computed_outputs, run_program
from components.render.trust import pem_blocks, trust_bundle_with_previous, trust_profile
from tests.unit.test_vault_render import cert_ready_agents

ROOT = Path(__file__).resolve().parents[2]
CERT_ROLE = "vault:index/certAuthBackendRole:CertAuthBackendRole"
ANCHOR = "aws:rolesanywhere/trustAnchor:TrustAnchor"
ROLE = "aws:iam/role:Role"


def ca_pem(name: str, *, ca: bool = True) -> str:
    """A real self-signed certificate (a former root, or with ``ca=False`` a leaf)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


OLD_ROOT = ca_pem("Agent Passport Root CA (before the rotation)")


def staging_variant(tmp_path: Path, previous: list[str]) -> Graph:
    """Staging (Vault PKI roots, Roles Anywhere) with Vault cert auth and ``previous`` roots."""
    config, secrets = stack_runtime_config(stack_file("staging", ROOT))
    config["agent-passport:agentsDir"] = str(cert_ready_agents(tmp_path / "agents"))
    vault = json.loads(config["agent-passport:vault"])
    config["agent-passport:vault"] = json.dumps({**vault, "auth": "cert"})
    trust = json.loads(config["agent-passport:trust"])
    config["agent-passport:trust"] = json.dumps({**trust, "previousRoots": previous})
    return run_program("staging", ROOT, config, secrets)


def out(r: Captured) -> dict[str, Any]:
    """What the mocks answered for ``r`` (its provider-computed outputs)."""
    return computed_outputs(r.type, r.name, r.inputs)


def current_root(graph: Graph) -> str:
    return str(out(graph.named("agent-passport-trust-pki-root-cert"))["certificate"])


def agent_roles(graph: Graph) -> list[Captured]:
    """The agents' IAM roles (the children of AwsFederation; not the CI pipeline's)."""
    (federation,) = graph.of_type("agentpassport:aws:AwsFederation")
    return [r for r in graph.children_of(federation.urn) if r.type == ROLE]


def trusted_anchors(role_policy: str) -> list[str]:
    (statement,) = json.loads(role_policy)["Statement"]
    arns = statement["Condition"]["ArnEquals"]["aws:SourceArn"]
    return arns if isinstance(arns, list) else [arns]


def test_during_a_root_rotation_vault_and_roles_anywhere_trust_both_roots(tmp_path: Path) -> None:
    graph = staging_variant(tmp_path, [OLD_ROOT])
    new = current_root(graph)
    roles = graph.of_type(CERT_ROLE)
    assert roles, "staging with cert auth has a login role per agent"
    for role in roles:
        assert pem_blocks(role.inputs["certificate"]) == [new, OLD_ROOT], role.name
    anchors = {a.name: a for a in graph.of_type(ANCHOR)}
    assert len(anchors) == 2
    current = anchors.pop("agent-passport-aws-anchor")
    (previous,) = anchors.values()
    assert current.inputs["source"]["sourceData"]["x509CertificateData"] == new  # the current root alone
    assert previous.inputs["source"]["sourceData"]["x509CertificateData"] == OLD_ROOT
    assert previous.name.startswith("agent-passport-aws-anchor-previous-")
    iam_roles = agent_roles(graph)
    assert iam_roles
    for role in iam_roles:
        assert trusted_anchors(role.inputs["assumeRolePolicy"]) == [out(current)["arn"], out(previous)["arn"]]


def test_after_the_rotation_only_the_new_root_is_trusted(tmp_path: Path) -> None:
    graph = staging_variant(tmp_path, [])
    new = current_root(graph)
    for role in graph.of_type(CERT_ROLE):
        assert role.inputs["certificate"] == new
    (anchor,) = graph.of_type(ANCHOR)
    assert anchor.inputs["source"]["sourceData"]["x509CertificateData"] == new
    for role in agent_roles(graph):
        (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
        assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == out(anchor)["arn"]  # one, as before


def test_the_dev_upstream_bundle_spire_reads_carries_both_roots(tmp_path: Path) -> None:
    config, secrets = stack_runtime_config(stack_file("dev", ROOT))
    trust = json.loads(config["agent-passport:trust"]) if "agent-passport:trust" in config else {}
    config["agent-passport:trust"] = json.dumps({**trust, "previousRoots": [OLD_ROOT]})
    graph = run_program("dev", ROOT, config, secrets)
    (cm,) = [r for r in graph.resources if r.type == "kubernetes:core/v1:ConfigMap"
             and "bundle.pem" in (r.inputs.get("data") or {})]
    root = graph.named("agent-passport-trust-root")
    assert pem_blocks(cm.inputs["data"]["bundle.pem"]) == [out(root)["certPem"], OLD_ROOT]


def test_linkerd_bundle_two_generations_then_only_the_new_one() -> None:
    def bundle(mesh: dict[str, Any]) -> tuple[str, dict[str, str]]:
        config, secrets = stack_runtime_config(stack_file("dev", ROOT))
        config["agent-passport:mesh"] = json.dumps({"defaultInboundPolicy": "deny", **mesh})
        graph = run_program("dev", ROOT, config, secrets)
        n = "agent-passport-linkerd-identity"
        cm = graph.named(f"{n}-configmap-linkerd-linkerd-identity-trust-roots").inputs["data"]["ca-bundle.crt"]
        anchors = {r.name.rsplit("-", 1)[-1]: out(r)["certPem"] for r in graph.resources
                   if r.type == "tls:index/selfSignedCert:SelfSignedCert" and r.name.startswith(f"{n}-anchor-")}
        return cm, anchors

    during, anchors = bundle({"trustAnchors": ["g1", "g2"], "issuerAnchor": "g2"})
    assert pem_blocks(during) == [anchors["g1"], anchors["g2"]]
    after, anchors_after = bundle({"trustAnchors": ["g2"]})
    assert set(anchors_after) == {"g2"}
    assert pem_blocks(after) == [anchors_after["g2"]]


# --------------------------------------------------------------------------- the pure parts


def test_overlap_bundle_puts_the_current_root_first_and_drops_duplicates() -> None:
    new = ca_pem("new root")
    rewrapped = OLD_ROOT.replace("\n", "\n\n", 3)  # the same certificate pasted with other line breaks
    assert pem_blocks(trust_bundle_with_previous(new, [OLD_ROOT, rewrapped, new])) == [new, OLD_ROOT]
    assert trust_bundle_with_previous(new, []) == new
    assert trust_bundle_with_previous(new, ["  "]) == new


def check_trust(stack: str, previous: list[str]) -> None:
    """The stack's trust section with ``previous`` roots, through the same validation the program runs."""
    values, _, _ = read_stack_file(stack_file(stack, ROOT))
    values["trust"] = {**values.get("trust", {}), "previousRoots": previous}
    trust_profile(build_stack_config(values, f"stacks/Pulumi.{stack}.yaml"))


@pytest.mark.parametrize(("pem", "message"), [
    (ca_pem("a leaf", ca=False), r"trust.previousRoots\[0\]: CN=a leaf is not a CA certificate"),
    ("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
     r"trust.previousRoots\[0\]: not a PEM certificate"),
])
def test_previous_roots_must_be_ca_certificates(pem: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_trust("staging", [pem])
    check_trust("staging", [OLD_ROOT])  # control: a CA certificate passes


def test_previous_roots_hold_one_certificate_each() -> None:
    with pytest.raises(ConfigError, match=r"previousRoots\[0\] must hold exactly one PEM certificate \(found 2\)"):
        check_trust("staging", [OLD_ROOT + OLD_ROOT])


def test_previous_roots_are_refused_when_spire_is_its_own_root() -> None:
    with pytest.raises(ConfigError, match=r"trust.previousRoots: spire keeps its old roots in its own bundle"):
        check_trust("local", [OLD_ROOT])


def test_shard_roles_trust_every_anchor_of_the_base_during_the_rotation() -> None:
    """A sharded environment: the base creates the anchors and exports them all
    (``awsTrustAnchorArns``); each shard's roles accept every one; without previous roots the
    base exports only ``awsTrustAnchorArn`` and the roles trust that one, as before."""
    from components.shard import SHARED_OUTPUT

    def run(stack: str, previous: list[str], outputs: dict[str, Any] | None = None) -> Graph:
        config, secrets = stack_runtime_config(stack_file(stack, ROOT))
        trust = json.loads(config["agent-passport:trust"])
        config["agent-passport:trust"] = json.dumps({**trust, "previousRoots": previous})
        return run_program(stack, ROOT, config, secrets,
                           stack_outputs={"acme/agent-passport/prod-base": outputs} if outputs else None)

    for previous in ([OLD_ROOT], []):
        base = run("prod-base", previous)
        shared = base.outputs["outputs"][SHARED_OUTPUT]
        # the current anchor first (as the roles list them), then the previous roots'
        anchors = [out(a)["arn"] for a in sorted(base.of_type(ANCHOR), key=lambda a: "previous" in a.name)]
        assert len(anchors) == 1 + len(previous)
        if previous:
            assert shared["awsTrustAnchorArns"] == anchors
        else:
            assert "awsTrustAnchorArns" not in shared
        roles = [r for shard in ("prod-shard-0", "prod-shard-1")
                 for r in agent_roles_of(run(shard, previous, base.outputs))]
        assert roles, "a shard holds the AWS agent's role"
        for role in roles:
            assert trusted_anchors(role.inputs["assumeRolePolicy"]) == anchors


def agent_roles_of(graph: Graph) -> list[Captured]:
    federations = graph.of_type("agentpassport:aws:AwsFederation")
    return [r for f in federations for r in graph.children_of(f.urn) if r.type == ROLE]


def test_the_federation_component_registers_every_trust_anchor(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``trustAnchorArns`` (the current and the previous roots' anchors) is one of AwsFederation's
    registered outputs, beside ``trustAnchorArn``."""
    from components.aws import AwsFederation

    registered: list[dict[str, Any]] = []
    original = AwsFederation.register_outputs

    def record(self: AwsFederation, outputs: dict[str, Any]) -> None:
        registered.append(dict(outputs))
        original(self, outputs)

    monkeypatch.setattr(AwsFederation, "register_outputs", record)
    staging_variant(tmp_path, [OLD_ROOT])
    (outputs,) = registered
    assert outputs["trustAnchorArns"] is not None and outputs["trustAnchorArn"] is not None
