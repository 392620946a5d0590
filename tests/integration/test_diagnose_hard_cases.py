"""The cases an adversarial review used to make diagnose lie or crash. Each was wrong once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import sql, write


def issues_of(cli, *args: str) -> list[dict]:
    result = cli("db", "diagnose", "--format", "json", *args)
    assert "Traceback" not in result.output
    return json.loads(result.stdout)["issues"]


def claims(cli) -> set[tuple[str, str | None]]:
    return {(i["type"], i["version"]) for i in issues_of(cli) if i["type"] != "rollback_missing"}


# --- never claim an unapplied migration -------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "CREATE SCHEMA IF NOT EXISTS public;\nINSERT INTO accounts (email, display_name) VALUES ('a@b', 'a');\n",
        "CREATE EXTENSION IF NOT EXISTS plpgsql;\nUPDATE accounts SET display_name = display_name;\n",
        # an index named like the one PostgreSQL made for 001's UNIQUE constraint
        "ALTER TABLE accounts DROP CONSTRAINT accounts_email_key;\nCREATE UNIQUE INDEX accounts_email_key ON accounts (lower(email));\n",
        "CREATE TABLE IF NOT EXISTS accounts (id int);\n",
    ],
)
def test_objects_that_exist_anyway_prove_nothing(cli, migrations_dir: Path, text):
    cli("db", "migrate")
    write(migrations_dir, "006_suspect.sql", text)
    assert ("missing_tracking", "006") not in claims(cli)


def test_the_tracking_schema_proves_nothing(cli, tmp_path: Path, database_url):
    from tests.conftest import run_cli

    directory = tmp_path / "m"
    directory.mkdir()
    write(directory, "001_ops.sql", "CREATE SCHEMA ops;\n")
    common = ("--database-url", database_url, "--migrations-dir", str(directory), "--schema", "ops")
    assert run_cli("db", "create-schema", *common).exit_code == 0
    result = run_cli("db", "diagnose", "--format", "json", *common)
    assert "missing_tracking" not in {i["type"] for i in json.loads(result.stdout)["issues"]}


# --- never report drift after a clean migrate -------------------------------------------

CLEAN_AFTER_MIGRATE = {
    "temp table backfill": "ALTER TABLE accounts ADD COLUMN plan text;\nCREATE TEMP TABLE plan_map AS SELECT id, 'free'::text AS plan FROM accounts;\nUPDATE accounts a SET plan = m.plan FROM plan_map m WHERE m.id = a.id;\n",
    "search_path finds public.users": "SET search_path TO billing, public;\nALTER TABLE users ADD COLUMN billing_ref text;\n",
    "reset all": "SET search_path TO billing;\nRESET ALL;\nCREATE TABLE after_reset (id int);\n",
    "set_config": "SELECT set_config('search_path', 'billing', false);\nCREATE TABLE cfg (id int);\n",
    "drop column takes an index": "ALTER TABLE users DROP COLUMN created_at;\n",
    "function set schema": "CREATE FUNCTION price_with_tax(p integer) RETURNS integer LANGUAGE sql AS 'select p';\nALTER FUNCTION price_with_tax(integer) SET SCHEMA billing;\n",
    "%TYPE argument": "CREATE FUNCTION account_email(p_id accounts.id%TYPE) RETURNS text LANGUAGE sql AS 'select email from accounts where id = p_id';\n",
    "composite attribute": "CREATE TYPE address AS (street text);\nALTER TYPE address ADD ATTRIBUTE zip text;\n",
    "a table named like ours": "CREATE TABLE schema_migrations_archive (id int);\n",
    "schema authorization": "CREATE SCHEMA AUTHORIZATION CURRENT_USER;\n",
    "cascade": "CREATE TYPE mood AS ENUM ('ok');\nCREATE TABLE moods (m mood);\nCREATE VIEW happy AS SELECT * FROM moods;\nDROP TYPE mood CASCADE;\n",
}


@pytest.mark.parametrize("text", CLEAN_AFTER_MIGRATE.values(), ids=CLEAN_AFTER_MIGRATE.keys())
def test_no_false_drift_after_a_clean_migrate(cli, migrations_dir: Path, text):
    write(migrations_dir, "006_case.sql", text)
    result = cli("db", "migrate")
    assert result.exit_code == 0, result.output
    assert claims(cli) == set(), issues_of(cli)


def test_untracked_but_applied_is_found_with_the_databases_search_path(cli, db, migrations_dir: Path, database_url):
    from sqlalchemy.engine import make_url

    name = make_url(database_url).database
    sql(db, f'ALTER DATABASE "{name}" SET search_path = app, public')
    write(migrations_dir, "006_app.sql", "CREATE SCHEMA app;\n")
    write(migrations_dir, "007_app_table.sql", "CREATE TABLE app_settings (k text PRIMARY KEY, v text);\n")
    assert cli("db", "migrate").exit_code == 0
    assert sql(db, "SELECT to_regclass('app.app_settings') IS NOT NULL") == [(True,)]
    assert claims(cli) == set()
    sql(db, "DELETE FROM schema_migrations WHERE version = '007'")
    assert ("missing_tracking", "007") in claims(cli)


# --- verify scripts ---------------------------------------------------------------------


def test_a_verify_script_cannot_write(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    write(migrations_dir, "006_x.sql", "UPDATE accounts SET id = id;\n")
    write(
        migrations_dir,
        "006_x.verify.sql",
        "SELECT true)); COMMIT; CREATE TABLE written_by_diagnose (id int); COMMIT; BEGIN; SELECT ((true\n",
    )
    (issue,) = [i for i in issues_of(cli) if i["version"] == "006" and i["type"] != "rollback_missing"]
    assert issue["type"] == "undetermined" and "does not parse" in issue["details"]["reason"]
    assert sql(db, "SELECT to_regclass('written_by_diagnose')") == [(None,)]
    write(migrations_dir, "006_x.verify.sql", "WITH gone AS (DELETE FROM accounts RETURNING 1) SELECT true;\n")
    (issue,) = [i for i in issues_of(cli) if i["version"] == "006" and i["type"] != "rollback_missing"]
    assert "must only read" in issue["details"]["reason"]


@pytest.mark.parametrize(
    ("script", "verdict"),
    [
        ("SELECT true; -- it is applied\n", "missing_tracking"),
        ("SELECT NULL::boolean;\n", "undetermined"),
        ("SELECT true WHERE false;\n", "undetermined"),
        ("SELECT 1/0 = 1;\n", "undetermined"),
    ],
)
def test_verify_script_answers(cli, migrations_dir: Path, script, verdict):
    cli("db", "migrate")
    write(migrations_dir, "006_x.sql", "UPDATE accounts SET id = id;\n")
    write(migrations_dir, "006_x.verify.sql", script)
    (issue,) = [i for i in issues_of(cli) if i["version"] == "006" and i["type"] != "rollback_missing"]
    assert issue["type"] == verdict


def test_a_failing_verify_script_costs_few_round_trips(cli, migrations_dir: Path):
    cli("db", "migrate")
    for i in range(6, 70):
        write(migrations_dir, f"{i:03d}_x.sql", "UPDATE accounts SET id = id;\n")
        write(migrations_dir, f"{i:03d}_x.verify.sql", "SELECT 1/0 = 1;\n" if i == 40 else "SELECT false;\n")
    report = json.loads(cli("db", "diagnose", "--format", "json").stdout)
    # Far below one a script (64 of them). Linting the pending migrations for unsafe_migration
    # reads the target a constant 6 times more (search_path, CREATEDB, sizes), however many.
    assert report["database_state"]["round_trips"] < 48 + 6


# --- files that cannot be used ------------------------------------------------------------


def test_an_unusable_pending_file_fails_diagnose(cli, migrations_dir: Path):
    cli("db", "migrate")
    write(migrations_dir, "006_latin1.sql", b"-- caf\xe9\nSELECT 1;\n")
    result = cli("db", "diagnose")
    assert result.exit_code == 1 and "INVALID_FILE" in result.stdout and "not valid UTF-8" in result.stdout


def test_an_unusable_applied_file_is_not_called_missing(cli, migrations_dir: Path):
    cli("db", "migrate")
    path = migrations_dir / "005_index_users_by_created.sql"
    path.write_bytes(path.read_bytes() + b"\xff")
    types = {(i["type"], i["version"]) for i in issues_of(cli)}
    assert ("invalid_file", "005") in types and ("missing_file", "005") not in types
    result = cli("db", "verify-migrations")
    assert result.exit_code == 1 and "not valid UTF-8" in result.stdout and "missing" not in result.stdout


# --- output -------------------------------------------------------------------------------


def test_text_details_are_the_guides(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    path = migrations_dir / "002_add_user_table.sql"
    path.write_text(path.read_text() + "\n-- edited\n")
    text = cli("db", "diagnose", "--type", "checksum_mismatch").stdout
    details = next(line for line in text.splitlines() if "Details:" in line)
    assert details.count("'") == 8 and "algorithm" not in details  # two keys, two 8-digit checksums
    tracked = details.split("'tracked_checksum': '")[1][:8]
    assert f"expected {tracked}" in cli("db", "verify-migrations").stdout


def test_type_accepts_a_comma_separated_list(cli):
    cli("db", "migrate")
    result = cli("db", "diagnose", "--type", "missing_tracking,stuck_lock")
    assert result.exit_code == 0 and "Total Issues: 0" in result.stdout


def test_validate_and_verify_have_json(cli):
    cli("db", "migrate")
    validation = json.loads(cli("db", "validate", "--format", "json").stdout)
    assert validation["errors"] == [] and validation["migrations"] == 5
    verification = json.loads(cli("db", "verify-migrations", "--format", "json").stdout)
    assert verification == {"ok": True, "checked": 5, "errors": []}


# --- second review ----------------------------------------------------------------------

EXISTED_ALREADY = {
    "matview turned into a table": (
        "CREATE MATERIALIZED VIEW account_user_counts AS SELECT account_id, count(*) AS user_count FROM users GROUP BY account_id WITH NO DATA;\n",
        "DROP MATERIALIZED VIEW account_user_counts;\nCREATE TABLE account_user_counts (account_id bigint, user_count bigint);\n",
    ),
    "rename, then drop and re-add a column": (
        "ALTER TABLE accounts RENAME TO customers;\n",
        "ALTER TABLE customers DROP COLUMN display_name;\nALTER TABLE customers ADD COLUMN display_name text NOT NULL DEFAULT '';\n",
    ),
    "index name PostgreSQL chose": (
        "CREATE INDEX ON accounts (display_name);\n",
        "DROP INDEX accounts_display_name_idx;\nCREATE UNIQUE INDEX accounts_display_name_idx ON accounts (display_name, id);\n",
    ),
}


@pytest.mark.parametrize(("first", "second"), EXISTED_ALREADY.values(), ids=EXISTED_ALREADY.keys())
def test_what_existed_before_a_migration_proves_nothing(cli, migrations_dir: Path, first, second):
    write(migrations_dir, "006_first.sql", first)
    assert cli("db", "migrate").exit_code == 0
    write(migrations_dir, "007_second.sql", second)
    assert ("missing_tracking", "007") not in claims(cli)


def test_a_half_applied_migration_is_not_applied(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    write(
        migrations_dir,
        "006_split_emails.sql",
        "CREATE TABLE account_emails (account_id bigint NOT NULL REFERENCES accounts (id), email text NOT NULL);\n"
        "INSERT INTO account_emails SELECT id, email FROM accounts;\n"
        "ALTER TABLE accounts DROP COLUMN email;\n",
    )
    sql(db, "CREATE TABLE account_emails (account_id bigint NOT NULL REFERENCES accounts (id), email text NOT NULL)")
    found = claims(cli)
    assert ("missing_tracking", "006") not in found and ("partial_migration", "006") in found
    sql(db, "ALTER TABLE accounts DROP COLUMN email")
    assert ("missing_tracking", "006") in claims(cli)


def test_recover_runs_verify_scripts_read_only(cli, db, migrations_dir: Path):
    write(
        migrations_dir,
        "006_marks.sql",
        "CREATE TABLE verify_marks (at timestamptz DEFAULT now());\n"
        "CREATE FUNCTION mark_checked() RETURNS boolean LANGUAGE sql AS 'INSERT INTO verify_marks DEFAULT VALUES RETURNING false';\n",
    )
    write(migrations_dir, "007_x.sql", "UPDATE accounts SET id = id;\n")
    write(migrations_dir, "007_x.verify.sql", "SELECT mark_checked();\n")
    cli("db", "migrate", "--target", "006")
    sql(db, "DELETE FROM schema_migrations WHERE version = '006'")
    assert cli("db", "recover").exit_code == 0
    assert sql(db, "SELECT count(*) FROM verify_marks") == [(0,)]


SECOND_CLEAN_AFTER_MIGRATE = {
    "alter table if exists": "ALTER TABLE IF EXISTS legacy_users RENAME TO legacy_users_old;\nALTER TABLE IF EXISTS legacy ADD COLUMN x int;\n",
    "function moved without arguments": "CREATE FUNCTION price_with_tax(p integer) RETURNS integer LANGUAGE sql AS 'select p';\nALTER FUNCTION price_with_tax SET SCHEMA billing;\n",
    "temp table index and column": "CREATE TEMP TABLE plan_map (account_id bigint);\nCREATE INDEX plan_map_account_idx ON plan_map (account_id);\nALTER TABLE plan_map ADD COLUMN note text;\n",
    "$user on the path": 'CREATE SCHEMA AUTHORIZATION CURRENT_USER;\nSET search_path TO "$user", public;\nCREATE TABLE notes (id int);\n',
    "partition dropped with its parent": "CREATE TABLE events (at date NOT NULL) PARTITION BY RANGE (at);\nCREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');\nCREATE INDEX events_2024_at ON events_2024 (at);\nDROP TABLE events;\n",
    "owned sequence goes with its column": "CREATE TABLE orders (order_no bigint);\nCREATE SEQUENCE order_no_seq OWNED BY orders.order_no;\nALTER TABLE orders DROP COLUMN order_no;\n",
    "cascade takes functions and child tables": "CREATE TYPE mood AS ENUM ('sad');\nCREATE FUNCTION is_sad(m mood) RETURNS boolean LANGUAGE sql AS 'select true';\nCREATE TABLE parent_log (id int);\nCREATE TABLE child_log () INHERITS (parent_log);\nDROP TYPE mood CASCADE;\nDROP TABLE parent_log CASCADE;\n",
}


@pytest.mark.parametrize("text", SECOND_CLEAN_AFTER_MIGRATE.values(), ids=SECOND_CLEAN_AFTER_MIGRATE.keys())
def test_no_false_drift_second_review(cli, migrations_dir: Path, text):
    write(migrations_dir, "006_case.sql", text)
    result = cli("db", "migrate")
    assert result.exit_code == 0, result.output
    assert claims(cli) == set(), issues_of(cli)


def test_an_ordinary_error_is_not_a_lost_connection(cli, migrations_dir: Path):
    write(migrations_dir, "006_seq.sql", "CREATE SEQUENCE s;\nALTER SEQUENCE s OWNED BY billing.invoices.id;\n")
    result = cli("db", "migrate")
    assert result.exit_code == 1
    assert "lost the connection" not in result.output and "must be in same schema" in result.stdout


def test_other_tools_versions_are_not_lumped_together(cli, db):
    cli("db", "migrate")
    for version in ("V6__add_x", "", "2.1"):
        sql(
            db,
            "INSERT INTO schema_migrations (version, description, checksum, success) VALUES (%s, 'x', 'y', true)",
            (version,),
        )
    assert not [i for i in issues_of(cli) if i["type"] == "duplicate_version"]
