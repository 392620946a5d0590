"""Run a history in a shadow database, one migration at a time, and read the catalog after
each: PostgreSQL's own account of what every migration does, computed in a throwaway place.

Each migration runs as it would for real: in a transaction unless it must not be, its
session reset afterwards (RESET ALL, RESET ROLE), as the executor resets it between steps.
A migration that fails in the shadow (a missing extension or role, a statement that needs
data) stops the replay there; the report says where and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg2

from reconciler.config import TrackingLocation
from reconciler.db import Session, server_error_text
from reconciler.desired.files import Migration
from reconciler.desired.replay.snapshot import Snapshot, SnapshotDiff, read_snapshot
from reconciler.errors import MigrationFileError
from reconciler.statements import Statement

RESET = Statement("RESET ALL; RESET ROLE", None)


@dataclass(frozen=True)
class ReplayStop:
    version: str
    reason: str  # file:line and the server's error, or why the file could not be read


@dataclass(frozen=True)
class Replay:
    start: Snapshot  # the shadow before the first migration
    states: tuple[tuple[str, Snapshot], ...]  # (version, the state after it), in order
    stopped: ReplayStop | None = None  # the migration the replay could not run, if any

    def effect(self, version: str) -> SnapshotDiff | None:
        """What ``version`` changed, as the server saw it; None if it was not replayed."""
        previous = self.start
        for replayed, state in self.states:
            if replayed == version:
                return previous.diff(state)
            previous = state
        return None

    @property
    def final(self) -> Snapshot:
        return self.states[-1][1] if self.states else self.start


def replay(shadow: Session, migrations: Sequence[Migration], location: TrackingLocation) -> Replay:
    """Run ``migrations`` in order on ``shadow`` (an empty database), a snapshot after each."""
    start = read_snapshot(shadow, location)
    states: list[tuple[str, Snapshot]] = []
    for migration in migrations:
        stop = _run(shadow, migration)
        if stop is not None:
            return Replay(start, tuple(states), stop)
        states.append((migration.version, read_snapshot(shadow, location)))
    return Replay(start, tuple(states))


def _run(shadow: Session, migration: Migration) -> ReplayStop | None:
    try:
        script = migration.file.script
    except MigrationFileError as e:
        return ReplayStop(migration.version, e.summary)
    current = None
    try:
        if script.transactional:
            with shadow.transaction():
                for current in script.statements:
                    shadow.run(Statement(current.sql, None))
        else:
            for current in script.statements:
                shadow.run(Statement(current.sql, None))
    except psycopg2.Error as e:
        shadow.rollback()
        where = f"{migration.path}:{current.line}" if current is not None else str(migration.path)
        return ReplayStop(migration.version, f"{where}: {server_error_text(e)}")
    finally:
        if not shadow.conn.closed:
            shadow.rollback()  # a file that left its own BEGIN open
            shadow.run(RESET)
    return None
