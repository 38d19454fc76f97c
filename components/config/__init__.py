"""Typed stack configuration: the ``agent-passport:*`` keys of ``stacks/Pulumi.<env>.yaml``.

The same model is built from the stack file (CLI, offline) and from ``pulumi.Config`` (the
program), so both see identical settings. Secret values are never part of the model: fields
of type :data:`SecretRef` name a secret config key that components read with
``pulumi.Config().require_secret``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from components.config.audit import AuditConfig
from components.config.authz import AuthzConfig
from components.config.aws import AwsConfig
from components.config.base import Section
from components.config.capacity import CapacityConfig
from components.config.ci import CiConfig
from components.config.kubernetes import KubernetesTarget
from components.config.limits import Limits
from components.config.mesh import STRICT_INBOUND_POLICIES, MeshConfig
from components.config.observe import ObserveConfig
from components.config.shard import ShardConfig
from components.config.spire import SpireConfig, ca_rotation_problem
from components.config.subsystems import Subsystems
from components.config.trust import TrustConfig
from components.config.vault import MAX_TOKEN_TTL_SECONDS, VaultConfig
from components.config.windows import WindowsConfig
from components.durations import format_duration, seconds
from components.errors import ConfigError, ManifestError, Problem

NAMESPACE = "agent-passport"
STACKS_DIR = Path("stacks")

TRUST_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,253}[a-z0-9])?$")
PLACEHOLDER_DOMAINS = ("example.org", "example.com", "example.net", "example", "test", "invalid",
                       "localhost", "local", "changeme", "todo")


def is_placeholder_domain(domain: str) -> bool:
    """example.org, foo.example.com, changeme, ... are not real trust domains."""
    parts = domain.lower().split(".")
    return any(
        ".".join(parts[i:]) in PLACEHOLDER_DOMAINS for i in range(len(parts))
    ) or any(p in {"changeme", "todo", "placeholder"} for p in parts)


class StackConfig(Section):
    """Everything one stack (environment or shard) configures."""

    environment: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Environment this stack deploys (dev, staging, prod, ...); agents list the "
        "environments they exist in. Shards of one environment share it.",
    )
    trust_domain: str = Field(
        description="SPIFFE trust domain (e.g. prod.acme.internal): lowercase letters, digits, "
        "'.', '-', '_'; no scheme, no port, no path."
    )
    strict: bool | None = Field(
        default=None,
        description="Production guard rails: refuse placeholder values (example.org), the tls "
        "upstream, unauthenticated mesh defaults, single-replica SPIRE. Default: on for every "
        "environment except dev.",
    )
    agents_dir: str = Field(default="agents", description="Directory holding the agent and service manifests.")
    subsystems: Subsystems = Field(default_factory=Subsystems, description="Subsystems deployed.")
    trust: TrustConfig = Field(default_factory=TrustConfig, description="CA hierarchy.")
    spire: SpireConfig = Field(default_factory=SpireConfig, description="SPIRE.")
    mesh: MeshConfig = Field(default_factory=MeshConfig, description="Linkerd.")
    authz: AuthzConfig = Field(default_factory=AuthzConfig, description="Envoy + OPA.")
    vault: VaultConfig = Field(default_factory=VaultConfig, description="Vault.")
    windows: WindowsConfig = Field(default_factory=WindowsConfig, description="Windows gMSA.")
    aws: AwsConfig = Field(default_factory=AwsConfig, description="AWS.")
    kubernetes: KubernetesTarget = Field(default_factory=KubernetesTarget, description="Kubernetes target.")
    limits: Limits = Field(default_factory=Limits, description="Lifetime ceilings.")
    observe: ObserveConfig = Field(default_factory=ObserveConfig, description="Monitoring, alerts, log pipeline.")
    audit: AuditConfig = Field(default_factory=AuditConfig,
                               description="Audit logs into WORM storage (subsystems.audit; docs/audit.md).")
    shard: ShardConfig = Field(default_factory=ShardConfig, description="Splitting an environment across stacks.")
    ci: CiConfig = Field(default_factory=CiConfig,
                         description="The pipeline's own credential-free login (off by default).")
    capacity: CapacityConfig = Field(default_factory=CapacityConfig,
                                     description="Fleet size and server coefficients (passport capacity).")

    @property
    def is_strict(self) -> bool:
        return self.strict if self.strict is not None else self.environment != "dev"

    @property
    def spire_cluster_name(self) -> str:
        return self.spire.cluster_name or self.environment

    @property
    def jwt_issuer(self) -> str:
        return self.spire.jwt_issuer or f"https://oidc-discovery.{self.trust_domain}"

    @field_validator("trust_domain")
    @classmethod
    def _trust_domain(cls, td: str) -> str:
        if not TRUST_DOMAIN_RE.match(td) or ".." in td:
            raise ValueError(
                f"{td!r} is not a SPIFFE trust domain: use lowercase letters, "
                "digits, '.', '-' and '_' only, without scheme, port or path"
            )
        return td


def strict_problems(cfg: StackConfig, file: str, lines: Mapping[tuple[str | int, ...], int]) -> list[Problem]:
    """Guard rails for strict (staging/prod) stacks."""
    if not cfg.is_strict:
        return []

    def p(key: str, sub: tuple[str, ...], message: str) -> Problem:
        loc = ("config", f"{NAMESPACE}:{key}", *sub)
        line = next((lines[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in lines), None)
        field = ".".join([f"{NAMESPACE}:{key}", *sub])
        return Problem(file, line, field, message)

    out = []
    if is_placeholder_domain(cfg.trust_domain):
        out.append(p("trustDomain", (),
                     f"{cfg.trust_domain!r} is a placeholder; strict stacks need the real trust domain"))
    if cfg.trust.upstream == "tls":
        out.append(p("trust", ("upstream",),
                     "tls keeps the CA key in Pulumi state; strict stacks use aws-pca or vault-pki"))
    if cfg.mesh.default_inbound_policy not in STRICT_INBOUND_POLICIES:
        out.append(p("mesh", ("defaultInboundPolicy",),
                     f"{cfg.mesh.default_inbound_policy!r} lets unauthenticated or cluster-wide traffic in; "
                     f"strict stacks build mesh namespaces only with {' or '.join(STRICT_INBOUND_POLICIES)}"))
    if cfg.subsystems.spire and (cfg.spire.replicas < 2 or cfg.spire.datastore != "postgres"):
        out.append(p("spire", ("replicas",),
                     "strict stacks run SPIRE highly available: datastore postgres and replicas >= 2"))
    if cfg.subsystems.spire and cfg.spire.datastore == "postgres" and cfg.spire.datastore_connection_secret is None:
        out.append(p("spire", ("datastoreConnectionSecret",),
                     "postgres needs a secret config key with the connection string"))
    if cfg.subsystems.vault and not cfg.vault.address.startswith("https://"):
        out.append(p("vault", ("address",),
                     f"{cfg.vault.address!r} is not https: operator tokens and database admin passwords would "
                     "cross the network in clear; use https://"))
    for name, db in cfg.vault.databases.items() if cfg.subsystems.vault else ():
        if not db.tls:
            out.append(p("vault", ("databases", name, "tls"),
                         "strict stacks require TLS between Vault and the database (tls: true)"))
    if cfg.subsystems.windows and is_placeholder_domain(cfg.windows.domain):
        out.append(p("windows", ("domain",), f"{cfg.windows.domain!r} is a placeholder AD domain"))
    return out


def lifetime_problems(cfg: StackConfig, file: str) -> list[Problem]:
    """Lifetimes that contradict each other inside the stack config itself."""
    out = []
    if seconds(cfg.trust.intermediate_lifetime) >= seconds(cfg.trust.root_lifetime):
        out.append(Problem(file, None, f"{NAMESPACE}:trust.intermediateLifetime",
                           "must be shorter than rootLifetime"))
    if seconds(cfg.spire.ca_ttl) >= seconds(cfg.trust.intermediate_lifetime):
        out.append(Problem(file, None, f"{NAMESPACE}:spire.caTtl",
                           "SPIRE's CA must expire before the intermediate that signs it"))
    if seconds(cfg.mesh.issuer_lifetime) >= seconds(cfg.mesh.trust_anchor_lifetime):
        out.append(Problem(file, None, f"{NAMESPACE}:mesh.issuerLifetime",
                           "the Linkerd issuer must expire before its trust anchor"))
    rotation = ca_rotation_problem(cfg.spire.default_x509_svid_ttl, cfg.spire.ca_ttl)
    if rotation is not None:
        out.append(Problem(file, None, f"{NAMESPACE}:spire.defaultX509SvidTtl", rotation))
    bucket_days = cfg.aws.audit_bucket.retention_days
    if bucket_days is not None and bucket_days != cfg.audit.retention_days:
        out.append(Problem(file, None, f"{NAMESPACE}:aws.auditBucket.retentionDays",
                           f"{bucket_days} days disagrees with audit.retention ({cfg.audit.retention}); "
                           "set the retention once, in audit.retention"))
    if seconds(cfg.vault.token_ttl) > MAX_TOKEN_TTL_SECONDS:
        out.append(Problem(file, None, f"{NAMESPACE}:vault.tokenTtl",
                           f"Vault tokens for agents live at most {format_duration(MAX_TOKEN_TTL_SECONDS)}"))
    if seconds(cfg.vault.token_ttl) > seconds(cfg.vault.token_max_ttl):
        out.append(Problem(file, None, f"{NAMESPACE}:vault.tokenTtl", "is longer than tokenMaxTtl"))
    for name, db in cfg.vault.databases.items():
        if seconds(db.max_lease_ttl) > seconds(cfg.limits.max_db_credential_ttl):
            out.append(Problem(file, None, f"{NAMESPACE}:vault.databases.{name}.maxLeaseTtl",
                               f"{db.max_lease_ttl} is above limits.maxDbCredentialTtl "
                               f"({cfg.limits.max_db_credential_ttl})"))
    return out


def build_stack_config(
    values: Mapping[str, Any], file: str, lines: Mapping[tuple[str | int, ...], int] | None = None,
    secret_keys: frozenset[str] = frozenset(),
) -> StackConfig:
    """Validate ``{camelKey: value}`` (namespace stripped) into a StackConfig or raise ConfigError."""
    from components.manifest.loader import validation_problems

    line_map = dict(lines or {})
    data = {k: v for k, v in values.items() if k not in secret_keys}
    try:
        cfg = StackConfig.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, StackConfig, file, 1, line_map, prefix=())
        # present keys with their namespace, as the user wrote them
        raise ConfigError(
            Problem(p.file, _line(line_map, p.field), f"{NAMESPACE}:{p.field}", p.message) for p in problems
        ) from None
    problems = strict_problems(cfg, file, line_map) + lifetime_problems(cfg, file)
    for ref_field, ref in _secret_refs(cfg):
        if secret_keys and ref not in secret_keys:
            problems.append(Problem(file, None, f"{NAMESPACE}:{ref_field}",
                                    f"names secret {ref!r}, which is not set; "
                                    f"run `pulumi config set --secret {ref} ...`"))
    if problems:
        raise ConfigError(problems)
    return cfg


def _line(lines: Mapping[tuple[str | int, ...], int], field: str) -> int | None:
    head = field.split(".", 1)[0].split("[", 1)[0]
    return lines.get(("config", f"{NAMESPACE}:{head}"))


def _secret_refs(cfg: StackConfig) -> list[tuple[str, str]]:
    refs = []
    if cfg.spire.datastore_connection_secret:
        refs.append(("spire.datastoreConnectionSecret", cfg.spire.datastore_connection_secret))
    if cfg.audit.pseudonym_key_secret:
        refs.append(("audit.pseudonymKeySecret", cfg.audit.pseudonym_key_secret))
    refs.extend((f"vault.databases.{n}.passwordSecret", d.password_secret) for n, d in cfg.vault.databases.items())
    refs.extend((f"vault.databases.{n}.admins.{db}.passwordSecret", a.password_secret)
                for n, d in cfg.vault.databases.items() for db, a in d.admins.items() if a.password_secret)
    return refs


def stack_file(stack: str, root: Path | None = None) -> Path:
    """A stack's config file: ``stacks/Pulumi.<stack>.yaml``, as the user names it (relative to the
    project), or under ``root``. The one place that spells the name."""
    path = STACKS_DIR / f"Pulumi.{stack}.yaml"
    return path if root is None else root / path


def read_stack_file(path: Path) -> tuple[dict[str, Any], dict[tuple[str | int, ...], int], frozenset[str]]:
    """Our namespace's keys (namespace stripped), their lines, and which keys are secrets."""
    from components.manifest.loader import parse_yaml_documents

    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(file, None, "", f"cannot read stack file: {exc}")]) from None
    try:
        docs = list(parse_yaml_documents(text, file))
    except ManifestError as exc:
        raise ConfigError(exc.problems) from None
    if len(docs) != 1 or not isinstance(docs[0][0], dict):
        raise ConfigError([Problem(file, None, "", "a stack file is one YAML mapping with a 'config' key")])
    doc, _, lines = docs[0]
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError([Problem(file, lines.get(("config",)), "config", "must be a mapping")])
    values: dict[str, Any] = {}
    secrets: set[str] = set()
    for key, value in config.items():
        ns, sep, name = key.partition(":")
        if not sep or ns != NAMESPACE:
            continue  # provider configuration (kubernetes:, vault:, aws:) is not ours
        if isinstance(value, dict) and set(value) == {"secure"}:
            secrets.add(name)
        values[name] = value
    return values, dict(lines), frozenset(secrets)


def load_stack_config(stack: str, root: Path | None = None) -> StackConfig:
    """Load ``stacks/Pulumi.<stack>.yaml`` (CLI and tests)."""
    path = stack_file(stack, root)
    if not path.exists():
        known = ", ".join(sorted(list_stacks(root))) or "none"
        raise ConfigError([Problem(str(path), None, "", f"no such stack file (stacks found: {known})")])
    values, lines, secrets = read_stack_file(path)
    values.setdefault("environment", stack)
    return build_stack_config(values, str(stack_file(stack)), lines, secrets)


def list_stacks(root: Path | None = None) -> list[str]:
    folder = (root or Path.cwd()) / STACKS_DIR
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in folder.glob("Pulumi.*.yaml"))


def config_from_runtime(raw: Mapping[str, str | None], stack: str) -> dict[str, Any]:
    """Values from ``pulumi.Config`` strings: structured values arrive as JSON text."""
    values: dict[str, Any] = {}
    for key, text in raw.items():
        if text is None:
            continue
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        values[key] = parsed if isinstance(parsed, dict | list | bool) else text
    values.setdefault("environment", stack)
    return values


def stack_runtime_config(path: Path) -> tuple[dict[str, str], list[str]]:
    """The stack file as the engine hands it to a program: ``{ns:key: JSON text}`` + secret keys.

    Used to run the program under mocks exactly as ``pulumi up`` would see the config.
    Secret values are replaced by a fixed placeholder (the real ones are encrypted).
    """
    from components.manifest.loader import parse_yaml_documents

    docs = list(parse_yaml_documents(path.read_text(encoding="utf-8"), str(path)))
    config = (docs[0][0] or {}).get("config") or {}
    out: dict[str, str] = {}
    secret: list[str] = []
    for key, value in config.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            out[key] = "mock-secret-value"
            secret.append(key)
        elif isinstance(value, str):
            out[key] = value
        else:
            out[key] = json.dumps(value)
    # secrets the config names but this file does not hold (set per machine with
    # `pulumi config set --secret`): the same placeholder, so the program runs offline
    try:
        values, _, _ = read_stack_file(path)
        values.setdefault("environment", path.name[len("Pulumi."):-len(".yaml")])
        refs = _secret_refs(build_stack_config(values, str(path)))
    except ConfigError:
        refs = []  # the program reports the stack file's problems itself
    for _, ref in refs:
        key = f"{NAMESPACE}:{ref}"
        if key not in out:
            out[key] = "mock-secret-value"
            secret.append(key)
    return out, secret
