"""``passport ca status`` reading the deployed certificates from where they really are:

* the dev stack's Pulumi state in the real file backend, through the real Pulumi CLI with the
  local passphrase (the same backend and passphrase ``passport up`` uses); the state holds the
  CA resources as components/ca.py creates them, imported with ``pulumi stack import``;
* Linkerd's trust anchor and issuer of the local stack (``mesh.anchorCustody: cert-manager``)
  from Secrets in cert-manager's format on a real kube-apiserver (scripts/local-cluster), read
  with kubectl through the kubeconfig the stack names.
"""

from __future__ import annotations

import json
import shutil
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from components.ca_lifecycle import iso_time
from components.engine import LOCAL_PASSPHRASE
from tests.support.engine import (
    PASSPORT,
    cluster_dir,
    copy_project,
    passport_env,
    run,
    start_cluster,
    stop_cluster,
)
from tests.support.tools import ROOT, require_tool
from tests.unit.test_ca_deployed import (
    TLS_SELF,
    TLS_SIGNED,
    component,
    make_ca,
    pem,
    ski,
    tls_secret,
)

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)
PROVIDER = "urn:pulumi:dev::agent-passport::pulumi:providers:tls::default_5_2_0"
PROVIDER_ID = "00000000-0000-0000-0000-000000000001"


def status(project: Path, stack: str) -> dict[str, Any]:
    done = run([*PASSPORT, "ca", "status", "--stack", stack, "--format", "json", "--root", str(project)],
               cwd=project, env=passport_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_the_dev_stack_roots_come_from_its_real_pulumi_state(tmp_path: Path) -> None:
    pulumi = str(require_tool("pulumi"))
    project = copy_project(tmp_path / "project")
    shutil.copy2(ROOT / "stacks" / "Pulumi.dev.yaml", project / "stacks" / "Pulumi.dev.yaml")
    backend = project / ".pulumi-local" / "state"

    # not deployed yet: one note, and the rest of the status
    doc = status(project, "dev")
    assert doc["notes"] == [f"Pulumi state of stack dev not read: no stack 'dev' in {backend.as_uri()} (not "
                            "deployed yet: `passport up --stack dev`)"]
    assert {"root", "intermediate", "spire-x509"} <= {r["layer"] for r in doc["authorities"]}

    env = {**passport_env(), "PULUMI_BACKEND_URL": backend.as_uri(), "PULUMI_CONFIG_PASSPHRASE": LOCAL_PASSPHRASE,
           "PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DIY_BACKEND_NO_LEGACY_WARNING": "true"}
    done = run([pulumi, "stack", "init", "dev", "--non-interactive"], cwd=project, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    exported = run([pulumi, "stack", "export", "--stack", "dev"], cwd=project, env=env, timeout=120)
    assert exported.returncode == 0, exported.stderr
    deployment = json.loads(exported.stdout)

    root, root_key = make_ca("Acme Root CA (dev.agentpassport.internal)", start=NOW - timedelta(days=3),
                             hours=3650 * 24)
    inter, _ = make_ca("Acme SPIRE Upstream CA", start=NOW - timedelta(days=3), hours=365 * 24,
                       signer=(root, root_key))
    trust = component("agentpassport:trust:TrustDomain", "trust")

    def cert(typ: str, name: str, text: str) -> dict[str, Any]:
        return {"urn": f"urn:pulumi:dev::agent-passport::{trust['type']}${typ}::{name}", "custom": True,
                "id": name, "type": typ, "parent": trust["urn"], "provider": f"{PROVIDER}::{PROVIDER_ID}",
                "inputs": {}, "outputs": {"certPem": text}}

    deployment["deployment"]["resources"] = [
        {"urn": "urn:pulumi:dev::agent-passport::pulumi:pulumi:Stack::agent-passport-dev", "custom": False,
         "type": "pulumi:pulumi:Stack"},
        {"urn": PROVIDER, "custom": True, "id": PROVIDER_ID, "type": "pulumi:providers:tls",
         "inputs": {"version": "5.2.0"}, "outputs": {"version": "5.2.0"}},
        trust, cert(TLS_SELF, "trust-root", pem(root)), cert(TLS_SIGNED, "trust-intermediate", pem(inter)),
    ]
    (tmp_path / "state.json").write_text(json.dumps(deployment))
    done = run([pulumi, "stack", "import", "--stack", "dev", "--file", str(tmp_path / "state.json")],
               cwd=project, env=env, timeout=120)
    assert done.returncode == 0, done.stderr

    doc = status(project, "dev")
    rows = {r["layer"]: r for r in doc["authorities"]}
    assert rows["root"]["id"] == ski(root) and rows["intermediate"]["id"] == ski(inter)
    assert rows["root"]["not_after"] == iso_time(root.not_valid_after_utc)
    assert rows["intermediate"]["next_date"] == iso_time(inter.not_valid_after_utc - timedelta(hours=720))
    assert rows["intermediate"]["custody"] == "pulumi-tls (Pulumi state, encrypted)"
    assert doc["notes"] == []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    for tool in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl"):
        require_tool(tool)
    project = copy_project(tmp_path_factory.mktemp("project"))
    try:
        start_cluster(project)
        yield project
    finally:
        stop_cluster(project)


def api(project: Path, method: str, path: str, body: dict[str, Any], content_type: str = "application/json") -> int:
    c = cluster_dir(project)
    port = json.loads((c / "ports.json").read_text())["apiserver"]
    token = (c / "pki" / "admin.token").read_text().strip()
    ctx = ssl.create_default_context(cafile=str(c / "pki" / "ca.crt"))
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:  # noqa: S310 - https on loopback
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_linkerd_anchor_and_issuer_dates_come_from_cert_managers_secrets(cluster: Path) -> None:
    # before cert-manager has issued anything: notes, and SPIRE's rows all the same
    doc = status(cluster, "local")
    assert doc["notes"][0].startswith("cluster: Secret cert-manager/linkerd-trust-anchor-")
    assert "NotFound" in doc["notes"][0] or "not found" in doc["notes"][0]
    assert {"spire-x509", "spire-jwt", "linkerd-anchor"} <= {r["layer"] for r in doc["authorities"]}

    from components.platform_model import load_platform
    from components.render.mesh.identity import linkerd_identity_profile

    profile = linkerd_identity_profile(load_platform("local").config)
    anchor, anchor_key = make_ca(profile.anchor_common_name, ou=profile.anchor_unit(profile.signing_anchor),
                                 start=NOW - timedelta(days=10), hours=profile.anchor_validity_hours)
    issuer, _ = make_ca(profile.issuer_common_name, start=NOW - timedelta(hours=1), hours=profile.issuer_validity_hours,
                        signer=(anchor, anchor_key))
    ns = profile.control_plane_namespace
    assert api(cluster, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": ns}}) in (201, 409)
    for namespace, name, body in ((profile.cert_manager_namespace, f"linkerd-trust-anchor-{profile.signing_anchor}",
                                   tls_secret(anchor, anchor)),
                                  (ns, "linkerd-identity-issuer", tls_secret(issuer, anchor))):
        secret = {**body, "metadata": {**body["metadata"], "name": name, "namespace": namespace}}
        assert api(cluster, "POST", f"/api/v1/namespaces/{namespace}/secrets", secret) == 201

    doc = status(cluster, "local")
    assert doc["notes"] == []
    rows = {r["layer"]: r for r in doc["authorities"] if r["not_after"]}
    assert rows["linkerd-anchor"]["id"] == f"{profile.signing_anchor} {ski(anchor)}"
    assert rows["linkerd-anchor"]["not_after"] == iso_time(anchor.not_valid_after_utc)
    life = anchor.not_valid_after_utc - anchor.not_valid_before_utc
    assert rows["linkerd-anchor"]["next_date"] == iso_time(anchor.not_valid_after_utc - life / 3)
    assert rows["linkerd-issuer"]["next_date"] == iso_time(
        issuer.not_valid_after_utc - timedelta(hours=profile.issuer_early_renewal_hours))

    # cert-manager's Certificate (the stack's rendered one) with its own renewal plan in its status
    from components.render.mesh.identity import cert_manager_identity_objects

    rendered = next(o for o in cert_manager_identity_objects(profile)
                    if o["kind"] == "Certificate" and o["metadata"]["name"] == "linkerd-identity-issuer")
    base = f"/apis/cert-manager.io/v1/namespaces/{ns}/certificates"
    assert api(cluster, "POST", base, rendered) == 201
    renewal = (NOW + timedelta(days=5)).replace(microsecond=0)
    status_patch = {"status": {"renewalTime": iso_time(renewal), "conditions": [
        {"type": "Ready", "status": "False", "reason": "Issuing", "message": "Renewing certificate as renewal was "
         "scheduled at " + str(iso_time(renewal)), "lastTransitionTime": iso_time(NOW)}]}}
    assert api(cluster, "PATCH", f"{base}/linkerd-identity-issuer/status", status_patch,
               "application/merge-patch+json") == 200
    doc = status(cluster, "local")
    rows = {r["layer"]: r for r in doc["authorities"] if r["not_after"]}
    assert rows["linkerd-issuer"]["next_date"] == iso_time(renewal)
    assert rows["linkerd-issuer"]["state"].endswith("; Certificate not Ready: Renewing certificate as renewal was "
                                                    f"scheduled at {iso_time(renewal)}")
