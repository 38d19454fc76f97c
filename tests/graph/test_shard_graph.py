"""Sharded stacks under mocks: a base and N hash-bucket shards partition the standalone graph.

The real program (``__main__.py``) runs for the prod stack over a synthetic fleet four ways:
standalone, as the base (``shard.role: base``) and as three shards (``shard.role: shard``, one
hash bucket each). The shards read the base's captured outputs through
``pulumi.StackReference`` (the mocks answer with them). Then:

* every agent's per-agent resources are registered by exactly one shard, and are the
  standalone stack's per-agent resources of that agent;
* no shard registers a shared piece (asserted on type tokens) and the base no per-agent one;
* base + shards register the standalone resource set, modulo the shard's name in names;
* a gateway of the base loads every shard's OPA data: real OPA, given the files as the
  projected volume lays them out, passes each shard's generated Rego tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from benchmarks.synthetic import database_names, write_fleet
from components.config import NAMESPACE, read_stack_file, stack_file, stack_runtime_config
from components.manifest.loader import load_manifests
from components.mockrun import STACK_REFERENCE, Captured, Graph, run_program
from components.render import rego
from components.render.artifacts import render_all
from components.shard import SHARED_OUTPUT, hash_bucket
from tests.support.tools import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
FLEET = 48
SHARDS = 3
BASE = "prod-base"
BASE_REF = f"acme/agent-passport/{BASE}"
AGENT = re.compile(r"agent-\d{5}")

SHARED_TYPES = {
    "agentpassport:trust:TrustDomain", "agentpassport:spire:SpireServer", "agentpassport:spire:SpireAgents",
    "agentpassport:mesh:LinkerdIdentity", "agentpassport:mesh:MeshNamespace", "agentpassport:authz:AuthzGateway",
    "agentpassport:aws:AuditTrail", "agentpassport:observe:IdentityHealth",
    "aws:acmpca/certificateAuthority:CertificateAuthority", "aws:acmpca/certificate:Certificate",
    "tls:index/privateKey:PrivateKey", "tls:index/certRequest:CertRequest",
    "kubernetes:core/v1:Namespace", "kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet",
    "kubernetes:apps/v1:DaemonSet", "kubernetes:core/v1:Service", "kubernetes:core/v1:ServiceAccount",
    "kubernetes:policy.linkerd.io/v1beta3:Server",
    "vault:jwt/authBackend:AuthBackend", "vault:index/authBackend:AuthBackend", "vault:index/mount:Mount",
    "vault:database/secretBackendConnection:SecretBackendConnection", "vault:index/audit:Audit",
    "aws:rolesanywhere/trustAnchor:TrustAnchor", "aws:iam/openIdConnectProvider:OpenIdConnectProvider",
    "aws:s3/bucket:Bucket", "aws:kms/key:Key",
}
"""Pieces that name no agent: only a base (or a standalone stack) may register them."""

PER_AGENT_TYPES = {
    "vault:index/policy:Policy", "vault:jwt/authBackendRole:AuthBackendRole",
    "vault:database/secretBackendRole:SecretBackendRole", "aws:iam/role:Role",
}


def shard_name(i: int) -> str:
    return f"prod-shard-{i}"


def _config(fleet: Path, shard: Mapping[str, Any] | None) -> tuple[dict[str, str], list[str]]:
    """Pulumi.prod.yaml as the engine passes it, with the synthetic fleet, one Vault admin per
    synthetic database (prod rotates admin passwords) and the shard section."""
    path = stack_file("prod", ROOT)
    config, secrets = stack_runtime_config(path)
    values, _, _ = read_stack_file(path)
    vault = json.loads(json.dumps(values["vault"]))
    admins = vault["databases"]["main"].setdefault("admins", {})
    for db in database_names():
        admins.setdefault(db, {"username": f"vault_{db}"})
    config[f"{NAMESPACE}:agentsDir"] = str(fleet)
    config[f"{NAMESPACE}:vault"] = json.dumps(vault)
    config[f"{NAMESPACE}:environment"] = "prod"
    if shard is not None:
        config[f"{NAMESPACE}:shard"] = json.dumps(shard)
    return config, secrets


def _shard_section(i: int) -> dict[str, Any]:
    return {"role": "shard", "baseStack": BASE_REF, "select": {"hashBuckets": {"count": SHARDS, "index": i}}}


class Run:
    def __init__(self, fleet: Path) -> None:
        self.fleet = fleet
        self.standalone = run_program("prod", ROOT, *_config(fleet, None))
        base_cfg = _config(fleet, {"role": "base", "shards": [shard_name(i) for i in range(SHARDS)]})
        self.base = run_program(BASE, ROOT, *base_cfg)
        self.shards = {
            shard_name(i): run_program(shard_name(i), ROOT, *_config(fleet, _shard_section(i)),
                                       stack_outputs={BASE_REF: self.base.outputs})
            for i in range(SHARDS)
        }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return Run(write_fleet(tmp_path_factory.mktemp("fleet"), FLEET))


# --------------------------------------------------------------------------- helpers


def _strip(text: str, shard: str | None) -> str:
    return text.replace(f"-{shard}", "") if shard else text


def key(r: Captured, shard: str | None = None) -> tuple[str, str]:
    """A resource modulo names: Kubernetes objects by kind, namespace and object name; others by
    resource name; the shard's stack name removed."""
    if r.type.startswith("kubernetes:"):
        meta = r.inputs.get("metadata") or {}
        return r.type, f"{meta.get('namespace', '')}/{_strip(str(meta.get('name')), shard)}"
    return r.type, _strip(r.name, shard)


def agents_in(r: Captured) -> set[str]:
    """Agents a resource belongs to: named in it (objects grouping several agents, such as a
    gateway's callers, carry the agent label only where one agent is the whole group)."""
    return set(AGENT.findall(r.name))


def labelled(r: Captured) -> set[str]:
    meta = r.inputs.get("metadata") or {}
    label = (meta.get("labels") or {}).get("agentpassport.dev/agent")
    return {label} if label else set()


def deployed(graph: Graph) -> Iterable[Captured]:
    return (r for r in graph.resources if r.custom and r.type != STACK_REFERENCE)


# --------------------------------------------------------------------------- the partition


def test_each_shard_deploys_exactly_its_hash_bucket(run: Run) -> None:
    for i, (name, graph) in enumerate(run.shards.items()):
        bom = graph.outputs["identityBom"]
        assert bom["shard"] == {"role": "shard", "baseStack": BASE_REF}
        expected = {f"agent-{n:05d}" for n in range(FLEET) if hash_bucket(f"agent-{n:05d}", SHARDS) == i}
        assert set(bom["agents"]) == expected, name
    assert run.base.outputs["identityBom"]["agents"] == {}
    assert run.base.outputs["identityBom"]["shard"] == {
        "role": "base", "shards": [shard_name(i) for i in range(SHARDS)], "fleetAgents": FLEET}


def test_every_agents_resources_are_registered_by_exactly_one_shard(run: Run) -> None:
    standalone: dict[str, set[tuple[str, str]]] = {}
    for r in deployed(run.standalone):
        for agent in agents_in(r):
            standalone.setdefault(agent, set()).add(key(r))
    assert len(standalone) == FLEET
    sharded: dict[str, Counter[tuple[str, str]]] = {}
    for name, graph in run.shards.items():
        for r in deployed(graph):
            for agent in agents_in(r):
                sharded.setdefault(agent, Counter())[key(r, name)] += 1
    assert set(sharded) == set(standalone)
    for agent, keys in sorted(standalone.items()):
        assert dict(sharded[agent]) == dict.fromkeys(keys, 1), agent


def test_no_shard_registers_a_shared_piece(run: Run) -> None:
    for name, graph in run.shards.items():
        types = {r.type for r in graph.resources}
        assert not types & SHARED_TYPES, (name, sorted(types & SHARED_TYPES))
        assert types & PER_AGENT_TYPES == PER_AGENT_TYPES - {"aws:iam/role:Role"}  # no aws grants here
        configmaps = [r.inputs["metadata"] for r in graph.of_type("kubernetes:core/v1:ConfigMap")]
        assert configmaps and all(m["name"].endswith(f"-data-{name}") for m in configmaps)
        assert all(m["labels"]["agentpassport.dev/shard"] == name for m in configmaps)


def test_the_base_registers_no_per_agent_resource(run: Run) -> None:
    assert not [r.name for r in run.base.resources if agents_in(r) or labelled(r)]
    assert not {r.type for r in run.base.resources} & PER_AGENT_TYPES
    assert {r.type for r in run.base.resources} >= {
        "agentpassport:trust:TrustDomain", "agentpassport:spire:SpireServer", "agentpassport:spire:SpireAgents",
        "agentpassport:mesh:LinkerdIdentity", "agentpassport:mesh:MeshNamespace",
        "agentpassport:authz:AuthzGateway", "agentpassport:aws:AuditTrail", "agentpassport:observe:IdentityHealth",
        "kubernetes:policy.linkerd.io/v1beta3:Server", "vault:jwt/authBackend:AuthBackend", "vault:index/mount:Mount",
        "vault:database/secretBackendConnection:SecretBackendConnection", "vault:index/audit:Audit",
        "aws:rolesanywhere/trustAnchor:TrustAnchor", "aws:s3/bucket:Bucket",
    }


def test_shards_reference_the_base_and_read_its_outputs(run: Run) -> None:
    assert not run.base.of_type(STACK_REFERENCE)
    shared = run.base.outputs["outputs"][SHARED_OUTPUT]
    assert set(shared) == {"trustBundlePem", "spireServerWorkload", "awsTrustAnchorArn"}
    assert shared["trustBundlePem"].startswith("-----BEGIN CERTIFICATE-----")
    for name, graph in run.shards.items():
        refs = graph.of_type(STACK_REFERENCE)
        assert [(r.name, r.inputs["name"]) for r in refs] == [("agent-passport-base", BASE_REF)], name
        assert graph.outputs["outputs"]["trustBundlePem"] == shared["trustBundlePem"]
        for r in graph.of_type("kubernetes:spire.spiffe.io/v1alpha1:ClusterSPIFFEID"):
            annotations = r.inputs["metadata"]["annotations"]
            assert annotations["agentpassport.dev/spire-server"] == shared["spireServerWorkload"]


def test_base_and_shards_together_register_the_standalone_set(run: Run) -> None:
    union = {key(r) for r in deployed(run.base)}
    for name, graph in run.shards.items():
        union |= {key(r, name) for r in deployed(graph)}
    assert union == {key(r) for r in deployed(run.standalone)}


def test_vault_roles_in_shards_name_the_bases_mounts_and_connections(run: Run) -> None:
    connections = {(c.inputs["backend"], c.inputs["name"]): c.inputs["allowedRoles"]
                   for c in run.base.of_type("vault:database/secretBackendConnection:SecretBackendConnection")}
    roles = [r for g in run.shards.values()
             for r in g.of_type("vault:database/secretBackendRole:SecretBackendRole")]
    assert len(roles) == FLEET
    for r in roles:
        assert r.inputs["name"] in connections[(r.inputs["backend"], r.inputs["dbName"])]
    logins = [r for g in run.shards.values() for r in g.of_type("vault:jwt/authBackendRole:AuthBackendRole")]
    backend = run.base.of_type("vault:jwt/authBackend:AuthBackend")[0].inputs["path"]
    assert len(logins) == FLEET and {r.inputs["backend"] for r in logins} == {backend}


def test_gateway_callers_are_authorized_per_shard_on_the_bases_servers(run: Run) -> None:
    servers = {(r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"])
               for r in run.base.of_type("kubernetes:policy.linkerd.io/v1beta3:Server")}
    standalone_ids = {r.inputs["metadata"]["name"]: set(r.inputs["spec"]["identities"]) for r in
                      run.standalone.of_type("kubernetes:policy.linkerd.io/v1alpha1:MeshTLSAuthentication")}
    merged: dict[str, set[str]] = {}
    for name, graph in run.shards.items():
        for r in graph.of_type("kubernetes:policy.linkerd.io/v1alpha1:AuthorizationPolicy"):
            meta, spec = r.inputs["metadata"], r.inputs["spec"]
            assert meta["name"].endswith(f"-{name}")
            assert (meta["namespace"], spec["targetRef"]["name"]) in servers
        for r in graph.of_type("kubernetes:policy.linkerd.io/v1alpha1:MeshTLSAuthentication"):
            merged.setdefault(r.inputs["metadata"]["name"].removesuffix(f"-{name}"), set()).update(
                r.inputs["spec"]["identities"])
    callers = {k: v for k, v in standalone_ids.items() if not k.endswith("-gateway")}
    assert merged == callers


# --------------------------------------------------------------------------- the gateway's data


def _data_of(graph: Graph, name: str, key: str = "data.json") -> str | None:
    r = next((r for r in graph.of_type("kubernetes:core/v1:ConfigMap") if r.inputs["metadata"]["name"] == name),
             None)
    return None if r is None else str(r.inputs["data"][key])


def test_the_bases_gateway_mounts_every_shards_data(run: Run) -> None:
    deployment = next(r for r in run.base.of_type("kubernetes:apps/v1:Deployment")
                      if r.inputs["metadata"]["name"] == "gw-svc-1")
    pod = deployment.inputs["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "data")
    assert volume["projected"]["sources"] == [
        {"configMap": {"name": "gw-svc-1-data", "items": [{"key": "data.json", "path": "data.json"}]}},
        {"configMap": {"name": "gw-svc-1-revocations",
                       "items": [{"key": "revocations.json", "path": "revocations.json"}]}},
        *({"configMap": {"name": f"gw-svc-1-data-{shard_name(i)}", "optional": True,
                         "items": [{"key": "data.json", "path": f"{shard_name(i)}.json"}]}} for i in range(SHARDS)),
    ]
    opa = next(c for c in pod["containers"] if c["name"] == "opa")
    assert opa["args"][-5:] == ["--watch", "--ignore=..*", "/policy/policy.rego", "/policy/mask.rego", "/data"]
    assert json.loads(_data_of(run.base, "gw-svc-1-data") or "null") == {
        "agentpassport": {"services": {"svc-1": {"principals": {}}}}}


OPA_BIN = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agent-passport/tools/bin/opa"


def _opa() -> str:
    if OPA_BIN.exists():
        return str(OPA_BIN)
    found = shutil.which("opa")
    if found is None:
        skip_or_fail(f"OPA binary not found at {OPA_BIN} or on PATH: run scripts/bootstrap-tools --only opa")
    return found


def _configmap_volume(root: Path, files: Mapping[str, str]) -> Path:
    """The layout kubelet writes: files in a timestamped dir, ``..data`` and top-level symlinks."""
    real = root / "..2026_01_12_00_00_00.000000001"
    real.mkdir(parents=True)
    for name, text in files.items():
        (real / name).write_text(text, encoding="utf-8")
        (root / name).symlink_to(Path("..data") / name)
    (root / "..data").symlink_to(real.name)
    return root


def test_real_opa_passes_each_shards_generated_tests_on_the_merged_data(run: Run, tmp_path: Path) -> None:
    """The gateways, loading the base's and every shard's data, make each shard's generated
    decisions (its agents allowed for their grants, denied otherwise). One directory holds what
    every gateway's projected volume holds (each file names its service, so OPA merges them to
    the document all gateways together see; each gateway's own is the part of its service)."""
    from components.config import build_stack_config
    from components.platform_model import build_platform
    from components.program import config_keys

    opa = _opa()
    manifests = load_manifests([run.fleet])
    services = sorted({r.inputs["metadata"]["name"].removeprefix("gw-").removesuffix("-data")
                       for r in run.base.of_type("kubernetes:core/v1:ConfigMap")
                       if r.inputs["metadata"]["name"].endswith("-data")})
    assert len(services) == 20
    files: dict[str, str] = {}
    for service in services:
        own = _data_of(run.base, f"gw-{service}-data")
        assert own is not None
        files[f"data-{service}.json"] = own
        for name, graph in run.shards.items():
            text = _data_of(graph, f"gw-{service}-data-{name}")
            if text is not None:  # a shard without callers of the service writes none (optional source)
                files[f"{name}-{service}.json"] = text
    assert len(files) > len(services) * 2
    # the revocation list each gateway loads (the base creates one per gateway, empty)
    files["revocations.json"] = _data_of(run.base, f"gw-{services[0]}-revocations", "revocations.json") or ""
    data_dir = _configmap_volume(tmp_path / "data", files)
    for i in range(SHARDS):
        name = shard_name(i)
        values = {k.split(":", 1)[1]: (json.loads(v) if v[:1] in "{[" else v)
                  for k, v in _config(run.fleet, _shard_section(i))[0].items()
                  if k.split(":", 1)[1] in config_keys()}
        platform = build_platform(build_stack_config(values, "stacks/Pulumi.prod.yaml"), manifests, name, "x")
        out = tmp_path / name
        out.mkdir()
        artifacts = {a.path: a.content for a in render_all(platform)}
        for f in ("policy.rego", "mask.rego", "policy_test.rego"):
            (out / f).write_text(artifacts[f"rego/{f}"], encoding="utf-8")
        assert json.loads(artifacts["rego/data.json"]) == rego.stack_data(platform)
        proc = subprocess.run([opa, "test", "--ignore=..*", str(out), str(data_dir)],
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        cases = len(rego.rego_cases(platform))
        assert f"PASS: {cases}/{cases}" in proc.stdout, proc.stdout[-500:]


def test_an_identity_in_two_shards_is_denied() -> None:
    entry = {"agent": "a", "rules": [{"grant": 0, "headers": {}, "methods": {"GET": True},
                                      "paths": {"exact": {}, "prefix": ["/"]}, "timeWindows": []}]}
    doc = {"agentpassport": {"services": {"s": {"principals": {}}}, "shards": {
        "x": {"services": {"s": {"principals": {"spiffe://td/a": entry}}}},
        "y": {"services": {"s": {"principals": {"spiffe://td/a": entry}}}},
    }}}
    req = rego.Request("s", "spiffe://td/a", "GET", "/x", {}, 0)
    assert rego.decide(rego.with_revocations(doc), req)["allowed"] is False
    doc["agentpassport"]["shards"].pop("y")  # type: ignore[attr-defined]
    assert rego.decide(rego.with_revocations(doc), req)["allowed"] is True


GATEWAYLESS_AGENT = """\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata: {{name: {name}, team: ml, owner: ml@acme-corp.net}}
spec:
  platform:
    kubernetes: {{namespace: agents, serviceAccount: {name}}}
  grants:
    - http: {{service: inference, methods: [POST], paths: [{{prefix: {path}}}]}}
"""
GATEWAYLESS_SERVICE = """\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Service
metadata: {name: inference, team: ml}
spec: {namespace: ml, port: 8000, gateway: false, podSelector: {app: inference}}
"""


def test_a_shard_refuses_to_split_the_callers_of_a_gatewayless_service(tmp_path: Path) -> None:
    """Linkerd applies one route per request: /v1 (shard 0) and /v1/chat (shard 1) routes of one
    service from two stacks would shadow each other, so a shard refuses before registering."""
    from components.config import build_stack_config
    from components.errors import ManifestError
    from components.platform_model import build_platform

    names = [f"caller-{n}" for n in range(20)]
    first = next(n for n in names if hash_bucket(n, 2) == 0)
    second = next(n for n in names if hash_bucket(n, 2) == 1)
    (tmp_path / "services.yaml").write_text(GATEWAYLESS_SERVICE)
    (tmp_path / "agents.yaml").write_text("---\n".join(
        GATEWAYLESS_AGENT.format(name=n, path=p) for n, p in ((first, "/v1"), (second, "/v1/chat"))))
    manifests = load_manifests([tmp_path])

    def platform(shard: dict[str, Any], stack: str) -> Any:
        values = {"environment": "prod", "trustDomain": "prod.acme-corp.net", "strict": False,
                  "agentsDir": str(tmp_path), "shard": shard}
        return build_platform(build_stack_config(values, f"stacks/Pulumi.{stack}.yaml"), manifests, stack, "x")

    with pytest.raises(ManifestError) as err:
        platform({"role": "shard", "baseStack": BASE_REF, "select": {"hashBuckets": {"count": 2, "index": 0}}},
                 "prod-shard-0")
    report = err.value.report()
    assert f"its callers {second} are not in this shard" in report and "cannot be split across stacks" in report
    # every caller in one shard (by label-free team selection): fine, and the routes carry its name
    together = platform({"role": "shard", "baseStack": BASE_REF, "select": {"teams": ["ml"]}}, "prod-ml")
    from components.render.mesh import shard_objects

    routes = sorted(o["metadata"]["name"] for o in shard_objects(together) if o["kind"] == "HTTPRoute")
    assert len(routes) == 2 and routes[0] == f"inference-prod-ml-{first}"
    assert re.fullmatch(r"inference-prod-ml-shared-[0-9a-f]{10}", routes[1])
    assert len(platform({"role": "base", "shards": ["prod-ml"]}, "prod-base").agents) == 2


def test_split_gatewayless_names_the_service_and_where_its_callers_landed(tmp_path: Path) -> None:
    from components.config import build_stack_config
    from components.shard import split_gatewayless

    names = [f"caller-{n}" for n in range(20)]
    first = next(n for n in names if hash_bucket(n, 2) == 0)
    second = next(n for n in names if hash_bucket(n, 2) == 1)
    (tmp_path / "services.yaml").write_text(GATEWAYLESS_SERVICE)
    (tmp_path / "agents.yaml").write_text("---\n".join(
        GATEWAYLESS_AGENT.format(name=n, path="/v1") for n in (first, second)))
    agents = [a.manifest for a in load_manifests([tmp_path]).agents]
    shards = [(f"prod-shard-{i}", build_stack_config(
        {"environment": "prod", "trustDomain": "prod.acme-corp.net", "strict": False,
         "shard": {"role": "shard", "baseStack": BASE_REF, "select": {"hashBuckets": {"count": 2, "index": i}}}},
        "x")) for i in range(2)]
    assert split_gatewayless(shards, agents, {"inference"}) == [
        ("inference", {"prod-shard-0": (first,), "prod-shard-1": (second,)})]
    assert split_gatewayless(shards, agents, set()) == []
