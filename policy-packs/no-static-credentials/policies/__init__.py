"""Agent Passport's policies: no static credentials, short lifetimes, one identity per agent.

Importing this module has no side effects: it defines the policies and the list
:data:`POLICIES`. ``__main__.py`` hands that list to ``PolicyPack`` (which starts the analyzer
server for ``pulumi preview --policy-pack``); ``passport check`` calls the very same objects'
``validate`` functions on a graph captured under mocks.

Conventions
-----------
* Resource inputs arrive camelCase, as the engine gives them to policies.
* Every limit is a config property with a default (``PolicyConfigSchema``); a policy reads
  ``{**defaults, **args.get_config()}``, so the pack behaves the same whether or not the engine
  filled in the schema defaults. Enforcement levels are configurable per policy as usual.
* Violations about one agent start with ``agent <name>: `` so reports can group them by the
  agent's manifest. Agents are recognised by the ``agentpassport.dev/agent`` label, by their
  name as a whole dash-separated token in a resource name, and by their SPIFFE ID.
* Values unknown during preview are treated as "cannot tell": they never cause a violation.

The package (``from policies import PACK_NAME, POLICIES`` is all ``__main__.py`` needs; every
public name is re-exported here):

* :mod:`.tokens` — the pack's name, labels and the resource type tokens it knows;
* :mod:`.values` — plain values from the engine's proxies, durations, attribution to agents,
  policy config, and a stack's resources;
* :mod:`.secrets` — literal credentials in values and text (``no-literal-credentials``);
* resource policies by domain: :mod:`.aws` (IAM), :mod:`.kubernetes` (ServiceAccount tokens,
  Linkerd inbound policy, gMSA credential specs), :mod:`.vault`, :mod:`.certificates` (leaf
  lifetimes, SVID TTLs, RSA key sizes);
* stack policies: :mod:`.stack_identity` (one identity per agent), :mod:`.stack_grants`
  (resource count, every grant enforced), :mod:`.stack_ca` (no root key in state, CA chain
  lifetimes);
* this module — the policies (:data:`POLICIES`), in the order the pack serves them.
"""

from __future__ import annotations

from collections.abc import Callable

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)

from .aws import (
    NO_IAM_USERS_SCHEMA,
    _no_iam_access_keys,
    _no_iam_users,
)
from .certificates import (
    LEAF_SCHEMA,
    RSA_SCHEMA,
    SVID_SCHEMA,
    _leaf_lifetime,
    _rsa_key_size,
    _svid_ttl_limits,
)
from .collector import (
    COLLECTOR_NAME,
    KEY_ENV,
    _audit_collector_no_keys,
    collector_key_settings,
)
from .gmsa import GMSA_INTERVAL_SCHEMA, _gmsa_password_interval
from .kubernetes import (
    GMSA_SCHEMA,
    INBOUND_ANNOTATION,
    INBOUND_SCHEMA,
    _gmsa_no_stored_credentials,
    _linkerd_inbound,
    _no_automounted_token,
    _no_sa_token_secrets,
    uses_spiffe,
)
from .secrets import (
    LITERALS_SCHEMA,
    _no_literal_credentials,
    credential_name,
    high_entropy,
    keyed_findings,
    literal_value,
    shannon_entropy,
    text_findings,
)
from .stack_ca import (
    ROOT_KEY_SCHEMA,
    _ca_chain_lifetimes,
    _no_state_root_key,
)
from .stack_grants import (
    COUNT_SCHEMA,
    Key,
    _grants_enforced,
    _resource_count,
)
from .stack_identity import (
    EXCLUSIVE_NODE_SELECTORS,
    EXCLUSIVE_WORKLOAD_SELECTORS,
    WORKLOAD_ATTESTOR_OS,
    _one_identity,
    exclusive_selector_values,
    first_compatible,
)
from .storm import (
    QUOTAS_SCHEMA,
    _spire_rate_limits_on,
    _vault_rate_limit_quotas,
)
from .tokens import (
    AGENT_LABEL,
    BOM_KEY,
    DB_ENGINE_BLOCKS,
    DB_MOUNT_LISTS,
    GATEWAY_LABEL,
    GMSA_CREDSPECS,
    PACK_NAME,
    REGISTRATIONS,
    SERVICE_LABEL,
    TLS_CERTS,
    VAULT_LOGIN_ROLES,
    WORKLOADS,
    T,
)
from .values import (
    UNKNOWN,
    Res,
    Validate,
    agent_of,
    agent_prefix,
    as_dict,
    as_list,
    config_of,
    containers,
    dig,
    find_bom,
    human,
    is_node_entry,
    labels_of,
    name_tokens,
    plain,
    pod_spec,
    registration_spiffe_id,
    seconds,
    stack_of,
    strings,
)
from .vault import (
    CREDENTIAL_TTL_SCHEMA,
    EXPLICIT_TTLS_SCHEMA,
    _vault_aws_no_static_keys,
    _vault_credential_ttl_limits,
    _vault_explicit_ttls,
    _vault_no_stored_db_password,
    _vault_no_token_auth,
)

# --------------------------------------------------------------------------- the policies


def _resource(name: str, description: str, remediation: str, validate: Validate,
              schema: PolicyConfigSchema | None = None,
              severity: Severity = Severity.HIGH) -> ResourceValidationPolicy:
    return ResourceValidationPolicy(
        name=name, description=description, validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY, config_schema=schema, severity=severity,
        remediation_steps=remediation, tags=["agent-passport"],
    )


def _stack(name: str, description: str, remediation: str,
           validate: Callable[[StackValidationArgs, ReportViolation], None],
           schema: PolicyConfigSchema | None = None,
           severity: Severity = Severity.HIGH) -> StackValidationPolicy:
    return StackValidationPolicy(
        name=name, description=description, validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY, config_schema=schema, severity=severity,
        remediation_steps=remediation, tags=["agent-passport"],
    )


POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    _resource(
        "no-iam-access-keys",
        "No IAM access keys: they are long-lived static credentials.",
        "Give the agent an aws grant: it assumes an IAM role with its X.509-SVID (IAM Roles "
        "Anywhere) or JWT-SVID (OIDC federation) and gets session credentials that expire.",
        _no_iam_access_keys, severity=Severity.CRITICAL,
    ),
    _resource(
        "no-iam-users",
        "No IAM users or console login profiles for workloads.",
        "Agents assume IAM roles through federation (aws grants); humans sign in through SSO.",
        _no_iam_users, NO_IAM_USERS_SCHEMA,
    ),
    _resource(
        "no-service-account-token-secrets",
        "No Secrets of type kubernetes.io/service-account-token (tokens that never expire).",
        "Use projected, audience-bound ServiceAccount tokens (the kubelet rotates them) or the "
        "agent's SPIFFE identity.",
        _no_sa_token_secrets, severity=Severity.CRITICAL,
    ),
    _resource(
        "no-automounted-token-with-spiffe",
        "Pods that use SPIFFE identities (and agent ServiceAccounts) do not automount a "
        "Kubernetes API token.",
        "Set automountServiceAccountToken: false on the pod spec / ServiceAccount; Linkerd and "
        "SPIRE use projected tokens of their own.",
        _no_automounted_token, severity=Severity.MEDIUM,
    ),
    _resource(
        "no-literal-credentials",
        "No literal credentials in container env, ConfigMaps, SSM documents or DSC scripts.",
        "Reference credentials instead: env valueFrom (secretKeyRef), Vault dynamic secrets, "
        "SSM SecureString parameters or Secrets Manager ARNs, gMSA for Windows services.",
        _no_literal_credentials, LITERALS_SCHEMA, severity=Severity.CRITICAL,
    ),
    _resource(
        "audit-collector-no-keys",
        "Log collectors write to S3 with federated sessions, never with an AWS key in their config "
        "or environment.",
        "Remove access_key/secret_key from the exporter and the AWS_* key variables: the collector "
        "gets its session from IRSA or EKS Pod Identity on EKS, from IAM Roles Anywhere with its own "
        "SVID elsewhere (stack audit.credentials, docs/audit.md).",
        _audit_collector_no_keys, severity=Severity.CRITICAL,
    ),
    _resource(
        "vault-no-stored-db-password",
        "Vault database connections keep no password in Pulumi state.",
        "Pass the admin password through the write-only passwordWo (+ passwordWoVersion) from "
        "a secret stack config key, use {{username}}:{{password}} in connectionUrl, and let Vault "
        "rotate the root credential.",
        _vault_no_stored_db_password, severity=Severity.CRITICAL,
    ),
    _resource(
        "vault-explicit-ttls",
        "Vault roles and mounts set explicit TTLs.",
        "Set defaultTtl/maxTtl on database roles, tokenTtl/tokenMaxTtl on login roles, "
        "defaultLeaseTtlSeconds/maxLeaseTtlSeconds on mounts, ttl/maxTtl on PKI roles.",
        _vault_explicit_ttls, EXPLICIT_TTLS_SCHEMA,
    ),
    _resource(
        "vault-credential-ttl-limits",
        "Vault credentials and tokens stay within the configured lifetimes.",
        "Shorten the TTLs (manifest grants' ttl/maxTtl, stack vault.tokenTtl/tokenMaxTtl) or "
        "raise the limit deliberately in the policy config.",
        _vault_credential_ttl_limits, CREDENTIAL_TTL_SCHEMA,
    ),
    _resource(
        "vault-no-token-or-approle-auth",
        "Agents do not authenticate to Vault with tokens or AppRole secrets.",
        "Agents log in with their SPIFFE identity: JWT-SVIDs (jwt auth) or X.509-SVIDs (cert auth).",
        _vault_no_token_auth, severity=Severity.CRITICAL,
    ),
    _resource(
        "vault-aws-no-static-keys",
        "Vault's AWS engines use no static IAM access keys.",
        "Use plugin workload identity federation (identityTokenAudience + roleArn) or the "
        "instance/pod role Vault runs with.",
        _vault_aws_no_static_keys, severity=Severity.CRITICAL,
    ),
    _resource(
        "leaf-lifetime-limit",
        "Leaf certificates live no longer than the configured limit.",
        "Issue short-lived leaves (SPIRE SVIDs, cert-manager) instead of long-lived certificates.",
        _leaf_lifetime, LEAF_SCHEMA,
    ),
    _resource(
        "svid-ttl-limits",
        "SPIRE registrations ask for SVID TTLs within the limits and at most caTtl/6.",
        "Lower spec.identity.x509SvidTtl / jwtSvidTtl in the agent's manifest.",
        _svid_ttl_limits, SVID_SCHEMA,
    ),
    _resource(
        "rsa-key-size",
        "RSA keys are at least the configured size.",
        "Use ECDSA P-256 (recommended) or RSA with at least 2048 bits (3072 for CAs).",
        _rsa_key_size, RSA_SCHEMA,
    ),
    _resource(
        "linkerd-default-inbound-policy",
        "Meshed namespaces and Linkerd Servers default to deny or authenticated-only inbound traffic.",
        "Annotate the namespace config.linkerd.io/default-inbound-policy: deny (stack "
        "mesh.defaultInboundPolicy) and grant calls explicitly with http grants.",
        _linkerd_inbound, INBOUND_SCHEMA,
    ),
    _resource(
        "gmsa-no-stored-credentials",
        "gMSA credential specs do not depend on stored credentials.",
        "Run Windows pods on domain-joined nodes so the gMSA password is retrieved by the host; "
        "Active Directory rotates it and nobody stores it.",
        _gmsa_no_stored_credentials, GMSA_SCHEMA,
    ),
    _resource(
        "gmsa-password-interval",
        "gMSA DSC scripts create accounts whose password rotates within the stack's limit.",
        "Lower windows.gmsaPasswordIntervalDays (default 1 day); for an existing account, create a "
        "new gMSA (a new gmsaAccount) with the shorter interval, move the agent, delete the old one.",
        _gmsa_password_interval, GMSA_INTERVAL_SCHEMA,
    ),
    _resource(
        "spire-rate-limits-on",
        "The SPIRE server keeps its attestation and signing rate limits on.",
        "Remove server.ratelimit overrides (or set attestation and signing to true): SPIRE then "
        "throttles each agent node to 1 attestation/s and 500 signings/s (docs/scale.md).",
        _spire_rate_limits_on, severity=Severity.MEDIUM,
    ),
    _stack(
        "vault-rate-limit-quotas",
        "Every Vault login path (jwt, cert) and database mount's creds/ is behind a rate-limit quota.",
        "Keep the VaultIdentity component's QuotaRateLimit resources (sized from the stack's "
        "capacity section), or add a vault.QuotaRateLimit on auth/<mount>/login and <db mount>/creds/*.",
        _vault_rate_limit_quotas, QUOTAS_SCHEMA, severity=Severity.MEDIUM,
    ),
    _stack(
        "one-identity-per-agent",
        "Every agent has exactly one identity and SPIFFE IDs are unique.",
        "Give each agent its own ServiceAccount or spec.identity.spiffePath; remove stray "
        "registrations; suspended agents get none.",
        _one_identity, severity=Severity.CRITICAL,
    ),
    _stack(
        "grants-enforced",
        "Every grant is enforced somewhere: Linkerd and OPA for http, a Vault role for "
        "database, an IAM role for aws, a Vault policy for vault.",
        "Turn on the subsystem that enforces the grant kind in the stack config, or give the "
        "service a gateway (spec.gateway) so an http grant's conditions are checked.",
        _grants_enforced,
    ),
    _stack(
        "resource-count-ceiling",
        "A stack holds at most the configured number of resources.",
        "Split agents into stack shards (agentsDir / labels) so each preview stays fast.",
        _resource_count, COUNT_SCHEMA, severity=Severity.LOW,
    ),
    _stack(
        "no-state-root-key-in-prod",
        "Production root CAs are not signed by a tls PrivateKey kept in Pulumi state.",
        "Use trust.upstream aws-pca or vault-pki so the root key never leaves the HSM/Vault.",
        _no_state_root_key, ROOT_KEY_SCHEMA, severity=Severity.CRITICAL,
    ),
    _stack(
        "ca-chain-lifetimes",
        "No certificate (the Linkerd issuer included) outlives the CA that signed it.",
        "Shorten the issuer (stack mesh.issuerLifetime, trust.intermediateLifetime) or lengthen "
        "the anchor; rotate the issuer before its anchor expires.",
        _ca_chain_lifetimes,
    ),
]


def policy_named(name: str) -> ResourceValidationPolicy | StackValidationPolicy:
    return next(p for p in POLICIES if p.name == name)


__all__ = [
    "AGENT_LABEL",
    "BOM_KEY",
    "COLLECTOR_NAME",
    "COUNT_SCHEMA",
    "CREDENTIAL_TTL_SCHEMA",
    "DB_ENGINE_BLOCKS",
    "DB_MOUNT_LISTS",
    "EXCLUSIVE_NODE_SELECTORS",
    "EXCLUSIVE_WORKLOAD_SELECTORS",
    "EXPLICIT_TTLS_SCHEMA",
    "GATEWAY_LABEL",
    "GMSA_CREDSPECS",
    "GMSA_SCHEMA",
    "INBOUND_ANNOTATION",
    "INBOUND_SCHEMA",
    "KEY_ENV",
    "LEAF_SCHEMA",
    "LITERALS_SCHEMA",
    "NO_IAM_USERS_SCHEMA",
    "PACK_NAME",
    "POLICIES",
    "QUOTAS_SCHEMA",
    "REGISTRATIONS",
    "ROOT_KEY_SCHEMA",
    "RSA_SCHEMA",
    "SERVICE_LABEL",
    "SVID_SCHEMA",
    "TLS_CERTS",
    "UNKNOWN",
    "VAULT_LOGIN_ROLES",
    "WORKLOADS",
    "WORKLOAD_ATTESTOR_OS",
    "Key",
    "Res",
    "T",
    "Validate",
    "agent_of",
    "agent_prefix",
    "as_dict",
    "as_list",
    "collector_key_settings",
    "config_of",
    "containers",
    "credential_name",
    "dig",
    "exclusive_selector_values",
    "find_bom",
    "first_compatible",
    "high_entropy",
    "human",
    "is_node_entry",
    "keyed_findings",
    "labels_of",
    "literal_value",
    "name_tokens",
    "plain",
    "pod_spec",
    "policy_named",
    "registration_spiffe_id",
    "seconds",
    "shannon_entropy",
    "stack_of",
    "strings",
    "text_findings",
    "uses_spiffe",
]
