"""The migration lock: a session-level advisory lock plus the lock row that names its holder.

The advisory lock is what serializes runs; the server drops it when a run's connection
dies, so a crash never blocks forever. The lock row is what a crash leaves behind: a row
whose holder is no longer a live backend is a stuck lock, reported at once and never
waited on. A killed run's backend outlives its process until its statement ends (it only
notices the vanished client when it next writes to it): that lock is neither a live run
nor safe to clear, and is reported as such, with both ways out.

Through transaction pooling (docs/poolers.md) a session-level lock is not the run's own: it
stays with a server session the pooler hands to others. There ``db migrate`` takes the same
key for each migration's transaction only (lock_transaction), and everything else that needs
the lock is refused in one sentence before anything runs (Session.require_session).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2.errors

from reconciler import interrupts
from reconciler.config import DEFAULT_TABLE_PREFIX, TrackingLocation
from reconciler.db import Session, host_pid
from reconciler.errors import LockTimeout
from reconciler.observed import tracking
from reconciler.statements import Statement

LOCKED = "migration system is locked"
HOLDER_UNKNOWN = "holder unknown (it may have just finished)"
WAIT_FIX = "poststack db clean --locks --confirm --wait"
TERMINATE_FIX = "poststack db clean --locks --confirm --terminate"


def orphan_advice(state: tracking.LockState) -> str:
    """What to do about a lock whose poststack process is gone while its backend still runs."""
    return (
        f"No run is migrating: backend {state.backend_pid} only finishes that statement, and notices its client "
        f"is gone when it does. Wait for it to end, then release the lock: {WAIT_FIX} (waits up to "
        f"--lock-timeout); or end it now: {TERMINATE_FIX}."
    )


def advisory_key(location: TrackingLocation) -> int:
    """A stable signed 64-bit key for the lock of the tracking tables at ``location``: two
    prefixes in one schema are two histories, locked apart. The default prefix keeps the key
    poststack used before prefixes could be set, so a run of an older poststack still
    excludes a run of this one (a schema name has no ":", so no two locations share a key)."""
    name = location.schema if location.prefix == DEFAULT_TABLE_PREFIX else f"{location.schema}:{location.prefix}"
    digest = hashlib.sha256(f"poststack:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


_ADVISORY_HOLDER = (
    "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %(hi)s::bigint::oid "
    "AND l.objid = %(lo)s::bigint::oid AND l.objsubid = 1 "
    # Advisory locks belong to a database: the same key taken in another one is not ours.
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _key_parts(location: TrackingLocation) -> dict[str, int]:
    key = advisory_key(location) & 0xFFFFFFFFFFFFFFFF
    return {"hi": key >> 32, "lo": key & 0xFFFFFFFF}


def advisory_holder_pid(session: Session, location: TrackingLocation) -> int | None:
    """The backend holding the advisory lock now, if any."""
    row = session.query_one(f"SELECT l.pid {_ADVISORY_HOLDER}", _key_parts(location))
    return row[0] if row else None


def describe_advisory_holder(session: Session, location: TrackingLocation) -> str:
    """Who holds the advisory lock now, from pg_locks and pg_stat_activity."""
    row = session.query_one(
        "SELECT l.pid, a.application_name, host(a.client_addr), "
        "       extract(epoch FROM now() - a.xact_start)::float8, extract(epoch FROM now() - a.backend_start)::float8 "
        f"{_ADVISORY_HOLDER}",
        _key_parts(location),
    )
    if row is None:
        return HOLDER_UNKNOWN
    pid, app, addr, _xact_age, session_age = row
    age = f"{session_age:.0f}s" if session_age is not None else "unknown age"
    return f"backend pid {pid}, application {app or 'unknown'}, client {addr or 'local'}, session age {age}, alive"


SESSION_LOCK = "needs a session-level lock"


@contextmanager
def advisory_only(
    session: Session, location: TrackingLocation, timeout_s: float, command: str = "this command"
) -> Iterator[None]:
    """Hold only the advisory lock: for work on the tracking tables themselves
    (creating or recreating them), where the lock row may not exist."""
    session.require_session(f"{command} {SESSION_LOCK}")
    _acquire_advisory(session, location, timeout_s)
    try:
        yield
    finally:
        with interrupts.shielded():  # a stop signal lets the release finish
            _release_advisory(session, location)


@dataclass(frozen=True)
class HeldLock:
    acquired: bool  # False: its holder is a backend the block itself ends
    waited: bool  # another run held it when it was first asked for


@contextmanager
def migration_lock(
    session: Session,
    location: TrackingLocation,
    timeout_s: float,
    prepare: Callable[[], None] | None = None,
    take_row: bool = True,
    ending: frozenset[int] = frozenset(),
    command: str = "this command",
) -> Iterator[HeldLock]:
    """Hold the migration lock for the block.

    Waits up to ``timeout_s`` for another live run; fails at once on a lock row left by
    a run that is no longer alive. ``prepare`` runs once the advisory lock is held and
    before the lock row is read (it creates the tracking tables when they are absent).
    ``ending``: backends the block itself ends (a plan that terminates the lock's holder);
    their advisory lock is not waited for, or the block could never run. ``command`` names
    the command in the refusal through transaction pooling."""
    session.require_session(f"{command} {SESSION_LOCK}")
    held = _acquire_advisory(session, location, timeout_s, ending)
    taken = False
    own_pid = session.server_info().backend_pid
    try:
        if prepare is not None:
            prepare()
        if not take_row:
            # A plan that releases a stuck lock (or creates the tables) runs under the
            # advisory lock alone: it is the one that clears the row.
            yield held
            return
        state = tracking.read_lock(session, location)
        if state.locked:
            raise row_locked(state)
        if session.conn.closed:
            return
        # Marked first: the UPDATE commits at once, and a stop signal raised as it returns
        # must still release it (the release matches only this backend's own row).
        taken = True
        # The row says what the run is doing: a fleet's re-run takes over only a dead migrate's.
        named = None if command == "this command" else command
        session.run(tracking.take_lock_row_statement(location, host_pid(), named))
        yield held
    finally:
        # A run that ends alive, even by failing or after reconnecting, releases the row.
        # Only a process that dies leaves it set: the stuck lock diagnose reports. A stop
        # signal lets the release finish (a second one does not).
        with interrupts.shielded():
            if taken and not session.conn.closed:
                try:
                    session.rollback()
                    session.run(tracking.release_lock_row_statement(location, own_pid))
                except psycopg2.Error:
                    pass
            if held.acquired:
                _release_advisory(session, location)


def row_locked(state: tracking.LockState) -> LockTimeout:
    """The lock row is set while its advisory lock is free (this run holds it): who set it,
    and what to do."""
    if state.orphaned:
        detail = orphan_advice(state)
    elif state.holder_alive:
        detail = "Another process set the lock row without poststack's advisory lock; wait for it or stop it."
    elif state.client_alive:
        detail = (
            "Its poststack process lost its connection and still runs; it releases the lock as it ends. "
            "If it does not, see poststack db diagnose, then poststack db unlock-migrations --confirm."
        )
    else:
        detail = (
            "The run that held it is gone (crashed or killed) and may have stopped mid-way. "
            "See poststack db diagnose, then release it with poststack db unlock-migrations --confirm."
        )
    return LockTimeout(f"{LOCKED}: {state.describe()}", detail)


def lock_transaction(session: Session, location: TrackingLocation, timeout_s: float) -> None:
    """Through transaction pooling: open a transaction that holds the advisory lock's key until
    it ends (pg_try_advisory_xact_lock), waiting up to ``timeout_s`` for another run, which
    holds it for one transaction (through a pooler) or for its whole run (connected directly).

    Read committed, whatever the database's default: each later statement then sees what
    committed before the lock was had (a run that held it wrote its rows first), where a
    repeatable-read snapshot taken by the statement that waited would not. As
    _acquire_advisory, it polls and holds nothing between tries: a direct run's CREATE INDEX
    CONCURRENTLY waits for every older snapshot, a waiting statement's too."""
    key = {"key": advisory_key(location)}
    deadline = time.monotonic() + timeout_s
    pause = 0.02
    while True:
        got = session.query_one("BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_try_advisory_xact_lock(%(key)s)", key)
        if got and got[0]:
            return
        session.rollback()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _busy(session, location, timeout_s)
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.5)


def _acquire_advisory(
    session: Session, location: TrackingLocation, timeout_s: float, ending: frozenset[int] = frozenset()
) -> HeldLock:
    """Poll for the advisory lock. Waiting inside pg_advisory_lock() would hold a snapshot
    for the whole wait, and the holder's CREATE INDEX CONCURRENTLY waits for every older
    snapshot to end: the two would wait for each other until the deadlock detector killed
    one. Between tries this session holds nothing. Not held when its holder is one of the
    backends in ``ending``."""
    key = advisory_key(location)
    deadline = time.monotonic() + timeout_s
    pause = 0.02
    tries = 0
    while True:
        tries += 1
        got = session.query_one("SELECT pg_try_advisory_lock(%(key)s)", {"key": key})
        if got and got[0]:
            return HeldLock(True, waited=tries > 1)
        if ending and advisory_holder_pid(session, location) in ending:
            return HeldLock(False, waited=True)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.5)
    # Timed out. The lock may change hands between the last try and naming its holder:
    # try again and look again a few times, so the error names whoever holds it.
    for _ in range(3):
        busy = _busy(session, location, timeout_s)
        if busy.holder_known:
            raise busy
        got = session.query_one("SELECT pg_try_advisory_lock(%(key)s)", {"key": key})
        if got and got[0]:
            return HeldLock(True, waited=True)
    raise busy


def _release_advisory(session: Session, location: TrackingLocation) -> None:
    if session.conn.closed or session.reconnected:
        return  # the server released it with the connection that held it
    try:
        session.rollback()
        session.query("SELECT pg_advisory_unlock(%(key)s)", {"key": advisory_key(location)})
    except psycopg2.Error:
        pass


def _busy(session: Session, location: TrackingLocation, timeout_s: float) -> LockTimeout:
    session.rollback()  # the failed lock wait aborted nothing, but be sure no transaction is open
    tables = tracking.existing_tables(session, location)
    row_state = tracking.read_lock(session, location) if location.lock_table in tables else None
    holder = row_state.describe() if row_state and row_state.locked else describe_advisory_holder(session, location)
    if row_state is not None and row_state.orphaned:
        detail = orphan_advice(row_state)  # no run is migrating: only its backend lingers
    elif row_state is not None and row_state.offline:
        detail = "An offline script is migrating (psql). Wait for it to finish, or raise --lock-timeout."
    else:
        detail = "Another poststack run is migrating. Wait for it to finish, or raise --lock-timeout."
    error = LockTimeout(f"{LOCKED}: waited {timeout_s:g}s; {holder}", detail)
    error.holder_known = holder != HOLDER_UNKNOWN
    return error


# --- the lock in an offline script (db migrate --dry-run --format sql) -------------------------
# psql runs the script on one session: it takes the same advisory lock, without waiting (a
# wait inside pg_advisory_lock would hold a snapshot a CREATE INDEX CONCURRENTLY of the
# holder waits for), and the same lock row. An error stops the script (ON_ERROR_STOP) and
# ends the session, which drops the advisory lock; a lock row it took stays set, as a killed
# run leaves it, for db diagnose to report.


def offline_acquire_statement(location: TrackingLocation) -> Statement:
    """Take the advisory lock, or stop the script at once."""
    return Statement(
        "DO $poststack$\n"
        "BEGIN\n"
        "    IF NOT pg_try_advisory_lock(%(key)s) THEN\n"
        f"        RAISE EXCEPTION 'poststack: {LOCKED} (another run holds it); nothing was run';\n"
        "    END IF;\n"
        "END\n"
        "$poststack$",
        {"key": advisory_key(location)},
    )


def offline_take_row_statements(location: TrackingLocation, holder: object) -> list[Statement]:
    """Refuse a lock row left set (a run that stopped), then take it in ``holder``'s name."""
    check = Statement(
        "DO $poststack$\n"
        "BEGIN\n"
        f"    IF EXISTS (SELECT 1 FROM {location.lock_sql} WHERE id = 1 AND locked) THEN\n"
        f"        RAISE EXCEPTION 'poststack: {LOCKED} by a run that may have stopped mid-way; nothing was run'\n"
        "            USING HINT = 'See poststack db diagnose, then poststack db unlock-migrations --confirm.';\n"
        "    END IF;\n"
        "END\n"
        "$poststack$"
    )
    return [check, tracking.take_lock_row_statement(location, holder)]


def offline_release_statements(location: TrackingLocation) -> list[Statement]:
    """Release the lock row this session took, then the advisory lock."""
    unlock = Statement(
        "DO $poststack$\nBEGIN\n    PERFORM pg_advisory_unlock(%(key)s);\nEND\n$poststack$",
        {"key": advisory_key(location)},
    )
    return [tracking.release_own_lock_row_statement(location), unlock]
