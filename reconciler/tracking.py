"""The tracking, lock and audit tables: their DDL, typed reads, and the statements that write them.

``schema_migrations`` has one row per application of a migration (no unique version:
duplicates must be representable to be diagnosed). ``schema_migrations_lock`` has one
row naming who holds the migration lock. ``schema_migrations_audit`` is append-only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from reconciler.statements import Statement, qualified, quote_ident

MIGRATIONS_TABLE = "schema_migrations"
LOCK_TABLE = "schema_migrations_lock"
AUDIT_TABLE = "schema_migrations_audit"
TABLES = (MIGRATIONS_TABLE, LOCK_TABLE, AUDIT_TABLE)

# Params the executor fills in when a statement runs (a measurement, the server's error).
RUNTIME_PARAMS = frozenset({"execution_ms", "error"})


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
    def number(self) -> int:
        # A version that is not a number (another tool's row) gets a number of its own,
        # below every real one, so such rows are never lumped together.
        if self.version.isdigit():
            return int(self.version)
        return -1 - int(hashlib.sha256(self.version.encode()).hexdigest()[:12], 16)


@dataclass(frozen=True)
class LockState:
    locked: bool
    locked_at: datetime | None
    locked_by: str | None  # host:pid of the poststack process
    backend_pid: int | None
    application_name: str | None
    age_s: float | None
    holder_alive: bool

    def describe(self) -> str:
        if not self.locked:
            return "not locked"
        age = f"{self.age_s:.0f}s" if self.age_s is not None else "unknown age"
        alive = "alive" if self.holder_alive else "not alive"
        return (
            f"held by {self.locked_by or 'unknown'} (backend pid {self.backend_pid}, "
            f"application {self.application_name or 'unknown'}, age {age}, {alive})"
        )


def create_statements(schema: str) -> list[Statement]:
    m, lock, audit = (qualified(schema, t) for t in TABLES)
    statements = []
    if schema != "public":
        statements.append(Statement(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}"))
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
        Statement(f"CREATE INDEX IF NOT EXISTS {quote_ident(MIGRATIONS_TABLE + '_version_idx')} ON {m} (version)"),
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


def drop_statements(schema: str) -> list[Statement]:
    return [Statement(f"DROP TABLE IF EXISTS {qualified(schema, t)} CASCADE") for t in TABLES]


# The columns poststack reads; a table of the same name without them belongs to another tool.
REQUIRED_COLUMNS = {
    MIGRATIONS_TABLE: frozenset(
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
    LOCK_TABLE: frozenset({"id", "locked", "locked_at", "locked_by", "backend_pid", "application_name"}),
    AUDIT_TABLE: frozenset(
        {"id", "at", "actor", "host_pid", "operation", "plan_hash", "step", "action", "version", "outcome", "detail"}
    ),
}


def existing_tables(session: Any, schema: str) -> set[str]:
    """poststack's tables present in ``schema``. A table of one of their names that another
    tool made (dbmate, Rails and golang-migrate all use schema_migrations) is refused."""
    rows = session.query(
        "SELECT c.relname, array_agg(a.attname::text) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE n.nspname = %(schema)s AND c.relname = ANY(%(tables)s) GROUP BY c.relname",
        {"schema": schema, "tables": list(TABLES)},
    )
    for name, columns in rows:
        missing = REQUIRED_COLUMNS[name] - set(columns)
        if missing:
            from reconciler.errors import DatabaseUnavailable

            raise DatabaseUnavailable(
                f"{schema}.{name} exists but was not created by poststack (its columns: {', '.join(sorted(columns))})",
                "Another migration tool's table? Keep poststack's tables apart with --schema (e.g. --schema poststack).",
            )
    return {r[0] for r in rows}


def read_rows(session: Any, schema: str) -> list[TrackingRow]:
    rows = session.query(
        "SELECT id, version, description, checksum, checksum_algorithm, applied_at, applied_by, "
        f"execution_ms, success, error, transactional FROM {qualified(schema, MIGRATIONS_TABLE)} ORDER BY id"
    )
    return [TrackingRow(*r) for r in rows]


def read_lock(session: Any, schema: str) -> LockState:
    row = session.query_one(
        "SELECT l.locked, l.locked_at, l.locked_by, l.backend_pid, l.application_name, "
        "       extract(epoch FROM now() - l.locked_at)::float8, "
        "       EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.backend_pid "
        "               AND (a.backend_start IS NULL OR a.backend_start <= l.locked_at)) "
        f"FROM {qualified(schema, LOCK_TABLE)} l WHERE l.id = 1"
    )
    if row is None:
        return LockState(False, None, None, None, None, None, False)
    return LockState(*row)


def insert_row_statement(
    schema: str,
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
        f"INSERT INTO {qualified(schema, MIGRATIONS_TABLE)} "
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


# Versions compare as numbers: a row written as "2" belongs to the file 002_x.sql.
SAME_VERSION = "ltrim(version, '0') = ltrim(%(version)s, '0')"


def delete_failed_rows_statement(schema: str, version: str) -> Statement:
    """A successful retry replaces the failed attempts' rows; the audit table keeps their history."""
    return Statement(
        f"DELETE FROM {qualified(schema, MIGRATIONS_TABLE)} WHERE {SAME_VERSION} AND NOT success",
        {"version": version},
    )


def delete_version_statement(schema: str, version: str) -> Statement:
    return Statement(
        f"DELETE FROM {qualified(schema, MIGRATIONS_TABLE)} WHERE {SAME_VERSION}",
        {"version": version},
    )


def audit_statement(
    schema: str,
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
        f"INSERT INTO {qualified(schema, AUDIT_TABLE)} "
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


def take_lock_row_statement(schema: str, host_pid: str) -> Statement:
    return Statement(
        f"UPDATE {qualified(schema, LOCK_TABLE)} SET locked = true, locked_at = now(), "
        "locked_by = %(host_pid)s, backend_pid = pg_backend_pid(), "
        "application_name = current_setting('application_name') WHERE id = 1",
        {"host_pid": host_pid},
    )


_UNLOCKED = "locked = false, locked_at = NULL, locked_by = NULL, backend_pid = NULL, application_name = NULL"


def release_lock_row_statement(schema: str, backend_pid: int) -> Statement:
    """Release the row a run took from backend ``backend_pid``: from that backend, or from
    a new connection once that backend is gone (the run lost its connection)."""
    return Statement(
        f"UPDATE {qualified(schema, LOCK_TABLE)} SET {_UNLOCKED} WHERE id = 1 AND backend_pid = %(pid)s "
        "AND (pg_backend_pid() = %(pid)s OR NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %(pid)s))",
        {"pid": backend_pid},
    )


def clear_lock_row_statement(schema: str, holder_backend_pid: int | None) -> Statement:
    """Clear a lock row left by another run, only if it still names the holder that was shown."""
    return Statement(
        f"UPDATE {qualified(schema, LOCK_TABLE)} SET {_UNLOCKED} "
        "WHERE id = 1 AND locked AND backend_pid IS NOT DISTINCT FROM %(pid)s",
        {"pid": holder_backend_pid},
    )


# --- one read of all three -----------------------------------------------------------------


@dataclass(frozen=True)
class ObservedTracking:
    schema: str
    tables: frozenset[str]
    rows: tuple[TrackingRow, ...]
    lock: LockState | None

    @property
    def exists(self) -> bool:
        return MIGRATIONS_TABLE in self.tables

    @property
    def complete(self) -> bool:
        return self.tables == frozenset(TABLES)

    @cached_property
    def applied(self) -> dict[int, TrackingRow]:
        """Version number → its latest successful row."""
        result: dict[int, TrackingRow] = {}
        for row in self.rows:
            if row.success:
                result[row.number] = row
        return result

    @cached_property
    def failed(self) -> dict[int, TrackingRow]:
        """Version number → its latest failed row, for versions with no successful row."""
        result: dict[int, TrackingRow] = {}
        for row in self.rows:
            if not row.success and row.number not in self.applied:
                result[row.number] = row
        return result

    @cached_property
    def fingerprint(self) -> str:
        """A stable hash of what was observed; a saved plan is bound to it."""
        payload = {
            "schema": self.schema,
            "tables": sorted(self.tables),
            "rows": [[r.id, r.version, r.checksum, r.success] for r in self.rows],
            "locked": bool(self.lock and self.lock.locked),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @property
    def current(self) -> TrackingRow | None:
        return self.applied[max(self.applied)] if self.applied else None


def observe_tracking(session: Any, schema: str) -> ObservedTracking:
    """One consistent read of the tracking tables. Creates nothing."""
    with session.snapshot():
        tables = frozenset(existing_tables(session, schema))
        rows = tuple(read_rows(session, schema)) if MIGRATIONS_TABLE in tables else ()
        lock = read_lock(session, schema) if LOCK_TABLE in tables else None
    return ObservedTracking(schema=schema, tables=tables, rows=rows, lock=lock)
