"""Vault, rendered purely: per-agent policy HCL, database SQL statements, and the plan the
:mod:`components.vault` component registers.

Nothing here imports Pulumi. :func:`plan_vault` turns a :class:`Platform` into a
:class:`VaultPlan` (auth roles, mounts, connections, database roles, policies) after checking
everything a manifest or the stack can get wrong, and raises one :class:`ManifestError` /
:class:`ConfigError` listing every problem, with file, line and field.

SQL is built only from the manifests' closed privilege vocabulary and quoted identifiers:
PostgreSQL identifiers in double quotes (``"`` doubled), MySQL identifiers in backticks
(`````` ` `````` doubled). Identifiers are additionally refused when they contain ``;`` (Vault's
database plugins split statements on it, which would defeat any quoting), ``{{``/``}}``
(Vault's statement templates) or control characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from components.config import NAMESPACE
from components.config.vault import DatabaseCluster
from components.durations import format_duration, seconds
from components.errors import ConfigError, ManifestError, Problem
from components.manifest.loader import format_loc
from components.manifest.models import DatabaseGrant, DatabasePrivilege
from components.platform_model import RESERVED_VAULT_PREFIXES, Platform, ResolvedAgent
from components.render.artifacts import Artifact
from components.shard import stack_scope

Engine = Literal["postgres", "mysql"]

DB_MOUNT_PREFIX = "db-"
CAPABILITY_ORDER = ("create", "read", "update", "patch", "delete", "list")
JWT_SUPPORTED_ALGS = ("ES256", "ES384", "RS256")
"""Algorithms SPIRE signs JWT-SVIDs with (EC P-256/P-384 or RSA keys); nothing else is accepted."""

POSTGRES_PRIVILEGES: Mapping[str, str] = {
    "select": "SELECT",
    "insert": "INSERT",
    "update": "UPDATE",
    "delete": "DELETE",
    "truncate": "TRUNCATE",
    "references": "REFERENCES",
    "trigger": "TRIGGER",
}
"""The closed vocabulary, as PostgreSQL table privileges. Anything else is refused."""

MYSQL_PRIVILEGES: Mapping[str, str] = {
    "select": "SELECT",
    "insert": "INSERT",
    "update": "UPDATE",
    "delete": "DELETE",
    "references": "REFERENCES",
    "trigger": "TRIGGER",
}
"""MySQL has no TRUNCATE privilege (TRUNCATE TABLE needs DROP, which is never granted)."""

POSTGRES_USERNAME_TEMPLATE = '{{ printf "v-%s-%s" (.RoleName | truncate 40) (random 20) | truncate 63 }}'
"""``v-<role>-<random>``: the role name starts with the agent's name, so a generated user names
the agent unless the role is longer than 40 characters (PostgreSQL allows 63 bytes)."""
MYSQL_USERNAME_TEMPLATE = '{{ printf "v-%s-%s" (.RoleName | truncate 21) (random 8) | truncate 32 }}'
"""MySQL user names are at most 32 characters: ``v-`` + 21 characters of the role + random, so only
agent names up to about 20 characters survive whole; the audit log's lease path names the role."""

ADMIN_MAX_OPEN_CONNECTIONS = 4
"""Connections Vault's pool keeps open to a database (per connection, on the active node)."""
ADMIN_CONNECTION_LIMIT = 2 * ADMIN_MAX_OPEN_CONNECTIONS
"""PostgreSQL ``CONNECTION LIMIT`` of Vault's admin role: the pool twice over (a failover's new
active node opens its pool before the old one's connections close), so a Vault bug or a runaway
plugin cannot take the database's ``max_connections`` from the applications."""

_VAULT_PATH_CHARS = re.compile(r"^[A-Za-z0-9_.+*/-]+$")
_UNSAFE_IDENTIFIER = re.compile(r"[\x00-\x1f\x7f;]|\{\{|\}\}")


class UnsafeIdentifier(ValueError):
    """An identifier that quoting alone cannot make safe in a Vault statement template."""


class UnknownPrivilege(ValueError):
    """A privilege outside the closed vocabulary (or one the engine does not have)."""


# --------------------------------------------------------------------------- SQL quoting


def _check_identifier(name: str, limit: int) -> None:
    if not name:
        raise UnsafeIdentifier("an identifier cannot be empty")
    if len(name.encode()) > limit:
        raise UnsafeIdentifier(f"identifier {name!r} is longer than {limit} bytes and would be truncated")
    found = _UNSAFE_IDENTIFIER.search(name)
    if found:
        raise UnsafeIdentifier(
            f"identifier {name!r} contains {found.group()!r}: Vault splits statements on ';' and "
            "expands '{{...}}' templates before the database sees them, so no quoting is safe"
        )


def quote_pg(name: str) -> str:
    """A PostgreSQL quoted identifier: ``"`` + name with ``"`` doubled + ``"``."""
    _check_identifier(name, 63)
    return '"' + name.replace('"', '""') + '"'


def quote_mysql(name: str) -> str:
    """A MySQL quoted identifier: a backtick + name with backticks doubled + a backtick."""
    _check_identifier(name, 64)
    return "`" + name.replace("`", "``") + "`"


def _privileges(allow: Sequence[str], engine: Engine) -> str:
    vocabulary = POSTGRES_PRIVILEGES if engine == "postgres" else MYSQL_PRIVILEGES
    out = []
    for p in allow:
        if p not in vocabulary:
            if p in POSTGRES_PRIVILEGES:
                raise UnknownPrivilege(
                    f"{p!r} is not a MySQL table privilege (TRUNCATE needs DROP, which Agent "
                    "Passport never grants); use delete"
                )
            known = ", ".join(POSTGRES_PRIVILEGES)
            raise UnknownPrivilege(f"{p!r} is not in the privilege vocabulary ({known})")
        out.append(vocabulary[p])
    if len(set(out)) != len(out):
        raise UnknownPrivilege(f"privileges listed twice: {', '.join(allow)}")
    return ", ".join(out)


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Statements:
    """Vault's templated statements for one database role."""

    creation: tuple[str, ...]
    revocation: tuple[str, ...]


def postgres_statements(
    database: str, privileges: Sequence[DatabasePrivilege], *, terminate_sessions: bool = True
) -> Statements:
    """CREATE ROLE with a password valid until the lease expires, then table grants.

    Revocation removes every privilege, terminates the user's sessions (DROP ROLE alone leaves
    them running) and drops the role.
    """
    user = '"{{name}}"'
    db = quote_pg(database)
    creation = [
        f"CREATE ROLE {user} WITH LOGIN NOINHERIT PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}';",
        f"GRANT CONNECT ON DATABASE {db} TO {user};",
    ]
    schemas: list[str] = []
    grants: list[str] = []
    for p in privileges:
        schema = quote_pg(p.schema_)
        if schema not in schemas:
            schemas.append(schema)
        privs = _privileges(p.allow, "postgres")
        if p.tables:
            targets = ", ".join(f"{schema}.{quote_pg(t)}" for t in p.tables)
            grants.append(f"GRANT {privs} ON TABLE {targets} TO {user};")
        else:
            grants.append(f"GRANT {privs} ON ALL TABLES IN SCHEMA {schema} TO {user};")
    creation += [f"GRANT USAGE ON SCHEMA {s} TO {user};" for s in schemas]
    creation += grants
    revocation = [f"REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA {s} FROM {user};" for s in schemas]
    revocation += [f"REVOKE USAGE ON SCHEMA {s} FROM {user};" for s in schemas]
    revocation.append(f"REVOKE CONNECT ON DATABASE {db} FROM {user};")
    if terminate_sessions:
        revocation.append("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';")
    revocation.append(f"DROP ROLE IF EXISTS {user};")
    return Statements(tuple(creation), tuple(revocation))


def mysql_statements(database: str, privileges: Sequence[DatabasePrivilege]) -> Statements:
    """CREATE USER and grants on ``database`` (MySQL's schema); revocation drops the user."""
    user = "'{{name}}'@'%'"
    db = quote_mysql(database)
    creation = [f"CREATE USER {user} IDENTIFIED BY '{{{{password}}}}';"]
    for p in privileges:
        privs = _privileges(p.allow, "mysql")
        if p.tables:
            creation += [f"GRANT {privs} ON {db}.{quote_mysql(t)} TO {user};" for t in p.tables]
        else:
            creation.append(f"GRANT {privs} ON {db}.* TO {user};")
    revocation = [f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {user};", f"DROP USER IF EXISTS {user};"]
    return Statements(tuple(creation), tuple(revocation))


def grant_statements(grant: DatabaseGrant, *, terminate_sessions: bool = True) -> Statements:
    if grant.engine == "postgres":
        return postgres_statements(grant.database, grant.privileges, terminate_sessions=terminate_sessions)
    if grant.engine == "mysql":
        return mysql_statements(grant.database, grant.privileges)
    raise UnknownPrivilege(f"unknown database engine {grant.engine!r}")


def root_rotation_statements(engine: Engine) -> tuple[str, ...]:
    """How Vault changes its admin's password (explicit rather than the plugin's default)."""
    if engine == "postgres":
        return ("ALTER ROLE \"{{username}}\" WITH PASSWORD '{{password}}';",)
    return ("ALTER USER '{{username}}'@'%' IDENTIFIED BY '{{password}}';",)


def connection_url(cluster: DatabaseCluster, database: str) -> str:
    """Vault's connection URL; ``{{username}}``/``{{password}}`` are filled in by Vault."""
    if cluster.engine == "postgres":
        sslmode = "require" if cluster.tls else "disable"
        return f"postgresql://{{{{username}}}}:{{{{password}}}}@{cluster.host}:{cluster.port}/{database}?sslmode={sslmode}"
    tls = "?tls=true" if cluster.tls else ""
    return f"{{{{username}}}}:{{{{password}}}}@tcp({cluster.host}:{cluster.port})/{tls}"


# --------------------------------------------------------------------------- policy HCL


def _hcl_path(path: str) -> str:
    if not _VAULT_PATH_CHARS.match(path):
        raise ValueError(f"Vault path {path!r} has characters a policy path cannot carry")
    return f'"{path}"'


def render_policy(
    agent: str, spiffe_id: str, source: str, paths: Mapping[str, Iterable[str]]
) -> str:
    """One agent's policy: exactly ``paths`` (path -> capabilities), nothing else.

    Deterministic: paths sorted, capabilities in Vault's canonical order, no timestamps.
    """
    lines = [
        f"# Vault policy of agent {agent} ({spiffe_id}).",
        f"# Generated by Agent Passport from {source}; do not edit by hand.",
        "# Allow-only: everything not listed here is denied.",
    ]
    for path in sorted(paths):
        caps = set(paths[path])
        unknown = caps - set(CAPABILITY_ORDER)
        if unknown:
            raise ValueError(f"capabilities {sorted(unknown)} are not allowed in an agent policy")
        ordered = ", ".join(f'"{c}"' for c in CAPABILITY_ORDER if c in caps)
        lines += ["", f"path {_hcl_path(path)} {{", f"  capabilities = [{ordered}]", "}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- Vault path globs


_SEG, _ANY = "\x00SEG", "\x00ANY"  # multi-character tokens never equal a path character


def _pattern_tokens(pattern: str) -> list[str]:
    """A policy path as tokens: single characters, SEG ('+', one segment) and ANY (trailing '*').

    SEG is read as "any run of characters without '/'" (Vault's '+' matches one whole
    segment; the looser reading can only find more overlaps, never fewer).
    """
    tokens: list[str] = []
    segments = pattern.split("/")
    for i, seg in enumerate(segments):
        if i:
            tokens.append("/")
        if seg == "+":
            tokens.append(_SEG)
            continue
        glob = i == len(segments) - 1 and seg.endswith("*")
        tokens.extend(seg[:-1] if glob else seg)
        if glob:
            tokens.append(_ANY)
    return tokens


def _closure(tokens: list[str], states: set[int]) -> set[int]:
    """SEG and ANY also match the empty string: a state before one also stands after it."""
    out = set(states)
    todo = list(states)
    while todo:
        s = todo.pop()
        if s < len(tokens) and tokens[s] in (_SEG, _ANY) and s + 1 not in out:
            out.add(s + 1)
            todo.append(s + 1)
    return out


def _run(pattern: str, text: str) -> tuple[list[str], set[int]]:
    """Simulate the pattern over ``text``; the states alive afterwards."""
    tokens = _pattern_tokens(pattern)
    states = _closure(tokens, {0})
    for char in text:
        step: set[int] = set()
        for s in states:
            if s == len(tokens):
                continue
            tok = tokens[s]
            if tok == _ANY or (tok == _SEG and char != "/"):
                step.add(s)
            elif tok == char:
                step.add(s + 1)
        states = _closure(tokens, step)
        if not states:
            break
    return tokens, states


def path_matches(pattern: str, path: str) -> bool:
    """Whether a Vault policy path pattern matches the concrete ``path``."""
    tokens, states = _run(pattern, path)
    return len(tokens) in states


def pattern_reaches(pattern: str, prefix: str) -> bool:
    """Whether a Vault policy path pattern matches some path that starts with ``prefix``."""
    return bool(_run(pattern, prefix)[1])


# --------------------------------------------------------------------------- the plan


def database_mount(cluster: str) -> str:
    """Mount path of a cluster's database secrets engine."""
    return f"{DB_MOUNT_PREFIX}{cluster}"


@dataclass(frozen=True)
class DatabaseRolePlan:
    """One Vault database role: one agent's grant on one database."""

    agent: str
    grant_index: int
    source: str
    cluster: str
    mount: str
    connection: str
    name: str
    engine: Engine
    database: str
    statements: Statements
    default_ttl: int
    max_ttl: int

    @property
    def creds_path(self) -> str:
        return f"{self.mount}/creds/{self.name}"


@dataclass(frozen=True)
class ConnectionPlan:
    """One Vault database connection (PostgreSQL: per database; MySQL: per cluster)."""

    cluster: str
    mount: str
    name: str
    engine: Engine
    connection_url: str
    username: str
    username_template: str
    password_secret: str
    password_field: str
    password_version: int
    root_rotation_statements: tuple[str, ...]
    rotate_root: bool
    allowed_roles: tuple[str, ...]


@dataclass(frozen=True)
class MountPlan:
    """A database secrets engine mount, one per configured cluster."""

    cluster: str
    path: str
    default_lease_ttl: int
    max_lease_ttl: int


@dataclass(frozen=True)
class AgentVaultPlan:
    """What one active agent gets in Vault: a login role, a policy and database roles."""

    agent: str
    spiffe_id: str
    source: str
    role: str
    policy_name: str
    policy_hcl: str
    audiences: tuple[str, ...]
    database_roles: tuple[DatabaseRolePlan, ...]


@dataclass(frozen=True)
class QuotaPlan:
    """A rate-limit quota (``sys/quotas/rate-limit/<name>``): ``rate`` requests per ``interval``
    seconds per client IP, on ``mount`` + ``/`` + ``suffix`` (``*``: a trailing glob)."""

    key: str
    """What it guards: ``login`` or ``creds-<cluster>`` (the Pulumi resource name ends with it)."""
    name: str
    mount: str
    """``auth/<auth mount>`` or the database mount, as the path starts."""
    suffix: str
    rate: float
    interval: int = 1

    @property
    def path(self) -> str:
        return f"{self.mount}/{self.suffix}"


QUOTA_PREFIX = "agent-passport-"


def plan_quotas(platform: Platform, auth_mount: str, mounts: Sequence[MountPlan]) -> tuple[QuotaPlan, ...]:
    """Rate-limit quotas on the login path and on every database mount's ``creds/*``, sized by
    :func:`components.capacity.quota_rates` from the stack's ``capacity`` section."""
    from components.capacity import quota_rates

    grants = max((sum(1 for _ in a.grants_of("database")) for a in platform.active_agents), default=1)
    rates = quota_rates(platform.config, grants)
    quotas = [QuotaPlan("login", f"{QUOTA_PREFIX}login", f"auth/{auth_mount}", "login", rates.login_per_s)]
    quotas += [QuotaPlan(f"creds-{m.cluster}", f"{QUOTA_PREFIX}creds-{m.cluster}", m.path, "creds/*",
                         rates.creds_per_s) for m in mounts]
    return tuple(quotas)


@dataclass(frozen=True)
class VaultPlan:
    """Everything :class:`components.vault.VaultIdentity` registers, decided purely."""

    auth: Literal["jwt", "cert"]
    auth_mount: str
    jwt_issuer: str
    jwks_url: str
    jwks_ca_pem: str | None
    token_ttl: int
    token_max_ttl: int
    token_type: Literal["service", "batch"]
    mounts: tuple[MountPlan, ...]
    connections: tuple[ConnectionPlan, ...]
    agents: tuple[AgentVaultPlan, ...]
    audit_type: Literal["file", "socket"]
    audit_options: tuple[tuple[str, str], ...]
    quotas: tuple[QuotaPlan, ...] = ()

    @property
    def database_roles(self) -> tuple[DatabaseRolePlan, ...]:
        return tuple(r for a in self.agents for r in a.database_roles)

    def connection(self, cluster: str, name: str) -> ConnectionPlan:
        return next(c for c in self.connections if c.cluster == cluster and c.name == name)


def _loc_problem(agent: ResolvedAgent, loc: tuple[str | int, ...], message: str) -> Problem:
    return Problem(agent.source.file, agent.source.line_of(loc), format_loc(loc), message)


def connection_name(cluster: DatabaseCluster, database: str) -> str:
    """PostgreSQL: the database (grants need a connection inside it); MySQL: ``server``."""
    return database if cluster.engine == "postgres" else "server"


def _connection_databases(platform: Platform, cluster_name: str, cluster: DatabaseCluster) -> list[str]:
    """Databases that get a connection: every agent's grants (suspended ones too, so a
    suspension never deletes a connection whose admin password Vault alone knows) + admins."""
    if cluster.engine == "mysql":
        return [cluster.database]
    names = set(cluster.admins)
    for a in platform.agents:
        for _, g in a.grants_of("database"):
            if g.cluster == cluster_name:
                names.add(g.database)
    return sorted(names)


def _config_problem(platform: Platform, field: str, message: str) -> Problem:
    return Problem(platform.config_file, None, f"{NAMESPACE}:vault.{field}", message)


def _plan_connections(
    platform: Platform, roles_by_connection: Mapping[tuple[str, str], list[str]]
) -> tuple[list[ConnectionPlan], list[Problem]]:
    cfg = platform.config.vault
    out: list[ConnectionPlan] = []
    problems: list[Problem] = []
    for cname in sorted(cfg.databases):
        cluster = cfg.databases[cname]
        shared: dict[str, list[str]] = {}
        for database in _connection_databases(platform, cname, cluster):
            name = connection_name(cluster, database)
            admin = cluster.admins.get(database)
            username = admin.username if admin else cluster.username
            secret = (admin.password_secret if admin else None) or cluster.password_secret
            field = (f"databases.{cname}.admins.{database}.passwordSecret" if admin and admin.password_secret
                     else f"databases.{cname}.passwordSecret")
            version = admin.password_version if admin else cluster.password_version
            shared.setdefault(username, []).append(database)
            template = POSTGRES_USERNAME_TEMPLATE if cluster.engine == "postgres" else MYSQL_USERNAME_TEMPLATE
            out.append(ConnectionPlan(
                cluster=cname,
                mount=database_mount(cname),
                name=name,
                engine=cluster.engine,
                connection_url=connection_url(cluster, database),
                username=username,
                username_template=template,
                password_secret=secret,
                password_field=f"{NAMESPACE}:vault.{field}",
                password_version=version,
                root_rotation_statements=root_rotation_statements(cluster.engine),
                rotate_root=cluster.rotate_root,
                allowed_roles=tuple(sorted(roles_by_connection.get((cname, name), []))),
            ))
        if cluster.rotate_root:
            for username, dbs in sorted(shared.items()):
                if len(dbs) > 1:
                    problems.append(_config_problem(
                        platform, f"databases.{cname}.admins",
                        f"databases {', '.join(dbs)} would share the admin user {username!r}; Vault "
                        "rotates its password from one connection and the others lose access. Give "
                        "each database its own admin (admins.<database>.username) or set rotateRoot: false"))
    return out, problems


def _vault_grant_problems(platform: Platform, creds: Mapping[str, tuple[str, str]]) -> list[Problem]:
    """Vault grant paths must not reach another agent's credentials or managed mounts."""
    problems: list[Problem] = []
    managed = [*RESERVED_VAULT_PREFIXES, *(f"{database_mount(c)}/" for c in platform.config.vault.databases)]
    for a in platform.active_agents:
        for i, g in a.grants_of("vault"):
            loc = ("spec", "grants", i, "vault", "path")
            hit = next(((p, owner) for p, (owner, _) in sorted(creds.items())
                        if owner != a.name and path_matches(g.path, p)), None)
            if hit is not None:
                path, owner = hit
                problems.append(_loc_problem(a, loc, (
                    f"{g.path!r} matches {path}, the database credentials of agent {owner!r} "
                    f"({creds[path][1]}); an agent may only read its own credentials")))
                continue
            reached = next((m for m in managed if pattern_reaches(g.path, m)), None)
            if reached is not None:
                what = "is a glob that reaches" if ("+" in g.path or "*" in g.path) else "is under"
                problems.append(_loc_problem(a, loc, (
                    f"{g.path!r} {what} {reached!r}, which Agent Passport manages (auth roles, "
                    "policies, database credentials); name the secret's own mount and path")))
    return problems


def _role_plan(
    platform: Platform, a: ResolvedAgent, i: int, g: DatabaseGrant, problems: list[Problem]
) -> DatabaseRolePlan | None:
    cluster = platform.config.vault.databases.get(g.cluster)
    base: tuple[str | int, ...] = ("spec", "grants", i, "database")
    if cluster is None:  # reported by build_platform
        return None
    try:
        stmts = grant_statements(g, terminate_sessions=cluster.terminate_sessions)
    except UnknownPrivilege as exc:
        loc = next(((*base, "privileges", j, "allow") for j, p in enumerate(g.privileges)
                    if any(x not in (POSTGRES_PRIVILEGES if g.engine == "postgres" else MYSQL_PRIVILEGES)
                           for x in p.allow)), (*base, "privileges"))
        problems.append(_loc_problem(a, loc, str(exc)))
        return None
    except UnsafeIdentifier as exc:
        problems.append(_loc_problem(a, base, str(exc)))
        return None
    if seconds(g.max_ttl) > seconds(cluster.max_lease_ttl):
        problems.append(_loc_problem(a, (*base, "maxTtl"), (
            f"{g.max_ttl} is above the maxLeaseTtl ({cluster.max_lease_ttl}) of cluster {g.cluster!r} "
            "in the stack config; Vault would cut the lease short. Shorten it")))
    limit = platform.config.limits.max_db_credential_ttl
    if seconds(g.max_ttl) > seconds(limit):  # build_platform reports it first; the plan never exceeds it
        problems.append(_loc_problem(a, (*base, "maxTtl"),
                                     f"{g.max_ttl} is above this stack's limit of {limit}"))
        return None
    return DatabaseRolePlan(
        agent=a.name,
        grant_index=i,
        source=f"{a.source.file} {format_loc(base)}",
        cluster=g.cluster,
        mount=database_mount(g.cluster),
        connection=connection_name(cluster, g.database),
        name=a.identity.database_role(g),
        engine=g.engine,
        database=g.database,
        statements=stmts,
        default_ttl=seconds(g.ttl),
        max_ttl=seconds(g.max_ttl),
    )


def _role_name_problems(platform: Platform) -> list[Problem]:
    """Vault role names must be unique per mount, across agents (suspended ones included)."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str], tuple[ResolvedAgent, int]] = {}
    for a in platform.agents:
        for i, g in a.grants_of("database"):
            key = (g.cluster, a.identity.database_role(g))
            first = seen.setdefault(key, (a, i))
            if first != (a, i):
                other, j = first
                where = (f"grant spec.grants[{j}] of the same agent; merge both into one grant"
                         if other is a else f"agent {other.name!r} ({other.source.file})")
                problems.append(_loc_problem(a, ("spec", "grants", i, "database"), (
                    f"its Vault database role {key[1]!r} on cluster {g.cluster!r} is also produced "
                    f"by {where}")))
    return problems


def _cert_auth_problems(platform: Platform) -> list[Problem]:
    """Cert auth names an agent's Vault entity after its X.509-SVID's Subject CN, which SPIRE
    sets to the entry's first DNS name: every active agent needs one, its own."""
    if platform.config.vault.auth != "cert":
        return []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for a in platform.active_agents:
        dns = a.manifest.spec.identity.dns_names
        loc: tuple[str | int, ...] = ("spec", "identity", "dnsNames")
        if not dns:
            problems.append(_loc_problem(a, loc, (
                "this stack's Vault uses cert auth (vault.auth: cert), which names the agent's entity "
                "after its X.509-SVID's Subject CN; SPIRE sets the CN to the first DNS name, and "
                "without one every login fails ('missing name in alias'). Add a DNS name that names "
                f"this agent, e.g. dnsNames: [{a.name}.{a.identity.namespace or 'agents'}.svc]")))
        elif dns[0] in seen:
            problems.append(_loc_problem(a, (*loc, 0), (
                f"{dns[0]!r} is also the first DNS name of agent {seen[dns[0]]!r}: under cert auth both "
                "would log in as one Vault entity. Give each agent its own first DNS name")))
        else:
            seen[dns[0]] = a.name
    return problems


def plan_vault(platform: Platform) -> VaultPlan:
    """The whole Vault layout for a platform, or one error listing every problem."""
    cfg = platform.config
    vcfg = cfg.vault
    manifest_problems: list[Problem] = _role_name_problems(platform) + _cert_auth_problems(platform)
    agents_roles: dict[str, list[DatabaseRolePlan]] = {}
    for a in platform.active_agents:
        plans = [_role_plan(platform, a, i, g, manifest_problems) for i, g in a.grants_of("database")]
        agents_roles[a.name] = [p for p in plans if p is not None]
    creds = {r.creds_path: (r.agent, r.source) for rs in agents_roles.values() for r in rs}
    # suspended agents' credential paths are protected too: they come back when unsuspended
    for a in platform.suspended_agents:
        for i, g in a.grants_of("database"):
            path = f"{database_mount(g.cluster)}/creds/{a.identity.database_role(g)}"
            creds[path] = (a.name, f"{a.source.file} spec.grants[{i}].database")
    manifest_problems += _vault_grant_problems(platform, creds)
    roles_by_connection: dict[tuple[str, str], list[str]] = {}
    for rs in agents_roles.values():
        for r in rs:
            roles_by_connection.setdefault((r.cluster, r.connection), []).append(r.name)
    connections, config_problems = _plan_connections(platform, roles_by_connection)
    if manifest_problems:
        raise ManifestError(manifest_problems)
    if config_problems:
        raise ConfigError(config_problems)

    agents: list[AgentVaultPlan] = []
    for a in platform.active_agents:
        roles = tuple(sorted(agents_roles[a.name], key=lambda r: (r.cluster, r.name)))
        paths: dict[str, set[str]] = {r.creds_path: {"read"} for r in roles}
        for _, g in a.grants_of("vault"):
            paths.setdefault(g.path, set()).update(g.capabilities)
        agents.append(AgentVaultPlan(
            agent=a.name,
            spiffe_id=a.identity.spiffe_id,
            source=a.source.file,
            role=a.identity.vault_role,
            policy_name=a.identity.vault_policy,
            policy_hcl=render_policy(a.name, a.identity.spiffe_id, a.source.file, paths),
            audiences=a.identity.jwt_audiences,
            database_roles=roles,
        ))
    mounts = tuple(
        MountPlan(name, database_mount(name), seconds(c.default_ttl), seconds(c.max_lease_ttl))
        for name, c in sorted(vcfg.databases.items())
    )
    audit = vcfg.audit
    options = ({"file_path": audit.path} if audit.type == "file"
               else {"address": str(audit.address), "socket_type": audit.socket_type})
    options |= {"format": "json", "log_raw": "false", "hmac_accessor": "true"}
    auth_mount = vcfg.jwt_mount if vcfg.auth == "jwt" else vcfg.cert_mount
    return VaultPlan(
        auth=vcfg.auth,
        auth_mount=auth_mount,
        jwt_issuer=cfg.jwt_issuer,
        jwks_url=vcfg.jwks_url or f"{cfg.jwt_issuer.rstrip('/')}/keys",
        jwks_ca_pem=vcfg.jwks_ca_pem,
        token_ttl=seconds(vcfg.token_ttl),
        token_max_ttl=seconds(vcfg.token_max_ttl),
        token_type=vcfg.token_type,
        mounts=mounts,
        connections=tuple(connections),
        agents=tuple(agents),
        audit_type=audit.type,
        audit_options=tuple(sorted(options.items())),
        quotas=plan_quotas(platform, auth_mount, mounts),
    )


# --------------------------------------------------------------------------- artifacts


def render_sql(role: DatabaseRolePlan) -> str:
    """The reviewable SQL file of one database role: creation then revocation statements."""
    lines = [
        f"-- Vault database role {role.mount}/roles/{role.name}",
        f"-- agent {role.agent}: {role.source}",
        f"-- {role.engine} database {role.database} via connection {role.mount}/config/{role.connection}; "
        f"default TTL {format_duration(role.default_ttl)}, max TTL {format_duration(role.max_ttl)}",
        "-- Vault fills in {{name}}, {{password}} and {{expiration}} for every credential it mints.",
        "",
        "-- creation_statements",
        *role.statements.creation,
        "",
        "-- revocation_statements",
        *role.statements.revocation,
    ]
    return "\n".join(lines) + "\n"


def admin_setup_sql(platform: Platform, conn: ConnectionPlan) -> str:
    """What the DBA runs once per PostgreSQL database (docs/vault.md): Vault's admin role with a
    ``CONNECTION LIMIT``, and the privileges it grants to generated users, with grant option."""
    database = conn.name
    schemas: set[str] = set()
    privileges: set[str] = set()
    for a in platform.agents:
        for _, g in a.grants_of("database"):
            if g.cluster == conn.cluster and g.database == database:
                for p in g.privileges:
                    schemas.add(p.schema_)
                    privileges.update(p.allow)
    admin, db = quote_pg(conn.username), quote_pg(database)
    schema_list = ", ".join(quote_pg(x) for x in sorted(schemas or {"public"}))
    privs = _privileges([p for p in POSTGRES_PRIVILEGES if p in privileges] or ["select"], "postgres")
    return "\n".join([
        f"-- Vault's admin for PostgreSQL database {database} on cluster {conn.cluster}: run once, as the DBA.",
        f"-- CONNECTION LIMIT {ADMIN_CONNECTION_LIMIT}: Vault's pool ({ADMIN_MAX_OPEN_CONNECTIONS}) twice over.",
        f"CREATE ROLE {admin} LOGIN CREATEROLE CONNECTION LIMIT {ADMIN_CONNECTION_LIMIT} "
        "PASSWORD '<initial password>';",
        f"-- an admin that exists already: ALTER ROLE {admin} CONNECTION LIMIT {ADMIN_CONNECTION_LIMIT};",
        f"GRANT pg_signal_backend TO {admin};",
        f"REVOKE CONNECT ON DATABASE {db} FROM PUBLIC;",
        f"GRANT CONNECT ON DATABASE {db} TO {admin} WITH GRANT OPTION;",
        f"GRANT USAGE ON SCHEMA {schema_list} TO {admin} WITH GRANT OPTION;",
        f"GRANT {privs} ON ALL TABLES IN SCHEMA {schema_list} TO {admin} WITH GRANT OPTION;",
    ]) + "\n"


def vault_artifacts(platform: Platform) -> Iterator[Artifact]:
    """``vault/policies/<agent>.hcl`` per active agent, ``vault/sql/<role>.sql`` per DB role and
    ``vault/sql/admin-<cluster>-<database>.sql`` per PostgreSQL connection (the DBA's setup)."""
    if not platform.config.subsystems.vault:
        return
    plan = plan_vault(platform)
    for conn in plan.connections:
        if conn.engine == "postgres":
            yield Artifact(f"vault/sql/admin-{conn.cluster}-{conn.name}.sql", admin_setup_sql(platform, conn))
    if stack_scope(platform.config) == "shared":
        return  # a base: policies and database roles are its shards'
    for agent in plan.agents:
        yield Artifact(f"vault/policies/{agent.agent}.hcl", agent.policy_hcl)
    for role in plan.database_roles:
        yield Artifact(f"vault/sql/{role.name}.sql", render_sql(role))


__all__ = [
    "ADMIN_CONNECTION_LIMIT",
    "ADMIN_MAX_OPEN_CONNECTIONS",
    "AgentVaultPlan",
    "ConnectionPlan",
    "DatabaseRolePlan",
    "MountPlan",
    "QuotaPlan",
    "Statements",
    "UnknownPrivilege",
    "UnsafeIdentifier",
    "VaultPlan",
    "admin_setup_sql",
    "database_mount",
    "grant_statements",
    "mysql_statements",
    "path_matches",
    "pattern_reaches",
    "plan_vault",
    "postgres_statements",
    "quote_mysql",
    "quote_pg",
    "render_policy",
    "render_sql",
    "vault_artifacts",
]
