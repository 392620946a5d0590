"""Run a history in a shadow database, one migration at a time, and read the catalog after
each: PostgreSQL's own account of what every migration does, computed in a throwaway place.

Each migration runs as it would for real: in a transaction unless it must not be, its
session reset afterwards (RESET_SESSION_SQL), as the executor resets it between steps,
and with the search_path the target gives migrations (its database's or role's default),
so that unqualified names land where they landed there.
A migration that fails in the shadow (a missing extension or role, a statement that needs
data) stops the replay there; the report says where and why.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg2

from reconciler.config import TrackingLocation
from reconciler.db import RESET_SESSION_SQL, Session, server_error_text
from reconciler.desired.files import Migration
from reconciler.desired.replay.cache import Known, ReplayCache
from reconciler.desired.replay.incremental import CHECK_EVERY, hides_from_event_triggers, open_reader
from reconciler.desired.replay.server_guard import GUARD_SQLSTATE, ServerGuard, server_guard, server_level_statement
from reconciler.desired.replay.snapshot import Changes, Key, Snapshot, SnapshotDiff, changes_between
from reconciler.desired.script import Script, ScriptStatement
from reconciler.errors import MigrationFileError
from reconciler.statements import Statement, quote_ident


def reset_statement(search_path: str | None) -> Statement:
    if search_path is None:
        return Statement(RESET_SESSION_SQL, None)
    return Statement(f"{RESET_SESSION_SQL}; SELECT set_config('search_path', %(path)s, false)", {"path": search_path})


def shadow_start(search_path: str | None, tracking_schema: str) -> Statement:
    """What a shadow runs before the history: the tracking schema, which poststack creates on
    the target before the first migration (a fleet's tenant schema is on the search_path, and
    its migrations create their tables there), then the reset."""
    reset = reset_statement(search_path)
    return Statement(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(tracking_schema)}; {reset.sql}", reset.params)


@dataclass(frozen=True)
class ReplayStop:
    version: str
    reason: str  # file:line and the server's error, or why the file could not be read


@dataclass(frozen=True)
class Replay:
    """The start and what each migration changed: a history of thousands of migrations over
    thousands of objects is kept as it grew, not as thousands of whole catalogs."""

    start: Snapshot  # the shadow before the first migration
    steps: tuple[tuple[str, Changes], ...]  # (version, what it changed), in order
    stopped: ReplayStop | None = None  # the migration the replay could not run, if any
    from_cache: bool = False  # every state came from the cache: nothing was replayed
    reused: int = 0  # states read from the cache (the start counts): the rest were replayed
    # How the shadow's catalog was read: "incremental", "full", "full_after_disagreement"
    # (the incremental state went astray: replayed again, reading everything) or "none".
    catalog_reads: str = "none"

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(version for version, _ in self.steps)

    def states(self) -> Iterator[tuple[str, Snapshot]]:
        """(version, the state after it), one at a time, rebuilt from the changes."""
        current = dict(self.start.objects)
        for version, changes in self.steps:
            _apply(current, changes)
            yield version, Snapshot(dict(current))

    def effect(self, version: str) -> SnapshotDiff | None:
        """What ``version`` changed, as the server saw it; None if it was not replayed."""
        current = dict(self.start.objects)
        for replayed, changes in self.steps:
            if replayed == version:
                before = {k: current[k] for k, _ in changes if k in current}
                after = {k: v for k, v in changes if v is not None}
                return Snapshot(before).diff(Snapshot(after))
            _apply(current, changes)
        return None

    @property
    def final(self) -> Snapshot:
        current = dict(self.start.objects)
        for _, changes in self.steps:
            _apply(current, changes)
        return Snapshot(current)


def _apply(current: dict[Key, str], changes: Changes) -> None:
    for key, value in changes:
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value


def replay(
    open_shadow: Callable[[], AbstractContextManager[Session]],
    migrations: Sequence[Migration],
    location: TrackingLocation,
    cache: ReplayCache | None = None,
    search_path: str | None = None,
    guarded: bool = True,
) -> Replay:
    """Run ``migrations`` in order in a shadow (an empty database ``open_shadow`` provides),
    the catalog read after each. With a ``cache``, what is known is read from it, and the
    shadow is not opened at all when everything is; the prefix known is run without reading
    the catalog. ``search_path``: the one the target gives migrations. ``guarded``: the
    shadow's server is not a throwaway of its own (server_guard)."""
    # What else decides the states: where names land, and which tables are poststack's own.
    context = f"{search_path or ''} {location.schema} {' '.join(location.tables)}"
    keys = cache.keys(migrations, context) if cache is not None else None
    cached = cache.load(keys) if cache is not None and keys is not None else Known(None)
    start, known = cached.start, list(cached.changes)
    versions = [m.version for m in migrations]
    if start is not None and len(known) == len(migrations):
        return Replay(start, tuple(zip(versions, known, strict=True)), from_cache=True, reused=len(known) + 1)
    reused = len(known) + 1 if start is not None else 0
    replayed = _replay(open_shadow, migrations, location, start, known, reused, search_path, guarded, incremental=True)
    if replayed is None:  # the incremental reads went astray: replayed again, reading everything
        again = _replay(
            open_shadow, migrations, location, start, known, reused, search_path, guarded, incremental=False
        )
        if again is None:
            raise RuntimeError("a replay reading the whole catalog cannot disagree with itself")
        replayed = dataclasses.replace(again, catalog_reads="full_after_disagreement")
    if cache is not None and keys is not None:
        cache.save(keys, replayed.start, [changes for _, changes in replayed.steps])
    return replayed


def _replay(
    open_shadow: Callable[[], AbstractContextManager[Session]],
    migrations: Sequence[Migration],
    location: TrackingLocation,
    start: Snapshot | None,
    known: list[Changes],
    reused: int,
    search_path: str | None,
    guarded: bool,
    incremental: bool,
) -> Replay | None:
    """The replay; None when the state kept by incremental reads disagrees with a read of the
    whole catalog (every CHECK_EVERY migrations read, and at the end)."""
    reset = reset_statement(search_path)
    read = 0  # migrations whose catalog was read
    with open_shadow() as shadow:
        shadow.run(shadow_start(search_path, location.schema))
        reader = open_reader(shadow, location, incremental)
        guard = server_guard(shadow) if guarded else None
        if start is None:
            start = reader.read()
        current = dict(start.objects)
        steps: list[tuple[str, Changes]] = []
        stop = None
        for index, migration in enumerate(migrations, start=1):
            stop = run_batched(shadow, migration, reset, guard)
            if stop is not None:
                reused = min(reused, index)
                break
            if index <= len(known):
                changes = known[index - 1]  # known: the catalog is not read again
                _apply(current, changes)
            else:
                state = reader.read(whole=hides_from_event_triggers(_text(migration))).objects
                changes = changes_between(current, state)
                current = dict(state)
                read += 1
                if read % CHECK_EVERY == 0 and not reader.agrees():
                    return None
            steps.append((migration.version, changes))
        if read:
            if stop is not None:
                reader.read()  # what the migration that stopped left, if it ran in part
            if not reader.agrees():
                return None
    return Replay(start, tuple(steps), stop, reused=reused, catalog_reads=reader.kind)


def _text(migration: Migration) -> str:
    try:
        return "\n".join(statement.sql for statement in migration.file.script.statements)
    except MigrationFileError:
        return ""


def _server_level(migration: Migration, script: Script) -> ReplayStop | None:
    statement = server_level_statement(script.statements)
    if statement is None:
        return None
    what = f"{statement.server_level} changes the server, not only its database"
    return ReplayStop(migration.version, f"{migration.path}:{statement.line}: {what}: {NOT_BESIDE_THE_TARGET}")


NOT_BESIDE_THE_TARGET = (
    "it is not replayed in a scratch database on the target's server (a shadow on a server of its own "
    "can replay it: --shadow-url)"
)


def run_batched(
    shadow: Session, migration: Migration, reset: Statement, guard: ServerGuard | None
) -> ReplayStop | None:
    """A migration that runs in a transaction, sent whole in one round trip with its reset
    (a long history is mostly round trips). Where it fails, it is run again statement by
    statement, rolled back, to say on which line. ``guard``: the shadow shares a server
    with others (server_guard)."""
    try:
        script = migration.file.script
    except MigrationFileError:
        return run_migration(shadow, migration, reset, guard)
    if not script.transactional or not script.statements:
        return run_migration(shadow, migration, reset, guard)
    if guard is not None and (stop := _server_level(migration, script)) is not None:
        return stop
    with shadow.conn.cursor() as cur:
        reset_sql = cur.mogrify(reset.sql, reset.params).decode() if reset.params else reset.sql
    # Each ";" on a line of its own: a statement may end in a -- comment.
    body = "\n;\n".join(statement.sql for statement in script.statements)
    try:
        if guard is None:
            shadow.query(f"BEGIN;\n{body}\n;\nCOMMIT;\n{reset_sql}")
        else:  # a round trip more: the baseline is read in the migration's own snapshot
            baseline = guard.open(shadow)
            shadow.query(f"{body}\n;\n{guard.check(baseline)};\nCOMMIT;\n{reset_sql}")
    except psycopg2.Error:
        shadow.rollback()
        shadow.run(reset)
        return run_migration(shadow, migration, reset, guard)  # None: it ran after all, one by one
    return None


def run_migration(
    shadow: Session, migration: Migration, reset: Statement, guard: ServerGuard | None
) -> ReplayStop | None:
    """Run one migration in the shadow as the executor would; a ReplayStop says why it could
    not. ``guard``: the shadow shares a server with others, whose roles, databases and
    settings a migration must not change (server_guard); None on a server of its own."""
    try:
        script = migration.file.script
    except MigrationFileError as e:
        return ReplayStop(migration.version, e.summary)
    if guard is not None and (stop := _server_level(migration, script)) is not None:
        return stop
    current = None
    try:
        if script.transactional:
            with shadow.transaction():
                baseline = None
                if guard is not None:
                    shadow.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    baseline = shadow.query(guard.inline)
                for current in script.statements:
                    shadow.run(Statement(current.sql, None))
                if guard is not None and baseline is not None:
                    current = None
                    shadow.query(guard.check(baseline))
        else:
            outside = _Outside(shadow, migration, guard)
            for current in script.statements:
                stop = outside.run(current)
                if stop is not None:
                    return stop
    except psycopg2.Error as e:
        shadow.rollback()
        if e.pgcode == GUARD_SQLSTATE:
            return ReplayStop(migration.version, f"{migration.path}: {e.diag.message_primary}: {NOT_BESIDE_THE_TARGET}")
        where = f"{migration.path}:{current.line}" if current is not None else str(migration.path)
        return ReplayStop(migration.version, f"{where}: {server_error_text(e)}")
    finally:
        if not shadow.conn.closed:
            shadow.rollback()  # a file that left its own BEGIN open
            shadow.run(reset)
    return None


_ENDS_A_TRANSACTION = re.compile(r"(commit|end|prepare\s+transaction)\b", re.IGNORECASE)
_STARTS_A_TRANSACTION = re.compile(r"(begin|start\s+transaction)\b", re.IGNORECASE)
# What PostgreSQL says of a statement that may not run in a transaction block (25001), or
# of a procedure that commits inside one (2D000).
_OUTSIDE_ONLY = ("25001", "2D000")


def run_transaction_statement(
    shadow: Session, sql: str, guard: ServerGuard | None, baseline: list[tuple[Any, ...]] | None
) -> list[tuple[Any, ...]] | None:
    """A file's own BEGIN, COMMIT, ... (a migration outside a transaction). On a shared server
    the transaction it ends is checked first (``baseline``: the shared catalogs when it
    began), and one it starts is fingerprinted: the baseline returned (None: none open, or
    no guard)."""
    if guard is not None and shadow.in_transaction and baseline is not None and _ENDS_A_TRANSACTION.match(sql):
        shadow.query(guard.check(baseline))
    shadow.run(Statement(sql, None))
    if guard is None or not shadow.in_transaction:
        return None
    if not _STARTS_A_TRANSACTION.match(sql):
        return baseline  # SAVEPOINT, RELEASE, ROLLBACK TO: the same transaction goes on
    if not re.search(r"\bisolation\b", sql, re.IGNORECASE):
        # One snapshot, as for our own transactions: others' work stays unseen.
        shadow.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    return shadow.query(guard.inline)  # the function may be gone (DISCARD TEMP)


class _Outside:
    """The statements of a migration that runs outside a transaction, one by one. On a shared
    server each is checked as a transactional migration is: inside the file's own BEGIN ...
    COMMIT, the check runs before its COMMIT; elsewhere a statement runs in a checked
    transaction of its own, and bare only where PostgreSQL refuses that for a kind that
    runs nothing else (CREATE INDEX CONCURRENTLY, VACUUM, ...)."""

    def __init__(self, shadow: Session, migration: Migration, guard: ServerGuard | None) -> None:
        self.shadow = shadow
        self.migration = migration
        self.guard = guard
        self.baseline: list[tuple[Any, ...]] | None = None  # in the file's own transaction

    def run(self, statement: ScriptStatement) -> ReplayStop | None:
        """Run ``statement``; a ReplayStop where it may not be, psycopg2.Error where it fails."""
        shadow, guard, sql = self.shadow, self.guard, statement.sql
        if guard is None:
            shadow.run(Statement(sql, None))
            return None
        if statement.kind == "TransactionStmt":
            self.baseline = run_transaction_statement(shadow, sql, guard, self.baseline)
            return None
        if shadow.in_transaction:
            shadow.run(Statement(sql, None))
            return None
        try:
            baseline = guard.open(shadow)
            shadow.query(f"{sql}\n;\n{guard.check(baseline)};\nCOMMIT")
            return None
        except psycopg2.Error as e:
            shadow.rollback()
            if e.pgcode not in _OUTSIDE_ONLY:
                raise
        if statement.no_transaction_reason is None:
            what = "it runs outside any transaction, where what it does to the server cannot be checked"
            where = f"{self.migration.path}:{statement.line}"
            return ReplayStop(self.migration.version, f"{where}: {what}: {NOT_BESIDE_THE_TARGET}")
        shadow.run(Statement(sql, None))
        return None
