"""Run a history in a shadow database, one migration at a time, and read the catalog after
each: PostgreSQL's own account of what every migration does, computed in a throwaway place.

Each migration runs as it would for real: in a transaction unless it must not be, its
session reset afterwards (RESET ALL, RESET ROLE), as the executor resets it between steps.
A migration that fails in the shadow (a missing extension or role, a statement that needs
data) stops the replay there; the report says where and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import psycopg2

from reconciler.config import TrackingLocation
from reconciler.db import Session, server_error_text
from reconciler.desired.files import Migration
from reconciler.desired.replay.cache import ReplayCache
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
    from_cache: bool = False  # every state came from the cache: nothing was replayed

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


def replay(
    open_shadow: Callable[[], AbstractContextManager[Session]],
    migrations: Sequence[Migration],
    location: TrackingLocation,
    cache: ReplayCache | None = None,
) -> Replay:
    """Run ``migrations`` in order in a shadow (an empty database ``open_shadow`` provides),
    a snapshot after each. With a ``cache``, states already known are read from it, and the
    shadow is not opened at all when every one is; the prefix before the first unknown state
    is run without reading the catalog."""
    keys = cache.keys(list(migrations)) if cache is not None else None
    known = _cached(cache, keys) if cache is not None and keys is not None else []
    if keys is not None and len(known) == len(keys):
        states = tuple((m.version, s) for m, s in zip(migrations, known[1:], strict=True))
        return Replay(known[0], states, from_cache=True)
    with open_shadow() as shadow:
        start = known[0] if known else read_snapshot(shadow, location)
        if cache is not None and keys is not None and not known:
            cache.save(keys[0], start)
        states: list[tuple[str, Snapshot]] = []
        for index, migration in enumerate(migrations, start=1):
            stop = _run(shadow, migration)
            if stop is not None:
                return Replay(start, tuple(states), stop)
            if index < len(known):
                state = known[index]  # known: the catalog is not read again
            else:
                state = read_snapshot(shadow, location)
                if cache is not None and keys is not None:
                    cache.save(keys[index], state)
            states.append((migration.version, state))
    return Replay(start, tuple(states))


def _cached(cache: ReplayCache, keys: list[str]) -> list[Snapshot]:
    """The states the cache holds, from the start, up to the first it lacks."""
    known = []
    for key in keys:
        state = cache.load(key)
        if state is None:
            break
        known.append(state)
    return known


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
