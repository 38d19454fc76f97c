"""Synthetic fleets for the benchmarks, and the stack config they run against (one place).

Every benchmark gets its fleet and config from here, so they all measure the same thing:

* :func:`write_fleet` writes N agent manifests shaped like the examples (deterministic):
  each agent has two HTTP grants on one of ``services`` services (a GET prefix with a
  required header, a time-windowed POST) and one database grant on one of ``databases``
  PostgreSQL databases of the dev stack's ``main`` cluster.
* :func:`overrides` is what the benchmarks change in the stack file: ``agentsDir`` (the
  fleet) and one Vault admin per synthetic database (``vault.databases.main.admins``), the
  setup docs/vault.md asks for, so root rotation stays on and the shared-admin check passes
  without being weakened. Optionally a ``shard`` section (e.g. a hash bucket).
* :func:`stack_config` (file values + overrides, validated like ``load_stack_config``) and
  :func:`runtime_config` (the same as the engine hands it to the program, for
  :func:`components.mockrun.run_program`).

Usage as a script (to reproduce ``passport capacity`` figures on a fleet):
    python benchmarks/synthetic.py AGENTS DIR
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from components.config import (  # noqa: E402
    NAMESPACE,
    StackConfig,
    build_stack_config,
    read_stack_file,
    stack_file,
    stack_runtime_config,
)

SERVICES = 20
"""Services the fleet calls (each gets one gateway)."""
DATABASES = 10
"""PostgreSQL databases of cluster ``main`` the fleet's grants use (each gets its own admin)."""
CLUSTER = "main"
"""The dev stack's database cluster."""

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
        methods: [GET]
        paths:
          - prefix: /api/v1/items
        headers:
          x-tenant: t{team}
    - http:
        service: svc-{svc}
        methods: [POST]
        paths:
          - exact: /api/v1/action
        timeWindows:
          - {{days: [mon, tue, wed, thu, fri], start: "08:00", end: "18:00", timezone: Europe/London}}
    - database:
        cluster: {cluster}
        engine: postgres
        database: {database}
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


def agent_name(i: int) -> str:
    return f"agent-{i:05d}"


def service_of(i: int, services: int = SERVICES) -> str:
    return f"svc-{i % services}"


def team_of(i: int) -> str:
    return f"t{i % 250}"


def database_names(databases: int = DATABASES) -> list[str]:
    """The synthetic databases, ``app_000`` ... (agent i uses ``app_{i % databases}``)."""
    return [f"app_{d:03d}" for d in range(databases)]


def write_fleet(out: Path, agents: int, per_file: int = 100, services: int = SERVICES,
                databases: int = DATABASES) -> Path:
    """Write ``agents`` manifests (``per_file`` documents per file) and the services they call."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "services.yaml").write_text("---\n".join(SERVICE.format(s=s) for s in range(services)))
    names = database_names(databases)
    for start in range(0, agents, per_file):
        docs = [AGENT.format(i=i, team=i % 250, ns=i % 25, shard=i % 8, svc=i % services, cluster=CLUSTER,
                             database=names[i % databases])
                for i in range(start, min(start + per_file, agents))]
        (out / f"agents-{start // per_file:05d}.yaml").write_text("---\n".join(docs))
    return out


GRANT_AGENT = """\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Agent
metadata:
  name: many-grants
  team: platform
  owner: platform@acme-corp.net
spec:
  platform:
    kubernetes:
      namespace: agents-00
      serviceAccount: many-grants
  grants:
"""

GRANT_KINDS = (
    # a gateway service: exact path, one method
    "    - http: {{service: svc-0, methods: [GET], paths: [{{exact: /api/v1/items/{i}}}]}}\n",
    # a gateway service: a prefix with a required header
    "    - http: {{service: svc-1, methods: [GET, POST], paths: [{{prefix: /api/v2/items/{i}}}], "
    "headers: {{x-tenant: t{i}}}}}\n",
    # a gateway service: a time window
    "    - http: {{service: svc-2, methods: [PUT], paths: [{{exact: /api/v3/items/{i}}}], "
    "timeWindows: [{{days: [mon, tue, wed, thu, fri], start: '08:00', end: '18:00', timezone: Europe/London}}]}}\n",
    # a service without a gateway (Linkerd routes only)
    "    - http: {{service: direct-0, methods: [GET], paths: [{{exact: /direct/{i}}}]}}\n",
    # an extra Vault path
    "    - vault: {{path: secret/data/many-grants/{i}, capabilities: [read]}}\n",
)

DIRECT_SERVICE = """\
apiVersion: passport.agentpassport.dev/v1alpha1
kind: Service
metadata:
  name: direct-0
  team: platform
spec:
  namespace: direct
  port: 8080
  gateway: false
  podSelector:
    app: direct-0
"""


def write_grant_manifest(out: Path, grants: int, services: int = SERVICES) -> Path:
    """One agent with ``grants`` grants cycling through :data:`GRANT_KINDS` (http grants on three
    gateway services and one without a gateway, Vault paths), plus one database grant, and the
    services they call. Every grant is distinct."""
    out.mkdir(parents=True, exist_ok=True)
    docs = [SERVICE.format(s=s) for s in range(services)] + [DIRECT_SERVICE]
    (out / "services.yaml").write_text("---\n".join(docs))
    body = [GRANT_AGENT]
    body.append(f"    - database: {{cluster: {CLUSTER}, engine: postgres, database: {database_names()[0]}, "
                "privileges: [{allow: [select], tables: [events]}]}\n")
    body += [GRANT_KINDS[i % len(GRANT_KINDS)].format(i=i) for i in range(grants - 1)]
    (out / "many-grants.yaml").write_text("".join(body))
    return out


def hash_shard(count: int, index: int, base_stack: str = "acme/agent-passport/dev-base") -> dict[str, Any]:
    """A ``shard`` section selecting one stable hash bucket of the fleet."""
    return {"role": "shard", "baseStack": base_stack, "select": {"hashBuckets": {"count": count, "index": index}}}


def overrides(values: Mapping[str, Any], fleet: Path, databases: int = DATABASES,
              shard: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The keys (namespace stripped, as in the stack file) the benchmarks set on top of ``values``.

    Adds ``vault.databases.main.admins.<db> = {username: vault_<db>}`` for each synthetic
    database next to the admins the file already declares; nothing else in the Vault section
    changes (root rotation stays on).
    """
    vault = copy.deepcopy(dict(values.get("vault") or {}))
    cluster = vault.get("databases", {}).get(CLUSTER)
    if cluster is None:
        raise SystemExit(f"the stack has no vault.databases.{CLUSTER} cluster for the synthetic grants")
    admins = cluster.setdefault("admins", {})
    for db in database_names(databases):
        admins.setdefault(db, {"username": f"vault_{db}"})
    out: dict[str, Any] = {"agentsDir": str(fleet), "vault": vault}
    if shard is not None:
        out["shard"] = dict(shard)
    return out


def stack_config(fleet: Path, stack: str = "dev", databases: int = DATABASES,
                 shard: Mapping[str, Any] | None = None) -> StackConfig:
    """``stacks/Pulumi.<stack>.yaml`` + :func:`overrides`, validated as ``load_stack_config`` does."""
    path = stack_file(stack, ROOT)
    values, lines, secrets = read_stack_file(path)
    values.update(overrides(values, fleet, databases, shard))
    values.setdefault("environment", stack)
    return build_stack_config(values, f"stacks/Pulumi.{stack}.yaml", lines, secrets)


def runtime_config(fleet: Path, stack: str = "dev", databases: int = DATABASES,
                   shard: Mapping[str, Any] | None = None) -> tuple[dict[str, str], list[str]]:
    """The same config as the engine hands it to the program (``{ns:key: JSON text}``, secret keys)."""
    path = stack_file(stack, ROOT)
    config, secrets = stack_runtime_config(path)
    values, _, _ = read_stack_file(path)
    for key, value in overrides(values, fleet, databases, shard).items():
        config[f"{NAMESPACE}:{key}"] = value if isinstance(value, str) else json.dumps(value)
    return config, secrets


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python benchmarks/synthetic.py AGENTS DIR")
    out = write_fleet(Path(argv[1]), int(argv[0]))
    print(f"wrote {argv[0]} agents to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
