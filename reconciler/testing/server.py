"""The PostgreSQL server a test session uses: the one ``POSTSTACK_TEST_DATABASE_URL`` names, or
an embedded one of the project's own (``.poststack/pytest-pgdata``, beside the migrations).

The embedded server's data outlives the session, so the migrated template does too (it is
rebuilt only when a migration file changes); the server process does not. Several pytest
processes share it (xdist's workers, two terminals): each signs in under a file lock, and the
last to sign out stops it. A process that was killed cannot sign out: the next one to look
passes over its entry, and drops the databases it left.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.extensions

from reconciler import dsn, embedded
from reconciler.config import mask_url_secrets, masked_url
from reconciler.dsn import url_from_parameters
from reconciler.errors import DatabaseUnavailable
from reconciler.kept import beside, make_directory

TEST_URL_VARIABLE = "POSTSTACK_TEST_DATABASE_URL"
DATA_DIRECTORY = "pytest-pgdata"
# Databases a session clones for its tests: poststack_t_<pid>_<n>; a killed session's are dropped.
CLONE_PREFIX = "poststack_t_"
_CLONE = re.compile(rf"^{CLONE_PREFIX}(\d+)_\d+$")


@dataclass(frozen=True)
class TestServer:
    """Where the session's databases live. ``admin_url`` reaches a database that is always there."""

    admin_url: str
    embedded_dir: Path | None = None  # the embedded server's data; None: the server in the variable

    __test__ = False  # not a test class, though its name starts with Test

    def url_for(self, database: str) -> str:
        return url_from_parameters({**dsn.parse(self.admin_url), "dbname": database})

    def admin(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(dsn.libpq_url(self.admin_url))
        conn.autocommit = True
        return conn

    def keep_running(self) -> None:
        """A test's database was kept to be looked at: the embedded server is left running when
        the last session using it ends (the next session to end stops it)."""
        if self.embedded_dir is not None:
            _keep_running_marker(self.embedded_dir).touch()


def _keep_running_marker(directory: Path) -> Path:
    return directory.with_name(DATA_DIRECTORY + ".keep-running")


def data_dir(migrations_dir: Path) -> Path:
    return beside(migrations_dir) / DATA_DIRECTORY


@contextlib.contextmanager
def session_server(migrations_dir: Path, environ: dict[str, str] | None = None) -> Iterator[TestServer]:
    """The server for one pytest process, from its first use to the end of the session."""
    env = os.environ if environ is None else environ
    external = env.get(TEST_URL_VARIABLE, "").strip()
    if external:
        server = TestServer(external)
        _require_createdb(server)
        yield server
        return
    directory = data_dir(migrations_dir)
    users = directory.with_name(DATA_DIRECTORY + ".users")
    with _locked(directory):
        url = embedded.ensure_running(directory)
        make_directory(users)
        (users / str(os.getpid())).touch()
        server = TestServer(url_from_parameters({**dsn.parse(url), "dbname": "postgres"}), directory)
        _drop_left_behind(server, _live_users(users))
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
    """The processes signed in that still run; a dead one's entry is removed."""
    live = set()
    for entry in users.iterdir() if users.is_dir() else ():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if _alive(pid):
            live.add(pid)
        else:
            entry.unlink(missing_ok=True)
    return live


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _require_createdb(server: TestServer) -> None:
    """Every test database is a CREATE DATABASE: said once, in one line, before any test runs."""
    try:
        conn = server.admin()
    except psycopg2.Error as e:
        reason = mask_url_secrets(str(e).strip().splitlines()[0], server.admin_url)
        raise DatabaseUnavailable(
            f"cannot connect to {TEST_URL_VARIABLE} ({masked_url(server.admin_url)}): {reason}"
        ) from e
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
            row = cur.fetchone()
    finally:
        conn.close()
    if row is not None and not row[1]:
        raise DatabaseUnavailable(
            f"role {row[0]} in {TEST_URL_VARIABLE} ({masked_url(server.admin_url)}) may not create databases, "
            "and every test's database is one: ALTER ROLE ... CREATEDB, or use a role that may"
        )


def _drop_left_behind(server: TestServer, live: set[int]) -> None:
    """The test databases of sessions that were killed (this server is this machine's)."""
    conn = server.admin()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (CLONE_PREFIX + "%",))
            names = [row[0] for row in cur.fetchall()]
            for name in names:
                match = _CLONE.match(name)
                if match and int(match[1]) not in live:
                    with contextlib.suppress(psycopg2.Error):
                        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()
