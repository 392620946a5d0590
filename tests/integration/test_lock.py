"""The migration lock: concurrent runs apply each migration once; a live holder is waited
for and named; a dead holder's lock row is reported at once, never waited on; a killed
run whose backend still runs its last statement is told apart from a live run, and is
either waited for or ended, never released blindly."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2

from reconciler.config import DEFAULT_TRACKING
from reconciler.observed.locking import advisory_key
from tests.conftest import (
    holding_advisory_lock,
    run_process,
    scratch_database,
    sql,
    start_migrate,
    start_process,
    wait_for,
    write,
)


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
        cur.execute("SELECT pg_advisory_lock(%s), pg_backend_pid()", (advisory_key(DEFAULT_TRACKING),))
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


def test_the_same_key_held_in_another_database_is_not_named(cli, database_url: str, pg_server, template_db):
    """Advisory locks belong to a database: a run on another database of the server holds
    the same key, and naming its backend would send someone to end a healthy run."""
    assert cli("db", "create-schema").exit_code == 0
    holders = []
    with scratch_database(pg_server, f"poststack_lock_other_{os.getpid()}", template_db) as other_url:
        try:
            for url, name in ((other_url, "elsewhere"), (database_url, "deploy-bot")):
                holder = psycopg2.connect(url, application_name=name)
                holder.autocommit = True
                with holder.cursor() as cur:
                    cur.execute("SELECT pg_advisory_lock(%s), pg_backend_pid()", (advisory_key(DEFAULT_TRACKING),))
                    holders.append((holder, cur.fetchone()[1]))
            result = cli("db", "migrate", "--lock-timeout", "0")
            assert result.exit_code == 1
            assert f"backend pid {holders[1][1]}, application deploy-bot" in result.stderr
            assert str(holders[0][1]) not in result.stderr and "elsewhere" not in result.stderr
        finally:
            for holder, _ in holders:
                holder.close()


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


def backend_running(query: str) -> str:
    """A poll: is a backend other than the test's running ``query`` (as an active statement)?"""
    return (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        f"AND state = 'active' AND query LIKE '%%{query}%%'"
    )


def kill_migrate_in(database_url: str, migrations: Path, db, statement: str) -> tuple[int, int]:
    """SIGKILL a db migrate while its backend runs ``statement``: (the process's pid, the backend's pid)."""
    proc = start_migrate(database_url, migrations)
    wait_for(db, backend_running(statement), [(1,)])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ((backend,),) = sql(db, "SELECT backend_pid FROM schema_migrations_lock WHERE locked")
    return proc.pid, backend


def _killed_while_blocked(
    database_url: str, tmp_path: Path, db, name: str, key: int
) -> tuple[Path, psycopg2.extensions.connection, int, int]:
    """A db migrate SIGKILLed while its 002 waits on advisory lock ``key``, which the returned
    connection holds: the backend stays busy exactly as long as the test needs (a pg_sleep
    could end while a slow machine runs the test's commands). Also the migrations directory,
    the killed process's pid and its backend's."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_first.sql", "CREATE TABLE first (id int);\n")
    # Its own lock_timeout off: poststack's (ddl_lock_timeout, 5 s) would end the wait, and
    # with it the backend, while a slow machine still runs the test's commands.
    write(
        migrations,
        f"002_{name}.sql",
        f"CREATE TABLE {name} (id int);\nSET LOCAL lock_timeout = 0;\nSELECT pg_advisory_xact_lock({key});\n",
    )
    blocker = psycopg2.connect(database_url)
    blocker.autocommit = True
    sql(blocker, f"SELECT pg_advisory_lock({key})")
    pid, backend = kill_migrate_in(database_url, migrations, db, f"SELECT pg_advisory_xact_lock({key})")
    return migrations, blocker, pid, backend


def test_killed_run_whose_backend_still_runs_is_told_apart_and_ended(database_url: str, tmp_path: Path, db):
    migrations, blocker, pid, backend = _killed_while_blocked(database_url, tmp_path, db, "slow", 4243)
    # The client is gone; its backend waits on until it next writes to it.
    assert sql(db, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (backend,)) == [(1,)]
    args = ("--database-url", database_url, "--migrations-dir", str(migrations))

    refused = run_process("db", "migrate", "--lock-timeout", "0", *args)
    assert refused.exit_code == 1, refused.output
    assert f"held by {socket.gethostname()}:{pid} (backend pid {backend}" in refused.stderr
    assert "that poststack process is gone" in refused.stderr
    assert (
        f"its backend pid {backend} is still running `" in refused.stderr
        and "pg_advisory_xact_lock(4243)` (for " in refused.stderr
    )
    assert "--confirm --wait" in refused.stderr and "--confirm --terminate" in refused.stderr
    assert "Another poststack run is migrating" not in refused.output

    report = json.loads(run_process("db", "diagnose", "--format", "json", *args).stdout)
    (issue,) = [i for i in report["issues"] if i["type"] == "stuck_lock"]
    assert issue["details"]["client_alive"] is False and issue["details"]["backend_alive"] is True
    assert "that poststack process is gone" in issue["message"]
    assert "--wait" in issue["suggested_fix"] and "--terminate" in issue["suggested_fix"]
    lock = report["database_state"]["lock"]
    assert (lock["client_alive"], lock["client_local"], lock["backend_alive"]) == (False, True, True)
    assert lock["backend_state"] == "active" and "SELECT pg_advisory_xact_lock(4243)" in lock["backend_query"]
    info = json.loads(run_process("db", "migration-info", "--format", "json", *args).stdout)["lock"]
    assert (info["client_alive"], info["backend_alive"], info["holder_alive"]) == (False, True, False)

    # Releasing the row while that backend runs is refused; both ways out are named.
    plain = run_process("db", "clean", "--locks", "--confirm", *args)
    assert plain.exit_code == 1 and "--wait" in plain.stderr and "--terminate" in plain.stderr
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(True,)]

    ended = run_process("db", "clean", "--locks", "--confirm", "--terminate", *args)
    assert ended.exit_code == 0, ended.output
    assert f"End backend {backend} and wait" in ended.stdout
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]
    assert sql(db, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (backend,)) == [(0,)]
    assert sql(db, "SELECT version FROM schema_migrations ORDER BY id") == [("001",)]
    assert sql(db, "SELECT to_regclass('slow')") == [(None,)]  # its transaction was rolled back

    blocker.close()
    write(migrations, "002_slow.sql", "CREATE TABLE slow (id int);\n")
    again = run_process("db", "migrate", *args)
    assert again.exit_code == 0, again.output
    assert sql(db, "SELECT version FROM schema_migrations ORDER BY id") == [("001",), ("002",)]


def test_wait_releases_the_lock_once_the_killed_runs_backend_ends(database_url: str, tmp_path: Path, db):
    # Its backend ends exactly when the test releases the blocker.
    migrations, blocker, _, backend = _killed_while_blocked(database_url, tmp_path, db, "blocked", 4242)
    try:
        args = ("--database-url", database_url, "--migrations-dir", str(migrations))

        # Bounded: a backend still running when --lock-timeout runs out is named, and the row kept.
        timed_out = run_process("db", "unlock-migrations", "--confirm", "--wait", "--lock-timeout", "1", *args)
        assert timed_out.exit_code == 1, timed_out.output
        assert f"its backend pid {backend} is still running" in timed_out.stderr
        assert "--terminate" in timed_out.stderr
        assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(True,)]

        others = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            f"AND application_name = 'poststack' AND pid <> {backend}"
        )
        wait_for(db, others, [(0,)])  # the refused run's session is gone, so it cannot be mistaken below
        waiting = start_process("db", "clean", "--locks", "--confirm", "--wait", "--lock-timeout", "60", *args)
        # Once it has planned and polls for the lock, let the backend's statement end.
        wait_for(db, f"{others} AND query LIKE 'SELECT pg_try_advisory_lock%%'", [(1,)])
    finally:
        blocker.close()
    stdout, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, stdout + stderr
    assert f"Wait up to 60s for backend {backend} to end" in stdout
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]
    assert sql(db, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (backend,)) == [(0,)]
    assert sql(db, "SELECT to_regclass('blocked')") == [(None,)]  # its transaction was rolled back

    write(migrations, "002_blocked.sql", "CREATE TABLE blocked (id int);\n")
    again = run_process("db", "migrate", *args)
    assert again.exit_code == 0, again.output
    assert sql(db, "SELECT version FROM schema_migrations ORDER BY id") == [("001",), ("002",)]


def test_a_run_killed_inside_a_migration_outside_a_transaction_leaves_it_failed(database_url: str, tmp_path: Path, db):
    """Outside a transaction each statement is kept as it runs, so a kill part way leaves half
    a migration. Its failed row is committed before its first statement: after the lock is
    released, migrate and a plan hold it for a person instead of running it again."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_first.sql", "CREATE TABLE counter (what text);\n")
    write(
        migrations,
        "002_outside.sql",
        "-- poststack:no-transaction\nINSERT INTO counter VALUES ('once');\nSELECT pg_advisory_lock(4244);\n",
    )
    with holding_advisory_lock(database_url, 4244):
        kill_migrate_in(database_url, migrations, db, "SELECT pg_advisory_lock(4244)")
    wait_for(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'poststack'", [(0,)])
    assert sql(db, "SELECT count(*) FROM counter") == [(1,)]
    ((error,),) = sql(db, "SELECT error FROM schema_migrations WHERE version = '002' AND NOT success")
    assert "the run ended before it finished" in error
    args = ("--database-url", database_url, "--migrations-dir", str(migrations))

    released = run_process("db", "unlock-migrations", "--confirm", *args)
    assert released.exit_code == 0, released.output
    again = run_process("db", "migrate", *args)
    assert again.exit_code == 1 and "--retry-failed" in again.output, again.output
    report = json.loads(run_process("db", "diagnose", "--format", "json", *args).stdout)
    assert "partial_migration" in [i["type"] for i in report["issues"] if i["version"] == "002"]
    plan = json.loads(run_process("plan", "--format", "json", *args).stdout)
    assert not [s for s in plan["steps"] if s["action"] == "apply_migration"], plan["steps"]
    assert sql(db, "SELECT count(*) FROM counter") == [(1,)]  # never run twice

    # A person cleaned up and retries: the failed row gives way to the successful one.
    sql(db, "DELETE FROM counter")
    retried = run_process("db", "migrate", "--retry-failed", *args)
    assert retried.exit_code == 0, retried.output
    assert sql(db, "SELECT success FROM schema_migrations WHERE version = '002'") == [(True,)]
    assert sql(db, "SELECT count(*) FROM counter") == [(1,)]


def test_a_run_killed_in_the_one_statement_of_a_migration_outside_a_transaction_is_not_retried(
    database_url: str, tmp_path: Path, db
):
    """Killed while its one statement ran: the backend finishes it and commits after the
    client is gone, so the failure is not the statement's own, and nothing retries it."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_first.sql", "CREATE TABLE counter (what text);\n")
    write(
        migrations,
        "002_once.sql",
        "-- poststack:no-transaction\nINSERT INTO counter SELECT 'once' FROM (SELECT pg_advisory_lock(4245)) AS waited;\n",
    )
    with holding_advisory_lock(database_url, 4245):
        kill_migrate_in(database_url, migrations, db, "pg_advisory_lock(4245)")
    wait_for(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'poststack%'", [(0,)])
    assert sql(db, "SELECT count(*) FROM counter") == [(1,)]  # it committed after the kill
    args = ("--database-url", database_url, "--migrations-dir", str(migrations))
    report = json.loads(run_process("db", "diagnose", "--format", "json", *args).stdout)
    (issue,) = [i for i in report["issues"] if i["type"] == "partial_migration"]
    assert issue["auto_fixable"] is False
    applied = run_process("apply", "--auto-approve", *args)
    assert applied.exit_code == 1, applied.output  # the lock released, 002 left to a person
    assert sql(db, "SELECT count(*) FROM counter") == [(1,)]
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '002' AND success") == [(0,)]
