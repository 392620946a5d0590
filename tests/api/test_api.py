"""reconciler.api: what a caller hands it, what it leaves alone, and what it refuses."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
from pathlib import Path

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest
import sqlalchemy
from sqlalchemy import event, text

from reconciler import api
from reconciler.api.handles import target_of
from tests.conftest import holding_advisory_lock, run_together, sql, wait_for, write

VERSIONS = ["001", "002", "003", "004", "005"]


@pytest.fixture(autouse=True)
def _no_configured_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The API reads the environment and the project files as the CLI does: none of the
    # machine's may decide these tests' database.
    for name in ("DATABASE_URL", "POSTSTACK_DATABASE_URL", "POSTSTACK_MIGRATIONS_DIR", "POSTSTACK_SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def engine_for(url: str, **kwargs: object) -> sqlalchemy.engine.Engine:
    return sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1), **kwargs)


def tracked(db: psycopg2.extensions.connection, schema: str = "public") -> list[str]:
    with db.cursor() as cur:
        cur.execute(f"SELECT version FROM {schema}.schema_migrations WHERE success ORDER BY version")
        return [row[0] for row in cur.fetchall()]


def has_table(db: psycopg2.extensions.connection, name: str) -> bool:
    with db.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
        row = cur.fetchone()
    return bool(row and row[0])


# --- the handles -------------------------------------------------------------------------------


def test_every_kind_of_handle_migrates_the_database_it_names(database_url, migrations_dir, db):
    engine = engine_for(database_url)
    assert api.migrate(engine, migrations_dir=migrations_dir, target="002").ok
    with engine.connect() as conn:
        assert api.migrate(conn, migrations_dir=migrations_dir, target="003").ok
    raw = psycopg2.connect(database_url)
    assert api.migrate(raw, migrations_dir=migrations_dir, target="004").ok
    assert api.migrate(database_url, migrations_dir=migrations_dir).ok
    raw.close()
    engine.dispose()
    assert tracked(db) == VERSIONS
    for handle in (database_url, engine_for(database_url)):
        status = api.status(handle, migrations_dir=migrations_dir)
        assert status.up_to_date and status.current_version == "005"
        assert db.info.dbname in status.database


def test_an_engine_is_read_for_what_it_connects_with_not_its_url(database_url, migrations_dir, db):
    # A creator (an IAM token, a secret manager) leaves the engine's URL without the database:
    # the connection it makes has it.
    engine = sqlalchemy.create_engine("postgresql+psycopg2://", creator=lambda: psycopg2.connect(database_url))
    assert api.migrate(engine, migrations_dir=migrations_dir).ok
    assert tracked(db) == VERSIONS


def test_startup_options_in_connect_args_are_kept(database_url, migrations_dir, db):
    with db.cursor() as cur:
        cur.execute("CREATE SCHEMA tenant_a")
    tenant = migrations_dir.parent / "tenant_migrations"
    tenant.mkdir()
    write(tenant, "001_things.sql", "CREATE TABLE things (id int);")
    write(tenant, "002_more.sql", "ALTER TABLE things ADD COLUMN name text;")
    engine = engine_for(database_url, connect_args={"options": "-csearch_path=tenant_a"})
    assert api.migrate(engine, migrations_dir=tenant, schema="tenant_a").ok
    assert has_table(db, "tenant_a.things") and not has_table(db, "public.things")
    assert tracked(db, "tenant_a") == ["001", "002"]


# --- another driver: psycopg 3 -----------------------------------------------------------------


def psycopg3_engine(url: str, **kwargs: object) -> sqlalchemy.engine.Engine:
    pytest.importorskip("psycopg")
    return sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), **kwargs)


def test_a_psycopg3_engine_is_read_for_what_it_connects_with(database_url, migrations_dir, db):
    with db.cursor() as cur:
        cur.execute("CREATE SCHEMA tenant_c")
    tenant = migrations_dir.parent / "tenant_c_migrations"
    tenant.mkdir()
    write(tenant, "001_things.sql", "CREATE TABLE things (id int);")
    engine = psycopg3_engine(database_url, connect_args={"options": "-csearch_path=tenant_c"})
    assert api.migrate(engine, migrations_dir=tenant, schema="tenant_c").ok
    engine.dispose()
    assert has_table(db, "tenant_c.things") and not has_table(db, "public.things")


def test_a_psycopg3_session_or_transaction_of_its_own_is_refused(database_url, migrations_dir, db):
    engine = psycopg3_engine(database_url)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # a transaction open
        with pytest.raises(api.UsageError, match="has a transaction open"):
            api.migrate(conn, migrations_dir=migrations_dir)
        assert conn.in_transaction()
        conn.execute(text("SET search_path TO pg_catalog"))
        with pytest.raises(api.UsageError, match="yours pg_catalog"):
            api.status(conn, migrations_dir=migrations_dir)
        conn.rollback()
    with engine.connect() as conn:
        assert api.status(conn, migrations_dir=migrations_dir).pending
        assert not conn.in_transaction()  # the read's transaction was its own, and ended
    engine.dispose()
    assert not has_table(db, "public.schema_migrations")


def test_the_callers_connection_and_its_transaction_are_left_as_they_were(database_url, migrations_dir):
    conn = psycopg2.connect(database_url)
    factory = conn.cursor_factory
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE mine (n int)")
        cur.execute("INSERT INTO mine VALUES (1)")  # uncommitted: poststack must not end it
    status = api.status(conn, migrations_dir=migrations_dir)
    assert status.pending and not status.tracking_exists
    assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
    assert conn.autocommit is False and conn.cursor_factory is factory
    with conn.cursor() as cur:
        cur.execute("SELECT n FROM mine")
        assert cur.fetchall() == [(1,)]
    conn.rollback()
    api.status(conn, migrations_dir=migrations_dir)
    # An idle connection's read is rolled back: it is idle again, not idle in a transaction.
    assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    conn.close()


@pytest.mark.parametrize("verb", ["migrate", "rollback", "apply"])
def test_what_writes_refuses_a_connection_with_a_transaction_open(verb, database_url, migrations_dir, db):
    engine = engine_for(database_url)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # SQLAlchemy began a transaction
        call = {
            "migrate": lambda: api.migrate(conn, migrations_dir=migrations_dir),
            "rollback": lambda: api.rollback(conn, "0", migrations_dir=migrations_dir),
            "apply": lambda: api.apply(conn, migrations_dir=migrations_dir),
        }[verb]
        with pytest.raises(api.UsageError, match="has a transaction open: commit or roll it back first"):
            call()
        assert conn.in_transaction()
        # Reads are fine: nothing of poststack's waits for the caller's locks.
        assert api.status(conn, migrations_dir=migrations_dir).pending
    engine.dispose()
    assert not has_table(db, "public.schema_migrations")


def test_a_session_with_its_own_search_path_is_refused(database_url, migrations_dir, db):
    with db.cursor() as cur:
        cur.execute("CREATE SCHEMA tenant_b")
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET search_path TO tenant_b")
    with pytest.raises(api.UsageError, match=r"its search_path is \"\$user\", public, yours tenant_b"):
        api.migrate(conn, migrations_dir=migrations_dir)
    conn.close()
    # The same, set by the engine on every connection it makes: the engine's own doing.
    engine = engine_for(database_url)

    @event.listens_for(engine, "connect")
    def _tenant(dbapi_connection: psycopg2.extensions.connection, record: object) -> None:
        with dbapi_connection.cursor() as cur:
            cur.execute("SET search_path TO tenant_b")

    with pytest.raises(api.UsageError, match="SET search_path"):
        api.migrate(engine, migrations_dir=migrations_dir)
    engine.dispose()
    assert not has_table(db, "public.schema_migrations") and not has_table(db, "tenant_b.schema_migrations")


def test_a_session_with_another_role_is_refused(database_url, migrations_dir, db):
    with db.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS api_other_role")
        cur.execute("CREATE ROLE api_other_role")
    conn = psycopg2.connect(database_url)
    with conn.cursor() as cur:
        cur.execute("SET ROLE api_other_role")
    conn.commit()
    try:
        with pytest.raises(api.UsageError, match=r"works as role .* yours as api_other_role"):
            api.migrate(conn, migrations_dir=migrations_dir)
    finally:
        conn.close()
        with db.cursor() as cur:
            cur.execute("DROP ROLE api_other_role")


def test_handles_that_cannot_be_used_are_usage_errors(database_url, migrations_dir):
    closed = psycopg2.connect(database_url)
    closed.close()
    with pytest.raises(api.UsageError, match="the psycopg2 connection is closed"):
        api.status(closed, migrations_dir=migrations_dir)
    with pytest.raises(api.UsageError, match=r"cannot use a builtins\.int as the database"):
        api.status(5432, migrations_dir=migrations_dir)  # type: ignore[arg-type]
    with pytest.raises(api.UsageError, match="the database URL is empty"):
        api.status("  ", migrations_dir=migrations_dir)
    with pytest.raises(api.UsageError, match="unknown option 'migration_dir'"):
        api.status(database_url, migration_dir=migrations_dir)  # type: ignore[call-arg]
    with pytest.raises(api.UsageError, match="the engine is for sqlite"):
        target_of(sqlalchemy.create_engine("sqlite://"))


def test_errors_are_poststacks_domain_errors(database_url, tmp_path):
    with pytest.raises(api.DatabaseUnavailable) as unreachable:
        api.status("postgresql://nobody@127.0.0.1:1/none", migrations_dir=tmp_path)
    assert unreachable.value.exit_code == 3 and "cannot connect" in unreachable.value.summary
    missing = tmp_path / "nowhere"
    with pytest.raises(api.PoststackError) as no_files:
        api.migrate(database_url, migrations_dir=missing)
    assert str(missing) in no_files.value.summary
    with pytest.raises(api.UsageError):
        api.diagnose(database_url, migrations_dir=tmp_path, severity="catastrophic")


def test_nothing_is_printed_and_notes_go_to_notify(database_url, migrations_dir, capfd):
    notes: list[str] = []
    write(migrations_dir, "006_out_of_order_later.sql", "SELECT 1;")
    api.migrate(database_url, migrations_dir=migrations_dir, target="004", notify=notes.append)
    assert api.migrate(database_url, migrations_dir=migrations_dir, dry_run=True, notify=notes.append).ok
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    # What the CLI warns of on stderr beside a run (an applied migration edited since) is told too.
    notes.clear()
    first = migrations_dir / "001_create_accounts.sql"
    first.write_text(first.read_text() + "\n-- edited after it was applied\n")
    result = api.migrate(database_url, migrations_dir=migrations_dir, notify=notes.append)
    assert result.plan.notes and all(note in notes for note in result.plan.notes)
    assert capfd.readouterr() == ("", "")


def test_options_of_the_wrong_type_are_usage_errors_before_anything_connects(tmp_path):
    nowhere = "postgresql://nobody@127.0.0.1:1/none"  # never reached: each is refused first
    with pytest.raises(api.UsageError, match=r"types takes a list of names, not 'stuck_lock': write \['stuck_lock'\]"):
        api.diagnose(nowhere, migrations_dir=tmp_path, types="stuck_lock")  # type: ignore[arg-type]
    with pytest.raises(api.UsageError, match="playbooks takes a list of names"):
        api.plan(nowhere, migrations_dir=tmp_path, playbooks="recover")  # type: ignore[arg-type]
    with pytest.raises(api.UsageError, match="issue_types takes names, not 3"):
        api.apply(nowhere, migrations_dir=tmp_path, issue_types=[3])  # type: ignore[list-item]
    with pytest.raises(api.UsageError, match="option replay takes bool, not str"):
        api.status(nowhere, migrations_dir=tmp_path, replay="no")  # type: ignore[typeddict-item]
    with pytest.raises(api.UsageError, match="option lock_timeout takes int or float, not bool"):
        api.migrate(nowhere, migrations_dir=tmp_path, lock_timeout=True)
    with pytest.raises(api.UsageError, match="option project: no directory"):
        api.status(nowhere, project=tmp_path / "missing")
    with pytest.raises(api.UsageError, match="option notify takes a function"):
        api.status(nowhere, migrations_dir=tmp_path, notify="stderr")  # type: ignore[typeddict-item]


def test_an_engine_that_cannot_connect_is_database_unavailable(tmp_path):
    engine = sqlalchemy.create_engine(f"postgresql+psycopg2://someone:hunter2@/none?host={tmp_path}")
    with pytest.raises(api.DatabaseUnavailable) as unreachable:
        api.status(engine, migrations_dir=tmp_path)
    assert unreachable.value.summary.startswith("cannot connect to postgresql+psycopg2://someone:***@/none")
    assert "hunter2" not in unreachable.value.summary


# --- lost tracking: recover, never run again -----------------------------------------------------


def test_recover_tracks_a_held_migration_without_running_it(database_url, tmp_path, db):
    migrations = tmp_path / "counted"
    migrations.mkdir()
    _counted_history(migrations)
    assert api.migrate(database_url, migrations_dir=migrations).ok
    sql(db, "DELETE FROM schema_migrations WHERE version >= '004'")  # tracking lost
    with pytest.raises(api.MigrationsHeld) as held:  # may have run: held, never run again
        api.migrate(database_url, migrations_dir=migrations)
    assert held.value.versions == ("004", "005", "006")
    one = api.recover(database_url, ["005"], migrations_dir=migrations)  # only the one named
    assert one.ok and [s.version for s in one.plan.steps if s.action == "track_migration"] == ["005"]
    assert tracked(db) == ["001", "002", "003", "005"]
    recovered = api.recover(database_url, migrations_dir=migrations)  # the audit table's evidence
    assert recovered.ok
    assert [s.version for s in recovered.plan.steps if s.action == "track_migration"] == ["004", "006"]
    after = api.migrate(database_url, migrations_dir=migrations)
    assert after.ok and not [s for s in after.plan.steps if s.action == "apply_migration"]
    assert sql(db, "SELECT version, count(*) FROM runs GROUP BY version ORDER BY version") == [
        (f"{n:03d}", 1) for n in range(2, 7)
    ]
    assert tracked(db) == ["001", "002", "003", "004", "005", "006"]


def test_recover_refuses_a_version_that_is_not_there(database_url, migrations_dir):
    with pytest.raises(api.UsageError, match="no migration 999"):
        api.recover(database_url, ["999"], force=True, migrations_dir=migrations_dir)
    with pytest.raises(api.UsageError, match="versions takes a list of names"):
        api.recover(database_url, "004", migrations_dir=migrations_dir)  # type: ignore[arg-type]
    with pytest.raises(api.UsageError, match="rollback takes the version to roll back to"):
        api.rollback(database_url, None, migrations_dir=migrations_dir)  # type: ignore[arg-type]


# --- Ctrl-C ------------------------------------------------------------------------------------------


def test_ctrl_c_stops_cleanly_and_is_a_keyboard_interrupt(database_url, tmp_path, db):
    migrations = tmp_path / "waits"
    migrations.mkdir()
    write(migrations, "001_first.sql", "CREATE TABLE first (id int);")
    write(migrations, "002_waits.sql", "SELECT pg_advisory_xact_lock(4242);\nCREATE TABLE second (id int);")
    watcher = psycopg2.connect(database_url)
    watcher.autocommit = True
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as an application has it

    def interrupt_once_waiting() -> None:
        # This database's wait on key 4242 only: other tests on the server wait on locks of their own.
        waiting = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = 4242 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        wait_for(watcher, waiting, [(1,)])
        os.kill(os.getpid(), signal.SIGINT)
        sql(blocker, "SELECT pg_advisory_unlock(4242)")  # the statement returns; Python sees the Ctrl-C

    try:
        with holding_advisory_lock(database_url, 4242) as blocker:
            interrupter = threading.Thread(target=interrupt_once_waiting)
            interrupter.start()
            with pytest.raises(KeyboardInterrupt) as stopped:
                api.migrate(database_url, migrations_dir=migrations)
            interrupter.join()
    finally:
        signal.signal(signal.SIGINT, previous)
        watcher.close()
    # Python's own: an uncaught one ends the process as SIGINT does (exit 130), not with 1.
    assert type(stopped.value) is KeyboardInterrupt
    interruption = stopped.value.interruption  # type: ignore[attr-defined]
    assert interruption.version == "002" and interruption.kept == "rolled back"
    assert tracked(db) == ["001"] and not has_table(db, "second")
    assert api.migrate(database_url, migrations_dir=migrations).ok  # the lock was released
    assert tracked(db) == ["001", "002"]


def test_poststack_sets_no_wait_callback_for_the_whole_process(database_url, tmp_path):
    # psycopg2's wait callback is process-wide: set while poststack works, it would reach the
    # application's connections in every thread. Watched from another thread, as they would see it.
    migrations = tmp_path / "slow"
    migrations.mkdir()
    write(migrations, "001_slow.sql", "SELECT pg_sleep(0.3);\nCREATE TABLE slow (id int);")
    seen: set[object] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.add(psycopg2.extensions.get_wait_callback())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert api.migrate(database_url, migrations_dir=migrations).ok
    finally:
        done.set()
        watcher.join()
    assert seen == {None}
    # An application's own callback (green threads) stays where it is, and is used.
    write(migrations, "002_more.sql", "CREATE TABLE more (id int);")
    psycopg2.extensions.set_wait_callback(psycopg2.extras.wait_select)
    try:
        assert api.migrate(database_url, migrations_dir=migrations).ok
        assert psycopg2.extensions.get_wait_callback() is psycopg2.extras.wait_select
    finally:
        psycopg2.extensions.set_wait_callback(None)


# --- plan and apply -------------------------------------------------------------------------


def test_a_plan_made_before_the_database_changed_is_refused(database_url, migrations_dir, db):
    reviewed = api.plan(database_url, migrations_dir=migrations_dir)
    assert [s.version for s in reviewed.plan.steps if s.action == "apply_migration"] == VERSIONS
    assert api.migrate(database_url, migrations_dir=migrations_dir, target="001").ok
    with pytest.raises(api.PoststackError, match=r"stale|changed"):
        api.apply(database_url, reviewed.plan, migrations_dir=migrations_dir)
    assert tracked(db) == ["001"]
    fresh = api.plan(database_url, migrations_dir=migrations_dir).plan
    assert api.apply(database_url, fresh, migrations_dir=migrations_dir).ok
    assert tracked(db) == VERSIONS


def test_a_destructive_plan_needs_confirm(database_url, migrations_dir, db, tmp_path):
    assert api.migrate(database_url, migrations_dir=migrations_dir).ok
    reviewed = api.plan(database_url, migrations_dir=migrations_dir, playbooks=["emergency-reset"])
    assert reviewed.plan.destructive
    with pytest.raises(api.UsageError, match="confirm=True"):
        api.apply(database_url, reviewed.plan, migrations_dir=migrations_dir)
    with pytest.raises(api.UsageError, match="confirm=True"):
        api.apply(database_url, migrations_dir=migrations_dir, playbooks=["emergency-reset"])
    assert tracked(db) == VERSIONS


def test_apply_runs_what_plan_returned_as_reviewed(database_url, migrations_dir, db):
    reviewed = api.plan(database_url, migrations_dir=migrations_dir)
    result = api.apply(database_url, reviewed, migrations_dir=migrations_dir)
    assert result.ok and result.plan.hash == reviewed.plan.hash
    assert tracked(db) == VERSIONS
    with pytest.raises(api.UsageError, match=r"apply runs a plan .* not dict"):
        api.apply(database_url, {"steps": []}, migrations_dir=migrations_dir)  # type: ignore[arg-type]


def test_plan_choices_and_a_plan_together_are_refused(database_url, migrations_dir):
    reviewed = api.plan(database_url, migrations_dir=migrations_dir)
    with pytest.raises(api.UsageError, match="a plan handed to apply runs as it is"):
        api.apply(database_url, reviewed.plan, playbooks=["recover-untracked"], migrations_dir=migrations_dir)


# --- replicas starting together ----------------------------------------------------------------

_REPLICA = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import sqlalchemy
    from reconciler import api

    url, migrations, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    while not go.exists():
        time.sleep(0.005)
    result = api.migrate(engine, migrations_dir=migrations)
    ran = [s.version for s in result.plan.steps if s.action == "apply_migration"]
    print(json.dumps({"ok": result.ok, "ran": ran}))
    """
)


def _counted_history(directory: Path) -> None:
    """Migrations whose every run leaves a row: one that ran twice would show."""
    write(directory, "001_runs.sql", "CREATE TABLE runs (version text NOT NULL);")
    for n in range(2, 7):
        slow = "SELECT pg_sleep(0.2);\n" if n == 2 else ""
        write(
            directory, f"{n:03d}_step.sql", f"{slow}INSERT INTO runs VALUES ('{n:03d}');\nCREATE TABLE t{n} (id int);"
        )


def test_three_replicas_migrating_at_once_apply_each_migration_once(database_url, tmp_path, db):
    migrations = tmp_path / "replica_migrations"
    migrations.mkdir()
    _counted_history(migrations)
    results = run_together(_REPLICA, [database_url, str(migrations)], 3, tmp_path / "go")
    assert all(r["ok"] for r in results)
    ran = sorted(v for r in results for v in r["ran"])
    assert ran == ["001", "002", "003", "004", "005", "006"]  # between them, each once
    with db.cursor() as cur:
        cur.execute("SELECT version, count(*) FROM runs GROUP BY version ORDER BY version")
        assert cur.fetchall() == [(f"{n:03d}", 1) for n in range(2, 7)]
    assert tracked(db) == ["001", "002", "003", "004", "005", "006"]


def test_threads_of_one_app_migrating_at_once_apply_each_migration_once(database_url, tmp_path, db):
    migrations = tmp_path / "thread_migrations"
    migrations.mkdir()
    _counted_history(migrations)
    engine = engine_for(database_url)
    barrier = threading.Barrier(3)
    results: list[api.RunResult] = []
    errors: list[BaseException] = []

    def replica() -> None:
        barrier.wait()
        try:
            results.append(api.migrate(engine, migrations_dir=migrations))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=replica) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    engine.dispose()
    assert not errors and len(results) == 3 and all(r.ok for r in results)
    with db.cursor() as cur:
        cur.execute("SELECT version, count(*) FROM runs GROUP BY version ORDER BY version")
        assert cur.fetchall() == [(f"{n:03d}", 1) for n in range(2, 7)]
    assert psycopg2.extensions.get_wait_callback() is None


def test_a_lock_left_by_a_dead_run_is_released_through_apply(database_url, migrations_dir, db):
    assert api.migrate(database_url, migrations_dir=migrations_dir, target="001").ok
    sql(
        db,
        "UPDATE schema_migrations_lock SET locked = true, locked_at = now() - interval '5 minutes', "
        "locked_by = 'ci-runner-7:4242', backend_pid = 999999, application_name = 'poststack'",
    )
    with pytest.raises(api.PoststackError, match="migration system is locked: held by ci-runner-7:4242"):
        api.migrate(database_url, migrations_dir=migrations_dir)
    released = api.apply(database_url, issue_types=["stuck_lock"], migrations_dir=migrations_dir)
    assert released.ok and [s.action for s in released.plan.steps if s.action != "manual"]
    assert api.migrate(database_url, migrations_dir=migrations_dir).ok
    assert tracked(db) == VERSIONS
