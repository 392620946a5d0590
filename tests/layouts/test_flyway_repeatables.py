"""Flyway's repeatable migrations (R__) on a real server: run after every versioned one, by
name; run again, once, when they change; never undone by a rollback; never what makes a new
versioned migration "out of order"; imported from Flyway's own history; pending, never
"applied by hand", when the catalog has their objects before they ran. And where the
callbacks with transactions of their own fall among them (test_flyway_callbacks.py: the rest)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import run_cli, sql
from tests.foreign import tools as T

FILES = {
    "V1__create_users.sql": "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);\n",
    "U1__create_users.sql": "DROP TABLE users CASCADE;\n",
    "V2__seed.sql": "INSERT INTO users (name) VALUES ('admin');\n",
    "U2__seed.sql": "DELETE FROM users WHERE name = 'admin';\n",
    "R__users_view.sql": "CREATE OR REPLACE VIEW users_view AS SELECT id FROM users;\n",
    "R__user_count.sql": "CREATE OR REPLACE FUNCTION user_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM users $$;\n",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "sql"
    directory.mkdir()
    for name, text in FILES.items():
        (directory / name).write_text(text)
    return directory


def poststack(url: str, directory: Path, *args: str):  # type: ignore[no-untyped-def]
    return run_cli(*args, "--database-url", url, "--migrations-dir", str(directory))


def test_repeatables_run_last_and_again_when_changed(project: Path, database_url: str, db) -> None:  # type: ignore[no-untyped-def]
    first = poststack(database_url, project, "db", "migrate", "--format", "json")
    assert first.exit_code == 0, first.output
    ran = [s["version"] for s in json.loads(first.stdout)["plan"]["steps"] if s["action"] == "apply_migration"]
    assert ran == ["1", "2", "R__user_count", "R__users_view"]
    assert poststack(database_url, project, "db", "migrate", "--format", "json").exit_code == 0
    assert poststack(database_url, project, "db", "diagnose").exit_code == 0

    (project / "R__users_view.sql").write_text("CREATE OR REPLACE VIEW users_view AS SELECT id, name FROM users;\n")
    status = json.loads(poststack(database_url, project, "db", "migration-status", "--format", "json").stdout)
    assert [m["version"] for m in status["pending"]] == ["R__users_view"]
    diagnosis = poststack(database_url, project, "db", "diagnose", "--format", "json")
    report = json.loads(diagnosis.stdout)
    replay = report["database_state"]["replay"]
    assert replay["used"] and replay["stopped_at"] is None  # the replay saw the new view
    # Pending: neither an edit (checksum_mismatch) nor drift (the view as the file now makes it
    # is not there yet, and is not expected to be).
    assert report["issues"] == [], report["issues"]
    verified = poststack(database_url, project, "db", "verify-migrations")
    assert verified.exit_code == 0, verified.output
    again = poststack(database_url, project, "db", "migrate", "--format", "json")
    assert again.exit_code == 0, again.output
    steps = json.loads(again.stdout)["plan"]["steps"]
    assert [(s["version"], s["args"].get("reapply")) for s in steps] == [("R__users_view", True)]
    # One row per application, as in Flyway's history: both are its history, not duplicates.
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = 'R__users_view'") == [(2,)]
    assert poststack(database_url, project, "db", "diagnose").exit_code == 0
    assert sql(db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users_view'") == [(2,)]
    assert sql(db, "SELECT count(*) FROM users") == [(1,)]  # the versioned data migration ran once

    # A new versioned migration is not "older" than the repeatables applied before it.
    (project / "V3__add_email.sql").write_text("ALTER TABLE users ADD COLUMN email text;\n")
    (project / "U3__add_email.sql").write_text("ALTER TABLE users DROP COLUMN email;\n")
    third = poststack(database_url, project, "db", "migrate")
    assert third.exit_code == 0, third.output
    assert sql(db, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'email'") == [(1,)]

    # Rolling back undoes versions only; the repeatables stay applied, as in Flyway.
    back = poststack(database_url, project, "db", "rollback", "2")
    assert back.exit_code == 0, back.output
    applied = json.loads(poststack(database_url, project, "db", "migration-status", "--format", "json").stdout)
    assert [m["version"] for m in applied["applied"]] == ["1", "2", "R__user_count", "R__users_view"]


def test_flyways_repeatable_rows_are_imported_and_a_change_since_runs_again(project: Path, database_url: str) -> None:
    T.flyway_apply(database_url, project)
    (project / "R__user_count.sql").write_text(
        "CREATE OR REPLACE FUNCTION user_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) + 0 FROM users $$;\n"
    )
    imported = poststack(
        database_url, project, "db", "import", "--from", "flyway", "--auto-approve", "--format", "json"
    )
    assert imported.exit_code == 0, imported.output
    decided = {i["version"]: i["decision"] for i in json.loads(imported.stdout)["items"]}
    assert decided == {"1": "import", "2": "import", "R__user_count": "import", "R__users_view": "import"}
    plan = poststack(database_url, project, "db", "migrate", "--dry-run", "--format", "json")
    steps = json.loads(plan.stdout)["plan"]["steps"]
    assert [s["version"] for s in steps if s["action"] == "apply_migration"] == ["R__user_count"]
    assert poststack(database_url, project, "db", "migrate").exit_code == 0
    conn = psycopg2.connect(database_url)
    try:
        assert sql(conn, "SELECT count(*) FROM users") == [(1,)]
    finally:
        conn.close()


def test_an_each_migration_callback_that_cannot_run_in_a_transaction_is_refused_before_anything_runs(
    project: Path, database_url: str, db
) -> None:  # type: ignore[no-untyped-def]
    (project / "afterEachMigrate.sql").write_text("VACUUM;\n")
    refused = poststack(database_url, project, "db", "migrate", "--dry-run")
    assert refused.exit_code == 1, refused.output
    assert "afterEachMigrate callback runs in the transaction of each migration" in refused.output
    assert sql(db, "SELECT count(*) FROM pg_tables WHERE tablename = 'users'") == [(0,)]
    # In a transaction of its own, afterMigrate may hold it: it runs outside one, as in Flyway.
    (project / "afterEachMigrate.sql").rename(project / "afterMigrate.sql")
    result = poststack(database_url, project, "db", "migrate", "--format", "json")
    assert result.exit_code == 0, result.output
    last = json.loads(result.stdout)["plan"]["steps"][-1]
    assert (last["action"], last["transactional"]) == ("run_callback", False)


def test_a_repeatable_never_applied_is_pending_whatever_the_catalog_shows(project: Path, database_url: str, db) -> None:  # type: ignore[no-untyped-def]
    # Its objects exist already (made by hand, or by a versioned migration before it): for a
    # versioned migration that is evidence it ran; a repeatable is written to run again.
    sql(db, "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL)")
    sql(db, "CREATE FUNCTION user_count() RETURNS bigint LANGUAGE sql AS $$ SELECT 0::bigint $$")
    (project / "V1__create_users.sql").write_text("CREATE TABLE IF NOT EXISTS users (id serial PRIMARY KEY);\n")
    for name in ("V2__seed.sql", "U2__seed.sql", "R__users_view.sql"):
        (project / name).unlink()
    assert poststack(database_url, project, "db", "recover", "--force").exit_code == 0  # tracks V1 only
    issues = json.loads(poststack(database_url, project, "db", "diagnose", "--format", "json").stdout)["issues"]
    assert [(i["type"], i["version"]) for i in issues] == [], issues
    status = json.loads(poststack(database_url, project, "db", "migration-status", "--format", "json").stdout)
    assert [m["version"] for m in status["pending"]] == ["R__user_count"]
    assert status["undetermined"] == []
    assert poststack(database_url, project, "db", "migrate").exit_code == 0
    assert sql(db, "SELECT user_count()") == [(0,)]  # its body, not the hand-made one: count(*) of no users
    assert (
        sql(db, "SELECT prosrc FROM pg_proc WHERE proname = 'user_count'")[0][0].strip() == "SELECT count(*) FROM users"
    )


def test_the_other_migrate_callbacks_fire_where_flyways_dbmigrate_fires_them(project: Path, database_url: str) -> None:
    for event in ("afterVersioned", "beforeRepeatables", "afterMigrateApplied"):
        (project / f"{event}.sql").write_text("SELECT 1;\n")

    def order() -> list[str]:
        result = poststack(database_url, project, "db", "migrate", "--format", "json")
        assert result.exit_code == 0, result.output
        steps = json.loads(result.stdout)["plan"]["steps"]
        return [s["args"].get("file") or s["version"] for s in steps if s["action"] != "create_tracking"]

    assert order() == [
        "1",
        "2",
        "afterVersioned.sql",
        "beforeRepeatables.sql",
        "R__user_count",
        "R__users_view",
        "afterMigrateApplied.sql",
    ]
    assert order() == ["afterVersioned.sql"]  # nothing to apply: afterVersioned still fires, as in Flyway
    (project / "V3__more.sql").write_text("SELECT 3;\n")
    assert order() == ["3", "afterVersioned.sql", "afterMigrateApplied.sql"]  # no repeatable ran


def test_a_later_versioned_migration_changing_a_repeatables_view_is_no_drift(
    tmp_path: Path, database_url: str, db
) -> None:  # type: ignore[no-untyped-def]
    """Flyway ran R__ before V2 (it came later); V2 widens the view on purpose. The replay runs
    repeatables last, so the view R__ made differs from the live one: that is history, not drift."""
    directory = tmp_path / "sql"
    directory.mkdir()
    (directory / "V1__items.sql").write_text("CREATE TABLE items (id int PRIMARY KEY, name text, qty int);\n")
    (directory / "R__views.sql").write_text(
        "DROP VIEW IF EXISTS item_names;\nCREATE VIEW item_names AS SELECT id, name FROM items;\n"
    )
    assert poststack(database_url, directory, "db", "migrate").exit_code == 0
    (directory / "V2__widen_view.sql").write_text(
        "CREATE OR REPLACE VIEW item_names AS SELECT id, name, qty FROM items;\n"
    )
    assert poststack(database_url, directory, "db", "migrate").exit_code == 0
    diagnosis = poststack(database_url, directory, "db", "diagnose", "--format", "json")
    issues = {i["type"] for i in json.loads(diagnosis.stdout)["issues"]}
    assert issues == {"rollback_missing"}, diagnosis.output  # no U__ undo files: that, and nothing else
    # Gone by hand, it is still missing.
    sql(db, "DROP VIEW item_names")
    gone = poststack(database_url, directory, "db", "diagnose", "--format", "json")
    assert "missing_objects" in {i["type"] for i in json.loads(gone.stdout)["issues"]}
