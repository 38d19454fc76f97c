"""The `local` stack and what it is made of: SPIRE as its own root, Linkerd's identity from
cert-manager, workloads not awaited on a bare API server, and the engine's preflight.

The point of the local stack is that no key of the trust domain or the mesh passes through
Pulumi, so it needs nothing but the kubernetes provider: the graph tests check exactly that.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components import engine
from components.config import load_stack_config
from components.errors import ConfigError
from components.manifest.loader import load_manifests
from components.mockrun import Graph
from components.platform_model import build_platform
from components.render.mesh import cert_manager_identity_objects, linkerd_identity_profile
from components.render.spire import SERVER_DATA_DIR, server_config, spire_artifacts
from components.render.trust import trust_problems

ROOT = Path(__file__).resolve().parents[2]


def _platform(stack: str, **overrides: Any) -> Any:
    cfg = load_stack_config(stack)
    if overrides:
        cfg = cfg.model_copy(update=overrides)
    return build_platform(cfg, load_manifests(["agents"]), stack, f"stacks/Pulumi.{stack}.yaml")


# --------------------------------------------------------------------------- SPIRE as its own root


def test_spire_upstream_has_no_upstream_authority_and_keeps_its_key_on_disk() -> None:
    conf = server_config(_platform("local"))
    plugins = conf["plugins"]
    assert "UpstreamAuthority" not in plugins
    assert plugins["KeyManager"] == [{"disk": {"plugin_data": {"keys_path": f"{SERVER_DATA_DIR}/keys.json"}}}]
    assert conf["server"]["ca_ttl"] == "24h"


def test_spire_upstream_can_keep_its_key_in_aws_kms() -> None:
    cfg = load_stack_config("local")
    spire = cfg.spire.model_copy(update={"key_manager": "aws_kms"})
    conf = server_config(_platform("local", spire=spire))
    (kms,) = conf["plugins"]["KeyManager"]
    assert kms["aws_kms"]["plugin_data"]["region"] == cfg.aws.region
    assert kms["aws_kms"]["plugin_data"]["key_identifier_file"].startswith(SERVER_DATA_DIR + "/")


def test_other_upstreams_keep_their_upstream_authority() -> None:
    for stack, plugin in (("dev", "disk"), ("staging", "vault"), ("prod", "aws_pca")):
        (ua,) = server_config(_platform(stack))["plugins"]["UpstreamAuthority"]
        assert list(ua) == [plugin], stack


def test_spire_upstream_refuses_consumers_that_pin_a_ca() -> None:
    cfg = load_stack_config("local")
    pinned = cfg.model_copy(update={
        "subsystems": cfg.subsystems.model_copy(update={"vault": True, "aws": True}),
        "vault": cfg.vault.model_copy(update={"auth": "cert"}),
        "aws": cfg.aws.model_copy(update={"federation": "roles-anywhere"}),
    })
    messages = [p.message for p in trust_problems(pinned, "stacks/Pulumi.local.yaml")]
    assert any("Vault cert auth" in m for m in messages)
    assert any("Roles Anywhere" in m for m in messages)
    assert trust_problems(cfg, "stacks/Pulumi.local.yaml") == []


# --------------------------------------------------------------------------- Linkerd identity from cert-manager


def test_cert_manager_identity_objects() -> None:
    profile = linkerd_identity_profile(load_stack_config("local"))
    assert profile.custody == "cert-manager"
    objs = {(o["kind"], o["metadata"]["name"]): o for o in cert_manager_identity_objects(profile)}
    anchor = objs[("Certificate", "linkerd-trust-anchor-g1")]["spec"]
    assert anchor["isCA"] and anchor["commonName"] == "root.linkerd.cluster.local"
    # the anchor keeps its key across renewals: chains signed by it stay valid
    assert anchor["privateKey"] == {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Never"}
    issuer = objs[("Certificate", "linkerd-identity-issuer")]
    assert issuer["metadata"]["namespace"] == "linkerd"
    assert issuer["spec"]["secretName"] == "linkerd-identity-issuer"
    assert issuer["spec"]["issuerRef"] == {"name": "linkerd-trust-anchor", "kind": "ClusterIssuer",
                                           "group": "cert-manager.io"}
    assert (issuer["spec"]["duration"], issuer["spec"]["renewBefore"]) == ("2160h", "720h")
    assert objs[("ClusterIssuer", "linkerd-trust-anchor")]["spec"] == {"ca": {"secretName": "linkerd-trust-anchor-g1"}}
    bundle = objs[("Bundle", "linkerd-identity-trust-roots")]["spec"]
    assert bundle["sources"] == [{"secret": {"name": "linkerd-trust-anchor-g1", "key": "tls.crt"}}]
    assert bundle["target"]["configMap"] == {"key": "ca-bundle.crt"}


def test_two_anchor_generations_are_both_in_the_bundle() -> None:
    cfg = load_stack_config("local")
    mesh = cfg.mesh.model_copy(update={"trust_anchors": ["g1", "g2"], "issuer_anchor": "g2"})
    profile = linkerd_identity_profile(cfg.model_copy(update={"mesh": mesh}))
    objs = {(o["kind"], o["metadata"]["name"]): o for o in cert_manager_identity_objects(profile)}
    sources = objs[("Bundle", "linkerd-identity-trust-roots")]["spec"]["sources"]
    assert [s["secret"]["name"] for s in sources] == ["linkerd-trust-anchor-g1", "linkerd-trust-anchor-g2"]
    assert objs[("ClusterIssuer", "linkerd-trust-anchor")]["spec"]["ca"]["secretName"] == "linkerd-trust-anchor-g2"


def test_dev_keeps_the_pulumi_tls_issuer() -> None:
    assert linkerd_identity_profile(load_stack_config("dev")).custody == "tls"


# --------------------------------------------------------------------------- the local stack's graph


def test_local_stack_holds_no_key_and_needs_only_kubernetes(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("local")
    providers = {r.type.split(":", 1)[0] for r in graph.resources if r.custom}
    assert providers == {"kubernetes", "pulumi"}  # pulumi: the providers themselves
    assert not [r for r in graph.resources if r.type.startswith(("tls:", "vault:", "aws:"))]
    assert engine.required_providers(load_stack_config("local")) == ["kubernetes"]
    kinds = {r.type for r in graph.resources}
    assert "kubernetes:cert-manager.io/v1:Certificate" in kinds
    assert "kubernetes:trust.cert-manager.io/v1alpha1:Bundle" in kinds
    assert "kubernetes:admissionregistration.k8s.io/v1:ValidatingWebhookConfiguration" not in kinds
    secrets = [r for r in graph.resources if r.type == "kubernetes:core/v1:Secret"]
    assert secrets == []  # no issuer Secret, no upstream key: cert-manager and SPIRE hold them


def test_skip_await_annotates_only_awaited_kinds(stack_graph: Callable[[str], Graph]) -> None:
    graph = stack_graph("local")
    annotated = {r.type for r in graph.resources
                 if ((r.inputs.get("metadata") or {}).get("annotations") or {}).get("pulumi.com/skipAwait") == "true"}
    assert annotated == {"kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet",
                         "kubernetes:apps/v1:DaemonSet", "kubernetes:core/v1:Service"}
    dev = stack_graph("dev")
    assert not [r for r in dev.resources
                if ((r.inputs.get("metadata") or {}).get("annotations") or {}).get("pulumi.com/skipAwait")]


def test_webhook_stays_on_elsewhere() -> None:
    kinds = {a.path.split("/")[-1].split("-")[0] for a in spire_artifacts(_platform("dev"))}
    assert "validatingwebhookconfiguration" in kinds


# --------------------------------------------------------------------------- engine preflight


def test_required_providers_per_stack() -> None:
    assert engine.required_providers(load_stack_config("dev")) == ["kubernetes", "tls", "vault"]
    assert engine.required_providers(load_stack_config("staging")) == ["kubernetes", "tls", "vault", "aws"]
    assert engine.required_providers(load_stack_config("prod")) == ["kubernetes", "tls", "vault", "aws"]


def test_plugin_versions_follow_the_installed_sdks() -> None:
    assert engine.plugin_version("kubernetes") == "4.25.0"


def test_strict_stacks_need_a_team_backend(tmp_path: Path) -> None:
    with pytest.raises(engine.EngineUnavailable, match="PULUMI_BACKEND_URL"):
        engine.settings_for("prod", ROOT, environ={"PATH": "/usr/bin"})


def test_local_backend_and_passphrase_for_non_strict_stacks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(engine, "LOCAL_DIR", str(tmp_path / "local"))
    s = engine.settings_for("local", ROOT, environ={"PATH": "/usr/bin"})
    assert s.local_backend and s.backend_url.startswith("file://") and s.backend_url.endswith("/state")
    assert s.env["PULUMI_CONFIG_PASSPHRASE"] == engine.LOCAL_PASSPHRASE
    assert s.env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"
    team = engine.settings_for("prod", ROOT, environ={"PATH": "/usr/bin", "PULUMI_BACKEND_URL": "s3://b/p"})
    assert not team.local_backend and "PULUMI_CONFIG_PASSPHRASE" not in team.env


def test_preflight_names_every_missing_piece(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(engine, "LOCAL_DIR", str(tmp_path / "local"))
    s = engine.settings_for("dev", ROOT, environ={"PATH": "/usr/bin"})
    monkeypatch.setattr(engine, "find_pulumi", lambda: "/nonexistent/pulumi")
    monkeypatch.setattr(engine, "installed_plugins", lambda *_: {("kubernetes", "4.25.0")})
    missing = engine.preflight(s)
    assert [m.split(":")[0] for m in missing] == [
        f"the Pulumi tls provider plugin v{engine.plugin_version('tls')}",
        f"the Pulumi vault provider plugin v{engine.plugin_version('vault')}",
    ]
    monkeypatch.setattr(engine, "find_pulumi", lambda: None)
    assert engine.preflight(s)[0].startswith("the Pulumi CLI")


def test_engine_refuses_bad_input_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError):
        load_stack_config("no-such-stack")
    assert engine.run("preview", "prod", root=ROOT, environ={"PATH": "/usr/bin"}) == 2
    assert "PULUMI_BACKEND_URL" in capsys.readouterr().err


def test_checkpoints_are_skipped_only_where_a_rerun_repairs_a_crash() -> None:
    local, dev, prod = (load_stack_config(s) for s in ("local", "dev", "prod"))
    assert engine.checkpoint_policy(local, "auto")[0] is True  # kubernetes only
    skip, why = engine.checkpoint_policy(dev, "auto")
    assert skip is False and "tls, vault" in why  # new keys; mounts answer "path is already in use"
    skip, why = engine.checkpoint_policy(prod, "auto")
    assert skip is False and "aws" in why
    assert engine.checkpoint_policy(prod, "never")[0] is True
    assert engine.checkpoint_policy(local, "always")[0] is False


@pytest.mark.parametrize("stack", ["local", "dev"])
def test_objects_wait_for_the_namespaces_the_stack_creates(stack_graph: Callable[[str], Graph], stack: str) -> None:
    """Found by the real API server: a gateway's objects raced the Namespace MeshNamespace creates."""
    graph = stack_graph(stack)
    namespaces = {(r.inputs.get("metadata") or {}).get("name"): r.urn
                  for r in graph.resources if r.type == "kubernetes:core/v1:Namespace"}
    racing = []
    for r in graph.resources:
        ns = (r.inputs.get("metadata") or {}).get("namespace") if r.type.startswith("kubernetes:") else None
        if ns in namespaces and namespaces[ns] not in r.dependencies:
            racing.append(f"{r.type} {r.name}")
    assert racing == []


def test_expected_duration_follows_the_measured_fit() -> None:
    assert engine.expected_seconds(1437, skip_checkpoints=False) == pytest.approx(578, rel=0.01)
    assert engine.expected_seconds(1437, skip_checkpoints=True) == pytest.approx(40, rel=0.01)
    assert engine.expected_seconds(500, skip_checkpoints=True) < engine.LONG_RUN_S
