"""validate --check-rollbacks --round-trip: every migration run, rolled back and run again in
one scratch shadow, PostgreSQL's catalog read around each step. A rollback that fails, that
does not restore the schema, or after which its migration does not run again, fails
validation, naming the file:line and the server's error, or the objects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2.extensions
import pytest

from reconciler.config import DEFAULT_TRACKING
from reconciler.db import Session, open_raw
from reconciler.desired.layouts import load_migrations
from reconciler.desired.replay.roundtrip import round_trip_history
from reconciler.desired.replay.shadow import scratch_session
from tests.conftest import Result, run_cli, write
from tests.integration.test_json_output import conforming

# What every history below starts from.
BASE = """\
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE TABLE users (
    id     bigserial PRIMARY KEY,
    email  text NOT NULL,
    status varchar(20) NOT NULL DEFAULT 'active',
    mood   mood
);
CREATE FUNCTION user_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM users $$;
CREATE TABLE flags (name text PRIMARY KEY);
"""
BASE_ROLLBACK = "DROP TABLE flags;\nDROP FUNCTION user_count();\nDROP TABLE users;\nDROP TYPE mood;\n"


def history(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    write(directory, "001_base.sql", BASE)
    write(directory, "001_base.rollback.sql", BASE_ROLLBACK)
    for name, sql in files.items():
        write(directory, name, sql)
    return directory


def relations(db: psycopg2.extensions.connection) -> list[tuple[Any, ...]]:
    """Everything in the target outside the system schemas: tables (poststack's own too),
    types, functions and schemas, to show that validate changes nothing there."""
    with db.cursor() as cur:
        cur.execute(
            """SELECT 'relation', n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
               UNION ALL SELECT 'type', n.nspname, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
               UNION ALL SELECT 'function', n.nspname, p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
               UNION ALL SELECT 'schema', nspname, '' FROM pg_namespace
               ORDER BY 1, 2, 3"""
        )
        return cur.fetchall()


@pytest.fixture
def validate(database_url: str, db: psycopg2.extensions.connection) -> Iterator[Any]:
    """`db validate` on a migrations directory, checking each time that the target is left as it was."""

    def invoke(directory: Path, *args: str) -> Result:
        before = relations(db)
        result = run_cli("db", "validate", *args, "--database-url", database_url, "--migrations-dir", str(directory))
        assert relations(db) == before, "validate --round-trip changed the target database"
        return result

    yield invoke


def report(result: Result, exit_code: int) -> dict[str, Any]:
    """The JSON report, checked against schemas/validate-report.schema.json."""
    data = conforming(result, "db validate", exit_code)
    assert "round_trip" in data
    return data


def test_rollbacks_that_undo_their_migrations_pass(validate: Any, migrations_dir: Path) -> None:
    result = validate(migrations_dir, "--check-rollbacks", "--round-trip")
    assert result.exit_code == 0, result.output
    assert "5 rollback(s) round-trip in a scratch database on the target's server" in result.stdout

    data = report(validate(migrations_dir, "--check-rollbacks", "--round-trip", "--format", "json"), 0)
    assert data["round_trip"] == {
        "shadow": "a scratch database on the target's server",
        "unavailable": None,
        "checked": 5,
        "problems": [],
        "stopped_at": None,
        "warnings": [],
    }
    # Without --round-trip the report is as it was.
    plain = json.loads(validate(migrations_dir, "--check-rollbacks", "--format", "json").stdout)
    assert "round_trip" not in plain


def test_a_rollback_that_fails_names_its_file_line_and_the_servers_error(validate: Any, tmp_path: Path) -> None:
    directory = history(
        tmp_path / "m",
        {
            "002_add_phone.sql": "ALTER TABLE users ADD COLUMN phone text;\n",
            "002_add_phone.rollback.sql": (
                "-- undo 002\nALTER TABLE users DROP COLUMN phone;\nALTER TABLE users DROP CONSTRAINT users_phone_key;\n"
            ),
            # The walk goes on after a rollback that failed: its transaction left the shadow as 002 did.
            "003_add_index.sql": "CREATE INDEX users_email ON users (email);\n",
            "003_add_index.rollback.sql": "DROP INDEX users_email;\n",
        },
    )
    result = validate(directory, "--check-rollbacks", "--round-trip")
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.stdout.splitlines() if "Rollback of migration 002" in line]
    assert "Rollback of migration 002 fails: " in line
    assert "002_add_phone.rollback.sql:3: " in line
    assert 'constraint "users_phone_key" of relation "users" does not exist' in line
    assert "migration 003" not in result.stdout and "stopped" not in result.stdout

    data = report(validate(directory, "--check-rollbacks", "--round-trip", "--format", "json"), 1)
    trip = data["round_trip"]
    assert trip["checked"] == 3 and trip["stopped_at"] is None
    assert [(p["version"], p["kind"], p["objects"]) for p in trip["problems"]] == [("002", "fails", [])]
    assert trip["problems"][0]["message"] in data["errors"]


def test_a_rollback_that_does_not_restore_the_schema_names_the_objects(validate: Any, tmp_path: Path) -> None:
    directory = history(
        tmp_path / "m",
        {
            # The type is widened; the rollback forgets to narrow it again.
            "002_widen_status.sql": "ALTER TABLE users ALTER COLUMN status TYPE text;\n",
            "002_widen_status.rollback.sql": "ALTER TABLE users ALTER COLUMN status SET DEFAULT 'active';\n",
            # The function's body is replaced; the rollback puts back another one.
            "003_count_active.sql": (
                "CREATE OR REPLACE FUNCTION user_count() RETURNS bigint LANGUAGE sql\n"
                "AS $$ SELECT count(*) FROM users WHERE status = 'active' $$;\n"
            ),
            "003_count_active.rollback.sql": (
                "CREATE OR REPLACE FUNCTION user_count() RETURNS bigint LANGUAGE sql\n"
                "AS $$ SELECT count(id) FROM users $$;\n"
            ),
            # PostgreSQL cannot drop an enum value: the rollback cannot undo this one.
            "004_mood_away.sql": "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'away';\n",
            "004_mood_away.rollback.sql": "-- An enum value cannot be dropped.\n",
            # The rollback drops the index and forgets the table.
            "005_audit_log.sql": (
                "CREATE TABLE audit_log (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());\n"
                "CREATE INDEX audit_log_at ON audit_log (at);\n"
            ),
            "005_audit_log.rollback.sql": "DROP INDEX audit_log_at;\n",
            "006_after.sql": "CREATE TABLE later (id int);\n",
            "006_after.rollback.sql": "DROP TABLE later;\n",
        },
    )
    result = validate(directory, "--check-rollbacks", "--round-trip")
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()

    def line_for(start: str) -> str:
        found = [line for line in lines if line.startswith(f"  - {start}")]
        assert len(found) == 1, result.stdout
        return found[0]

    assert line_for("Rollback of migration 002 does not restore the schema: ").endswith(
        "column public.users.status differs (expected character varying(20) NOT NULL DEFAULT "
        "'active'::character varying, found text NOT NULL DEFAULT 'active'::text)"
    )
    function = line_for("Rollback of migration 003 does not restore the schema: ")
    # The body before 003, and the one its rollback put back: the lines where they part.
    assert function.endswith(
        "function public.user_count() differs (expected AS $function$ SELECT count(*) FROM users $function$, "
        "found AS $function$ SELECT count(id) FROM users $function$)"
    ), function
    assert line_for("Rollback of migration 004 does not restore the schema: ").endswith(
        "enum public.mood differs (expected ('calm', 'busy'), found ('calm', 'busy', 'away'))"
    )
    audit = line_for("Rollback of migration 005 does not restore the schema: ")
    assert audit.endswith("table public.audit_log is left behind; sequence public.audit_log_id_seq is left behind"), (
        audit
    )
    # The table is still there, so 005 does not run again: the walk stops, and says so.
    reapply = line_for("Migration 005 does not re-apply after its rollback: ")
    assert "005_audit_log.sql:1: " in reapply and 'relation "audit_log" already exists' in reapply
    assert any(
        line.startswith("  - Round-trip checking stopped at migration 005 (") and "after it were not" in line
        for line in lines
    )
    assert "migration 006" not in result.stdout

    data = report(validate(directory, "--check-rollbacks", "--round-trip", "--format", "json"), 1)
    trip = data["round_trip"]
    assert trip["checked"] == 5 and trip["stopped_at"]["version"] == "005"
    kinds = [(p["version"], p["kind"]) for p in trip["problems"]]
    assert kinds == [
        ("002", "leaves_difference"),
        ("003", "leaves_difference"),
        ("004", "leaves_difference"),
        ("005", "leaves_difference"),
        ("005", "does_not_reapply"),
    ]
    objects = {p["version"]: p["objects"] for p in trip["problems"] if p["kind"] == "leaves_difference"}
    assert objects["002"] == [
        {
            "kind": "column",
            "identity": "public.users.status",
            "change": "differs",
            "expected": "character varying(20) NOT NULL DEFAULT 'active'::character varying",
            "found": "text NOT NULL DEFAULT 'active'::text",
        }
    ]
    ((function_object),) = objects["003"]
    assert (function_object["kind"], function_object["identity"], function_object["change"]) == (
        "function",
        "public.user_count()",
        "differs",
    )
    assert "count(*)" in function_object["expected"] and "count(id)" in function_object["found"]
    assert objects["004"] == [
        {
            "kind": "enum",
            "identity": "public.mood",
            "change": "differs",
            "expected": "'calm', 'busy'",
            "found": "'calm', 'busy', 'away'",
        }
    ]
    left = {(o["kind"], o["identity"], o["change"]) for o in objects["005"]}
    assert {
        ("table", "public.audit_log", "left_behind"),
        ("column", "public.audit_log.at", "left_behind"),
        ("index", "public.audit_log_pkey", "left_behind"),
        ("sequence", "public.audit_log_id_seq", "left_behind"),
    } <= left
    assert all(o["expected"] is None for o in objects["005"])


def test_a_migration_that_does_not_re_apply_after_its_rollback(validate: Any, tmp_path: Path) -> None:
    directory = history(
        tmp_path / "m",
        {
            # A data migration whose rollback leaves the row: the schema is restored, but the
            # migration cannot run again.
            "002_beta_flag.sql": "-- turn the beta on\nINSERT INTO flags (name) VALUES ('beta');\n",
            "002_beta_flag.rollback.sql": "-- nothing to undo\n",
            "003_after.sql": "CREATE TABLE later (id int);\n",
            "003_after.rollback.sql": "DROP TABLE later;\n",
        },
    )
    result = validate(directory, "--check-rollbacks", "--round-trip")
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("  - ")]
    assert len(lines) == 2, result.stdout
    assert lines[0].startswith("  - Migration 002 does not re-apply after its rollback: ")
    assert "002_beta_flag.sql:2: " in lines[0] and "duplicate key value violates unique constraint" in lines[0]
    assert lines[1].startswith("  - Round-trip checking stopped at migration 002 (")
    assert lines[1].endswith("the migrations after it were not round-tripped")

    data = report(validate(directory, "--check-rollbacks", "--round-trip", "--format", "json"), 1)
    assert [(p["version"], p["kind"]) for p in data["round_trip"]["problems"]] == [("002", "does_not_reapply")]
    assert data["round_trip"]["checked"] == 2


def test_a_no_transaction_migration_round_trips(validate: Any, tmp_path: Path) -> None:
    directory = history(
        tmp_path / "m",
        {
            "002_index_email.sql": (
                "-- poststack:no-transaction\nCREATE INDEX CONCURRENTLY users_email_idx ON users (email);\n"
            ),
            "002_index_email.rollback.sql": (
                "-- poststack:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS users_email_idx;\n"
            ),
        },
    )
    assert load_migrations(directory).find("002").file.script.transactional is False  # type: ignore[union-attr]
    data = report(validate(directory, "--check-rollbacks", "--round-trip", "--format", "json"), 0)
    assert data["round_trip"]["checked"] == 2 and data["round_trip"]["problems"] == []


def test_a_no_transaction_rollback_that_fails_part_way_stops_the_walk(validate: Any, tmp_path: Path) -> None:
    directory = history(
        tmp_path / "m",
        {
            "002_index_email.sql": "CREATE INDEX CONCURRENTLY users_email_idx ON users (email);\n",
            "002_index_email.rollback.sql": (
                "-- poststack:no-transaction\nDROP INDEX CONCURRENTLY users_email_idx;\nDROP INDEX CONCURRENTLY nosuch;\n"
            ),
            "003_after.sql": "CREATE TABLE later (id int);\n",
            "003_after.rollback.sql": "DROP TABLE later;\n",
        },
    )
    data = report(validate(directory, "--check-rollbacks", "--round-trip", "--format", "json"), 1)
    trip = data["round_trip"]
    ((problem),) = trip["problems"]
    assert problem["kind"] == "fails" and "002_index_email.rollback.sql:3: " in problem["message"]
    assert 'index "nosuch" does not exist' in problem["message"]
    assert trip["stopped_at"]["version"] == "002" and "part-way" in trip["stopped_at"]["reason"]


def test_a_migration_that_fails_to_run_stops_the_walk_there(validate: Any, tmp_path: Path) -> None:
    directory = history(
        tmp_path / "m",
        {
            "002_ext.sql": "-- needs an extension the server lacks\nCREATE EXTENSION no_such_ext;\n",
            "002_ext.rollback.sql": "DROP EXTENSION no_such_ext;\n",
        },
    )
    data = report(validate(directory, "--check-rollbacks", "--round-trip", "--format", "json"), 1)
    trip = data["round_trip"]
    assert trip["checked"] == 1 and trip["problems"] == []
    assert trip["stopped_at"]["version"] == "002" and "002_ext.sql:2: " in trip["stopped_at"]["reason"]
    assert any(
        e.startswith("Round-trip checking stopped at migration 002 (")
        and e.endswith("it and the migrations after it were not round-tripped")
        for e in data["errors"]
    )


def test_migrations_without_a_rollback_file_are_run_but_not_round_tripped(validate: Any, tmp_path: Path) -> None:
    directory = history(tmp_path / "m", {"002_add_phone.sql": "ALTER TABLE users ADD COLUMN phone text;\n"})
    result = validate(directory, "--check-rollbacks", "--round-trip")
    assert result.exit_code == 0, result.output
    assert "Missing rollback files for migrations: 002" in result.stdout
    assert "1 rollback(s) round-trip" in result.stdout


def test_a_named_shadow_that_cannot_be_reached_is_an_error(validate: Any, migrations_dir: Path) -> None:
    # Named on purpose: validate does not quietly skip the round trips (exit 3, one line).
    result = validate(
        migrations_dir, "--check-rollbacks", "--round-trip", "--shadow-url", "postgresql://nobody@127.0.0.1:1/nowhere"
    )
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("❌ the shadow database: cannot connect to postgresql://nobody@127.0.0.1:1/nowhere")


@pytest.mark.parametrize("extra", [(), ("--no-replay", "--check-rollbacks")], ids=["alone", "no-replay"])
def test_round_trip_needs_check_rollbacks_and_a_replay(
    validate: Any, migrations_dir: Path, extra: tuple[str, ...]
) -> None:
    result = validate(migrations_dir, "--round-trip", *extra)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--round-trip" in result.stderr


def test_the_walk_runs_in_one_scratch_shadow(database_url: str, migrations_dir: Path) -> None:
    """One shadow for the whole history, opened once; the target gains nothing."""
    target = Session(open_raw(database_url), database_url)
    try:
        seen: list[str] = []

        def opener():  # type: ignore[no-untyped-def]
            seen.append("opened")
            return scratch_session(target.url)

        result = round_trip_history(opener, load_migrations(migrations_dir).migrations, DEFAULT_TRACKING)
        assert result.ok and result.checked == 5 and seen == ["opened"]
        assert target.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    finally:
        target.close()
