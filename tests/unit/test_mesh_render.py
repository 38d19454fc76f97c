"""Pure Linkerd renderer: namespaces, route grouping, gateway policy, problems, identity profile."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from components.config import build_stack_config, load_stack_config, read_stack_file
from components.errors import ConfigError, ManifestError
from components.identity import gateway_identity
from components.manifest.loader import load_manifests
from components.platform_model import Platform, build_platform
from components.render.artifacts import render_all
from components.render.mesh import (
    Caller,
    RouteMatch,
    authorized_agents,
    grant_matches,
    linkerd_identity_profile,
    mesh_artifacts,
    mesh_objects,
    mesh_plan,
    namespace_object,
    trust_bundle,
)
from tests.conftest import ROOT

HEADER = "apiVersion: passport.agentpassport.dev/v1alpha1\n"

SERVICES = HEADER + """kind: Service
metadata: {name: catalog, team: shop}
spec: {namespace: apps, port: 8080, gateway: false, podSelector: {app: catalog}}
---
""" + HEADER + """kind: Service
metadata: {name: ledger, team: fin}
spec: {namespace: apps, port: 9000, protocol: grpc, podSelector: {app: ledger}}
---
""" + HEADER + """kind: Service
metadata: {name: unused, team: fin}
spec: {namespace: quiet, port: 80, podSelector: {app: unused}}
"""


def agent(name: str, namespace: str, grants: str, *, suspended: bool = False, platform: str | None = None) -> str:
    plat = platform or f"kubernetes: {{namespace: {namespace}, serviceAccount: {name}}}"
    susp = "suspended: true\n  suspendedReason: INC-1\n  " if suspended else ""
    return (HEADER + f"kind: Agent\nmetadata: {{name: {name}, team: t, owner: o@example.net}}\n"
            f"spec:\n  {susp}platform:\n    {plat}\n  grants:\n{grants}")


def http(service: str, methods: str, paths: str) -> str:
    return f"    - http: {{service: {service}, methods: [{methods}], paths: [{paths}]}}\n"


def make_platform(tmp_path: Path, *docs: str, stack: str = "dev", services: str = SERVICES) -> Platform:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "services.yaml").write_text(services)
    for i, doc in enumerate(docs):
        (tmp_path / f"agent-{i}.yaml").write_text(doc)
    return build_platform(load_stack_config(stack, ROOT), load_manifests([tmp_path]), stack,
                          f"stacks/Pulumi.{stack}.yaml")


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def ident(name: str, ns: str) -> str:
    return f"{name}.{ns}.serviceaccount.identity.linkerd.cluster.local"


# --------------------------------------------------------------------------- namespaces


def test_namespace_object_injects_and_sets_the_default_policy() -> None:
    assert namespace_object("apps", "deny") == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "apps",
            "annotations": {"config.linkerd.io/default-inbound-policy": "deny", "linkerd.io/inject": "enabled"},
            "labels": {"app.kubernetes.io/managed-by": "agent-passport"},
        },
    }


def test_namespaces_host_agents_and_called_services_only(tmp_path: Path) -> None:
    p = make_platform(
        tmp_path,
        agent("alpha", "team-a", http("catalog", "GET", "{prefix: /api}")),
        agent("sleeper", "team-s", http("ledger", "POST", "{exact: /pay}"), suspended=True),
        agent("vmbox", "", "    - vault: {path: secret/data/x, capabilities: [read]}\n",
              platform="vm: {attestation: join_token, workloadSelectors: ['unix:uid:1']}"),
    )
    plan = mesh_plan(p)
    # 'quiet' hosts only an uncalled service; the VM agent has no namespace; a suspended agent's
    # namespace stays meshed (suspension revokes authorization, it never deletes a Namespace).
    assert [(n.namespace, n.agents, n.services) for n in plan.namespaces] == [
        ("apps", (), ("catalog", "ledger")),
        ("team-a", ("alpha",), ()),
        ("team-s", ("sleeper",), ()),
    ]
    assert {n.default_inbound_policy for n in plan.namespaces} == {"deny"}
    assert all(n.objects == () for n in plan.namespaces if n.namespace != "apps")


def test_strict_stacks_refuse_unauthenticated_defaults() -> None:
    """The rule's one home is the stack configuration: no plan of a strict stack can hold another default."""

    def config(stack: str, policy: str) -> None:
        values, lines, _ = read_stack_file(ROOT / f"stacks/Pulumi.{stack}.yaml")
        values["environment"] = stack
        values["mesh"] = {**values.get("mesh", {}), "defaultInboundPolicy": policy}
        build_stack_config(values, f"stacks/Pulumi.{stack}.yaml", lines)

    for policy in ("cluster-authenticated", "all-unauthenticated"):
        with pytest.raises(ConfigError, match=r"mesh.defaultInboundPolicy: .*strict stacks build mesh namespaces only"):
            config("prod", policy)
        config("dev", policy)  # dev may
    for policy in ("deny", "all-authenticated"):
        config("prod", policy)


# --------------------------------------------------------------------------- matches


@pytest.mark.parametrize(("outer", "inner", "covers"), [
    (("GET", "prefix", "/api"), ("GET", "exact", "/api"), True),
    (("GET", "prefix", "/api"), ("GET", "exact", "/api/x"), True),
    (("GET", "prefix", "/api"), ("GET", "exact", "/api/"), True),
    (("GET", "prefix", "/api"), ("GET", "prefix", "/api/v1"), True),
    (("GET", "prefix", "/api"), ("GET", "exact", "/apix"), False),
    (("GET", "prefix", "/api"), ("POST", "exact", "/api/x"), False),
    (("GET", "prefix", "/"), ("GET", "prefix", "/anything"), True),
    (("GET", "exact", "/api"), ("GET", "exact", "/api"), True),
    (("GET", "exact", "/api"), ("GET", "prefix", "/api"), False),
    (("GET", "prefix", "/api/v1"), ("GET", "prefix", "/api"), False),
])
def test_covers_follows_linkerd_segment_prefix_semantics(outer: tuple[Any, ...], inner: tuple[Any, ...],
                                                           covers: bool) -> None:
    assert RouteMatch.of(*outer).covers(RouteMatch.of(*inner)) is covers


def test_indexed_coverage_equals_the_definition() -> None:
    """authorized_agents (indexed, fast) == brute force over RouteMatch.covers, on random grants."""
    rng = random.Random(7)  # noqa: S311 - a fixed, reproducible sample, not cryptography
    segs = ["a", "b", "ab", "a.b"]

    def path() -> str:
        return "/" + "/".join(rng.choice(segs) for _ in range(rng.randint(0, 3))) + rng.choice(["", "/"])

    callers = []
    for i in range(60):
        matches = grant_matches(rng.sample(["GET", "POST"], rng.randint(1, 2)),
                                [(rng.choice(["exact", "prefix"]), path()) for _ in range(rng.randint(1, 3))])
        ident = SimpleNamespace(linkerd_identity=f"a{i}.ns.serviceaccount.identity.linkerd.cluster.local")
        callers.append(Caller(SimpleNamespace(name=f"a{i:02d}", identity=ident), 0,  # type: ignore[arg-type]
                              tuple(matches)))
    atoms = sorted({m for c in callers for m in c.matches})
    brute = {atom: tuple(sorted({c.agent.name for c in callers if any(m.covers(atom) for m in c.matches)}))
             for atom in atoms}
    assert authorized_agents(callers) == brute
    assert sum(len(v) > 1 for v in brute.values()) > 10  # the sample does exercise coverage


def test_trailing_slash_prefixes_are_one_match() -> None:
    assert RouteMatch.of("GET", "prefix", "/api/") == RouteMatch.of("GET", "prefix", "/api")
    assert RouteMatch.of("GET", "prefix", "/").path == "/"
    assert RouteMatch.of("GET", "exact", "/api/").path == "/api/"


# --------------------------------------------------------------------------- gateway-less services


def test_every_match_is_rendered_once_and_authorizes_every_grant_covering_it(tmp_path: Path) -> None:
    p = make_platform(
        tmp_path,
        agent("alpha", "team-a", http("catalog", "GET", "{prefix: /api}")),
        agent("beta", "team-b", http("catalog", "GET, POST", "{exact: /api/items}")),
    )
    objs = [o for n in mesh_plan(p).namespaces for o in n.objects if o["metadata"]["labels"].get(
        "agentpassport.dev/service") == "catalog"]
    (server,) = by_kind(objs, "Server").values()
    assert server["spec"] == {"accessPolicy": "deny", "podSelector": {"matchLabels": {"app": "catalog"}},
                              "port": 8080, "proxyProtocol": "HTTP/1"}
    routes, authn, authz = by_kind(objs, "HTTPRoute"), by_kind(objs, "MeshTLSAuthentication"), \
        by_kind(objs, "AuthorizationPolicy")
    shared = next(n for n in routes if n.startswith("catalog-shared-"))
    assert set(routes) == {"catalog-alpha", "catalog-beta", shared}

    def matches(name: str) -> list[tuple[str, str, str]]:
        return [(m["method"], m["path"]["type"], m["path"]["value"])
                for rule in routes[name]["spec"]["rules"] for m in rule["matches"]]

    # A GET for exactly /api/items lands on the longer exact match: both agents' grants cover it.
    assert matches(shared) == [("GET", "Exact", "/api/items")]
    assert authn[shared]["spec"]["identities"] == [ident("alpha", "team-a"), ident("beta", "team-b")]
    assert "agentpassport.dev/agent" not in routes[shared]["metadata"]["labels"]
    assert matches("catalog-alpha") == [("GET", "PathPrefix", "/api")]
    assert authn["catalog-alpha"]["spec"]["identities"] == [ident("alpha", "team-a")]
    assert routes["catalog-alpha"]["metadata"]["labels"]["agentpassport.dev/agent"] == "alpha"
    assert matches("catalog-beta") == [("POST", "Exact", "/api/items")]
    assert authn["catalog-beta"]["spec"]["identities"] == [ident("beta", "team-b")]
    for name, route in routes.items():
        assert route["spec"]["parentRefs"] == [{"group": "policy.linkerd.io", "kind": "Server", "name": "catalog"}]
        assert authz[name]["spec"] == {
            "targetRef": {"group": "policy.linkerd.io", "kind": "HTTPRoute", "name": name},
            "requiredAuthenticationRefs": [{"group": "policy.linkerd.io", "kind": "MeshTLSAuthentication",
                                            "name": name}],
        }
    assert len(objs) == 1 + 3 * 3


def test_agents_with_the_same_route_shape_share_one_route(tmp_path: Path) -> None:
    docs = [agent(f"a{i:03d}", "team", http("catalog", "GET, POST", "{exact: /x}, {prefix: /y}")) for i in range(200)]
    objs = [o for n in mesh_plan(make_platform(tmp_path, *docs)).namespaces for o in n.objects]
    routes, authn = by_kind(objs, "HTTPRoute"), by_kind(objs, "MeshTLSAuthentication")
    assert len(routes) == 1 and len(authn) == 1 and len(by_kind(objs, "AuthorizationPolicy")) == 1
    (route,) = routes.values()
    assert [len(r["matches"]) for r in route["spec"]["rules"]] == [4]
    (m,) = authn.values()
    assert len(m["spec"]["identities"]) == 200


def test_a_group_too_large_for_one_route_is_split_and_shares_its_authentication(tmp_path: Path) -> None:
    paths = ", ".join(f"{{exact: /p{i:02d}}}" for i in range(20))
    p = make_platform(tmp_path, agent("bulk", "team", http("catalog", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
                                                                      paths)))
    objs = [o for n in mesh_plan(p).namespaces for o in n.objects]
    routes = by_kind(objs, "HTTPRoute")
    assert sorted(routes) == ["catalog-bulk", "catalog-bulk-2"]
    sizes = [[len(r["matches"]) for r in routes[n]["spec"]["rules"]] for n in sorted(routes)]
    assert sizes == [[8] * 16, [8, 4]]  # 140 matches: 16 rules of 8 fill the first route
    assert sorted(by_kind(objs, "MeshTLSAuthentication")) == ["catalog-bulk"]
    policies = by_kind(objs, "AuthorizationPolicy")
    assert {n: a["spec"]["requiredAuthenticationRefs"][0]["name"] for n, a in policies.items()} == {
        "catalog-bulk": "catalog-bulk", "catalog-bulk-2": "catalog-bulk"}
    assert {n: a["spec"]["targetRef"]["name"] for n, a in policies.items()} == {
        "catalog-bulk": "catalog-bulk", "catalog-bulk-2": "catalog-bulk-2"}


def test_exact_and_prefix_of_the_same_path_warn(tmp_path: Path) -> None:
    p = make_platform(
        tmp_path,
        agent("alpha", "team-a", http("catalog", "GET", "{prefix: /api/}")),
        agent("beta", "team-b", http("catalog", "GET", "{exact: /api}")),
    )
    (warning,) = mesh_plan(p).warnings
    assert "exact and prefix '/api' for GET" in warning


def test_suspended_agents_appear_in_no_authentication(tmp_path: Path) -> None:
    p = make_platform(
        tmp_path,
        agent("alpha", "team-a", http("catalog", "GET", "{exact: /x}")),
        agent("sleeper", "team-a", http("catalog", "GET", "{exact: /x}") + http("ledger", "POST", "{exact: /pay}"),
              suspended=True),
    )
    objs = [o for n in mesh_plan(p).namespaces for o in n.objects]
    identities = [i for o in objs if o["kind"] == "MeshTLSAuthentication" for i in o["spec"]["identities"]]
    assert ident("sleeper", "team-a") not in identities
    assert by_kind(objs, "HTTPRoute").keys() == {"catalog-alpha"}
    # The ledger's only caller is suspended: its Servers stay (deny), nothing admits agents.
    ledger = [o for o in objs if o["metadata"]["labels"]["agentpassport.dev/service"] == "ledger"]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in ledger) == [
        ("AuthorizationPolicy", "ledger-gateway"), ("MeshTLSAuthentication", "ledger-gateway"),
        ("Server", "gw-ledger"), ("Server", "ledger")]


# --------------------------------------------------------------------------- gateway services


def test_gateway_service_admits_agents_at_the_gateway_and_only_the_gateway_at_the_backend(tmp_path: Path) -> None:
    p = make_platform(
        tmp_path,
        agent("alpha", "team-a", http("ledger", "POST", "{exact: /pay}")),
        agent("beta", "team-b", http("ledger", "GET", "{prefix: /pay}")),
    )
    gw = gateway_identity("ledger", "apps", "dev.agentpassport.internal", "cluster.local")
    objs = [o for n in mesh_plan(p).namespaces for o in n.objects]
    servers, authn, authz = by_kind(objs, "Server"), by_kind(objs, "MeshTLSAuthentication"), \
        by_kind(objs, "AuthorizationPolicy")
    assert by_kind(objs, "HTTPRoute") == {}
    assert servers["gw-ledger"]["spec"] == {
        "accessPolicy": "deny", "podSelector": {"matchLabels": gw.pod_labels},
        "port": p.config.authz.gateway_port, "proxyProtocol": "opaque"}
    assert servers["ledger"]["spec"] == {"accessPolicy": "deny", "podSelector": {"matchLabels": {"app": "ledger"}},
                                         "port": 9000, "proxyProtocol": "gRPC"}
    assert authn["gw-ledger"]["spec"]["identities"] == [ident("alpha", "team-a"), ident("beta", "team-b")]
    assert authz["gw-ledger"]["spec"]["targetRef"] == {"group": "policy.linkerd.io", "kind": "Server",
                                                        "name": "gw-ledger"}
    assert authn["ledger-gateway"]["spec"]["identities"] == [gw.linkerd_identity]
    assert authz["ledger-gateway"]["spec"] == {
        "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "ledger"},
        "requiredAuthenticationRefs": [{"group": "policy.linkerd.io", "kind": "MeshTLSAuthentication",
                                        "name": "ledger-gateway"}]}


def test_mesh_identities_come_from_the_identity_module(tmp_path: Path) -> None:
    values, lines, secrets = read_stack_file(ROOT / "stacks/Pulumi.dev.yaml")
    values["mesh"] = {**values["mesh"], "clusterDomain": "c1.example.internal"}
    cfg = build_stack_config(values | {"environment": "dev"}, "stacks/Pulumi.dev.yaml", lines, secrets)
    (tmp_path / "services.yaml").write_text(SERVICES)
    (tmp_path / "a.yaml").write_text(agent("alpha", "team-a", http("ledger", "GET", "{exact: /x}")))
    p = build_platform(cfg, load_manifests([tmp_path]), "dev", "stacks/Pulumi.dev.yaml")
    objs = by_kind([o for n in mesh_plan(p).namespaces for o in n.objects], "MeshTLSAuthentication")
    assert objs["gw-ledger"]["spec"]["identities"] == [p.agents[0].identity.linkerd_identity]
    assert objs["gw-ledger"]["spec"]["identities"] == [
        "alpha.team-a.serviceaccount.identity.linkerd.c1.example.internal"]
    assert objs["ledger-gateway"]["spec"]["identities"] == [
        "gw-ledger.apps.serviceaccount.identity.linkerd.c1.example.internal"]


# --------------------------------------------------------------------------- problems


def test_an_agent_outside_the_mesh_is_admitted_to_the_gateway_by_network_only(tmp_path: Path) -> None:
    """VM callers have no mesh identity: Linkerd admits their connections to the gateway port from
    their sourceNetworks (anywhere when they declare none); Envoy's mTLS and OPA decide each request."""
    vm = "vm: {attestation: join_token, workloadSelectors: ['unix:uid:1001']}"
    nets = agent("vmbox", "", http("ledger", "GET", "{exact: /x}"), platform=vm).replace(
        "  platform:", "  sourceNetworks: [10.20.0.0/16, 10.30.0.0/24]\n  platform:")
    p = make_platform(tmp_path / "a", nets, agent("alpha", "team-a", http("ledger", "GET", "{exact: /y}")))
    objs = [o for n in mesh_plan(p).namespaces for o in n.objects]
    (netauth,) = by_kind(objs, "NetworkAuthentication").values()
    assert netauth["metadata"]["name"] == "gw-ledger-outside-mesh"
    assert netauth["spec"] == {"networks": [{"cidr": "10.20.0.0/16"}, {"cidr": "10.30.0.0/24"}]}
    policy = by_kind(objs, "AuthorizationPolicy")["gw-ledger-outside-mesh"]
    assert policy["spec"] == {
        "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "gw-ledger"},
        "requiredAuthenticationRefs": [{"group": "policy.linkerd.io", "kind": "NetworkAuthentication",
                                        "name": "gw-ledger-outside-mesh"}]}
    # the mesh callers' authentication still names mesh identities only
    assert by_kind(objs, "MeshTLSAuthentication")["gw-ledger"]["spec"]["identities"] == [ident("alpha", "team-a")]
    anywhere = make_platform(tmp_path / "b", agent("vmbox", "", http("ledger", "GET", "{exact: /x}"), platform=vm))
    objs = [o for n in mesh_plan(anywhere).namespaces for o in n.objects]
    assert by_kind(objs, "NetworkAuthentication")["gw-ledger-outside-mesh"]["spec"] == {
        "networks": [{"cidr": "0.0.0.0/0"}, {"cidr": "::/0"}]}
    assert "gw-ledger" not in by_kind(objs, "MeshTLSAuthentication")  # no mesh caller, no mesh authn


@pytest.mark.parametrize("reserved", ["linkerd", "spire-system"])
def test_nothing_is_meshed_in_linkerds_or_spires_namespace(tmp_path: Path, reserved: str) -> None:
    services = SERVICES.replace("namespace: quiet", f"namespace: {reserved}")
    grant = "    - vault: {path: secret/data/x, capabilities: [read]}\n"
    # an agent there: refused by the platform model, for every stack and whether or not the mesh is on
    with pytest.raises(ManifestError) as refused:
        make_platform(tmp_path / "agent", agent("alpha", reserved, grant))
    assert [p.field for p in refused.value.problems] == ["spec.platform.kubernetes.namespace"]
    assert f"{reserved}/alpha is in " in refused.value.problems[0].message
    # a service there: Linkerd cannot mesh it
    p = make_platform(tmp_path / "service", agent("alpha", "team-a", grant), services=services)
    with pytest.raises(ManifestError) as info:
        mesh_plan(p)
    assert [p.field for p in info.value.problems] == ["spec.namespace"]
    assert f"{reserved!r} is " in info.value.problems[0].message


def test_colliding_object_names_are_a_manifest_error(tmp_path: Path) -> None:
    services = SERVICES + "---\n" + HEADER + """kind: Service
metadata: {name: gw-ledger, team: fin}
spec: {namespace: apps, port: 81, gateway: false, podSelector: {app: other}}
"""
    p = make_platform(tmp_path, agent("alpha", "team-a", http("ledger", "GET", "{exact: /x}")
                                      + http("gw-ledger", "GET", "{exact: /y}")), services=services)
    with pytest.raises(ManifestError, match=r"services 'gw-ledger' and 'ledger' in namespace 'apps' both need a "
                                            r"Server named 'gw-ledger'"):
        mesh_plan(p)


# --------------------------------------------------------------------------- identity profile


def test_identity_profile_of_the_dev_stack() -> None:
    prof = linkerd_identity_profile(load_stack_config("dev", ROOT))
    assert (prof.anchor_common_name, prof.issuer_common_name) == ("root.linkerd.cluster.local",
                                                                  "identity.linkerd.cluster.local")
    assert (prof.anchor_validity_hours, prof.issuer_validity_hours, prof.issuer_early_renewal_hours) == (
        87600, 2160, 720)
    assert (prof.anchor_generations, prof.signing_anchor, prof.ecdsa_curve) == (("g1",), "g1", "P256")
    assert (prof.anchor_path_length, prof.issuer_path_length) == (1, 0)


def _mesh_cfg(**mesh: Any) -> Any:
    values, lines, secrets = read_stack_file(ROOT / "stacks/Pulumi.dev.yaml")
    values["mesh"] = {**values["mesh"], **mesh}
    return build_stack_config(values | {"environment": "dev"}, "stacks/Pulumi.dev.yaml", lines, secrets)


def test_identity_profile_problems() -> None:
    cfg = _mesh_cfg(issuerLifetime="90d", issuerEarlyRenewal="91d", trustAnchorLifetime="3650d1m")
    with pytest.raises(ConfigError) as info:
        linkerd_identity_profile(cfg, "stacks/Pulumi.dev.yaml")
    assert sorted(p.field for p in info.value.problems) == [
        "agent-passport:mesh.issuerEarlyRenewal", "agent-passport:mesh.trustAnchorLifetime"]


def test_rotation_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="issuerAnchor 'g3' is not one of trustAnchors"):
        _mesh_cfg(trustAnchors=["g1", "g2"], issuerAnchor="g3")
    with pytest.raises(ConfigError, match="trustAnchors"):
        _mesh_cfg(trustAnchors=["g1", "g2", "g3"])
    with pytest.raises(ConfigError, match="exactly one PEM certificate"):
        _mesh_cfg(extraTrustAnchorsPem=["not a certificate"])
    cfg = _mesh_cfg(trustAnchors=["g1", "g2"], issuerAnchor="g2")
    assert linkerd_identity_profile(cfg).signing_anchor == "g2"
    assert linkerd_identity_profile(_mesh_cfg(trustAnchors=["g1", "g2"])).signing_anchor == "g1"


def test_anchor_custody_follows_the_trust_domain_unless_set() -> None:
    assert {s: linkerd_identity_profile(load_stack_config(s, ROOT)).custody for s in ("dev", "staging", "prod")} == {
        "dev": "tls", "staging": "vault-pki", "prod": "aws-pca"}
    assert linkerd_identity_profile(_mesh_cfg(anchorCustody="vault-pki")).custody == "vault-pki"
    with pytest.raises(ConfigError) as info:
        linkerd_identity_profile(_mesh_cfg(anchorCustody="aws-pca", issuerLifetime="2170h"), "stacks/Pulumi.dev.yaml")
    assert [(p.field, "whole number of days" in p.message) for p in info.value.problems] == [
        ("agent-passport:mesh.issuerLifetime", True)]


def test_trust_bundle_keeps_order_and_drops_duplicates() -> None:
    a = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----"
    b = "-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n\n"
    assert trust_bundle([a + "\n", b, a, ""]) == f"{a}\n{b.strip()}\n"


# --------------------------------------------------------------------------- artifacts


def test_render_is_deterministic_and_lands_under_kubernetes_mesh(tmp_path: Path) -> None:
    cfg = load_stack_config("dev", ROOT)
    manifests = load_manifests([ROOT / "agents"])
    p = build_platform(cfg, manifests, "dev", "stacks/Pulumi.dev.yaml")
    assert mesh_objects(p) == mesh_objects(build_platform(cfg, manifests, "dev", "stacks/Pulumi.dev.yaml"))
    paths = sorted(a.path for a in mesh_artifacts(p))
    assert paths == sorted([
        "kubernetes/mesh/namespace-linkerd.yaml",
        "kubernetes/mesh/namespace-agents.yaml", "kubernetes/mesh/namespace-finance-agents.yaml",
        "kubernetes/mesh/namespace-integrations.yaml", "kubernetes/mesh/namespace-ml.yaml",
        "kubernetes/mesh/namespace-payments.yaml",
        "kubernetes/mesh/server-ml-inference.yaml", "kubernetes/mesh/httproute-ml-inference-agent-cortex.yaml",
        "kubernetes/mesh/meshtlsauthentication-ml-inference-agent-cortex.yaml",
        "kubernetes/mesh/authorizationpolicy-ml-inference-agent-cortex.yaml",
        *(f"kubernetes/mesh/{k}-{ns}-{n}.yaml" for ns, svc in (("integrations", "slack-gateway"),
                                                              ("payments", "payments-api"))
          for k, n in (("server", svc), ("server", f"gw-{svc}"), ("meshtlsauthentication", f"gw-{svc}"),
                       ("authorizationpolicy", f"gw-{svc}"), ("meshtlsauthentication", f"{svc}-gateway"),
                       ("authorizationpolicy", f"{svc}-gateway"))),
    ])
    assert set(paths) <= {a.path for a in render_all(p)}
    off = build_platform(cfg.model_copy(update={"subsystems": cfg.subsystems.model_copy(update={"mesh": False})}),
                         manifests, "dev", "stacks/Pulumi.dev.yaml")
    assert mesh_artifacts(off) == []


def test_identities_follow_a_non_default_control_plane_namespace() -> None:
    """Linkerd names identities `<sa>.<ns>.serviceaccount.identity.<control-plane ns>.<domain>`."""
    cfg = load_stack_config("dev")
    cfg = cfg.model_copy(update={"mesh": cfg.mesh.model_copy(update={"control_plane_namespace": "linkerd-system"})})
    platform = build_platform(cfg, load_manifests(["agents"]), "dev", "stacks/Pulumi.dev.yaml")
    cortex = platform.agent("agent-cortex")
    assert cortex is not None
    assert cortex.identity.linkerd_identity == (
        "agent-cortex.agents.serviceaccount.identity.linkerd-system.cluster.local")
    payments = platform.service("payments-api")
    assert payments is not None
    assert platform.gateway(payments).linkerd_identity == (
        "gw-payments-api.payments.serviceaccount.identity.linkerd-system.cluster.local")
    rendered = "\n".join(a.content for a in render_all(platform) if a.path.startswith("kubernetes/mesh/"))
    assert "identity.linkerd-system.cluster.local" in rendered
    assert "identity.linkerd.cluster.local" not in rendered
