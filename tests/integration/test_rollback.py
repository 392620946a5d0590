"""db rollback VERSION: undo everything above VERSION, newest first, or nothing at all."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import catalog_snapshot, sql, write


def test_rolls_back_to_version_newest_first(cli, db):
    cli("db", "migrate")
    result = cli("db", "rollback", "002")
    assert result.exit_code == 0, result.output
    assert "Rolled back 3 migration(s): 005, 004, 003" in result.stdout
    assert sql(db, "SELECT version FROM schema_migrations ORDER BY id") == [("001",), ("002",)]
    assert sql(db, "SELECT to_regnamespace('billing'), to_regclass('users') IS NOT NULL") == [(None, True)]
    audit = sql(db, "SELECT version FROM schema_migrations_audit WHERE operation = 'rollback' ORDER BY id")
    assert audit == [("005",), ("004",), ("003",)]
    # and forward again
    assert cli("db", "migrate").exit_code == 0
    assert sql(db, "SELECT count(*) FROM schema_migrations") == [(5,)]


def test_rollback_to_zero_undoes_everything(cli, db):
    cli("db", "migrate")
    assert cli("db", "rollback", "0").exit_code == 0
    assert sql(db, "SELECT count(*) FROM schema_migrations") == [(0,)]
    assert sql(db, "SELECT to_regclass('accounts')") == [(None,)]


def test_missing_rollback_file_rolls_back_nothing(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    (migrations_dir / "003_create_billing_schema.rollback.sql").unlink()
    before = catalog_snapshot(db)
    result = cli("db", "rollback", "001")
    assert result.exit_code == 1
    assert "❌ Rollback failed: Migration 003 has no rollback file" in result.stderr
    assert catalog_snapshot(db) == before


def test_dry_run_shows_rollback_sql(cli, db):
    cli("db", "migrate")
    before = catalog_snapshot(db)
    result = cli("db", "rollback", "003", "--dry-run")
    assert result.exit_code == 0
    assert "would be rolled back: 005, 004" in result.stdout
    assert "DROP TRIGGER IF EXISTS users_touch_updated_at ON users" in result.stdout
    assert catalog_snapshot(db) == before


def test_failing_rollback_stops_and_keeps_earlier_steps(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    write(migrations_dir, "004_add_audit_function.rollback.sql", "DROP FUNCTION no_such_function();\n")
    result = cli("db", "rollback", "002")
    assert result.exit_code == 1
    assert "004_add_audit_function.rollback.sql:1: function no_such_function() does not exist" in result.stdout
    assert sql(db, "SELECT version FROM schema_migrations ORDER BY id") == [("001",), ("002",), ("003",), ("004",)]


def test_unknown_version_is_a_usage_error(cli):
    cli("db", "migrate")
    result = cli("db", "rollback", "77")
    assert result.exit_code == 2
    assert "no migration 77" in result.stderr
    assert cli("db", "rollback", "abc").exit_code == 2
