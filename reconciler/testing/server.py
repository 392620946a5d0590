"""The PostgreSQL server a test session uses: the one ``POSTSTACK_TEST_DATABASE_URL`` names, or
an embedded one of the project's own (``.poststack/pytest-pgdata``, beside the migrations).

The embedded server's data outlives the session, so the migrated template does too (it is
rebuilt only when a migration file changes); the server process does not. Several pytest
processes share it (xdist's workers, two terminals): each signs in under a file lock, and the
last to sign out stops it. A process that was killed cannot sign out: the next one to look
passes over its entry.

Each session's test databases carry in their names the host, the process and when the session
began (as replay's shadow databases do), so the next session on any server drops those of
sessions that are gone: on this host, when their process is (or its pid was taken again
since); from another host, once a day old.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import psycopg2.extensions

from reconciler import dsn, embedded
from reconciler.config import masked_url
from reconciler.db import Session, open_raw
from reconciler.desired.replay.shadow import Leftover, can_create_databases, host_tag, is_dead
from reconciler.dsn import url_from_parameters
from reconciler.errors import DatabaseUnavailable
from reconciler.kept import beside, make_directory
from reconciler.liveness import process_alive
from reconciler.statements import quote_ident

TEST_URL_VARIABLE = "POSTSTACK_TEST_DATABASE_URL"
DATA_DIRECTORY = "pytest-pgdata"
# Databases a session clones for its tests: poststack_t_<host>_<pid>_<session start>_<n>.
CLONE_PREFIX = "poststack_t_"
_SESSION_STARTED = int(time.time())  # this process's session: the module is imported once it starts
_counter = itertools.count()
_HOST_TAG = re.compile(r"[0-9a-f]{8}")
# CREATE DATABASE ... STRATEGY, DROP DATABASE ... WITH (FORCE): the plugin's statements.
MINIMUM_SERVER_VERSION = 130000


@dataclass(frozen=True)
class TestServer:
    """Where the session's databases live. ``admin_url`` reaches a database that is always there."""

    admin_url: str
    embedded_dir: Path | None = None  # the embedded server's data; None: the server in the variable

    __test__ = False  # not a test class, though its name starts with Test

    def url_for(self, database: str) -> str:
        return url_from_parameters({**dsn.parse(self.admin_url), "dbname": database})

    def admin(self) -> psycopg2.extensions.connection:
        """An autocommit connection to ``admin_url``, or DatabaseUnavailable in one line."""
        return open_raw(self.admin_url)

    def keep_running(self) -> None:
        """A test's database was kept to be looked at: the embedded server is left running when
        the last session using it ends (the next session to end stops it)."""
        if self.embedded_dir is not None:
            _keep_running_marker(self.embedded_dir).touch()


def _keep_running_marker(directory: Path) -> Path:
    return directory.with_name(DATA_DIRECTORY + ".keep-running")


def clone_name() -> str:
    """A test database's name: whose it is (this host, this process) and since when."""
    return f"{CLONE_PREFIX}{host_tag()}_{os.getpid()}_{_SESSION_STARTED}_{next(_counter)}"


def clone_maker(name: str) -> Leftover | None:
    """Who made a test database, from its name; None for any other database."""
    parts = name.removeprefix(CLONE_PREFIX).split("_") if name.startswith(CLONE_PREFIX) else []
    if len(parts) != 4 or not _HOST_TAG.fullmatch(parts[0]):
        return None
    tag, pid, started, _ = parts
    try:
        return Leftover(name, tag, int(pid), datetime.fromtimestamp(int(started), UTC))
    except (ValueError, OverflowError, OSError):
        return None


def data_dir(migrations_dir: Path) -> Path:
    return beside(migrations_dir) / DATA_DIRECTORY


@contextlib.contextmanager
def session_server(migrations_dir: Path, environ: dict[str, str] | None = None) -> Iterator[TestServer]:
    """The server for one pytest process, from its first use to the end of the session."""
    env = os.environ if environ is None else environ
    external = env.get(TEST_URL_VARIABLE, "").strip()
    if external:
        server = TestServer(external)
        _check_server(server)
        _drop_left_behind(server)
        yield server
        return
    directory = data_dir(migrations_dir)
    users = directory.with_name(DATA_DIRECTORY + ".users")
    with _locked(directory):
        url = embedded.ensure_running(directory)
        make_directory(users)
        (users / str(os.getpid())).touch()
        server = TestServer(url_from_parameters({**dsn.parse(url), "dbname": "postgres"}), directory)
        _drop_left_behind(server)
    try:
        yield server
    finally:
        with _locked(directory):
            (users / str(os.getpid())).unlink(missing_ok=True)
            if not _live_users(users):
                marker = _keep_running_marker(directory)
                if marker.exists():
                    marker.unlink()
                else:
                    embedded.stop(directory)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    make_directory(directory.parent)
    with open(directory.with_name(DATA_DIRECTORY + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _live_users(users: Path) -> set[int]:
    """The processes signed in that still run; a dead one's entry is removed (one whose pid a
    newer process took is dead too: the entry is older than that process)."""
    live = set()
    now = time.time()
    for entry in users.iterdir() if users.is_dir() else ():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        with contextlib.suppress(FileNotFoundError):
            if process_alive(pid, now - entry.stat().st_mtime) is False:
                entry.unlink(missing_ok=True)
            else:
                live.add(pid)
    return live


def _check_server(server: TestServer) -> None:
    """Every test database is a CREATE DATABASE, dropped WITH (FORCE): said once, in one line,
    before any test runs, when the server or the role cannot."""
    where = f"{TEST_URL_VARIABLE} ({masked_url(server.admin_url)})"
    session = Session(server.admin(), server.admin_url)
    try:
        info = session.server_info()
        may_create = can_create_databases(session)
    finally:
        session.close()
    if info.version_num < MINIMUM_SERVER_VERSION:
        raise DatabaseUnavailable(
            f"the server in {where} is PostgreSQL {info.version}; the test databases need 13 or later"
        )
    if not may_create:
        raise DatabaseUnavailable(
            f"role {info.user} in {where} may not create databases, and every test's database is one: "
            "ALTER ROLE ... CREATEDB, or use a role that may"
        )


def _drop_left_behind(server: TestServer) -> None:
    """The test databases of sessions that are gone."""
    conn = server.admin()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (CLONE_PREFIX,))
            for (name,) in cur.fetchall():
                maker = clone_maker(name)
                if maker is not None and is_dead(maker):
                    with contextlib.suppress(psycopg2.Error):
                        cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    finally:
        conn.close()
