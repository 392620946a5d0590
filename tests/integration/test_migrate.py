"""db migrate on a real PostgreSQL: order, transactions, tracking and audit rows, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import catalog_snapshot, run_cli, sql, write


def test_applies_pending_in_order_with_tracking_and_audit(cli, db):
    result = cli("db", "migrate")
    assert result.exit_code == 0, result.output
    assert "Applied 5 migration(s): 001, 002, 003, 004, 005" in result.stdout
    tracked = sql(
        db, "SELECT version, description, success, checksum_algorithm, transactional FROM schema_migrations ORDER BY id"
    )
    assert [r[0] for r in tracked] == ["001", "002", "003", "004", "005"]
    assert all(r[2] for r in tracked) and {r[3] for r in tracked} == {"sha256-lf"}
    assert tracked[4][4] is False  # 005 builds an index concurrently, outside a transaction
    assert sql(
        db, "SELECT to_regclass('billing.invoices') IS NOT NULL, to_regclass('users_created_at_idx') IS NOT NULL"
    ) == [(True, True)]
    audit = sql(
        db,
        "SELECT operation, action, version, outcome FROM schema_migrations_audit WHERE operation = 'migrate' ORDER BY id",
    )
    assert audit == [("migrate", "apply_migration", v, "ok") for v in ["001", "002", "003", "004", "005"]]
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]


def test_second_run_does_nothing(cli, db):
    cli("db", "migrate")
    result = cli("db", "migrate")
    assert result.exit_code == 0
    assert "Database is up to date!" in result.stdout
    assert sql(db, "SELECT count(*) FROM schema_migrations") == [(5,)]


def test_dry_run_prints_sql_and_changes_nothing(cli, db):
    before = catalog_snapshot(db)
    result = cli("db", "migrate", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would be applied: 001, 002, 003, 004, 005" in result.stdout
    assert "CREATE TYPE user_role AS ENUM" in result.stdout
    assert "CREATE INDEX CONCURRENTLY" in result.stdout and "outside a transaction" in result.stdout
    assert 'INSERT INTO "public"."schema_migrations"' in result.stdout
    assert catalog_snapshot(db) == before


def test_target_stops_at_version(cli, db):
    result = cli("db", "migrate", "--target", "002")
    assert result.exit_code == 0, result.output
    assert sql(db, "SELECT version FROM schema_migrations ORDER BY id") == [("001",), ("002",)]
    assert cli("db", "migrate", "--target", "042").exit_code == 2


def test_failure_rolls_back_records_and_names_file_and_line(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    write(migrations_dir, "006_widgets.sql", "CREATE TABLE widgets (id int);\n\nINSERT INTO\n    nosuch VALUES (1);\n")
    write(migrations_dir, "007_later.sql", "CREATE TABLE later (id int);\n")
    result = cli("db", "migrate")
    assert result.exit_code == 1
    assert (
        f'Migration 006 failed: {migrations_dir / "006_widgets.sql"}:4: relation "nosuch" does not exist'
        in result.stdout
    )
    assert sql(db, "SELECT to_regclass('widgets'), to_regclass('later')") == [(None, None)]
    failed = sql(db, "SELECT version, success, error FROM schema_migrations WHERE NOT success")
    assert failed[0][:2] == ("006", False) and 'relation "nosuch" does not exist' in failed[0][2]
    assert sql(db, "SELECT outcome FROM schema_migrations_audit WHERE version = '006'") == [("failed",)]
    status = cli("db", "migration-status")
    assert "Failed migrations: 1" in status.stdout and "Pending migrations: 2" in status.stdout

    # Fixed and retried: the failed row gives way to the successful one; the audit keeps both.
    write(migrations_dir, "006_widgets.sql", "CREATE TABLE widgets (id int);\n")
    result = cli("db", "migrate")
    assert result.exit_code == 0, result.output
    assert sql(db, "SELECT version, success FROM schema_migrations WHERE version >= '006' ORDER BY id") == [
        ("006", True),
        ("007", True),
    ]
    assert sql(db, "SELECT outcome FROM schema_migrations_audit WHERE version = '006' ORDER BY id") == [
        ("failed",),
        ("ok",),
    ]


def test_failed_non_transactional_migration_blocks_until_repaired(cli, db, migrations_dir: Path):
    write(
        migrations_dir,
        "006_two_indexes.sql",
        "CREATE INDEX CONCURRENTLY accounts_email_idx ON accounts (email);\nCREATE INDEX CONCURRENTLY bad_idx ON nosuch (x);\n",
    )
    result = cli("db", "migrate")
    assert result.exit_code == 1
    assert "statements before the failing one were kept" in result.stdout
    assert sql(db, "SELECT to_regclass('accounts_email_idx') IS NOT NULL") == [(True,)]
    again = cli("db", "migrate")
    assert again.exit_code == 1
    assert "failed earlier outside a transaction and may be partly applied" in again.stderr


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("006_broken.sql", "CREATE TABLE ok (id int);\nCREATE TABLE (;\n", "006_broken.sql:2: syntax error"),
        ("bad_name.sql", "SELECT 1;", "bad_name.sql: file name does not match NNN_description.sql"),
        ("002_again.sql", "SELECT 1;", "duplicate migration version 002"),
        ("006_latin1.sql", b"SELECT 'caf\xe9';", "006_latin1.sql:1: not valid UTF-8"),
    ],
)
def test_bad_files_are_refused_before_anything_runs(cli, db, migrations_dir: Path, name, content, message):
    write(migrations_dir, name, content)
    before = catalog_snapshot(db)
    result = cli("db", "migrate")
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.stderr.count("\n") <= 2 and "Traceback" not in result.output
    assert catalog_snapshot(db) == before  # not even the tracking tables were created


def test_migration_may_contain_percent_and_colons(cli, db, migrations_dir: Path):
    write(
        migrations_dir,
        "006_text.sql",
        "CREATE TABLE notes (body text);\nINSERT INTO notes VALUES ('100% :done %(x)s');\n",
    )
    assert cli("db", "migrate").exit_code == 0
    assert sql(db, "SELECT body FROM notes") == [("100% :done %(x)s",)]


def test_out_of_order_migration_is_refused_then_applied_when_allowed(cli, db, migrations_dir: Path):
    (migrations_dir / "003_create_billing_schema.sql").rename(migrations_dir / "003_create_billing_schema.sql.off")
    (migrations_dir / "003_create_billing_schema.rollback.sql").unlink()
    cli("db", "migrate")
    (migrations_dir / "003_create_billing_schema.sql.off").rename(migrations_dir / "003_create_billing_schema.sql")
    refused = cli("db", "migrate")
    assert refused.exit_code == 1, refused.output
    assert "Migration 003 is pending but older than applied migration 005" in refused.stderr
    assert "--allow-out-of-order" in refused.stderr
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '003'") == [(0,)]
    result = cli("db", "migrate", "--allow-out-of-order")
    assert result.exit_code == 0, result.output
    assert "Migration 003 is applied out of order" in result.stderr
    assert sql(db, "SELECT version FROM schema_migrations ORDER BY id")[-1] == ("003",)


def test_json_output(cli):
    data = json.loads(cli("db", "migrate", "--format", "json").stdout)
    assert data["ok"] and [o["version"] for o in data["outcomes"]] == ["001", "002", "003", "004", "005"]
    assert data["plan"]["operation"] == "migrate"


def test_custom_tracking_schema(cli, db):
    result = cli("db", "migrate", "--schema", "ops")
    assert result.exit_code == 0, result.output
    assert sql(db, "SELECT count(*) FROM ops.schema_migrations") == [(5,)]
    assert sql(db, "SELECT to_regclass('public.schema_migrations')") == [(None,)]


def test_empty_and_comment_only_migrations_are_tracked_no_ops(cli, db, migrations_dir: Path):
    """Real histories keep them (another database's dialect, a placeholder): they apply,
    roll back and apply again, and are never held for lack of evidence."""
    write(migrations_dir, "006_for_mysql_only.sql", "-- nothing to do on PostgreSQL\n/* see the mysql dir */\n")
    write(migrations_dir, "006_for_mysql_only.rollback.sql", "")
    write(migrations_dir, "007_empty.sql", "")
    write(migrations_dir, "007_empty.rollback.sql", "-- nothing\n")
    write(migrations_dir, "008_after.sql", "CREATE TABLE after_them (id int);\n")
    write(migrations_dir, "008_after.rollback.sql", "DROP TABLE after_them;\n")
    assert cli("db", "migrate").exit_code == 0
    assert sql(db, "SELECT version FROM schema_migrations WHERE version > '005' ORDER BY id") == [
        ("006",),
        ("007",),
        ("008",),
    ]
    assert cli("db", "rollback", "005").exit_code == 0
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version > '005'") == [(0,)]
    assert cli("db", "migrate").exit_code == 0
    # Tracking lost: the empty ones hold nothing up (nothing they do can run twice).
    sql(db, "DROP TABLE schema_migrations, schema_migrations_lock, schema_migrations_audit")
    assert cli("db", "recover").exit_code == 0
    result = cli("db", "migrate")
    assert result.exit_code == 0, result.output
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE success") == [(8,)]


def test_a_long_history_is_summed_up_not_listed(database_url: str, tmp_path: Path):
    """346 versions on one line help nobody: the ends and a count, the whole list in JSON."""
    directory = tmp_path / "long"
    directory.mkdir()
    for number in range(1, 41):
        write(directory, f"{number:03d}_t{number}.sql", f"CREATE TABLE t{number} (id int);\n")
    common = ("--database-url", database_url, "--migrations-dir", str(directory))
    dry = run_cli("db", "migrate", "--dry-run", *common)
    first = dry.stdout.splitlines()[0]
    assert "001, 002, 003, … 038, 039, 040 (40 in all; --format json lists them)" in first, first
    assert "020" not in first
    data = json.loads(run_cli("db", "migrate", "--format", "json", *common).stdout)
    assert data["ok"] and [o["version"] for o in data["outcomes"]] == [f"{n:03d}" for n in range(1, 41)]
    status = run_cli("db", "migration-status", *common)
    assert status.exit_code == 0 and "040" in status.stdout
