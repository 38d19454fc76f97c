"""Synthetic fleets for benchmarks: N agent manifests shaped like the examples, deterministic."""

from __future__ import annotations

from pathlib import Path

AGENT = """\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata:
  name: agent-{i:05d}
  team: team-{team:03d}
  owner: team-{team:03d}@acme-corp.net
  labels:
    shard: s{shard}
spec:
  identity:
    x509SvidTtl: 15m
  platform:
    kubernetes:
      namespace: agents-{ns:02d}
      serviceAccount: agent-{i:05d}
  grants:
    - http:
        service: svc-{svc}
        methods: [POST]
        paths:
          - exact: /api/v1/action
        headers:
          x-tenant: t{team}
        timeWindows:
          - {{days: [mon, tue, wed, thu, fri], start: "08:00", end: "18:00", timezone: Europe/London}}
    - database:
        cluster: main
        engine: postgres
        database: app_{team:03d}
        privileges:
          - allow: [select]
            schema: public
            tables: [events]
"""

SERVICE = """\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Service
metadata:
  name: svc-{s}
  team: platform
spec:
  namespace: services
  port: 8080
  podSelector:
    app: svc-{s}
"""


def write_fleet(out: Path, agents: int, per_file: int = 100, services: int = 20) -> Path:
    """Write ``agents`` manifests (``per_file`` documents per file) and the services they call."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "services.yaml").write_text("---\n".join(SERVICE.format(s=s) for s in range(services)))
    for start in range(0, agents, per_file):
        docs = [AGENT.format(i=i, team=i % 250, ns=i % 25, shard=i % 8, svc=i % services)
                for i in range(start, min(start + per_file, agents))]
        (out / f"agents-{start // per_file:05d}.yaml").write_text("---\n".join(docs))
    return out
