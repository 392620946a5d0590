"""Through PgBouncer (Debian's package, 1.18 on Debian 12), started by the test between
poststack and the server (docs/poolers.md).

In transaction pooling mode a session-level advisory lock is not the run's own, so
``db migrate`` takes the lock's key for each migration's transaction and checks the
migration's rows under it: concurrent runs apply each migration exactly once, and a killed
one leaves nothing half-applied. Every command that needs a session of its own refuses in
one sentence before it changes anything; reads (diagnose, status, validate, plan) work.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest

from reconciler import db as dbmod
from reconciler.config import DEFAULT_TRACKING, resolve_settings
from reconciler.observed.locking import advisory_key
from tests.conftest import catalog_snapshot, run_cli, run_process, sql, start_process, wait_for, write
from tests.integration import pgbouncer

pytestmark = pytest.mark.skipif(
    pgbouncer.find_binary() is None,
    reason="pgbouncer is not installed (apt-get install pgbouncer; .ci/run installs it)",
)


@pytest.fixture
def bouncer(database_url: str) -> Iterator[pgbouncer.Bouncer]:
    """PgBouncer in transaction pooling mode in front of this test's server."""
    with pgbouncer.running(database_url) as running:
        yield running


@pytest.fixture
def pooled_url(bouncer: pgbouncer.Bouncer, database_url: str) -> str:
    return bouncer.url(database_url)


def _migrations(directory: Path, count: int = 3, sleep: float = 0.0) -> None:
    """``count`` migrations, each logging itself in ``applied_log``: applied twice, it shows twice."""
    directory.mkdir(exist_ok=True)
    write(
        directory, "000_log.sql", "CREATE TABLE applied_log (version text, at timestamptz DEFAULT clock_timestamp());\n"
    )
    for i in range(1, count + 1):
        pause = f"SELECT pg_sleep({sleep});\n" if sleep else ""
        write(
            directory,
            f"{i:03d}_step_{i}.sql",
            f"CREATE TABLE t{i} (id int PRIMARY KEY);\n{pause}INSERT INTO applied_log (version) VALUES ('{i:03d}');\n",
        )


def _each_once(database_url: str, count: int) -> None:
    conn = psycopg2.connect(database_url)
    try:
        versions = [f"{i:03d}" for i in range(count + 1)]
        tracked = sql(conn, "SELECT version, count(*) FROM schema_migrations WHERE success GROUP BY 1 ORDER BY 1")
        assert tracked == [(v, 1) for v in versions]
        assert sql(conn, "SELECT count(*) FROM schema_migrations WHERE NOT success") == [(0,)]
        logged = sql(conn, "SELECT version, count(*) FROM applied_log GROUP BY 1 ORDER BY 1")
        assert logged == [(v, 1) for v in versions[1:]]
        # No lock row is taken through transaction pooling: there is no session to name.
        assert sql(conn, "SELECT locked FROM schema_migrations_lock") == [(False,)]
    finally:
        conn.close()


def _with_options(url: str) -> str:
    """``url`` asking, at startup, for the search_path tenant_a (as a tenant target does)."""
    return url + ("&" if "?" in url else "?") + "options=-csearch_path%3Dtenant_a"


def _migrate(url: str, migrations: Path, *extra: str) -> list[str]:
    return ["db", "migrate", "--database-url", url, "--migrations-dir", str(migrations), *extra]


def _pooling(url: str, tmp_path: Path, env: dict[str, str] | None = None) -> dbmod.Pooling:
    settings = resolve_settings(database_url=url, environ=env or {}, cwd=tmp_path)
    with dbmod.connect(settings) as session:
        return session.pooling


# --- detection -------------------------------------------------------------------------------


def test_transaction_pooling_is_detected(pooled_url: str, database_url: str, tmp_path: Path):
    assert _pooling(pooled_url, tmp_path) == dbmod.Pooling("transaction", "detected")
    assert _pooling(database_url, tmp_path) == dbmod.Pooling("session", "detected")


def test_session_pooling_is_not_mistaken_for_it(database_url: str, tmp_path: Path):
    with pgbouncer.running(database_url, pool_mode="session") as bouncer:
        assert _pooling(bouncer.url(database_url), tmp_path) == dbmod.Pooling("session", "detected")


def test_told_is_believed_without_asking(database_url: str, tmp_path: Path):
    told = _pooling(database_url, tmp_path, {"POSTSTACK_POOLER": "transaction"})
    assert told == dbmod.Pooling("transaction", "POSTSTACK_POOLER")
    assert told.describe() == 'transaction pooling (pooler = "transaction" in POSTSTACK_POOLER)'


def test_detection_is_asked_once_and_only_when_needed(pooled_url: str, bouncer: pgbouncer.Bouncer, tmp_path: Path):
    """migration-status only reads: it never opens the probe's second connection."""
    migrations = tmp_path / "migrations"
    _migrations(migrations, 1)
    before = bouncer.log_text().count("login attempt")
    result = run_cli("db", "migration-status", "--database-url", pooled_url, "--migrations-dir", str(migrations))
    assert result.exit_code == 0, result.output
    assert bouncer.log_text().count("login attempt") - before == 1


# --- db migrate ------------------------------------------------------------------------------


def test_migrate_applies_each_migration_once(pooled_url: str, database_url: str, tmp_path: Path):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 3)
    result = run_cli(*_migrate(pooled_url, migrations))
    assert result.exit_code == 0, result.output
    assert "Applied 4 migration(s): 000, 001, 002, 003" in result.stdout
    _each_once(database_url, 3)
    again = run_cli(*_migrate(pooled_url, migrations))
    assert again.exit_code == 0, again.output
    assert "Database is up to date" in again.stdout
    _each_once(database_url, 3)


def test_concurrent_migrates_apply_each_migration_exactly_once(pooled_url: str, database_url: str, tmp_path: Path):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 6, sleep=0.2)
    args = _migrate(pooled_url, migrations, "--lock-timeout", "60")
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: run_process(*args), range(3)))
    for result in results:
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
    _each_once(database_url, 6)
    assert all(r.stdout.startswith("✅ ") for r in results)
    applied = [
        v
        for r in results
        if "Applied " in r.stdout
        for v in r.stdout.split(": ", 1)[1].split(";")[0].split(" (")[0].split(", ")
    ]
    assert sorted(applied) == [f"{i:03d}" for i in range(7)]  # each by one run, none by two


def test_a_run_that_waited_skips_what_another_applied_meanwhile(pooled_url: str, database_url: str, tmp_path: Path):
    """The second run planned 001 while the first was applying it: under the lock it finds
    001 recorded and skips it, saying so, in words and in JSON (outcome skipped)."""
    from jsonschema import Draft202012Validator

    migrations = tmp_path / "migrations"
    _migrations(migrations, 2)
    write(
        migrations,
        "001_step_1.sql",
        "CREATE TABLE t1 (id int PRIMARY KEY);\nSELECT pg_sleep(1.5);\nINSERT INTO applied_log (version) VALUES ('001');\n",
    )
    assert run_cli(*_migrate(pooled_url, migrations, "--target", "000")).exit_code == 0
    first = start_process(*_migrate(pooled_url, migrations))
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    try:
        wait_for(conn, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(1.5)'", [(1,)])
        second = run_cli(*_migrate(pooled_url, migrations, "--format", "json"))
        out, err = first.communicate(timeout=60)
    finally:
        conn.close()
    assert first.returncode == 0, out + err
    assert second.exit_code == 0, second.output
    result = json.loads(second.stdout)
    schema = json.loads((Path(__file__).parents[2] / "schemas" / "run-result.schema.json").read_text())
    Draft202012Validator(schema).validate(result)
    outcomes = {o["version"]: o["outcome"] for o in result["outcomes"]}
    assert outcomes["001"] == "skipped"
    _each_once(database_url, 2)


def test_a_failing_migration_is_recorded_and_nothing_of_it_kept(pooled_url: str, database_url: str, tmp_path: Path):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 1)
    write(migrations, "002_bad.sql", "CREATE TABLE t2 (id int);\nSELECT 1/0;\n")
    result = run_cli(*_migrate(pooled_url, migrations))
    assert result.exit_code == 1, result.output
    assert "Migration 002 failed" in result.stderr + result.stdout
    conn = psycopg2.connect(database_url)
    assert sql(conn, "SELECT version, success FROM schema_migrations ORDER BY id") == [
        ("000", True),
        ("001", True),
        ("002", False),
    ]
    assert sql(conn, "SELECT to_regclass('t2')") == [(None,)]
    conn.close()


def test_a_direct_run_and_pooled_runs_exclude_each_other(pooled_url: str, database_url: str, tmp_path: Path):
    """A run connected directly holds the session-level lock; the pooled runs' transactions
    take the same key, so they wait for it, and it for them."""
    migrations = tmp_path / "migrations"
    _migrations(migrations, 5, sleep=0.2)
    runs = [
        _migrate(database_url, migrations, "--lock-timeout", "60"),
        _migrate(pooled_url, migrations, "--lock-timeout", "60"),
        _migrate(pooled_url, migrations, "--lock-timeout", "60"),
    ]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda argv: run_process(*argv), runs))
    for result in results:
        assert result.exit_code == 0, result.output
    _each_once(database_url, 5)


def test_a_pooled_run_waits_for_a_session_lock_and_names_its_holder(pooled_url: str, database_url: str, tmp_path: Path):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 1)
    holder = psycopg2.connect(database_url, application_name="deploy-bot")
    holder.autocommit = True
    try:
        sql(holder, "SELECT pg_advisory_lock(%s)", (advisory_key(DEFAULT_TRACKING),))
        result = run_cli(*_migrate(pooled_url, migrations, "--lock-timeout", "1"))
    finally:
        holder.close()
    assert result.exit_code == 1, result.output
    assert "migration system is locked: waited 1s; backend pid" in result.stderr
    assert "application deploy-bot" in result.stderr
    conn = psycopg2.connect(database_url)
    assert sql(conn, "SELECT to_regclass('t1')") == [(None,)]
    conn.close()


def test_a_concurrent_index_build_is_refused_before_anything_runs(pooled_url: str, database_url: str, tmp_path: Path):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 1)
    path = write(migrations, "002_index.sql", "CREATE INDEX CONCURRENTLY t1_id ON t1 (id);\n")
    conn = psycopg2.connect(database_url)
    before = catalog_snapshot(conn)
    result = run_cli(*_migrate(pooled_url, migrations))
    assert result.exit_code == 3, result.output
    first = result.stderr.splitlines()[0]
    assert first == (
        f"❌ {path} cannot run in a transaction (line 1: CREATE INDEX CONCURRENTLY cannot run inside a transaction "
        "block), and through transaction pooling (detected) poststack runs every step in one: nothing was run"
    )
    assert catalog_snapshot(conn) == before  # not even the tracking tables
    conn.close()


def test_a_killed_migrate_is_completed_by_the_next_with_nothing_applied_twice(
    pooled_url: str, database_url: str, tmp_path: Path
):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 3)
    write(
        migrations,
        "002_step_2.sql",
        "CREATE TABLE t2 (id int PRIMARY KEY);\nSELECT pg_sleep(2);\nINSERT INTO applied_log (version) VALUES ('002');\n",
    )
    proc = start_process(*_migrate(pooled_url, migrations))
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    try:
        wait_for(conn, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(2)'", [(1,)])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # The server rolls the migration back once its backend notices the client is gone.
        result = run_cli(*_migrate(pooled_url, migrations, "--lock-timeout", "30"))
        assert result.exit_code == 0, result.output
        assert "Applied 2 migration(s): 002, 003" in result.stdout
        _each_once(database_url, 3)
    finally:
        if proc.poll() is None:
            proc.kill()
        conn.close()


def test_told_transaction_pooling_migrates_per_transaction_on_a_direct_connection(database_url: str, tmp_path: Path):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 2)
    env = {"POSTSTACK_POOLER": "transaction"}
    result = run_cli(*_migrate(database_url, migrations), env=env)
    assert result.exit_code == 0, result.output
    _each_once(database_url, 2)


def test_statement_pooling_is_refused(database_url: str, tmp_path: Path):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 1)
    with pgbouncer.running(database_url, pool_mode="statement") as bouncer:
        result = run_cli(*_migrate(bouncer.url(database_url), migrations))
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith(
        "❌ poststack reads and writes in transactions of several statements, which statement pooling does not "
        "allow on "
    )


# --- what needs a session is refused in one sentence ------------------------------------------


@pytest.mark.parametrize(
    ("argv", "command", "needs"),
    [
        (("db", "rollback", "000"), "db rollback", "needs a session-level lock"),
        (("db", "create-schema"), "db create-schema", "needs a session-level lock"),
        (("db", "recover"), "db recover", "needs a session-level lock"),
        (("db", "backup"), "db backup", "needs the session settings pg_dump makes before it reads"),
    ],
)
def test_what_needs_a_session_refuses_in_one_sentence_and_changes_nothing(
    argv: tuple[str, ...], command: str, needs: str, pooled_url: str, database_url: str, tmp_path: Path
):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 2)
    assert run_cli(*_migrate(database_url, migrations)).exit_code == 0
    conn = psycopg2.connect(database_url)
    sql(conn, "DELETE FROM schema_migrations WHERE version = '002'")  # something for repair to track
    conn.commit()
    before = catalog_snapshot(conn)
    result = run_cli(*argv, "--database-url", pooled_url, "--migrations-dir", str(migrations))
    assert result.exit_code == 3, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"❌ {command} {needs}, which transaction pooling (detected) does not keep on ")
    assert lines[0].endswith(": connect to PostgreSQL directly or through a session-pooling pool")
    assert "Traceback" not in result.output
    assert catalog_snapshot(conn) == before
    conn.close()


def test_session_pooling_serves_what_needs_a_session(database_url: str, tmp_path: Path):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 2)
    write(migrations, "002_step_2.rollback.sql", "DROP TABLE t2;\nDELETE FROM applied_log WHERE version = '002';\n")
    with pgbouncer.running(database_url, pool_mode="session") as bouncer:
        url = bouncer.url(database_url)
        assert run_cli(*_migrate(url, migrations)).exit_code == 0
        result = run_cli("db", "rollback", "001", "--database-url", url, "--migrations-dir", str(migrations))
    assert result.exit_code == 0, result.output
    conn = psycopg2.connect(database_url)
    assert sql(conn, "SELECT max(version) FROM schema_migrations") == [("001",)]
    conn.close()


# --- reads ------------------------------------------------------------------------------------


def test_diagnose_and_the_other_reads_work_through_it(pooled_url: str, database_url: str, tmp_path: Path):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 3)
    assert run_cli(*_migrate(database_url, migrations, "--target", "001")).exit_code == 0
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    # 002 was run by hand, untracked: diagnose tells it from the replayed history.
    sql(conn, "CREATE TABLE t2 (id int PRIMARY KEY); INSERT INTO applied_log (version) VALUES ('002')")
    common = ("--database-url", pooled_url, "--migrations-dir", str(migrations))
    result = run_cli("db", "diagnose", "--format", "json", *common)
    report = json.loads(result.stdout)
    assert report["database_state"]["replay"]["used"], result.stderr
    high = [(i["type"], i["version"]) for i in report["issues"] if i["severity"] == "high"]
    assert high == [("missing_tracking", "002")]
    for argv in (("db", "migration-status"), ("db", "validate"), ("plan",), ("db", "migrate", "--dry-run")):
        read = run_cli(*argv, *common)
        assert "Traceback" not in read.output
        assert read.exit_code in (0, 1), read.output  # 1: what they found (002 untracked)
        assert "needs a session" not in read.output


def test_diagnose_runs_beside_concurrent_migrates(pooled_url: str, database_url: str, tmp_path: Path):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 4, sleep=0.2)
    migrate = _migrate(pooled_url, migrations, "--lock-timeout", "60")
    diagnose = ("db", "diagnose", "--no-replay", "--database-url", pooled_url, "--migrations-dir", str(migrations))
    with ThreadPoolExecutor(3) as pool:
        runs = [pool.submit(run_process, *migrate), pool.submit(run_process, *migrate)]
        looks = [pool.submit(run_process, *diagnose) for _ in range(3)]
        results = [f.result() for f in runs]
        seen = [f.result() for f in looks]
    for result in results:
        assert result.exit_code == 0, result.output
    for look in seen:
        assert "Traceback" not in look.output and "internal error" not in look.output, look.output
    _each_once(database_url, 4)


# --- startup options (a tenant's search_path) ---------------------------------------------------


def test_startup_options_are_refused_through_transaction_pooling(database_url: str, tmp_path: Path):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 1)
    with pgbouncer.running(database_url, extra="ignore_startup_parameters = options\n") as bouncer:
        url = _with_options(bouncer.url(database_url))
        # Detected: PgBouncer 1.18 keeps no startup options, so the session's search_path says so.
        result = run_cli(*_migrate(url, migrations))
        assert result.exit_code == 3, result.output
        assert "the connection asks for search_path tenant_a in its startup options, but the server session" in (
            result.stderr
        )
        # Told: refused before anything is read.
        told = run_cli(*_migrate(url, migrations), env={"POSTSTACK_POOLER": "transaction"})
    assert told.exit_code == 3, told.output
    assert told.stderr.startswith(
        "❌ the connection's startup options (search_path=tenant_a) need a server session of its own, which "
        "transaction pooling ("
    )
    assert "the pooler setting comes from POSTSTACK_POOLER" in told.stderr


def test_startup_options_a_pooler_drops_are_refused(database_url: str, tmp_path: Path):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 1)
    extra = "ignore_startup_parameters = options\n"
    with pgbouncer.running(database_url, pool_mode="session", extra=extra) as bouncer:
        url = _with_options(bouncer.url(database_url))
        result = run_cli(*_migrate(url, migrations))
    assert result.exit_code == 3, result.output
    assert "the connection asks for search_path tenant_a in its startup options, but the server session" in (
        result.stderr
    )
    assert "something in between dropped the options" in result.stderr


def test_startup_options_a_pooler_refuses_say_why(pooled_url: str, tmp_path: Path):
    migrations = tmp_path / "migrations"
    _migrations(migrations, 1)
    result = run_cli(*_migrate(_with_options(pooled_url), migrations))
    assert result.exit_code == 3, result.output
    assert "unsupported startup parameter: options" in result.stderr
    assert "A connection pooler in between refused a setting the connection asks for at startup" in result.stderr


def test_startup_options_kept_by_a_direct_connection_are_used(database_url: str, tmp_path: Path):
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    sql(conn, "CREATE SCHEMA tenant_a")
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_t.sql", "CREATE TABLE t (id int);\n")
    result = run_cli(*_migrate(_with_options(database_url), migrations, "--schema", "tenant_a"))
    assert result.exit_code == 0, result.output
    assert sql(conn, "SELECT to_regclass('tenant_a.t') IS NOT NULL") == [(True,)]
    conn.close()
