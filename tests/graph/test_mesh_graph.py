"""Linkerd components under Pulumi mocks: the real program per stack, variants, and the guards."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components.compile import compile_plans
from components.config import load_stack_config, stack_runtime_config
from components.config.mesh import STRICT_INBOUND_POLICIES
from components.manifest.loader import load_manifests
from components.mesh import mesh_namespace_args
from components.mockrun import Captured, Graph, run_program
from components.platform_model import build_platform
from components.render.mesh import RouteMatch, grant_matches, mesh_plan
from tests.conftest import ROOT, STACKS

ROOT_TYPE = "agentpassport:index:AgentPassport"
MESH_NS = "agentpassport:mesh:MeshNamespace"
IDENTITY = "agentpassport:mesh:LinkerdIdentity"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
CR_TYPES = {
    "Server": "kubernetes:policy.linkerd.io/v1beta3:Server",
    "HTTPRoute": "kubernetes:policy.linkerd.io/v1beta3:HTTPRoute",
    "AuthorizationPolicy": "kubernetes:policy.linkerd.io/v1alpha1:AuthorizationPolicy",
    "MeshTLSAuthentication": "kubernetes:policy.linkerd.io/v1alpha1:MeshTLSAuthentication",
}


def _platform(stack: str) -> Any:
    return build_platform(load_stack_config(stack, ROOT), load_manifests([ROOT / "agents"]), stack,
                          f"stacks/Pulumi.{stack}.yaml")


def _under(graph: Graph, component: Captured) -> list[Captured]:
    return graph.children_of(component.urn)


def _unwrap(value: Any) -> Any:
    """A secret input arrives as {<sig key>: SECRET_SIG, 'value': v}."""
    if isinstance(value, dict) and SECRET_SIG in value.values():
        return _unwrap(value["value"])
    return value


def _policy(graph: Graph) -> list[Captured]:
    return [r for r in graph.resources if r.type in CR_TYPES.values()]


def _named(resources: list[Captured], kind: str) -> dict[str, Captured]:
    return {r.inputs["metadata"]["name"]: r for r in resources if r.type == CR_TYPES[kind]}


# --------------------------------------------------------------------------- the real program


@pytest.mark.parametrize("stack", STACKS)
def test_one_mesh_namespace_per_planned_namespace(stack: str, stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph(stack)
    (root,) = graph.of_type(ROOT_TYPE)
    plan = mesh_plan(_platform(stack))
    comps = {r.name: r for r in graph.of_type(MESH_NS)}
    assert sorted(comps) == [f"agent-passport-mesh-{n.namespace}" for n in plan.namespaces]
    assert sorted(comps) == ["agent-passport-mesh-agents", "agent-passport-mesh-finance-agents",
                             "agent-passport-mesh-integrations", "agent-passport-mesh-ml",
                             "agent-passport-mesh-payments"]
    for ns in plan.namespaces:
        comp = comps[f"agent-passport-mesh-{ns.namespace}"]
        assert comp.parent == root.urn
        kids = _under(graph, comp)
        (namespace,) = [k for k in kids if k.type == "kubernetes:core/v1:Namespace"]
        assert namespace.name == f"agent-passport-mesh-{ns.namespace}-namespace-{ns.namespace}"
        assert namespace.inputs["metadata"] == {
            "name": ns.namespace,
            "annotations": {"linkerd.io/inject": "enabled", "config.linkerd.io/default-inbound-policy": "deny"},
            "labels": {"app.kubernetes.io/managed-by": "agent-passport"},
        }
        policy = [k for k in kids if k is not namespace]
        assert sorted((k.type, k.inputs["metadata"]["name"]) for k in policy) == sorted(
            (CR_TYPES[o["kind"]], o["metadata"]["name"]) for o in ns.objects)
        for k in policy:
            assert k.custom and k.inputs["metadata"]["namespace"] == ns.namespace
            assert k.name.startswith(f"agent-passport-mesh-{ns.namespace}-{k.inputs['kind'].lower()}-")


@pytest.mark.parametrize("stack", STACKS)
def test_each_http_grant_yields_exactly_its_linkerd_objects(stack: str, stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph(stack)
    platform = _platform(stack)
    policy = _policy(graph)
    servers, routes = _named(policy, "Server"), _named(policy, "HTTPRoute")
    authn, authz = _named(policy, "MeshTLSAuthentication"), _named(policy, "AuthorizationPolicy")
    expected_names: set[tuple[str, str]] = set()
    for a in platform.active_agents:
        ident = a.identity.linkerd_identity
        for _, grant in a.grants_of("http"):
            svc = platform.service(grant.service)
            assert svc is not None and ident is not None
            name = svc.name
            if svc.manifest.spec.gateway:
                gw = f"gw-{name}"
                assert servers[gw].inputs["spec"]["proxyProtocol"] == "opaque"
                assert servers[gw].inputs["spec"]["port"] == platform.config.authz.gateway_port
                assert ident in authn[gw].inputs["spec"]["identities"]
                assert authz[gw].inputs["spec"]["targetRef"] == {"group": "policy.linkerd.io", "kind": "Server",
                                                                 "name": gw}
                assert authz[f"{name}-gateway"].inputs["spec"]["targetRef"]["name"] == name
                assert authn[f"{name}-gateway"].inputs["spec"]["identities"] == [
                    f"gw-{name}.{svc.manifest.spec.namespace}.serviceaccount.identity.linkerd.cluster.local"]
                expected_names |= {("Server", gw), ("Server", name), ("MeshTLSAuthentication", gw),
                                   ("AuthorizationPolicy", gw), ("MeshTLSAuthentication", f"{name}-gateway"),
                                   ("AuthorizationPolicy", f"{name}-gateway")}
                continue
            wanted = grant_matches(grant.methods, [(p.kind, p.value) for p in grant.paths])
            for match in wanted:
                (route,) = [r for r in routes.values() if any(
                    RouteMatch.of(m["method"], "exact" if m["path"]["type"] == "Exact" else "prefix",
                                  m["path"]["value"]) == match
                    for rule in r.inputs["spec"]["rules"] for m in rule["matches"])]
                rname = route.inputs["metadata"]["name"]
                assert route.inputs["spec"]["parentRefs"] == [{"group": "policy.linkerd.io", "kind": "Server",
                                                               "name": name}]
                assert authz[rname].inputs["spec"]["targetRef"]["kind"] == "HTTPRoute"
                ref = authz[rname].inputs["spec"]["requiredAuthenticationRefs"][0]["name"]
                assert ident in authn[ref].inputs["spec"]["identities"]
                expected_names |= {("Server", name), ("HTTPRoute", rname), ("AuthorizationPolicy", rname),
                                   ("MeshTLSAuthentication", ref)}
    # ...and nothing else: every policy object is accounted for by some grant.
    assert {(r.inputs["kind"], r.inputs["metadata"]["name"]) for r in policy} == expected_names
    assert len(policy) == len(expected_names)


def test_objects_owned_by_one_agent_carry_its_label(stack_graph: Callable[[str], Graph]) -> None:
    policy = _policy(stack_graph("dev"))
    labels = {(r.inputs["kind"], r.inputs["metadata"]["name"]): r.inputs["metadata"]["labels"] for r in policy}
    assert labels[("HTTPRoute", "inference-agent-cortex")]["agentpassport.dev/agent"] == "agent-cortex"
    assert labels[("MeshTLSAuthentication", "gw-payments-api")]["agentpassport.dev/agent"] == "invoice-processor"
    for shared in (("Server", "inference"), ("MeshTLSAuthentication", "payments-api-gateway")):
        assert "agentpassport.dev/agent" not in labels[shared]
    assert all(lab["agentpassport.dev/service"] for lab in labels.values())


# --------------------------------------------------------------------------- identity


def _identity_children(graph: Graph) -> dict[str, Captured]:
    (comp,) = graph.of_type(IDENTITY)
    assert comp.name == "agent-passport-linkerd-identity"
    (root,) = graph.of_type(ROOT_TYPE)
    assert comp.parent == root.urn
    return {r.name: r for r in _under(graph, comp)}


N = "agent-passport-linkerd-identity"
K8S_CHILDREN = [
    ("kubernetes:core/v1:ConfigMap", f"{N}-configmap-linkerd-linkerd-identity-trust-roots"),
    ("kubernetes:core/v1:Namespace", f"{N}-namespace-linkerd"),
    ("kubernetes:core/v1:Secret", f"{N}-secret-linkerd-linkerd-identity-issuer"),
]
ISSUER_KEY = [
    ("tls:index/certRequest:CertRequest", f"{N}-issuer-csr"),
    ("tls:index/privateKey:PrivateKey", f"{N}-issuer-key"),
]


def _check_issuer_key_and_csr(kids: dict[str, Captured]) -> None:
    assert kids[f"{N}-issuer-key"].inputs == {"algorithm": "ECDSA", "ecdsaCurve": "P256"}
    assert kids[f"{N}-issuer-csr"].inputs["subject"] == {
        "commonName": "identity.linkerd.cluster.local", "organization": "Agent Passport",
        "organizationalUnit": "linkerd identity issuer 1"}


def _mock_outputs(graph: Graph) -> dict[str, dict[str, Any]]:
    from components.mockrun import computed_outputs

    return {r.name: computed_outputs(r.type, r.name, r.inputs) for r in graph.resources if r.type.startswith("tls:")}


def _no_anchor_key_outside_its_custodian(graph: Graph) -> None:
    """No anchor key or self-signed anchor exists in Pulumi state: only the issuer's key does."""
    kids = _identity_children(graph)
    assert [n for n, r in kids.items() if r.type == "tls:index/privateKey:PrivateKey"] == [f"{N}-issuer-key"]
    assert not [r for r in kids.values() if r.type == "tls:index/selfSignedCert:SelfSignedCert"]


def test_dev_identity_keeps_anchor_keys_in_pulumi_tls(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("dev")  # trust.upstream tls -> anchorCustody tls
    kids = _identity_children(graph)
    assert sorted((r.type, name) for name, r in kids.items()) == sorted([
        *K8S_CHILDREN, *ISSUER_KEY,
        ("tls:index/locallySignedCert:LocallySignedCert", f"{N}-issuer"),
        ("tls:index/privateKey:PrivateKey", f"{N}-anchor-g1-key"),
        ("tls:index/selfSignedCert:SelfSignedCert", f"{N}-anchor-g1"),
    ])
    _check_issuer_key_and_csr(kids)
    assert kids[f"{N}-anchor-g1-key"].inputs == {"algorithm": "ECDSA", "ecdsaCurve": "P256"}
    anchor = kids[f"{N}-anchor-g1"].inputs
    assert (anchor["isCaCertificate"], anchor["maxPathLength"], anchor["validityPeriodHours"]) == (True, 1, 87600)
    assert anchor["allowedUses"] == ["cert_signing", "crl_signing"]
    assert "earlyRenewalHours" not in anchor  # an anchor is only ever rotated by the documented procedure
    assert anchor["subject"] == {"commonName": "root.linkerd.cluster.local", "organization": "Agent Passport",
                                 "organizationalUnit": "linkerd trust anchor g1"}
    issuer = kids[f"{N}-issuer"].inputs
    assert (issuer["isCaCertificate"], issuer["maxPathLength"], issuer["validityPeriodHours"],
            issuer["earlyRenewalHours"]) == (True, 0, 2160, 720)
    assert issuer["validityPeriodHours"] < anchor["validityPeriodHours"]

    mocked = _mock_outputs(graph)
    assert issuer["caCertPem"] == mocked[f"{N}-anchor-g1"]["certPem"]
    assert _unwrap(issuer["caPrivateKeyPem"]) == mocked[f"{N}-anchor-g1-key"]["privateKeyPem"]
    assert issuer["certRequestPem"] == mocked[f"{N}-issuer-csr"]["certRequestPem"]
    cm = kids[f"{N}-configmap-linkerd-linkerd-identity-trust-roots"].inputs
    assert cm["metadata"]["namespace"] == "linkerd"
    assert cm["data"] == {"ca-bundle.crt": mocked[f"{N}-anchor-g1"]["certPem"]}
    secret = kids[f"{N}-secret-linkerd-linkerd-identity-issuer"].inputs
    assert secret["type"] == "kubernetes.io/tls"
    assert SECRET_SIG in secret["stringData"].values(), "issuer key material must be a Pulumi secret"
    assert _unwrap(secret["stringData"]) == {
        "tls.crt": mocked[f"{N}-issuer"]["certPem"],
        "tls.key": mocked[f"{N}-issuer-key"]["privateKeyPem"],
        "ca.crt": mocked[f"{N}-anchor-g1"]["certPem"],
    }
    # The anchor's private key reaches no Kubernetes object.
    body = mocked[f"{N}-anchor-g1-key"]["privateKeyPem"].splitlines()[1]
    for r in graph.resources:
        if r.type.startswith("kubernetes:"):
            assert body not in repr(r.inputs), f"{r.type} {r.name} carries the anchor's private key"


def test_staging_identity_keeps_anchor_keys_in_vault(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("staging")  # trust.upstream vault-pki -> anchorCustody vault-pki
    kids = _identity_children(graph)
    assert sorted((r.type, name) for name, r in kids.items()) == sorted([
        *K8S_CHILDREN, *ISSUER_KEY,
        ("vault:index/mount:Mount", f"{N}-anchor-g1-mount"),
        ("vault:pkiSecret/secretBackendRootCert:SecretBackendRootCert", f"{N}-anchor-g1"),
        ("vault:pkiSecret/secretBackendRootSignIntermediate:SecretBackendRootSignIntermediate", f"{N}-issuer"),
    ])
    _check_issuer_key_and_csr(kids)
    mount = kids[f"{N}-anchor-g1-mount"].inputs
    assert (mount["path"], mount["type"], mount["maxLeaseTtlSeconds"]) == ("pki-linkerd-g1", "pki", 87600 * 3600)
    root = kids[f"{N}-anchor-g1"].inputs
    assert (root["type"], root["keyType"], root["keyBits"], root["maxPathLength"], root["ttl"]) == (
        "internal", "ec", 256, 1, "87600h")
    assert (root["commonName"], root["ou"], root["backend"]) == (
        "root.linkerd.cluster.local", "linkerd trust anchor g1", "pki-linkerd-g1")
    issuer = kids[f"{N}-issuer"].inputs
    assert (issuer["backend"], issuer["maxPathLength"], issuer["ttl"], issuer["issuerRef"]) == (
        "pki-linkerd-g1", 0, "2160h", "linkerd-g1")
    assert issuer["csr"] == _mock_outputs(graph)[f"{N}-issuer-csr"]["certRequestPem"]
    assert kids[f"{N}-anchor-g1"].urn in kids[f"{N}-issuer"].dependencies  # Vault holds the root first
    _no_anchor_key_outside_its_custodian(graph)


def test_prod_identity_keeps_anchor_keys_in_aws_private_ca(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("prod")  # trust.upstream aws-pca -> anchorCustody aws-pca
    kids = _identity_children(graph)
    assert sorted((r.type, name) for name, r in kids.items()) == sorted([
        *K8S_CHILDREN, *ISSUER_KEY,
        ("aws:acmpca/certificateAuthority:CertificateAuthority", f"{N}-anchor-g1-pca"),
        ("aws:acmpca/certificate:Certificate", f"{N}-anchor-g1"),
        ("aws:acmpca/certificateAuthorityCertificate:CertificateAuthorityCertificate", f"{N}-anchor-g1-install"),
        ("aws:acmpca/certificate:Certificate", f"{N}-issuer"),
    ])
    _check_issuer_key_and_csr(kids)
    ca = kids[f"{N}-anchor-g1-pca"].inputs
    assert (ca["type"], ca["usageMode"], ca["keyStorageSecurityStandard"]) == (
        "ROOT", "GENERAL_PURPOSE", "FIPS_140_2_LEVEL_3_OR_HIGHER")
    conf = ca["certificateAuthorityConfiguration"]
    assert (conf["keyAlgorithm"], conf["signingAlgorithm"]) == ("EC_prime256v1", "SHA256WITHECDSA")
    assert conf["subject"] == {"commonName": "root.linkerd.cluster.local", "organization": "Agent Passport",
                               "organizationalUnit": "linkerd trust anchor g1"}
    root = kids[f"{N}-anchor-g1"].inputs
    assert root["templateArn"] == "arn:aws:acm-pca:::template/RootCACertificate/V1"
    assert root["validity"] == {"type": "DAYS", "value": "3650"}
    issuer = kids[f"{N}-issuer"].inputs
    assert issuer["templateArn"] == "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen0/V1"
    assert issuer["validity"] == {"type": "DAYS", "value": "90"}
    assert issuer["certificateSigningRequest"] == _mock_outputs(graph)[f"{N}-issuer-csr"]["certRequestPem"]
    # The issuer is signed only once the anchor's own certificate is installed.
    assert kids[f"{N}-anchor-g1-install"].urn in kids[f"{N}-issuer"].dependencies
    _no_anchor_key_outside_its_custodian(graph)


def _variant(config_updates: dict[str, str], stack: str = "dev", agents_dir: Path | None = None) -> Graph:
    config, secrets = stack_runtime_config(ROOT / f"stacks/Pulumi.{stack}.yaml")
    config.update(config_updates)
    if agents_dir is not None:
        config["agent-passport:agentsDir"] = str(agents_dir)
    return run_program(stack, ROOT, config, secrets)


def test_a_two_anchor_bundle_during_rotation(tmp_path: Path) -> None:
    from tests.unit.test_mesh_certs import make_anchor  # a real P-256 CA for the extra anchor

    extra = make_anchor("root.linkerd.cluster.local", "old install")[1]
    import json
    graph = _variant({"agent-passport:mesh": json.dumps({
        "defaultInboundPolicy": "deny", "trustAnchors": ["g1", "g2"], "issuerAnchor": "g2",
        "extraTrustAnchorsPem": [extra]})})
    n = "agent-passport-linkerd-identity"
    mocked = _mock_outputs(graph)
    g1, g2 = mocked[f"{n}-anchor-g1"]["certPem"], mocked[f"{n}-anchor-g2"]["certPem"]
    assert g1 != g2
    cm = graph.named(f"{n}-configmap-linkerd-linkerd-identity-trust-roots").inputs
    assert cm["data"]["ca-bundle.crt"] == g1 + g2 + extra.strip() + "\n"
    issuer = graph.named(f"{n}-issuer").inputs
    assert issuer["caCertPem"] == g2  # switched to the new anchor
    secret = _unwrap(graph.named(f"{n}-secret-linkerd-linkerd-identity-issuer").inputs["stringData"])
    assert secret["ca.crt"] == g2


def test_rotation_with_vault_held_anchors() -> None:
    import json
    graph = _variant({"agent-passport:mesh": json.dumps({
        "defaultInboundPolicy": "deny", "trustAnchors": ["g1", "g2"], "issuerAnchor": "g2"})}, "staging")
    kids = _identity_children(graph)
    assert [kids[f"{N}-anchor-{g}-mount"].inputs["path"] for g in ("g1", "g2")] == ["pki-linkerd-g1",
                                                                                  "pki-linkerd-g2"]
    issuer = kids[f"{N}-issuer"].inputs
    assert (issuer["backend"], issuer["issuerRef"]) == ("pki-linkerd-g2", "linkerd-g2")
    assert kids[f"{N}-anchor-g2"].urn in kids[f"{N}-issuer"].dependencies


# --------------------------------------------------------------------------- guards


def test_a_strict_stack_refuses_an_unauthenticated_default_policy() -> None:
    import json
    with pytest.raises(Exception, match=r"agent-passport:mesh.defaultInboundPolicy: 'all-unauthenticated'") as info:
        _variant({"agent-passport:mesh": json.dumps({"defaultInboundPolicy": "all-unauthenticated"})}, "staging")
    assert type(info.value).__name__ == "RunError"


@pytest.mark.parametrize("stack", STACKS)
def test_a_strict_stacks_plan_holds_only_authenticated_defaults(stack: str) -> None:
    """MeshNamespace builds what the compiled plan holds (it does not validate again): the stack
    configuration refuses any other default in a strict stack, so no plan can hold one."""
    plans = compile_plans(_platform(stack))
    if plans.mesh is None or not plans.platform.config.is_strict:
        return
    assert {ns.default_inbound_policy for ns in plans.mesh.namespaces} <= set(STRICT_INBOUND_POLICIES)
    assert {a.default_inbound_policy for a in mesh_namespace_args(plans.mesh)} <= set(STRICT_INBOUND_POLICIES)


def test_suspension_revokes_without_unmeshing(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    shutil.copytree(ROOT / "agents", agents)
    text = (agents / "agent-cortex.yaml").read_text()
    (agents / "agent-cortex.yaml").write_text(text.replace("spec:\n", "spec:\n  suspended: true\n"
                                                                        "  suspendedReason: INC-42\n", 1))
    graph = _variant({}, agents_dir=agents)
    policy = _policy(graph)
    identities = [i for r in policy if r.inputs["kind"] == "MeshTLSAuthentication"
                  for i in r.inputs["spec"]["identities"]]
    assert not any(i.startswith("agent-cortex.") for i in identities)
    assert "agent-passport-mesh-agents" in {r.name for r in graph.of_type(MESH_NS)}
    assert _named(policy, "HTTPRoute") == {}  # inference's only caller is suspended
    assert set(_named(policy, "Server")) == {"inference", "slack-gateway", "gw-slack-gateway", "payments-api",
                                             "gw-payments-api"}


def test_mesh_off_builds_nothing_of_linkerd() -> None:
    import json
    graph = _variant({"agent-passport:subsystems": json.dumps({"aws": False, "mesh": False})})
    assert graph.of_type(MESH_NS) == [] and graph.of_type(IDENTITY) == []
    assert _policy(graph) == []


def test_mesh_resources_per_agent_stay_small(tmp_path: Path) -> None:
    """200 agents, each with its own route besides a shared one: about 3 Linkerd resources per agent."""
    agents = tmp_path / "agents"
    agents.mkdir()
    shutil.copy(ROOT / "agents/services.yaml", agents / "services.yaml")
    for i in range(200):
        (agents / f"a{i:03d}.yaml").write_text(f"""apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata: {{name: a{i:03d}, team: t, owner: o@example.net}}
spec:
  platform: {{kubernetes: {{namespace: ns{i % 4}, serviceAccount: a{i:03d}}}}}
  grants:
    - http: {{service: inference, methods: [POST], paths: [{{exact: /v1/complete}}]}}
    - http: {{service: inference, methods: [GET], paths: [{{prefix: /v1/models/a{i:03d}}}]}}
    - http: {{service: payments-api, methods: [GET], paths: [{{exact: /v1/payments}}]}}
""")
    graph = _variant({}, agents_dir=agents)
    mesh = [r for r in graph.resources if r.type in (MESH_NS, IDENTITY)
            or any(a.type in (MESH_NS, IDENTITY) for a in graph.ancestors(r))]
    # 6 namespaces (component + Namespace); ml: Server + 1 shared and 200 own route groups (3
    # each); payments: 6 gateway objects; the identity component and its 8 children.
    assert len(mesh) == 6 * 2 + (1 + 201 * 3) + 6 + 9
    assert len(mesh) / 200 < 3.2
