"""Diagnosis on replay, through the commands: a churny history applied by hand in parts,
tracked in parts, edited by hand; what each verdict says and on what basis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import psycopg2

from tests.conftest import PASSWORD, PASSWORD_ROLE, REPO, Server, run_cli, sql, write
from tests.layouts.histories import write_history


def _project(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    directory = tmp_path / "migrations"
    versions = write_history("poststack", directory)

    def cli(*args: str, url: str = database_url):  # type: ignore[no-untyped-def]
        return run_cli(*args, "--database-url", url, "--migrations-dir", str(directory))

    return directory, versions, cli


def _by_hand(db, directory: Path, *versions: str) -> None:  # type: ignore[no-untyped-def]
    for version in versions:
        (path,) = [p for p in directory.glob(f"{version}_*.sql") if p.name.count(".") == 1]
        text = path.read_text()
        if any(line.strip() and not line.lstrip().startswith("--") for line in text.splitlines()):
            sql(db, text)  # a comment-only file sends nothing, as psql sends nothing


def _report(cli, *args: str) -> dict:  # type: ignore[no-untyped-def]
    result = cli("db", "diagnose", "--format", "json", *args)
    report = json.loads(result.stdout)
    schema = json.loads((REPO / "schemas" / "diagnose-report.schema.json").read_text())
    jsonschema.validate(report, schema)
    return report


def _claims(report: dict) -> dict[str, str]:
    return {i["version"]: i["details"]["evidence"] for i in report["issues"] if i["type"] == "missing_tracking"}


def test_a_whole_churny_history_applied_by_hand_is_recognized(database_url: str, db, tmp_path: Path):
    directory, versions, cli = _project(tmp_path, database_url)
    _by_hand(db, directory, *versions)
    parsed = _claims(_report(cli, "--no-replay"))
    report = _report(cli)
    claims = _claims(report)
    assert report["database_state"]["replay"]["used"] and report["database_state"]["replay"]["replayed"] == 9
    # Every migration that changes the schema, by its replayed changes; the data migration
    # between two of them by order; the comment-only file is a no-op, not a claim.
    assert claims == {
        "001": "replay",
        "002": "replay",
        "003": "order",
        "005": "replay",
        "006": "replay",
        "007": "replay",
        "008": "replay",
        "009": "replay",
    }
    # The function replaced twice and the enum grown were beyond the parsed SQL.
    assert {"007", "008"} - set(parsed) == {"007", "008"}
    # recover tracks what the replay shows, and leaves the order-only one for a person.
    recovered = cli("db", "recover")
    assert recovered.exit_code == 0, recovered.output
    assert "Added tracking for migrations 001, 002, 005, 006, 007, 008, 009" in recovered.stdout
    assert "shown applied by order only" in recovered.stdout and "003" in recovered.stdout
    assert sql(db, "SELECT count(*) FROM users WHERE full_name = 'admin'") == [(1,)]
    held = cli("db", "migrate")
    assert held.exit_code == 1 and "Migration 003 is pending but older than applied migration 009" in held.stderr
    assert cli("db", "recover", "--trust-order").exit_code == 0
    # Only the comment-only file runs (a no-op): the seed never ran twice.
    assert cli("db", "migrate").stdout.startswith("✅ Applied 1 migration(s): 004")
    assert sql(db, "SELECT count(*) FROM users WHERE full_name = 'admin'") == [(1,)]


def test_tracked_hand_applied_and_pending_interleaved(database_url: str, db, tmp_path: Path):
    directory, _versions, cli = _project(tmp_path, database_url)
    assert cli("db", "migrate", "--target", "005").exit_code == 0
    _by_hand(db, directory, "006", "007", "008")  # by hand; 009 is pending
    sql(db, "DELETE FROM schema_migrations WHERE version IN ('002', '005')")  # tracking lost in part
    claims = _claims(_report(cli))
    # The audit table remembers poststack ran 002 and 005; the replay shows 006-008.
    assert claims == {"002": "audit", "005": "audit", "006": "replay", "007": "replay", "008": "replay"}
    recovered = cli("db", "recover")
    assert recovered.exit_code == 0, recovered.output
    migrated = cli("db", "migrate")
    assert migrated.exit_code == 0, migrated.output
    assert "Applied 1 migration(s): 009" in migrated.stdout


def test_a_changed_object_is_not_evidence_and_tracked_drift_shows_both_definitions(
    database_url: str, db, tmp_path: Path
):
    _directory, _versions, cli = _project(tmp_path, database_url)
    assert cli("db", "migrate").exit_code == 0
    sql(db, "ALTER TABLE users ALTER COLUMN email TYPE varchar(200)")
    sql(db, "CREATE OR REPLACE FUNCTION user_count() RETURNS bigint LANGUAGE sql AS 'SELECT 42::bigint'")
    sql(db, "DROP INDEX IF EXISTS users_email_idx")
    report = _report(cli, "--type", "missing_objects")
    drift = {i["version"]: i for i in report["issues"]}
    assert set(drift) == {"002", "009"}
    (email,) = drift["002"]["details"]["objects_changed"]
    assert email == {"object": "column public.users.email", "expected": "text", "found": "character varying(200)"}
    (count,) = drift["009"]["details"]["objects_changed"]
    assert count["object"] == "function public.user_count()"
    assert "archived" in count["expected"] and "42" in count["found"]
    assert (
        drift["009"]["message"] == "Migration 009 is tracked as applied but 1 of its objects differs from what it made"
    )
    # Without replay, only missing objects count: names, not definitions.
    assert _report(cli, "--no-replay", "--type", "missing_objects")["issues"] == []


def test_a_function_body_edited_makes_a_saved_plan_stale(database_url: str, db, tmp_path: Path):
    _directory, _versions, cli = _project(tmp_path, database_url)
    assert cli("db", "migrate", "--target", "008").exit_code == 0
    assert cli("plan", "--out", str(tmp_path / "p.json")).exit_code == 0
    sql(db, "CREATE OR REPLACE FUNCTION user_count() RETURNS bigint LANGUAGE sql AS 'SELECT 7::bigint'")
    stale = cli("apply", str(tmp_path / "p.json"))
    assert stale.exit_code == 1 and "stale" in stale.output
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '009'") == [(0,)]


def test_the_second_diagnose_reads_the_cache_and_an_edit_replays_from_it_on(database_url: str, db, tmp_path: Path):
    directory, _versions, cli = _project(tmp_path, database_url)
    cold = _report(cli)["database_state"]["replay"]
    assert cold["from_cache"] is False and cold["catalog_reads"] == "incremental"  # the tests' role is a superuser
    warm = _report(cli)["database_state"]["replay"]
    assert warm["from_cache"] is True and warm["catalog_reads"] == "none"
    path = next(directory.glob("008_*.sql"))
    path.write_text(path.read_text() + "-- reviewed\n")
    replay = _report(cli)["database_state"]["replay"]
    assert replay["from_cache"] is False and replay["replayed"] == 9
    assert replay["reused_states"] == 8  # the start and 001-007: only 008 and 009 were replayed
    (cached,) = (tmp_path / ".poststack" / "replay").rglob("*.json")  # one file a history
    assert len(json.loads(cached.read_text())["steps"]) == 9


def test_a_migration_the_shadow_cannot_run_stops_the_replay_there(database_url: str, db, tmp_path: Path):
    directory, versions, cli = _project(tmp_path, database_url)
    write(directory, "010_ext.sql", "CREATE EXTENSION no_such_extension_here;\n")
    _by_hand(db, directory, *versions)
    result = cli("db", "diagnose", "--format", "json")
    report = json.loads(result.stdout)
    stopped = report["database_state"]["replay"]["stopped_at"]
    assert stopped["version"] == "010" and "010_ext.sql:1" in stopped["reason"]
    assert "The replay stopped at migration 010" in result.stderr
    assert "008" in _claims(report)  # what came before it is judged on replay still


def test_a_role_that_may_not_create_databases_replays_on_the_shadow_url(
    pg_server: Server, database_url: str, db, tmp_path: Path
):
    from sqlalchemy.engine import make_url

    name = make_url(database_url).database
    sql(db, f"GRANT ALL ON SCHEMA public TO {PASSWORD_ROLE}")
    directory, _versions, _cli = _project(tmp_path, database_url)
    target = pg_server.url_for(name, user=PASSWORD_ROLE, password=PASSWORD)
    conn = psycopg2.connect(target)
    conn.autocommit = True
    _by_hand(conn, directory, "001", "002")
    conn.close()
    # No CREATEDB, no shadow named: the embedded server is not started in tests; say so.
    shadow = pg_server.admin_url
    result = run_cli(
        "db",
        "diagnose",
        "--format",
        "json",
        "--database-url",
        target,
        "--migrations-dir",
        str(directory),
        "--shadow-url",
        shadow,
    )
    replay = json.loads(result.stdout)["database_state"]["replay"]
    assert replay["used"] and replay["shadow"].startswith("a scratch database on the shadow server")
    assert PASSWORD not in result.output
    assert _claims(json.loads(result.stdout)) == {"001": "replay", "002": "replay"}


def test_a_bad_shadow_url_is_one_line(database_url: str, tmp_path: Path):
    _directory, _versions, cli = _project(tmp_path, database_url)
    result = cli("db", "diagnose", "--shadow-url", "mysql://nope")
    assert result.exit_code == 2 and "--shadow-url is not a postgresql:// URL" in result.stderr
    # A shadow named on purpose that cannot be reached is an error, not a quiet fallback.
    unreachable = cli("db", "diagnose", "--format", "json", "--shadow-url", "postgresql://nobody:pw@127.0.0.1:1/x")
    assert unreachable.exit_code == 3 and unreachable.stdout == ""
    assert "the shadow database: cannot connect to postgresql://nobody:***@127.0.0.1:1/x" in unreachable.stderr


def _files(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        write(directory, name, text)


def _simple(tmp_path: Path, database_url: str, files: dict[str, str]):  # type: ignore[no-untyped-def]
    directory = tmp_path / "migrations"
    _files(directory, files)

    def cli(*args: str):  # type: ignore[no-untyped-def]
        return run_cli(*args, "--database-url", database_url, "--migrations-dir", str(directory))

    return directory, cli


def test_a_late_merged_migration_that_a_later_one_made_again_alike_is_not_proved(database_url: str, db, tmp_path: Path):
    # 003 was merged late and never ran; 004 (tracked) made the same table, IF NOT EXISTS. In
    # the replay 004 changed nothing, yet it is what made the table here.
    directory, cli = _simple(
        tmp_path,
        database_url,
        {
            "001_a.sql": "CREATE TABLE a (id int);\n",
            "002_b.sql": "CREATE TABLE b (id int);\n",
            "004_audit.sql": "CREATE TABLE IF NOT EXISTS audit_log (id int, note text);\n"
            "CREATE VIEW audit_notes AS SELECT note FROM audit_log;\n",
        },
    )
    assert cli("db", "migrate").exit_code == 0
    write(
        directory,
        "003_audit.sql",
        "CREATE TABLE IF NOT EXISTS audit_log (id int, note text);\nINSERT INTO audit_log VALUES (1, 'first');\n",
    )
    claims = _claims(_report(cli))
    assert claims.get("003") != "replay"
    recovered = cli("db", "recover")
    assert "003" not in recovered.stdout.split("Added tracking for migrations")[-1].split("\n")[0]
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '003'") == [(0,)]


def test_what_comes_after_a_replay_stop_still_counts(database_url: str, db, tmp_path: Path):
    # 002 never ran; 004 (after the stop) dropped the column 002 would have added, by hand.
    _directory, cli = _simple(
        tmp_path,
        database_url,
        {
            "001_a.sql": "CREATE TABLE a (id int);\n",
            "002_flag.sql": "ALTER TABLE a ADD COLUMN flag boolean;\nCREATE INDEX a_flag ON a (flag);\n",
            "003_ext.sql": "CREATE EXTENSION no_such_extension_here;\n",
            "004_unflag.sql": "ALTER TABLE a DROP COLUMN IF EXISTS flag;\nCREATE INDEX IF NOT EXISTS a_flag ON a (id);\n",
        },
    )
    sql(db, "CREATE TABLE a (id int); CREATE INDEX a_flag ON a (id)")  # 001 and 004, by hand
    report = _report(cli)
    assert report["database_state"]["replay"]["stopped_at"]["version"] == "003"
    claims = _claims(report)
    assert "002" not in claims  # its index name is live, but 004 (not replayed) makes it too


def test_allow_out_of_order_does_not_run_what_probably_ran(database_url: str, db, tmp_path: Path):
    _directory, cli = _simple(
        tmp_path,
        database_url,
        {
            "001_a.sql": "CREATE TABLE a (id int, n int);\nINSERT INTO a VALUES (1, 0);\n",
            "002_bump.sql": "UPDATE a SET n = n + 1;\n",
            "003_b.sql": "CREATE TABLE b (id int);\n",
        },
    )
    assert cli("db", "migrate").exit_code == 0
    sql(db, "DROP TABLE schema_migrations, schema_migrations_lock, schema_migrations_audit")
    assert cli("db", "recover").exit_code == 0
    applied = cli("apply", "--auto-approve", "--allow-out-of-order")
    assert applied.exit_code == 1 and "poststack apply --allow-undetermined" in applied.stdout
    assert sql(db, "SELECT n FROM a") == [(1,)]  # the bump never ran twice


def test_without_createdb_or_a_named_shadow_the_embedded_server_replays_and_is_stopped_again(
    pg_server: Server, database_url: str, db, tmp_path: Path
):
    from sqlalchemy.engine import make_url

    from reconciler import embedded

    sql(db, f"GRANT ALL ON SCHEMA public TO {PASSWORD_ROLE}")
    directory, _versions, _cli = _project(tmp_path, database_url)
    target = pg_server.url_for(make_url(database_url).database, user=PASSWORD_ROLE, password=PASSWORD)
    conn = psycopg2.connect(target)
    conn.autocommit = True
    _by_hand(conn, directory, "001", "002")
    conn.close()
    result = run_cli("db", "diagnose", "--format", "json", "--database-url", target, "--migrations-dir", str(directory))
    assert result.stdout, f"exit {result.exit_code}: {result.stderr}"
    replay = json.loads(result.stdout)["database_state"]["replay"]
    assert replay["used"] and replay["shadow"] == "a scratch database on the embedded server"
    assert "replaying on the embedded server" in result.stderr
    (server,) = sql(db, "SELECT current_setting('server_version_num')::int / 10000")[0]
    if server == embedded.bundled_major():
        assert _claims(json.loads(result.stdout)) == {"001": "replay", "002": "replay"}
    else:  # another major prints definitions otherwise: the parsed SQL decides, and it says so
        assert "judged from the parsed SQL alone" in result.stderr
        assert _claims(json.loads(result.stdout)) == {"001": "catalog", "002": "catalog"}
    # It was started for the replay, so it is stopped again: nothing left running.
    assert not embedded.status(tmp_path / ".poststack" / "pgdata").running


def test_lint_without_createdb_where_the_embedded_server_cannot_go_lints_from_the_sql(
    pg_server: Server, database_url: str, db, tmp_path: Path
):
    """No CREATEDB, no shadow named, and no room for the embedded server (a read-only
    checkout; here a file where .poststack/ goes): nothing is measured, and lint says why."""
    from sqlalchemy.engine import make_url

    sql(db, f"GRANT ALL ON SCHEMA public TO {PASSWORD_ROLE}")
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_t.sql", "CREATE TABLE t (id int);\n")
    target = pg_server.url_for(make_url(database_url).database, user=PASSWORD_ROLE, password=PASSWORD)
    assert run_cli("db", "migrate", "--database-url", target, "--migrations-dir", str(migrations)).exit_code == 0
    sql(db, "INSERT INTO t SELECT generate_series(1, 100); ANALYZE t")
    write(migrations, "002_index.sql", "CREATE INDEX t_id ON t (id);\n")
    shutil.rmtree(tmp_path / ".poststack")  # what migrate kept there (desired.effects_cache)
    (tmp_path / ".poststack").write_text("")
    result = run_cli("db", "lint", "--format", "json", "--database-url", target, "--migrations-dir", str(migrations))
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert "cannot make" in (report["measured"]["unavailable"] or ""), report["measured"]
    assert [(f["code"], f["basis"]) for f in report["findings"]] == [("PS102", "static")]
