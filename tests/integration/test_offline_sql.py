"""db migrate / db rollback --dry-run --format sql: one psql script that leaves a database
exactly as the run would.

Each equivalence test prepares two databases the same way, runs the command for real on one
and the script with psql on the other, and compares the schema (pg_dump), the data, the
tracking rows and the audit rows (all but ids, times and who ran them).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg2
import pytest

from reconciler import embedded
from reconciler.observed.locking import advisory_key
from reconciler.remediation.backup import find_client
from tests.conftest import PASSWORD_ROLE, catalog_snapshot, run_cli, scratch_database, sql, write

# Text psql would act on if it were outside quotes and comments: it must reach the server as written.
PSQL_TEXT = (
    "-- a comment naming :foo, :'foo' and \\echo stays a comment\n"
    "CREATE TABLE psql_text (id int PRIMARY KEY, note text);\n"
    "/* :foo in a block comment */\n"
    "INSERT INTO psql_text VALUES (1, ':foo and :''foo'' in a string'), (2, '\n"
    "\\echo a line starting with a backslash, inside a string\n"
    "');\n"
    "CREATE FUNCTION psql_text_note() RETURNS text LANGUAGE sql AS $body$\n"
    "SELECT ':foo\n"
    "\\qecho inside a dollar-quoted body'::text\n"
    "$body$;\n"
    "INSERT INTO psql_text VALUES (3, 'it''s 100% ok'), (4, psql_text_note());\n"
    # Left set by the migration: the record is written as the session's own role all the same.
    f"SET ROLE {PASSWORD_ROLE};\n"
)
UNSAFE = "CREATE TABLE slices (a int[]);\nSELECT a[1:n] FROM slices, (SELECT 2 AS n) AS k;\n"

TRACKING = (
    "SELECT version, description, checksum, checksum_algorithm, applied_by, execution_ms IS NOT NULL, "
    "execution_ms >= 0, success, error, transactional FROM schema_migrations ORDER BY id"
)
AUDIT = (
    "SELECT actor, operation, plan_hash, step, action, version, outcome, detail "
    "FROM schema_migrations_audit ORDER BY id"
)
LOCK = "SELECT locked, locked_at, locked_by, backend_pid, application_name FROM schema_migrations_lock"


def psql(database_url: str, script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The script, run as documented: psql -X -v ON_ERROR_STOP=1 -f FILE."""
    path = tmp_path / "script.sql"
    path.write_text(script)
    argv = [str(embedded.bin_dir() / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-f", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def schema_dump(database_url: str) -> str:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SHOW server_version_num")
        major = int(cur.fetchone()[0]) // 10000
    conn.close()
    pg_dump = find_client("pg_dump", major)
    out = subprocess.run(
        [str(pg_dump.path), "--schema-only", "--no-owner", database_url], capture_output=True, text=True, check=True
    ).stdout
    # \restrict and \unrestrict carry a random key in recent pg_dumps.
    return "\n".join(line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def state(conn: psycopg2.extensions.connection, database_url: str) -> dict[str, object]:
    """What must be equal after the run and after the script."""
    tracking = sql(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL")[0][0]
    return {
        "schema": schema_dump(database_url),
        "catalog": catalog_snapshot(conn),
        "tracking": sql(conn, TRACKING) if tracking else None,
        "audit": sql(conn, AUDIT) if tracking else None,
        "lock": sql(conn, LOCK) if tracking else None,
        "data": sql(conn, "SELECT * FROM psql_text ORDER BY id")
        if sql(conn, "SELECT to_regclass('psql_text')")[0][0]
        else None,
    }


@pytest.fixture
def twin(pg_server, db, migrations_dir: Path):
    """A second database like the test's, and poststack bound to it."""
    name = sql(db, "SELECT current_database()")[0][0] + "_twin"
    with scratch_database(pg_server, name) as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True

        def cli(*args: str):
            return run_cli(*args, "--database-url", url, "--migrations-dir", str(migrations_dir))

        yield url, conn, cli
        conn.close()


def script_of(cli, *args: str) -> str:
    result = cli(*args, "--dry-run", "--format", "sql")
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("first", [None, "002"], ids=["empty-database", "from-002"])
def test_the_migrate_script_leaves_the_database_as_migrate_does(
    first, cli, db, database_url, twin, migrations_dir: Path, tmp_path: Path
):
    write(migrations_dir, "006_psql_text.sql", PSQL_TEXT)
    twin_url, twin_db, twin_cli = twin
    if first:
        assert cli("db", "migrate", "--target", first).exit_code == 0
        assert twin_cli("db", "migrate", "--target", first).exit_code == 0
    script = script_of(twin_cli, "db", "migrate")
    assert "BEGIN\n;" in script and "CREATE INDEX CONCURRENTLY" in script
    assert sql(twin_db, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")  # still there
    ran = psql(twin_url, script, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert cli("db", "migrate").exit_code == 0

    expected, got = state(db, database_url), state(twin_db, twin_url)
    assert got == expected
    assert len(got["tracking"]) == 6 and all(row[5] and row[6] for row in got["tracking"])
    assert [row[5] for row in got["audit"]][-4:] == ["003", "004", "005", "006"]
    assert got["data"] == [
        (1, ":foo and :'foo' in a string"),
        (2, "\n\\echo a line starting with a backslash, inside a string\n"),
        (3, "it's 100% ok"),
        (4, ":foo\n\\qecho inside a dollar-quoted body"),
    ]
    host = sql(
        twin_db,
        "SELECT DISTINCT host_pid FROM schema_migrations_audit WHERE operation = 'migrate' AND version >= '003'",
    )
    assert len(host) == 1 and host[0][0].startswith("psql:")
    # Up to date now: its script is a no-op that says so, and runs.
    noop = script_of(twin_cli, "db", "migrate")
    assert "Database is up to date: this script is a no-op" in noop
    assert not [line for line in noop.splitlines() if line.strip() and not line.startswith("--")]
    before = state(twin_db, twin_url)
    assert psql(twin_url, noop, tmp_path).returncode == 0
    assert state(twin_db, twin_url) == before


def test_the_rollback_script_leaves_the_database_as_rollback_does(
    cli, db, database_url, twin, pg_server, tmp_path: Path
):
    twin_url, twin_db, twin_cli = twin
    assert cli("db", "migrate").exit_code == 0 and twin_cli("db", "migrate").exit_code == 0
    script = script_of(twin_cli, "db", "rollback", "002")
    assert "DROP INDEX CONCURRENTLY" in script
    ran = psql(twin_url, script, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert cli("db", "rollback", "002").exit_code == 0
    expected, got = state(db, database_url), state(twin_db, twin_url)
    assert got == expected
    assert [row[0] for row in got["tracking"]] == ["001", "002"]
    assert [row[5] for row in got["audit"]][-3:] == ["005", "004", "003"]
    # Nothing above 002 now: a no-op; and on a database without tracking tables, one too.
    assert "this script is a no-op" in script_of(twin_cli, "db", "rollback", "002")
    name = sql(db, "SELECT current_database()")[0][0] + "_empty"
    with scratch_database(pg_server, name) as empty:
        text = run_cli("db", "rollback", "001", "--dry-run", "--format", "sql", "--database-url", empty)
        assert text.exit_code == 0 and "Nothing to roll back" in text.stdout and "no-op" in text.stdout


def test_a_migration_its_verify_script_now_says_applied_is_not_run_again(
    cli, db, database_url, migrations_dir, tmp_path
):
    """A data migration leaves the schema as it was: its verify script is the only sign it
    ran by hand after the script was written, and the script asks it again, as migrate does."""
    assert cli("db", "migrate").exit_code == 0
    write(
        migrations_dir,
        "006_seed.sql",
        "INSERT INTO accounts (email, display_name) VALUES ('seed@example.com', 'Seed');\n",
    )
    write(
        migrations_dir,
        "006_seed.verify.sql",
        "SELECT EXISTS (SELECT 1 FROM accounts WHERE email = 'seed@example.com');\n",
    )
    script = script_of(cli, "db", "migrate")
    sql(db, (migrations_dir / "006_seed.sql").read_text())  # a DBA runs it by hand
    ran = psql(database_url, script, tmp_path)
    assert ran.returncode == 3, ran.stderr
    assert "the verify script of migration 006 now says it is applied" in ran.stderr
    assert sql(db, "SELECT count(*) FROM accounts WHERE email = 'seed@example.com'") == [(1,)]
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '006'") == [(0,)]


def test_a_stale_script_stops_before_changing_anything(cli, db, database_url, tmp_path: Path):
    script = script_of(cli, "db", "migrate")
    assert cli("db", "migrate", "--target", "001").exit_code == 0
    before = catalog_snapshot(db)
    audit = sql(db, AUDIT)
    ran = psql(database_url, script, tmp_path)
    assert ran.returncode == 3
    assert "the tracking table changed since this script was written" in ran.stderr
    assert "poststack db migrate --dry-run --format sql" in ran.stderr
    assert catalog_snapshot(db) == before and sql(db, AUDIT) == audit
    assert sql(db, LOCK) == [(False, None, None, None, None)]


def test_the_script_takes_the_migration_lock(cli, db, database_url, tmp_path: Path):
    assert cli("db", "migrate", "--target", "001").exit_code == 0
    script = script_of(cli, "db", "migrate")
    before = catalog_snapshot(db)
    holder = psycopg2.connect(database_url)
    holder.autocommit = True
    try:
        sql(holder, "SELECT pg_advisory_lock(%s)", (advisory_key_of(),))
        ran = psql(database_url, script, tmp_path)
    finally:
        holder.close()
    assert ran.returncode == 3 and "migration system is locked (another run holds it)" in ran.stderr
    assert catalog_snapshot(db) == before

    # A lock row a killed run left set: refused too, with what to do.
    sql(db, "UPDATE schema_migrations_lock SET locked = true, locked_by = 'gone:1', backend_pid = 999999")
    ran = psql(database_url, script, tmp_path)
    assert ran.returncode == 3 and "poststack db unlock-migrations --confirm" in ran.stderr
    assert catalog_snapshot(db) == before


def advisory_key_of() -> int:
    from reconciler.config import DEFAULT_TRACKING

    return advisory_key(DEFAULT_TRACKING)


def test_a_statement_psql_would_change_is_refused(cli, db, migrations_dir: Path):
    write(migrations_dir, "006_slices.sql", UNSAFE)
    result = cli("db", "migrate", "--dry-run", "--format", "sql")
    assert result.exit_code == 2 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("❌")]
    assert len(errors) == 1 and "006_slices.sql:2: :n outside quotes is a psql variable reference" in errors[0]
    assert cli("db", "migrate").exit_code == 0  # poststack itself runs it as written


@pytest.mark.parametrize(
    "args, says",
    [
        (["db", "migrate", "--format", "sql"], "pass it with --dry-run"),
        (["db", "rollback", "001", "--format", "sql"], "pass it with --dry-run"),
        (["db", "migration-status", "--format", "sql"], "only db migrate --dry-run and db rollback --dry-run"),
        (["db", "diagnose", "--dry-run", "--format", "sql"], "No such option"),
        (["plan", "--format", "sql"], "only db migrate --dry-run and db rollback --dry-run"),
    ],
)
def test_format_sql_where_it_cannot_be(args, says, cli, db):
    before = catalog_snapshot(db)
    result = cli(*args)
    assert result.exit_code == 2 and result.stdout == "" and says in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith(("❌", "Error"))]) == 1
    assert catalog_snapshot(db) == before


def test_version_refuses_format_sql():
    result = run_cli("version", "--format", "sql")
    assert result.exit_code == 2 and "only db migrate --dry-run" in result.stderr and result.stdout == ""


def test_a_script_that_fails_stops_as_a_killed_run_would(cli, db, database_url, migrations_dir: Path, tmp_path: Path):
    write(migrations_dir, "006_widgets.sql", "CREATE TABLE widgets (id int);\nINSERT INTO nosuch VALUES (1);\n")
    script = script_of(cli, "db", "migrate")
    ran = psql(database_url, script, tmp_path)
    assert ran.returncode == 3 and 'relation "nosuch" does not exist' in ran.stderr
    # What committed before the error stays; the failed migration's transaction is rolled back.
    assert [r[0] for r in sql(db, TRACKING)] == ["001", "002", "003", "004", "005"]
    assert sql(db, "SELECT to_regclass('widgets')") == [(None,)]
    # The lock row stays set by a backend that is gone: the stuck lock poststack reports.
    locked, _, locked_by, _, _ = sql(db, LOCK)[0]
    assert locked and locked_by.startswith("psql:")
    refused = cli("db", "migrate")
    assert refused.exit_code == 1 and "migration system is locked" in refused.stderr
    assert cli("db", "unlock-migrations", "--confirm").exit_code == 0
    again = cli("db", "migrate")
    assert again.exit_code == 1 and "Migration 006 failed" in again.stdout


def test_a_script_for_another_schema_and_prefix(cli, db, database_url, tmp_path: Path):
    where = ("--schema", "tracking", "--table-prefix", "app_")
    script = script_of(cli, "db", "migrate", *where)
    assert '"tracking"."app_migrations"' in script and "schema_migrations" not in script
    ran = psql(database_url, script, tmp_path)
    assert ran.returncode == 0, ran.stderr
    status = cli("db", "migration-status", "--exit-code", *where)
    assert status.exit_code == 0 and "Current version: 005" in status.stdout
    assert sql(db, "SELECT locked FROM tracking.app_migrations_lock") == [(False,)]
    assert sql(db, "SELECT count(*) FROM tracking.app_migrations_audit WHERE operation = 'migrate'") == [(5,)]
    assert sql(db, "SELECT to_regclass('public.schema_migrations')") == [(None,)]
    assert "this script is a no-op" in script_of(cli, "db", "migrate", *where)


def test_non_ascii_text_survives_a_client_whose_encoding_is_not_utf8(cli, db, database_url, migrations_dir, tmp_path):
    """psql's own client encoding (the locale's) comes back after each step's RESET ALL: the
    script sets UTF-8 again, so the rows and the next step's text arrive as written."""
    write(
        migrations_dir,
        "006_cafe_menu.sql",
        "CREATE TABLE menu (dish text);\nINSERT INTO menu VALUES ('crème brûlée');\n",
    )
    write(migrations_dir, "007_more.sql", "-- naïve\nINSERT INTO menu VALUES ('smørrebrød');\n")
    script = script_of(cli, "db", "migrate")
    path = tmp_path / "script.sql"
    path.write_text(script, encoding="utf-8")
    argv = [str(embedded.bin_dir() / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-f", str(path)]
    ran = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env={**os.environ, "PGCLIENTENCODING": "LATIN1"}
    )
    assert ran.returncode == 0, ran.stderr
    assert sql(db, "SELECT dish FROM menu ORDER BY dish") == [("crème brûlée",), ("smørrebrød",)]
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version IN ('006', '007') AND success") == [(2,)]


def test_a_script_is_for_the_schema_it_was_written_from(cli, db, database_url, twin, migrations_dir: Path, tmp_path):
    """Which migrations it holds as applied by hand was decided from the schema: a migration
    run by hand since, or a database whose schema differs under the same history (none), and
    the script stops before anything, rather than run a migration a second time."""
    script = script_of(cli, "db", "migrate")
    (first,) = [p for p in migrations_dir.glob("001_*.sql") if p.suffixes == [".sql"]]
    sql(db, first.read_text())  # applied by hand after the script was written, never tracked
    before = catalog_snapshot(db)
    ran = psql(database_url, script, tmp_path)
    assert ran.returncode == 3, ran.stderr
    assert "schema is not the one this script was written for" in ran.stderr
    assert catalog_snapshot(db) == before
    assert sql(db, "SELECT to_regclass('schema_migrations')") == [(None,)]
    twin_url, twin_db, _ = twin
    sql(twin_db, "CREATE TABLE hand_made (id int)")  # same (no) history, another schema
    ran = psql(twin_url, script, tmp_path)
    assert ran.returncode == 3 and "schema is not the one" in ran.stderr
    assert sql(twin_db, "SELECT to_regclass('schema_migrations')") == [(None,)]


def test_a_script_up_to_a_target_and_on_a_twin_database(cli, db, twin, tmp_path: Path):
    """Written from one database, it runs on another with the same history (alembic --sql's use)."""
    twin_url, twin_db, _ = twin
    script = script_of(cli, "db", "migrate", "--target", "003")
    assert "apply 003_" in script and "apply 004_" not in script
    ran = psql(twin_url, script, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert [r[0] for r in sql(twin_db, TRACKING)] == ["001", "002", "003"]
    assert sql(db, "SELECT to_regclass('schema_migrations')") == [(None,)]  # written from here, run there


def test_the_script_holds_what_the_executor_sends(cli, database_url, migrations_dir: Path, monkeypatch):
    """executor.offline and execute cannot drift: a real run's sends, in order, are the steps'
    bodies and records offline() gives for its plan (the measured values aside)."""
    from reconciler import commands
    from reconciler.config import resolve_settings
    from reconciler.db import Session, host_pid
    from reconciler.remediation import executor

    assert cli("db", "create-schema").exit_code == 0  # so the run's only executed plan is its own
    sent: list = []
    original = Session.run_batch

    def recording(self, statements, **kwargs):
        sent.extend(statements)
        return original(self, statements, **kwargs)

    monkeypatch.setattr(Session, "run_batch", recording)
    settings = resolve_settings(database_url=database_url, migrations_dir=migrations_dir)
    result = commands.migrate(settings, target=None, dry_run=False)
    assert result.ok and len(result.plan.steps) == 5

    def measured_aside(statement):
        params = statement.params and {
            k: None if k in ("execution_ms", "host_pid") else v for k, v in statement.params.items()
        }
        return (statement.sql, params)

    steps = executor.offline(result.plan, host_pid(), {"execution_ms": None, "error": None})
    expected = [measured_aside(s) for step in steps for s in (*step.body, *step.record)]
    assert [measured_aside(s) for s in sent] == expected
    assert sum(1 for sql_text, _ in expected if sql_text == "BEGIN") == 5  # 4 steps in one, 005's record in its own


FLYWAY = {
    "beforeMigrate.sql": "CREATE TABLE IF NOT EXISTS run_log (id serial PRIMARY KEY, event text);\n"
    "INSERT INTO run_log (event) VALUES ('beforeMigrate');\n",
    "beforeEachMigrate.sql": "INSERT INTO run_log (event) VALUES ('beforeEach');\n",
    "afterMigrate.sql": "INSERT INTO run_log (event) VALUES ('afterMigrate');\n",
    "V1__items.sql": "CREATE TABLE items (id int PRIMARY KEY, name text);\n",
    "V2__seed.sql": "INSERT INTO items VALUES (1, 'one');\n",
    "R__items_view.sql": "CREATE OR REPLACE VIEW items_view AS SELECT id, name FROM items;\n",
}


def test_with_flyway_repeatables_and_callbacks_the_script_is_db_migrate(db, database_url, twin, tmp_path: Path):
    """Items 5 and 6 together: callbacks and repeatables come out in the script where
    db migrate runs them, and an edited repeatable's second application too."""
    directory = tmp_path / "flyway"
    directory.mkdir()
    for name, text in FLYWAY.items():
        (directory / name).write_text(text)
    twin_url, twin_db, _ = twin

    def run(url: str, *args: str):  # type: ignore[no-untyped-def]
        return run_cli(*args, "--database-url", url, "--migrations-dir", str(directory))

    def compared(conn, url):  # type: ignore[no-untyped-def]
        return {
            "schema": schema_dump(url),
            "tracking": sql(conn, TRACKING),
            "audit": sql(conn, AUDIT),
            "log": sql(conn, "SELECT event FROM run_log ORDER BY id"),
        }

    for _ in range(2):  # the first run, then after the repeatable was edited
        script = run(twin_url, "db", "migrate", "--dry-run", "--format", "sql")
        assert script.exit_code == 0, script.output
        ran = psql(twin_url, script.stdout, tmp_path)
        assert ran.returncode == 0, ran.stderr
        assert run(database_url, "db", "migrate").exit_code == 0
        assert compared(twin_db, twin_url) == compared(db, database_url)
        (directory / "R__items_view.sql").write_text(
            "CREATE OR REPLACE VIEW items_view AS SELECT id, name, 1 AS n FROM items;\n"
        )
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = 'R__items_view'") == [(2,)]
