"""What a caller hands the API as its database, turned into the URL poststack connects to.

poststack always works on a connection of its own: autocommit, its session-level migration
lock, its session reset between migrations, its own statement and lock timeouts. None of that
may happen to a caller's connection, nor to the transaction a caller has open on it. So an
Engine, a Connection or a psycopg2 connection is read for the parameters it connected with
(its host, port, database, role, password and startup options: what an engine's ``creator``
or ``connect_args`` gave it, too), and poststack connects with those.

A session can differ from a fresh one with the same parameters: ``SET search_path`` (or a
SQLAlchemy ``connect`` event doing it), ``SET ROLE``. Migrating there would land the
migrations somewhere the caller did not mean: ``CallerSession`` is what the caller's session
says, and the API refuses when poststack's own would say otherwise (``session_difference``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extensions

from reconciler.config import mask_url_secrets, masked_url
from reconciler.db import first_line
from reconciler.dsn import libpq_url, url_from_parameters
from reconciler.errors import DatabaseUnavailable, PoststackError, UsageError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

_SESSION_SQL = "SELECT current_setting('search_path'), current_user, current_database()"


@dataclass(frozen=True)
class CallerSession:
    """What the caller's session says: where unqualified names go, and as whom it works."""

    search_path: str
    role: str
    database: str


@dataclass(frozen=True)
class Target:
    """The URL poststack connects to, and, for a live connection handed over, what its session says."""

    url: str
    caller: CallerSession | None = None
    in_transaction: bool = False  # the caller's connection has a transaction open


def target_of(database: object) -> Target:
    """A URL as it is; an Engine, a Connection or a psycopg2 connection read for its parameters."""
    if isinstance(database, str):
        if not database.strip():
            raise UsageError("the database URL is empty")
        return Target(database)
    if isinstance(database, psycopg2.extensions.connection):
        return _from_psycopg2(database, database.info.transaction_status)
    sqlalchemy_kind = _sqlalchemy_kind(database)
    if sqlalchemy_kind == "engine":
        return _from_engine(database)  # type: ignore[arg-type]
    if sqlalchemy_kind == "connection":
        return _from_connection(database)  # type: ignore[arg-type]
    raise UsageError(
        f"cannot use a {type(database).__module__}.{type(database).__qualname__} as the database",
        "Pass a database URL, a SQLAlchemy Engine or Connection, or a psycopg2 connection.",
    )


def _sqlalchemy_kind(database: object) -> str | None:
    """Told without importing SQLAlchemy for callers that never use it."""
    import sys

    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.engine import Connection, Engine

    if isinstance(database, Engine):
        return "engine"
    if isinstance(database, Connection):
        return "connection"
    return None


def _from_engine(engine: Engine) -> Target:
    # A connection as the engine makes them (its creator, connect_args, connect events), from
    # its pool and back to it: read only, no transaction left open.
    from sqlalchemy.exc import SQLAlchemyError

    if engine.dialect.name != "postgresql":
        raise UsageError(f"the engine is for {engine.dialect.name}, not PostgreSQL: {engine.url!r}")
    try:
        connection = engine.connect()
    except (SQLAlchemyError, psycopg2.Error) as e:  # the pool raises the driver's own errors
        reason = mask_url_secrets(first_line(getattr(e, "orig", None) or e), str(engine.url))
        raise DatabaseUnavailable(
            f"cannot connect to {engine.url.render_as_string(hide_password=True)}: {reason}"
        ) from e
    try:
        return _from_connection(connection, pooled=True)
    finally:
        connection.close()


def _from_connection(connection: Connection, *, pooled: bool = False) -> Target:
    """``pooled``: a connection the API took from an engine's pool itself, idle."""
    if connection.closed or connection.invalidated:
        raise UsageError("the SQLAlchemy Connection is closed: pass an open one, or the Engine")
    if connection.engine.dialect.name != "postgresql":
        raise UsageError(f"the engine is for {connection.engine.dialect.name}, not PostgreSQL")
    driver = connection.connection.driver_connection
    if isinstance(driver, psycopg2.extensions.connection):
        status = psycopg2.extensions.TRANSACTION_STATUS_IDLE if pooled else driver.info.transaction_status
        return _from_psycopg2(driver, status, pooled=pooled)
    return _from_other_driver(connection, driver, pooled=pooled)


def _from_other_driver(connection: Connection, driver: object, *, pooled: bool) -> Target:
    """psycopg 3, pg8000, asyncpg's sync shim: read through SQLAlchemy. psycopg 3 says what it
    connected with, as psycopg2 does; another driver, only its engine's URL (its creator's and
    connect_args' settings unseen, but a session they change is still told apart below)."""
    from sqlalchemy.exc import PendingRollbackError, SQLAlchemyError

    info = getattr(driver, "info", None)
    if info is not None and hasattr(info, "get_parameters"):  # psycopg 3
        parameters = {**info.get_parameters(), "host": info.host, "port": str(info.port)}
        parameters.update(dbname=info.dbname, user=info.user, password=info.password or "")
        url = url_from_parameters(parameters)
    else:
        url = libpq_url(connection.engine.url.render_as_string(hide_password=False))
    opened = connection.in_transaction()
    try:
        row = connection.exec_driver_sql(_SESSION_SQL).one()
    except PendingRollbackError as e:
        raise UsageError(f"the connection to {masked_url(url)} is in a failed transaction: roll it back first") from e
    except SQLAlchemyError as e:
        raise PoststackError(f"cannot read the session of the connection to {masked_url(url)}: {first_line(e)}") from e
    finally:
        if not opened and connection.in_transaction():
            connection.rollback()  # the read's own transaction, not the caller's
    caller = CallerSession(str(row[0]), str(row[1]), str(row[2]))
    return Target(url, caller, opened and not pooled)


def _from_psycopg2(conn: psycopg2.extensions.connection, status: int, *, pooled: bool = False) -> Target:
    if conn.closed:
        raise UsageError("the psycopg2 connection is closed: pass an open one, or the database URL")
    parameters = conn.get_dsn_parameters()
    parameters["password"] = conn.info.password or ""
    url = url_from_parameters(parameters)
    in_transaction = status != psycopg2.extensions.TRANSACTION_STATUS_IDLE
    return Target(url, _read_caller_session(conn, url, status), in_transaction and not pooled)


def _read_caller_session(conn: psycopg2.extensions.connection, url: str, status: int) -> CallerSession:
    """Read on the caller's connection, and left as it was: an idle connection's read is
    rolled back (it started the transaction), an open transaction's is part of it."""
    if status == psycopg2.extensions.TRANSACTION_STATUS_INERROR:
        raise UsageError(
            f"the connection to {masked_url(url)} is in a failed transaction: roll it back first",
            "poststack works on a connection of its own, and reads first what your session uses (its search_path and role).",
        )
    try:
        with conn.cursor() as cur:
            cur.execute(_SESSION_SQL)
            row = cur.fetchone()
    except psycopg2.Error as e:
        raise PoststackError(f"cannot read the session of the connection to {masked_url(url)}: {first_line(e)}") from e
    finally:
        if status == psycopg2.extensions.TRANSACTION_STATUS_IDLE and not conn.autocommit and not conn.closed:
            conn.rollback()
    assert row is not None
    return CallerSession(str(row[0]), str(row[1]), str(row[2]))


def read_session(conn: Any) -> CallerSession:
    """The same reading, on a connection poststack opened."""
    with conn.cursor() as cur:
        cur.execute(_SESSION_SQL)
        row = cur.fetchone()
    return CallerSession(str(row[0]), str(row[1]), str(row[2]))


def session_difference(caller: CallerSession, own: CallerSession) -> str | None:
    """How poststack's session would differ from the caller's, in words; None when it would not."""
    if caller.database != own.database:
        return f"it reaches database {own.database}, yours {caller.database}"
    if caller.role != own.role:
        return f"it works as role {own.role}, yours as {caller.role} (SET ROLE?)"
    if caller.search_path != own.search_path:
        return f"its search_path is {own.search_path}, yours {caller.search_path} (SET search_path?)"
    return None
