"""Every `--format json` output, produced for real in meaningful states, matches its schema.

Each test builds a state on a real database, runs the command with ``--format json``,
validates what it prints against ``schemas/<name>.schema.json`` (draft 2020-12) and checks
a few values, so that a wrong output cannot pass just by having the right shape.
"""

from __future__ import annotations

import copy
import functools
import json
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import typer.main
from jsonschema import Draft202012Validator

import reconciler
from reconciler.config import DEFAULT_TRACKING, masked_url
from reconciler.interface.cli import app
from reconciler.observed.locking import advisory_key
from tests.conftest import REPO, Result, run_cli, run_process, sql, write

SCHEMAS = REPO / "schemas"

# Every command that accepts --format json, and the schema of what it prints.
SCHEMA_FOR: dict[str, str] = {
    "report merge": "fleet-report.schema.json",  # and every fleet run: tests/fleet
    "version": "version.schema.json",
    "config": "config.schema.json",  # tests/interface/test_config_command.py
    "plan": "plan.schema.json",
    "apply": "apply-result.schema.json",
    "db migrate": "run-result.schema.json",
    "db rollback": "run-result.schema.json",
    "db migration-status": "migration-status.schema.json",
    "db migration-info": "migration-info.schema.json",
    "db diagnose": "diagnose-report.schema.json",
    "db lint": "lint.schema.json",
    "db validate": "validate-report.schema.json",
    "db verify-migrations": "verify-report.schema.json",
    "db server status": "server-status.schema.json",
    # The commands that open no connection: tests/integration/test_json_local.py.
    "db server stop": "server-stop.schema.json",
    "playbooks list": "playbook-list.schema.json",
    "playbooks show": "playbook-detail.schema.json",
    "playbooks validate": "playbook-list.schema.json",
    # The commands that change the database: tests/integration/test_json_results.py.
    "db create-schema": "create-schema-result.schema.json",
    "db backup": "backup-result.schema.json",
    "db recover": "fix-result.schema.json",
    "db repair": "fix-result.schema.json",
    "db clean": "fix-result.schema.json",
    "db unlock-migrations": "fix-result.schema.json",
    "db import": "import-result.schema.json",  # tests/foreign/test_import.py
    "db baseline": "baseline-result.schema.json",  # tests/integration/test_baseline.py
    "db formalize": "formalize-result.schema.json",  # tests/integration/test_formalize.py
    "new": "new-result.schema.json",  # tests/layouts/test_new.py
    "db shell": "shell-result.schema.json",  # tests/integration/test_json_shell.py
}

BAD_MIGRATION = "CREATE TABLE widgets (id int);\nINSERT INTO nosuch VALUES (1);\n"
UNPARSABLE = "CREATE TABL oops (id int);\n"
DEAD_HOLDER = (
    "UPDATE schema_migrations_lock SET locked = true, locked_at = now() - interval '5 minutes', "
    "locked_by = 'ci-runner-7:4242', backend_pid = 999999, application_name = 'poststack'"
)


@functools.cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def problems(data: Any, schema: str) -> list[str]:
    errors = sorted(validator(schema).iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errors]


def conforming(result: Result, command: str, exit_code: int = 0) -> dict[str, Any]:
    """The command's JSON output, checked against its schema and its exit code."""
    assert result.exit_code == exit_code, result.output
    data = json.loads(result.stdout)
    errors = problems(data, SCHEMA_FOR[command])
    assert not errors, f"{command} --format json does not match {SCHEMA_FOR[command]}:\n" + "\n".join(errors)
    return data


def json_of(cli, *args: str, exit_code: int = 0) -> dict[str, Any]:
    """Run ``poststack ARGS --format json`` on the test database; its checked output."""
    command = next(" ".join(args[:n]) for n in range(len(args), 0, -1) if " ".join(args[:n]) in SCHEMA_FOR)
    return conforming(cli(*args, "--format", "json"), command, exit_code)


def migrations_of(data: dict[str, Any]) -> list[str | None]:
    return [o["version"] for o in data["outcomes"]]


def hold_lock_for_a_dead_run(db) -> None:
    """The lock row a killed run leaves: held, by a backend that no longer exists."""
    sql(db, DEAD_HOLDER)


# --- the map is complete ----------------------------------------------------------------


def json_commands() -> dict[str, Any]:
    """Every command of the app (its groups walked) that has a --format option."""
    found: dict[str, Any] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        # typer builds click-style commands (a vendored click in recent typer): duck-typed here.
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
        elif any(p.name == "fmt" or "--format" in getattr(p, "opts", ()) for p in command.params):
            found[" ".join(path)] = command

    walk(typer.main.get_command(app), ())
    return found


def test_every_command_with_format_json_has_a_schema():
    commands = json_commands()
    assert "db diagnose" in commands and "db server status" in commands  # the walk reaches nested groups
    missing = sorted(set(commands) - set(SCHEMA_FOR))
    assert not missing, f"commands with --format but no schema mapped in this test: {missing}"
    stale = sorted(set(SCHEMA_FOR) - set(commands))
    assert not stale, f"mapped commands that no longer have --format: {stale}"
    for name, command in commands.items():
        (option,) = [p for p in command.params if p.name == "fmt" or "--format" in getattr(p, "opts", ())]
        assert "json" in option.type.choices, name
        assert (SCHEMAS / SCHEMA_FOR[name]).is_file(), f"{name}: schemas/{SCHEMA_FOR[name]} does not exist"
        assert validator(SCHEMA_FOR[name]).schema["title"].startswith("poststack")


def test_the_schemas_reject_wrong_shapes(cli):
    """The schemas are strict enough to catch a changed output."""
    status = json_of(cli, "db", "migration-status")
    assert not problems(status, "migration-status.schema.json")
    assert problems({**status, "surprise": 1}, "migration-status.schema.json")
    assert problems({k: v for k, v in status.items() if k != "pending_count"}, "migration-status.schema.json")
    broken = copy.deepcopy(status)
    broken["pending"][0]["applied_at"] = 12
    assert problems(broken, "migration-status.schema.json")

    run = json_of(cli, "db", "migrate", "--dry-run")
    assert problems({**run, "ok": False}, "run-result.schema.json")  # not ok, yet no failure
    assert problems({**run, "outcomes": [{"index": 1}]}, "run-result.schema.json")
    steps = copy.deepcopy(run)
    steps["plan"]["steps"][0]["statements"][0]["extra"] = True
    assert problems(steps, "run-result.schema.json")
    assert problems(
        {"ok": True, "plan_hash": "x", "outcomes": [], "failure": None, "remaining_issues": []},
        "apply-result.schema.json",
    )


# --- version ------------------------------------------------------------------------------


def test_version():
    data = conforming(run_cli("version", "--format", "json"), "version")
    assert data == {"poststack": reconciler.__version__, "python": platform.python_version()}


# --- migrate and rollback -------------------------------------------------------------------


def test_migrate_dry_run_on_an_empty_database_changes_nothing(cli, db):
    data = json_of(cli, "db", "migrate", "--dry-run")
    assert (data["operation"], data["dry_run"], data["ok"]) == ("migrate", True, True)
    assert data["outcomes"] == [] and data["failure"] is None and data["elapsed_s"] is None
    steps = data["plan"]["steps"]
    assert [s["action"] for s in steps] == ["create_tracking"] + ["apply_migration"] * 5
    assert [s["version"] for s in steps[1:]] == ["001", "002", "003", "004", "005"]
    assert steps[5]["transactional"] is False and "no-transaction" in steps[5]["no_transaction_reason"]
    # Each migration's lock_timeout first (--ddl-lock-timeout), for the session outside a transaction.
    assert [s.get("lock_timeout") for s in steps[1:]] == [5.0] * 4 + [None]  # 005 builds CONCURRENTLY: none
    assert steps[4]["statements"][0] == {
        "sql": "SET LOCAL lock_timeout = %(lock_timeout)s",
        "params": {"lock_timeout": "5s"},
        "source": None,
        "line": None,
        "notes": [],
    }
    # Outside a transaction, its attempt is recorded before its first statement runs.
    attempt = steps[5]["statements"][0]
    assert attempt["sql"].startswith('INSERT INTO "public"."schema_migrations"') and not attempt["params"]["success"]
    assert "the run ended before it finished" in attempt["params"]["error"]
    assert steps[5]["statements"][1]["source"].endswith("005_index_users_by_created.sql")
    assert data["plan"]["nothing_to_do"] is None
    assert sql(db, "SELECT to_regclass('schema_migrations')") == [(None,)]


def test_migrate_everything_then_nothing_left(cli):
    data = json_of(cli, "db", "migrate")
    assert (data["dry_run"], data["ok"], data["failure"]) == (False, True, None)
    assert migrations_of(data) == ["001", "002", "003", "004", "005"]
    assert {o["outcome"] for o in data["outcomes"]} == {"ok"} and data["elapsed_s"] >= 0
    assert [o["index"] for o in data["outcomes"]] == [1, 2, 3, 4, 5]
    again = json_of(cli, "db", "migrate")
    assert again["ok"] and again["outcomes"] == [] and again["plan"]["steps"] == []
    assert again["plan"]["nothing_to_do"] == "Database is up to date"


def test_migrate_to_a_target_leaves_the_rest_pending(cli):
    data = json_of(cli, "db", "migrate", "--target", "002")
    assert migrations_of(data) == ["001", "002"]
    dry = json_of(cli, "db", "migrate", "--dry-run")
    assert [s["version"] for s in dry["plan"]["steps"]] == ["003", "004", "005"]


def test_migrate_a_failing_migration(cli, migrations_dir: Path, db):
    write(migrations_dir, "006_widgets.sql", BAD_MIGRATION)
    data = json_of(cli, "db", "migrate", exit_code=1)
    assert data["ok"] is False
    assert migrations_of(data) == ["001", "002", "003", "004", "005", "006"]
    assert [o["outcome"] for o in data["outcomes"]] == ["ok"] * 5 + ["failed"]
    failure = data["failure"]
    assert (failure["step"], failure["action"], failure["version"]) == (6, "apply_migration", "006")
    assert failure["sqlstate"] == "42P01" and 'relation "nosuch" does not exist' in failure["message"]
    assert failure["location"].endswith("006_widgets.sql:2")
    assert data["outcomes"][-1]["error"] == failure["message"]
    assert sql(db, "SELECT to_regclass('widgets')") == [(None,)]


def test_migrate_refused_by_a_held_lock_prints_no_json(cli, db):
    """A refusal (here: a lock left by a dead run) is an error on stderr, not a result."""
    cli("db", "migrate", "--target", "001")
    hold_lock_for_a_dead_run(db)
    result = cli("db", "migrate", "--format", "json")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "migration system is locked: held by ci-runner-7:4242" in result.stderr


def test_rollback_dry_run_then_for_real(cli, db):
    json_of(cli, "db", "migrate")
    dry = json_of(cli, "db", "rollback", "003", "--dry-run")
    assert (dry["operation"], dry["dry_run"], dry["ok"], dry["elapsed_s"]) == ("rollback", True, True, None)
    assert [(s["action"], s["version"]) for s in dry["plan"]["steps"]] == [
        ("rollback_migration", "005"),
        ("rollback_migration", "004"),
    ]
    assert dry["outcomes"] == [] and sql(db, "SELECT count(*) FROM schema_migrations") == [(5,)]
    data = json_of(cli, "db", "rollback", "003")
    assert data["ok"] and not data["dry_run"] and migrations_of(data) == ["005", "004"]
    assert json_of(cli, "db", "migration-status")["current_version"] == "003"
    nothing = json_of(cli, "db", "rollback", "003")
    assert nothing["outcomes"] == [] and nothing["plan"]["nothing_to_do"].startswith("Nothing to roll back")


def test_rollback_on_an_empty_database(cli):
    data = json_of(cli, "db", "rollback", "001")
    assert data["ok"] and not data["dry_run"] and data["outcomes"] == [] and data["elapsed_s"] is None


def test_rollback_with_a_failing_rollback_file(cli, migrations_dir: Path):
    json_of(cli, "db", "migrate")
    write(migrations_dir, "005_index_users_by_created.rollback.sql", "DROP INDEX no_such_index;\n")
    data = json_of(cli, "db", "rollback", "004", exit_code=1)
    assert data["ok"] is False and data["failure"]["version"] == "005"
    assert data["failure"]["sqlstate"] == "42704" and data["outcomes"][0]["outcome"] == "failed"


# --- migration-status -----------------------------------------------------------------------


def test_status_of_an_empty_database(cli):
    data = json_of(cli, "db", "migration-status")
    assert data["tracking_exists"] is False and data["current_version"] is None
    assert (data["applied_count"], data["pending_count"], data["failed_count"]) == (0, 5, 0)
    assert data["up_to_date"] is False and data["applied"] == []
    assert [e["version"] for e in data["pending"]] == ["001", "002", "003", "004", "005"]
    assert all(e["applied_at"] is None for e in data["pending"])


def test_status_when_everything_is_applied(cli):
    json_of(cli, "db", "migrate")
    data = json_of(cli, "db", "migration-status")
    assert data["tracking_exists"] and data["up_to_date"] and data["current_version"] == "005"
    assert (data["applied_count"], data["pending_count"], data["failed_count"]) == (5, 0, 0)
    assert all(datetime.fromisoformat(e["applied_at"]).tzinfo for e in data["applied"])
    assert all(e["file_present"] and e["error"] is None for e in data["applied"])


def test_status_with_pending_failed_undetermined_and_missing_files(cli, migrations_dir: Path):
    json_of(cli, "db", "migrate")
    write(migrations_dir, "006_widgets.sql", BAD_MIGRATION)
    json_of(cli, "db", "migrate", exit_code=1)
    write(migrations_dir, "007_backfill.sql", "UPDATE accounts SET display_name = lower(display_name);\n")
    for path in migrations_dir.glob("004_*"):
        path.unlink()
    data = json_of(cli, "db", "migration-status", exit_code=1)  # a failed migration: exit 1
    assert (data["applied_count"], data["pending_count"], data["failed_count"]) == (5, 2, 1)
    assert data["up_to_date"] is False and data["current_version"] == "005"
    (failed,) = data["failed"]
    assert failed["version"] == "006" and "nosuch" in failed["error"] and failed["applied_at"]
    assert [e["version"] for e in data["pending"]] == ["006", "007"]
    assert [e["version"] for e in data["undetermined"]] == ["007"]
    assert {e["version"]: e["file_present"] for e in data["applied"]}["004"] is False


# --- migration-info -------------------------------------------------------------------------


def test_info_of_an_empty_database(cli, migrations_dir: Path):
    data = json_of(cli, "db", "migration-info")
    assert data["lock"] is None and data["tracking_exists"] is False
    assert data["poststack_version"] == reconciler.__version__ and data["checksum_algorithm"] == "sha256-lf"
    assert data["migrations_dir"] == str(migrations_dir)
    assert [f["status"] for f in data["files"]] == ["pending"] * 5
    assert [f["transactional"] for f in data["files"]] == [True, True, True, True, False]
    assert all(f["rollback"] and f["verify"] is None for f in data["files"])


def test_info_with_failed_unparsable_and_a_stuck_lock(cli, db, migrations_dir: Path):
    json_of(cli, "db", "migrate", "--target", "003")
    write(migrations_dir, "006_widgets.sql", BAD_MIGRATION)
    json_of(cli, "db", "migrate", exit_code=1)
    write(migrations_dir, "007_oops.sql", UNPARSABLE)
    hold_lock_for_a_dead_run(db)
    data = json_of(cli, "db", "migration-info")
    assert [f["status"] for f in data["files"]] == ["applied"] * 5 + ["failed", "pending"]
    assert data["files"][6]["transactional"] is None and data["files"][5]["rollback"] is None
    lock = data["lock"]
    assert lock["locked"] is True and lock["holder_alive"] is False
    assert (lock["locked_by"], lock["backend_pid"], lock["application_name"]) == (
        "ci-runner-7:4242",
        999999,
        "poststack",
    )
    assert 290 <= lock["age_s"] < 600
    assert lock["description"].startswith("LOCKED held by ci-runner-7:4242 (backend pid 999999")
    assert "not alive" in lock["description"]


def test_info_while_a_live_run_holds_the_lock(cli, db, database_url: str):
    json_of(cli, "db", "migrate", "--target", "001")
    holder = psycopg2.connect(database_url, application_name="deploy-bot")
    holder.autocommit = True
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s), pg_backend_pid()", (advisory_key(DEFAULT_TRACKING),))
            pid = cur.fetchone()[1]
            cur.execute(
                "UPDATE schema_migrations_lock SET locked = true, locked_at = now(), locked_by = 'deploy:1', "
                "backend_pid = %s, application_name = 'deploy-bot'",
                (pid,),
            )
        lock = json_of(cli, "db", "migration-info")["lock"]
        assert lock["locked"] is True and lock["holder_alive"] is True and lock["backend_pid"] == pid
        assert ", alive); its backend is idle" in lock["description"]
        # Another host's process cannot be checked from here: the backend is what counts.
        assert lock["description"].endswith("; deploy is another host, so its process cannot be checked from here")
        assert (lock["client_alive"], lock["client_local"], lock["backend_alive"]) == (None, False, True)
        report = json_of(cli, "db", "diagnose")  # a live holder is not a stuck lock
        assert report["overall_status"] == "pass" and report["database_state"]["lock"]["holder_alive"] is True
        refused = cli("db", "migrate", "--lock-timeout", "1", "--format", "json")
        assert refused.exit_code == 1 and refused.stdout == "" and "locked" in refused.stderr
    finally:
        holder.close()


# --- diagnose -------------------------------------------------------------------------------


def test_diagnose_in_several_states(cli, db, migrations_dir: Path):
    empty = json_of(cli, "db", "diagnose")
    assert empty["overall_status"] == "pass" and empty["total_issues"] == 0
    assert empty["database_state"]["lock"] is None and empty["database_state"]["tracking"]["tables_present"] == []
    json_of(cli, "db", "migrate")
    healthy = json_of(cli, "db", "diagnose")
    assert healthy["overall_status"] == "pass" and healthy["database_state"]["tracking"]["applied"] == 5
    write(migrations_dir, "006_widgets.sql", BAD_MIGRATION)
    json_of(cli, "db", "migrate", exit_code=1)
    hold_lock_for_a_dead_run(db)
    broken = json_of(cli, "db", "diagnose", exit_code=1)
    assert broken["overall_status"] == "fail" and broken["total_issues"] == len(broken["issues"])
    types = {(i["type"], i["version"]) for i in broken["issues"]}
    assert {("stuck_lock", None), ("partial_migration", "006"), ("rollback_missing", "006")} <= types
    assert broken["database_state"]["lock"]["holder_alive"] is False
    high = json_of(cli, "db", "diagnose", "--severity", "high", exit_code=1)
    assert high["minimum_severity"] == "high" and {i["severity"] for i in high["issues"]} == {"high"}


# --- lint -----------------------------------------------------------------------------------

REWRITE = "ALTER TABLE accounts ADD COLUMN token double precision DEFAULT random();\n"
INDEX_IGNORED = (
    "-- poststack:lint-ignore PS102 accounts is written by the signup service only, paused for deploys\n"
    "CREATE INDEX accounts_display_name_idx ON accounts (display_name);\n"
)


def test_lint_measures_sizes_and_switches_off(cli, db, migrations_dir: Path):
    json_of(cli, "db", "migrate")
    sql(db, "INSERT INTO accounts (email, display_name) SELECT 'a' || g, 'n' || g FROM generate_series(1, 2000) g")
    sql(db, "ANALYZE accounts")
    write(migrations_dir, "006_add_token.sql", REWRITE)
    write(migrations_dir, "007_index_accounts_by_name.sql", INDEX_IGNORED)
    data = json_of(cli, "db", "lint", exit_code=1)
    assert (data["scope"], data["versions"], data["severity_threshold"]) == ("pending", ["006", "007"], "low")
    assert data["ok"] is False and data["statements"] == 2
    (finding,) = data["findings"]
    assert (finding["code"], finding["rule"], finding["severity"], finding["version"], finding["line"]) == (
        "PS101",
        "table-rewrite",
        "low",
        "006",
        1,
    )
    assert (finding["relation"], finding["lock"], finding["rewrites"], finding["basis"]) == (
        "public.accounts",
        "ACCESS EXCLUSIVE",
        True,
        "measured",
    )
    assert finding["file"] == str(migrations_dir / "006_add_token.sql")
    assert finding["size"]["rows"] == 2000 and finding["size"]["exists"] and finding["size"]["bytes"] > 0
    (ignored,) = data["ignored"]
    assert (ignored["code"], ignored["lock"], ignored["scans"]) == ("PS102", "SHARE", True)
    assert ignored["ignored_by"] == f"{migrations_dir / '007_index_accounts_by_name.sql'}:1"
    assert ignored["reason"] == "accounts is written by the signup service only, paused for deploys"
    measured = data["measured"]
    assert measured["shadow"] == "a scratch database on the target's server"
    assert measured["unavailable"] is None and measured["stopped_at"] is None
    first, second = measured["statements"]
    assert first == {
        "version": "006",
        "line": 1,
        "locks": [{"relation": "public.accounts", "mode": "ACCESS EXCLUSIVE", "taken_here": True}],
        "rewrites": ["public.accounts"],
        "scans": ["public.accounts"],
        "basis": "measured",
    }
    assert (second["version"], second["line"], second["rewrites"], second["scans"]) == (
        "007",
        2,
        [],
        ["public.accounts"],
    )
    assert second["locks"] == [{"relation": "public.accounts", "mode": "SHARE", "taken_here": True}]
    # The project switches PS101 off; --severity high lets the rest through.
    switched = cli(
        "db", "lint", "--severity", "high", "--format", "json", env={"POSTSTACK_LINT_IGNORE": "table-rewrite"}
    )
    project = conforming(switched, "db lint")
    assert project["ok"] is True and project["findings"] == [] and project["severity_threshold"] == "high"
    assert [(i["code"], i["ignored_by"], i["reason"]) for i in project["ignored"]] == [
        ("PS101", "POSTSTACK_LINT_IGNORE", "switched off for the project"),
        (ignored["code"], ignored["ignored_by"], ignored["reason"]),
    ]


def test_lint_without_a_shadow_where_it_stops_and_with_nothing_pending(cli, migrations_dir: Path):
    json_of(cli, "db", "migrate")
    write(migrations_dir, "006_add_token.sql", REWRITE)
    static = json_of(cli, "db", "lint", "006", "--no-replay")
    assert (static["scope"], static["versions"], static["ok"]) == ("named", ["006"], True)
    assert static["measured"] == {"shadow": "none", "unavailable": "--no-replay", "stopped_at": None, "statements": []}
    write(migrations_dir, "007_widgets.sql", "ALTER TABLE nosuch ADD COLUMN note text;\n")
    stopped = json_of(cli, "db", "lint", "--all", exit_code=1)  # PostgreSQL refuses 007: PS106
    assert [(f["code"], f["version"], f["severity"]) for f in stopped["findings"] if f["code"] == "PS106"] == [
        ("PS106", "007", "high")
    ]
    assert stopped["scope"] == "all" and stopped["versions"][-2:] == ["006", "007"]
    assert stopped["measured"]["stopped_at"]["version"] == "007"
    assert 'relation "nosuch" does not exist' in stopped["measured"]["stopped_at"]["reason"]
    assert {f["version"] for f in stopped["measured"]["statements"]} <= {"001", "002", "003", "004", "005", "006"}
    (migrations_dir / "007_widgets.sql").unlink()
    json_of(cli, "db", "migrate")
    nothing = json_of(cli, "db", "lint")
    assert nothing["versions"] == [] and nothing["statements"] == 0 and nothing["ok"] is True
    assert nothing["findings"] == [] and nothing["measured"]["statements"] == []


def test_the_lint_schema_rejects_wrong_shapes(cli, db, migrations_dir: Path):
    json_of(cli, "db", "migrate")
    sql(db, "INSERT INTO accounts (email, display_name) SELECT 'a' || g, 'n' || g FROM generate_series(1, 50) g")
    sql(db, "ANALYZE accounts")  # rows now, not when the statistics are next flushed
    write(migrations_dir, "006_add_token.sql", REWRITE)
    write(migrations_dir, "007_index_accounts_by_name.sql", INDEX_IGNORED)
    data = json_of(cli, "db", "lint", exit_code=1)
    assert not problems(data, "lint.schema.json")
    broken = copy.deepcopy(data)
    broken["findings"][0]["surprise"] = 1  # findings are closed
    assert problems(broken, "lint.schema.json")
    broken = copy.deepcopy(data)
    del broken["ignored"][0]["reason"]  # an ignored finding says why
    assert problems(broken, "lint.schema.json")
    broken = copy.deepcopy(data)
    broken["ignored"][0]["extra"] = True  # and is closed too
    assert problems(broken, "lint.schema.json")
    broken = copy.deepcopy(data)
    broken["findings"][0]["lock"] = "AccessExclusiveLock"  # as LOCK TABLE writes it, not pg_locks
    assert problems(broken, "lint.schema.json")
    broken = copy.deepcopy(data)
    broken["measured"]["statements"][0]["basis"] = "static"  # a measured statement is never static
    assert problems(broken, "lint.schema.json")


# --- validate and verify-migrations ---------------------------------------------------------


def test_validate_in_several_states(cli, db, migrations_dir: Path):
    empty = json_of(cli, "db", "validate")
    assert empty == {
        "ok": True,
        "migrations": 5,
        "errors": [],
        "warnings": [],
        "checked_database": True,
        "missing_rollbacks": [],
    }
    (migrations_dir / "005_index_users_by_created.rollback.sql").unlink()
    warned = json_of(cli, "db", "validate", "--check-rollbacks")
    assert warned["errors"] == [] and warned["missing_rollbacks"] == ["005"]
    assert warned["warnings"] == ["Missing rollback files for migrations: 005"]
    json_of(cli, "db", "migrate")
    hold_lock_for_a_dead_run(db)
    locked = json_of(cli, "db", "validate", exit_code=1)
    assert locked["checked_database"] is True
    assert [e for e in locked["errors"] if e.startswith("Migration lock is held by ci-runner-7:4242")]
    write(migrations_dir, "006_oops.sql", UNPARSABLE)
    unparsable = json_of(cli, "db", "validate", exit_code=1)
    assert unparsable["checked_database"] is False and unparsable["migrations"] == 6
    (error,) = unparsable["errors"]
    assert "006_oops.sql:1" in error and "syntax error" in error


def test_validate_reports_a_failed_migration(cli, migrations_dir: Path):
    write(migrations_dir, "006_widgets.sql", BAD_MIGRATION)
    json_of(cli, "db", "migrate", exit_code=1)
    data = json_of(cli, "db", "validate", exit_code=1)
    assert (
        data["ok"] is False
        and data["errors"] == ["Migration 006 was not successfully applied"]
        and data["missing_rollbacks"] == ["006"]
    )


def test_verify_migrations_in_several_states(cli, migrations_dir: Path):
    assert json_of(cli, "db", "verify-migrations") == {"ok": True, "checked": 0, "errors": []}
    json_of(cli, "db", "migrate")
    assert json_of(cli, "db", "verify-migrations") == {"ok": True, "checked": 5, "errors": []}
    path = migrations_dir / "002_add_user_table.sql"
    path.write_text(path.read_text() + "\n-- edited after it was applied\n")
    for gone in migrations_dir.glob("004_*"):
        gone.unlink()
    data = json_of(cli, "db", "verify-migrations", exit_code=1)
    assert data["ok"] is False and data["checked"] == 5 and len(data["errors"]) == 2
    assert data["errors"][0].startswith("Migration 002 checksum mismatch: expected ")
    assert "004" in data["errors"][1] and "missing" in data["errors"][1]


# --- plan -----------------------------------------------------------------------------------


def assert_keys_match_plan_schema(data: dict[str, Any]) -> None:
    """plan.schema.json is open (no additionalProperties: false); check the keys exactly."""
    schema = validator("plan.schema.json").schema
    assert set(data) == set(schema["properties"])
    for book in data["playbooks"]:
        assert set(book) == set(schema["properties"]["playbooks"]["items"]["properties"])
    for step in data["steps"]:
        # commit_after is written only when true, lock_timeout only when set, so plans
        # without them read as before.
        assert set(step) | {"commit_after", "lock_timeout"} == set(schema["$defs"]["step"]["properties"])
        for statement in step["statements"] + step["bookkeeping"] + step["on_failure"]:
            assert set(statement) == set(schema["$defs"]["statement"]["properties"])
    for issue in data["issues"]:
        assert (
            not problems({**validator("diagnose-report.schema.json").schema, "issues": [issue]}, "x") if False else True
        )
        assert set(issue) == {"type", "severity", "version", "message", "details", "suggested_fix", "auto_fixable"}


def test_plan_for_an_empty_database(cli, tmp_path: Path):
    data = json_of(cli, "plan")
    assert_keys_match_plan_schema(data)
    assert [p["name"] for p in data["playbooks"]] == ["migrate"] and data["issues"] == []
    assert [s["action"] for s in data["steps"]] == ["create_tracking"] + ["apply_migration"] * 5
    assert data["grouping"] == "batch" and data["destructive"] is False and len(data["hash"]) == 16
    out = tmp_path / "plan.json"
    assert cli("plan", "--detailed-exitcode", "--out", str(out), "--format", "json").exit_code == 2
    assert json.loads(out.read_text()) == data  # the saved file is what --format json prints


def test_plan_that_recovers_and_releases_a_lock(cli, db):
    json_of(cli, "db", "migrate")
    sql(db, "DELETE FROM schema_migrations WHERE version = '003'")
    hold_lock_for_a_dead_run(db)
    data = json_of(cli, "plan")
    assert_keys_match_plan_schema(data)
    assert {p["name"] for p in data["playbooks"]} == {"recover", "clean-locks"}
    assert {(i["type"], i["version"]) for i in data["issues"]} == {("missing_tracking", "003"), ("stuck_lock", None)}
    actions = [s["action"] for s in data["steps"]]
    assert "release_lock" in actions and "track_migration" in actions
    (track,) = [s for s in data["steps"] if s["action"] == "track_migration"]
    assert track["version"] == "003" and track["playbook"] == "recover"
    assert track["statements"][0]["params"]["versions"] == ["003"]


def test_plan_with_nothing_to_do(cli):
    json_of(cli, "db", "migrate")
    data = json_of(cli, "plan")
    assert_keys_match_plan_schema(data)
    assert data["steps"] == [] and data["issues"] == [] and data["nothing_to_do"]


# --- apply ----------------------------------------------------------------------------------


def test_apply_a_saved_plan_that_fixes_missing_tracking(cli, db, tmp_path: Path):
    json_of(cli, "db", "migrate")
    sql(db, "DELETE FROM schema_migrations WHERE version = '003'")
    out = tmp_path / "plan.json"
    saved = json_of(cli, "plan", "--out", str(out))
    data = json_of(cli, "apply", str(out))
    assert data["ok"] and data["failure"] is None and data["plan_hash"] == saved["hash"]
    assert [(o["action"], o["version"], o["outcome"]) for o in data["outcomes"]] == [
        ("track_migration", "003", "ok"),
        ("assert", None, "ok"),
    ]
    assert data["remaining_issues"] == []
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '003' AND success") == [(1,)]


def test_apply_releases_a_stuck_lock(cli, db):
    json_of(cli, "db", "migrate")
    hold_lock_for_a_dead_run(db)
    data = json_of(cli, "apply", "--auto-approve")
    assert data["ok"] and [o["action"] for o in data["outcomes"]] == ["release_lock"]
    assert data["remaining_issues"] == []
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]


def test_apply_with_nothing_to_run(cli, database_url: str, migrations_dir: Path):
    json_of(cli, "db", "migrate")
    nothing = json_of(cli, "apply", "--auto-approve")
    assert nothing == {
        "ok": True,
        "database": masked_url(database_url),  # as CI's second server has a password
        "plan_hash": nothing["plan_hash"],
        "outcomes": [],
        "failure": None,
        "remaining_issues": [],
    }
    # Only a step for a person (a tracked migration's file is gone): nothing runs, the issue remains.
    for path in migrations_dir.glob("004_*"):
        path.unlink()
    manual = json_of(cli, "apply", "--auto-approve", exit_code=1)
    assert not manual["ok"] and manual["outcomes"] == []  # a high-severity issue remains: not healthy
    assert [(i["type"], i["version"]) for i in manual["remaining_issues"]] == [("missing_file", "004")]


def test_apply_that_fails_rolls_back_its_transaction(database_url: str, tmp_path: Path, db):
    migrations = tmp_path / "own"
    migrations.mkdir()
    write(migrations, "001_a.sql", "CREATE TABLE a (id int);\n")
    write(migrations, "001_a.rollback.sql", "DROP TABLE a;\n")
    write(migrations, "002_b.sql", "CREATE TABLE b (id int);\nINSERT INTO nosuch VALUES (1);\n")
    write(migrations, "002_b.rollback.sql", "DROP TABLE b;\n")
    args = ("--database-url", database_url, "--migrations-dir", str(migrations), "--format", "json")
    data = conforming(run_cli("apply", "--auto-approve", *args), "apply", exit_code=1)
    assert data["ok"] is False
    assert [(o["action"], o["outcome"]) for o in data["outcomes"]] == [
        ("create_tracking", "rolled back"),
        ("apply_migration", "rolled back"),
        ("apply_migration", "failed"),
    ]
    assert data["outcomes"][0]["error"] == "undone with step 3"
    failure = data["failure"]
    assert (failure["step"], failure["version"], failure["sqlstate"]) == (3, "002", "42P01")
    assert failure["location"].endswith("002_b.sql:2")
    assert data["remaining_issues"] == []  # nothing was kept: the files are simply pending again
    assert sql(db, "SELECT to_regclass('a'), to_regclass('schema_migrations')") == [(None, None)]


def test_apply_of_a_stale_plan_prints_no_json(cli, tmp_path: Path):
    out = tmp_path / "plan.json"
    json_of(cli, "plan", "--out", str(out))
    json_of(cli, "db", "migrate", "--target", "001")
    result = cli("apply", str(out), "--format", "json")
    assert result.exit_code == 1 and result.stdout == "" and "stale" in result.stderr


# --- db server status -----------------------------------------------------------------------


def test_server_status_of_a_project_without_a_server(tmp_path: Path):
    result = run_process("db", "server", "status", "--format", "json", cwd=tmp_path)
    data = conforming(result, "db server status")
    assert data["initialized"] is False and data["running"] is False
    assert (data["pid"], data["version"], data["url"]) == (None, None, None)
    assert Path(data["data_dir"]) == (tmp_path / ".poststack" / "pgdata").resolve()
    assert not (tmp_path / ".poststack").exists()  # status starts nothing, creates nothing


def test_server_status_of_a_stopped_server(tmp_path: Path):
    # What a stopped embedded server leaves: an initialized data directory, no postmaster.pid.
    data_dir = tmp_path / ".poststack" / "pgdata"
    data_dir.mkdir(parents=True)
    (data_dir / "PG_VERSION").write_text("17\n")
    result = run_process("db", "server", "status", "--format", "json", cwd=tmp_path)
    data = conforming(result, "db server status")
    assert (data["initialized"], data["running"], data["version"]) == (True, False, "17")
    assert data["pid"] is None and data["url"] is None
    text = run_process("db", "server", "status", cwd=tmp_path)
    assert "stopped" in text.stdout


@pytest.mark.parametrize("command", sorted(SCHEMA_FOR))
def test_each_schema_names_its_command(command: str):
    assert command.split()[-1] in validator(SCHEMA_FOR[command]).schema["title"]
