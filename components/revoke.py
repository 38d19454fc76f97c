"""``passport revoke``: the incident kill switch, before any ``pulumi up``.

For one agent of one stack it adds the agent's SPIFFE ID to every gateway's revocation list (the
gateways' OPA watches it and denies that ID within seconds of the kubelet refreshing the volume,
which the command triggers at once), revokes the agent's Vault database leases by prefix and its
Vault tokens, disables its Vault identity entity (a token it still holds, batch tokens included,
is then refused), deletes its SPIRE registration entries through the SPIRE server API, and
prints what it did and what stays valid until when: SVIDs and AWS sessions already issued
cannot be recalled, their TTL is the kill switch (docs/runbook.md). ``--undo`` takes the ID off
the gateways' lists again.

It uses only the operator's own short-lived credentials (``VAULT_TOKEN`` from the environment;
the SPIRE server's admin socket) and refuses to run against a target it cannot confirm: the
Vault's agent auth mount must trust this stack's SPIRE issuer (or, for cert auth, hold roles of
this trust domain), and the SPIRE server's bundle must be this stack's trust domain. Without
``--yes`` it only reads and prints the plan (a dry run).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import hvac
import hvac.exceptions
import requests

from components.durations import format_duration, seconds
from components.platform_model import Platform
from components.render import rego
from components.render.vault import database_mount

HTTP_TIMEOUT = 10.0
SPIRE_TIMEOUT = 30.0


class RevokeRefused(Exception):
    """The target could not be confirmed, or the operator's credentials are not acceptable."""


@dataclass(frozen=True)
class RevokePlan:
    """Everything the agent's manifest says about what to revoke (works for suspended agents too)."""

    agent: str
    spiffe_id: str
    trust_domain: str
    auth: str
    auth_mount: str
    vault_role: str
    jwt_issuer: str
    lease_prefixes: tuple[str, ...]
    still_valid: tuple[tuple[str, int], ...]
    """(what, seconds) that remain valid after revocation: already minted SVIDs, AWS sessions."""
    registrations: tuple[tuple[str, str], ...]
    """(kind, name) of the Kubernetes objects that would re-create the SPIRE entries."""
    vault: bool = True
    spire: bool = True
    gateways: tuple[tuple[str, str, str], ...] = ()
    """(service, namespace, revocation-list ConfigMap) of every gateway of the environment."""
    entity_alias: str = ""
    """Name of the agent's Vault entity alias: its SPIFFE ID (JWT auth) or its X.509-SVID's CN,
    the first DNS name (cert auth); empty when it has none (it cannot log in with cert auth)."""

    @property
    def longest(self) -> tuple[str, int]:
        return max(self.still_valid, key=lambda x: x[1])


def plan_revocation(platform: Platform, name: str) -> RevokePlan:
    """The revocation plan for ``name`` in ``platform`` (pure)."""
    agent = platform.agent(name)
    if agent is None:
        where = "is not in this environment" if name in platform.excluded else "has no manifest"
        raise RevokeRefused(f"agent {name!r} {where} (stack {platform.stack})")
    cfg = platform.config
    ident = agent.identity
    leases = tuple(sorted({f"{database_mount(g.cluster)}/creds/{ident.database_role(g)}"
                           for _, g in agent.grants_of("database")}))
    valid = [("X.509-SVIDs already issued", ident.x509_svid_ttl_seconds),
             ("JWT-SVIDs already issued", ident.jwt_svid_ttl_seconds)]
    for _, g in agent.grants_of("aws"):
        if cfg.subsystems.aws:
            valid.append((f"AWS sessions of role {ident.aws_role_name(g.role)}", seconds(g.session_duration)))
    kind = "ClusterStaticEntry" if ident.platform == "vm" or (
        ident.platform == "windows" and ident.namespace is None) else "ClusterSPIFFEID"
    regs = [(kind, f"agent.{name}")]
    if ident.platform == "vm" and agent.manifest.spec.platform.vm is not None \
            and agent.manifest.spec.platform.vm.attestation == "aws_iid":
        regs.append(("ClusterStaticEntry", f"node.{name}"))
    gateways = []
    if cfg.subsystems.authz:
        from components.render.authz import revocations_configmap_name
        from components.render.envoy import gateway_of

        for svc in platform.services:
            if svc.manifest.spec.gateway:
                gw = gateway_of(platform, svc)
                gateways.append((svc.name, gw.namespace, revocations_configmap_name(gw)))
    dns = agent.manifest.spec.identity.dns_names
    alias = ident.spiffe_id if cfg.vault.auth == "jwt" else (dns[0] if dns else "")
    return RevokePlan(
        agent=name,
        spiffe_id=ident.spiffe_id,
        trust_domain=cfg.trust_domain,
        auth=cfg.vault.auth,
        auth_mount=cfg.vault.jwt_mount if cfg.vault.auth == "jwt" else cfg.vault.cert_mount,
        vault_role=ident.vault_role,
        jwt_issuer=cfg.jwt_issuer,
        lease_prefixes=leases,
        still_valid=tuple(valid),
        registrations=tuple(regs),
        vault=cfg.subsystems.vault,
        spire=cfg.subsystems.spire,
        gateways=tuple(sorted(gateways)),
        entity_alias=alias,
    )


# --------------------------------------------------------------------------- Vault


_HTTP_STATUS: Mapping[type[hvac.exceptions.VaultError], int] = {
    hvac.exceptions.InvalidRequest: 400,
    hvac.exceptions.Unauthorized: 401,
    hvac.exceptions.Forbidden: 403,
    hvac.exceptions.InvalidPath: 404,
    hvac.exceptions.RateLimitExceeded: 429,
    hvac.exceptions.InternalServerError: 500,
    hvac.exceptions.VaultNotInitialized: 501,
    hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultDown: 503,
}
_HEALTH_CODES = (429, 472, 473, 501, 503)
"""sys/health answers these for standbys, DR/performance secondaries, uninitialised or sealed."""


@dataclass
class VaultClient:
    """The Vault/OpenBao calls revoke makes, through hvac (bounded timeouts, the operator's CA).

    Every failure becomes a :class:`RevokeRefused` naming the call and Vault's answer; a 404 on
    a listing or lookup reads as "nothing there".
    """

    address: str
    token: str
    timeout: float = HTTP_TIMEOUT
    ca_file: str | None = None
    hvac: hvac.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.hvac = hvac.Client(url=self.address.rstrip("/"), token=self.token, timeout=self.timeout,
                                verify=self.ca_file or True)

    def _call(self, method: str, path: str, call: Callable[[], Any], ok_missing: bool = False) -> dict[str, Any] | None:
        try:
            resp = call()
        except hvac.exceptions.VaultError as exc:
            if ok_missing and isinstance(exc, hvac.exceptions.InvalidPath):
                return None
            code = _HTTP_STATUS.get(type(exc), "?")
            detail = (exc.text or str(exc.args[0] if exc.args else "")).strip()
            raise RevokeRefused(f"Vault {method} {path}: HTTP {code} {detail}") from None
        except requests.exceptions.RequestException as exc:
            raise RevokeRefused(f"cannot reach Vault at {self.address}: {exc}") from None
        if isinstance(resp, requests.Response):  # hvac hands back non-200 answers as they came
            if resp.status_code not in (204, *_HEALTH_CODES):
                raise RevokeRefused(f"Vault {method} {path}: HTTP {resp.status_code} {resp.text.strip()}")
            return dict(resp.json()) if resp.content.strip() else {}
        return dict(resp) if resp else {}

    def health(self) -> dict[str, Any]:
        """sys/health: also read when Vault answers sealed, standby or uninitialised."""
        resp = self._call("GET", "sys/health", lambda: self.hvac.adapter.get(
            "/v1/sys/health", raise_exception=False))
        return resp or {}

    def read(self, path: str) -> dict[str, Any]:
        return self._call("GET", path, lambda: self.hvac.adapter.get(f"/v1/{path}")) or {}

    def list_keys(self, path: str) -> list[str]:
        resp = self._call("LIST", path, lambda: self.hvac.adapter.list(f"/v1/{path}"), ok_missing=True)
        if resp is None:
            return []
        return [str(k) for k in (resp.get("data") or {}).get("keys") or []]

    def leases(self, prefix: str) -> list[str]:
        """The lease IDs under ``prefix`` (``LIST sys/leases/lookup/<prefix>``; none when it is unknown)."""
        path = f"sys/leases/lookup/{prefix}"
        resp = self._call("LIST", path, lambda: self.hvac.sys.list_leases(prefix), ok_missing=True)
        return [str(k) for k in ((resp or {}).get("data") or {}).get("keys") or []]

    def auth_methods(self) -> dict[str, Any]:
        return self._call("GET", "sys/auth", self.hvac.sys.list_auth_methods) or {}

    def lookup_self(self) -> dict[str, Any]:
        return self._call("GET", "auth/token/lookup-self", self.hvac.auth.token.lookup_self) or {}

    def lookup_accessor(self, accessor: str) -> dict[str, Any] | None:
        return self._call("POST", "auth/token/lookup-accessor",
                          lambda: self.hvac.auth.token.lookup_accessor(accessor), ok_missing=True)

    def revoke_accessor(self, accessor: str) -> None:
        self._call("POST", "auth/token/revoke-accessor", lambda: self.hvac.auth.token.revoke_accessor(accessor))

    def revoke_prefix(self, prefix: str) -> None:
        # explicit sync: the call returns once the database users are dropped (hvac's
        # sys.revoke_prefix leaves it to Vault's default)
        path = f"sys/leases/revoke-prefix/{prefix}"
        self._call("PUT", path, lambda: self.hvac.adapter.put(f"/v1/{path}", json={"sync": True}))

    def lookup_entity(self, alias_name: str, mount_accessor: str) -> str | None:
        found = self._call("POST", "identity/lookup/entity", lambda: self.hvac.secrets.identity.lookup_entity(
            alias_name=alias_name, alias_mount_accessor=mount_accessor)) or {}
        entity = (found.get("data") or {}).get("id")
        return str(entity) if entity else None

    def disable_entity(self, entity_id: str) -> None:
        self._call("POST", f"identity/entity/id/{entity_id}",
                   lambda: self.hvac.secrets.identity.update_entity(entity_id, disabled=True))


def _check_operator_token(vault: VaultClient) -> str:
    self_ = vault.lookup_self().get("data") or {}
    ttl = int(self_.get("ttl") or 0)
    if ttl <= 0 or "root" in (self_.get("policies") or []):
        raise RevokeRefused(
            "VAULT_TOKEN never expires (a root or non-expiring token); log in as yourself for a "
            "short-lived token (e.g. `vault login -method=oidc`) and run again")
    return f"{self_.get('display_name') or 'operator'} (token expires in {format_duration(ttl)})"


def confirm_vault(vault: VaultClient, plan: RevokePlan) -> tuple[str, str]:
    """Refuse unless this Vault's agent auth mount belongs to this stack. Returns (cluster, accessor)."""
    health = vault.health()
    if health.get("sealed"):
        raise RevokeRefused(f"Vault at {vault.address} is sealed")
    mounts = vault.auth_methods()
    table = mounts.get("data") or mounts
    mount = table.get(f"{plan.auth_mount}/")
    if not isinstance(mount, dict) or mount.get("type") != plan.auth:
        raise RevokeRefused(
            f"Vault at {vault.address} has no {plan.auth} auth mount {plan.auth_mount!r}: not this stack's Vault")
    if plan.auth == "jwt":
        conf = vault.read(f"auth/{plan.auth_mount}/config").get("data") or {}
        if conf.get("bound_issuer") != plan.jwt_issuer:
            raise RevokeRefused(
                f"Vault's {plan.auth_mount} mount trusts issuer {conf.get('bound_issuer')!r}, not this stack's "
                f"{plan.jwt_issuer!r}: refusing to revoke on a Vault of another trust domain")
    else:
        roles = vault.list_keys(f"auth/{plan.auth_mount}/certs")
        sans: list[str] = []
        for role in roles[:20]:
            data = vault.read(f"auth/{plan.auth_mount}/certs/{role}").get("data") or {}
            sans.extend(data.get("allowed_uri_sans") or [])
        if not any(s.startswith(f"spiffe://{plan.trust_domain}/") for s in sans):
            raise RevokeRefused(
                f"no cert role on Vault's {plan.auth_mount} mount admits SPIFFE IDs of {plan.trust_domain}")
    return str(health.get("cluster_name") or "?"), str(mount.get("accessor") or "")


def _agent_accessors(vault: VaultClient, plan: RevokePlan) -> list[str]:
    found = []
    login_path = f"auth/{plan.auth_mount}/login"
    for accessor in vault.list_keys("auth/token/accessors"):
        data = (vault.lookup_accessor(accessor) or {}).get("data") or {}
        meta = data.get("meta") or {}
        if str(data.get("path") or "").startswith(login_path) and plan.vault_role in (
                meta.get("role"), meta.get("cert_name")):
            found.append(accessor)
    return sorted(found)


# --------------------------------------------------------------------------- SPIRE


SpireRunner = Callable[[list[str]], dict[str, Any]]


def spire_cli_runner(binary: str, socket: str, timeout: float = SPIRE_TIMEOUT) -> SpireRunner:
    """Run ``spire-server <args> -socketPath <socket> -output json`` and parse its JSON."""

    def run(args: list[str]) -> dict[str, Any]:
        cmd = [binary, *args, "-socketPath", socket, "-output", "json"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RevokeRefused(f"spire-server {' '.join(args[:2])} failed: {exc}") from None
        if out.returncode != 0:
            raise RevokeRefused(f"spire-server {' '.join(args[:2])}: {out.stderr.strip() or out.stdout.strip()}")
        return dict(json.loads(out.stdout or "{}"))

    return run


def confirm_spire(run: SpireRunner, plan: RevokePlan) -> None:
    bundle = run(["bundle", "show"])
    td = bundle.get("trust_domain", bundle.get("trustDomain"))
    if td != plan.trust_domain:
        raise RevokeRefused(
            f"the SPIRE server's trust domain is {td!r}, not this stack's {plan.trust_domain!r}")


def spire_entries(run: SpireRunner, plan: RevokePlan) -> list[str]:
    resp = run(["entry", "show", "-spiffeID", plan.spiffe_id])
    return sorted(str(e["id"]) for e in resp.get("entries") or [])


# --------------------------------------------------------------------------- gateways (Kubernetes)


KubeRunner = Callable[[list[str], str | None], str]
"""Run ``kubectl <args>`` (with stdin) and return its stdout; raise RevokeRefused on failure."""

REVOCATIONS_LABEL = "agentpassport.dev/revocations"
REFRESH_ANNOTATION = "agentpassport.dev/revocations-sha256"
"""Set on the gateway pods after a change: the kubelet refreshes a pod's ConfigMap volumes
when the pod changes, instead of at its next periodic sync (up to about a minute later)."""
NOT_FOUND = "NotFound"


def kubectl_runner(binary: str, context: str | None = None, kubeconfig: str | None = None,
                   timeout: float = SPIRE_TIMEOUT) -> KubeRunner:
    """``kubectl [--kubeconfig K] [--context C] <args>``; NotFound errors raise with NOT_FOUND."""
    base = [binary, *(["--kubeconfig", kubeconfig] if kubeconfig else []), *(["--context", context] if context else [])]

    def run(args: list[str], stdin: str | None = None) -> str:
        try:
            out = subprocess.run([*base, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                                 check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RevokeRefused(f"kubectl {' '.join(args[:2])} failed: {exc}") from None
        if out.returncode != 0:
            detail = out.stderr.strip() or out.stdout.strip()
            raise RevokeRefused(f"{NOT_FOUND}: {detail}" if "NotFound" in detail or "not found" in detail
                                else f"kubectl {' '.join(args[:2])}: {detail}")
        return out.stdout

    return run


@dataclass
class _GatewayList:
    service: str
    namespace: str
    name: str
    obj: dict[str, Any] | None
    """The ConfigMap as read (None: the gateway is not deployed)."""
    ids: dict[str, Any]


def _read_list(kube: KubeRunner, service: str, namespace: str, name: str) -> _GatewayList:
    try:
        obj = json.loads(kube(["get", "configmap", name, "-n", namespace, "-o", "json"], None))
    except RevokeRefused as exc:
        if str(exc).startswith(NOT_FOUND):
            return _GatewayList(service, namespace, name, None, {})
        raise
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if labels.get(REVOCATIONS_LABEL) != "true" or labels.get("agentpassport.dev/gateway") != service:
        raise RevokeRefused(f"ConfigMap {namespace}/{name} is not the revocation list of gateway {service} "
                            "(labels differ): not this stack's cluster?")
    try:
        document = json.loads(((obj.get("data") or {}).get(rego.REVOCATIONS_FILE)) or "null")
    except ValueError:
        document = None
    ids = rego.revoked_ids(document)
    if ids is None:
        raise RevokeRefused(
            f"the revocation list of gateway {service} ({namespace}/{name}) is unreadable: its OPA keeps the last "
            "list it could read; repair the ConfigMap's revocations.json before revoking again")
    return _GatewayList(service, namespace, name, obj, ids)


def _write_list(kube: KubeRunner, gl: _GatewayList, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Replace the list with ``change(ids)`` (optimistic concurrency: the resourceVersion read;
    on a conflict read it again and apply the change to what is there now), then make the
    kubelet refresh the gateway pods' volume now."""
    for _ in range(3):
        assert gl.obj is not None
        text = rego_json(rego.revocation_document(change(dict(gl.ids))))
        obj = json.loads(json.dumps(gl.obj))
        obj["data"] = {**(obj.get("data") or {}), rego.REVOCATIONS_FILE: text}
        try:
            kube(["replace", "-f", "-", "-o", "name"], json.dumps(obj))
            break
        except RevokeRefused as exc:
            if "conflict" not in str(exc).lower() and "has been modified" not in str(exc):
                raise
            gl = _read_list(kube, gl.service, gl.namespace, gl.name)
    else:
        raise RevokeRefused(f"the revocation list of gateway {gl.service} kept changing; run again")
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    kube(["annotate", "pods", "-n", gl.namespace, "-l", f"agentpassport.dev/gateway={gl.service}",
          f"{REFRESH_ANNOTATION}={digest}", "--overwrite"], None)


def rego_json(document: Mapping[str, Any]) -> str:
    from components.render.yamlout import dump_json

    return dump_json(document)


def _gateway_step(kube: KubeRunner, plan: RevokePlan, lists: list[_GatewayList], *, yes: bool, undo: bool,
                  now: datetime, say: Callable[[str], None]) -> None:
    deployed = [gl for gl in lists if gl.obj is not None]
    for gl in lists:
        if gl.obj is None:
            say(f"gateways     {gl.service}: no revocation list ({gl.namespace}/{gl.name} not found): gateway not "
                "deployed")
    entry = {"agent": plan.agent, "revokedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def change(ids: dict[str, Any]) -> dict[str, Any]:
        if undo:
            ids.pop(plan.spiffe_id, None)
        else:
            ids.setdefault(plan.spiffe_id, entry)
        return ids

    changed = []
    for gl in deployed:
        if (plan.spiffe_id in gl.ids) != undo:  # already listed (revoke) / not listed (undo): nothing to do
            continue
        if yes:
            _write_list(kube, gl, change)
        changed.append(gl.service)
    done = len(deployed) - len(changed)
    if undo:
        verb = "lifted" if yes else "would lift"
        say(f"gateways     {verb} the revocation of {plan.spiffe_id} at {len(changed)} gateway(s)"
            + (f": {', '.join(changed)}" if changed else "") + (f" ({done} did not list it)" if done else ""))
    else:
        verb = "revoked" if yes else "would revoke"
        say(f"gateways     {verb} {plan.spiffe_id} at {len(changed)} gateway(s)"
            + (f": {', '.join(changed)}" if changed else "") + (f" ({done} already listed it)" if done else ""))
    if yes and changed:
        say("gateways     their OPA reloads the list as soon as the kubelet refreshes the volume (pods annotated "
            "to refresh now; at the latest the kubelet's sync period, about a minute)"
            + ("; a gateway that cannot read its list denies every request" if not undo else ""))


# --------------------------------------------------------------------------- the command


def revoke(
    platform: Platform,
    name: str,
    *,
    yes: bool,
    env: Mapping[str, str],
    out: TextIO,
    vault_addr: str | None = None,
    spire_runner: SpireRunner | None = None,
    now: datetime | None = None,
    http_timeout: float = HTTP_TIMEOUT,
    kube_runner: KubeRunner | None = None,
    undo: bool = False,
) -> int:
    """Revoke (or, without ``yes``, plan to revoke) one agent's credentials. Returns an exit code.

    ``undo``: only take the agent's SPIFFE ID off the gateways' revocation lists (Vault and
    SPIRE are restored by re-enabling the entity and ``pulumi up``; the output says how).
    """
    plan = plan_revocation(platform, name)
    now = now or datetime.now(UTC)
    verb = "revoked" if yes else "would revoke"

    def say(text: str) -> None:
        print(text, file=out)

    mode = ("UNDO" if yes else "DRY RUN (undo)") if undo else ("REVOKE" if yes else "DRY RUN")
    say(f"{mode}: agent {name} ({plan.spiffe_id}), stack {platform.stack}")

    # ---- gateways: read every revocation list first (refuse on one that is not ours or unreadable)
    lists: list[_GatewayList] = []
    if plan.gateways and kube_runner is not None:
        lists = [_read_list(kube_runner, svc, ns, cm) for svc, ns, cm in plan.gateways]
    if undo:
        if kube_runner is None or not plan.gateways:
            raise RevokeRefused("--undo lifts a revocation at the gateways: this stack has no gateways or no "
                                "cluster to reach (pass --kube-context)")
        _gateway_step(kube_runner, plan, lists, yes=yes, undo=True, now=now, say=say)
        say("vault        unchanged: if the entity was disabled, re-enable it with `vault write "
            "identity/entity/id/<id> disabled=false`; tokens and leases revoked stay revoked (the agent logs in again)")
        say("spire        unchanged: `pulumi up` (with spec.suspended false) re-creates deleted registrations")
        if not yes:
            say("dry run: nothing was changed; run again with --yes to lift the revocation")
        return 0

    # ---- confirm every target before touching any
    vault: VaultClient | None = None
    accessor = ""
    if plan.vault:
        token = env.get("VAULT_TOKEN", "")
        if not token:
            raise RevokeRefused("VAULT_TOKEN is not set: export your own short-lived Vault token")
        vault = VaultClient(vault_addr or platform.config.vault.address, token, http_timeout,
                            env.get("VAULT_CACERT") or None)
        cluster, accessor = confirm_vault(vault, plan)
        who = _check_operator_token(vault)
        say(f"vault        {vault.address} (cluster {cluster}) confirmed: {plan.auth_mount} trusts "
            f"{plan.jwt_issuer if plan.auth == 'jwt' else plan.trust_domain}; operator {who}")
    if plan.spire and spire_runner is not None:
        confirm_spire(spire_runner, plan)
        say(f"spire        server confirmed: trust domain {plan.trust_domain}")

    # ---- gateways first: the fastest way to stop the agent's calls
    if plan.gateways and kube_runner is not None:
        _gateway_step(kube_runner, plan, lists, yes=yes, undo=False, now=now, say=say)
    elif plan.gateways:
        say("gateways     skipped (no cluster to reach: pass --kube-context); the gateways keep admitting "
            f"{plan.spiffe_id} for its grants until `pulumi up` of the suspension")

    # ---- Vault: leases, tokens, entity
    if vault is not None:
        for prefix in plan.lease_prefixes:
            leases = vault.leases(prefix)
            if yes:
                vault.revoke_prefix(prefix)
            say(f"vault        {verb} {len(leases)} lease(s) under {prefix} (database users dropped)")
        accessors = _agent_accessors(vault, plan)
        for acc in accessors:
            if yes:
                vault.revoke_accessor(acc)
        say(f"vault        {verb} {len(accessors)} token(s) of role {plan.vault_role}")
        entity = None
        if plan.entity_alias and accessor:
            entity = vault.lookup_entity(plan.entity_alias, accessor)
        if entity:
            if yes:
                vault.disable_entity(entity)
            say(f"vault        {'disabled' if yes else 'would disable'} identity entity {entity} (any token "
                f"it still holds is refused; re-enable with `vault write identity/entity/id/{entity} disabled=false`)")
        elif plan.entity_alias:
            what = "SPIFFE ID" if plan.auth == "jwt" else f"certificate name {plan.entity_alias}"
            say(f"vault        no identity entity for this {what} (never logged in)")
        else:
            say("vault        no entity to disable: under cert auth Vault names the entity after the "
                "certificate's common name, and this agent has no DNS name (its SVID no CN), so it cannot "
                "log in with cert auth")
    else:
        say("vault        not deployed in this stack")

    # ---- SPIRE entries
    if plan.spire and spire_runner is not None:
        entries = spire_entries(spire_runner, plan)
        deleted = []
        for entry in entries:
            if yes:
                resp = spire_runner(["entry", "delete", "-entryID", entry])
                for result in resp.get("results") or []:
                    code = (result.get("status") or {}).get("code", 0)
                    if code not in (0, None):
                        raise RevokeRefused(f"SPIRE refused to delete entry {entry}: {result.get('status')}")
            deleted.append(entry)
        say(f"spire        {'deleted' if yes else 'would delete'} {len(deleted)} registration entr"
            f"{'y' if len(deleted) == 1 else 'ies'}: {', '.join(deleted) or '-'}")
        for kind, obj in plan.registrations:
            say(f"spire        spire-controller-manager re-creates entries from {kind} {obj} until `pulumi up` "
                f"removes it: `kubectl delete {kind.lower()} {obj}` to stop it now")
    elif plan.spire:
        say("spire        skipped (no --spire-server-socket); in the server pod run: "
            f"spire-server entry show -spiffeID {plan.spiffe_id}, then entry delete -entryID <id>")

    # ---- what stays valid
    what, ttl = plan.longest
    for item, secs in plan.still_valid:
        until = (now + timedelta(seconds=secs)).strftime("%Y-%m-%dT%H:%M:%SZ")
        say(f"still valid  {item}: up to {format_duration(secs)}, until {until} at the latest")
    until = (now + timedelta(seconds=ttl)).strftime("%Y-%m-%dT%H:%M:%SZ")
    say(f"remains valid until {until} ({what}, {format_duration(ttl)}); the alert "
        f"agentpassport-{platform.stack}-suspended-identity-used must stay silent after that")
    if not yes:
        say("dry run: nothing was changed; run again with --yes to revoke")
    else:
        say("next: suspend the agent in a PR (spec.suspended: true) and `pulumi up` (docs/runbook.md)")
    return 0


def find_spire_server(explicit: str | None) -> str | None:
    """The spire-server binary: --spire-server-bin, PATH, or the bootstrap-tools cache."""
    if explicit:
        return explicit
    found = shutil.which("spire-server")
    if found:
        return found
    cached = os.path.expanduser("~/.cache/agent-passport/tools/bin/spire-server")
    return cached if os.path.exists(cached) else None


def find_kubectl(explicit: str | None) -> str | None:
    """The kubectl binary: --kubectl-bin, PATH, or the bootstrap-tools cache."""
    if explicit:
        return explicit
    found = shutil.which("kubectl")
    if found:
        return found
    cached = os.path.expanduser("~/.cache/agent-passport/tools/bin/kubectl")
    return cached if os.path.exists(cached) else None
