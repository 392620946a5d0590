"""Every issue type, built for real on PostgreSQL, diagnosed in the guide's words."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import jsonschema
import psycopg2

from tests.conftest import REPO, sql, start_migrate, wait_for, write


def apply_by_hand(db, migrations_dir: Path, *versions: str) -> None:
    """What an operator does at 3 a.m.: run the file with psql, forget the tracking row."""
    for version in versions:
        (path,) = [p for p in migrations_dir.glob(f"{version}_*.sql") if p.name.count(".") == 1]
        sql(db, path.read_text())


def diagnose(cli, *args: str):
    return cli("db", "diagnose", *args)


def issues_of(cli, *args: str) -> list[dict]:
    return json.loads(cli("db", "diagnose", "--format", "json", *args).stdout)["issues"]


def test_healthy_database_passes(cli):
    cli("db", "migrate")
    result = diagnose(cli)
    assert result.exit_code == 0, result.output
    assert "Overall Status: ✅ PASS" in result.stdout and "Total Issues: 0" in result.stdout


def test_scenario_1_applied_by_hand_but_not_tracked(cli, db, migrations_dir: Path):
    cli("db", "migrate", "--target", "001")
    apply_by_hand(db, migrations_dir, "002", "003", "004")
    status = cli("db", "migration-status")
    assert status.stdout.startswith("Current version: 001\nApplied migrations: 1\nPending migrations: 4")
    result = diagnose(cli)
    assert result.exit_code == 1
    expected = """Migration Diagnostics Report
==================================================
Overall Status: ❌ FAIL
Total Issues: 3

Issue Breakdown:
  🟠 HIGH: 3

Detailed Issues:

🟠 MISSING_TRACKING: Migration 002 appears to be applied but not tracked
   Version: 002
"""
    assert result.stdout.startswith(expected)
    for version in ("003", "004"):
        assert (
            f"🟠 MISSING_TRACKING: Migration {version} appears to be applied but not tracked\n   Version: {version}"
            in result.stdout
        )
    assert result.stdout.count("Suggested Fix: Use recovery mode to track this migration") == 3
    assert result.stdout.count("Auto-fixable: Yes") == 3
    # 005 was not applied: it must not be claimed.
    assert "Migration 005" not in result.stdout
    only = diagnose(cli, "--type", "missing_tracking")
    assert "Total Issues: 3" in only.stdout


def test_scenario_2_checksum_mismatch(cli, migrations_dir: Path):
    cli("db", "migrate")
    path = migrations_dir / "002_add_user_table.sql"
    path.write_text(path.read_text() + "\nCREATE INDEX users_username_idx ON users (username);\n")
    result = diagnose(cli, "--type", "checksum_mismatch")
    assert result.exit_code == 1
    assert (
        "🟠 CHECKSUM_MISMATCH: Migration 002 has checksum mismatch\n   Version: 002\n   Details: {'tracked_checksum': '"
        in result.stdout
    )
    assert "Suggested Fix: Update checksum in database or restore original file\n   Auto-fixable: Yes" in result.stdout
    verify = cli("db", "verify-migrations")
    assert verify.exit_code == 1
    assert verify.stdout.startswith(
        "❌ Migration verification failed!\n   Error: Migration 002 checksum mismatch: expected "
    )
    (issue,) = issues_of(cli, "--type", "checksum_mismatch")
    assert issue["details"]["tracked_checksum"] != issue["details"]["file_checksum"]
    assert verify.stdout.split("expected ")[1].split(",")[0] == issue["details"]["tracked_checksum"][:8]


def test_windows_line_endings_are_not_an_edit(cli, migrations_dir: Path):
    cli("db", "migrate")
    path = migrations_dir / "002_add_user_table.sql"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    assert cli("db", "verify-migrations").exit_code == 0
    assert issues_of(cli, "--type", "checksum_mismatch") == []


def test_scenario_3_partial_migration_from_a_failed_row(cli, migrations_dir: Path):
    cli("db", "migrate", "--target", "001")
    write(migrations_dir, "002_add_user_table.sql", "CREATE TABLE users (id int);\nINSERT INTO nosuch VALUES (1);\n")
    assert cli("db", "migrate").exit_code == 1
    status = cli("db", "migration-status")
    assert "Current version: 001" in status.stdout and "Failed migrations: 1" in status.stdout
    result = diagnose(cli, "--type", "partial_migration")
    assert (
        "🟠 PARTIAL_MIGRATION: Migration 002 was not successfully applied\n   Version: 002\n   Details: {'version': '002', 'description': 'add_user_table'"
        in result.stdout
    )
    assert "Suggested Fix: Retry migration or clean up partial state\n   Auto-fixable: Yes" in result.stdout


def test_partial_migration_from_some_objects(cli, db, migrations_dir: Path):
    cli("db", "migrate", "--target", "001")
    sql(db, "CREATE TYPE user_role AS ENUM ('owner')")  # one of 002's objects, by hand
    (issue,) = issues_of(cli, "--type", "partial_migration")
    assert issue["version"] == "002" and issue["message"].startswith("Migration 002 is partly applied")
    assert "enum public.user_role" in issue["details"]["objects_found"]
    assert "table public.users" in issue["details"]["objects_missing"]
    assert not [i for i in issues_of(cli) if i["type"] == "missing_tracking"]


def test_scenario_4_rollback_missing(cli, migrations_dir: Path):
    (migrations_dir / "002_add_user_table.rollback.sql").unlink()
    (migrations_dir / "003_create_billing_schema.rollback.sql").unlink()
    cli("db", "migrate")
    result = cli("db", "validate", "--check-rollbacks")
    assert "⚠️  Validation warnings:\n  - Missing rollback files for migrations: 002, 003" in result.stdout
    result = diagnose(cli, "--type", "rollback_missing")
    assert "🟢 ROLLBACK_MISSING: Migration 002 has no rollback file\n   Version: 002" in result.stdout
    assert "Suggested Fix: Create rollback file for this migration\n   Auto-fixable: No" in result.stdout
    rollback = cli("db", "rollback", "001")
    assert "❌ Rollback failed: Migration 002 has no rollback file" in rollback.stderr
    assert "Missing rollback files for migrations: 002, 003" in rollback.stderr


def test_scenario_5_orphaned_schema(cli, db):
    cli("db", "migrate")
    sql(db, "CREATE SCHEMA temp_schema")
    result = diagnose(cli, "--type", "orphaned_schema")
    assert result.exit_code == 1
    assert (
        "🟡 ORPHANED_SCHEMA: Schema temp_schema exists but has no corresponding migration\n"
        "   Details: {'schema': 'temp_schema'}\n"
        "   Suggested Fix: Create migration for existing schema or remove it\n"
        "   Auto-fixable: No"
    ) in result.stdout
    # billing is created by 003: not an orphan.
    assert "billing" not in result.stdout
    cli("db", "shell", "-c", "DROP SCHEMA IF EXISTS temp_schema CASCADE;")
    assert diagnose(cli, "--type", "orphaned_schema").exit_code == 0


def test_duplicate_version_rows_and_files(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    sql(
        db,
        "INSERT INTO schema_migrations (version, description, checksum, success) "
        "SELECT version, description, checksum, true FROM schema_migrations WHERE version = '002'",
    )
    result = diagnose(cli, "--type", "duplicate_version")
    assert "🟠 DUPLICATE_VERSION: Migration 002 has 2 tracking rows\n   Version: 002" in result.stdout
    write(migrations_dir, "006_a.sql", "CREATE TABLE a6 (id int);")
    write(migrations_dir, "006_b.sql", "CREATE TABLE b6 (id int);")
    issues = issues_of(cli, "--type", "duplicate_version")
    files = [i for i in issues if i["details"]["source"] == "files"]
    assert files and files[0]["message"] == "Migration 006 has 2 files: 006_a.sql, 006_b.sql"
    assert files[0]["auto_fixable"] is False


def test_stuck_lock_from_a_killed_process(cli, db, database_url: str, migrations_dir: Path):
    cli("db", "migrate", "--target", "004")
    write(migrations_dir, "006_slow.sql", "SELECT pg_sleep(30);\n")
    proc = start_migrate(database_url, migrations_dir)
    wait_for(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%%SELECT pg_sleep(30)%%'",
        [(1,)],
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The server would finish the sleep before noticing; end that backend as an operator would.
    sql(
        db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%%SELECT pg_sleep(30)%%'",
    )
    wait_for(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'poststack'",
        [(0,)],
    )
    result = diagnose(cli, "--type", "stuck_lock")
    assert result.exit_code == 1
    assert "🟠 STUCK_LOCK: Migration lock is held by" in result.stdout and "not alive" in result.stdout
    (issue,) = issues_of(cli, "--type", "stuck_lock")
    assert issue["details"]["holder_alive"] is False and issue["details"]["backend_pid"]


def test_missing_file_out_of_order_and_missing_objects(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    (migrations_dir / "004_add_audit_function.sql").unlink()
    (migrations_dir / "004_add_audit_function.rollback.sql").unlink()
    sql(db, "DROP VIEW billing.unpaid_invoices")
    sql(db, "DELETE FROM schema_migrations WHERE version = '002'")  # 002 now looks pending...
    sql(db, "DROP TABLE users CASCADE; DROP TYPE user_role")  # ...and really is not applied
    types = {(i["type"], i["version"]) for i in issues_of(cli)}
    assert ("missing_file", "004") in types
    assert ("missing_objects", "003") in types
    # The audit table says poststack applied 002; the catalog says it is gone: a person decides.
    assert ("undetermined", "002") in types
    assert ("missing_tracking", "002") not in types


def test_invalid_index_from_a_failed_concurrent_build(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    sql(db, "INSERT INTO accounts (email, display_name) VALUES ('a@x', 'a'), ('b@x', 'a')")
    write(
        migrations_dir,
        "006_unique_names.sql",
        "CREATE UNIQUE INDEX CONCURRENTLY accounts_name_key ON accounts (display_name);\n",
    )
    assert cli("db", "migrate").exit_code == 1
    (issue,) = issues_of(cli, "--type", "invalid_index")
    assert issue["message"].startswith("Index public.accounts_name_key is INVALID")
    assert issue["details"]["table"] == "public.accounts"


def test_undetermined_and_verify_script(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    write(migrations_dir, "006_backfill.sql", "UPDATE accounts SET display_name = lower(display_name);\n")
    (issue,) = issues_of(cli, "--type", "undetermined")
    assert issue["version"] == "006" and "data change (UPDATE)" in issue["details"]["reason"]
    assert "Undetermined: 006_backfill" in cli("db", "migration-status").stdout
    assert not [i for i in issues_of(cli) if i["type"] == "missing_tracking"]
    # A verify script settles it, both ways.
    write(
        migrations_dir,
        "006_backfill.verify.sql",
        "SELECT NOT EXISTS (SELECT 1 FROM accounts WHERE display_name <> lower(display_name));\n",
    )
    (issue,) = [i for i in issues_of(cli) if i["version"] == "006" and i["type"] != "rollback_missing"]
    assert issue["type"] == "missing_tracking" and issue["details"]["evidence"] == "verify script"
    sql(db, "INSERT INTO accounts (email, display_name) VALUES ('u@x', 'UPPER')")
    assert [i for i in issues_of(cli) if i["version"] == "006" and i["type"] != "rollback_missing"] == []


def test_severity_filter_and_exit_code(cli, migrations_dir: Path):
    (migrations_dir / "005_index_users_by_created.rollback.sql").unlink()
    cli("db", "migrate")
    assert diagnose(cli).exit_code == 1
    result = diagnose(cli, "--severity", "high")
    assert result.exit_code == 0 and "Total Issues: 0" in result.stdout
    assert diagnose(cli, "--severity", "urgent").exit_code == 2
    bad = diagnose(cli, "--type", "missing_trackin")
    assert bad.exit_code == 2 and "did you mean missing_tracking?" in bad.stderr


def test_json_report_matches_its_schema(cli, db, migrations_dir: Path):
    cli("db", "migrate", "--target", "001")
    apply_by_hand(db, migrations_dir, "002")
    sql(db, "CREATE SCHEMA scratch")
    report = json.loads(cli("db", "diagnose", "--format", "json").stdout)
    schema = json.loads((REPO / "schemas" / "diagnose-report.schema.json").read_text())
    jsonschema.validate(report, schema)
    assert report["overall_status"] == "fail"
    assert {i["type"] for i in report["issues"]} == {"missing_tracking", "orphaned_schema"}
    state = report["database_state"]
    assert state["tracking"]["applied"] == 1 and state["catalog"]["table"] >= 2 and state["lock"]["locked"] is False


def test_diagnose_is_read_only_and_creates_nothing(cli, db):
    from tests.conftest import catalog_snapshot

    before = catalog_snapshot(db)
    result = diagnose(cli)
    assert result.exit_code in (0, 1) and "Traceback" not in result.output
    assert cli("db", "validate").exit_code == 0
    assert catalog_snapshot(db) == before


def test_validate_reports_syntax_errors_without_the_database(tmp_path: Path, migrations_dir: Path):
    from tests.conftest import run_cli

    write(migrations_dir, "006_broken.sql", "CREATE TABLE ok (id int);\nCREATE TABLE (;\n")
    result = run_cli(
        "db", "validate", "--database-url", "postgresql://u:p@127.0.0.1:1/none", "--migrations-dir", str(migrations_dir)
    )
    assert result.exit_code == 1
    assert f"❌ Validation failed:\n  - {migrations_dir / '006_broken.sql'}:2: syntax error" in result.stdout


def test_constant_number_of_round_trips(database_url: str, tmp_path: Path):
    from reconciler.config import resolve_settings
    from reconciler.diagnosis.diagnose import diagnose as run_diagnose

    counts = []
    for count in (20, 120):
        directory = tmp_path / f"m{count}"
        directory.mkdir()
        for i in range(1, count + 1):
            write(directory, f"{i:04d}_t{i}.sql", f"CREATE TABLE t{count}_{i} (id int);\n")
            write(directory, f"{i:04d}_t{i}.verify.sql", f"SELECT to_regclass('t{count}_{i}') IS NOT NULL;\n")
        settings = resolve_settings(database_url=database_url, migrations_dir=directory, environ={})
        result = run_diagnose(settings)
        counts.append(result.database_state["round_trips"])
    assert counts[0] == counts[1], counts
    conn = psycopg2.connect(database_url)
    conn.close()
