"""Stop when told: SIGINT (Ctrl-C) and SIGTERM (a deploy system) cancel the running
statement, the step is rolled back and recorded as interrupted, the migration lock is
released, and poststack says what was kept, exiting 130 or 143. A second signal closes the
connection without waiting. Every test runs a real poststack process on a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from reconciler.config import DEFAULT_TRACKING
from reconciler.observed.locking import advisory_key
from tests.conftest import run_cli, run_process, sql, wait_for, write

# A statement that would run far longer than any bound below: only a cancel ends it early.
SLEEP = "SELECT pg_sleep(20)"
# Generous, so CI noise cannot fail it; the sleep alone would take 20 s.
PROMPT_S = 8.0

POSTSTACK_BACKENDS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'poststack'"
)


def _start(database_url: str, migrations: Path, *args: str) -> subprocess.Popen[str]:
    """poststack in a real process (its own signal handling, as a user runs it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "POSTSTACK_DATABASE_URL")}
    argv = [sys.executable, "-m", "reconciler.interface.cli", *args]
    argv += ["--database-url", database_url, "--migrations-dir", str(migrations)]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _running(db, text: str) -> int:
    """Wait (bounded) until a poststack backend is running ``text``; its pid."""
    query = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        f"AND state = 'active' AND query LIKE '%%{text}%%'"
    )
    deadline = time.monotonic() + 30
    while not (rows := sql(db, query)):
        assert time.monotonic() < deadline, f"timed out waiting for a backend running {text}"
        time.sleep(0.05)
    return rows[0][0]


def _signal(proc: subprocess.Popen[str], signum: int) -> tuple[float, str]:
    """Send ``signum``; seconds until the process exited, and its stderr."""
    sent = time.monotonic()
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    return time.monotonic() - sent, stderr


def _project(tmp_path: Path) -> Path:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_first.sql", "CREATE TABLE first (id int);\n")
    return migrations


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_cancels_the_running_migration_and_rolls_it_back(
    database_url: str, db, tmp_path: Path, signum: int, code: int
):
    name = signal.Signals(signum).name
    migrations = _project(tmp_path)
    write(migrations, "002_slow.sql", f"CREATE TABLE slow (id int);\n{SLEEP};\n")
    proc = _start(database_url, migrations, "db", "migrate")
    backend = _running(db, SLEEP)

    elapsed, stderr = _signal(proc, signum)

    assert proc.returncode == code, stderr
    assert elapsed < PROMPT_S, f"exited {elapsed:.1f}s after {name}"
    assert (
        f"❌ Interrupted ({name}) during migration 002 (002_slow.sql): rolled back; nothing of it was kept." in stderr
    )
    assert "Applied before the interrupt: 001." in stderr and "Database: " in stderr
    assert "Traceback" not in stderr
    assert sql(db, "SELECT to_regclass('slow')") == [(None,)]
    assert sql(db, "SELECT version, success, error FROM schema_migrations ORDER BY id") == [
        ("001", True, None),
        ("002", False, f"interrupted by {name}: rolled back"),
    ]
    assert sql(db, "SELECT outcome, detail FROM schema_migrations_audit WHERE version = '002'") == [
        ("failed", f"interrupted by {name}: rolled back")
    ]
    assert sql(db, "SELECT locked, backend_pid FROM schema_migrations_lock") == [(False, None)]
    # The cancelled backend is not left running the sleep, nor is any other of the run's.
    wait_for(db, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {backend}", [(0,)], timeout=10)
    wait_for(db, POSTSTACK_BACKENDS, [(0,)], timeout=10)

    write(migrations, "002_slow.sql", "CREATE TABLE slow (id int);\n")
    again = run_process("db", "migrate", "--database-url", database_url, "--migrations-dir", str(migrations))
    assert again.exit_code == 0, again.output
    assert sql(db, "SELECT version FROM schema_migrations WHERE success ORDER BY id") == [("001",), ("002",)]
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '002'") == [(1,)]
    assert sql(db, "SELECT to_regclass('slow') IS NOT NULL") == [(True,)]


def test_an_interrupted_migration_outside_a_transaction_is_recorded_as_left_half_done(
    database_url: str, db, tmp_path: Path
):
    migrations = _project(tmp_path)
    write(migrations, "002_half.sql", f"-- poststack:no-transaction\nCREATE TABLE half (id int);\n{SLEEP};\n")
    proc = _start(database_url, migrations, "db", "migrate")
    _running(db, SLEEP)

    elapsed, stderr = _signal(proc, signal.SIGTERM)

    assert proc.returncode == 143, stderr
    assert elapsed < PROMPT_S
    assert "❌ Interrupted (SIGTERM) during migration 002 (002_half.sql): left half-done" in stderr
    assert "migrate --retry-failed" in stderr
    assert sql(db, "SELECT to_regclass('half') IS NOT NULL") == [(True,)]  # the statement before it was kept
    assert sql(db, "SELECT success, transactional, error FROM schema_migrations WHERE version = '002'") == [
        (False, False, "interrupted by SIGTERM: left half-done, statements before it were kept")
    ]
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]
    wait_for(db, POSTSTACK_BACKENDS, [(0,)], timeout=10)


# Catches the cancel and sleeps on: only closing the connection gets poststack out.
IGNORES_CANCEL = """DO $$
BEGIN
  FOR i IN 1..3 LOOP
    BEGIN
      PERFORM pg_sleep(20);
    EXCEPTION WHEN query_canceled THEN
      PERFORM nextval('cancels');
    END;
  END LOOP;
END $$;
"""


def test_a_second_signal_closes_the_connection_without_waiting(database_url: str, db, tmp_path: Path):
    migrations = _project(tmp_path)
    write(migrations, "001_first.sql", "CREATE TABLE first (id int);\nCREATE SEQUENCE cancels;\n")
    write(migrations, "002_stubborn.sql", f"CREATE TABLE stubborn (id int);\n{IGNORES_CANCEL}")
    proc = _start(database_url, migrations, "db", "migrate")
    backend = _running(db, "pg_sleep(20)")
    proc.send_signal(signal.SIGINT)
    # The first SIGINT reached the server as a cancel request, which the statement ignored.
    wait_for(db, "SELECT is_called FROM cancels", [(True,)], timeout=30)
    assert proc.poll() is None

    elapsed, stderr = _signal(proc, signal.SIGINT)
    try:
        assert proc.returncode == 130, stderr
        assert elapsed < PROMPT_S
        assert "❌ Interrupted (SIGINT) during migration 002 (002_stubborn.sql): told twice, poststack closed" in stderr
        assert "the server rolls the step back" in stderr and "poststack db diagnose" in stderr
        assert "Traceback" not in stderr
    finally:
        # The server only notices the closed connection when the statement ends: end it.
        sql(db, f"SELECT pg_terminate_backend({backend})")
        wait_for(db, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {backend}", [(0,)], timeout=10)
    assert sql(db, "SELECT to_regclass('stubborn')") == [(None,)]
    assert sql(db, "SELECT version, success FROM schema_migrations ORDER BY id") == [("001", True)]
    # Told twice, it did not stay to release the lock row: diagnose reports it as stuck.
    assert sql(db, "SELECT locked, backend_pid FROM schema_migrations_lock") == [(True, backend)]


def test_an_interrupted_rollback_keeps_the_migration_applied(database_url: str, db, tmp_path: Path):
    migrations = _project(tmp_path)
    write(migrations, "002_second.sql", "CREATE TABLE second (id int);\n")
    write(migrations, "002_second.rollback.sql", f"DROP TABLE second;\n{SLEEP};\n")
    assert run_cli("db", "migrate", "--database-url", database_url, "--migrations-dir", str(migrations)).exit_code == 0
    proc = _start(database_url, migrations, "db", "rollback", "001")
    _running(db, SLEEP)

    elapsed, stderr = _signal(proc, signal.SIGINT)

    assert proc.returncode == 130, stderr
    assert elapsed < PROMPT_S
    assert "❌ Interrupted (SIGINT) while rolling back migration 002 (002_second.rollback.sql): rolled back" in stderr
    assert "Nothing was rolled back before it." in stderr
    assert sql(db, "SELECT to_regclass('second') IS NOT NULL") == [(True,)]
    assert sql(db, "SELECT version FROM schema_migrations WHERE success ORDER BY id") == [("001",), ("002",)]
    assert sql(db, "SELECT outcome, detail FROM schema_migrations_audit WHERE action = 'rollback_migration'") == [
        ("failed", "interrupted by SIGINT: rolled back")
    ]
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]


def test_a_run_waiting_for_the_migration_lock_stops_on_sigterm(database_url: str, db, tmp_path: Path):
    migrations = _project(tmp_path)
    holder = psycopg2.connect(database_url)
    holder.autocommit = True
    try:
        sql(holder, "SELECT pg_advisory_lock(%s)", (advisory_key(DEFAULT_TRACKING),))
        proc = _start(database_url, migrations, "db", "migrate", "--lock-timeout", "60")
        # Its polling shows in pg_stat_activity as its last query.
        wait_for(
            db,
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'poststack' AND query LIKE '%%pg_try_advisory_lock%%'",
            [(True,)],
        )
        elapsed, stderr = _signal(proc, signal.SIGTERM)
    finally:
        holder.close()
    assert proc.returncode == 143, stderr
    assert elapsed < PROMPT_S
    assert "❌ Interrupted (SIGTERM)" in stderr and "Traceback" not in stderr
    assert sql(db, "SELECT to_regclass('schema_migrations')") == [(None,)]  # nothing was done


def test_copy_from_stdin_in_a_migration_fails_cleanly(database_url: str, db, tmp_path: Path):
    """psycopg2 refuses COPY ... FROM STDIN under a wait callback and leaves the connection
    in COPY state: such a statement must still fail as one clear error, the lock released."""
    migrations = _project(tmp_path)
    write(migrations, "002_load.sql", "CREATE TABLE load (id int);\nCOPY load FROM STDIN;\n")
    result = run_process("db", "migrate", "--database-url", database_url, "--migrations-dir", str(migrations))
    assert result.exit_code == 1, result.output
    assert "COPY" in result.output and "Traceback" not in result.output
    assert sql(db, "SELECT version, success FROM schema_migrations ORDER BY id") == [("001", True), ("002", False)]
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]
