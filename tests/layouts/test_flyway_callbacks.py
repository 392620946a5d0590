"""Flyway's SQL callbacks and repeatables together, on a real server.

Every script writes a row to a log table with txid_current(), so the order the scripts ran
in and the transactions they shared are read back from the database itself: beforeMigrate
and afterMigrate each in a transaction of their own; beforeEachMigrate, the migration,
afterEachMigrate and the migration's tracking row in one (Flyway's DbMigrate).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.conftest import REPO, run_cli, sql


def log(event: str) -> str:
    return f"INSERT INTO callback_log (event, txid) VALUES ('{event}', txid_current());\n"


FILES = {
    "beforeMigrate.sql": "CREATE TABLE IF NOT EXISTS callback_log (id serial PRIMARY KEY, event text, txid bigint);\n"
    + log("beforeMigrate"),
    "beforeEachMigrate.sql": log("beforeEachMigrate"),
    "afterEachMigrate.sql": log("afterEachMigrate"),
    "afterMigrate.sql": log("afterMigrate"),
    "V1__create_items.sql": "CREATE TABLE items (id int PRIMARY KEY);\n" + log("V1"),
    "U1__create_items.sql": "DROP TABLE items CASCADE;\n",
    "release2/V2__add_name.sql": "ALTER TABLE items ADD COLUMN name text;\n" + log("V2"),
    "release2/U2__add_name.sql": "ALTER TABLE items DROP COLUMN name;\n",
    "R__items_view.sql": "CREATE OR REPLACE VIEW items_view AS SELECT id FROM items;\n" + log("R__items_view"),
    "beforeClean.sql": "DROP TABLE callback_log;\n",  # poststack has no clean: read, named, never run
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "sql"
    for name, text in FILES.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


def poststack(url: str, directory: Path, *args: str):  # type: ignore[no-untyped-def]
    return run_cli(*args, "--database-url", url, "--migrations-dir", str(directory))


def as_json(url: str, directory: Path, *args: str) -> dict[str, Any]:
    result = poststack(url, directory, *args, "--format", "json")
    return json.loads(result.stdout)


def assert_run_result(data: dict[str, Any]) -> None:
    schema = json.loads((REPO / "schemas" / "run-result.schema.json").read_text())
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(data)]
    assert errors == [], errors


def logged(db: Any, after: int = 0) -> list[tuple[str, int]]:
    return sql(db, "SELECT event, txid FROM callback_log WHERE id > %s ORDER BY id", (after,))


def last_log_id(db: Any) -> int:
    return sql(db, "SELECT coalesce(max(id), 0) FROM callback_log")[0][0]


def test_callbacks_run_in_flyways_transactions_and_repeatables_only_when_changed(
    project: Path, database_url: str, db: Any
) -> None:
    # The dry run shows callbacks and repeatables in the order they would run.
    dry = as_json(database_url, project, "db", "migrate", "--dry-run")
    assert_run_result(dry)
    steps = [(s["action"], s["args"].get("file") or s["args"].get("version")) for s in dry["plan"]["steps"]]
    steps = [s for s in steps if s[0] != "create_tracking"]
    assert steps == [
        ("run_callback", "beforeMigrate.sql"),
        ("apply_migration", "1"),
        ("apply_migration", "2"),
        ("apply_migration", "R__items_view"),
        ("run_callback", "afterMigrate.sql"),
    ]
    assert dry["plan"]["notes"] == [
        "Flyway callbacks poststack does not run (events it has no equivalent of): beforeClean.sql"
    ]
    v1 = next(s for s in dry["plan"]["steps"] if s["version"] == "1")
    # The migration's lock_timeout first (poststack's own, no file), so a callback's SET wins.
    assert [Path(s["source"]).name if s["source"] else None for s in v1["statements"]] == [
        None,
        "beforeEachMigrate.sql",
        "V1__create_items.sql",
        "V1__create_items.sql",
        "afterEachMigrate.sql",
    ]
    text = poststack(database_url, project, "db", "migrate", "--dry-run")
    assert "callback(s) run: beforeMigrate.sql, afterMigrate.sql" in text.stdout

    first = poststack(database_url, project, "db", "migrate")
    assert first.exit_code == 0, first.output
    assert "ran callback(s) beforeMigrate.sql, afterMigrate.sql" in first.stdout
    events = logged(db)
    assert [e for e, _ in events] == [
        "beforeMigrate",
        *("beforeEachMigrate", "V1", "afterEachMigrate"),
        *("beforeEachMigrate", "V2", "afterEachMigrate"),
        *("beforeEachMigrate", "R__items_view", "afterEachMigrate"),
        "afterMigrate",
    ]
    txids = [t for _, t in events]
    groups = [txids[0:1], txids[1:4], txids[4:7], txids[7:10], txids[10:11]]
    assert all(len(set(g)) == 1 for g in groups), events  # each migration with its callbacks: one transaction
    assert len({g[0] for g in groups}) == 5, events  # and before/afterMigrate each in their own
    # The tracking row of each migration was written in that same transaction.
    written = dict(sql(db, "SELECT version, xmin::text::bigint FROM schema_migrations"))
    assert written == {"1": txids[1] % 2**32, "2": txids[4] % 2**32, "R__items_view": txids[7] % 2**32}

    # Callbacks are not migrations: not tracked, not pending, not unknown files.
    status = as_json(database_url, project, "db", "migration-status")
    assert [m["version"] for m in status["applied"]] == ["1", "2", "R__items_view"]
    assert status["pending"] == [] and status["undetermined"] == []
    clean = poststack(database_url, project, "db", "diagnose", "--format", "json")
    assert clean.exit_code == 0 and json.loads(clean.stdout)["issues"] == [], clean.output

    # Nothing changed: before/afterMigrate run again, as in Flyway; the repeatable does not.
    mark = last_log_id(db)
    again = poststack(database_url, project, "db", "migrate")
    assert again.exit_code == 0, again.output
    assert [e for e, _ in logged(db, mark)] == ["beforeMigrate", "afterMigrate"]
    assert sql(db, "SELECT count(*) FROM schema_migrations") == [(3,)]

    # An edited repeatable is pending, not a checksum mismatch; migrate applies it again with a new row.
    (project / "R__items_view.sql").write_text(
        "CREATE OR REPLACE VIEW items_view AS SELECT id, name FROM items;\n" + log("R__items_view")
    )
    status = as_json(database_url, project, "db", "migration-status")
    assert [m["version"] for m in status["pending"]] == ["R__items_view"]
    assert [m["version"] for m in status["applied"]] == ["1", "2", "R__items_view"]  # its last application
    shown = poststack(database_url, project, "db", "migration-status").stdout
    assert "Pending: R__items_view (changed: runs again)" in shown, shown
    info = as_json(database_url, project, "db", "migration-info")
    assert {f["version"]: f["status"] for f in info["files"]} == {
        "1": "applied",
        "2": "applied",
        "R__items_view": "pending",
    }
    diagnosis = poststack(database_url, project, "db", "diagnose", "--format", "json")
    assert json.loads(diagnosis.stdout)["issues"] == [], diagnosis.output
    mark = last_log_id(db)
    third = as_json(database_url, project, "db", "migrate")
    assert third["ok"], third
    assert_run_result(third)
    assert [(s["action"], s["version"]) for s in third["plan"]["steps"]] == [
        ("run_callback", None),
        ("apply_migration", "R__items_view"),
        ("run_callback", None),
    ]
    assert [e for e, _ in logged(db, mark)] == [
        "beforeMigrate",
        *("beforeEachMigrate", "R__items_view", "afterEachMigrate"),
        "afterMigrate",
    ]
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = 'R__items_view' AND success") == [(2,)]
    assert sql(db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items_view'") == [(2,)]
    after = poststack(database_url, project, "db", "diagnose", "--format", "json")
    assert after.exit_code == 0 and json.loads(after.stdout)["issues"] == [], after.output  # no duplicate_version
    assert as_json(database_url, project, "db", "migration-status")["pending"] == []


def test_apply_runs_the_callbacks_where_db_migrate_runs_them(project: Path, database_url: str, db: Any) -> None:
    """poststack apply and db migrate leave a database alike: the run-level callbacks (grants
    in afterMigrate, say) around the migrations a plan applies, in db migrate's order."""
    applied = poststack(database_url, project, "apply", "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert [e for e, _ in logged(db)] == [
        "beforeMigrate",
        *("beforeEachMigrate", "V1", "afterEachMigrate"),
        *("beforeEachMigrate", "V2", "afterEachMigrate"),
        *("beforeEachMigrate", "R__items_view", "afterEachMigrate"),
        "afterMigrate",
    ]
    # A plan that applies nothing runs none of them.
    mark = last_log_id(db)
    again = poststack(database_url, project, "apply", "--auto-approve")
    assert again.exit_code == 0, again.output
    assert logged(db, mark) == []
    # Each in a transaction of its own, as db migrate runs them: a failing afterMigrate keeps
    # the migration applied before it.
    (project / "afterMigrate__zz.sql").write_text("SELECT 1 / 0;\n")
    (project / "V3__note.sql").write_text("ALTER TABLE items ADD COLUMN note text;\n")
    failed = poststack(database_url, project, "apply", "--auto-approve")
    assert failed.exit_code == 1, failed.output
    assert sql(db, "SELECT success FROM schema_migrations WHERE version = '3'") == [(True,)]
    assert [e for e, _ in logged(db, mark)][-1] == "afterMigrate"


def test_a_failing_after_each_migrate_rolls_its_migration_back(project: Path, database_url: str, db: Any) -> None:
    assert poststack(database_url, project, "db", "migrate").exit_code == 0
    (project / "V3__add_flag.sql").write_text("ALTER TABLE items ADD COLUMN flag boolean;\n" + log("V3"))
    (project / "afterEachMigrate.sql").write_text(log("afterEachMigrate") + "SELECT 1 / 0;\n")
    mark = last_log_id(db)
    failed = poststack(database_url, project, "db", "migrate")
    assert failed.exit_code == 1, failed.output
    assert "Migration 3 failed" in failed.stdout and "afterEachMigrate.sql:2" in failed.stdout
    # Its transaction is gone: the column, the log rows and no tracking row of success; afterMigrate did not run.
    assert sql(db, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'flag'") == [(0,)]
    assert [e for e, _ in logged(db, mark)] == ["beforeMigrate"]
    assert sql(db, "SELECT success FROM schema_migrations WHERE version = '3'") == [(False,)]

    (project / "afterEachMigrate.sql").write_text(log("afterEachMigrate"))
    fixed = poststack(database_url, project, "db", "migrate")
    assert fixed.exit_code == 0, fixed.output
    assert sql(db, "SELECT success FROM schema_migrations WHERE version = '3'") == [(True,)]


def test_a_failing_beforemigrate_stops_the_run_before_any_migration(project: Path, database_url: str, db: Any) -> None:
    (project / "beforeMigrate__check.sql").write_text("SELECT 1 / 0;\n")
    failed = poststack(database_url, project, "db", "migrate")
    assert failed.exit_code == 1, failed.output
    assert "Callback beforeMigrate__check.sql failed" in failed.stdout
    assert sql(db, "SELECT count(*) FROM schema_migrations") == [(0,)]
    # beforeMigrate.sql (no description) ran first, in its own transaction, and stays.
    assert [e for e, _ in logged(db)] == ["beforeMigrate"]


def test_a_failing_aftermigrate_with_nothing_pending_is_a_failure(project: Path, database_url: str, db: Any) -> None:
    assert poststack(database_url, project, "db", "migrate").exit_code == 0
    (project / "afterMigrate__grants.sql").write_text("SELECT 1 / 0;\n")
    failed = poststack(database_url, project, "db", "migrate")
    assert failed.exit_code == 1, failed.output
    assert "Callback afterMigrate__grants.sql failed" in failed.stdout
    assert "up to date" not in failed.stdout and "✅" not in failed.stdout


def test_a_failing_repeatable_is_reported_failed_like_a_versioned_one(
    project: Path, database_url: str, db: Any
) -> None:
    assert poststack(database_url, project, "db", "migrate").exit_code == 0
    (project / "R__items_view.sql").write_text("CREATE OR REPLACE VIEW items_view AS SELECT nope FROM items;\n")
    (project / "R__zz_report.sql").write_text("CREATE VIEW zz_report AS SELECT nope FROM items;\n")
    result = as_json(database_url, project, "db", "migrate")
    assert not result["ok"]
    assert_run_result(result)
    assert result["failure"]["version"] == "R__items_view"
    assert sql(db, "SELECT success FROM schema_migrations WHERE version = 'R__items_view' ORDER BY id") == [
        (True,),
        (False,),
    ]
    status = as_json(database_url, project, "db", "migration-status")
    assert [m["version"] for m in status["failed"]] == ["R__items_view"]
    info = as_json(database_url, project, "db", "migration-info")
    assert {f["version"]: f["status"] for f in info["files"]}["R__items_view"] == "failed"
    issues = as_json(database_url, project, "db", "diagnose")["issues"]
    assert [(i["type"], i["version"]) for i in issues] == [("partial_migration", "R__items_view")]

    # Put back as it was last applied, the failed attempt is still due: it is retried, not forgotten.
    (project / "R__items_view.sql").write_text(FILES["R__items_view.sql"])
    status = as_json(database_url, project, "db", "migration-status")
    assert [m["version"] for m in status["pending"]] == ["R__items_view", "R__zz_report"]
    second = as_json(database_url, project, "db", "migrate")
    assert second["failure"]["version"] == "R__zz_report"  # never applied, failing: a failed row of its own
    assert sql(db, "SELECT success FROM schema_migrations WHERE version = 'R__items_view' ORDER BY id") == [
        (True,),
        (True,),
    ]  # the retried application replaced its failed attempt's row
    issues = as_json(database_url, project, "db", "diagnose")["issues"]
    assert [(i["type"], i["version"]) for i in issues] == [("partial_migration", "R__zz_report")]
    (project / "R__zz_report.sql").write_text("CREATE OR REPLACE VIEW zz_report AS SELECT id FROM items;\n")
    assert poststack(database_url, project, "db", "migrate").exit_code == 0
    assert as_json(database_url, project, "db", "diagnose")["issues"] == []


def test_undo_callbacks_run_in_each_rollbacks_transaction(project: Path, database_url: str, db: Any) -> None:
    (project / "beforeEachUndo.sql").write_text(log("beforeEachUndo"))
    (project / "afterUndo.sql").write_text(log("afterUndo"))
    assert poststack(database_url, project, "db", "migrate").exit_code == 0
    mark = last_log_id(db)
    back = poststack(database_url, project, "db", "rollback", "1")
    assert back.exit_code == 0, back.output
    events = logged(db, mark)
    assert [e for e, _ in events] == ["beforeEachUndo", "afterUndo"]
    assert events[0][1] != events[1][1]
    assert sql(
        db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'name'"
    ) == [(0,)]
    # The repeatable stays applied: Flyway has no undo for repeatables.
    status = as_json(database_url, project, "db", "migration-status")
    assert [m["version"] for m in status["applied"]] == ["1", "R__items_view"]
