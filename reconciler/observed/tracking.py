"""The tracking, lock and audit tables: their DDL, typed reads, and the statements that write them.

Where they are is a TrackingLocation (config): a schema, and a prefix for their names,
``schema_`` unless configured. ``<prefix>migrations`` has one row per application of a
migration (no unique version: duplicates must be representable to be diagnosed).
``<prefix>migrations_lock`` has one row naming who holds the migration lock.
``<prefix>migrations_audit`` is append-only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from reconciler import liveness
from reconciler.config import TrackingLocation
from reconciler.desired.versions import VersionKey, version_key
from reconciler.statements import Statement, quote_ident

# Params the executor fills in when a statement runs (a measurement, the server's error).
RUNTIME_PARAMS = frozenset({"execution_ms", "error"})


def _odd_key(version: str) -> VersionKey:
    return VersionKey((-1 - int(hashlib.sha256(version.encode()).hexdigest()[:12], 16),))


@dataclass(frozen=True)
class TrackingRow:
    id: int
    version: str
    description: str
    checksum: str | None
    checksum_algorithm: str
    applied_at: datetime
    applied_by: str
    execution_ms: int | None
    success: bool
    error: str | None
    transactional: bool

    @property
    def recorded_without_running(self) -> bool:
        """Recorded by db recover (or by hand), not run by poststack: it has no execution time."""
        return self.execution_ms is None

    @property
    def key(self) -> VersionKey:
        # A version that is not one (another tool's row) gets a key of its own, below every
        # real one, so such rows are never lumped together.
        return version_key(self.version) or _odd_key(self.version)


# locked_by of an offline script (psql runs it: no poststack process to check on).
OFFLINE_HOST = "psql"


@dataclass(frozen=True)
class LockState:
    """The lock row, and whether the run it names is alive: its backend (seen from the
    server) and its poststack process (seen only from that process's own host)."""

    locked: bool
    locked_at: datetime | None
    locked_by: str | None  # host:pid of the poststack process
    backend_pid: int | None
    application_name: str | None
    age_s: float | None
    backend_alive: bool  # the row's backend is still connected (false when not locked)
    backend_state: str | None = None  # that backend's pg_stat_activity.state: active, idle in transaction, ...
    backend_query: str | None = None  # the start of its current (or last) statement
    backend_query_s: float | None = None  # seconds since that statement started
    client_alive: bool | None = None  # the poststack process; None: cannot be checked from here
    client_local: bool = False  # locked_by names this machine, so its process could be checked

    @property
    def holder_alive(self) -> bool:
        """The run holding the lock is alive: its backend is connected and its process is
        not known to be gone. A locked row whose holder is not alive is a stuck lock."""
        return self.locked and self.backend_alive and self.client_alive is not False

    @property
    def orphaned(self) -> bool:
        """The poststack process is gone but its backend still runs (its last statement,
        until it next writes to the vanished client): neither live nor safe to clear."""
        return self.locked and self.backend_alive and self.client_alive is False

    @property
    def offline(self) -> bool:
        """Held by an offline script (psql), not by a poststack process."""
        return bool(self.locked_by) and self.locked_by.startswith(f"{OFFLINE_HOST}:")

    @property
    def host(self) -> str | None:
        return (self.locked_by.rpartition(":")[0] or None) if self.locked_by else None

    def activity(self) -> str | None:
        """What the row's backend is doing, in words, if it is connected."""
        if not self.backend_alive or self.backend_state is None:
            return None
        query = f"`{self.backend_query}`" if self.backend_query else "a statement"
        took = f" (for {self.backend_query_s:.0f}s)" if self.backend_query_s is not None else ""
        if self.backend_state == "active":
            return f"running {query}{took}"
        if self.backend_state.startswith("idle in transaction"):
            return f"{self.backend_state}, after {query}"
        return self.backend_state

    def describe(self) -> str:
        if not self.locked:
            return "not locked"
        age = f"{self.age_s:.0f}s" if self.age_s is not None else "unknown age"
        head = (
            f"held by {self.locked_by or 'unknown'} (backend pid {self.backend_pid}, "
            f"application {self.application_name or 'unknown'}, age {age}"
        )
        if self.orphaned:
            doing = self.activity() or "connected"
            return f"{head}): that poststack process is gone; its backend pid {self.backend_pid} is still {doing}"
        text = f"{head}, {'alive' if self.backend_alive else 'not alive'})"
        if self.backend_alive:
            doing = self.activity()
            text += f"; its backend is {doing}" if doing else ""
            if self.offline:
                text += "; it is an offline script run by psql (db migrate --dry-run --format sql)"
            elif self.client_alive is None and self.host and not self.client_local:
                text += f"; {self.host} is another host, so its process cannot be checked from here"
            elif self.client_alive is None:
                text += "; its process cannot be checked"
        elif self.client_alive:
            text += "; that poststack process is still running (it lost its connection)"
        return text


QUERY_SHOWN = 60  # characters of the holder backend's statement that are shown


def query_start(query: str | None) -> str | None:
    """The start of a statement on one line, as a lock's description shows it."""
    if not query:
        return None
    flat = " ".join(query.split())
    return flat if len(flat) <= QUERY_SHOWN else flat[: QUERY_SHOWN - 1].rstrip() + "…"


def create_statements(location: TrackingLocation) -> list[Statement]:
    m, lock, audit = location.migrations_sql, location.lock_sql, location.audit_sql
    statements = []
    if location.schema != "public":
        statements.append(Statement(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(location.schema)}"))
    statements += [
        Statement(
            f"CREATE TABLE IF NOT EXISTS {m} (\n"
            "    id bigserial PRIMARY KEY,\n"
            "    version text NOT NULL,\n"
            "    description text NOT NULL,\n"
            "    checksum text,\n"
            "    checksum_algorithm text NOT NULL DEFAULT 'sha256-lf',\n"
            "    applied_at timestamptz NOT NULL DEFAULT now(),\n"
            "    applied_by text NOT NULL DEFAULT current_user,\n"
            "    execution_ms integer,\n"
            "    success boolean NOT NULL,\n"
            "    error text,\n"
            "    transactional boolean NOT NULL DEFAULT true\n"
            ")"
        ),
        Statement(f"CREATE INDEX IF NOT EXISTS {quote_ident(location.version_index)} ON {m} (version)"),
        Statement(
            f"CREATE TABLE IF NOT EXISTS {lock} (\n"
            "    id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),\n"
            "    locked boolean NOT NULL DEFAULT false,\n"
            "    locked_at timestamptz,\n"
            "    locked_by text,\n"
            "    backend_pid integer,\n"
            "    application_name text\n"
            ")"
        ),
        Statement(f"INSERT INTO {lock} (id, locked) VALUES (1, false) ON CONFLICT (id) DO NOTHING"),
        Statement(
            f"CREATE TABLE IF NOT EXISTS {audit} (\n"
            "    id bigserial PRIMARY KEY,\n"
            "    at timestamptz NOT NULL DEFAULT clock_timestamp(),\n"
            "    actor text NOT NULL DEFAULT current_user,\n"
            "    host_pid text NOT NULL,\n"
            "    operation text NOT NULL,\n"
            "    plan_hash text,\n"
            "    step integer,\n"
            "    action text,\n"
            "    version text,\n"
            "    outcome text NOT NULL,\n"
            "    detail text\n"
            ")"
        ),
    ]
    return statements


def reset_tables(location: TrackingLocation) -> tuple[str, str]:
    """What a reset drops. The audit table is append-only and stays: it is what remembers,
    after the tracking rows are rebuilt from the catalog, which migrations poststack ran."""
    return (location.migrations_table, location.lock_table)


def drop_statements(location: TrackingLocation) -> list[Statement]:
    return [Statement(f"DROP TABLE IF EXISTS {t} CASCADE") for t in (location.migrations_sql, location.lock_sql)]


# The columns poststack reads, per table (by its TrackingLocation property); a table of the
# same name without them belongs to another tool.
REQUIRED_COLUMNS = {
    "migrations_table": frozenset(
        {
            "id",
            "version",
            "description",
            "checksum",
            "checksum_algorithm",
            "applied_at",
            "applied_by",
            "execution_ms",
            "success",
            "error",
            "transactional",
        }
    ),
    "lock_table": frozenset({"id", "locked", "locked_at", "locked_by", "backend_pid", "application_name"}),
    "audit_table": frozenset(
        {"id", "at", "actor", "host_pid", "operation", "plan_hash", "step", "action", "version", "outcome", "detail"}
    ),
}


def existing_tables(session: Any, location: TrackingLocation) -> set[str]:
    """poststack's tables present at ``location``. A table of one of their names that another
    tool made (dbmate, Rails and golang-migrate all use schema_migrations) is refused."""
    # By name through pg_class's (relname, relnamespace) index, and each table's columns through
    # pg_attribute's: a database of many tenants' tables is not scanned.
    rows = session.query(
        "SELECT c.relname, ARRAY(SELECT a.attname::text FROM pg_attribute a "
        "                        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) "
        "FROM pg_class c "
        "WHERE c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = %(schema)s) "
        "AND c.relname = ANY(%(tables)s)",
        {"schema": location.schema, "tables": list(location.tables)},
    )
    required = {getattr(location, role): columns for role, columns in REQUIRED_COLUMNS.items()}
    for name, columns in rows:
        missing = required[name] - set(columns)
        if missing:
            from reconciler.errors import DatabaseUnavailable

            tool = _foreign_tool(session, location.schema, frozenset(columns))
            listed = ", ".join(sorted(columns)) or "none"
            raise DatabaseUnavailable(
                f"{location.schema}.{name} belongs to another tool ({tool}; its columns: {listed}), "
                f"and poststack will not touch it: {keep_apart(location)}",
            )
    return {r[0] for r in rows}


def keep_apart(location: TrackingLocation) -> str:
    """How to choose another location for poststack's tables, with examples other than ``location``."""
    schema = "poststack" if location.schema != "poststack" else "poststack_tracking"
    prefix = "poststack_" if location.prefix != "poststack_" else "poststack_tracking_"
    return (
        f"keep poststack's tables apart with --schema {schema} or --table-prefix {prefix} (or POSTSTACK_SCHEMA "
        "or POSTSTACK_TABLE_PREFIX, or tracking_schema or table_prefix in poststack.toml)"
    )


def _foreign_tool(session: Any, schema: str, columns: frozenset[str]) -> str:
    """Which tool made a table at poststack's tracking location, from its columns (most are
    another tool's schema_migrations). Read only on the way to refusing it."""
    if columns == {"version", "dirty"}:
        return "it looks like golang-migrate's"
    if columns == {"version"}:
        rails = session.query_one(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %(schema)s AND c.relname = 'ar_internal_metadata'",
            {"schema": schema},
        )
        return "it looks like Rails's" if rails else "it looks like dbmate's (or Rails's)"
    return "not one poststack recognizes"


def read_rows(session: Any, location: TrackingLocation) -> list[TrackingRow]:
    rows = session.query(
        "SELECT id, version, description, checksum, checksum_algorithm, applied_at, applied_by, "
        f"execution_ms, success, error, transactional FROM {location.migrations_sql} ORDER BY id"
    )
    return [TrackingRow(*r) for r in rows]


def read_lock(session: Any, location: TrackingLocation) -> LockState:
    """The lock row, its backend as pg_stat_activity shows it, and, when the row names this
    machine, whether its poststack process still runs (observed here, so checks stay pure)."""
    row = session.query_one(
        "SELECT l.locked, l.locked_at, l.locked_by, l.backend_pid, l.application_name, "
        "       extract(epoch FROM now() - l.locked_at)::float8, "
        "       l.locked AND a.pid IS NOT NULL, a.state, left(a.query, 500), "
        "       extract(epoch FROM clock_timestamp() - a.query_start)::float8 "
        f"FROM {location.lock_sql} l "
        # The function behind pg_stat_activity, asked for the one backend: the view's joins
        # cost a fresh connection more to plan than the whole read. (Given NULL it answers
        # for every backend, hence the first condition.)
        "LEFT JOIN LATERAL (SELECT s.pid, s.state, s.query, s.query_start "
        "                   FROM pg_stat_get_activity(l.backend_pid) s "
        "                   WHERE l.backend_pid IS NOT NULL AND s.pid = l.backend_pid "
        # A backend that started after the lock was taken reuses the pid: not the holder.
        "                     AND (s.backend_start IS NULL OR s.backend_start <= l.locked_at) "
        # A row copied from another database (pg_dump | psql) names that database's backend.
        "                     AND s.datid = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())"
        ") a ON true "
        "WHERE l.id = 1"
    )
    if row is None:
        return LockState(False, None, None, None, None, None, False)
    locked, locked_at, locked_by, backend_pid, application, age_s, backend_alive, state, query, query_s = row
    if not backend_alive or state is None:  # gone, or its activity is hidden from this role
        state, query, query_s = None, None, None
    elif query_s is not None:
        query_s = max(query_s, 0.0)  # the two clock readings may race by a hair
    client_alive, client_local = None, False
    if locked:
        pid = liveness.local_pid(locked_by)
        client_local = pid is not None
        client_alive = liveness.process_alive(pid, age_s) if pid is not None else None
        if client_alive is False and backend_alive and state is not None and state != "active":
            # A backend between statements reads from its client, and ends as soon as that
            # client is gone: this one's client lives, in a process this host cannot see (a
            # container sharing the host name, another pid namespace).
            client_alive = None
    return LockState(
        locked,
        locked_at,
        locked_by,
        backend_pid,
        application,
        age_s,
        bool(backend_alive),
        state,
        query_start(query),
        query_s,
        client_alive,
        client_local,
    )


# The error of the failed row a migration run outside a transaction starts with (before its
# first statement): what a run killed part way through it leaves behind. How its last
# statement ended is not known, so nothing may take it for a clean failure.
STARTED_NOT_FINISHED = (
    "started outside a transaction, and the run ended before it finished or recorded a failure "
    "(killed, or its connection lost): the statements it had run are kept"
)


def insert_row_statement(
    location: TrackingLocation,
    *,
    version: str,
    description: str,
    checksum: str | None,
    algorithm: str,
    success: bool,
    transactional: bool,
) -> Statement:
    """The tracking row for one application; ``execution_ms`` and ``error`` are measured at run time."""
    return Statement(
        f"INSERT INTO {location.migrations_sql} "
        "(version, description, checksum, checksum_algorithm, execution_ms, success, error, transactional) "
        "VALUES (%(version)s, %(description)s, %(checksum)s, %(algorithm)s, %(execution_ms)s, "
        "%(success)s, %(error)s, %(transactional)s)",
        {
            "version": version,
            "description": description,
            "checksum": checksum,
            "algorithm": algorithm,
            "execution_ms": None,
            "success": success,
            "error": None,
            "transactional": transactional,
        },
    )


def recorded_row_statement(
    location: TrackingLocation,
    *,
    version: str,
    description: str,
    checksum: str | None,
    algorithm: str,
    transactional: bool,
) -> Statement:
    """The tracking row of a migration recorded as applied without poststack running it (db
    recover): no execution time, which is how later runs tell it from one poststack ran."""
    return Statement(
        f"INSERT INTO {location.migrations_sql} "
        "(version, description, checksum, checksum_algorithm, execution_ms, success, transactional) "
        "VALUES (%(version)s, %(description)s, %(checksum)s, %(algorithm)s, NULL, true, %(transactional)s)",
        {
            "version": version,
            "description": description,
            "checksum": checksum,
            "algorithm": algorithm,
            "transactional": transactional,
        },
    )


# Rows of one version, by the spellings the tracking table has for it ("2" for the file
# 002_x.sql; Flyway's "1.0" for V1__x.sql): BuildContext.spellings lists them, so the SQL a
# plan shows is the plain comparison it runs.
SAME_VERSION = "version = ANY(%(versions)s)"


def delete_failed_rows_statement(location: TrackingLocation, spellings: Sequence[str]) -> Statement:
    """A successful retry replaces the failed attempts' rows; the audit table keeps their history."""
    return Statement(
        f"DELETE FROM {location.migrations_sql} WHERE {SAME_VERSION} AND NOT success", {"versions": list(spellings)}
    )


@dataclass(frozen=True)
class VersionNow:
    """One version's tracking rows as they are now, and whether the lock row is set: what a
    run through transaction pooling reads under the lock, in the transaction that would
    apply the version (a concurrent run may have applied it since the run's plan was made)."""

    lock_set: bool
    applied: int  # successful rows
    failed: int  # failed attempts' rows
    last_checksum: str | None  # the checksum of the latest successful row


def read_version_now(session: Any, location: TrackingLocation, spellings: Sequence[str]) -> VersionNow:
    row = session.query_one(
        f"SELECT coalesce((SELECT locked FROM {location.lock_sql} WHERE id = 1), false), "
        f"count(*) FILTER (WHERE success), count(*) FILTER (WHERE NOT success), "
        f"(SELECT checksum FROM {location.migrations_sql} WHERE {SAME_VERSION} AND success ORDER BY id DESC LIMIT 1) "
        f"FROM {location.migrations_sql} WHERE {SAME_VERSION}",
        {"versions": list(spellings)},
    )
    assert row is not None  # an aggregate returns one row
    return VersionNow(bool(row[0]), int(row[1]), int(row[2]), row[3])


def delete_version_statement(location: TrackingLocation, spellings: Sequence[str]) -> Statement:
    return Statement(f"DELETE FROM {location.migrations_sql} WHERE {SAME_VERSION}", {"versions": list(spellings)})


@dataclass(frozen=True)
class AuditedApplication:
    """The audit table's last word on a version: that it is applied, or that the last
    attempt to apply it failed."""

    version: str
    # apply_migration (poststack ran it), track_migration (recover recorded it), baseline_migration
    # (db baseline declared it applied), or FAILED_ATTEMPT
    action: str
    at: datetime
    ran: bool  # poststack ran it, and has not rolled it back since (whatever was recorded after)
    detail: str | None = None  # a failed attempt's error

    @property
    def key(self) -> VersionKey:
        return version_key(self.version) or _odd_key(self.version)

    @property
    def applied(self) -> bool:
        return self.action in _APPLYING

    @property
    def vouches(self) -> bool:
        """It says what came before it ran and what comes after did not: poststack ran it, or
        a person declared the history applied up to it (db baseline), as a run would have."""
        return self.ran or self.action == BASELINED


FAILED_ATTEMPT = "failed attempt"
# What says a version is applied, or no longer is; other actions (checksums, duplicate rows,
# failed attempts cleared) leave the question where it was.
# import_migration: a tool that tracks every run it makes ran it, as poststack would have.
BASELINED = "baseline_migration"  # db baseline: recorded as applied, on a person's word, with the evidence shown
_APPLYING = ("apply_migration", "track_migration", "import_migration", BASELINED)
_RECORDING = ("track_migration", BASELINED)  # recorded without running: says nothing of whether poststack ran it
_RUNNING = ("apply_migration", "import_migration")
_UNAPPLYING = ("rollback_migration",)
_CLEARING = "remove_tracking_row"


def audit_high_water(session: Any, location: TrackingLocation) -> int:
    """The newest audit row's id (0: none yet): a later look asks what was audited after it."""
    row = session.query_one(f"SELECT coalesce(max(id), 0) FROM {location.audit_sql}")
    return int(row[0]) if row else 0


def audited_after(session: Any, location: TrackingLocation, seen: int | None) -> bool:
    """Whether any audit row was written after row ``seen`` (0: there was none; None: not
    known, so yes). Asked under the migration lock, before this run writes any: every run that
    audits at this location holds that lock while it does, so ids are written in order and
    none below the newest can still commit."""
    if seen is None:
        return True
    exists = session.query_one("SELECT to_regclass(%(audit)s) IS NOT NULL", {"audit": location.audit_sql})
    if not (exists and exists[0]):
        return False  # no run has audited anything here yet
    row = session.query_one(f"SELECT EXISTS (SELECT 1 FROM {location.audit_sql} WHERE id > %(seen)s)", {"seen": seen})
    return bool(row and row[0])


def read_audited_applications(session: Any, location: TrackingLocation) -> dict[VersionKey, AuditedApplication]:
    """Per version, the audit table's last word, when it is that the version is applied (run
    or recorded, not rolled back since) or that its last attempt failed: evidence that
    outlives tracking rows deleted by hand, restored from an old copy, or reset."""
    rows = session.query(
        f"SELECT version, action, outcome, at, detail FROM {location.audit_sql} "
        "WHERE version IS NOT NULL AND action = ANY(%(actions)s) "
        "AND (outcome = 'ok' OR (outcome = 'failed' AND action = 'apply_migration')) ORDER BY id",
        {"actions": [*_APPLYING, *_UNAPPLYING, _CLEARING]},
    )
    last: dict[VersionKey, tuple[str, str, datetime, str | None]] = {}
    ran: dict[VersionKey, bool] = {}
    for version, action, outcome, at, detail in rows:
        number = version_key(version)
        if number is None:
            continue
        if action == _CLEARING:
            # A failed attempt cleared by repair was looked at: the next run may retry it.
            if number in last and last[number][1] == FAILED_ATTEMPT:
                del last[number]
            continue
        if outcome == "failed":
            last[number] = (version, FAILED_ATTEMPT, at, detail)
            continue
        last[number] = (version, action, at, None)
        if action not in _RECORDING:
            ran[number] = action in _RUNNING
    return {
        n: AuditedApplication(version, action, at, ran.get(n, False), detail)
        for n, (version, action, at, detail) in last.items()
        if action != "rollback_migration"
    }


def audit_statement(
    location: TrackingLocation,
    *,
    host_pid: str,
    operation: str,
    plan_hash: str | None,
    step: int | None,
    action: str | None,
    version: str | None,
    outcome: str,
    detail: str | None,
) -> Statement:
    return Statement(
        f"INSERT INTO {location.audit_sql} "
        "(host_pid, operation, plan_hash, step, action, version, outcome, detail) "
        "VALUES (%(host_pid)s, %(operation)s, %(plan_hash)s, %(step)s, %(action)s, %(version)s, %(outcome)s, %(detail)s)",
        {
            "host_pid": host_pid,
            "operation": operation,
            "plan_hash": plan_hash,
            "step": step,
            "action": action,
            "version": version,
            "outcome": outcome,
            "detail": detail,
        },
    )


def take_lock_row_statement(location: TrackingLocation, host_pid: object, command: str | None = None) -> Statement:
    """``host_pid``: this process's ``host:pid``, or (an offline script) SQL that names its
    session. ``command`` (``db migrate``) follows the application's name in the row: what a
    run that dies leaves there says what it was doing."""
    return Statement(
        f"UPDATE {location.lock_sql} SET locked = true, locked_at = now(), "
        "locked_by = %(host_pid)s, backend_pid = pg_backend_pid(), "
        "application_name = concat_ws(' ', current_setting('application_name'), %(command)s::text) WHERE id = 1",
        {"host_pid": host_pid, "command": command},
    )


_UNLOCKED = "locked = false, locked_at = NULL, locked_by = NULL, backend_pid = NULL, application_name = NULL"


def release_lock_row_statement(location: TrackingLocation, backend_pid: int) -> Statement:
    """Release the row a run took from backend ``backend_pid``: from that backend, or from
    a new connection once that backend is gone (the run lost its connection)."""
    return Statement(
        f"UPDATE {location.lock_sql} SET {_UNLOCKED} WHERE id = 1 AND backend_pid = %(pid)s "
        "AND (pg_backend_pid() = %(pid)s OR NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %(pid)s AND datname = current_database()))",
        {"pid": backend_pid},
    )


def terminate_holder_statement(location: TrackingLocation, holder_backend_pid: int | None) -> Statement:
    """End the lock's backend, only while the row still names it (not a later run's)."""
    return Statement(
        f"SELECT pg_terminate_backend(backend_pid) FROM {location.lock_sql} "
        "WHERE id = 1 AND locked AND backend_pid = %(pid)s "
        "AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %(pid)s AND datname = current_database())",
        {"pid": holder_backend_pid},
    )


def clear_lock_row_statement(location: TrackingLocation, holder_backend_pid: int | None) -> Statement:
    """Clear a lock row left by another run, only if it still names the holder that was shown."""
    return Statement(
        f"UPDATE {location.lock_sql} SET {_UNLOCKED} "
        "WHERE id = 1 AND locked AND backend_pid IS NOT DISTINCT FROM %(pid)s",
        {"pid": holder_backend_pid},
    )


# --- one read of all three -----------------------------------------------------------------


@dataclass(frozen=True)
class ObservedTracking:
    location: TrackingLocation
    tables: frozenset[str]
    rows: tuple[TrackingRow, ...]
    lock: LockState | None

    @property
    def schema(self) -> str:
        return self.location.schema

    @property
    def exists(self) -> bool:
        return self.location.migrations_table in self.tables

    @property
    def complete(self) -> bool:
        return self.tables == frozenset(self.location.tables)

    @cached_property
    def applied(self) -> dict[VersionKey, TrackingRow]:
        """Version number → its latest successful row."""
        result: dict[VersionKey, TrackingRow] = {}
        for row in self.rows:
            if row.success:
                result[row.key] = row
        return result

    @cached_property
    def failed(self) -> dict[VersionKey, TrackingRow]:
        """Version number → its latest failed row, for versions with no successful row; and
        for a repeatable, whose rows are one per application, when its latest row failed."""
        result: dict[VersionKey, TrackingRow] = {}
        for row in self.rows:
            if row.success:
                result.pop(row.key, None)  # a later success of a repeatable settles its earlier failure
            elif row.key not in self.applied or row.key.is_repeatable:
                result[row.key] = row
        return result

    @cached_property
    def fingerprint(self) -> str:
        """A stable hash of what was observed; a saved plan is bound to it."""
        payload = {
            "schema": self.location.schema,
            "prefix": self.location.prefix,
            "tables": sorted(self.tables),
            "rows": [[r.id, r.version, r.checksum, r.success] for r in self.rows],
            "locked": bool(self.lock and self.lock.locked),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @property
    def current(self) -> TrackingRow | None:
        versioned = [k for k in self.applied if not k.is_repeatable]  # repeatables have no version
        return self.applied[max(versioned)] if versioned else None


def observe_tracking(session: Any, location: TrackingLocation) -> ObservedTracking:
    """One consistent read of the tracking tables. Creates nothing."""
    with session.snapshot():
        tables = frozenset(existing_tables(session, location))
        rows = tuple(read_rows(session, location)) if location.migrations_table in tables else ()
        lock = read_lock(session, location) if location.lock_table in tables else None
    return ObservedTracking(location=location, tables=tables, rows=rows, lock=lock)


# --- an offline script (db migrate --dry-run --format sql), run later by psql -----------------
# What a run measures or knows only as it runs is written as SQL the script evaluates then.

# psql keeps each step's start (seconds since the epoch) in this variable (\gset).
OFFLINE_STARTED_VAR = "poststack_step_started"
OFFLINE_MARK_START_SQL = f"SELECT extract(epoch FROM clock_timestamp()) AS {OFFLINE_STARTED_VAR}"
# A step's execution_ms, as the executor measures it: from before its body to its bookkeeping.
OFFLINE_EXECUTION_MS_SQL = f"((extract(epoch FROM clock_timestamp()) - :{OFFLINE_STARTED_VAR}) * 1000)::integer"
# Who ran it (the lock row's locked_by, the audit row's host_pid): psql's backend. Not a
# ``host:pid`` of this machine, so no run mistakes it for a poststack process it could check.
OFFLINE_HOLDER_SQL = f"'{OFFLINE_HOST}:' || pg_backend_pid()"

# The history the plan follows from: versions, checksums and outcomes in order (not the ids,
# so a script written from one database runs on another with the same history).
_ROWS_DIGEST = "md5(coalesce(string_agg(concat_ws(':', version, checksum, success), ',' ORDER BY id), ''))"
EMPTY_ROWS_DIGEST = hashlib.md5(b"").hexdigest()


def read_rows_digest(session: Any, location: TrackingLocation, exists: bool) -> str:
    """A digest of the tracking rows (versions, checksums, outcomes, in order): what an offline
    script checks before it runs, so it never runs on a history other than the one it was
    written for. No table: no rows."""
    if not exists:
        return EMPTY_ROWS_DIGEST
    row = session.query_one(f"SELECT {_ROWS_DIGEST} FROM {location.migrations_sql}")
    return str(row[0]) if row else EMPTY_ROWS_DIGEST


def unchanged_rows_statement(location: TrackingLocation, digest: str, again: str) -> Statement:
    """Stop the script (an error) unless the tracking rows are still those of ``digest``."""
    return Statement(
        "DO $poststack$\n"
        "DECLARE\n"
        "    seen text := %(empty)s;\n"
        "BEGIN\n"
        "    IF to_regclass(%(table)s) IS NOT NULL THEN\n"
        f"        SELECT {_ROWS_DIGEST} INTO seen FROM {location.migrations_sql};\n"
        "    END IF;\n"
        "    IF seen IS DISTINCT FROM %(expected)s THEN\n"
        "        RAISE EXCEPTION 'poststack: the tracking table changed since this script was written; nothing was run'\n"
        "            USING HINT = %(again)s;\n"
        "    END IF;\n"
        "END\n"
        "$poststack$",
        {"empty": EMPTY_ROWS_DIGEST, "table": location.migrations_sql, "expected": digest, "again": again},
    )


def release_own_lock_row_statement(location: TrackingLocation) -> Statement:
    """Release the lock row this session took (an offline script, which knows no pid ahead)."""
    return Statement(f"UPDATE {location.lock_sql} SET {_UNLOCKED} WHERE id = 1 AND backend_pid = pg_backend_pid()")
