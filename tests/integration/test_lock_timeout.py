"""A migration's lock_timeout (--ddl-lock-timeout): a real session holds a conflicting lock
while poststack db migrate runs in a process of its own. It retries a migration whose
transaction the timeout rolled back, naming the session it waits behind; it succeeds once
that session ends, and fails clean (recorded, nothing half-applied) when it never does.

Nothing here waits for time to pass: the tests act when poststack says something (a retry
line on stderr) or when the server shows something (a backend waiting on a lock), and the
only bounds on time are generous ones.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from jsonschema import Draft202012Validator

from tests.conftest import REPO, run_cli, run_process, sql, start_process, wait_for, write

BLOCKER_APP = "blocker-psql"
ORDERS = "CREATE TABLE orders (id int PRIMARY KEY);\nINSERT INTO orders VALUES (1), (2);\n"
ADD_NOTE = "ALTER TABLE orders ADD COLUMN note text;\n"
TRACKING = "SELECT version, success, transactional FROM schema_migrations ORDER BY id"
COLUMNS = "SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attnum > 0"


@pytest.fixture
def project(database_url: str, tmp_path: Path) -> Path:
    """A migrations directory whose first migration (orders) is applied."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_orders.sql", ORDERS)
    applied = run_cli("db", "migrate", "--database-url", database_url, "--migrations-dir", str(migrations))
    assert applied.exit_code == 0, applied.output
    return migrations


@pytest.fixture
def blocker(database_url: str) -> Iterator[tuple[psycopg2.extensions.connection, int]]:
    """Another session, idle in a transaction that read orders: it holds ACCESS SHARE on it,
    which every ALTER TABLE waits for. Yields the connection and its backend pid."""
    conn = psycopg2.connect(database_url, application_name=BLOCKER_APP)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM orders")  # opens the transaction, keeps the lock
    yield conn, pid
    conn.close()


def args(database_url: str, migrations: Path, *more: str) -> tuple[str, ...]:
    return ("db", "migrate", "--database-url", database_url, "--migrations-dir", str(migrations), *more)


def retry_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("⏳")]


def test_a_blocker_that_never_ends_fails_the_migration_clean(database_url: str, project: Path, db, blocker):
    conn, pid = blocker
    write(project, "002_audit.sql", "CREATE TABLE audit (id int);\n")
    write(project, "003_add_note.sql", ADD_NOTE)
    result = run_process(*args(database_url, project, "--ddl-lock-timeout", "0.2", "--ddl-lock-retries", "2"))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output

    # Each retry names the session it waits behind.
    waits = retry_lines(result.stderr)
    assert len(waits) == 2, result.stderr
    for number, line in enumerate(waits, start=1):
        assert line.startswith("⏳ 003_add_note.sql:1: lock_timeout (0.2s) fired waiting for a lock on public.orders")
        assert f"held by pid {pid} (application {BLOCKER_APP}, state idle in transaction, query started " in line
        assert "holds AccessShareLock" in line
        assert line.endswith(f"; retry {number} of 2 in {0.2 * 2 ** (number - 1):g}s")

    # The failure names the blocker and what to do.
    assert "❌ Migration 003 failed: " in result.stdout and "canceling statement due to lock timeout" in result.stdout
    assert (
        f"It gave up after 3 tries: lock_timeout (0.2s) fired waiting for a lock on public.orders held by pid {pid}"
        in (result.stdout)
    )
    assert f"end that session (SELECT pg_terminate_backend({pid}))" in result.stdout
    assert "--ddl-lock-timeout" in result.stdout
    assert "Applied before the failure: 002." in result.stdout

    # Nothing half-applied: the table is as it was, 003 is recorded as failed (once), 002 stays.
    conn.rollback()
    assert sql(db, COLUMNS) == [(["id"],)]
    assert sql(db, TRACKING) == [("001", True, True), ("002", True, True), ("003", False, True)]
    assert sql(db, "SELECT to_regclass('audit') IS NOT NULL") == [(True,)]
    error = sql(db, "SELECT error FROM schema_migrations WHERE version = '003'")[0][0]
    assert "lock timeout" in error and f"pid {pid} ({BLOCKER_APP}" in error and "tried 3 times" in error
    audit = sql(db, "SELECT version, outcome FROM schema_migrations_audit WHERE version = '003' ORDER BY id")
    assert audit == [("003", "failed")]  # one failure, not one per try
    status = run_process("db", "migration-status", "--database-url", database_url, "--migrations-dir", str(project))
    assert "❌ 003" in status.stdout

    # The blocker is gone: the failed migration runs on the next migrate, the file unchanged.
    again = run_process(*args(database_url, project, "--ddl-lock-timeout", "0.2"))
    assert again.exit_code == 0, again.output
    assert sql(db, COLUMNS) == [(["id", "note"],)]
    assert sql(db, TRACKING)[-1] == ("003", True, True)


def test_the_failure_in_json_names_the_blocker(database_url: str, project: Path, db, blocker):
    _, pid = blocker
    write(project, "002_add_note.sql", ADD_NOTE)
    result = run_process(
        *args(database_url, project, "--ddl-lock-timeout", "0.2", "--ddl-lock-retries", "0", "--format", "json")
    )
    assert result.exit_code == 1, result.output
    assert retry_lines(result.stderr) == []  # no retries asked for
    report = json.loads(result.stdout)
    schema = json.loads((REPO / "schemas" / "run-result.schema.json").read_text())
    assert list(Draft202012Validator(schema).iter_errors(report)) == []
    failure = report["failure"]
    assert failure["sqlstate"] == "55P03" and failure["version"] == "002"
    wait = failure["lock_wait"]
    assert (wait["attempt"], wait["tries"], wait["retry_in_s"], wait["lock_timeout"]) == (1, 1, None, 0.2)
    assert wait["relations"] == ["public.orders"] and wait["transactional"] is True
    (holder,) = wait["holders"]
    assert (holder["pid"], holder["application_name"], holder["state"]) == (pid, BLOCKER_APP, "idle in transaction")
    assert holder["modes"] == ["AccessShareLock"] and holder["query_start"]
    assert report["outcomes"][-1]["lock_retries"] == 0
    # What it ran began with the lock_timeout, in the migration's transaction.
    step = report["plan"]["steps"][-1]
    assert step["lock_timeout"] == 0.2
    assert step["statements"][0] == {
        "sql": "SET LOCAL lock_timeout = %(lock_timeout)s",
        "params": {"lock_timeout": "200ms"},
        "source": None,
        "line": None,
        "notes": [],
    }


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_the_migration_succeeds_once_the_blocker_ends(fmt: str, database_url: str, project: Path, db, blocker):
    conn, pid = blocker
    write(project, "002_add_note.sql", ADD_NOTE)
    # Retries enough that the run cannot give up before this test has read its first line.
    proc = start_process(
        *args(database_url, project, "--ddl-lock-timeout", "0.2", "--ddl-lock-retries", "10", "--format", fmt)
    )
    try:
        assert proc.stderr is not None
        first = next((line for line in proc.stderr if line.startswith("⏳")), None)
        assert first is not None, "migrate ended without a retry line"
        assert f"held by pid {pid} (application {BLOCKER_APP}" in first and "retry 1 of 10" in first
    finally:
        conn.rollback()  # the blocker ends
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stdout + stderr
    if fmt == "json":
        report = json.loads(stdout)
        schema = json.loads((REPO / "schemas" / "run-result.schema.json").read_text())
        assert list(Draft202012Validator(schema).iter_errors(report)) == []
        (outcome,) = [o for o in report["outcomes"] if o["version"] == "002"]
        assert outcome["ok"] and outcome["lock_retries"] >= 1
    else:
        assert "✅ Applied 1 migration(s): 002; tried again after its lock_timeout fired: 002 (" in stdout
    assert sql(db, COLUMNS) == [(["id", "note"],)]
    assert sql(db, TRACKING) == [("001", True, True), ("002", True, True)]  # applied once, no failed row
    assert sql(db, "SELECT outcome FROM schema_migrations_audit WHERE version = '002'") == [("ok",)]


def test_a_stop_signal_while_it_waits_to_retry_leaves_nothing(database_url: str, project: Path, db, blocker):
    """SIGTERM between tries: the migration was rolled back, nothing runs after it, and the
    migration lock is released."""
    write(project, "002_add_note.sql", ADD_NOTE)
    # A long wait between tries (60 s at most): the signal arrives during it.
    proc = start_process(*args(database_url, project, "--ddl-lock-timeout", "0.2", "--ddl-lock-retries", "10"))
    assert proc.stderr is not None
    first = next((line for line in proc.stderr if line.startswith("⏳")), None)
    assert first is not None, "migrate ended without a retry line"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stdout + stderr
    assert "Interrupted (SIGTERM) during migration 002" in stderr and "rolled back" in stderr
    assert sql(db, COLUMNS) == [(["id"],)]
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]
    assert sql(db, "SELECT version, success FROM schema_migrations WHERE version = '002'") in ([], [("002", False)])


@pytest.mark.parametrize("scope", ["SET", "SET LOCAL"])
def test_a_files_own_lock_timeout_wins(scope: str, database_url: str, project: Path, db, blocker):
    write(project, "002_add_note.sql", f"{scope} lock_timeout = '1ms';\n{ADD_NOTE}")
    # Ours would wait ten minutes: the run's bound (120 s) fails the test if the file's did not win.
    result = run_process(*args(database_url, project, "--ddl-lock-timeout", "600", "--ddl-lock-retries", "0"))
    assert result.exit_code == 1, result.output
    assert "It gave up: its own lock_timeout fired waiting for a lock on public.orders" in result.stdout
    assert "raise the file's own lock_timeout" in result.stdout
    assert sql(db, TRACKING)[-1] == ("002", False, True)
    # Ours comes first, so the file's is the one in force.
    dry = run_process(*args(database_url, project, "--ddl-lock-timeout", "600", "--dry-run"))
    body = dry.stdout.split("apply 002_add_note.sql", 1)[1]
    assert body.index("SET LOCAL lock_timeout = '600s';") < body.index(f"{scope} lock_timeout = '1ms';")


def test_a_ddl_lock_timeout_of_0_sets_none(database_url: str, project: Path, db, blocker):
    conn, _ = blocker
    write(project, "002_add_note.sql", ADD_NOTE)
    dry = run_process(*args(database_url, project, "--ddl-lock-timeout", "0", "--dry-run", "--format", "json"))
    step = json.loads(dry.stdout)["plan"]["steps"][-1]
    assert step["version"] == "002" and "lock_timeout" not in step
    assert not any("lock_timeout" in statement["sql"] for statement in step["statements"])
    text = run_process(*args(database_url, project, "--ddl-lock-timeout", "0", "--dry-run")).stdout
    assert "lock_timeout =" not in text

    proc = start_process(*args(database_url, project, "--ddl-lock-timeout", "0"))
    try:
        # It waits, as PostgreSQL does by default, for as long as the blocker holds on.
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'poststack' AND wait_event_type = 'Lock' AND query LIKE '%ALTER TABLE orders%'"
        )
        wait_for(db, waiting, [(1,)])
    finally:
        conn.rollback()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stdout + stderr
    assert retry_lines(stderr) == []
    assert sql(db, COLUMNS) == [(["id", "note"],)]


def test_a_migration_outside_a_transaction_is_not_tried_again(database_url: str, project: Path, db, blocker):
    write(
        project,
        "002_side_then_note.sql",
        "-- poststack:no-transaction\nCREATE TABLE side (id int);\nALTER TABLE orders ADD COLUMN note text;\n",
    )
    result = run_process(*args(database_url, project, "--ddl-lock-timeout", "0.2", "--ddl-lock-retries", "3"))
    assert result.exit_code == 1, result.output
    assert retry_lines(result.stderr) == []  # its first statement committed: never run twice
    assert "❌ Migration 002 failed: " in result.stdout
    assert "002_side_then_note.sql:3: canceling statement due to lock timeout" in result.stdout
    assert "poststack did not try it again: it runs outside a transaction" in result.stdout
    assert f"held by pid {blocker[1]} (application {BLOCKER_APP}" in result.stdout
    # The statement before it was kept, as a failure outside a transaction keeps it; recorded as
    # such, so the next run holds it back until someone says it may run again.
    assert sql(db, "SELECT to_regclass('side') IS NOT NULL") == [(True,)]
    assert sql(db, COLUMNS) == [(["id"],)]
    assert sql(db, TRACKING)[-1] == ("002", False, False)
    again = run_process(*args(database_url, project))
    assert again.exit_code == 1 and "--retry-failed" in again.output


def test_a_concurrent_index_build_waits_for_older_transactions_without_a_lock_timeout(
    database_url: str, project: Path, db, blocker
):
    """CREATE INDEX CONCURRENTLY waits for every older transaction once its index is in the
    catalog: a lock_timeout there would leave an INVALID index where the build would have
    finished, and while it waits it makes nobody wait (SHARE UPDATE EXCLUSIVE). So poststack
    sets none for such a file: it waits past its ddl_lock_timeout, and finishes."""
    conn, _ = blocker
    sql(conn, "LOCK TABLE orders IN ROW EXCLUSIVE MODE")
    write(project, "002_index.sql", "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_id_idx ON orders (id);\n")
    running = start_process(*args(database_url, project, "--ddl-lock-timeout", "0.2"))
    try:
        # The build waits for the blocker's transaction, longer than the 0.2 s timeout would allow.
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'CREATE INDEX%%' "
            "AND now() - query_start > interval '1 second'"
        )
        wait_for(db, waiting, [(1,)])
        conn.rollback()
        out, err = running.communicate(timeout=120)
    finally:
        if running.poll() is None:
            running.kill()
    assert running.returncode == 0, out + err
    assert sql(db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'orders_id_idx'::regclass") == [(True,)]
    assert sql(db, TRACKING)[-1] == ("002", True, False)


def test_apply_retries_a_migration_and_names_the_blocker(database_url: str, project: Path, db, blocker):
    _, pid = blocker
    write(project, "002_add_note.sql", ADD_NOTE)
    common = ("--database-url", database_url, "--migrations-dir", str(project))
    result = run_process("apply", "--auto-approve", "--ddl-lock-timeout", "0.2", "--ddl-lock-retries", "1", *common)
    assert result.exit_code == 1, result.output
    (line,) = retry_lines(result.stderr)
    assert (
        f"002_add_note.sql:1: lock_timeout (0.2s) fired waiting for a lock on public.orders held by pid {pid}" in line
    )
    assert line.endswith("; retry 1 of 1 in 0.2s")
    assert "It gave up after 2 tries: lock_timeout (0.2s) fired" in result.stdout
    assert sql(db, COLUMNS) == [(["id"],)]
    # The plan showed the lock_timeout it ran with.
    assert "SET LOCAL lock_timeout = '200ms';" in result.stdout


def test_the_offline_script_sets_the_lock_timeout_it_will_use(database_url: str, project: Path):
    write(project, "002_add_note.sql", ADD_NOTE)
    write(project, "003_outside.sql", "-- poststack:no-transaction\nALTER TABLE orders ADD COLUMN other text;\n")
    write(project, "004_index.sql", "CREATE INDEX CONCURRENTLY orders_id_idx ON orders (id);\n")
    result = run_process(*args(database_url, project, "--ddl-lock-timeout", "2.5", "--dry-run", "--format", "sql"))
    assert result.exit_code == 0, result.output
    script = result.stdout
    # In the migration's transaction; outside one, for the session, until the reset after it.
    transactional = script.split("002_add_note.sql", 1)[1]
    assert transactional.index("BEGIN") < transactional.index("SET LOCAL lock_timeout = '2500ms'\n;")
    assert transactional.index("SET LOCAL lock_timeout = '2500ms'") < transactional.index("ALTER TABLE orders")
    outside = script.split("003_outside.sql", 1)[1].split("004_index.sql", 1)[0]
    assert outside.index("SET lock_timeout = '2500ms'\n;") < outside.index("ALTER TABLE orders ADD COLUMN other")
    assert outside.index("ALTER TABLE orders ADD COLUMN other") < outside.index("RESET ALL")
    # A concurrent build waits for older transactions: a lock_timeout would leave it INVALID.
    concurrent = script.split("004_index.sql", 1)[1]
    assert "lock_timeout" not in concurrent.split("CREATE INDEX CONCURRENTLY orders_id_idx", 1)[0]


# --- the settings -------------------------------------------------------------------------


def test_the_settings_show_in_config(tmp_path: Path):
    (tmp_path / "poststack.toml").write_text("ddl_lock_timeout = 2.5\nddl_lock_retries = 7\n")
    result = run_process("config", "--database-url", "postgresql://u@h/d", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line and not line.endswith(":")}
    assert rows["ddl_lock_timeout"].split()[1:] == ["2.5", "from", "poststack.toml"]
    assert rows["ddl_lock_retries"].split()[1:] == ["7", "from", "poststack.toml"]
    flags = run_process(
        "config",
        "--database-url",
        "postgresql://u@h/d",
        "--ddl-lock-timeout",
        "0",
        "--format",
        "json",
        cwd=tmp_path,
        env={"POSTSTACK_DDL_LOCK_RETRIES": "0"},
    )
    settings = json.loads(flags.stdout)["settings"]
    assert settings["ddl_lock_timeout"] == {
        "value": 0,
        "source": "--ddl-lock-timeout",
        "variable": "POSTSTACK_DDL_LOCK_TIMEOUT",
    }
    assert settings["ddl_lock_retries"] == {
        "value": 0,
        "source": "POSTSTACK_DDL_LOCK_RETRIES",
        "variable": "POSTSTACK_DDL_LOCK_RETRIES",
    }
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    default = json.loads(
        run_process("config", "--database-url", "postgresql://u@h/d", "--format", "json", cwd=elsewhere).stdout
    )["settings"]
    assert (default["ddl_lock_timeout"]["value"], default["ddl_lock_retries"]["value"]) == (5, 3)


@pytest.mark.parametrize(
    ("given", "env", "project", "says"),
    [
        (("--ddl-lock-timeout", "-1"), {}, None, "DDL lock timeout from --ddl-lock-timeout must be 0 (no timeout) or"),
        (("--ddl-lock-timeout", "0.0001"), {}, None, "between 0.001 and 2147483 seconds"),
        (
            (),
            {"POSTSTACK_DDL_LOCK_TIMEOUT": "5s"},
            None,
            "DDL lock timeout from POSTSTACK_DDL_LOCK_TIMEOUT is not a number of seconds: '5s'",
        ),
        (("--ddl-lock-retries", "-1"), {}, None, "DDL lock retries from --ddl-lock-retries must be a whole number"),
        (
            (),
            {"POSTSTACK_DDL_LOCK_RETRIES": "1.5"},
            None,
            "from POSTSTACK_DDL_LOCK_RETRIES is not a whole number: '1.5'",
        ),
        ((), {}, "ddl_lock_retries = 2.5\n", "ddl_lock_retries must be a whole number, not 2.5"),
        ((), {}, 'ddl_lock_timeout = "5"\n', "ddl_lock_timeout must be a number of seconds, not a string ('5')"),
    ],
)
def test_bad_values_are_refused(given, env, project, says, tmp_path: Path):
    if project is not None:
        (tmp_path / "poststack.toml").write_text(project)
    result = run_process("db", "migrate", "--database-url", "postgresql://u@h/d", *given, cwd=tmp_path, env=env)
    assert result.exit_code == 2, result.output
    (line, *_) = result.stderr.splitlines()
    assert line.startswith("❌ ") and says in line


def test_the_retries_flag_is_refused_where_nothing_runs_migrations():
    result = run_cli("db", "migration-status", "--ddl-lock-retries", "1")
    assert result.exit_code == 2 and "No such option: --ddl-lock-retries" in result.output


def test_by_default_it_retries_three_times_doubling_the_wait(database_url: str, project: Path, blocker):
    write(project, "002_add_note.sql", ADD_NOTE)
    result = run_process(*args(database_url, project, "--ddl-lock-timeout", "0.1"), timeout=60)
    assert result.exit_code == 1, result.output
    assert [line.rsplit("; ", 1)[1] for line in retry_lines(result.stderr)] == [
        "retry 1 of 3 in 0.1s",
        "retry 2 of 3 in 0.2s",
        "retry 3 of 3 in 0.4s",
    ]


def test_a_reader_is_not_named_for_what_only_a_writer_blocks(database_url: str, project: Path, db, blocker):
    """CREATE INDEX asks for SHARE: a reader's ACCESS SHARE lets it in, a writer's ROW
    EXCLUSIVE does not. Only the writer is named: ending the reader would change nothing."""
    _, reader = blocker
    writer = psycopg2.connect(database_url, application_name="checkout")
    try:
        with writer.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            writer_pid = cur.fetchone()[0]
            cur.execute("UPDATE orders SET id = id WHERE id = 1")
        write(project, "002_index.sql", "CREATE INDEX orders_id ON orders (id);\n")
        result = run_process(*args(database_url, project, "--ddl-lock-timeout", "0.2", "--ddl-lock-retries", "1"))
        assert result.exit_code == 1, result.output
        (wait,) = retry_lines(result.stderr)
        assert f"held by pid {writer_pid} (application checkout" in wait and "holds RowExclusiveLock" in wait
        assert f"pid {reader}" not in wait and BLOCKER_APP not in wait
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("statement", "mode"),
    [
        ("CREATE INDEX i ON t (a)", "ShareLock"),
        ("CREATE INDEX CONCURRENTLY i ON t (a)", "ShareUpdateExclusiveLock"),
        ("ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES u (id)", "ShareRowExclusiveLock"),
        ("ALTER TABLE t VALIDATE CONSTRAINT f", "ShareUpdateExclusiveLock"),
        ("ALTER TABLE t ADD COLUMN b int", "AccessExclusiveLock"),
        ("UPDATE t SET a = 1", "RowExclusiveLock"),
        ("CREATE TRIGGER g AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", "ShareRowExclusiveLock"),
        ("DROP TABLE t", "AccessExclusiveLock"),
    ],
)
def test_the_lock_a_statement_asks_for(statement: str, mode: str):
    from reconciler.desired.script import requested_lock

    assert requested_lock(statement) == mode
