"""The rendered SQL against a real PostgreSQL on 127.0.0.1, run the way Vault runs it.

The admin is set up as docs/vault.md tells a DBA to (CREATEROLE, pg_signal_backend, grant
option on the tables); the creation statements, with Vault's templates filled in, must give
the generated user exactly the manifest's privileges, hostile-but-quotable identifiers must
stay identifiers, and the revocation statements must end the user's open sessions and drop it.
"""

# The SQL this test builds itself comes from constants and quote_pg, the function under test.
# ruff: noqa: S608

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Sequence

import pytest

from components.manifest.models import DatabasePrivilege
from components.render.vault import postgres_statements, quote_pg
from tests.support.postgres import Postgres, postgres_cluster

pytestmark = pytest.mark.e2e

ADMIN, ADMIN_PASSWORD = "vault_incidents", "admin-Pw-1"


def vault_runs(pg: Postgres, statements: Sequence[str], fill: dict[str, str], db: str) -> None:
    """As Vault does: templates filled in, every statement in one transaction, as the admin."""
    body = "\n".join(statements)
    for key, value in fill.items():
        body = body.replace("{{" + key + "}}", value)
    pg.run(f"BEGIN;\n{body}\nCOMMIT;", user=ADMIN, password=ADMIN_PASSWORD, db=db)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with postgres_cluster("ap-vault-pg-") as pg:
        yield pg


HOSTILE_SCHEMA = 'Ops "Team"'
HOSTILE_TABLE = "it's -- a \"table\""


@pytest.fixture(scope="module")
def incidents(postgres: Postgres) -> Postgres:
    """The incidents database, its tables, and Vault's admin for it (as docs/vault.md says)."""
    postgres.run("CREATE DATABASE incidents;")
    schema, table = quote_pg(HOSTILE_SCHEMA), quote_pg(HOSTILE_TABLE)
    postgres.run(f"""
        CREATE TABLE public.incidents (id int); INSERT INTO public.incidents VALUES (1);
        CREATE TABLE public.alerts (id int); INSERT INTO public.alerts VALUES (2);
        CREATE TABLE public.payroll (id int); INSERT INTO public.payroll VALUES (3);
        CREATE SCHEMA {schema}; CREATE TABLE {schema}.{table} (id int); INSERT INTO {schema}.{table} VALUES (4);
        CREATE ROLE {ADMIN} LOGIN CREATEROLE PASSWORD '{ADMIN_PASSWORD}';
        GRANT pg_signal_backend TO {ADMIN};
        GRANT CONNECT ON DATABASE incidents TO {ADMIN} WITH GRANT OPTION;
        GRANT USAGE ON SCHEMA public, {schema} TO {ADMIN} WITH GRANT OPTION;
        GRANT ALL ON ALL TABLES IN SCHEMA public, {schema} TO {ADMIN} WITH GRANT OPTION;
    """, db="incidents")
    return postgres


def _priv(allow: list[str], tables: list[str], schema: str = "public") -> DatabasePrivilege:
    """Unvalidated on purpose: the manifest model already refuses these names; the renderer's
    quoting must hold on its own."""
    return DatabasePrivilege.model_construct(allow=allow, schema_=schema, tables=tables)  # type: ignore[arg-type]


def _login(pg: Postgres, user: str, password: str, sql: str) -> subprocess.CompletedProcess[str]:
    return pg.run(sql, user=user, password=password, db="incidents", check=False)


def test_generated_user_gets_exactly_the_granted_privileges(incidents: Postgres) -> None:
    stmts = postgres_statements("incidents", [_priv(["select"], ["incidents", "alerts"])])
    user, password = "v-agent-cortex-main-incidents-r4nd0m", "Gen-Pw-1"
    fill = {"name": user, "password": password, "expiration": "2099-01-01 00:00:00+0000"}
    vault_runs(incidents, stmts.creation, fill, "incidents")

    ok = _login(incidents, user, password, "SELECT (SELECT id FROM incidents) + (SELECT id FROM alerts);")
    assert (ok.returncode, ok.stdout.strip()) == (0, "3")
    for denied in ("SELECT * FROM payroll;", "INSERT INTO incidents VALUES (9);", "DELETE FROM alerts;",
                   "CREATE TABLE public.mine (id int);"):
        result = _login(incidents, user, password, denied)
        assert result.returncode != 0 and "permission denied" in result.stderr, denied

    vault_runs(incidents, stmts.revocation, fill, "incidents")
    exists = incidents.run(f"SELECT count(*) FROM pg_roles WHERE rolname = '{user}';")
    assert exists.stdout.strip() == "0"


def test_expired_password_cannot_log_in(incidents: Postgres) -> None:
    stmts = postgres_statements("incidents", [_priv(["select"], ["alerts"])])
    user, password = "v-agent-expired-r4nd0m", "Gen-Pw-2"
    fill = {"name": user, "password": password, "expiration": "2000-01-01 00:00:00+0000"}
    vault_runs(incidents, stmts.creation, fill, "incidents")
    result = _login(incidents, user, password, "SELECT 1;")
    assert result.returncode != 0 and "password authentication failed" in result.stderr
    vault_runs(incidents, stmts.revocation, fill, "incidents")


def test_hostile_identifiers_stay_identifiers(incidents: Postgres) -> None:
    stmts = postgres_statements("incidents", [_priv(["select"], [HOSTILE_TABLE], schema=HOSTILE_SCHEMA)])
    user, password = "v-agent-hostile-r4nd0m", "Gen-Pw-3"
    fill = {"name": user, "password": password, "expiration": "2099-01-01 00:00:00+0000"}
    vault_runs(incidents, stmts.creation, fill, "incidents")
    ok = _login(incidents, user, password,
                f"SELECT id FROM {quote_pg(HOSTILE_SCHEMA)}.{quote_pg(HOSTILE_TABLE)};")
    assert (ok.returncode, ok.stdout.strip()) == (0, "4")
    assert _login(incidents, user, password, "SELECT * FROM public.incidents;").returncode != 0
    vault_runs(incidents, stmts.revocation, fill, "incidents")


def test_revocation_ends_open_sessions(incidents: Postgres) -> None:
    stmts = postgres_statements("incidents", [_priv(["select"], ["incidents"])])
    user, password = "v-agent-session-r4nd0m", "Gen-Pw-4"
    fill = {"name": user, "password": password, "expiration": "2099-01-01 00:00:00+0000"}
    vault_runs(incidents, stmts.creation, fill, "incidents")
    env = {**os.environ, "PGPASSWORD": password}
    session = subprocess.Popen(
        [incidents.psql, "-X", "-q", "-h", "127.0.0.1", "-p", str(incidents.port), "-U", user, "-d", "incidents",
         "-c", "SELECT pg_sleep(120);"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):  # until the session is connected (bounded)
            active = incidents.run(f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}';")
            if active.stdout.strip() == "1":
                break
            time.sleep(0.05)
        assert active.stdout.strip() == "1"
        vault_runs(incidents, stmts.revocation, fill, "incidents")
        _, err = session.communicate(timeout=60)
        assert session.returncode != 0
        assert "terminat" in err
    finally:
        if session.poll() is None:
            session.kill()
            session.communicate()
    gone = incidents.run(f"SELECT count(*) FROM pg_roles WHERE rolname = '{user}';")
    assert gone.stdout.strip() == "0"
