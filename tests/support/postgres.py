"""A throwaway PostgreSQL cluster on 127.0.0.1 (initdb + pg_ctl), for the e2e tests.

The server binaries come from the Debian package (``scripts/bootstrap-tools --with-postgres``;
the tools cache links there). Run as root, the server runs as the ``postgres`` user. A missing
server skips on a user's machine and fails in CI, naming it (tests/support/tools.py).
"""

# The SQL here is built from the tests' own constant names.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from components.render.vault import ADMIN_CONNECTION_LIMIT
from tests.support.tools import HOW, TOOLS_BIN, free_port, missing

SUPER_PASSWORD = "super-Pw-1"


def pg_bin() -> Path | None:
    """The server binaries' real directory (the tools cache links there; /root is not
    traversable by the 'postgres' user the server runs as)."""
    for candidate in [TOOLS_BIN, *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            real = Path(os.path.realpath(candidate / "initdb")).parent
            if (real / "pg_ctl").exists():
                return real
    return None


def psql_binary() -> str | None:
    pg = pg_bin()
    if pg is not None and (pg / "psql").exists():
        return str(pg / "psql")
    return shutil.which("psql")


@dataclass
class Postgres:
    port: int
    psql: str

    def run(self, sql: str, *, user: str = "postgres", password: str = SUPER_PASSWORD,
            db: str = "postgres", check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
        return subprocess.run(
            [self.psql, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", user, "-d", db, "-c", sql],
            env=env, capture_output=True, text=True, check=check, timeout=30,
        )

    def role_exists(self, name: str) -> bool:
        out = self.run(f"SELECT count(*) FROM pg_roles WHERE rolname = '{name}';")
        return out.stdout.strip() == "1"


def require_postgres() -> tuple[Path, str]:
    """(server bin dir, psql), or skip/fail naming PostgreSQL."""
    pg, psql = pg_bin(), psql_binary()
    if pg is None or psql is None:
        missing("PostgreSQL server (initdb, pg_ctl, psql)", HOW["postgres"])
        raise AssertionError("unreachable")  # pragma: no cover
    return pg, psql


@contextlib.contextmanager
def postgres_cluster(prefix: str = "ap-pg-") -> Iterator[Postgres]:
    """A fresh cluster (scram-sha-256, superuser ``postgres``/SUPER_PASSWORD) on 127.0.0.1; always
    stopped and removed."""
    pg, psql = require_postgres()
    run_as: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            missing("a 'postgres' user to run the server as (we are root)", HOW["postgres"])
        run_as = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix=prefix))
    data, pwfile = base / "data", base / "pw"
    pwfile.write_text(SUPER_PASSWORD + "\n")
    if owner is not None:
        for p in (base, pwfile):
            os.chown(p, owner.pw_uid, owner.pw_gid)
    port = free_port()
    started = False
    try:
        subprocess.run([*run_as, str(pg / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=scram-sha-256", f"--pwfile={pwfile}"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([*run_as, str(pg / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60",
                        "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {base}", "start"],
                       check=True, capture_output=True, timeout=90)
        started = True
        yield Postgres(port, psql)
    finally:
        if started:
            subprocess.run([*run_as, str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60, check=False)
        shutil.rmtree(base, ignore_errors=True)


def seed_dba_setup(pg: Postgres, admins: dict[str, str], tables: dict[str, Sequence[str]], password: str) -> None:
    """What docs/vault.md tells a DBA to do once per database: the database, its tables, and
    Vault's admin for it (CREATEROLE, its CONNECTION LIMIT, pg_signal_backend, grant option on
    the tables), and no
    CONNECT for PUBLIC (a generated user reaches only the database it was granted).

    ``admins``: database -> admin user; ``tables``: database -> qualified table names.
    """
    for db, admin in admins.items():
        pg.run(f"CREATE DATABASE {db};")
        schemas = sorted({t.split(".")[0] for t in tables[db]})
        create = "".join(f"CREATE SCHEMA IF NOT EXISTS {s}; " for s in schemas if s != "public")
        create += "".join(f"CREATE TABLE {t} (id int); INSERT INTO {t} VALUES (1); " for t in tables[db])
        pg.run(f"""
            {create}
            CREATE ROLE {admin} LOGIN CREATEROLE CONNECTION LIMIT {ADMIN_CONNECTION_LIMIT} PASSWORD '{password}';
            GRANT pg_signal_backend TO {admin};
            REVOKE CONNECT ON DATABASE {db} FROM PUBLIC;
            GRANT CONNECT ON DATABASE {db} TO {admin} WITH GRANT OPTION;
            GRANT USAGE ON SCHEMA {", ".join(schemas)} TO {admin} WITH GRANT OPTION;
            GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {", ".join(schemas)}
              TO {admin} WITH GRANT OPTION;
        """, db=db)
