"""Reporting and utility commands: status, info, create-schema, backup, shell, server, version."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from reconciler.dsn import libpq_env
from reconciler.remediation import backup as backups
from tests.conftest import PASSWORD, PASSWORD_ROLE, catalog_snapshot, run_cli, sql, write


def test_status_in_the_guides_words(cli, db, migrations_dir: Path):
    cli("db", "migrate", "--target", "001")
    result = cli("db", "migration-status")
    assert result.exit_code == 0
    assert result.stdout.startswith("Current version: 001\nApplied migrations: 1\nPending migrations: 4\n")
    cli("db", "migrate")
    result = cli("db", "migration-status")
    assert "Current version: 005" in result.stdout and "✅ Database is up to date!" in result.stdout
    data = json.loads(cli("db", "migration-status", "--format", "json").stdout)
    assert data["current_version"] == "005" and data["up_to_date"] and data["applied_count"] == 5


def test_read_only_commands_create_nothing(cli, db):
    before = catalog_snapshot(db)
    for command in (["db", "migration-status"], ["db", "migration-info"], ["db", "migrate", "--dry-run"]):
        result = cli(*command)
        assert result.exit_code == 0, result.output
    assert catalog_snapshot(db) == before
    assert "Current version: none" in cli("db", "migration-status").stdout


def test_info_lists_files_server_and_lock(cli, db, migrations_dir: Path):
    write(
        migrations_dir,
        "005_index_users_by_created.verify.sql",
        "SELECT to_regclass('users_created_at_idx') IS NOT NULL;",
    )
    cli("db", "migrate", "--target", "003")
    data = json.loads(cli("db", "migration-info", "--format", "json").stdout)
    assert [f["status"] for f in data["files"]] == ["applied"] * 3 + ["pending"] * 2
    assert data["files"][4]["verify"] and data["files"][4]["transactional"] is False
    assert data["server_version"][0].isdigit() and data["lock"]["locked"] is False
    assert len(data["files"][0]["checksum"]) == 64
    text = cli("db", "migration-info").stdout
    assert "Lock: unlocked" in text and "Tracking schema: public" in text


def test_create_schema_and_force(cli, db):
    result = cli("db", "create-schema")
    assert result.exit_code == 0
    assert "Created schema_migrations, schema_migrations_audit, schema_migrations_lock" in result.stdout
    assert "already exist" in cli("db", "create-schema").stdout
    cli("db", "migrate")
    result = cli("db", "create-schema", "--force")
    assert result.exit_code == 0
    assert "Dropped schema_migrations, schema_migrations_lock" in result.stdout
    assert "5 tracking row(s)" in result.stdout
    assert sql(db, "SELECT count(*) FROM schema_migrations") == [(0,)]
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]
    # The audit table is append-only: --force keeps it, so what ran is still on record.
    assert ("create_tracking",) in sql(db, "SELECT action FROM schema_migrations_audit")
    assert ("apply_migration",) in sql(db, "SELECT action FROM schema_migrations_audit")


def test_backup_restores_with_psql_of_the_same_major(cli, db, database_url, pg_server, tmp_path: Path):
    cli("db", "migrate")
    sql(db, "INSERT INTO accounts (email, display_name) VALUES ('a@example.com', 'O''Brien')")
    out = tmp_path / "backup.sql"
    result = cli("db", "backup", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "Backup written to" in result.stdout and out.stat().st_size > 1000
    major = int(sql(db, "SHOW server_version_num")[0][0]) // 10000
    assert f"for PostgreSQL {major}" in result.stdout
    # Restore into a fresh database with the matching psql and compare.
    restored = database_url.rsplit("/", 1)[0] + "/" + "restored_" + database_url.rsplit("/", 1)[1].split("?")[0]
    restored += ("?" + database_url.split("?", 1)[1]) if "?" in database_url else ""
    name = restored.rsplit("/", 1)[1].split("?")[0]
    sql(db, f'CREATE DATABASE "{name}"')
    try:
        psql = backups.find_client("psql", major)
        env = libpq_env(restored)
        proc = subprocess.run(
            [str(psql.path), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(out)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        check = subprocess.run(
            [
                str(psql.path),
                "-X",
                "-At",
                "-c",
                "SELECT display_name FROM accounts; SELECT count(*) FROM schema_migrations",
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        assert check.stdout.split() == ["O'Brien", "5"]
    finally:
        sql(db, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_backup_default_path_is_timestamped_under_backups(cli, migrations_dir: Path):
    result = cli("db", "backup")
    assert result.exit_code == 0, result.output
    files = list((migrations_dir.parent / "backups").glob("poststack-*.sql"))
    assert len(files) == 1 and files[0].stat().st_size > 0


def test_shell_runs_sql_and_prints_the_result(cli, db):
    cli("db", "migrate")
    result = cli("db", "shell", "-c", "SELECT version, success FROM schema_migrations ORDER BY id LIMIT 2")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].split("|")[0].strip() == "version"
    assert "(2 rows)" in result.stdout
    result = cli("db", "shell", "-c", "DROP TABLE IF EXISTS nothing_here;")
    assert result.stdout.strip() == "DROP TABLE"
    result = cli("db", "shell", "-c", "SELECT * FROM nosuch")
    assert result.exit_code == 1 and 'relation "nosuch" does not exist' in result.stderr


def test_version():
    result = run_cli("version")
    assert result.exit_code == 0 and result.stdout.startswith("poststack 0.1.0")


def test_unreachable_server_exits_3_without_traceback(migrations_dir: Path):
    result = run_cli(
        "db",
        "migration-status",
        "--database-url",
        "postgresql://u:hunter2@127.0.0.1:1/db",
        "--migrations-dir",
        str(migrations_dir),
    )
    assert result.exit_code == 3
    assert "cannot connect to postgresql://u:***@127.0.0.1:1/db" in result.stderr
    assert "hunter2" not in result.output and "Traceback" not in result.output


def _own_database(database_url: str) -> str:
    return make_url(database_url).database


def test_wrong_password_exits_3_and_is_masked(pg_server, database_url, migrations_dir: Path):
    url = pg_server.url_for(_own_database(database_url), user=PASSWORD_ROLE, password="wrong-" + PASSWORD)
    result = run_cli("db", "migrate", "--database-url", url, "--migrations-dir", str(migrations_dir))
    if result.exit_code == 0:
        pytest.skip("this server does not check passwords for the test role")
    assert result.exit_code == 3
    assert "password authentication failed" in result.stderr
    assert "wrong-" not in result.output and PASSWORD not in result.output


def test_password_never_printed(pg_server, database_url, migrations_dir: Path):
    url = pg_server.url_for(_own_database(database_url), user=PASSWORD_ROLE, password=PASSWORD)
    for args in (
        ["db", "migration-info"],
        ["db", "migrate", "--dry-run"],
        ["db", "migration-status", "--format", "json"],
    ):
        result = run_cli(*args, "--database-url", url, "--migrations-dir", str(migrations_dir))
        assert PASSWORD not in result.output


def test_missing_migrations_dir_is_a_usage_error(database_url, tmp_path: Path):
    result = run_cli("db", "migrate", "--database-url", database_url, "--migrations-dir", str(tmp_path / "nope"))
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_server_status_and_stop_of_an_unused_project(tmp_path: Path):
    result = run_cli("db", "server", "status", "--migrations-dir", str(tmp_path / "migrations"))
    assert result.exit_code == 0 and "not initialized" in result.stdout
    result = run_cli("db", "server", "stop", "--migrations-dir", str(tmp_path / "migrations"))
    assert result.exit_code == 0 and "is not running" in result.stdout
