"""The shadow database replay runs in: a scratch database beside the target, on its server.

Only CREATE DATABASE and DROP DATABASE go to the target's server, over a connection of their
own; they act on the server, not inside the target database, where nothing but read-only catalog queries run.
The scratch database is dropped when the run ends, by an exception or Ctrl-C too. One left by
a run that was killed (SIGKILL, a lost machine) is dropped by the next run: its comment names
the host and process that made it, and when.
"""

from __future__ import annotations

import contextlib
import os
import socket
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
    if leftover.host == socket.gethostname():
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
        leftover = parse_comment(name, comment)
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
    name = f"{SHADOW_PREFIX}{uuid.uuid4().hex[:12]}"
    session.query(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")
    try:
        session.query(f"COMMENT ON DATABASE {quote_ident(name)} IS %s", (shadow_comment(),))
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


@contextmanager
def scratch_session(target_url: str) -> Iterator[Session]:
    """A connection to a new scratch shadow on the server of ``target_url``; both gone when
    the block ends. The database is made and dropped over a connection of its own, so a
    target session inside a transaction (apply re-diagnosing) is never touched."""
    admin = Session(open_raw(target_url), target_url)
    try:
        with scratch_shadow(admin) as shadow:
            session = Session(open_raw(shadow.url), shadow.url)
            try:
                yield session
            finally:
                session.close()
    finally:
        admin.close()
