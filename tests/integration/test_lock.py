"""The migration lock: concurrent runs apply each migration once; a live holder is waited
for and named; a dead holder's lock row is reported at once, never waited on."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2

from reconciler.locking import advisory_key
from tests.conftest import run_process, sql, start_migrate, wait_for, write


def test_concurrent_processes_apply_each_migration_once(database_url: str, tmp_path: Path):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for i in range(1, 41):
        write(
            migrations,
            f"{i:03d}_table_{i}.sql",
            f"CREATE TABLE t{i} (id int PRIMARY KEY);\nINSERT INTO t{i} VALUES ({i});\n",
        )
    args = (
        "db",
        "migrate",
        "--database-url",
        database_url,
        "--migrations-dir",
        str(migrations),
        "--lock-timeout",
        "60",
    )
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: run_process(*args), range(6)))
    for result in results:
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
    conn = psycopg2.connect(database_url)
    counts = sql(conn, "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version")
    assert counts == [(f"{i:03d}", 1) for i in range(1, 41)]
    applied = sum(int(r.stdout.split("Applied ")[1].split(" ")[0]) for r in results if "Applied " in r.stdout)
    assert applied == 40
    conn.close()


def test_live_holder_is_waited_for_then_named(cli, db, database_url: str):
    assert cli("db", "create-schema").exit_code == 0
    holder = psycopg2.connect(database_url, application_name="deploy-bot")
    holder.autocommit = True
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s), pg_backend_pid()", (advisory_key("public"),))
        holder_pid = cur.fetchone()[1]
    try:
        started = time.monotonic()
        result = cli("db", "migrate", "--lock-timeout", "1")
        waited = time.monotonic() - started
    finally:
        holder.close()
    assert result.exit_code == 1
    assert "migration system is locked: waited 1s" in result.stderr
    assert f"backend pid {holder_pid}, application deploy-bot" in result.stderr
    assert waited >= 0.9
    assert sql(db, "SELECT count(*) FROM schema_migrations") == [(0,)]
    # Once the holder is gone, the next run proceeds.
    assert cli("db", "migrate", "--lock-timeout", "1").exit_code == 0


def test_lock_row_of_a_dead_run_is_reported_at_once(cli, db):
    assert cli("db", "create-schema").exit_code == 0
    sql(
        db,
        "UPDATE schema_migrations_lock SET locked = true, locked_at = now() - interval '5 minutes', "
        "locked_by = 'ci-runner-7:4242', backend_pid = 999999, application_name = 'poststack'",
    )
    started = time.monotonic()
    result = cli("db", "migrate", "--lock-timeout", "30")
    assert time.monotonic() - started < 10  # not waited on
    assert result.exit_code == 1
    assert "migration system is locked: held by ci-runner-7:4242 (backend pid 999999" in result.stderr
    assert "not alive" in result.stderr and "age 300s" in result.stderr
    assert sql(db, "SELECT count(*) FROM schema_migrations") == [(0,)]


def test_killed_run_leaves_a_lock_row_that_is_reported(database_url: str, tmp_path: Path, db):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_first.sql", "CREATE TABLE first (id int);\n")
    write(migrations, "002_slow.sql", "CREATE TABLE slow (id int);\nSELECT pg_sleep(1.5);\n")
    proc = start_migrate(database_url, migrations)
    wait_for(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%%SELECT pg_sleep(1.5)%%' AND state = 'active'",
        [(1,)],
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The server notices the dead client when the sleep ends, and rolls 002 back.
    wait_for(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'poststack'",
        [(0,)],
    )
    assert sql(db, "SELECT version FROM schema_migrations") == [("001",)]
    assert sql(db, "SELECT to_regclass('slow')") == [(None,)]
    result = run_process("db", "migrate", "--database-url", database_url, "--migrations-dir", str(migrations))
    assert result.exit_code == 1
    assert "migration system is locked: held by" in result.stderr and "not alive" in result.stderr
    assert "unlock-migrations" in result.stderr
