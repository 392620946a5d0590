"""Connections: the only module that opens one.

A Session is one psycopg2 connection in autocommit mode; transactions are explicit
(BEGIN/COMMIT), so a session-level advisory lock and each step's own transaction live on
the same connection. libpq reads the URL (see dsn).

Between poststack and the server there may be a pooler (docs/poolers.md). Through
transaction pooling (PgBouncer's pool_mode = transaction) each transaction may run on
another server session, so nothing that outlives a transaction (a session-level lock, a SET,
a temporary object, the backend's pid) is this connection's own. ``Session.pooling`` says
which it is: told by the ``pooler`` setting, or found out once per command, when first asked
(detect_pooling), and ``require_session`` refuses in one sentence what needs a session.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from reconciler import dsn, embedded, interrupts
from reconciler.config import POOLER_AUTO, Settings, mask_url, mask_url_secrets, masked_url
from reconciler.errors import DatabaseUnavailable, OperationFailed, PoststackError
from reconciler.statements import Statement

APPLICATION_NAME = "poststack"
BATCH_SEPARATOR = "\n;\n"
CONNECT_TIMEOUT_S = 10
OLD_BACKEND_WAIT_S = 30
# What a migration may leave set on its session, undone before the next one runs (and before
# poststack's own bookkeeping): settings, SET ROLE, and SET SESSION AUTHORIZATION, which
# RESET ALL leaves alone.
RESET_SESSION_SQL = "RESET SESSION AUTHORIZATION; RESET ALL; RESET ROLE"
# PostgreSQL's table lock modes, weakest first, as pg_locks spells them.
LOCK_MODES = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)


@dataclass(frozen=True)
class ServerInfo:
    version: str  # e.g. "15.18"
    version_num: int  # e.g. 150018
    database: str
    user: str
    backend_pid: int

    @property
    def major(self) -> int:
        return self.version_num // 10000


@dataclass(frozen=True)
class DatabaseRef:
    """The database a command worked on, for its report: the URL with its password masked,
    and the embedded server's data directory when it was that server (so a run on a
    throwaway server cannot pass for one on the real database)."""

    url: str
    embedded_dir: Path | None = None
    name: str | None = None  # the database the connection reached (the URL may leave it to PGDATABASE)


def resolve_url(settings: Settings, notify: Callable[[str], None] | None = None) -> str:
    """The URL to connect to, starting the embedded server when the settings chose it; with
    a tenant's search_path when the settings give one."""
    if settings.database_url is not None:
        url = settings.database_url
    else:
        url = embedded.ensure_running(settings.embedded_data_dir)
        if notify:
            notify(
                f"Using embedded PostgreSQL in {settings.embedded_data_dir} "
                "(set POSTSTACK_DATABASE_URL to use another server)"
            )
    return dsn.with_search_path(url, settings.search_path) if settings.search_path else url


def host_pid() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def open_raw(url: str) -> psycopg2.extensions.connection:
    """A psycopg2 connection to ``url`` (as libpq parses it), or DatabaseUnavailable."""
    dsn.parse(url)  # a malformed URL is a usage error, not an unreachable server
    try:
        with _blocking():  # libpq applies connect_timeout (per host of a list) only to a blocking connect
            conn = psycopg2.connect(
                dsn.libpq_url(url),
                application_name=APPLICATION_NAME,
                connect_timeout=CONNECT_TIMEOUT_S,
                cursor_factory=_Cursor,
            )
    except psycopg2.Error as e:
        reason = mask_url_secrets(first_line(e), url)
        detail = None
        if "unsupported startup parameter" in reason:
            # PgBouncer before 1.20 refuses a startup parameter it cannot keep (options: PGOPTIONS,
            # or ?options= in the URL); ignoring it instead would leave the session without it.
            detail = (
                "A connection pooler in between refused a setting the connection asks for at startup "
                "(the URL's options or PGOPTIONS); connect to PostgreSQL directly or through a session pool, "
                "and see docs/poolers.md."
            )
        raise DatabaseUnavailable(f"cannot connect to {masked_url(url)}: {reason}", detail) from e
    conn.autocommit = True
    return conn


def _encoding_name(name: str) -> str:
    return name.upper().replace("-", "").replace("_", "")


def first_line(error: object) -> str:
    """An error's first line, URLs in it masked; its type's name when it says nothing."""
    text = str(error).strip()
    return mask_url(text.splitlines()[0] if text else type(error).__name__)


def server_error_text(error: psycopg2.Error) -> str:
    """The server's message and its detail, on one line, without libpq's decorations."""
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary:
        return first_line(error)
    detail = getattr(diag, "message_detail", None)
    text = f"{primary} ({detail})" if detail else primary
    return mask_url(" ".join(text.split()))


def sqlstate(error: BaseException) -> str | None:
    return getattr(error, "pgcode", None)


# --- what sits between poststack and the server ---------------------------------------------

SESSION_POOLING = "session"  # a server session per connection: no pooler, or a session pool
TRANSACTION_POOLING = "transaction"  # the server session may change after each transaction
STATEMENT_POOLING = "statement"  # ... after each statement: no transaction of several statements
DETECTED = "detected"
PROBE_ROUNDS = 2  # a busy pool may hand the probe another server once; twice is not chance


@dataclass(frozen=True)
class Pooling:
    """How this connection reaches its server session, and how poststack knows: ``source`` is
    DETECTED, or where the ``pooler`` setting came from (``poststack.toml``, ``POSTSTACK_POOLER``)."""

    mode: str  # SESSION_POOLING, TRANSACTION_POOLING or STATEMENT_POOLING
    source: str

    @property
    def keeps_session(self) -> bool:
        return self.mode == SESSION_POOLING

    def describe(self) -> str:
        """transaction pooling (detected), transaction pooling (pooler = "transaction" in poststack.toml)"""
        how = DETECTED if self.source == DETECTED else f'pooler = "{self.mode}" in {self.source}'
        return f"{self.mode} pooling ({how})"


def detect_pooling(session: Session) -> str:
    """Whether ``session`` keeps one server session, found by asking which backend serves it
    and a second connection to the same URL. A direct connection and a session pool give each
    client a backend of its own for its whole life; transaction pooling gives a client a server
    only for a transaction, and PgBouncer hands out the server that went idle last (LIFO), so
    the second connection's transaction lands on the backend the first one just left, or the
    first one's backend changes between two transactions. A transaction of several statements
    that ends the second connection is statement pooling. Done between the session's
    transactions (one left open would keep its server); inside one, a third connection asks."""
    opened: list[psycopg2.extensions.connection] = []

    def another() -> psycopg2.extensions.connection:
        conn = open_raw(session.url)
        opened.append(conn)
        return conn

    def pid(conn: psycopg2.extensions.connection, transaction: bool = False) -> int:
        with conn.cursor() as cur:
            if transaction:
                cur.execute("BEGIN")
            cur.execute("SELECT pg_backend_pid()")
            row = cur.fetchone()
            if transaction:
                cur.execute("COMMIT")
        assert row is not None
        return int(row[0])

    try:
        first = session.conn if not session.in_transaction else another()
        second = another()
        seen_first: set[int] = set()
        seen_second: set[int] = set()
        for _ in range(PROBE_ROUNDS):
            seen_first.add(pid(first))
            try:
                seen_second.add(pid(second, transaction=True))
            except psycopg2.OperationalError as e:
                if second.closed or is_connection_lost(e):
                    return STATEMENT_POOLING
                raise
            if len(seen_first) > 1 or len(seen_second) > 1 or seen_first & seen_second:
                return TRANSACTION_POOLING
        return SESSION_POOLING
    except psycopg2.Error as e:
        raise DatabaseUnavailable(
            f"cannot tell whether a pooler sits between poststack and {masked_url(session.url)}: {first_line(e)}",
            'Say so in the configuration: pooler = "none", "session" or "transaction" (docs/poolers.md).',
        ) from e
    finally:
        for conn in opened:
            conn.close()


def _begin_ends_connection(url: str) -> bool:
    """A BEGIN ends a fresh connection to ``url``: statement pooling (a server that went away
    refuses the connection itself, and says nothing here)."""
    try:
        conn = open_raw(url)
    except DatabaseUnavailable:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("ROLLBACK")
        return False
    except psycopg2.Error as e:
        return conn.closed != 0 or is_connection_lost(e)
    finally:
        conn.close()


def statement_pooling(display_url: str) -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"poststack reads and writes in transactions of several statements, which statement pooling does not "
        f"allow on {display_url}: connect to PostgreSQL directly or through a session or transaction pool",
        "See docs/poolers.md.",
    )


def _pooling_advice(pooling: Pooling) -> str:
    if pooling.source == DETECTED:
        return (
            "See docs/poolers.md; if no pooler hands server connections between clients here, "
            'set pooler = "session" in poststack.toml (or POSTSTACK_POOLER).'
        )
    return f"See docs/poolers.md; the pooler setting comes from {pooling.source}."


# Settings a connection asks for at startup (libpq's options: -c name=value, --name=value).
_OPTION_TOKEN = re.compile(r"(?:\\.|\S)+")


def startup_settings(options: str) -> dict[str, str]:
    """The server settings ``options`` asks for, by name: {"search_path": "tenant_a"}."""
    tokens = [re.sub(r"\\(.)", r"\1", t) for t in _OPTION_TOKEN.findall(options)]
    found: dict[str, str] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token == "-c" and index < len(tokens):
            pair = tokens[index]
            index += 1
        elif token.startswith(("-c", "--")):
            pair = token[2:]
        else:
            continue
        name, sep, value = pair.partition("=")
        if sep:
            found[name.replace("-", "_").lower()] = value
    return found


def _path_items(search_path: str) -> list[str]:
    return [part.strip() for part in search_path.split(",") if part.strip()]


class Session:
    """One connection. ``run`` sends a Statement as written; queries return plain tuples."""

    def __init__(
        self,
        conn: psycopg2.extensions.connection,
        url: str,
        embedded_dir: Path | None = None,
        *,
        pooler: str = POOLER_AUTO,
        pooler_source: str = "default",
    ) -> None:
        self.conn = conn
        self.url = url
        self.embedded_dir = embedded_dir  # the embedded server's data, when it is that server
        self._info: ServerInfo | None = None
        self.round_trips = 0  # statements sent; diagnose must stay constant in history length
        self.reconnected = False  # the first connection was lost and replaced
        # A fleet tenant's schemas (its search_path and tracking schema): the only ones its
        # catalog reads look at, beside those its history names. None: the whole database.
        self.scope: frozenset[str] | None = None
        self.pooler = pooler  # the setting: auto, none, session or transaction
        self.pooler_source = pooler_source
        self._pooling: Pooling | None = None

    @property
    def pooling(self) -> Pooling:
        """How this connection reaches its server session: told, or found out on first asking.
        Statement pooling serves no command (each reads in a transaction of several statements)."""
        if self._pooling is None:
            if self.pooler == POOLER_AUTO:
                # The embedded server is poststack's own: nothing sits in between.
                mode = SESSION_POOLING if self.embedded_dir is not None else detect_pooling(self)
                if mode == STATEMENT_POOLING:
                    raise statement_pooling(self.display_url)
                self._pooling = Pooling(mode, DETECTED)
            elif self.pooler == TRANSACTION_POOLING:
                self._pooling = Pooling(TRANSACTION_POOLING, self.pooler_source)
            else:  # none, session
                self._pooling = Pooling(SESSION_POOLING, self.pooler_source)
            self._refuse_startup_options()
        return self._pooling

    def require_session(self, needs: str) -> None:
        """Refuse, in one sentence and before anything runs, what needs a server session of its
        own: ``needs`` says what, e.g. "db rollback needs a session-level lock"."""
        pooling = self.pooling
        if not pooling.keeps_session:
            raise self._needs_session(needs, pooling)

    def _needs_session(self, needs: str, pooling: Pooling) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            f"{needs}, which {pooling.describe()} does not keep on {self.display_url}: "
            "connect to PostgreSQL directly or through a session-pooling pool",
            _pooling_advice(pooling),
        )

    def _refuse_startup_options(self) -> None:
        """Once the pooling is known: startup options (a tenant's search_path) hold for every
        transaction only on a server session of the connection's own."""
        options = self.conn.info.options
        assert self._pooling is not None
        if self._pooling.keeps_session or not options or not options.strip():
            return
        asked = startup_settings(options)
        what = ", ".join(f"{k}={v}" for k, v in asked.items()) or options.strip()
        raise self._needs_session(
            f"the connection's startup options ({what}) need a server session of its own", self._pooling
        )

    def check_startup_options(self) -> None:
        """A connection that asks for server settings at startup (the URL's options, PGOPTIONS: a
        tenant's search_path) must have them for all it runs. Through transaction pooling it
        cannot (each transaction may run on a server session started for someone else: refused
        once the pooling is known); and a pooler told to ignore them (PgBouncer's
        ignore_startup_parameters = options) drops them without a word, so the search_path
        asked for is read back."""
        options = self.conn.info.options
        if not options or not options.strip():
            return
        asked = startup_settings(options)
        # Told there is transaction pooling: refused at once. Otherwise the probe waits for a
        # command that needs to know (a change; see pooling), so a tenant's status or
        # diagnosis costs no second connection, and reads what its session has.
        if self.pooler == TRANSACTION_POOLING:
            _ = self.pooling
        wanted = asked.get("search_path")
        if wanted is None:
            return
        row = self.query_one("SELECT current_setting('search_path')")
        have = str(row[0]) if row else ""
        if _path_items(have) != _path_items(wanted):
            raise DatabaseUnavailable(
                f"the connection asks for search_path {wanted} in its startup options, but the server session "
                f"on {self.display_url} has {have}: something in between dropped the options",
                "Connect to PostgreSQL directly or through a pool that keeps startup options (not PgBouncer with "
                "ignore_startup_parameters = options); migrations would land in the wrong schema. See docs/poolers.md.",
            )

    @property
    def display_url(self) -> str:
        return masked_url(self.url)

    @property
    def database_ref(self) -> DatabaseRef:
        name = None if self.conn.closed else self.conn.info.dbname
        return DatabaseRef(self.display_url, self.embedded_dir, name)

    def run(self, statement: Statement) -> None:
        self.round_trips += 1
        with self.conn.cursor() as cur:
            if statement.params is None:
                cur.execute(statement.sql)
            else:
                cur.execute(statement.sql, statement.params)

    def client_encoding_changed(self) -> bool:
        """A statement SET client_encoding: the server now decodes in it, while psycopg2 still
        encodes in the one the connection started with."""
        reported = self.conn.info.parameter_status("client_encoding") or ""
        return _encoding_name(reported) != _encoding_name(self.conn.encoding)

    def run_batch(self, statements: Sequence[Statement], *, cancellable: bool = True) -> None:
        """Send ``statements`` in one round trip. The server runs them in order and the first
        error skips the rest. Each is followed by a newline, so a trailing comment cannot
        swallow the separator. Not ``cancellable``: a stop signal waits for the answer (a
        step's COMMIT with its bookkeeping; see interrupts.holding)."""
        self.round_trips += 1
        with self.conn.cursor() as cur, interrupts.holding() if not cancellable else nullcontext():
            cur.execute(BATCH_SEPARATOR.join(self._text(cur, s) for s in statements))

    def bind(self, statement: Statement) -> str:
        """The text ``statement`` is sent as by run_batch: its parameters bound as literals."""
        with self.conn.cursor() as cur:
            return self._text(cur, statement)

    def _text(self, cur: psycopg2.extensions.cursor, statement: Statement) -> str:
        if statement.params is None:
            return statement.sql
        return cur.mogrify(statement.sql, statement.params).decode(psycopg2.extensions.encodings[self.conn.encoding])

    def query(self, sql: str, params: dict[str, Any] | Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        self.round_trips += 1
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    def query_one(self, sql: str, params: dict[str, Any] | Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def begin(self, *, read_only: bool = False) -> None:
        self.round_trips += 1
        try:
            with self.conn.cursor() as cur:
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if read_only else "BEGIN")
        except psycopg2.OperationalError as e:
            # Statement pooling ends the connection at a BEGIN. Its reason reaches psycopg2 only
            # when a wait callback reads it (the CLI); where libpq waits itself (poststack as a
            # library) the connection is simply gone, so a second connection asks.
            lost = self._pooling is None and self.pooler == POOLER_AUTO and is_connection_lost(e)
            if lost and _begin_ends_connection(self.url):
                raise statement_pooling(self.display_url) from e
            raise

    def commit(self) -> None:
        self.round_trips += 1
        with self.conn.cursor() as cur:
            cur.execute("COMMIT")

    def rollback(self) -> None:
        """Roll back whatever is open; a no-op outside a transaction and on a dead connection."""
        if self.conn.closed or self.conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            return
        self.round_trips += 1
        try:
            with self.conn.cursor() as cur:
                cur.execute("ROLLBACK")
        except psycopg2.Error:
            pass

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.begin()
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read-only, repeatable-read transaction: every read sees one moment. Inside an
        open transaction (an assert step re-diagnosing), it reads that transaction's view."""
        if self.in_transaction:
            yield
            return
        self.begin(read_only=True)
        try:
            yield
        finally:
            self.rollback()

    def server_info(self) -> ServerInfo:
        if self._info is None:
            row = self.query_one(
                "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
                "current_database(), current_user, pg_backend_pid()"
            )
            assert row is not None
            self._info = ServerInfo(row[0].split()[0], row[1], row[2], row[3], row[4])
        return self._info

    def reconnect(self) -> bool:
        """Replace a lost connection (to record what happened), once the old backend has
        ended: until then, what it was doing (a COMMIT, say) may still land, and its lock
        row is still its own. False if the server is still away."""
        old = self._info.backend_pid if self._info else None
        try:
            conn = open_raw(self.url)
        except PoststackError:
            return False
        if not self.conn.closed:
            self.conn.close()
        self.conn, self._info = conn, None
        self.reconnected = True
        # Through transaction pooling the backend was the pool's, not this run's: it lives on.
        if old is not None and (self._pooling is None or self._pooling.keeps_session):
            self._wait_for_backend_to_end(old)
        return True

    def _wait_for_backend_to_end(self, pid: int) -> None:
        """A backend whose client went away finishes its statement first; one still running
        after OLD_BACKEND_WAIT_S is ended, so what it did is settled either way."""
        deadline, terminated = time.monotonic() + OLD_BACKEND_WAIT_S, False
        while self.query_one("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)):
            if time.monotonic() > deadline:
                if terminated:
                    return
                self.query("SELECT pg_terminate_backend(%s)", (pid,))
                deadline, terminated = time.monotonic() + 5, True
            time.sleep(0.05)

    def close(self) -> None:
        if not self.conn.closed:
            self.conn.close()


@contextmanager
def connect(settings: Settings, notify: Callable[[str], None] | None = None) -> Iterator[Session]:
    url = resolve_url(settings, notify)
    session = Session(
        open_raw(url),
        url,
        settings.embedded_data_dir if settings.embedded else None,
        pooler=settings.pooler,
        pooler_source=settings.origins.of("pooler"),
    )
    if settings.search_path:
        session.scope = frozenset({*settings.search_path, settings.tracking_schema})
    try:
        with translate_errors(session), cancel_on_signals():
            session.check_startup_options()
            yield session
    finally:
        session.close()


# --- stopping when told (SIGINT, SIGTERM) ---------------------------------------------------
# libpq blocks in C with the GIL released, so a Python signal handler would only run once the
# statement returned. Under a wait callback psycopg2 sends each statement and waits for the
# answer in Python (select), where a signal can be acted on: see interrupts.py.

# COPY ... FROM STDIN / TO STDOUT needs a blocking connection: under a wait callback psycopg2
# refuses it and leaves the connection in COPY state. Such statements wait in libpq.
# Only a statement that is a COPY from the client or to it: a comment, a string or a name
# containing "copy" is an ordinary statement, and stays interruptible.
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_COPY = re.compile(r"^\s*copy\b.*\b(from\s+stdin|to\s+stdout)\b", re.IGNORECASE | re.DOTALL)


class _Cursor(psycopg2.extensions.cursor):
    """Every statement poststack sends: a stop signal that arrives while it runs cancels it
    (wait_for_server) and is raised once the driver has returned (interrupts.statement)."""

    def execute(self, query: Any, vars: Any = None) -> None:
        with interrupts.statement():
            if not _is_copy(query):
                super().execute(query, vars)
                return
            with _blocking():
                try:
                    super().execute(query, vars)
                finally:
                    if self.connection.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_ACTIVE:
                        # psycopg2 refused COPY FROM STDIN / TO STDOUT and left the connection in
                        # COPY state; a blocking statement ends it (libpq's PQexec does).
                        with suppress(psycopg2.Error):
                            super().execute("SELECT 1")


def _is_copy(query: object) -> bool:
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    if not isinstance(query, str):
        return False
    return any(_COPY.search(part) for part in _COMMENTS.sub(" ", query).split(";"))


@contextmanager
def cancel_on_signals() -> Iterator[None]:
    """While poststack works on a database: statements wait in wait_for_server. psycopg2's
    callback is process-wide; it is removed again on the way out (nested uses keep it).
    Only where poststack handles the stop signals (the CLI): used as a library, the callback
    would reach the application's own connections, in every thread, and a Ctrl-C noted for
    them; there libpq waits as it always does, and a Ctrl-C is raised once it returns."""
    if not interrupts.installed() or psycopg2.extensions.get_wait_callback() is not None:
        yield
        return
    psycopg2.extensions.set_wait_callback(wait_for_server)
    try:
        yield
    finally:
        psycopg2.extensions.set_wait_callback(None)


@contextmanager
def _blocking() -> Iterator[None]:
    """No wait callback of poststack's for the block: libpq waits itself. Another callback
    (an application's, green threads') is not poststack's to remove."""
    callback = psycopg2.extensions.get_wait_callback()
    if callback is not wait_for_server:
        yield
        return
    psycopg2.extensions.set_wait_callback(None)
    try:
        yield
    finally:
        psycopg2.extensions.set_wait_callback(callback)


def wait_for_server(conn: psycopg2.extensions.connection) -> None:
    """psycopg2's wait callback: poll the connection and select() on its socket until the
    server has answered. The first stop signal sends the server a cancel request for the
    running statement, as psql does, and keeps waiting for the answer (query_canceled,
    57014); a second one stops waiting: the Signalled raised here makes psycopg2 close the
    connection, and the server rolls back what was open once it notices."""
    interrupts.state.waiting += 1  # the handler leaves signals to this loop
    try:
        while True:
            _act_on_signals(conn)
            try:
                if _poll(conn):
                    return
            except KeyboardInterrupt:  # Python's own SIGINT handler: interrupts.install() was not called
                interrupts.note(signal.SIGINT)
    finally:
        interrupts.state.waiting -= 1


def _act_on_signals(conn: psycopg2.extensions.connection) -> None:
    if not interrupts.pending():
        return
    if len(interrupts.state.received) > 1:
        interrupts.mark_handled()
        raise interrupts.Signalled(interrupts.first(), closed=True)
    if interrupts.state.holding or interrupts.state.shielded:
        return  # a COMMIT or the lock's release is on its way: the signal is raised after it
    interrupts.mark_handled()
    # When the server cannot be reached to cancel, keep waiting: a second signal stops that.
    with suppress(psycopg2.Error):
        conn.cancel()


def _poll(conn: psycopg2.extensions.connection) -> bool:
    """One step of the exchange; True once the server has answered."""
    state = conn.poll()
    if state == psycopg2.extensions.POLL_OK:
        return True
    fd = conn.fileno()
    wake = [interrupts.state.wakeup] if interrupts.state.wakeup is not None else []
    if state == psycopg2.extensions.POLL_READ:
        ready = select.select([fd, *wake], [], [])[0]
    elif state == psycopg2.extensions.POLL_WRITE:
        ready = select.select(wake, [fd], [])[0]
    else:
        raise psycopg2.OperationalError(f"unexpected state from the connection: {state}")
    if wake and wake[0] in ready:
        interrupts.drain_wakeup()
    return False


# SQLSTATEs that end the session: connection exceptions, and the server shutting it down.
_SESSION_ENDING = ("08", "57P01", "57P02", "57P03")


def is_connection_lost(error: BaseException) -> bool:
    """The connection is gone (not merely a statement failing with an OperationalError:
    psycopg2 files many ordinary SQLSTATEs, 55000 for one, under that class)."""
    if isinstance(error, psycopg2.InterfaceError):
        return True
    if not isinstance(error, psycopg2.OperationalError):
        return False
    code = getattr(error, "pgcode", None)
    return code is None or code.startswith(_SESSION_ENDING)


@contextmanager
def translate_errors(session: Session) -> Iterator[None]:
    """Turn a library error that escaped a command into a one-line domain error."""
    try:
        yield
    except PoststackError:
        raise
    except psycopg2.errors.InsufficientPrivilege as e:
        raise DatabaseUnavailable(
            f"permission denied on {session.display_url}: {server_error_text(e)}",
            "Grant the role the privileges poststack needs (docs/privileges.md), or connect as another role.",
        ) from e
    except psycopg2.errors.ReadOnlySqlTransaction as e:
        raise DatabaseUnavailable(
            f"the database session is read-only: {server_error_text(e)}",
            "This command writes; connect as a role that may (docs/privileges.md), or to the primary, not a replica.",
        ) from e
    except psycopg2.Error as e:
        if "statement pooling mode" in str(e):  # PgBouncer ended the connection at a BEGIN
            raise statement_pooling(session.display_url) from e
        if is_connection_lost(e):
            raise DatabaseUnavailable(
                f"lost the connection to {session.display_url}: {first_line(e)}",
                "Nothing after the last completed step was kept; run poststack db migration-status to see where it stopped.",
            ) from e
        raise OperationFailed(f"database error: {server_error_text(e)}") from e
