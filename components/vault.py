"""Vault for agents: SVID-based login, 5-minute database credentials, one policy each, audit.

:class:`VaultIdentity` registers, from the pure :func:`components.render.vault.plan_vault`:

* a JWT auth backend that checks JWT-SVIDs against SPIRE's JWKS (or, with ``vault.auth:
  cert``, a TLS certificate backend trusting the trust bundle) and one login role per
  *active* agent, bound to exactly its SPIFFE ID, issuing ≤15-minute tokens that carry only
  the agent's policy;
* per database cluster a ``database`` mount with explicit lease TTLs (Vault's default is
  768h), its connections (admin password write-only, from a Pulumi secret; rotated by Vault
  right after configuration) and one role per agent grant;
* one policy per active agent (the rendered HCL, nothing else);
* an audit device.

Suspended agents get no login role, no policy and no database role.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_vault as vault
import pulumi_vault.database as vault_db
import pulumi_vault.generic as vault_generic
import pulumi_vault.jwt as vault_jwt

from components.config import NAMESPACE
from components.errors import ConfigError, Problem
from components.platform_model import Platform
from components.render.vault import (
    ADMIN_MAX_OPEN_CONNECTIONS,
    JWT_SUPPORTED_ALGS,
    AgentVaultPlan,
    ConnectionPlan,
    VaultPlan,
    plan_vault,
)
from components.shard import Scope, deploys_agents, deploys_shared


@dataclass(frozen=True)
class VaultIdentityArgs:
    """Inputs of :class:`VaultIdentity`."""

    platform: Platform
    """The validated platform; only its active agents get Vault access."""
    trust_bundle_pem: pulumi.Input[str] | None = None
    """The trust domain's CA bundle (``TrustDomain.trust_bundle_pem``); required for cert auth."""
    scope: Scope = "all"
    """``shared`` (a base): auth backend, database mounts and connections, audit; ``agents`` (a
    shard): login roles, policies and database roles on the base's mounts; ``all``: both."""


def _secret_problems(plan: VaultPlan, platform: Platform) -> list[Problem]:
    """Every admin password secret the plan needs must be set in the stack."""
    config = pulumi.Config(NAMESPACE)
    missing: dict[tuple[str, str], list[str]] = {}
    for conn in plan.connections:
        if config.get_secret(conn.password_secret) is None:
            users = missing.setdefault((conn.password_field, conn.password_secret), [])
            if conn.username not in users:
                users.append(conn.username)
    return [
        Problem(platform.config_file, None, field,
                f"names secret {secret!r}, which is not set; run `pulumi config set --secret {secret} "
                f"<initial password of {' and '.join(users)}>`")
        for (field, secret), users in sorted(missing.items())
    ]


def _joined(mount_path: pulumi.Output[str], prefix: str, suffix: str) -> pulumi.Output[str]:
    """``<prefix><mount path>/<suffix>`` once the mount exists."""
    return mount_path.apply(lambda p: f"{prefix}{p}/{suffix}")


class VaultIdentity(pulumi.ComponentResource):
    """Vault auth, database credentials, policies and audit for one stack's agents."""

    auth_path: pulumi.Output[str]
    """Mount path agents log in at (``auth/<path>/login``)."""
    auth_accessor: pulumi.Output[str]
    """Accessor of the auth mount (entity aliases and audit entries refer to it)."""
    login_roles: pulumi.Output[dict[str, str]]
    """Active agent -> its login role."""
    policies: pulumi.Output[dict[str, str]]
    """Active agent -> its policy name."""
    database_mounts: pulumi.Output[dict[str, str]]
    """Cluster -> mount path of its database secrets engine."""
    credential_paths: pulumi.Output[dict[str, list[str]]]
    """Active agent -> the ``<mount>/creds/<role>`` paths it may read."""
    audit_path: pulumi.Output[str]
    """Path of the audit device."""

    def __init__(self, name: str, args: VaultIdentityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("agentpassport:vault:VaultIdentity", name, None, opts)
        platform = args.platform
        plan = plan_vault(platform)  # every manifest/config problem, before any resource
        shared, per_agent = deploys_shared(args.scope), deploys_agents(args.scope)
        problems = _secret_problems(plan, platform) if shared else []
        if plan.auth == "cert" and per_agent and args.trust_bundle_pem is None:
            problems.append(Problem(platform.config_file, None, f"{NAMESPACE}:vault.auth",
                                    "cert auth needs the trust bundle of the TrustDomain; none was passed"))
        if problems:
            raise ConfigError(problems)
        child = pulumi.ResourceOptions(parent=self)

        self.auth_path, self.auth_accessor = self._auth(name, plan, args.trust_bundle_pem, child, args.scope)
        for agent in plan.agents if per_agent else ():
            vault.Policy(f"{name}-{agent.agent}-policy", name=agent.policy_name, policy=agent.policy_hcl,
                         opts=child)

        mounts: dict[str, vault.Mount] = {}
        for m in plan.mounts if shared else ():
            mounts[m.cluster] = vault.Mount(
                f"{name}-db-{m.cluster}",
                path=m.path,
                type="database",
                description=f"Agent Passport: dynamic credentials on database cluster {m.cluster}",
                default_lease_ttl_seconds=m.default_lease_ttl,
                max_lease_ttl_seconds=m.max_lease_ttl,
                # the generated user name is not secret and is what a DBA sees: keep it readable
                # in the audit log so a lease traces to a database user without audit-hash
                audit_non_hmac_response_keys=["username"],
                opts=child,
            )
        connections: dict[tuple[str, str], vault_db.SecretBackendConnection] = {}
        for conn in plan.connections if shared else ():
            connections[(conn.cluster, conn.name)] = self._connection(name, conn, mounts[conn.cluster], child)
        mount_paths = {m.cluster: m.path for m in plan.mounts}
        for role in plan.database_roles if per_agent else ():
            # a shard's roles name the base's mount and connection (their paths are fixed by the plan)
            connection = connections.get((role.cluster, role.connection))
            vault_db.SecretBackendRole(
                f"{name}-{role.agent}-db-{role.cluster}-{role.connection}",
                backend=mounts[role.cluster].path if role.cluster in mounts else mount_paths[role.cluster],
                name=role.name,
                db_name=connection.name if connection is not None else role.connection,
                creation_statements=list(role.statements.creation),
                revocation_statements=list(role.statements.revocation),
                default_ttl=role.default_ttl,
                max_ttl=role.max_ttl,
                opts=child,
            )

        if shared:
            self._quotas(name, plan, self.auth_path, mounts, child)

        audit_path = f"agent-passport-{plan.audit_type}"
        if shared:
            audit = vault.Audit(
                f"{name}-audit",
                type=plan.audit_type,
                path=audit_path,
                description="Agent Passport: every request and response, secrets HMAC'd",
                options=dict(plan.audit_options),
                opts=child,
            )
            self.audit_path = audit.path
        else:
            self.audit_path = pulumi.Output.from_input(audit_path)
        agents = plan.agents if per_agent else ()
        self.login_roles = pulumi.Output.from_input({a.agent: a.role for a in agents})
        self.policies = pulumi.Output.from_input({a.agent: a.policy_name for a in agents})
        self.database_mounts = pulumi.Output.from_input({m.cluster: m.path for m in plan.mounts})
        self.credential_paths = pulumi.Output.from_input(
            {a.agent: [r.creds_path for r in a.database_roles] for a in agents})
        self.register_outputs({
            "authPath": self.auth_path,
            "authAccessor": self.auth_accessor,
            "loginRoles": self.login_roles,
            "policies": self.policies,
            "databaseMounts": self.database_mounts,
            "credentialPaths": self.credential_paths,
            "auditPath": self.audit_path,
        })

    # ------------------------------------------------------------------ storm controls

    def _quotas(self, name: str, plan: VaultPlan, auth_path: pulumi.Output[str], mounts: dict[str, vault.Mount],
                child: pulumi.ResourceOptions) -> None:
        """Rate-limit quotas on the login path and each database mount's creds/* (per client
        IP; sized in components.capacity.quota_rates). Their paths come from the mounts'
        outputs, so each quota is created after the mount it names."""
        clusters = {m.path: m.cluster for m in plan.mounts}
        for q in plan.quotas:
            if q.mount in clusters:
                path = _joined(mounts[clusters[q.mount]].path, "", q.suffix)
            else:
                path = _joined(auth_path, "auth/", q.suffix)
            vault.QuotaRateLimit(f"{name}-quota-{q.key}", name=q.name, path=path, rate=q.rate,
                                 interval=q.interval, opts=child)

    # ------------------------------------------------------------------ auth

    def _auth(
        self, name: str, plan: VaultPlan, trust_bundle_pem: pulumi.Input[str] | None,
        child: pulumi.ResourceOptions, scope: Scope = "all",
    ) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        if not deploys_shared(scope):  # a shard: the base's backend, at the plan's fixed path
            for agent in plan.agents:
                if plan.auth == "jwt":
                    self._jwt_role(name, plan, agent, plan.auth_mount, child)
                else:
                    self._cert_role(name, plan, agent, plan.auth_mount, trust_bundle_pem, child)
            return pulumi.Output.from_input(plan.auth_mount), pulumi.Output.from_input("")
        agents = plan.agents if deploys_agents(scope) else ()
        # the role an agent asks for is not secret; failed logins have no auth block, so the
        # clear role name is how an audit reader sees who tried
        tune_ttl, tune_max, clear_keys = f"{plan.token_ttl}s", f"{plan.token_max_ttl}s", ["role"]
        if plan.auth == "jwt":
            jwt_backend = vault_jwt.AuthBackend(
                f"{name}-jwt",
                path=plan.auth_mount,
                type="jwt",
                description="Agent Passport: agents log in with JWT-SVIDs from SPIRE",
                jwks_url=plan.jwks_url,
                jwks_ca_pem=plan.jwks_ca_pem,
                bound_issuer=plan.jwt_issuer,
                jwt_supported_algs=list(JWT_SUPPORTED_ALGS),
                tune=vault_jwt.AuthBackendTuneArgs(default_lease_ttl=tune_ttl, max_lease_ttl=tune_max,
                                                   token_type=plan.token_type,
                                                   audit_non_hmac_request_keys=clear_keys),
                opts=child,
            )
            for agent in agents:
                self._jwt_role(name, plan, agent, jwt_backend.path, child)
            return jwt_backend.path.apply(lambda p: p or plan.auth_mount), jwt_backend.accessor
        cert_backend = vault.AuthBackend(
            f"{name}-cert",
            path=plan.auth_mount,
            type="cert",
            description="Agent Passport: agents log in with X.509-SVIDs over mutual TLS",
            tune=vault.AuthBackendTuneArgs(default_lease_ttl=tune_ttl, max_lease_ttl=tune_max,
                                           token_type=plan.token_type,
                                           audit_non_hmac_request_keys=clear_keys),
            opts=child,
        )
        for agent in agents:
            self._cert_role(name, plan, agent, cert_backend.path, trust_bundle_pem, child)
        return cert_backend.path, cert_backend.accessor

    def _cert_role(
        self, name: str, plan: VaultPlan, agent: AgentVaultPlan, backend: pulumi.Input[str | None],
        trust_bundle_pem: pulumi.Input[str] | None, child: pulumi.ResourceOptions,
    ) -> None:
        vault.CertAuthBackendRole(
            f"{name}-{agent.agent}-login",
            backend=backend,
            name=agent.role,
            display_name=agent.role,
            certificate=trust_bundle_pem,
            allowed_uri_sans=[agent.spiffe_id],
            token_policies=[agent.policy_name],
            token_no_default_policy=True,
            token_ttl=plan.token_ttl,
            token_max_ttl=plan.token_max_ttl,
            token_type=plan.token_type,
            opts=child,
        )

    def _jwt_role(
        self, name: str, plan: VaultPlan, agent: AgentVaultPlan, backend: pulumi.Input[str | None],
        child: pulumi.ResourceOptions,
    ) -> None:
        vault_jwt.AuthBackendRole(
            f"{name}-{agent.agent}-login",
            backend=backend,
            role_name=agent.role,
            role_type="jwt",
            user_claim="sub",
            bound_subject=agent.spiffe_id,
            bound_audiences=list(agent.audiences),
            token_policies=[agent.policy_name],
            token_no_default_policy=True,
            token_ttl=plan.token_ttl,
            token_max_ttl=plan.token_max_ttl,
            token_type=plan.token_type,
            opts=child,
        )

    # ------------------------------------------------------------------ databases

    def _connection(
        self, name: str, conn: ConnectionPlan, mount: vault.Mount, child: pulumi.ResourceOptions
    ) -> vault_db.SecretBackendConnection:
        # write-only: sent to Vault on create and when passwordVersion changes, never read back,
        # so Vault's rotated password is not overwritten by the stale initial one on updates
        password = pulumi.Config(NAMESPACE).require_secret(conn.password_secret)
        postgresql = mysql = None
        if conn.engine == "postgres":
            postgresql = vault_db.SecretBackendConnectionPostgresqlArgs(
                connection_url=conn.connection_url,
                username=conn.username,
                password_wo=password,
                password_wo_version=conn.password_version,
                username_template=conn.username_template,
                # Vault sends a SCRAM verifier, never the clear password, in CREATE/ALTER ROLE
                password_authentication="scram-sha-256",
                max_open_connections=ADMIN_MAX_OPEN_CONNECTIONS,
            )
        else:
            mysql = vault_db.SecretBackendConnectionMysqlArgs(
                connection_url=conn.connection_url,
                username=conn.username,
                password_wo=password,
                password_wo_version=conn.password_version,
                username_template=conn.username_template,
                max_open_connections=ADMIN_MAX_OPEN_CONNECTIONS,
            )
        connection = vault_db.SecretBackendConnection(
            f"{name}-db-{conn.cluster}-{conn.name}",
            backend=mount.path,
            name=conn.name,
            allowed_roles=list(conn.allowed_roles),
            verify_connection=True,
            root_rotation_statements=list(conn.root_rotation_statements),
            postgresql=postgresql,
            mysql=mysql,
            opts=child,
        )
        if conn.rotate_root:
            # The provider has no rotate-root action: a write-only generic endpoint POSTs
            # <mount>/rotate-root/<connection> once the connection exists (its path depends on
            # the connection's outputs). Never read, never deleted; a new passwordVersion
            # renames it, so a new initial password is rotated away again.
            vault_generic.Endpoint(
                f"{name}-db-{conn.cluster}-{conn.name}-rotate-root-v{conn.password_version}",
                path=pulumi.Output.all(connection.backend, connection.name).apply(
                    lambda parts: f"{parts[0]}/rotate-root/{parts[1]}"),
                data_json=json.dumps({}),
                disable_read=True,
                disable_delete=True,
                opts=child,
            )
        return connection
