"""A migration that would drop, rename, truncate or move poststack's own tables is refused
before anything runs, by migrate, plan, apply and validate; with poststack's tables in
another schema (--schema) the same history runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import catalog_snapshot, sql, write

TRACKING = "poststack's tracking table public.schema_migrations"
RECORD = "poststack would lose its record mid-run"
ROWS = "its rows are poststack's record, kept by poststack's own commands"
ADVICE = (
    "Keep poststack's tables apart with --schema (e.g. --schema poststack) or --table-prefix "
    "(e.g. --table-prefix poststack_), or remove that statement."
)
# A statement on the whole schema: another prefix would not keep poststack's tables out of it.
SCHEMA_ADVICE = "Keep poststack's tables apart with --schema (e.g. --schema poststack) or remove that statement."


@pytest.mark.parametrize(
    ("content", "line", "what"),
    [
        ("CREATE TABLE notes (id int);\nDROP TABLE schema_migrations;\n", 2, f"drops {TRACKING}; {RECORD}"),
        ("DROP TABLE IF EXISTS public.schema_migrations;\n", 1, f"drops {TRACKING}; {RECORD}"),
        (
            "ALTER TABLE schema_migrations RENAME TO old_migrations;\n",
            1,
            f"renames {TRACKING} to old_migrations; {RECORD}",
        ),
        (
            "-- start afresh\nTRUNCATE schema_migrations_lock;\n",
            2,
            "truncates poststack's lock table public.schema_migrations_lock; poststack would lose its lock mid-run",
        ),
        (
            "DROP SCHEMA public CASCADE;\nCREATE SCHEMA public;\n",
            1,
            f"drops schema public with CASCADE, and poststack's tables in it; {RECORD}",
        ),
        (
            "CREATE SCHEMA archive;\nALTER TABLE schema_migrations_audit SET SCHEMA archive;\n",
            2,
            "moves poststack's audit table public.schema_migrations_audit to schema archive; "
            "poststack would lose its audit trail mid-run",
        ),
        # Unqualified, through the search_path: app holds no such table, so public's is found.
        # The on-call probe's case: it ran outside a transaction and took the tracking tables with it.
        (
            "-- poststack:no-transaction\nDROP OWNED BY CURRENT_USER;\n",
            2,
            "drops everything CURRENT_USER owns, poststack's tables in public too when CURRENT_USER owns them; "
            + RECORD,
        ),
        ("DELETE FROM schema_migrations WHERE version = '001';\n", 1, f"deletes rows of {TRACKING}; {ROWS}"),
        (
            "CREATE SCHEMA app;\nSET search_path TO app, public;\nDROP TABLE schema_migrations;\n",
            3,
            f"drops {TRACKING}; {RECORD}",
        ),
    ],
)
def test_migrate_refuses_before_anything_runs(cli, db, migrations_dir: Path, content: str, line: int, what: str):
    path = write(migrations_dir, "006_drop_old.sql", content)
    before = catalog_snapshot(db)
    for args in (("db", "migrate"), ("db", "migrate", "--dry-run")):
        result = cli(*args)
        assert result.exit_code == 1, result.output
        advice = (
            SCHEMA_ADVICE
            if what.startswith("drops schema")
            else "Drop the objects by name instead."
            if what.startswith("drops everything")
            else ADVICE
        )
        assert f"❌ {path}:{line}: {what}. {advice}\n" in result.stderr
        assert result.stderr.count("\n") <= 2 and "Traceback" not in result.output
    assert catalog_snapshot(db) == before  # not 001-005, not even the tracking tables


def _history_that_drops_its_old_tracking_table(migrations_dir: Path) -> Path:
    write(migrations_dir, "006_old_tool.sql", "CREATE TABLE schema_migrations (version text);\n")
    return write(
        migrations_dir, "007_drop_old_tool.sql", "-- the old tool's table, replaced\nDROP TABLE schema_migrations;\n"
    )


def test_the_same_history_runs_with_poststacks_tables_in_another_schema(cli, db, migrations_dir: Path):
    path = _history_that_drops_its_old_tracking_table(migrations_dir)
    refused = cli("db", "migrate")
    assert refused.exit_code == 1 and f"{path}:2: drops {TRACKING}" in refused.stderr
    assert sql(db, "SELECT to_regclass('public.accounts')") == [(None,)]

    result = cli("db", "migrate", "--schema", "poststack")
    assert result.exit_code == 0, result.output
    assert sql(db, "SELECT count(*) FROM poststack.schema_migrations WHERE success") == [(7,)]
    assert sql(db, "SELECT to_regclass('public.schema_migrations')") == [(None,)]  # the history's own, dropped
    assert cli("db", "validate", "--schema", "poststack").exit_code == 0


def test_validate_reports_it(cli, db, migrations_dir: Path):
    path = _history_that_drops_its_old_tracking_table(migrations_dir)
    result = cli("db", "validate")
    assert result.exit_code == 1, result.output
    assert f"{path}:2: drops {TRACKING}; {RECORD}. {ADVICE}" in result.stdout


def test_plan_and_apply_refuse_a_plan_that_would_run_it(cli, db, migrations_dir: Path, tmp_path: Path):
    path = write(migrations_dir, "006_rename_old.sql", "ALTER TABLE schema_migrations RENAME TO old_migrations;\n")
    before = catalog_snapshot(db)
    message = f"❌ {path}:1: renames {TRACKING} to old_migrations; {RECORD}. {ADVICE}"
    for args in (("plan", "--out", str(tmp_path / "plan.json")), ("apply", "--auto-approve")):
        result = cli(*args)
        assert result.exit_code == 1, result.output
        assert message in result.stderr
    assert not (tmp_path / "plan.json").exists()
    assert catalog_snapshot(db) == before


def test_a_migration_that_will_not_run_again_does_not_block(cli, db, migrations_dir: Path):
    """Tracked without running (it ran before poststack did): it never runs again, so it is
    no risk; the refusal is for what would run."""
    cli("db", "migrate")
    path = write(migrations_dir, "006_drop_old.sql", "DROP TABLE IF EXISTS schema_migrations;\n")
    assert f"{path}:1: drops {TRACKING}" in cli("db", "migrate").stderr
    assert cli("db", "recover", "--force", "006").exit_code == 0
    write(migrations_dir, "007_after.sql", "CREATE TABLE after_it (id int);\n")
    result = cli("db", "migrate")
    assert result.exit_code == 0, result.output
    assert sql(db, "SELECT version FROM schema_migrations WHERE success ORDER BY id")[-2:] == [("006",), ("007",)]
    assert cli("db", "validate").exit_code == 0
