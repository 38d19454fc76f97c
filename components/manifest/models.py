"""Typed agent and service manifests (``agents/*.yaml``).

Every model forbids unknown fields (a typo is an error, never silently dropped), uses
camelCase keys in YAML, and documents every field: the descriptions feed the committed JSON
Schema, editor completion and the manifest reference in the README. Validators do no I/O;
checks that need the stack or other manifests live in :mod:`components.platform_model`.

Why one module of ~700 lines: it is one schema. The models nest (Agent -> spec -> platform /
identity / grants -> each grant kind), the generated JSON Schema and README reference follow
this file's order, and almost all of it is field declarations with their descriptions; split
up, a reader would chase one manifest's shape across files.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from components import API_VERSION
from components.durations import Duration, seconds


class Model(BaseModel):
    """Base for everything a user writes: strict keys, camelCase aliases, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        str_strip_whitespace=False,
    )


DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
PATTERN_HINTS = {
    DNS_LABEL_PATTERN: "use a DNS label: lowercase letters, digits and '-', starting and ending "
    "with a letter or digit, at most 63 characters",
}
"""Plain-language rules for patterns used in many places (error messages quote these)."""

DnsLabel = Annotated[
    str,
    StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63),
    Field(description="A DNS label: lowercase letters, digits and '-', at most 63 characters."),
]
LabelKey = Annotated[
    str,
    StringConstraints(
        pattern=r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
    ),
]
LabelValue = Annotated[
    str, StringConstraints(pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
]
SqlIdentifier = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"),
    Field(
        description="A SQL identifier: letters, digits and '_', not starting with a digit, "
        "at most 63 characters. It is always quoted when rendered."
    ),
]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9!#$%&'*+.^_`|~-]+$")]

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _normalized_http_path(path: str) -> str:
    """Refuse a path Envoy's gateway would rewrite before OPA sees it (``normalize_path``,
    ``merge_slashes``, escaped slashes rejected): a grant on it could never match, and the
    generated tests would assert an allow no real request gets."""
    escapes = path.split("%")[1:]
    for esc in escapes:
        code = esc[:2]
        if len(code) < 2 or any(c not in "0123456789abcdefABCDEF" for c in code):
            raise ValueError(f"{path!r} has a '%' that is not followed by two hex digits; write a percent-escape "
                             "as %XX or the character itself")
        char = chr(int(code, 16))
        if char in "/\\":
            raise ValueError(f"{path!r} has an escaped slash (%{code}): the gateway rejects such requests "
                             "(path_with_escaped_slashes_action), so this grant could never match")
        if char in _UNRESERVED:
            raise ValueError(f"{path!r} percent-encodes {char!r} (%{code}), which path normalization decodes "
                             f"before matching; write {char!r} itself")
    segments = path.split("/")[1:]
    if any(s in (".", "..") for s in segments) or "//" in path:
        kept: list[str] = []
        for seg in segments[:-1]:
            if seg == "..":
                kept = kept[:-1]
            elif seg not in ("", "."):
                kept.append(seg)
        last = segments[-1] if segments[-1] not in (".", "..") else ""
        if segments[-1] == ".." and kept:
            kept = kept[:-1]
        suggestion = "/" + "/".join([*kept, last]) if kept or last else "/"
        raise ValueError(f"{path!r} is not a normalized path: the gateway resolves '.' and '..' segments and merges "
                         f"'//' (Envoy normalize_path, merge_slashes) before authorizing, so this grant could never "
                         f"match; write {suggestion!r}")
    return path


HttpPath = Annotated[
    str,
    StringConstraints(pattern=r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$"),
    AfterValidator(_normalized_http_path),
]


def _header_value(value: str) -> str:
    bad = next((c for c in value if (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F), None)
    if bad is not None:
        raise ValueError(f"the value contains the control character {bad!r} (U+{ord(bad):04X}); header values "
                         "may not hold CR, LF, NUL or other control characters (RFC 9110 field-value)")
    return value


HeaderValue = Annotated[str, StringConstraints(max_length=1024), AfterValidator(_header_value)]


def _dns_name(name: str) -> str:
    labels = name.split(".")
    if "" in labels:
        raise ValueError(f"{name!r} has an empty label ('..'); write each label between dots")
    long = next((label for label in labels if len(label) > 63), None)
    if long is not None:
        raise ValueError(f"{name!r} has a label of {len(long)} characters ({long[:12]}...); a DNS label has at most 63")
    if len(name) > 253:
        raise ValueError(f"{name!r} has {len(name)} characters; a DNS name has at most 253")
    return name


DnsName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
    AfterValidator(_dns_name),
    Field(description="A DNS name: lowercase labels of letters, digits and '-', 1 to 63 characters each, "
                      "separated by dots; at most 253 characters."),
]
SpiffePath = Annotated[
    str,
    StringConstraints(pattern=r"^(/[A-Za-z0-9._-]+)+$", max_length=2000),
    Field(
        description="Path part of the SPIFFE ID: '/'-separated segments of letters, digits, "
        "'.', '_' and '-' (SPIFFE ID spec). No trailing '/', no empty, '.' or '..' segments."
    ),
]
def _vault_path(path: str) -> str:
    """No '.' or '..' segment (nor a leading './'): the guard on managed mounts (sys/, auth/,
    database mounts) reads the path as written, so a path must say where it goes."""
    dots = [seg for seg in path.split("/") if seg in (".", "..")]
    if dots:
        raise ValueError(f"{path!r} has a {dots[0]!r} segment; write the path without '.' or '..' segments "
                         "(e.g. secret/data/team/x)")
    return path


VaultPath = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.+-]+)*(/\*|\*)?$"),
    AfterValidator(_vault_path),
    Field(
        description="A Vault API path without a leading '/'. '+' matches one segment; a "
        "trailing '*' is a prefix glob."
    ),
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
Clock = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
AwsArn = Annotated[str, StringConstraints(pattern=r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}|aws)?:.+$")]
AwsAction = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+:[A-Za-z0-9*]+$")]
AwsResource = Annotated[str, StringConstraints(pattern=r"^(\*|arn:aws[a-z-]*:.+)$")]

ALL_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _unique(values: list[str], what: str) -> None:
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"{what} listed twice: {', '.join(dupes)}; list each once")


def _exactly_one(model: BaseModel, fields: tuple[str, ...], what: str) -> str:
    present = [f for f in fields if getattr(model, f) is not None]
    if len(present) != 1:
        names = ", ".join(to_camel(f) for f in fields)
        found = ", ".join(to_camel(f) for f in present) or "none"
        raise ValueError(f"{what} must set exactly one of {names} (found: {found})")
    return present[0]


# --------------------------------------------------------------------------- metadata


class Metadata(Model):
    """Who the agent is and who answers for it."""

    name: DnsLabel = Field(
        description="The agent's name, unique across all manifests. A DNS label, it becomes "
        "part of resource names, Vault roles and the default SPIFFE path."
    )
    team: DnsLabel = Field(description="Owning team (a DNS label), used in labels, tags and reports.")
    owner: str = Field(
        min_length=3,
        max_length=254,
        description="A reachable owner: an email address or an on-call handle. Incident "
        "runbooks page this owner when the agent's identity misbehaves.",
    )
    description: str = Field(
        default="", max_length=1024, description="What the agent does, in one or two sentences."
    )
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        description="Kubernetes-style labels copied onto every object created for the agent; "
        "also usable by stack shard selectors.",
    )


# --------------------------------------------------------------------------- identity


class IdentitySpec(Model):
    """The agent's one cryptographic identity: every consumer derives from it."""

    spiffe_path: SpiffePath | None = Field(
        default=None,
        description="Path of the SPIFFE ID (spiffe://<trust-domain><path>). Default: "
        "/ns/<namespace>/sa/<serviceAccount> for Kubernetes agents, "
        "/windows/<hostGroup>/<gmsaAccount> for Windows agents, /vm/<name> for VM agents.",
    )
    x509_svid_ttl: Duration = Field(
        default="15m",
        description="Lifetime of the agent's X.509-SVID. SPIRE renews at half-life with jitter. "
        "Must not exceed the stack's limit nor caTtl/6.",
    )
    jwt_svid_ttl: Duration = Field(
        default="5m",
        description="Lifetime of JWT-SVIDs minted for the agent (Vault login, AWS web "
        "identity). Must not exceed the stack's JWT limit (15m unless the stack allows more).",
    )
    jwt_audiences: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = Field(
        default_factory=lambda: ["vault"],
        min_length=1,
        description="Audiences the agent may request JWT-SVIDs for; Vault and AWS roles "
        "bind to these.",
    )
    dns_names: list[DnsName] = Field(
        default_factory=list,
        description="Extra DNS SANs for the X.509-SVID (for agents that also serve TLS).",
    )

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if self.spiffe_path is not None:
            segments = self.spiffe_path.split("/")[1:]
            if any(s in {".", ".."} for s in segments):
                raise ValueError(
                    f"spiffePath {self.spiffe_path!r} has a '.' or '..' segment, which the "
                    "SPIFFE ID spec forbids"
                )
        _unique(self.jwt_audiences, "jwtAudiences")
        _unique(self.dns_names, "dnsNames")
        return self


# --------------------------------------------------------------------------- platforms


class KubernetesPlatform(Model):
    """The agent runs as pods in a Kubernetes cluster."""

    namespace: DnsLabel = Field(description="Namespace the agent's pods run in.")
    service_account: DnsLabel = Field(
        description="ServiceAccount of the agent's pods; SPIRE attests it (k8s_psat/k8s) and "
        "Linkerd derives the mesh identity from it."
    )
    pod_labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        description="Extra pod labels the SPIRE registration's podSelector must match, "
        "narrowing which pods of the ServiceAccount receive the identity.",
    )


class WindowsPod(Model):
    """Where a Windows agent runs as a Windows container on Kubernetes."""

    namespace: DnsLabel = Field(description="Namespace of the Windows pods.")
    service_account: DnsLabel = Field(
        description="ServiceAccount allowed to use the agent's GMSACredentialSpec."
    )


class WindowsPlatform(Model):
    """The agent runs on Windows hosts under a group Managed Service Account (gMSA)."""

    gmsa_account: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,14}$")] = Field(
        description="The gMSA's sAMAccountName without the trailing '$' (at most 15 "
        "characters: letters, digits, '-'). Active Directory rotates its password; no human "
        "ever knows it."
    )
    host_group: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")] = Field(
        description="AD security group of the hosts allowed to retrieve the gMSA password "
        "(PrincipalsAllowedToRetrieveManagedPassword). Also the default SSM target tag value."
    )
    domain: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,253}$")] | None = Field(
        default=None,
        description="AD DNS domain of the gMSA (e.g. corp.example.com). Default: the stack's "
        "windows.domain.",
    )
    iis_app_pool: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")] | None = Field(
        default=None,
        description="IIS application pool whose identity becomes the gMSA (DOMAIN\\name$).",
    )
    ssm_target_tags: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 _.:/=+@-]{1,128}$")],
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 _.:/=+@-]{1,256}$")],
    ] | None = Field(
        default=None,
        description="EC2 tags that select the hosts for the SSM association. Default: "
        "{'agentpassport:host-group': <hostGroup>}.",
    )
    pod: WindowsPod | None = Field(
        default=None,
        description="Set when the agent also runs as Windows pods: a GMSACredentialSpec and "
        "RBAC for this ServiceAccount are created.",
    )


class VmPlatform(Model):
    """The agent runs on virtual machines attested by a SPIRE node attestor."""

    attestation: Literal["aws_iid", "join_token"] = Field(
        default="aws_iid",
        description="SPIRE node attestor: aws_iid (EC2 instance identity document, "
        "recommended) or join_token (one-time token, for hosts without a cloud identity).",
    )
    aws_account_id: Annotated[str, StringConstraints(pattern=r"^\d{12}$")] | None = Field(
        default=None, description="AWS account of the instances (aws_iid attestation)."
    )
    aws_region: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")] | None = Field(
        default=None, description="AWS region of the instances (aws_iid attestation)."
    )
    aws_instance_tags: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 _.:/=+@-]{1,128}$")],
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 _.:/=+@-]{0,256}$")],
    ] = Field(
        default_factory=dict,
        description="EC2 tags the node must carry (become aws_iid:tag:<k>:<v> node selectors).",
    )
    node_selectors: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+:[^\s]+$")]] = Field(
        default_factory=list,
        description="Extra SPIRE node selectors (type:value), e.g. 'aws_iid:sg:id:sg-0123'.",
    )
    workload_selectors: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+:[^\s]+$")]] = Field(
        min_length=1,
        description="SPIRE workload selectors identifying the agent process on the node, "
        "e.g. 'unix:uid:1001' or 'systemd:id:agent.service'. Required: without them any "
        "process on the node would get the identity.",
    )

    egress_proxy_uid: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 2,
        description="Unix uid the Envoy egress proxy runs as on the VM, when the agent has http "
        "grants: the proxy's SPIRE entry selects it (unix:uid:<uid>) and holds the agent's "
        "SPIFFE ID. Default: the uid of the agent's own unix:uid selector (the proxy runs as the "
        "agent's user). Never 0.",
    )

    @property
    def agent_uid(self) -> int | None:
        """The uid of the agent's own ``unix:uid:<n>`` workload selector, if it has one."""
        for s in self.workload_selectors:
            kind, _, value = s.partition(":")
            key, _, uid = value.partition(":")
            if kind == "unix" and key == "uid" and uid.isdigit():
                return int(uid)
        return None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if self.attestation == "aws_iid" and (self.aws_account_id is None or self.aws_region is None):
            raise ValueError(
                "attestation aws_iid needs awsAccountId and awsRegion (the node selectors "
                "would otherwise match every EC2 instance)"
            )
        return self


class PlatformSpec(Model):
    """Where the agent runs: exactly one of kubernetes, windows, vm."""

    kubernetes: KubernetesPlatform | None = Field(default=None, description="Kubernetes pods.")
    windows: WindowsPlatform | None = Field(default=None, description="Windows hosts with a gMSA.")
    vm: VmPlatform | None = Field(default=None, description="VMs attested by SPIRE.")

    @model_validator(mode="after")
    def _one(self) -> Self:
        _exactly_one(self, ("kubernetes", "windows", "vm"), "platform")
        return self

    @property
    def kind(self) -> Literal["kubernetes", "windows", "vm"]:
        if self.kubernetes is not None:
            return "kubernetes"
        if self.windows is not None:
            return "windows"
        return "vm"


# --------------------------------------------------------------------------- grants


class PathMatch(Model):
    """One HTTP path match: exactly one of exact or prefix."""

    exact: HttpPath | None = Field(default=None, description="The request path must equal this.")
    prefix: HttpPath | None = Field(
        default=None,
        description="The request path must start with this, on a segment boundary "
        "('/api' matches '/api' and '/api/x', not '/apix').",
    )

    @model_validator(mode="after")
    def _one(self) -> Self:
        _exactly_one(self, ("exact", "prefix"), "a path match")
        return self

    @property
    def value(self) -> str:
        return self.exact if self.exact is not None else str(self.prefix)

    @property
    def kind(self) -> Literal["exact", "prefix"]:
        return "exact" if self.exact is not None else "prefix"


class TimeWindow(Model):
    """A recurring weekly window in which requests are allowed."""

    days: list[Weekday] = Field(
        default_factory=lambda: list(ALL_WEEKDAYS),
        min_length=1,
        description="Weekdays the window applies to (mon..sun). Default: every day.",
    )
    start: Clock = Field(description="Start time HH:MM (inclusive), in the window's timezone.")
    end: Clock = Field(description="End time HH:MM (exclusive), in the window's timezone.")
    timezone: str = Field(
        default="UTC",
        min_length=1,
        description="IANA timezone name (e.g. Europe/London); daylight saving is honoured.",
    )

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.start >= self.end:
            raise ValueError(
                f"start {self.start} must be before end {self.end}; split a window that "
                "crosses midnight into two windows"
            )
        _unique(list(self.days), "days")
        return self


class HttpGrant(Model):
    """Calls to a declared Service, enforced by Linkerd (who) and OPA (what, when)."""

    service: DnsLabel = Field(description="Name of a Service manifest the agent may call.")
    methods: list[HttpMethod] = Field(min_length=1, description="Allowed HTTP methods.")
    paths: list[PathMatch] = Field(min_length=1, description="Allowed request paths.")
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        description="Headers that must be present with exactly these values (names lowercase).",
    )
    time_windows: list[TimeWindow] = Field(
        default_factory=list,
        description="When requests are allowed; empty means at any time.",
    )

    @model_validator(mode="after")
    def _checks(self) -> Self:
        _unique(list(self.methods), "methods")
        _unique([f"{p.kind}:{p.value}" for p in self.paths], "paths")
        return self


TablePrivilege = Literal["select", "insert", "update", "delete", "truncate", "references", "trigger"]


class DatabasePrivilege(Model):
    """Table privileges on a schema (all its tables, or the listed ones)."""

    allow: list[TablePrivilege] = Field(
        min_length=1,
        description="Privileges from a closed vocabulary: select, insert, update, delete, "
        "truncate, references, trigger. No DDL, no ownership, no grant option.",
    )
    schema_: SqlIdentifier = Field(
        default="public", alias="schema", description="Schema holding the tables (PostgreSQL); "
        "ignored for MySQL where the database is the schema."
    )
    tables: list[SqlIdentifier] = Field(
        default_factory=list,
        description="Tables the privileges apply to; empty means every table in the schema.",
    )

    @model_validator(mode="after")
    def _checks(self) -> Self:
        _unique(list(self.allow), "allow")
        _unique(list(self.tables), "tables")
        return self


class DatabaseGrant(Model):
    """Dynamic database credentials from Vault, minted per lease."""

    cluster: DnsLabel = Field(
        description="Name of a database cluster declared in the stack config (vault.databases)."
    )
    engine: Literal["postgres", "mysql"] = Field(description="Database engine.")
    database: SqlIdentifier = Field(description="Database name.")
    privileges: list[DatabasePrivilege] = Field(min_length=1, description="What the credential may do.")
    ttl: Duration = Field(default="5m", description="Default lease TTL of a credential.")
    max_ttl: Duration = Field(
        default="10m", description="Maximum lease TTL including renewals (stack limit applies)."
    )

    @model_validator(mode="after")
    def _ttls(self) -> Self:
        if seconds(self.ttl) > seconds(self.max_ttl):
            raise ValueError(f"ttl {self.ttl} is longer than maxTtl {self.max_ttl}")
        return self


class AwsStatement(Model):
    """An inline IAM policy statement (always Effect Allow)."""

    actions: list[AwsAction] = Field(min_length=1, description="IAM actions, e.g. s3:GetObject.")
    resources: list[AwsResource] = Field(min_length=1, description="Resource ARNs the actions apply to.")

    @model_validator(mode="after")
    def _checks(self) -> Self:
        wild = [a for a in self.actions if a.split(":", 1)[1] == "*"]
        if wild:
            raise ValueError(
                f"actions {', '.join(wild)} grant a whole service; list the actions the agent needs"
            )
        _unique(list(self.actions), "actions")
        return self


class AwsGrant(Model):
    """An AWS role the agent assumes with its X.509-SVID (Roles Anywhere) or JWT-SVID (OIDC)."""

    role: DnsLabel = Field(
        default="default",
        description="Short name of the role, unique per agent (the IAM role is named "
        "'<agent>-<role>').",
    )
    managed_policy_arns: list[AwsArn] = Field(
        default_factory=list, description="Managed policies attached to the role."
    )
    statements: list[AwsStatement] = Field(
        default_factory=list, description="Inline policy statements."
    )
    session_duration: Duration = Field(
        default="1h",
        description="Maximum session duration (AWS allows 15m..12h; the stack limit applies).",
    )

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if not self.managed_policy_arns and not self.statements:
            raise ValueError("an aws grant needs managedPolicyArns or statements (or both)")
        if seconds(self.session_duration) < 900:
            raise ValueError(f"sessionDuration {self.session_duration} is below AWS's minimum of 15m")
        _unique(list(self.managed_policy_arns), "managedPolicyArns")
        return self


VaultCapability = Literal["create", "read", "update", "patch", "delete", "list"]


class VaultGrant(Model):
    """An extra Vault path the agent may use, beyond its own database credentials."""

    path: VaultPath = Field(description="Vault path (KV v2 data paths look like secret/data/team/x).")
    capabilities: list[VaultCapability] = Field(
        min_length=1,
        description="Capabilities on the path (no sudo, no deny: the policy is allow-only).",
    )

    @model_validator(mode="after")
    def _checks(self) -> Self:
        _unique(list(self.capabilities), "capabilities")
        return self


class Grant(Model):
    """One access grant: exactly one of http, database, aws, vault."""

    description: str = Field(
        default="", max_length=512, description="Why the agent needs this (shown in reviews)."
    )
    http: HttpGrant | None = Field(default=None, description="HTTP calls to a Service.")
    database: DatabaseGrant | None = Field(default=None, description="Dynamic DB credentials.")
    aws: AwsGrant | None = Field(default=None, description="An AWS role.")
    vault: VaultGrant | None = Field(default=None, description="Extra Vault path access.")

    @model_validator(mode="after")
    def _one(self) -> Self:
        _exactly_one(self, ("http", "database", "aws", "vault"), "a grant")
        return self

    @property
    def kind(self) -> Literal["http", "database", "aws", "vault"]:
        for k in ("http", "database", "aws", "vault"):
            if getattr(self, k) is not None:
                return k
        raise AssertionError("validated grant has a kind")


# --------------------------------------------------------------------------- agent


Network = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F:.]+/\d{1,3}$")]


class AgentSpec(Model):
    """Everything the platform needs to know about one agent."""

    environments: list[DnsLabel] | None = Field(
        default=None,
        description="Environments (stack 'environment' values) the agent exists in. Omit "
        "for every environment.",
    )
    suspended: bool = Field(
        default=False,
        description="Kill switch: when true, pulumi up removes the agent's registrations, "
        "Vault roles, IAM trust and authorization data but keeps this manifest.",
    )
    suspended_reason: str | None = Field(
        default=None, max_length=512, description="Why the agent is suspended (required when suspended)."
    )
    identity: IdentitySpec = Field(default_factory=IdentitySpec, description="The agent's identity.")
    platform: PlatformSpec = Field(description="Where the agent runs.")
    source_networks: list[Network] = Field(
        default_factory=list,
        description="CIDRs the agent's requests may come from; requests from elsewhere raise an "
        "anomaly alert. Empty means no network expectation.",
    )
    grants: list[Grant] = Field(default_factory=list, description="What the agent may reach.")

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if self.suspended and not (self.suspended_reason or "").strip():
            raise ValueError("suspended agents need a suspendedReason (incident or ticket)")
        if not self.suspended and self.suspended_reason is not None:
            raise ValueError("suspendedReason is set but suspended is false; remove one")
        for net in self.source_networks:
            try:
                ipaddress.ip_network(net, strict=True)
            except ValueError as exc:
                raise ValueError(f"sourceNetworks: {net!r} is not a network CIDR ({exc})") from None
        if self.environments is not None:
            _unique(list(self.environments), "environments")
        roles = [g.aws.role for g in self.grants if g.aws is not None]
        _unique(roles, "aws grant role names")
        return self


class AgentManifest(Model):
    """An autonomous agent and everything it may do."""

    api_version: Literal["passport.agentpassport.dev/v1alpha1"] = Field(
        description=f"Always {API_VERSION}."
    )
    kind: Literal["Agent"] = Field(description="Always Agent.")
    metadata: Metadata = Field(description="Name, team, owner, labels.")
    spec: AgentSpec = Field(description="Identity, platform and grants.")


# --------------------------------------------------------------------------- service


class ServiceSpec(Model):
    """A service agents call over HTTP inside the mesh."""

    namespace: DnsLabel = Field(description="Namespace of the service's pods.")
    port: int = Field(ge=1, le=65535, description="Container port the service listens on.")
    pod_selector: dict[LabelKey, LabelValue] = Field(
        min_length=1, description="Labels selecting the service's pods (Linkerd Server podSelector)."
    )
    protocol: Literal["http1", "http2", "grpc"] = Field(
        default="http1", description="Application protocol (Linkerd proxyProtocol)."
    )
    gateway: bool = Field(
        default=True,
        description="Put an Envoy + OPA gateway in front of the service for per-request "
        "authorization (method, path, headers, time). Without it only Linkerd's route-level "
        "policy applies and header/time conditions are refused.",
    )


class Owner(Model):
    """Who runs a service."""

    name: DnsLabel = Field(description="Service name, unique across manifests; grants refer to it.")
    team: DnsLabel = Field(description="Owning team.")
    description: str = Field(default="", max_length=1024, description="What the service is.")


class ServiceManifest(Model):
    """A callable service declared once, referenced by agents' http grants."""

    api_version: Literal["passport.agentpassport.dev/v1alpha1"] = Field(
        description=f"Always {API_VERSION}."
    )
    kind: Literal["Service"] = Field(description="Always Service.")
    metadata: Owner = Field(description="Name and owning team.")
    spec: ServiceSpec = Field(description="Where the service runs.")

