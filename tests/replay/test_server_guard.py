"""A replay beside the target shares its server: a migration that would change the server
itself (a role, the target database's settings, a grant on it) is not replayed there. The
replay stops at it and says why, and the server is as it was."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from reconciler.config import DEFAULT_TRACKING
from reconciler.db import Session, open_raw
from reconciler.desired.layouts import load_migrations
from reconciler.desired.replay.measure import measure
from reconciler.desired.replay.replay import replay
from reconciler.desired.replay.shadow import scratch_session
from reconciler.desired.script import parse_script


@pytest.fixture
def target(database_url: str):  # type: ignore[no-untyped-def]
    session = Session(open_raw(database_url), database_url)
    yield session
    session.close()


def _role() -> str:
    return f"poststack_guard_{random.randrange(10**9)}"


def _replay(target: Session, directory: Path, middle: str, guarded: bool = True):  # type: ignore[no-untyped-def]
    directory.mkdir()
    (directory / "001_a.sql").write_text("CREATE TABLE a (id int);\n")
    (directory / "002_server.sql").write_text(middle)
    (directory / "003_b.sql").write_text("CREATE TABLE b (id int);\n")
    migrations = load_migrations(directory).migrations
    return replay(lambda: scratch_session(target.url), migrations, DEFAULT_TRACKING, guarded=guarded)


def _role_exists(target: Session, role: str) -> bool:
    return target.query_one("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)) is not None


# (a migration that changes the server, what the stop says): replay and lint measure alike.
SERVER_CHANGES = [
    ("CREATE ROLE {role};\n", "CREATE ROLE changes the server"),
    # Built at run time: no parse sees it; the rows it wrote do.
    ("DO $$ BEGIN EXECUTE format('%s ROLE %I', 'CREATE', '{role}'); END $$;\n", "changed the server's roles"),
    ("DO $$ BEGIN EXECUTE 'CREATE ROLE {role}'; END $$;\n", "changed the server's roles"),
    # The file's own transaction: checked before its COMMIT.
    ("BEGIN;\nDO $$ BEGIN EXECUTE 'CREATE ROLE {role}'; END $$;\nCOMMIT;\n", "changed the server's roles"),
    # A savepoint inside it is the same transaction: still checked before its COMMIT.
    (
        "BEGIN;\nSAVEPOINT s;\nDO $$ BEGIN EXECUTE 'CREATE ROLE {role}'; END $$;\nRELEASE SAVEPOINT s;\nCOMMIT;\n",
        "changed the server's roles",
    ),
    # Run as another role at the end: checked as the replay's own role all the same.
    (
        "DO $$ BEGIN EXECUTE 'CREATE ROLE {role}'; END $$;\nSET ROLE pg_read_all_data;\n",
        "changed the server's roles",
    ),
    # A deferred trigger fires at COMMIT: it is fired before the check.
    (
        "CREATE FUNCTION mk() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN EXECUTE 'CREATE ROLE {role}'; RETURN NULL; END $$;\n"
        "CREATE CONSTRAINT TRIGGER later AFTER INSERT ON before DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION mk();\nINSERT INTO before VALUES (1);\n",
        "changed the server's roles",
    ),
    # Outside any transaction: each statement gets one of its own, checked.
    (
        "-- poststack:no-transaction\nDO $$ BEGIN EXECUTE 'CREATE ROLE {role}'; END $$;\n",
        "changed the server's roles",
    ),
]


@pytest.mark.parametrize(("sql", "said"), SERVER_CHANGES)
def test_a_migration_that_makes_a_role_is_not_replayed_beside_the_target(
    sql: str, said: str, tmp_path: Path, target: Session
) -> None:
    role = _role()
    middle = sql.format(role=role)
    if not middle.startswith("--"):
        middle = "CREATE TABLE before (id int);\n" + middle
    result = _replay(target, tmp_path / "m", middle)
    assert result.stopped is not None and result.stopped.version == "002", result.stopped
    assert said in result.stopped.reason and "002_server.sql" in result.stopped.reason
    assert list(result.versions) == ["001"]
    assert not _role_exists(target, role)


@pytest.mark.parametrize(("sql", "said"), SERVER_CHANGES)
def test_a_migration_that_makes_a_role_is_not_measured_beside_the_target(
    sql: str, said: str, tmp_path: Path, target: Session
) -> None:
    """db lint runs the pending migrations in the shadow too, statement by statement: the
    same guard holds there, a file's own BEGIN ... COMMIT included."""
    role = _role()
    middle = sql.format(role=role)
    if not middle.startswith("--"):
        middle = "CREATE TABLE before (id int);\n" + middle
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "001_a.sql").write_text("CREATE TABLE a (id int);\n")
    (directory / "002_server.sql").write_text(middle)
    history = load_migrations(directory).migrations
    result = measure(lambda: scratch_session(target.url), history, frozenset({"002"}), guarded=True)
    assert result.stopped is not None and result.stopped.version == "002", result.stopped
    assert said in result.stopped.reason and "002_server.sql" in result.stopped.reason
    assert not _role_exists(target, role)


def test_a_migration_that_sets_the_target_database_is_not_replayed(tmp_path: Path, target: Session) -> None:
    database = target.query_one("SELECT current_database()")[0]
    settings = (
        "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s"
    )
    before = target.query_one(settings, (database,))
    result = _replay(target, tmp_path / "m", f"ALTER DATABASE \"{database}\" SET work_mem = '77MB';\n")
    assert result.stopped is not None and "ALTER DATABASE ... SET changes the server" in result.stopped.reason
    assert target.query_one(settings, (database,)) == before


def test_a_server_of_its_own_replays_what_changes_the_server(tmp_path: Path, target: Session) -> None:
    role = _role()
    try:
        result = _replay(target, tmp_path / "m", f"CREATE ROLE {role};\n", guarded=False)
        assert result.stopped is None and list(result.versions) == ["001", "002", "003"]
    finally:
        target.query(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.parametrize(
    "sql, level",
    [
        ("ALTER ROLE x SET work_mem = '1MB'", "ALTER ROLE ... SET"),
        ("GRANT CONNECT ON DATABASE d TO x", "GRANT/REVOKE on a database"),
        ("COMMENT ON ROLE x IS 'a'", "COMMENT ON a role"),
        ("ALTER ROLE x RENAME TO y", "RENAME of a role"),
        ("ALTER DATABASE d OWNER TO x", "ALTER ... OWNER of a database"),
        ("GRANT r1 TO r2", "GRANT/REVOKE of a role"),
        ("REASSIGN OWNED BY x TO y", "REASSIGN OWNED"),
        ("SELECT dblink_exec('dbname=postgres', 'CREATE ROLE x')", "a call of dblink_exec()"),
        (
            "DO $$ BEGIN PERFORM dblink_exec('dbname=postgres', 'DROP ROLE x'); END $$",
            "a DO block that calls dblink (another session)",
        ),
        ("COPY t TO '/tmp/out.csv'", "COPY ... TO a file on the server"),
        ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "a call of pg_terminate_backend()"),
        ("DO $$ BEGIN RAISE NOTICE 'backfilling on database %', current_database(); END $$", None),
        ("COPY t FROM '/tmp/in.csv'", None),
        ("CREATE TABLE t (a int)", None),
        ("GRANT SELECT ON t TO x", None),
        ("ALTER TABLE t OWNER TO x", None),
        ("COMMENT ON TABLE t IS 'the database'", None),
        ("DO $$ BEGIN PERFORM 1; END $$", None),
    ],
)
def test_what_acts_on_the_server_is_told_from_the_parse(sql: str, level: str | None) -> None:
    assert parse_script(sql).statements[0].server_level == level


def test_what_a_function_removes_from_the_server_is_seen(tmp_path: Path, target: Session) -> None:
    """Deleted rows leave no xmin behind: the fingerprint of the shared catalogs still moves."""
    role = _role()
    target.query(f"CREATE ROLE {role}; ALTER ROLE {role} SET work_mem = '7MB'")
    try:
        middle = (
            "CREATE FUNCTION rs() RETURNS void LANGUAGE plpgsql AS "
            f"$$ BEGIN EXECUTE 'ALTER ROLE {role} RESET ALL'; EXECUTE 'DROP ROLE {role}'; END $$;\nSELECT rs();\n"
        )
        result = _replay(target, tmp_path / "m", middle)
        assert result.stopped is not None and "changed the server's" in result.stopped.reason
        assert _role_exists(target, role)
        assert target.query_one(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = %s",
            (role,),
        ) == (["work_mem=7MB"],)
    finally:
        target.query(f"DROP ROLE IF EXISTS {role}")


def test_a_migration_that_needs_no_transaction_still_runs(tmp_path: Path, target: Session) -> None:
    middle = "-- poststack:no-transaction\nCREATE INDEX CONCURRENTLY a_id ON a (id);\nVACUUM a;\n"
    result = _replay(target, tmp_path / "m", middle)
    assert result.stopped is None and ("index", "public.a_id") in result.final.objects


@pytest.mark.parametrize("own_transaction", [False, True])
def test_what_another_session_does_to_the_server_meanwhile_stops_nothing(
    own_transaction: bool, tmp_path: Path, target: Session
) -> None:
    """Someone makes a role while a migration runs (here: while it waits on a lock the test
    holds, so the order is certain): not the migration's doing, and not a reason to stop."""
    role = _role()
    holder = Session(open_raw(target.url), target.url)
    holder.query("SELECT pg_advisory_lock(731)")
    outcome: list[object] = []
    middle = "CREATE TABLE waits (id int);\nSELECT pg_advisory_lock_shared(731);\nCREATE TABLE after_wait (id int);\n"
    if own_transaction:  # the file's own BEGIN ... COMMIT
        middle = f"BEGIN;\n{middle}COMMIT;\n"
    worker = threading.Thread(target=lambda: outcome.append(_replay(target, tmp_path / "m", middle)))
    worker.start()
    try:
        while not holder.query(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 731 AND NOT granted"
        ):  # until the migration waits on the lock
            if not worker.is_alive():
                break
            holder.query("SELECT pg_sleep(0.01)")
        holder.query(f"CREATE ROLE {role}")
    finally:
        holder.query("SELECT pg_advisory_unlock(731)")
        worker.join()
        holder.query(f"DROP ROLE IF EXISTS {role}")
        holder.close()
    (result,) = outcome
    assert result.stopped is None and ("table", "public.after_wait") in result.final.objects  # type: ignore[attr-defined]


def test_a_role_chosen_outside_a_transaction_stays_chosen(tmp_path: Path, target: Session) -> None:
    """The check reads as the replay's own role, then gives the migration its role back."""
    middle = (
        "-- poststack:no-transaction\nSET ROLE pg_read_all_data;\n"
        "DO $$ BEGIN IF current_user <> 'pg_read_all_data' THEN RAISE EXCEPTION 'role lost'; END IF; END $$;\n"
    )
    result = _replay(target, tmp_path / "m", middle)
    assert result.stopped is None, result.stopped


def test_an_event_trigger_a_migration_made_sees_no_ddl_of_ours(tmp_path: Path, target: Session) -> None:
    """Once a migration has made an event trigger, only migrations' own DDL fires it (and is
    checked): the reads and the check between migrations make nothing."""
    role = _role()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "001_trap.sql").write_text(
        "CREATE FUNCTION trap() RETURNS event_trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN EXECUTE format('CREATE ROLE %I', '{role}_' || lower(replace(tg_tag, ' ', '_'))); END $$;\n"
        "CREATE EVENT TRIGGER trap ON ddl_command_start EXECUTE FUNCTION trap();\n"
    )
    for number in range(2, 30):
        (tmp_path / "m" / f"{number:03d}_data.sql").write_text("SELECT 1;\n")
    (tmp_path / "m" / "030_view.sql").write_text("CREATE VIEW v AS SELECT 1 AS one;\n")
    migrations = load_migrations(tmp_path / "m").migrations
    try:
        result = replay(lambda: scratch_session(target.url), migrations, DEFAULT_TRACKING)
        assert result.stopped is not None and result.stopped.version == "030", result.stopped
        assert "changed the server's roles" in result.stopped.reason
        assert not target.query("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"{role}%",))
    finally:
        for (name,) in target.query("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"{role}%",)):
            target.query(f'DROP ROLE "{name}"')


@pytest.mark.parametrize("discard", ["-- poststack:no-transaction\nDISCARD ALL;\n", "DISCARD TEMP;\n"])
def test_a_migration_that_discards_the_session_is_still_checked_after(
    discard: str, tmp_path: Path, target: Session
) -> None:
    """DISCARD takes the guard's temporary function with it: the check goes on without it."""
    role = _role()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "001_a.sql").write_text("CREATE TABLE a (id int);\n")
    (tmp_path / "m" / "002_discard.sql").write_text(discard)
    (tmp_path / "m" / "003_b.sql").write_text("CREATE TABLE b (id int);\n")
    (tmp_path / "m" / "004_role.sql").write_text(f"DO $$ BEGIN EXECUTE 'CREATE ROLE {role}'; END $$;\n")
    result = replay(lambda: scratch_session(target.url), load_migrations(tmp_path / "m").migrations, DEFAULT_TRACKING)
    assert result.stopped is not None and result.stopped.version == "004", result.stopped
    assert "changed the server's roles" in result.stopped.reason
    assert not _role_exists(target, role)
