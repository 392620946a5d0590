"""The guide's Solution blocks and Emergency Procedures, as written, on a real server; and
the same fixes through poststack plan → poststack apply."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reconciler.config import masked_url
from reconciler.dsn import libpq_env
from reconciler.remediation import backup as backups
from tests.conftest import catalog_snapshot, sql, write


def apply_by_hand(db, migrations_dir: Path, *versions: str) -> None:
    for version in versions:
        (path,) = [p for p in migrations_dir.glob(f"{version}_*.sql") if p.name.count(".") == 1]
        sql(db, path.read_text())


def issue_types(cli) -> set[str]:
    return {i["type"] for i in json.loads(cli("db", "diagnose", "--format", "json").stdout)["issues"]}


@pytest.fixture
def four(migrations_dir: Path) -> Path:
    """The guide's scenario has four migrations."""
    for path in migrations_dir.glob("005_*"):
        path.unlink()
    return migrations_dir


# --- Quick Problem Resolution and Scenario 1: not tracked -------------------------------


def test_recover_as_in_the_guide(cli, db, database_url: str, four: Path):
    cli("db", "migrate", "--target", "001")
    apply_by_hand(db, four, "002", "003", "004")
    preview = cli("db", "recover", "--dry-run")
    assert preview.exit_code == 0
    assert preview.stdout.startswith(
        "🔍 Dry run - analyzing recovery options...\n"
        "Would recover 3 issue(s):\n"
        "  - Migration 002 appears to be applied but not tracked\n"
        "    Fix: Use recovery mode to track this migration\n"
        "  - Migration 003 appears to be applied but not tracked\n"
    )
    assert sql(db, "SELECT count(*) FROM schema_migrations") == [(1,)]
    result = cli("db", "recover")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "🔄 Starting migration recovery...\n✅ Recovery completed successfully!\n   Added tracking for migrations 002, 003, 004\n"
        f"Database: {masked_url(database_url)}\n"
    )
    status = cli("db", "migration-status")
    assert status.stdout.startswith("Current version: 004\nApplied migrations: 4\nPending migrations: 0\n")
    assert "✅ Database is up to date!" in status.stdout
    assert cli("db", "validate").exit_code == 0
    audit = sql(
        db,
        "SELECT operation, action, version, outcome FROM schema_migrations_audit WHERE operation = 'recover' ORDER BY id",
    )
    assert [a[2] for a in audit if a[1] == "track_migration"] == ["002", "003", "004"]


def test_recover_leaves_undetermined_alone_unless_forced(cli, db, four: Path):
    cli("db", "migrate")
    write(four, "005_backfill.sql", "UPDATE accounts SET display_name = display_name;\n")
    assert "Nothing to recover" in cli("db", "recover").stdout
    # poststack ran everything before 005, so migrate would run it: --force alone leaves it,
    # naming it tracks it on the person's word.
    assert "Nothing to recover" in cli("db", "recover", "--force").stdout
    forced = cli("db", "recover", "--force", "005")
    assert forced.exit_code == 0, forced.output
    assert "Including migration 005 without evidence (--force): it has no attributable effects" in forced.stdout
    assert "(without evidence, because of --force: 005)" in forced.stdout
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '005'") == [(1,)]


def test_recover_of_the_versions_named_leaves_the_others_and_says_so(cli, db, four: Path):
    cli("db", "migrate", "--target", "001")
    apply_by_hand(db, four, "002", "003", "004")
    # Only 003: tracked, and the others left as they were (not refused for being untracked).
    named = cli("db", "recover", "003")
    assert named.exit_code == 0, named.output
    assert sql(db, "SELECT version FROM schema_migrations ORDER BY version") == [("001",), ("003",)]
    assert {"002", "004"} <= {
        i["version"] for i in json.loads(cli("db", "diagnose", "--format", "json").stdout)["issues"]
    }
    # A version named that nothing shows applied is not "nothing to recover": it is not tracked.
    write(four, "005_backfill.sql", "UPDATE accounts SET display_name = display_name;\n")
    unproven = cli("db", "recover", "005")
    assert unproven.exit_code == 1, unproven.output
    assert "Nothing to recover" not in unproven.stdout
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '005'") == [(0,)]


# --- Scenario 2: checksums ----------------------------------------------------------------


def test_repair_checksum_mismatch_as_in_the_guide(cli, four: Path):
    cli("db", "migrate")
    path = four / "002_add_user_table.sql"
    path.write_text(path.read_text() + "\n-- a comment added after deploy\n")
    assert cli("db", "verify-migrations").exit_code == 1
    result = cli("db", "repair", "--issue-type", "checksum_mismatch")
    assert result.exit_code == 0, result.output
    assert "Repair completed successfully!" in result.stdout and "Record checksum" in result.stdout
    assert cli("db", "verify-migrations").exit_code == 0
    # ...or force: update every checksum
    path.write_text(path.read_text() + "\n-- and another\n")
    assert cli("db", "repair", "--force").exit_code == 0
    assert cli("db", "verify-migrations").exit_code == 0


def test_restoring_the_file_fixes_it_too(cli, four: Path):
    cli("db", "migrate")
    path = four / "002_add_user_table.sql"
    original = path.read_text()
    path.write_text(original + "\n-- oops\n")
    assert cli("db", "verify-migrations").exit_code == 1
    path.write_text(original)  # git checkout HEAD -- migrations/002_...sql
    assert cli("db", "verify-migrations").exit_code == 0


# --- Quick Problem Resolution: locks and duplicates ------------------------------------


def dead_lock_row(db) -> None:
    sql(
        db,
        "UPDATE schema_migrations_lock SET locked = true, locked_at = now(), locked_by = 'ci:9', "
        "backend_pid = 999999, application_name = 'poststack'",
    )


def test_clean_locks_as_in_the_guide(cli, db):
    cli("db", "migrate")
    dead_lock_row(db)
    assert "stuck_lock" in issue_types(cli)
    assert cli("db", "clean", "--locks").exit_code == 2  # without --confirm: shows, changes nothing
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(True,)]
    result = cli("db", "clean", "--locks", "--confirm")
    assert result.exit_code == 0, result.output
    assert "Clean completed successfully!" in result.stdout
    assert "Current version: 005" in cli("db", "migration-status").stdout
    assert "stuck_lock" not in issue_types(cli)


def test_a_released_lock_stays_released_when_a_later_step_of_the_plan_fails(cli, db, four: Path):
    """plan/apply releasing a dead run's lock, then applying a migration that fails: the
    release was committed on its own, so the failure does not leave the database locked."""
    assert cli("db", "migrate", "--target", "001").exit_code == 0
    write(four, "002_add_user_table.sql", (four / "002_add_user_table.sql").read_text() + "\nSELECT 1 / 0;\n")
    dead_lock_row(db)
    applied = cli("apply", "--auto-approve", "--no-replay")
    assert applied.exit_code == 1, applied.output
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]
    assert sql(db, "SELECT success FROM schema_migrations WHERE version = '002'") in ([], [(False,)])


def test_duplicates_as_in_the_guide(cli, db):
    cli("db", "migrate")
    dup = "INSERT INTO schema_migrations (version, description, checksum, success) SELECT version, description, checksum, true FROM schema_migrations WHERE version = '002'"
    sql(db, dup)
    assert cli("db", "repair", "--issue-type", "duplicate_version").exit_code == 0
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '002'") == [(1,)]
    sql(db, dup)
    assert cli("db", "clean", "--duplicates", "--confirm").exit_code == 0
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '002'") == [(1,)]
    assert "Applied migrations: 5" in cli("db", "migration-status").stdout


# --- Scenario 3: partial migration ---------------------------------------------------------


def test_repair_partial_migration_then_migrate(cli, db, four: Path):
    cli("db", "migrate", "--target", "001")
    good = (four / "002_add_user_table.sql").read_text()
    write(four, "002_add_user_table.sql", good + "\nINSERT INTO nosuch VALUES (1);\n")
    assert cli("db", "migrate").exit_code == 1
    write(four, "002_add_user_table.sql", good)
    result = cli("db", "repair", "--issue-type", "partial_migration")
    assert result.exit_code == 0, result.output
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE NOT success") == [(0,)]
    assert cli("db", "migrate").exit_code == 0
    assert "✅ Database is up to date!" in cli("db", "migration-status").stdout


def test_repair_force_clears_a_failed_no_transaction_migration(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    sql(db, "INSERT INTO accounts (email, display_name) VALUES ('a@x', 'same'), ('b@x', 'same')")
    # Two statements outside a transaction: the first is kept when the second fails.
    write(
        migrations_dir,
        "006_names.sql",
        "CREATE INDEX CONCURRENTLY accounts_created_idx ON accounts (created_at);\n"
        "CREATE UNIQUE INDEX CONCURRENTLY accounts_name_key ON accounts (display_name);\n",
    )
    assert cli("db", "migrate").exit_code == 1
    plain = cli("db", "repair")
    assert "For a person to do" in plain.stdout and "failed outside a transaction" in plain.stdout
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE NOT success") == [(1,)]
    assert cli("db", "repair", "--force").exit_code == 0  # Option 2: force cleanup, then fix by hand
    sql(db, "DROP INDEX accounts_name_key; DROP INDEX accounts_created_idx; UPDATE accounts SET display_name = email")
    assert cli("db", "migrate").exit_code == 0


# --- Scenarios 4 and 5: what a person does ------------------------------------------------


def test_rollback_file_created_by_hand(cli, four: Path):
    (four / "002_add_user_table.rollback.sql").unlink()
    assert "Missing rollback files for migrations: 002" in cli("db", "validate", "--check-rollbacks").stdout
    write(four, "002_add_user_table.rollback.sql", "DROP TABLE IF EXISTS users;\nDROP TYPE IF EXISTS user_role;\n")
    result = cli("db", "validate", "--check-rollbacks")
    assert "warnings" not in result.stdout and "✅ Validation passed" in result.stdout


def test_orphaned_schema_formalized_by_a_migration(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    sql(db, "CREATE SCHEMA temp_schema")
    write(
        migrations_dir,
        "006_formalize_temp_schema.sql",
        "-- This migration formalizes existing temp_schema\nCREATE SCHEMA IF NOT EXISTS temp_schema;\n",
    )
    assert cli("db", "migrate").exit_code == 0
    assert "orphaned_schema" not in issue_types(cli)


def test_unhandled_issues_become_instructions_in_the_plan(cli, db):
    cli("db", "migrate")
    sql(db, "CREATE SCHEMA temp_schema")
    plan = json.loads(cli("plan", "--format", "json").stdout)
    (step,) = plan["steps"]
    assert (
        step["action"] == "manual" and "Schema temp_schema exists but has no corresponding migration" in step["reason"]
    )


# --- Emergency Procedures -------------------------------------------------------------------


def test_complete_migration_system_reset_as_written(cli, db, migrations_dir: Path, tmp_path: Path):
    cli("db", "migrate")
    write(migrations_dir, "006_backfill.sql", "UPDATE accounts SET display_name = display_name;\n")
    cli("db", "migrate")
    backup = tmp_path / "emergency_backup.sql"
    assert cli("db", "backup", "--output", str(backup)).exit_code == 0 and backup.stat().st_size > 0
    assert cli("db", "shell", "-c", "DROP TABLE IF EXISTS schema_migrations CASCADE;").exit_code == 0
    assert cli("db", "shell", "-c", "DROP TABLE IF EXISTS schema_migrations_lock CASCADE;").exit_code == 0
    assert cli("db", "create-schema", "--force").exit_code == 0
    recovered = cli("db", "recover", "--force")
    assert recovered.exit_code == 0, recovered.output
    assert "Added tracking for migrations 001, 002, 003, 004, 005, 006" in recovered.stdout
    assert cli("db", "validate").exit_code == 0
    assert "Current version: 006\nApplied migrations: 6\nPending migrations: 0" in cli("db", "migration-status").stdout


def test_reset_through_plan_and_apply(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    sql(db, "DELETE FROM schema_migrations WHERE version IN ('002', '003')")
    sql(db, "INSERT INTO schema_migrations (version, description, checksum, success) VALUES ('004', 'x', 'y', true)")
    plan = cli("plan", "--playbook", "emergency-reset")
    assert plan.exit_code == 0 and "(DESTRUCTIVE)" in plan.stdout and "$ pg_dump --format=plain" in plan.stdout
    refused = cli("apply", "--playbook", "emergency-reset", "--auto-approve")
    assert refused.exit_code == 2 and "destructive: pass --confirm" in refused.stderr
    result = cli("apply", "--playbook", "emergency-reset", "--confirm")
    assert result.exit_code == 0, result.output
    assert "Re-diagnosis: ✅ no issues left." in result.stdout
    assert sql(db, "SELECT version FROM schema_migrations ORDER BY version") == [
        (v,) for v in ("001", "002", "003", "004", "005")
    ]
    assert list((migrations_dir.parent / "backups").glob("poststack-full-*.sql"))


def test_database_corruption_recovery_as_written(cli, db, database_url, tmp_path: Path, migrations_dir: Path):
    # The guide drops the "poststack" schema and restores it from a schema export: here
    # the application and its tracking both live in that schema.
    for path in migrations_dir.glob("*"):
        path.unlink()
    write(
        migrations_dir,
        "001_items.sql",
        "CREATE SCHEMA IF NOT EXISTS poststack;\nCREATE TABLE poststack.items (id int PRIMARY KEY, name text);\n",
    )
    write(migrations_dir, "002_item_index.sql", "CREATE INDEX items_name_idx ON poststack.items (name);\n")
    env = {"POSTSTACK_SCHEMA": "poststack"}
    assert cli("db", "migrate", env=env).exit_code == 0
    sql(db, "UPDATE poststack.schema_migrations SET checksum = 'garbage', success = (id % 2 = 0)")  # corrupted
    assert cli("db", "backup", "--output", str(tmp_path / "corrupted_backup.sql"), env=env).exit_code == 0
    major = int(sql(db, "SHOW server_version_num")[0][0]) // 10000
    pg_dump = backups.find_client("pg_dump", major)
    schema_backup = tmp_path / "schema_backup.sql"
    with schema_backup.open("w") as out:
        subprocess.run(
            [str(pg_dump.path), "--schema-only", "--exclude-table=poststack.schema_migrations*"],
            env=libpq_env(database_url),
            stdout=out,
            check=True,
        )
    assert cli("db", "shell", "-c", "DROP SCHEMA IF EXISTS poststack CASCADE;", env=env).exit_code == 0
    restored = cli("db", "shell", "-c", schema_backup.read_text(), env=env)
    assert restored.exit_code == 0, restored.output
    assert cli("db", "create-schema", "--force", env=env).exit_code == 0
    recovered = cli("db", "recover", "--force", env=env)
    assert recovered.exit_code == 0, recovered.output
    assert "Added tracking for migrations 001, 002" in recovered.stdout
    assert cli("db", "validate", env=env).exit_code == 0


def test_corruption_recovery_through_plan_and_apply(cli, db):
    cli("db", "migrate")
    sql(db, "UPDATE schema_migrations SET checksum = 'garbage' WHERE version = '003'")
    result = cli("apply", "--playbook", "corruption-recovery", "--confirm")
    assert result.exit_code == 0, result.output
    assert cli("db", "verify-migrations").exit_code == 0


# --- plan → apply ------------------------------------------------------------------------


def break_it(cli, db, migrations_dir: Path) -> None:
    """Scenario 1 and the Quick Problem Resolution breakages, all at once."""
    cli("db", "migrate", "--target", "001")
    apply_by_hand(db, migrations_dir, "002", "003")
    cli("db", "migrate", "--target", "001")
    path = migrations_dir / "001_create_accounts.sql"
    path.write_text(path.read_text() + "\n-- edited after deploy\n")
    sql(
        db,
        "INSERT INTO schema_migrations (version, description, checksum, success) SELECT version, description, checksum, true FROM schema_migrations",
    )
    dead_lock_row(db)


def test_plan_then_apply_fixes_everything_and_converges(cli, db, migrations_dir: Path, tmp_path: Path):
    break_it(cli, db, migrations_dir)
    plan_file = tmp_path / "fix.plan.json"
    planned = cli("plan", "--out", str(plan_file), "--detailed-exitcode")
    assert planned.exit_code == 2, planned.output
    for text in (
        "MISSING_TRACKING",
        "CHECKSUM_MISMATCH",
        "DUPLICATE_VERSION",
        "STUCK_LOCK",
        "clean-locks v1",
        "recover v2",
        "repair v1",
        "migrate v1",
    ):
        assert text in planned.stdout
    saved = json.loads(plan_file.read_text())
    assert {p["name"] for p in saved["playbooks"]} == {"clean-locks", "repair", "recover", "migrate"}
    assert all(len(p["sha256"]) == 64 for p in saved["playbooks"]) and len(saved["fingerprint"]) == 64
    result = cli("apply", str(plan_file))
    assert result.exit_code == 0, result.output
    assert "Re-diagnosis: ✅ no issues left." in result.stdout
    assert "Current version: 005" in cli("db", "migration-status").stdout
    again = cli("plan", "--detailed-exitcode")
    assert again.exit_code == 0 and "Nothing to do" in again.stdout
    hashes = sql(db, "SELECT DISTINCT plan_hash FROM schema_migrations_audit WHERE operation = 'remediate'")
    assert hashes == [(saved["hash"],)]


def test_a_stale_plan_is_refused_and_nothing_runs(cli, db, migrations_dir: Path, tmp_path: Path):
    cli("db", "migrate", "--target", "001")
    apply_by_hand(db, migrations_dir, "002")
    plan_file = tmp_path / "p.json"
    cli("plan", "--out", str(plan_file))
    sql(db, "CREATE TABLE someone_else_was_here (id int)")
    before = catalog_snapshot(db)
    result = cli("apply", str(plan_file))
    assert result.exit_code == 1
    assert "Saved plan is stale" in result.stderr and "poststack plan" in result.stderr
    assert catalog_snapshot(db) == before


def test_edited_and_foreign_plans_are_refused(cli, db, migrations_dir: Path, tmp_path: Path):
    cli("db", "migrate", "--target", "001")
    apply_by_hand(db, migrations_dir, "002")
    plan_file = tmp_path / "p.json"
    cli("plan", "--out", str(plan_file))
    data = json.loads(plan_file.read_text())
    data["steps"][0]["statements"][0]["sql"] = "DROP TABLE accounts"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    result = cli("apply", str(edited))
    assert result.exit_code == 2 and "was edited after it was made" in result.stderr
    data = json.loads(plan_file.read_text())
    del data["hash"]  # an edit cannot hide by dropping the hash
    data["steps"][0]["statements"][0]["sql"] = "DROP TABLE accounts"
    unhashed = tmp_path / "unhashed.json"
    unhashed.write_text(json.dumps(data))
    result = cli("apply", str(unhashed))
    assert result.exit_code == 2 and "the plan has no hash" in result.stderr
    from reconciler.remediation.plan import Plan

    data = json.loads(plan_file.read_text())
    data["database"] = "production"
    data["hash"] = Plan.from_json(data).hash
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(data))
    result = cli("apply", str(foreign))
    assert result.exit_code == 2 and "made for database production" in result.stderr
    (tmp_path / "junk.json").write_text("{not json")
    assert cli("apply", str(tmp_path / "junk.json")).exit_code == 2
    assert sql(db, "SELECT to_regclass('accounts') IS NOT NULL") == [(True,)]


def test_no_tty_means_no_apply_without_approval(cli, db, migrations_dir: Path):
    cli("db", "migrate", "--target", "001")
    apply_by_hand(db, migrations_dir, "002")
    before = catalog_snapshot(db)
    result = cli("apply")
    assert result.exit_code == 2 and "refusing to apply without approval" in result.stderr
    assert catalog_snapshot(db) == before
    assert cli("apply", "--auto-approve").exit_code == 0


def project_playbook(migrations_dir: Path, name: str, body: str) -> Path:
    directory = migrations_dir.parent / "playbooks"
    directory.mkdir(exist_ok=True)
    return write(directory, f"{name}.yaml", body)


def test_a_failure_mid_apply_leaves_no_half_done_step(cli, db, migrations_dir: Path):
    cli("db", "migrate", "--target", "001")
    apply_by_hand(db, migrations_dir, "002")
    project_playbook(
        migrations_dir,
        "recover",
        """name: recover
version: 2
description: track, then fail
handles: [missing_tracking]
steps:
  - name: track
    action: track_migration
    for_each: missing_tracking
    args: {version: "{{ issue.version }}"}
  - name: fail
    action: sql
    args: {sql: "SELECT 1/0"}
""",
    )
    audit = "public.schema_migrations_audit:r"
    before = [row for row in catalog_snapshot(db) if row[1] != audit]
    result = cli("apply", "--auto-approve")
    assert result.exit_code == 1
    assert "Step 2 (fail) failed: division by zero" in result.stdout
    assert "Rolled back with it (same transaction): step(s) 1" in result.stdout
    assert [row for row in catalog_snapshot(db) if row[1] != audit] == before  # the audit gained the failure
    assert sql(db, "SELECT outcome FROM schema_migrations_audit WHERE operation = 'remediate'") == [("failed",)]


def test_template_values_cannot_change_the_sql(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    evil = """x'; DROP TABLE accounts; --"""
    sql(db, f'CREATE SCHEMA "{evil.replace(chr(34), chr(34) * 2)}"')
    project_playbook(
        migrations_dir,
        "adopt-orphans",
        """name: adopt-orphans
version: 1
description: label orphaned schemas
handles: [orphaned_schema]
steps:
  - name: "label {{ issue.details.schema }}"
    action: sql
    for_each: orphaned_schema
    args:
      sql: "COMMENT ON SCHEMA {schema} IS 'orphan'"
      identifiers: {schema: "{{ issue.details.schema }}"}
  - name: record it
    action: sql
    for_each: orphaned_schema
    args:
      sql: "SELECT %(note)s::text"
      params: {note: "{{ issue.message }}; DROP TABLE accounts; --"}
""",
    )
    result = cli("apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert sql(db, "SELECT to_regclass('accounts') IS NOT NULL") == [(True,)]
    assert sql(db, "SELECT obj_description(oid) FROM pg_namespace WHERE nspname = %s", (evil,)) == [("orphan",)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("name: bad\nversion: 1\n  description: [\n", "not valid YAML"),
        (
            "name: bad\nversion: one\ndescription: d\nhandles: []\nsteps: [{name: s, action: manual, args: {instructions: x}}]\n",
            ":2: version: 'one' is not of type 'integer'",
        ),
        (
            "name: bad\nversion: 1\ndescription: d\nhandles: []\nsteps:\n  - name: s\n    action: track_migraton\n    args: {version: '1'}\n",
            ":6: unknown action 'track_migraton'; did you mean track_migration?",
        ),
        (
            "name: bad\nversion: 1\ndescription: d\nhandles: []\nsteps:\n  - name: s\n    action: sql\n    args: {sql: 'DROP TABLE {{ vars.t }}'}\n",
            "is SQL text and cannot be templated",
        ),
        (
            "name: bad\nversion: 1\ndescription: d\nhandles: []\nsteps:\n  - name: s\n    action: track_migration\n    args: {versoin: '1'}\n",
            "unknown argument(s) versoin",
        ),
        (  # dropping data without saying so would skip the backup and --confirm
            "name: bad\nversion: 1\ndescription: d\nhandles: []\nsteps:\n  - name: s\n    action: drop_tracking\n",
            ":6: action drop_tracking destroys data: the playbook must say destructive: true",
        ),
        (
            "name: bad\nversion: 1\ndescription: d\nhandles: []\nsteps:\n  - name: s\n    action: manual\n"
            "    for_each: partial_migrations\n    args: {instructions: x}\n",
            ":6: for_each 'partial_migrations' is not an issue type, pending, evidence_applied, imported or baseline; "
            "did you mean partial_migration?",
        ),
    ],
)
def test_bad_playbooks_are_refused_by_file_and_line(cli, db, migrations_dir: Path, body, message):
    path = project_playbook(migrations_dir, "bad", body)
    before = catalog_snapshot(db)
    result = cli("plan")
    assert result.exit_code == 2 and str(path) in result.stderr and message in result.stderr, result.stderr
    assert result.stderr.count("\n") <= 2 and "Traceback" not in result.output
    from tests.conftest import run_cli

    assert run_cli("playbooks", "validate", str(path)).exit_code == 2
    assert catalog_snapshot(db) == before


def test_a_plan_shows_what_a_person_must_do(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    sql(db, "CREATE SCHEMA temp_schema")
    text = cli("plan").stdout
    assert (
        "1. orphaned_schema needs a person [(no playbook): manual]\n     for a person: Schema temp_schema exists "
        "but has no corresponding migration: Create migration for existing schema or remove it" in text
    )
    project_playbook(
        migrations_dir,
        "look",
        "name: look\nversion: 1\ndescription: d\nhandles: [orphaned_schema]\nsteps:\n"
        "  - name: 'Look at {{ issue.details.schema }}'\n    action: manual\n    for_each: orphaned_schema\n"
        "    args: {instructions: 'Ask the data team who owns {{ issue.details.schema }}'}\n",
    )
    text = cli("plan").stdout
    assert "1. Look at temp_schema [look: manual]\n     for a person: Ask the data team who owns temp_schema" in text


def test_evidence_applied_is_there_for_any_playbook_that_ranges_over_it(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    project_playbook(
        migrations_dir,
        "list-applied",
        "name: list-applied\nversion: 1\ndescription: d\nhandles: []\nauto: false\nsteps:\n"
        "  - name: 'Check {{ migration.version }}'\n    action: manual\n    for_each: evidence_applied\n"
        "    args: {instructions: 'look at {{ migration.version }}'}\n",
    )
    plan = json.loads(cli("plan", "--playbook", "list-applied", "--format", "json").stdout)
    assert [s["args"]["instructions"] for s in plan["steps"]] == [f"look at 00{i}" for i in range(1, 6)]
    assert not plan["destructive"]


def test_removing_rows_by_id_stays_within_the_version(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    ids = dict(sql(db, "SELECT version, id FROM schema_migrations"))
    project_playbook(
        migrations_dir,
        "remove-rows",
        "name: remove-rows\nversion: 1\ndescription: d\nhandles: []\nauto: false\nsteps:\n"
        f"  - name: r\n    action: remove_tracking_row\n    args: {{version: '002', ids: [{ids['002']}, {ids['003']}]}}\n",
    )
    result = cli("apply", "--playbook", "remove-rows", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert sorted(v for (v,) in sql(db, "SELECT version FROM schema_migrations")) == ["001", "003", "004", "005"]


def test_apply_force_plans_as_plan_force_does(cli, db, four: Path):
    # Tracking lost after a data migration: only --force tracks it (nothing shows it ran).
    write(four, "005_backfill.sql", "UPDATE accounts SET display_name = display_name;\n")
    cli("db", "migrate")
    sql(db, "DROP TABLE schema_migrations, schema_migrations_lock, schema_migrations_audit")
    unforced = cli("apply", "--playbook", "recover", "--auto-approve")
    assert unforced.exit_code == 0 and sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '005'") == [(0,)]
    forced = cli("apply", "--playbook", "recover", "--force", "--auto-approve")
    assert forced.exit_code == 0, forced.output
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '005'") == [(1,)]
    saved = cli("apply", "plan.json", "--force")
    assert saved.exit_code == 2 and "a saved plan is applied as it is" in saved.stderr


def test_two_project_playbooks_with_one_name_are_refused(cli, db, migrations_dir: Path):
    body = "name: mine\nversion: {}\ndescription: d\nhandles: []\nsteps: [{{name: s, action: manual, args: {{instructions: x}}}}]\n"
    project_playbook(migrations_dir, "a-mine", body.format(1))
    second = project_playbook(migrations_dir, "b-mine", body.format(2))
    result = cli("plan")
    assert result.exit_code == 2 and f"{second}: playbook name 'mine' is also used by" in result.stderr, result.output


def test_template_errors_name_the_step(cli, db, migrations_dir: Path):
    cli("db", "migrate", "--target", "001")
    apply_by_hand(db, migrations_dir, "002")
    path = project_playbook(
        migrations_dir,
        "recover",
        "name: recover\nversion: 3\ndescription: d\nhandles: [missing_tracking]\nsteps:\n"
        "  - name: t\n    action: track_migration\n    for_each: missing_tracking\n    args: {version: '{{ issue.nope }}'}\n"
        "  - name: escape\n    action: manual\n    args: {instructions: '{{ issue.__class__ }}'}\n",
    )
    result = cli("plan")
    assert (
        result.exit_code == 2 and f"{path}:6: step 't'" in result.stderr and "has no attribute 'nope'" in result.stderr
    )


def test_playbooks_list_show_validate(migrations_dir: Path):
    from tests.conftest import run_cli

    def cli(*args: str):
        return run_cli(*args, "--migrations-dir", str(migrations_dir))

    listed = cli("playbooks", "list")
    for name in (
        "recover",
        "repair",
        "clean-locks",
        "clean-duplicates",
        "migrate",
        "emergency-reset",
        "corruption-recovery",
        "import",
        "baseline",
    ):
        assert name in listed.stdout
    shown = cli("playbooks", "show", "recover")
    assert "recover v2" in shown.stdout and "for each: missing_tracking" in shown.stdout
    assert cli("playbooks", "show", "recovr").exit_code == 2
    valid = cli("playbooks", "validate")
    assert valid.exit_code == 0 and valid.stdout.count("✅") == 10
    project_playbook(
        migrations_dir,
        "recover",
        (Path(__file__).parents[2] / "playbooks" / "recover.yaml").read_text().replace("version: 2", "version: 7"),
    )
    assert "recover              7" in cli("playbooks", "list").stdout


def test_a_saved_plan_holds_no_secrets(pg_server, database_url, migrations_dir: Path, tmp_path: Path, db):
    from sqlalchemy.engine import make_url

    from tests.conftest import PASSWORD, PASSWORD_ROLE, run_cli

    sql(db, f"GRANT CREATE ON SCHEMA public TO {PASSWORD_ROLE}")
    url = pg_server.url_for(make_url(database_url).database, user=PASSWORD_ROLE, password=PASSWORD)
    common = ("--database-url", url, "--migrations-dir", str(migrations_dir))
    assert run_cli("db", "migrate", "--target", "001", *common).exit_code == 0
    out = tmp_path / "p.json"
    assert run_cli("plan", "--out", str(out), *common).exit_code == 0
    assert PASSWORD not in out.read_text() and PASSWORD_ROLE not in out.read_text()


def test_plan_json_matches_its_schema(cli, db, migrations_dir: Path):
    import jsonschema

    from tests.conftest import REPO

    cli("db", "migrate", "--target", "001")
    apply_by_hand(db, migrations_dir, "002")
    plan = json.loads(cli("plan", "--format", "json").stdout)
    jsonschema.validate(plan, json.loads((REPO / "schemas" / "plan.schema.json").read_text()))
    assert plan["steps"][0]["action"] == "track_migration" and plan["issues"][0]["type"] == "missing_tracking"


def test_a_step_that_changes_client_encoding_is_still_recorded_correctly(cli, db, migrations_dir: Path):
    """The server reads a whole send in the encoding it has when the send arrives, so the
    session is reset before the bookkeeping when a step changed client_encoding."""
    cli("db", "migrate")
    project_playbook(
        migrations_dir,
        "encoding",
        "name: encoding\nversion: 1\ndescription: d\nhandles: []\nauto: false\nsteps:\n"
        '  - name: s\n    action: sql\n    args: {sql: "SET client_encoding = \'LATIN1\'", description: "réglage de l\'encodage"}\n',
    )
    result = cli("apply", "--playbook", "encoding", "--auto-approve")
    assert result.exit_code == 0, result.output
    details = [d for (d,) in sql(db, "SELECT detail FROM schema_migrations_audit WHERE action = 'sql'")]
    assert details and all("réglage de l'encodage" in d for d in details), details
