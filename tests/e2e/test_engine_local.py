"""`passport up --stack local` on the real Pulumi engine into a real Kubernetes API server.

One module-scoped cluster (etcd + kube-apiserver on 127.0.0.1, CRDs installed by
scripts/local-cluster) and one copy of the project in a temporary folder, so that the state,
the kubeconfig and the manifests the tests edit are their own. The tests run in order:

  up -> every rendered object exists -> preview shows no changes -> one more grant previews
  exactly the expected updates -> suspending an agent removes its registration and access ->
  the policy pack inside the engine stops a static credential -> destroy leaves nothing behind.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.engine import (
    api_get,
    copy_project,
    inventory,
    ok,
    passport,
    passport_env,
    run,
    start_cluster,
    stop_cluster,
)
from tests.support.tools import require_tool

pytestmark = pytest.mark.e2e

ENGINE_TOOLS = ("pulumi", "etcd", "kube-apiserver", "kube-controller-manager")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    for tool in ENGINE_TOOLS:
        require_tool(tool)
    proj = copy_project(tmp_path_factory.mktemp("project"))
    try:
        start_cluster(proj)
        yield proj
    finally:
        stop_cluster(proj)


def _summary(stdout: str) -> dict[str, int]:
    """The `[passport] ... finished` summary: {op: count} (e.g. {"update": 2})."""
    tail = stdout[stdout.rindex("[passport]"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w[\w-]*): (\d+)$", tail, re.M)}


def _changed(stdout: str) -> set[tuple[str, str, int]]:
    """(op, type, count) of the summary's per-type lines."""
    tail = stdout[stdout.rindex("[passport]"):]
    op = ""
    found = set()
    for line in tail.splitlines():
        head = re.match(r"^(\w[\w-]*): \d+$", line)
        if head:
            op = head.group(1)
        typed = re.match(r"^\s+(\d+)\s+(\S+)$", line)
        if typed and op:
            found.add((op, typed.group(2), int(typed.group(1))))
    return found


def test_up_creates_every_rendered_object(project: Path) -> None:
    out = ok(passport(project, "up", "--stack", "local", "--yes"), "passport up")
    assert _summary(out).get("create", 0) > 50
    inv = inventory(project)
    assert inv["missing"] == []
    assert inv["counts"]["ClusterSPIFFEID"] >= 4
    assert inv["counts"]["Certificate"] == 2  # Linkerd's trust anchor and identity issuer


def test_a_second_preview_reports_no_changes(project: Path) -> None:
    out = ok(passport(project, "preview", "--stack", "local"), "passport preview")
    assert "no changes" in out[out.rindex("[passport]"):], out[-3000:]


def test_one_more_grant_previews_exactly_its_changes(project: Path) -> None:
    manifest = project / "agents" / "agent-cortex.yaml"
    original = manifest.read_text()
    doc = yaml.safe_load(original)
    doc["spec"]["grants"].append({
        "description": "Check payment status (e2e).",
        "http": {"service": "payments-api", "methods": ["GET"], "paths": [{"prefix": "/v1/payments/status"}]},
    })
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        out = ok(passport(project, "preview", "--stack", "local"), "passport preview with a new grant")
        assert _changed(out) == EXPECTED_FOR_NEW_GRANT, out[-3000:]
    finally:
        manifest.write_text(original)


# A grant on a gateway service: the gateway's OPA data (an immutable ConfigMap, so replaced, and
# the Deployment rolls to it), the mesh identities its Server admits, and the agent label that
# the gateway's policy objects carry only while a single agent calls it.
EXPECTED_FOR_NEW_GRANT = {
    ("replace", "kubernetes:core/v1:ConfigMap", 1),
    ("update", "kubernetes:apps/v1:Deployment", 1),
    ("update", "kubernetes:policy.linkerd.io/v1alpha1:MeshTLSAuthentication", 1),
    ("update", "kubernetes:policy.linkerd.io/v1alpha1:AuthorizationPolicy", 1),
}


def test_suspending_an_agent_removes_its_registration_and_access(project: Path) -> None:
    manifest = project / "agents" / "invoice-processor.yaml"
    original = manifest.read_text()
    doc = yaml.safe_load(original)
    doc["spec"]["suspended"] = True
    doc["spec"]["suspendedReason"] = "INC-4242 (e2e)"
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    identity = "invoice-processor.finance-agents.serviceaccount.identity.linkerd.cluster.local"
    spiffe_id = "spiffe://local.agentpassport.internal/ns/finance-agents/sa/invoice-processor"
    try:
        ok(passport(project, "up", "--stack", "local", "--yes"), "passport up with invoice-processor suspended")
        status, _ = api_get(project, "/apis/spire.spiffe.io/v1alpha1/clusterspiffeids/agent.invoice-processor")
        assert status == 404
        # No Server in the cluster admits its mesh identity any more (its only gateway may be gone
        # altogether), and no gateway's OPA data names its SPIFFE ID.
        status, authns = api_get(project, "/apis/policy.linkerd.io/v1alpha1/meshtlsauthentications")
        assert status == 200
        assert [a["metadata"]["name"] for a in authns["items"] if identity in a["spec"].get("identities", [])] == []
        status, configmaps = api_get(project, "/api/v1/configmaps")
        assert status == 200
        assert [c["metadata"]["name"] for c in configmaps["items"] if spiffe_id in json.dumps(c.get("data"))] == []
    finally:
        manifest.write_text(original)
    ok(passport(project, "up", "--stack", "local", "--yes"), "passport up after lifting the suspension")
    status, _ = api_get(project, "/apis/spire.spiffe.io/v1alpha1/clusterspiffeids/agent.invoice-processor")
    assert status == 200


VARIANT = """
import sys
from pathlib import Path

import pulumi_kubernetes as k8s

from components import engine
from components.program import main

root = Path(sys.argv[1])


def program() -> None:
    main(root)
    # a long-lived service-account token: exactly what the pack forbids
    k8s.core.v1.Secret(
        "agent-cortex-sa-token",
        metadata={"name": "agent-cortex-token", "namespace": "agents",
                  "annotations": {"kubernetes.io/service-account.name": "agent-cortex"}},
        type="kubernetes.io/service-account-token",
    )


sys.exit(engine.run("preview", "local", root=root, program=program))
"""


def test_the_policy_pack_inside_the_engine_stops_a_static_credential(project: Path) -> None:
    script = project / "variant.py"
    script.write_text(VARIANT)
    env = {**passport_env(), "KUBECONFIG": str(project / ".pulumi-local" / "cluster" / "kubeconfig")}
    result = run([sys.executable, str(script), str(project)], cwd=project, env=env)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "no-service-account-token-secrets" in result.stderr
    assert "agent-cortex-sa-token" in result.stderr


def test_destroy_leaves_nothing_behind(project: Path) -> None:
    ok(passport(project, "destroy", "--stack", "local", "--yes"), "passport destroy")
    inv = inventory(project)
    assert inv["present"] == []
