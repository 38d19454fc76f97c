"""The credential chain on real engines: a SPIRE JWT-SVID logs in to OpenBao, gets 5-minute
PostgreSQL credentials, and loses them on expiry and on ``passport revoke``.

Everything is real and on 127.0.0.1 (tests/support/chain.py): spire-server 1.15.3 with the
rendered dev server.conf (tests/support/spire_server.py says what is adapted), SPIRE's OIDC discovery
provider with the rendered config serving the JWKS, OpenBao 2.7.2 (the venv's ``bao``)
configured by :mod:`components.vault_apply` from the plan the Pulumi resources are built from
(their equivalence is tests/unit/test_vault_apply.py), PostgreSQL 15 set up as docs/vault.md tells a
DBA, and the ``passport revoke`` CLI. The short-TTL stack gives agent-cortex's grant a
10-second lease.

A missing tool skips on a user's machine and fails in CI, naming it.
"""

# SQL in this module is built from the tests' own constants and Vault-generated user names.

from __future__ import annotations

import io
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from components import cli
from components.revoke import revoke
from components.vault_apply import apply_plan, plan_writes
from tests.support.chain import (
    ADMIN_PASSWORD,
    CORTEX,
    INVOICES,
    OTHER_TD,
    Chain,
    Spire,
    Workload,
    chain,
    oidc_discovery_provider,
    retry_rate_limited,
    spire_agent,
    spire_server,
)
from tests.support.tools import wait_until
from tests.unit.test_vault_render import cert_platform, dev_values

pytestmark = pytest.mark.e2e

CLOCK_SKEW_LEEWAY_S = 60
"""OpenBao's JWT auth accepts a token this long after its ``exp`` (``clock_skew_leeway``, default 60 s)."""


@pytest.fixture(scope="module")
def spire() -> Iterator[Spire]:
    with spire_server() as s:
        yield s


@pytest.fixture(scope="module")
def jwks_url(spire: Spire) -> Iterator[str]:
    with oidc_discovery_provider(spire) as url:
        yield url


@pytest.fixture(scope="module")
def workload(spire: Spire, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    """This test process, attested by a spire-agent as agent-cortex's workload (its manifest with
    a DNS name, so its X.509-SVID has the Subject CN cert auth needs)."""
    platform = cert_platform(tmp_path_factory.mktemp("agents"), dev_values())
    with spire_agent(spire, platform, CORTEX) as w:
        yield w


@pytest.fixture(scope="module")
def stack(spire: Spire, jwks_url: str) -> Iterator[Chain]:
    with chain(spire, jwks_url) as c:
        # minted now, refused at the end of the module once past exp + the clock-skew leeway
        c.expiring_jwt = c.jwt(CORTEX, ttl="1s")
        c.expiring_jwt_exp = time.time() + 1
        yield c


def capabilities(stack: Chain, token: str, paths: list[str]) -> dict[str, list[str]]:
    """What ``token`` may do on ``paths`` (``sys/capabilities``, asked as root: agent tokens lack
    the default policy, so they may not even ask ``capabilities-self``)."""
    out = stack.bao.client().write_data("sys/capabilities", data={"token": token, "paths": paths})
    data = out.get("data") or out
    return {p: sorted(data[p]) for p in paths}


def refusal(call: Any) -> str:
    """The error Vault answers with; fails if the call succeeds."""
    with pytest.raises(hvac.exceptions.VaultError) as info:
        call()
    return str(info.value)


# --------------------------------------------------------------------------- 1. as planned


def test_openbao_holds_what_the_plan_says(stack: Chain, jwks_url: str) -> None:
    """Read back from OpenBao what the applier wrote: every field the Pulumi resources set."""
    root, plan = stack.bao.client(), stack.plan
    writes = {w.path: w for w in plan_writes(plan, stack.secrets)}
    for a in plan.agents:
        role = root.read(f"auth/{plan.auth_mount}/role/{a.role}")["data"]
        wanted = writes[f"auth/{plan.auth_mount}/role/{a.role}"].data
        assert {k: role[k] for k in wanted} == wanted
        policy = root.read(f"sys/policies/acl/{a.policy_name}")["data"]["policy"]
        assert policy == a.policy_hcl
    config = root.read(f"auth/{plan.auth_mount}/config")["data"]
    assert (config["jwks_url"], config["bound_issuer"], config["jwt_supported_algs"]) == (
        jwks_url, plan.jwt_issuer, ["ES256", "ES384", "RS256"])
    assert plan.jwks_url == jwks_url  # the test stack's vault.jwksUrl: the OIDC discovery provider
    tune = root.read(f"sys/auth/{plan.auth_mount}/tune")["data"]
    assert (tune["default_lease_ttl"], tune["max_lease_ttl"], tune["token_type"],
            tune["audit_non_hmac_request_keys"]) == (900, 1800, "service", ["role"])
    mount = root.read("sys/mounts/db-main/tune")["data"]
    assert (mount["default_lease_ttl"], mount["max_lease_ttl"], mount["audit_non_hmac_response_keys"]) == (
        300, 600, ["username"])
    for conn in plan.connections:
        got = root.read(f"{conn.mount}/config/{conn.name}")["data"]
        details = got["connection_details"]
        assert (got["plugin_name"], got["allowed_roles"], got["root_credentials_rotate_statements"]) == (
            "postgresql-database-plugin", list(conn.allowed_roles), list(conn.root_rotation_statements))
        assert (details["connection_url"], details["username"], details["username_template"],
                details["password_authentication"], details["max_open_connections"]) == (
            conn.connection_url, conn.username, conn.username_template, "scram-sha-256", 4)
        assert "password" not in details
        # rotated right after setup: only OpenBao knows the admin's password now
        assert stack.psql(conn.username, ADMIN_PASSWORD, "SELECT 1;", db=conn.name).returncode != 0
    for role_plan in plan.database_roles:
        got = root.read(f"{role_plan.mount}/roles/{role_plan.name}")["data"]
        assert (got["db_name"], got["creation_statements"], got["revocation_statements"], got["default_ttl"],
                got["max_ttl"]) == (role_plan.connection, list(role_plan.statements.creation),
                                    list(role_plan.statements.revocation), role_plan.default_ttl, role_plan.max_ttl)
    audit = root.sys.list_enabled_audit_devices()["data"]["agent-passport-file/"]
    assert audit["type"] == "file" and audit["options"] == {**dict(plan.audit_options)}
    # a second apply (a later `pulumi up` with nothing changed) changes nothing and breaks nothing
    again = apply_plan(root, plan, stack.secrets)
    assert {a.write.path: a.outcome for a in again if a.outcome != "sent"} == {
        "sys/audit/agent-passport-file": "kept", "sys/auth/spiffe-jwt": "kept", "sys/mounts/db-main": "tuned",
        "db-main/rotate-root/incidents": "skipped", "db-main/rotate-root/billing": "skipped"}
    creds = stack.creds(stack.login(CORTEX, stack.jwt(CORTEX))["auth"]["client_token"], CORTEX)["data"]
    assert stack.psql(creds["username"], creds["password"], "SELECT count(*) FROM incidents;").returncode == 0


def test_each_policy_reads_its_own_credentials_and_nothing_managed(stack: Chain) -> None:
    """The generated policies as loaded: a token of agent A's policy alone may read A's
    credentials, not B's, nor anything Agent Passport manages; vault grants are exact paths."""
    root, plan = stack.bao.client(), stack.plan
    creds = {a.agent: [r.creds_path for r in a.database_roles] for a in plan.agents}
    assert creds[CORTEX] and creds[INVOICES]
    for a in plan.agents:
        token = root.auth.token.create(policies=[a.policy_name], no_default_policy=True, ttl="5m")["auth"]
        own = creds[a.agent]
        others = [p for name, paths in creds.items() if name != a.agent for p in paths]
        managed = [f"sys/policies/acl/{a.policy_name}", f"auth/{plan.auth_mount}/role/{a.role}",
                   "db-main/config/incidents", "db-main/roles/agent-cortex-main-incidents", "sys/audit"]
        caps = capabilities(stack, token["client_token"], own + others + managed)
        assert {p: caps[p] for p in own} == {p: ["read"] for p in own}
        assert {p: caps[p] for p in others + managed} == {p: ["deny"] for p in others + managed}
    ledger = root.auth.token.create(policies=["agent-ledger-sync"], no_default_policy=True)["auth"]
    caps = capabilities(stack, ledger["client_token"], ["secret/data/finance/ledger-sync", "secret/data/finance/other"])
    assert (caps["secret/data/finance/ledger-sync"], caps["secret/data/finance/other"]) == (["read"], ["deny"])


# --------------------------------------------------------------------------- a. login


def test_jwt_svid_logs_in_to_a_token_with_only_its_own_policy(stack: Chain, workload: Workload) -> None:
    cortex = stack.agent(CORTEX)
    spiffe_id, jwt = workload.jwt()  # over the Workload API, as the agent's SDK fetches it
    assert spiffe_id == cortex.spiffe_id
    out = stack.login(CORTEX, jwt)
    auth = out["auth"]
    assert auth["token_policies"] == auth["policies"] == [cortex.policy_name]  # not even `default`
    assert auth["lease_duration"] == 900
    assert auth["metadata"]["role"] == cortex.role
    root = stack.bao.client()
    entity = root.read(f"identity/entity/id/{auth['entity_id']}")["data"]
    assert [(a["name"], a["mount_type"]) for a in entity["aliases"]] == [(cortex.spiffe_id, "jwt")]
    own, other = stack.role(CORTEX).creds_path, stack.role(INVOICES).creds_path
    caps = capabilities(stack, auth["client_token"], [own, other, "sys/audit", "auth/token/lookup-self"])
    assert (caps[own], caps[other], caps["sys/audit"], caps["auth/token/lookup-self"]) == (
        ["read"], ["deny"], ["deny"], ["deny"])


def test_jwt_svids_of_others_wrong_audiences_and_other_trust_domains_are_refused(stack: Chain) -> None:
    # another agent's SVID, on this agent's role
    err = refusal(lambda: stack.login(CORTEX, stack.jwt(INVOICES)))
    assert "sub" in err, err
    assert stack.login(INVOICES, stack.jwt(INVOICES))["auth"]["token_policies"] == ["agent-invoice-processor"]
    # this agent's SVID for another audience (as minted for AWS)
    err = refusal(lambda: stack.login(CORTEX, stack.jwt(CORTEX, audience="sts.amazonaws.com")))
    assert "aud" in err, err
    # a second SPIRE server, another trust domain, the same issuer URL in its config: its keys
    # are not in the JWKS, whatever the claims say
    with spire_server(OTHER_TD) as other:
        forged = other.jwt(other.spiffe_id(f"/ns/agents/sa/{CORTEX}"))
        err = refusal(lambda: stack.login(CORTEX, forged))
        assert "signature" in err or "verify" in err, err


# --------------------------------------------------------------------------- b. database


def test_credentials_work_for_the_granted_tables_and_privileges_only(stack: Chain, workload: Workload) -> None:
    token = stack.login(CORTEX, workload.jwt()[1])["auth"]["client_token"]
    creds = stack.creds(token, CORTEX)
    assert (creds["lease_duration"], creds["renewable"]) == (300, True)  # 5 minutes
    user, password = creds["data"]["username"], creds["data"]["password"]
    assert user.startswith("v-agent-cortex-main-incidents-")
    ok = stack.psql(user, password, "SELECT (SELECT count(*) FROM incidents) + (SELECT count(*) FROM alerts);")
    assert (ok.returncode, ok.stdout.strip()) == (0, "2"), ok.stderr
    for denied in ("INSERT INTO incidents VALUES (9);", "SELECT * FROM payroll;", "DELETE FROM alerts;"):
        result = stack.psql(user, password, denied)
        assert result.returncode != 0 and "permission denied" in result.stderr, (denied, result.stderr)
    billing = stack.psql(user, password, "SELECT count(*) FROM billing.invoices;", db="billing")
    assert billing.returncode != 0 and "permission denied for database" in billing.stderr, billing.stderr
    err = refusal(lambda: stack.creds(token, INVOICES))  # the other agent's credentials path
    assert "permission denied" in err, err


# --------------------------------------------------------------------------- e. audit


def test_the_audit_log_joins_spiffe_id_entity_lease_and_database_user(stack: Chain, workload: Workload) -> None:
    cortex = stack.agent(CORTEX)
    login = stack.login(CORTEX, workload.jwt()[1])["auth"]
    creds = stack.creds(login["client_token"], CORTEX)
    user = creds["data"]["username"]
    entries = stack.audit()
    # 1. login: the role in clear, the entity, the SPIFFE ID in the display name
    logins = [e for e in entries if e["type"] == "response"
              and e["request"]["path"] == f"auth/{stack.plan.auth_mount}/login"
              and (e.get("auth") or {}).get("entity_id") == login["entity_id"]]
    assert logins, "the login is audited"
    assert logins[-1]["request"]["data"]["role"] == cortex.role  # audit_non_hmac_request_keys
    assert cortex.spiffe_id in logins[-1]["auth"]["display_name"]
    assert logins[-1]["auth"]["token_policies"] == [cortex.policy_name]
    # 2. the credential read: the same entity, the lease, the database user in clear
    (read,) = [e for e in entries if e["type"] == "response"
               and e["request"]["path"] == stack.role(CORTEX).creds_path
               and (e.get("response") or {}).get("secret", {}).get("lease_id") == creds["lease_id"]]
    assert read["auth"]["entity_id"] == login["entity_id"]
    assert read["auth"]["metadata"]["role"] == cortex.role
    assert read["response"]["data"]["username"] == user  # audit_non_hmac_response_keys
    assert read["response"]["data"]["password"] != creds["data"]["password"]  # HMAC'd
    # 3. entity -> SPIFFE ID, and the database knows that user
    entity = stack.bao.client().read(f"identity/entity/id/{read['auth']['entity_id']}")["data"]
    assert entity["aliases"][0]["name"] == cortex.spiffe_id
    assert stack.pg.role_exists(user)
    # 4. revocation names the same lease (HMAC'd in the request: matched with sys/audit-hash)
    root = stack.bao.client()
    root.sys.revoke_lease(creds["lease_id"])
    hashed = root.write_data("sys/audit-hash/agent-passport-file", data={"input": creds["lease_id"]})["data"]["hash"]
    revokes = [e for e in stack.audit() if e["type"] == "request" and e["request"]["path"] == "sys/leases/revoke"]
    assert any(e["request"]["data"]["lease_id"] in (creds["lease_id"], hashed) for e in revokes)
    wait_until(lambda: not stack.pg.role_exists(user), 30, f"{user} dropped")


# --------------------------------------------------------------------------- c. expiry, revoke


def test_credentials_stop_working_after_their_ttl(spire: Spire, jwks_url: str) -> None:
    with chain(spire, jwks_url, cortex_ttl=("10s", "20s")) as short:
        token = short.login(CORTEX, short.jwt(CORTEX))["auth"]["client_token"]
        creds = short.creds(token, CORTEX)
        assert creds["lease_duration"] == 10
        user, password = creds["data"]["username"], creds["data"]["password"]
        assert short.psql(user, password, "SELECT count(*) FROM incidents;").returncode == 0
        session = short.open_session(user, password)
        # OpenBao's expiry runs the revocation statements: sessions ended, user dropped
        wait_until(lambda: not short.pg.role_exists(user), 60, f"{user} dropped when its lease expired")
        _, err = session.communicate(timeout=60)
        assert session.returncode != 0 and "terminat" in err, err
        after = short.psql(user, password, "SELECT 1;")
        assert after.returncode != 0 and "password authentication failed" in after.stderr


# --------------------------------------------------------------------------- d. cert auth


def test_cert_auth_x509_svid_over_mtls_logs_in_and_is_refused_alike(
    spire: Spire, jwks_url: str, workload: Workload,
) -> None:
    with chain(spire, jwks_url, tls=True, auth="cert") as c, tempfile.TemporaryDirectory() as tmp:
        mount = c.plan.auth_mount
        assert mount == "spiffe-cert"

        def login(cert: tuple[str, str], role_of: str) -> dict[str, Any]:
            client = c.bao.client(token="", cert=cert)
            return dict(retry_rate_limited(lambda: client.write_data(f"auth/{mount}/login",
                                                                      data={"name": c.agent(role_of).role})))

        def dns(name: str) -> str:  # the first DNS name (the SVID's CN) tests.unit.test_vault_render gives
            return f"{name}.agents.svc"

        cortex_svid = workload.x509(Path(tmp) / "cortex")  # over the Workload API
        auth = login(cortex_svid, CORTEX)["auth"]
        assert auth["token_policies"] == auth["policies"] == [c.agent(CORTEX).policy_name]
        assert auth["lease_duration"] == 900
        assert (auth["metadata"]["cert_name"], auth["metadata"]["common_name"]) == (c.agent(CORTEX).role, dns(CORTEX))
        entity = c.bao.client().read(f"identity/entity/id/{auth['entity_id']}")["data"]
        assert [(a["name"], a["mount_type"]) for a in entity["aliases"]] == [(dns(CORTEX), "cert")]
        creds = c.creds(auth["client_token"], CORTEX)
        ok = c.psql(creds["data"]["username"], creds["data"]["password"], "SELECT count(*) FROM incidents;")
        assert ok.returncode == 0, ok.stderr
        assert "permission denied" in refusal(lambda: c.creds(auth["client_token"], INVOICES))
        # another agent's SVID on this agent's role
        invoices_svid = c.spire.x509(c.agent(INVOICES).spiffe_id, Path(tmp) / "invoices", dns=dns(INVOICES))
        refused = [refusal(lambda: login(invoices_svid, CORTEX))]
        assert login(invoices_svid, INVOICES)["auth"]["token_policies"] == ["agent-invoice-processor"]
        # an expired SVID
        expired = c.spire.x509(c.agent(CORTEX).spiffe_id, Path(tmp) / "expired", ttl="1s", dns=dns(CORTEX))
        time.sleep(2.5)
        refused.append(refusal(lambda: login(expired, CORTEX)))
        # an SVID of another trust domain's SPIRE server
        with spire_server(OTHER_TD) as other:
            # the same path and CN; only the trust domain (and so the CA) differs
            foreign = other.x509(other.spiffe_id(f"/ns/agents/sa/{CORTEX}"), Path(tmp) / "foreign", dns=dns(CORTEX))
            refused.append(refusal(lambda: login(foreign, CORTEX)))
        other_agent, expired_svid, other_ca = refused
        assert "no chain matching all constraints" in other_agent, other_agent  # not this role's URI SAN
        assert "certificate has expired" in expired_svid, expired_svid
        assert "invalid certificate" in other_ca, other_ca  # does not chain to the trust bundle

        # passport revoke in cert mode: the lease, the cert-login tokens, and the entity named by the CN
        out = io.StringIO()
        env = {"VAULT_TOKEN": c.operator_token(), "VAULT_CACERT": str(c.bao.ca_file)}
        assert revoke(c.platform, CORTEX, yes=True, env=env, out=out, vault_addr=c.bao.address) == 0, out.getvalue()
        assert f"vault        revoked 1 token(s) of role {c.agent(CORTEX).role}" in out.getvalue()
        assert f"vault        disabled identity entity {auth['entity_id']}" in out.getvalue()
        assert not c.token_valid(auth["client_token"])
        assert not c.pg.role_exists(creds["data"]["username"])
        assert "permission denied" in refusal(lambda: login(cortex_svid, CORTEX))
        assert login(invoices_svid, INVOICES)["auth"]["token_policies"] == ["agent-invoice-processor"]


# --------------------------------------------------------------------------- a. expired (last: waits)


def test_an_expired_jwt_svid_is_refused(stack: Chain) -> None:
    """Minted with a 1 s TTL when the module started; refused once past exp + OpenBao's
    clock-skew leeway (60 s by default)."""
    remaining = stack.expiring_jwt_exp + CLOCK_SKEW_LEEWAY_S + 2 - time.time()
    if remaining > 0:
        time.sleep(remaining)
    err = refusal(lambda: stack.login(CORTEX, stack.expiring_jwt))
    assert "expired" in err, err


# --------------------------------------------------------------------------- c. revoke (last: it deletes
# the workload's registration entry)


def test_passport_revoke_ends_credentials_tokens_and_entity_at_once(
    spire: Spire, jwks_url: str, workload: Workload,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    with chain(spire, jwks_url) as c:
        root = c.bao.client()
        cortex = c.agent(CORTEX)
        _, svid = workload.jwt()
        login = c.login(CORTEX, svid)["auth"]
        creds = c.creds(login["client_token"], CORTEX)
        user, password = creds["data"]["username"], creds["data"]["password"]
        session = c.open_session(user, password)
        bystander = c.login(INVOICES, c.jwt(INVOICES))["auth"]["client_token"]
        assert c.token_valid(login["client_token"]) and c.token_valid(bystander)
        (entry,) = json.loads(c.spire.cli("entry", "show", "-spiffeID", cortex.spiffe_id, "-output", "json"))[
            "entries"]  # the workload's registration
        # the incident responder's own short-lived token (not root: revoke refuses root)
        monkeypatch.setenv("VAULT_TOKEN", c.operator_token())
        code = cli.main(["revoke", CORTEX, "--stack", "dev", "--vault-addr", c.bao.address, "--yes",
                         "--spire-server-socket", str(c.spire.server.socket),
                         "--spire-server-bin", str(c.spire.binary)])
        out = capsys.readouterr().out
        assert code == 0, out
        lines = out.splitlines()
        assert f"vault        revoked 1 lease(s) under {c.role(CORTEX).creds_path} (database users dropped)" in lines
        assert f"vault        revoked 1 token(s) of role {cortex.role}" in lines
        assert any(line.startswith("vault        disabled identity entity " + login["entity_id"]) for line in lines)
        assert f"spire        deleted 1 registration entry: {entry['id']}" in lines
        # at once: the database user is gone and its open session ended
        assert not c.pg.role_exists(user)
        _, err = session.communicate(timeout=60)
        assert session.returncode != 0 and "terminat" in err, err
        assert c.psql(user, password, "SELECT 1;").returncode != 0
        # its token is revoked and its entity disabled
        assert not c.token_valid(login["client_token"])
        assert root.read(f"identity/entity/id/{login['entity_id']}")["data"]["disabled"] is True
        # the SVID it already holds is still valid (SVIDs cannot be recalled), but logs in to nothing
        assert "permission denied" in refusal(lambda: c.login(CORTEX, svid))
        # and the SPIRE agent stops issuing it new ones
        wait_until(lambda: not _issues(workload), 60, "the spire-agent to drop agent-cortex's SVIDs")
        # the other agent keeps working
        assert c.creds(bystander, INVOICES)["data"]["username"].startswith("v-invoice-processor-")


def _issues(workload: Workload) -> bool:
    try:
        workload.jwt()
    except AssertionError:
        return False
    return True
