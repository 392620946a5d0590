"""The shadow database replay runs in: a scratch database beside the target, on its server.

Only CREATE, COMMENT ON, ALTER ... SET and DROP DATABASE of the scratch database go to the
target's server, over a connection of their own; they act on the server, not inside the
target database, where nothing but read-only catalog queries run.
The scratch database is dropped when the run ends, by an exception or Ctrl-C too. One left by
a run that was killed (SIGKILL, a lost machine) is dropped by the next run: its name says
which host and process made it, and when (a run killed between CREATE DATABASE and COMMENT
leaves no comment: the name is made in the same statement), and so does its comment, for people.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg2
import psycopg2.extensions

from reconciler import dsn
from reconciler.db import Session, open_raw
from reconciler.liveness import process_alive
from reconciler.statements import quote_ident

SHADOW_PREFIX = "poststack_shadow_"
_MARK = "poststack shadow of "  # the comment: "poststack shadow of host:pid at <ISO time>"
# Another machine's shadow is only known dead by age: a replay takes minutes, not a day.
FOREIGN_LEFTOVER_AGE = timedelta(hours=24)


@dataclass(frozen=True)
class Shadow:
    url: str  # a libpq connection string for the scratch database
    database: str
    server_version_num: int


@dataclass(frozen=True)
class Leftover:
    database: str
    host: str
    pid: int
    made_at: datetime


def shadow_comment(now: datetime | None = None) -> str:
    made = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    return f"{_MARK}{socket.gethostname()}:{os.getpid()} at {made}"


def host_tag(hostname: str | None = None) -> str:
    """This host, in eight characters that fit a database name."""
    return hashlib.sha256((hostname or socket.gethostname()).encode()).hexdigest()[:8]


def shadow_name(now: datetime | None = None) -> str:
    """poststack_shadow_<host>_<pid>_<unix time>_<random>: whose it is, in the name itself."""
    made = int((now or datetime.now(UTC)).timestamp())
    return f"{SHADOW_PREFIX}{host_tag()}_{os.getpid()}_{made}_{uuid.uuid4().hex[:6]}"


def parse_name(database: str) -> Leftover | None:
    parts = database.removeprefix(SHADOW_PREFIX).split("_") if database.startswith(SHADOW_PREFIX) else []
    if len(parts) != 4:
        return None
    tag, pid, made, _ = parts
    try:
        return Leftover(database, tag, int(pid), datetime.fromtimestamp(int(made), UTC))
    except (ValueError, OverflowError, OSError):
        return None


def parse_comment(database: str, comment: str | None) -> Leftover | None:
    """The maker of a scratch database, from its comment; None for anything else."""
    if not database.startswith(SHADOW_PREFIX) or not comment or not comment.startswith(_MARK):
        return None
    who, _, when = comment.removeprefix(_MARK).partition(" at ")
    host, _, pid = who.rpartition(":")
    try:
        return Leftover(database, host, int(pid), datetime.fromisoformat(when))
    except ValueError:
        return None


def is_dead(leftover: Leftover, now: datetime | None = None) -> bool:
    """Made by a run that is gone: on this host, its process is; elsewhere, it is a day old."""

    now = now or datetime.now(UTC)
    if leftover.host in (socket.gethostname(), host_tag()):
        age = (now - leftover.made_at).total_seconds()
        return process_alive(leftover.pid, age) is False
    return now - leftover.made_at > FOREIGN_LEFTOVER_AGE


def drop_leftovers(session: Session) -> tuple[str, ...]:
    """Drop the scratch databases of runs that died; return their names."""
    rows = session.query(
        "SELECT d.datname, shobj_description(d.oid, 'pg_database') FROM pg_database d WHERE d.datname LIKE %s",
        (SHADOW_PREFIX.replace("_", "\\_") + "%",),
    )
    dropped = []
    for name, comment in rows:
        leftover = parse_name(name) or parse_comment(name, comment)
        if leftover is not None and is_dead(leftover):
            _drop(session, name)
            dropped.append(name)
    return tuple(dropped)


def can_create_databases(session: Session) -> bool:
    row = session.query_one("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
    return bool(row and row[0])


@contextmanager
def scratch_shadow(session: Session) -> Iterator[Shadow]:
    """A new, empty scratch database on ``session``'s server, dropped when the block ends."""
    drop_leftovers(session)
    name = shadow_name()
    session.query(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")
    try:
        session.query(f"COMMENT ON DATABASE {quote_ident(name)} IS %s", (shadow_comment(),))
        # Throwaway: a commit need not wait for its WAL to reach the disk (a crash loses nothing
        # anyone needs). Replay commits once a migration, as the real run does.
        session.query(f"ALTER DATABASE {quote_ident(name)} SET synchronous_commit = off")
        version = session.server_info().version_num
        url = psycopg2.extensions.make_dsn(dsn.libpq_url(session.url), dbname=name)
        yield Shadow(url, name, version)
    finally:
        _drop(session, name)


def _drop(session: Session, name: str) -> None:
    # WITH (FORCE): a replay's connection that a Ctrl-C left behind must not keep it alive.
    force = " WITH (FORCE)" if session.server_info().version_num >= 130000 else ""
    with contextlib.suppress(psycopg2.Error):  # else the next run drops it: its comment says whose
        session.query(f"DROP DATABASE IF EXISTS {quote_ident(name)}{force}")


def _wait_until_gone(admin: Session, pid: int) -> None:
    """Until the server process of a closed connection has exited, for 50 ms at most.
    DROP DATABASE finding it still there waits 100 ms at a time; asking is quicker. If it
    is still there after that, DROP waits as it would have anyway: only speed depends on it."""
    deadline = time.monotonic() + 0.05
    with contextlib.suppress(psycopg2.Error):
        while admin.query_one("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)) is not None:
            if time.monotonic() > deadline:
                return
            time.sleep(0.001)


@contextmanager
def scratch_session(target_url: str) -> Iterator[Session]:
    """A connection to a new scratch shadow on the server of ``target_url``; both gone when
    the block ends. The database is made and dropped over a connection of its own, so a
    target session inside a transaction (apply re-diagnosing) is never touched."""
    admin = Session(open_raw(target_url), target_url)
    try:
        with scratch_shadow(admin) as shadow:
            session = Session(open_raw(shadow.url), shadow.url)
            pid = None
            try:
                pid = session.conn.get_backend_pid()
                yield session
            finally:
                session.close()
                if pid is not None:
                    _wait_until_gone(admin, pid)
    finally:
        admin.close()
