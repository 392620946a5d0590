"""Round trips: does every rollback file really undo its migration? Asked of PostgreSQL itself,
in one shadow database, one migration at a time.

For each migration with a rollback file: the catalog is read before it, it runs, the catalog
is read again, its rollback runs, and the catalog must be what it was before the migration;
then the migration runs once more, and must succeed and leave what it left the first time.
The walk goes on from there, so each rollback is tried in the state its history gives it (or
as near to it as the rollbacks before it left the shadow: their differences are reported).
Migrations and rollbacks run as the executor runs them (replay.run_migration): in a transaction
unless their script must not be, the session reset afterwards, with the search_path the
target gives migrations.

A migration without a rollback file just runs. A migration that fails to run stops the walk,
as it stops a replay; so does a shadow left in a state the history does not give (a rollback
that failed part-way outside a transaction, a migration that does not re-apply).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Literal

from reconciler.config import TrackingLocation
from reconciler.db import Session
from reconciler.desired.files import Migration
from reconciler.desired.replay.replay import ReplayStop, reset_statement, run_migration, shadow_start
from reconciler.desired.replay.server_guard import server_guard
from reconciler.desired.replay.snapshot import Snapshot, SnapshotDiff, read_snapshot

ProblemKind = Literal["fails", "leaves_difference", "does_not_reapply"]
Change = Literal["left_behind", "missing", "differs"]

# Kinds whose identity is "<table>.<name>": said with their table when the whole table is.
_PART_OF_TABLE = frozenset({"column", "constraint", "trigger", "policy"})
_LISTED = 6  # objects named in a message; the rest are counted
_SHOWN = 80  # characters of a definition quoted in a message


@dataclass(frozen=True)
class ObjectDifference:
    """One object the state after a round trip has differently from the state it should have."""

    kind: str  # table, column, function, enum, ...
    identity: str  # schema-qualified, as snapshots name it
    change: Change  # left_behind: there but should not be; missing: should be but is not
    expected: str | None  # its definition in the state it should be in; None: it should not exist
    found: str | None  # its definition as it is; None: it does not exist


@dataclass(frozen=True)
class RollbackProblem:
    version: str
    kind: ProblemKind
    message: str  # one sentence, naming the migration, and the file:line and server error or the objects
    objects: tuple[ObjectDifference, ...] = ()


@dataclass(frozen=True)
class RoundTrip:
    checked: int  # migrations whose rollback was run
    problems: tuple[RollbackProblem, ...]
    stopped: ReplayStop | None = None  # where the walk ended early, and why; None: it went to the end

    @property
    def ok(self) -> bool:
        return not self.problems and self.stopped is None


def round_trip_history(
    open_shadow: Callable[[], AbstractContextManager[Session]],
    migrations: Sequence[Migration],
    location: TrackingLocation,
    search_path: str | None = None,
    guarded: bool = True,
) -> RoundTrip:
    """Round-trip ``migrations`` in one shadow (an empty database ``open_shadow`` provides).
    ``search_path``: the one the target gives migrations; ``guarded``: as for replay."""
    with open_shadow() as shadow:
        return round_trip(shadow, migrations, location, search_path, guarded)


def round_trip(
    shadow: Session,
    migrations: Sequence[Migration],
    location: TrackingLocation,
    search_path: str | None = None,
    guarded: bool = True,
) -> RoundTrip:
    """Walk ``migrations`` in order in ``shadow``, an empty database, each rollback tried on the way."""
    reset = reset_statement(search_path)
    shadow.run(shadow_start(search_path, location.schema))
    guard = server_guard(shadow) if guarded else None
    checked = 0
    problems: list[RollbackProblem] = []
    known: Snapshot | None = None  # the shadow's state, when it was read since it last changed
    for migration in migrations:
        version = migration.version
        before = None
        if migration.rollback is not None:
            before = known if known is not None else read_snapshot(shadow, location)
        known = None
        stop = run_migration(shadow, migration, reset, guard)
        if stop is not None:
            return RoundTrip(checked, tuple(problems), stop)
        if migration.rollback is None or before is None:
            continue
        checked += 1
        after_up = read_snapshot(shadow, location)

        failed = run_migration(shadow, replace(migration, file=migration.rollback), reset, guard)
        if failed is not None:
            problems.append(
                RollbackProblem(version, "fails", f"Rollback of migration {version} fails: {failed.reason}")
            )
            if read_snapshot(shadow, location) != after_up:  # it ran outside a transaction, in part
                return RoundTrip(checked, tuple(problems), ReplayStop(version, _PART_WAY))
            known = after_up  # rolled back with its transaction: the shadow is as the migration left it
            continue

        after_down = read_snapshot(shadow, location)
        undone = before.diff(after_down)
        if not undone.empty:
            objects = differences(undone)
            problems.append(
                RollbackProblem(
                    version,
                    "leaves_difference",
                    f"Rollback of migration {version} does not restore the schema: {describe(objects)}",
                    objects,
                )
            )

        again = run_migration(shadow, migration, reset, guard)
        if again is not None:
            problems.append(
                RollbackProblem(
                    version,
                    "does_not_reapply",
                    f"Migration {version} does not re-apply after its rollback: {again.reason}",
                )
            )
            return RoundTrip(checked, tuple(problems), ReplayStop(version, _NOT_REAPPLIED))
        known = read_snapshot(shadow, location)
        redone = after_up.diff(known)
        if not redone.empty and undone.empty:  # else the rollback's difference already says why
            objects = differences(redone)
            problems.append(
                RollbackProblem(
                    version,
                    "does_not_reapply",
                    f"Migration {version} does not re-apply after its rollback to what it made the first time: "
                    f"{describe(objects)}",
                    objects,
                )
            )
    return RoundTrip(checked, tuple(problems))


_PART_WAY = (
    "its rollback failed part-way, outside a transaction, and left the shadow in a state the history does not give"
)
_NOT_REAPPLIED = "it does not re-apply after its rollback"


def differences(diff: SnapshotDiff) -> tuple[ObjectDifference, ...]:
    """What a state has (``diff``'s after) that the state it should be in (its before) has not."""
    return (
        *(ObjectDifference(o.kind, o.identity, "left_behind", None, o.definition) for o in diff.added),
        *(ObjectDifference(o.kind, o.identity, "missing", o.definition, None) for o in diff.removed),
        *(
            ObjectDifference(old.kind, old.identity, "differs", old.definition, new.definition)
            for old, new in diff.changed
        ),
    )


def describe(objects: Sequence[ObjectDifference]) -> str:
    """``objects`` in a few words each: "table public.audit_log is left behind; column
    public.users.status differs (expected text, found integer)". A table's own columns,
    constraints, triggers, policies and indexes go without saying when the table is named."""
    wholes = {(o.change, o.identity) for o in objects if o.kind in ("table", "view", "materialized view")}
    said = sorted((o for o in objects if not _part_of(o, wholes)), key=_rank)
    parts = [_phrase(o) for o in said[:_LISTED]]
    if len(said) > _LISTED:
        parts.append(f"and {len(said) - _LISTED} more")
    return "; ".join(parts)


def _rank(item: ObjectDifference) -> int:
    """Schemas first, then tables and views, then the rest (a stable sort keeps their order)."""
    return 0 if item.kind == "schema" else 1 if item.kind in ("table", "view", "materialized view") else 2


def _part_of(item: ObjectDifference, wholes: set[tuple[Change, str]]) -> bool:
    if item.change == "differs":
        return False
    if item.kind in _PART_OF_TABLE:
        table = item.identity.rsplit(".", 1)[0]
        return (item.change, table) in wholes
    if item.kind == "index":
        definition = item.found if item.change == "left_behind" else item.expected
        return any(
            change == item.change
            and (f" ON {table} " in (definition or "") or f" ON ONLY {table} " in (definition or ""))
            for change, table in wholes
        )
    return False


def _phrase(item: ObjectDifference) -> str:
    name = f"{item.kind} {item.identity}"
    if item.change == "left_behind":
        return f"{name} is left behind"
    if item.change == "missing":
        return f"{name} is missing"
    expected, found = _contrast(item.expected or "", item.found or "")
    if item.kind == "enum":  # its labels, listed with commas of their own
        expected, found = f"({expected})", f"({found})"
    return f"{name} differs (expected {expected}, found {found})"


def _contrast(expected: str, found: str) -> tuple[str, str]:
    """The first lines where two definitions part, quoted short: a function's whole body is
    too long for one line of a report."""
    old, new = expected.splitlines() or [""], found.splitlines() or [""]
    if len(old) > 1 or len(new) > 1:
        index = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
        old = [old[index] if index < len(old) else ""]
        new = [new[index] if index < len(new) else ""]
    return _quoted(old[0]), _quoted(new[0])


def _quoted(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        return "nothing"
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"
