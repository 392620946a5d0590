"""No migration runs twice: the on-call sequences that used to re-run applied migrations
(lost tracking, recover, migrate; a schema restored from a dump; a failed attempt over a
migration applied by hand), each end to end on a real server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg2

from reconciler.remediation.backup import find_client
from tests.conftest import Result, run_cli, scratch_database, sql, write

LOSE_TRACKING = "DROP TABLE schema_migrations, schema_migrations_lock, schema_migrations_audit"


def _bound(url: str, directory: Path) -> Callable[..., Result]:
    """poststack bound to a database and a migrations directory."""

    def cli(*args: str) -> Result:
        return run_cli(*args, "--database-url", url, "--migrations-dir", str(directory))

    return cli


def _project(tmp_path: Path, url: str) -> tuple[Path, Callable[..., Result]]:
    """An empty migrations directory, and poststack bound to it and to ``url``."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    return directory, _bound(url, directory)


def _prices(directory: Path) -> None:
    write(directory, "001_prices.sql", "CREATE TABLE prices (id int PRIMARY KEY, amount numeric NOT NULL);\n")
    write(directory, "002_to_cents.sql", "UPDATE prices SET amount = amount * 100;\n")
    write(directory, "003_idx.sql", "CREATE INDEX prices_amount_idx ON prices (amount);\n")


def test_recover_then_migrate_never_reruns_a_data_migration(database_url: str, db, tmp_path: Path):
    directory, cli = _project(tmp_path, database_url)
    _prices(directory)

    assert cli("db", "migrate", "--target", "001").exit_code == 0
    sql(db, "INSERT INTO prices VALUES (1, 5)")
    assert cli("db", "migrate").exit_code == 0
    assert sql(db, "SELECT amount FROM prices") == [(500,)]
    sql(db, LOSE_TRACKING)

    # Before recovery, migrate sees that 001 is applied and runs nothing.
    refused = cli("db", "migrate")
    assert refused.exit_code == 1, refused.output
    assert "Nothing was run. Migration 001 appears to be applied already but is not tracked" in refused.stderr
    assert "poststack db recover" in refused.stderr

    recovered = cli("db", "recover")
    assert recovered.exit_code == 0, recovered.output
    assert "Added tracking for migrations 001, 003" in recovered.stdout
    # 002 changed only data: only its place between 001 and 003 says it ran, and recover
    # does not trust that unless told to.
    assert "Left untracked, shown applied by order only" in recovered.stdout and "002" in recovered.stdout

    # 002 changed only data: nothing shows whether it ran, and 003 after it is applied.
    again = cli("db", "migrate")
    assert again.exit_code == 1, again.output
    assert "Migration 002 is pending but older than applied migration 003" in again.stderr
    assert "probably applied by hand" in again.stderr and "--allow-out-of-order" in again.stderr
    applied = cli("apply", "--auto-approve")
    assert applied.exit_code == 1, applied.output  # apply did not converge: it must not say it did
    assert "❌ Nothing was run: pending migration(s) 002 held, not run" in applied.stdout
    assert "migration 002 is held (undetermined)" in applied.stdout
    assert "recover --trust-order 002" in applied.stdout
    assert sql(db, "SELECT amount FROM prices") == [(500,)]
    assert sql(db, "SELECT count(*) FROM schema_migrations_audit WHERE action = 'apply_migration'") == [(0,)]

    # The person knows it ran: recover --force 002 (or --trust-order) tracks it, and the
    # database is up to date.
    assert cli("db", "recover", "--force", "002").exit_code == 0
    assert cli("db", "migrate").stdout.startswith("✅ Database is up to date")
    assert sql(db, "SELECT amount FROM prices") == [(500,)]


def test_apply_never_runs_a_later_migration_over_a_partly_applied_one(database_url: str, db, tmp_path: Path):
    directory, cli = _project(tmp_path, database_url)
    write(directory, "001_a.sql", "CREATE TABLE a (id int);\n")
    write(directory, "002_b.sql", "CREATE TABLE b (id int);\nCREATE TABLE c (id int);\n")
    write(directory, "003_d.sql", "CREATE TABLE d (id int);\n")

    assert cli("db", "migrate", "--target", "001").exit_code == 0
    sql(db, "CREATE TABLE b (id int)")  # half of 002, by hand

    plan = json.loads(cli("plan", "--format", "json").stdout)
    assert not [s for s in plan["steps"] if s["action"] == "apply_migration"]
    held = [s for s in plan["steps"] if s["action"] == "manual" and s["version"] == "002"]
    assert held, plan["steps"]
    result = cli("apply", "--auto-approve")
    assert result.exit_code == 1, result.output
    assert "Migration 003 waits until migration 002 is resolved" in result.stdout
    assert sql(db, "SELECT to_regclass('public.d')") == [(None,)]
    refused = cli("db", "migrate")
    assert refused.exit_code == 1
    assert "Migration 002 is partly applied (" in refused.stderr
    assert "Waiting behind them: 003" in refused.stderr


def test_a_failed_attempt_does_not_hide_what_the_catalog_shows(database_url: str, db, tmp_path: Path):
    """001 was applied by hand; an attempt to run it again failed on that (as an earlier
    poststack did) and left a failed row. diagnose still sees 001 applied; recover tracks it."""
    directory, cli = _project(tmp_path, database_url)
    write(
        directory,
        "001_users.sql",
        "CREATE TABLE users (id int PRIMARY KEY);\nCREATE TABLE roles (id int);\nCREATE INDEX users_idx ON users (id);\n",
    )
    write(directory, "002_posts.sql", "CREATE TABLE posts (id int);\n")

    assert cli("db", "create-schema").exit_code == 0
    sql(db, (directory / "001_users.sql").read_text())
    # What a migrate run records when the file fails inside its transaction.
    sql(
        db,
        "INSERT INTO schema_migrations (version, description, checksum, execution_ms, success, error, transactional) "
        "VALUES ('001', 'users', 'x', 3, false, "
        "'001_users.sql:1: relation \"users\" already exists', true)",
    )
    report = json.loads(cli("db", "diagnose", "--format", "json").stdout)
    by_type = {(i["type"], i["version"]) for i in report["issues"]}
    assert ("missing_tracking", "001") in by_type, report["issues"]
    assert ("partial_migration", "001") not in by_type
    missing = next(i for i in report["issues"] if i["type"] == "missing_tracking")
    assert "already exists" in missing["details"]["failed_attempt"]

    refused = cli("db", "migrate")
    assert refused.exit_code == 1 and "Migration 001 appears to be applied already" in refused.stderr

    recovered = cli("db", "recover")
    assert recovered.exit_code == 0, recovered.output
    assert "Added tracking for migrations 001" in recovered.stdout
    assert sql(db, "SELECT version, success FROM schema_migrations ORDER BY id") == [("001", True)]
    assert cli("db", "migrate").exit_code == 0
    assert sql(db, "SELECT version FROM schema_migrations ORDER BY id") == [("001",), ("002",)]


def test_data_migrations_after_recovered_ones_wait_for_a_person(database_url: str, db, tmp_path: Path):
    """The newest migrations changed only data: after tracking is lost and recovered, nothing
    shows whether they ran, and poststack ran none of what comes before them."""
    directory, cli = _project(tmp_path, database_url)
    write(directory, "001_counts.sql", "CREATE TABLE counts (n int);\nINSERT INTO counts VALUES (0);\n")
    write(directory, "002_bump.sql", "UPDATE counts SET n = n + 1;\n")
    write(directory, "003_bump.sql", "UPDATE counts SET n = n + 10;\n")

    assert cli("db", "migrate").exit_code == 0
    sql(db, LOSE_TRACKING)
    assert cli("db", "recover").exit_code == 0
    refused = cli("db", "migrate")
    assert refused.exit_code == 1, refused.output
    assert "Migration 002 cannot be confirmed pending" in refused.stderr
    assert "recorded without poststack running them" in refused.stderr
    assert "--allow-undetermined" in refused.stderr
    assert cli("apply", "--auto-approve").exit_code == 1
    assert sql(db, "SELECT n FROM counts") == [(11,)]

    # Told that they did not run (here: the person knows better), poststack runs them.
    assert cli("db", "migrate", "--allow-undetermined").exit_code == 0
    assert sql(db, "SELECT n FROM counts") == [(22,)]


def test_data_migrations_are_run_when_poststack_ran_everything_before_them(cli, db):
    """The ordinary case stays ordinary: tracking poststack wrote vouches for what follows."""
    assert cli("db", "migrate", "--target", "002").exit_code == 0
    assert cli("db", "migrate").exit_code == 0
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE success") == [(5,)]


def _churning_history(directory: Path) -> None:
    """Fifteen migrations as a real project has them: views replaced, functions rewritten,
    renames, an enum that grows, data migrations between the schema changes."""
    files = [
        "CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL);",
        "CREATE TYPE account_state AS ENUM ('active');",
        "ALTER TABLE accounts ADD COLUMN state account_state NOT NULL DEFAULT 'active';",
        "CREATE VIEW active_accounts AS SELECT id, name FROM accounts WHERE state = 'active';",
        "UPDATE accounts SET name = trim(name);",
        "CREATE OR REPLACE FUNCTION account_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM accounts';",
        "ALTER TYPE account_state ADD VALUE 'suspended';",
        "DROP VIEW active_accounts;\nCREATE VIEW active_accounts AS SELECT id, name, state FROM accounts WHERE state = 'active';",
        "ALTER TABLE accounts RENAME COLUMN name TO display_name;",
        "CREATE OR REPLACE FUNCTION account_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM accounts WHERE true';",
        "UPDATE accounts SET display_name = lower(display_name);",
        "CREATE TABLE invoices (id bigint PRIMARY KEY, account_id bigint REFERENCES accounts (id));",
        "CREATE INDEX invoices_account_idx ON invoices (account_id);",
        "ALTER TABLE invoices RENAME TO bills;",
        "CREATE TABLE audit_log (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());",
    ]
    for number, body in enumerate(files, start=1):
        write(directory, f"{number:03d}_m{number}.sql", body + "\n")


def test_a_schema_restored_from_a_dump_is_recovered_without_rerunning_anything(
    pg_server, database_url: str, db, tmp_path: Path
):
    directory, migrate_here = _project(tmp_path, database_url)
    _churning_history(directory)
    assert migrate_here("db", "migrate").exit_code == 0
    server_major = int(sql(db, "SHOW server_version_num")[0][0]) // 10000
    pg_dump = find_client("pg_dump", server_major)
    dump = subprocess.run(
        [str(pg_dump.path), "--schema-only", "--no-owner", database_url], capture_output=True, text=True, check=True
    ).stdout

    name = "restored_" + sql(db, "SELECT current_database()")[0][0]
    with scratch_database(pg_server, name) as restored:
        with psycopg2.connect(restored) as loading, loading.cursor() as cur:
            cur.execute("\n".join(line for line in dump.splitlines() if not line.startswith("\\")))
        loading.close()
        cli = _bound(restored, directory)

        # The tracking tables came back empty: nothing may run before recovery.
        assert cli("db", "migrate").exit_code == 1
        assert cli("db", "recover").exit_code == 0
        after = cli("db", "migrate")
        assert after.exit_code == 1, after.output  # what recover could not prove is held, not run
        assert cli("apply", "--auto-approve").exit_code == 1
        target = psycopg2.connect(restored)
        ran = sql(target, "SELECT count(*) FROM schema_migrations_audit WHERE action = 'apply_migration'")
        assert ran == [(0,)], "a migration of the restored history ran again"
        assert sql(target, "SELECT count(*) FROM schema_migrations WHERE execution_ms IS NOT NULL") == [(0,)]
        target.close()


def test_tracking_rows_deleted_by_hand_are_found_in_the_audit_trail(database_url: str, db, tmp_path: Path):
    """The newest rows are gone (a tracking table restored from an older copy): the catalog
    cannot tell that the data migrations ran, poststack's audit table can."""
    directory, cli = _project(tmp_path, database_url)
    write(directory, "001_counts.sql", "CREATE TABLE counts (n int);\nINSERT INTO counts VALUES (0);\n")
    write(directory, "002_bump.sql", "UPDATE counts SET n = n + 1;\n")
    write(directory, "003_bump.sql", "UPDATE counts SET n = n + 10;\n")

    assert cli("db", "migrate").exit_code == 0
    sql(db, "DELETE FROM schema_migrations WHERE version IN ('002', '003')")
    refused = cli("db", "migrate")
    assert refused.exit_code == 1, refused.output
    assert "Migration 002 appears to be applied already but is not tracked (the audit table says" in refused.stderr
    recovered = cli("db", "recover")
    assert recovered.exit_code == 0, recovered.output
    assert "Added tracking for migrations 002, 003" in recovered.stdout
    assert cli("db", "migrate").stdout.startswith("✅ Database is up to date")
    assert sql(db, "SELECT n FROM counts") == [(11,)]

    # Rolled back through poststack, the audit trail says so, and it runs again.
    write(directory, "003_bump.rollback.sql", "UPDATE counts SET n = n - 10;\n")
    assert cli("db", "rollback", "002").exit_code == 0
    assert cli("db", "migrate").exit_code == 0
    assert sql(db, "SELECT n FROM counts") == [(11,)]


def test_a_renumbered_migration_is_not_run_again(cli, db, migrations_dir: Path):
    assert cli("db", "migrate").exit_code == 0
    old = migrations_dir / "004_add_audit_function.sql"
    old.rename(migrations_dir / "006_add_audit_function.sql")
    (migrations_dir / "004_add_audit_function.rollback.sql").unlink()
    refused = cli("db", "migrate")
    assert refused.exit_code == 1, refused.output
    assert "Migration 006 has the same content as applied migration 004, whose file is gone" in refused.stderr
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '006'") == [(0,)]


def test_a_merge_that_renumbers_an_applied_migration_is_not_papered_over(cli, db, migrations_dir: Path):
    """004 was applied; a merge moved it to 006 and gave 004 to another branch's migration.
    Accepting the new 004's checksum would record it as applied without running it."""
    assert cli("db", "migrate").exit_code == 0
    (migrations_dir / "004_add_audit_function.sql").rename(migrations_dir / "006_add_audit_function.sql")
    (migrations_dir / "004_add_audit_function.rollback.sql").unlink()
    write(migrations_dir, "004_add_tags.sql", "CREATE TABLE tags (id int);\n")
    report = json.loads(cli("db", "diagnose", "--format", "json").stdout)
    mismatch = next(i for i in report["issues"] if i["type"] == "checksum_mismatch")
    assert not mismatch["auto_fixable"] and "006_add_audit_function.sql" in mismatch["message"]
    result = cli("apply", "--auto-approve")
    assert result.exit_code == 1, result.output
    assert sql(db, "SELECT checksum FROM schema_migrations WHERE version = '004'") != [(None,)]
    assert "update_checksum" not in result.stdout
    assert cli("db", "repair", "--force").exit_code in (0, 1)
    assert sql(db, "SELECT to_regclass('public.tags')") == [(None,)]
    tracked = sql(db, "SELECT checksum FROM schema_migrations WHERE version = '004'")[0][0]
    assert tracked != hashlib.sha256(b"CREATE TABLE tags (id int);\n").hexdigest()


def test_the_audit_trail_wins_over_a_catalog_that_lost_the_objects(database_url: str, db, tmp_path: Path):
    """003 drops 002's table with dynamic SQL the parser cannot see; 002's row is deleted.
    The catalog says 002 never ran; the audit table says it did."""
    directory, cli = _project(tmp_path, database_url)
    write(directory, "001_runs.sql", "CREATE TABLE runs (v text);\n")
    write(directory, "002_b2.sql", "CREATE TABLE b2 (id int);\nINSERT INTO runs VALUES ('002');\n")
    write(directory, "003_drop.sql", "DO $$ BEGIN EXECUTE 'DROP TABLE b2'; END $$;\n")
    assert cli("db", "migrate").exit_code == 0
    sql(db, "DELETE FROM schema_migrations WHERE version = '002'")
    refused = cli("db", "migrate", "--allow-out-of-order")
    assert refused.exit_code == 1, refused.output
    assert "the audit table says poststack applied it" in refused.stderr
    assert "undone by hand, or dropped later" in refused.stderr
    assert cli("db", "recover", "--force", "002").exit_code == 0
    assert cli("db", "migrate").exit_code == 0
    assert sql(db, "SELECT count(*) FROM runs") == [(1,)]


def test_the_newest_migration_undone_by_hand_waits_for_a_person(database_url: str, db, tmp_path: Path):
    """Its table dropped and its row deleted by hand: the audit says it ran, the catalog says
    it did not. It is not run again on a guess; --allow-undetermined runs it."""
    directory, cli = _project(tmp_path, database_url)
    write(directory, "001_runs.sql", "CREATE TABLE runs (v text);\n")
    write(directory, "002_t.sql", "CREATE TABLE t2 (id int);\nINSERT INTO runs VALUES ('002');\n")
    assert cli("db", "migrate").exit_code == 0
    sql(db, "DROP TABLE t2; DELETE FROM schema_migrations WHERE version = '002'")
    refused = cli("db", "migrate")
    assert refused.exit_code == 1 and "Migration 002 cannot be confirmed pending" in refused.stderr
    assert cli("db", "migrate", "--allow-undetermined").exit_code == 0
    assert sql(db, "SELECT count(*) FROM runs") == [(2,)]


def test_an_emergency_reset_forgets_nothing_that_ran(database_url: str, db, tmp_path: Path):
    """The reset rebuilds tracking from the catalog; the audit table it keeps still knows the
    data migration ran and the concurrent build failed half-way."""
    directory, cli = _project(tmp_path, database_url)
    write(directory, "001_t.sql", "CREATE TABLE t (id int);\nCREATE TABLE runs (v text);\n")
    write(directory, "002_data.sql", "INSERT INTO t VALUES (1), (1);\nINSERT INTO runs VALUES ('002');\n")
    write(
        directory,
        "003_unique.sql",
        "INSERT INTO runs VALUES ('003');\nCREATE UNIQUE INDEX CONCURRENTLY t_id ON t (id);\n",
    )
    assert cli("db", "migrate").exit_code == 1  # 003's build fails on the duplicate, after its INSERT
    reset = cli("apply", "--playbook", "emergency-reset", "--auto-approve", "--confirm")
    assert reset.exit_code in (0, 1), reset.output
    assert sql(db, "SELECT to_regclass('public.schema_migrations_audit') IS NOT NULL") == [(True,)]
    refused = cli("db", "migrate")
    assert refused.exit_code == 1, refused.output
    assert "Migration 003 failed earlier outside a transaction" in refused.stderr
    assert sql(db, "SELECT v, count(*) FROM runs GROUP BY v ORDER BY v") == [("002", 1), ("003", 1)]


def test_recover_force_tracks_only_what_migrate_holds(database_url: str, db, tmp_path: Path):
    """After lost tracking, --force tracks the data migration between recovered ones, never
    the ones after a migration that has not run (they cannot have run either)."""
    directory, cli = _project(tmp_path, database_url)
    write(directory, "001_a.sql", "CREATE TABLE a (n int);\nINSERT INTO a VALUES (0);\n")
    write(directory, "002_bump.sql", "UPDATE a SET n = n + 1;\n")
    write(directory, "003_b.sql", "CREATE TABLE b (id int);\n")
    write(directory, "004_c.sql", "CREATE TABLE c (id int);\n")
    write(directory, "005_fill.sql", "INSERT INTO c VALUES (5);\n")
    assert cli("db", "migrate", "--target", "003").exit_code == 0
    sql(db, LOSE_TRACKING)
    # The replay shows 001 and 003 applied by their changes, 002 by its place between them:
    # --trust-order tracks it too; never 005: 004 has not run.
    forced = cli("db", "recover", "--trust-order")
    assert forced.exit_code == 0, forced.output
    assert "Added tracking for migrations 001, 002, 003\n" in forced.stdout
    assert cli("db", "migrate").exit_code == 0
    assert sql(db, "SELECT count(*) FROM c") == [(1,)]
    assert sql(db, "SELECT n FROM a") == [(1,)]


def test_a_lock_row_copied_from_another_database_never_ends_a_backend_there(cli, db, pg_server, template_db):
    """pg_dump | psql copied a locked row naming a backend of the source database."""
    assert cli("db", "create-schema").exit_code == 0
    with scratch_database(pg_server, f"poststack_source_{os.getpid()}", template_db) as source_url:
        other = psycopg2.connect(source_url)
        other_pid = sql(other, "SELECT pg_backend_pid()")[0][0]
        sql(
            db,
            "UPDATE schema_migrations_lock SET locked = true, locked_at = now() - interval '1 minute', "
            "locked_by = 'elsewhere:1', backend_pid = %s, application_name = 'poststack'",
            (other_pid,),
        )
        result = cli("db", "clean", "--locks", "--confirm", "--terminate")
        assert result.exit_code in (0, 1), result.output
        assert sql(other, "SELECT 1") == [(1,)], "the other database's backend was ended"
        other.close()


def test_a_failed_attempt_outside_a_transaction_says_what_it_kept(database_url: str, db, tmp_path: Path):
    directory, cli = _project(tmp_path, database_url)
    write(directory, "001_t.sql", "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1), (1);\n")
    write(
        directory,
        "002_unique.sql",
        "INSERT INTO t VALUES (2);\nCREATE UNIQUE INDEX CONCURRENTLY t_id ON t (id);\n",
    )
    assert cli("db", "migrate").exit_code == 1
    refused = cli("db", "migrate")
    assert refused.exit_code == 1
    assert "kept from that attempt: line 1 (Insert)" in refused.stderr
    assert "the whole file runs again" in refused.stderr
    # A plan that can only hold migrations is not "nothing to do".
    assert cli("plan", "--detailed-exitcode").exit_code == 2


def test_an_empty_migrations_directory_is_not_up_to_date(cli, database_url: str, tmp_path: Path):
    assert cli("db", "migrate").exit_code == 0
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    result = run_cli("db", "migrate", "--database-url", database_url, "--migrations-dir", str(empty))
    assert result.exit_code == 2, result.output
    assert "no migration files in" in result.stderr and "5 migration(s) are tracked" in result.stderr


def test_a_comment_only_migration_run_by_poststack_vouches_for_nothing_after_it(database_url: str, db, tmp_path: Path):
    """Found by the on-call probe: after recover, migrate ran the comment-only file, then took
    that as poststack having run what precedes the next one, and ran a data migration that
    had run by hand a second time."""
    directory, cli = _project(tmp_path, database_url)
    write(directory, "001_c.sql", "CREATE TABLE c (n int);\nINSERT INTO c VALUES (0);\n")
    write(directory, "002_note.sql", "-- MySQL needs something here; nothing on PostgreSQL.\n")
    write(directory, "003_bump.sql", "UPDATE c SET n = n + 1;\n")
    sql(db, "CREATE TABLE c (n int); INSERT INTO c VALUES (0); UPDATE c SET n = n + 1")  # 001 and 003, by hand
    assert cli("db", "recover").exit_code == 0
    held = cli("db", "migrate")
    assert held.exit_code == 1 and "Migration 003 cannot be confirmed pending" in held.stderr, held.output
    assert sql(db, "SELECT n FROM c") == [(1,)]
