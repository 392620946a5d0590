"""Observed state: what the tracking tables say, read once, read-only; and its fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property

from reconciler import tracking
from reconciler.db import Session
from reconciler.tracking import LockState, TrackingRow


@dataclass(frozen=True)
class ObservedTracking:
    schema: str
    tables: frozenset[str]
    rows: tuple[TrackingRow, ...]
    lock: LockState | None

    @property
    def exists(self) -> bool:
        return tracking.MIGRATIONS_TABLE in self.tables

    @property
    def complete(self) -> bool:
        return self.tables == frozenset(tracking.TABLES)

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

    @property
    def current(self) -> TrackingRow | None:
        return self.applied[max(self.applied)] if self.applied else None


def observe_tracking(session: Session, schema: str) -> ObservedTracking:
    """One consistent read of the tracking tables. Creates nothing."""
    with session.snapshot():
        tables = frozenset(tracking.existing_tables(session, schema))
        rows = tuple(tracking.read_rows(session, schema)) if tracking.MIGRATIONS_TABLE in tables else ()
        lock = tracking.read_lock(session, schema) if tracking.LOCK_TABLE in tables else None
    return ObservedTracking(schema=schema, tables=tables, rows=rows, lock=lock)


def fingerprint(observed: ObservedTracking) -> str:
    """A stable hash of what was observed; a saved plan is bound to it."""
    payload = {
        "schema": observed.schema,
        "tables": sorted(observed.tables),
        "rows": [[r.id, r.version, r.checksum, r.success] for r in observed.rows],
        "locked": bool(observed.lock and observed.lock.locked),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
