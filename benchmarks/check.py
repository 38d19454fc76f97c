"""Benchmark: `passport check`'s policy evaluation on a generated 5,000-resource graph.

Prints the time every policy of the pack takes over the graph (resource policies once per
resource, stack policies once), split into resource and stack policies, and the violations
found (a clean synthetic stack should have none).

Usage:
    python benchmarks/check.py [--resources N]      synthetic graph shaped like the program's
    python benchmarks/check.py --program AGENTS     the real program under mocks on a synthetic
                                                    fleet of AGENTS agents (slower to build)

The synthetic graph uses the same resource types, names, labels and inputs the components
register per agent (registration, Linkerd authn + authorization, Vault DB role, login role,
policy) plus per-service gateways and OPA data, so every policy has work to do.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import SERVICES  # noqa: E402
from components.check import evaluate, policies  # noqa: E402
from components.mockrun import Captured, Graph  # noqa: E402

TD = "bench.agentpassport.internal"
PER_AGENT = 6


def _res(type_: str, name: str, inputs: dict[str, Any], parent: str = "", deps: list[str] | None = None) -> Captured:
    urn = f"urn:pulumi:bench::agent-passport::{type_}::{name}"
    return Captured(type=type_, name=name, urn=urn, parent=parent, custom=True, inputs=inputs,
                    dependencies=deps or [])


def synthetic_graph(resources: int) -> Graph:
    """Agents until the graph holds ``resources`` resources; deterministic."""
    out: list[Captured] = []
    agents: dict[str, Any] = {}
    shared = 2 * SERVICES + 4
    n = max(1, (resources - shared) // PER_AGENT)
    key = _res("tls:index/privateKey:PrivateKey", "bench-root-key", {"algorithm": "ECDSA", "ecdsaCurve": "P256"})
    root = _res("tls:index/selfSignedCert:SelfSignedCert", "bench-root", {
        "isCaCertificate": True, "validityPeriodHours": 87600, "allowedUses": ["cert_signing"]}, deps=[key.urn])
    issuer = _res("tls:index/locallySignedCert:LocallySignedCert", "bench-linkerd-issuer", {
        "isCaCertificate": True, "validityPeriodHours": 2160, "allowedUses": ["cert_signing"]}, deps=[root.urn])
    mount = _res("vault:index/mount:Mount", "bench-db-main", {
        "path": "db-main", "type": "database", "defaultLeaseTtlSeconds": 300, "maxLeaseTtlSeconds": 600})
    out += [key, root, issuer, mount]
    data: dict[int, dict[str, Any]] = {s: {} for s in range(SERVICES)}
    for i in range(n):
        name, svc = f"agent-{i:05d}", i % SERVICES
        ns, sa = f"agents-{i % 50:02d}", f"agent-{i:05d}"
        sid, mesh = f"spiffe://{TD}/ns/{ns}/sa/{sa}", f"{sa}.{ns}.serviceaccount.identity.linkerd.cluster.local"
        labels = {"agentpassport.dev/agent": name, "agentpassport.dev/service": f"svc-{svc}"}
        db = f"app_{i % 100:03d}"
        agents[name] = {
            "spiffeId": sid, "manifest": f"agents/{name}.yaml", "suspended": False, "meshIdentity": mesh,
            "subsystems": ["spire", "mesh", "authz", "vault"],
            "grants": [{"kind": "http", "service": f"svc-{svc}"},
                       {"kind": "database", "cluster": "main", "database": db}],
        }
        data[svc][sid] = {"methods": ["POST"], "paths": ["/api/v1/action"]}
        out += [
            _res("kubernetes:spire.spiffe.io/v1alpha1:ClusterSPIFFEID", f"bench-reg-{name}", {
                "apiVersion": "spire.spiffe.io/v1alpha1", "kind": "ClusterSPIFFEID",
                "metadata": {"name": name, "labels": labels},
                "spec": {"className": "agent-passport", "spiffeIDTemplate": sid, "ttl": "15m", "jwtTtl": "5m",
                         "workloadSelectorTemplates": [f"k8s:ns:{ns}", f"k8s:sa:{sa}"]}}),
            _res("kubernetes:policy.linkerd.io/v1alpha1:MeshTLSAuthentication", f"bench-authn-{name}", {
                "metadata": {"name": f"svc-{svc}-{name}", "namespace": "services", "labels": labels},
                "spec": {"identities": [mesh]}}),
            _res("kubernetes:policy.linkerd.io/v1alpha1:AuthorizationPolicy", f"bench-authz-{name}", {
                "metadata": {"name": f"svc-{svc}-{name}", "namespace": "services", "labels": labels},
                "spec": {"targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": f"gw-svc-{svc}"},
                         "requiredAuthenticationRefs": [{"group": "policy.linkerd.io",
                                                         "kind": "MeshTLSAuthentication",
                                                         "name": f"svc-{svc}-{name}"}]}}),
            _res("vault:database/secretBackendRole:SecretBackendRole", f"bench-dbrole-{name}", {
                "name": f"{name}-main-{db.replace('_', '-')}", "backend": "db-main", "dbName": "main",
                "creationStatements": ["CREATE ROLE ..."], "defaultTtl": 300, "maxTtl": 600}),
            _res("vault:jwt/authBackendRole:AuthBackendRole", f"bench-login-{name}", {
                "roleName": f"agent-{name}", "userClaim": "sub", "boundSubject": sid, "boundAudiences": ["vault"],
                "tokenTtl": 900, "tokenMaxTtl": 1800, "tokenPolicies": [f"agent-{name}"]}),
            _res("vault:index/policy:Policy", f"bench-policy-{name}", {
                "name": f"agent-{name}", "policy": f'path "db-main/creds/{name}-main" {{ capabilities = ["read"] }}'}),
        ]
    for s in range(SERVICES):
        gw = f"gw-svc-{s}"
        out += [
            _res("kubernetes:apps/v1:Deployment", f"bench-{gw}", {"metadata": {"name": gw}, "spec": {
                "selector": {"matchLabels": {"agentpassport.dev/gateway": f"svc-{s}"}},
                "template": {"metadata": {"labels": {"agentpassport.dev/gateway": f"svc-{s}"}}, "spec": {
                    "automountServiceAccountToken": False,
                    "volumes": [{"name": "spiffe", "csi": {"driver": "csi.spiffe.io", "readOnly": True}}],
                    "containers": [{"name": "envoy", "image": "envoyproxy/envoy:v1.36.2",
                                    "env": [{"name": "SERVICE", "value": f"svc-{s}"}]}]}}}}),
            _res("kubernetes:core/v1:ConfigMap", f"bench-{gw}-data", {
                "metadata": {"name": f"{gw}-data", "labels": {"agentpassport.dev/gateway": f"svc-{s}"}},
                "data": {"data.json": json.dumps({"service": f"svc-{s}", "agents": data[s]}, sort_keys=True)}}),
        ]
    bom = {"stack": "bench", "environment": "bench", "trustDomain": TD, "agents": agents}
    return Graph(resources=out, outputs={"identityBom": bom}, stack="bench")


def program_graph(agents: int) -> Graph:
    from benchmarks.synthetic import runtime_config, write_fleet
    from components.mockrun import run_program

    with tempfile.TemporaryDirectory() as tmp:
        config, secrets = runtime_config(write_fleet(Path(tmp), agents))
        return run_program("dev", ROOT, config, secrets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--resources", type=int, default=5000, help="size of the synthetic graph")
    parser.add_argument("--program", type=int, metavar="AGENTS", help="use the real program's graph instead")
    args = parser.parse_args()

    t0 = time.perf_counter()
    graph = program_graph(args.program) if args.program else synthetic_graph(args.resources)
    built = time.perf_counter() - t0
    source = f"the real program on {args.program} synthetic agents" if args.program else "a synthetic graph"
    agents = len(graph.outputs.get("identityBom", {}).get("agents", {}))
    print(f"graph: {len(graph.resources)} resources, {agents} agents ({source}, built in {built:.1f}s)")

    every = policies()
    config = {"resource-count-ceiling": {"maxResources": max(5000, len(graph.resources))}}
    resource_only = [p for p in every if type(p).__name__ == "ResourceValidationPolicy"]
    stack_only = [p for p in every if p not in resource_only]
    timings = {}
    for label, selected in (("resource policies", resource_only), ("stack policies", stack_only),
                            ("all policies", every)):
        t0 = time.perf_counter()
        found = evaluate(graph, config, selected)
        timings[label] = (time.perf_counter() - t0, found)
    for label, (seconds, found) in timings.items():
        count = len([p for p in every if p in (resource_only if label.startswith("resource") else
                                                stack_only if label.startswith("stack") else every)])
        print(f"{label:18s} {count:2d}: {seconds:6.2f}s  ({len(found)} violations)")
    seconds, found = timings["all policies"]
    print(f"check of {len(graph.resources)} resources: {seconds:.2f}s, "
          f"{seconds / len(graph.resources) * 1000:.2f} ms per resource")
    if found:
        print("violations:", dict(Counter(v.policy.name for v in found).most_common()))


if __name__ == "__main__":
    main()
