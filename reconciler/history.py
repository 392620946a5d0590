"""The whole history's effects, read together: what each migration leaves behind.

Pure. A migration's *evidence* is the set of objects it creates that no other migration
also creates and that no later statement drops, renames, replaces or moves (directly or
by dropping what contains them). Only evidence may show that an untracked migration was
applied: an object created by 002 and dropped by 005 says nothing about 002, and an
object two migrations create says nothing about either.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from reconciler.effects import CASCADE, CHILD_KINDS, DEPENDENTS, MigrationEffects, ObjectRef

# Dependent objects: a DROP ... CASCADE anywhere after them may take them away.
_DEPENDENT_KINDS = frozenset({"view", "materialized_view", "trigger", "policy", "index", "column"})
# Objects every database has: their existence proves nothing about a migration.
ALWAYS_PRESENT = frozenset({("schema", "public"), ("extension", "plpgsql")})

Position = tuple[int, int]  # (migration index, statement index)


@dataclass(frozen=True)
class History:
    effects: dict[str, MigrationEffects]  # by version
    evidence: dict[str, tuple[ObjectRef, ...]]  # by version
    schemas: frozenset[str]  # schemas the history creates or puts objects in

    def evidence_of(self, version: str) -> tuple[ObjectRef, ...]:
        return self.evidence.get(version, ())


class _TouchIndex:
    """The latest position at which something touches an object or what contains it."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[Any, ...], Position] = {}
        self.by_container: dict[tuple[str | None, str], Position] = {}  # (schema, table)
        self.by_schema: dict[str, Position] = {}
        self.by_routine_name: dict[tuple[str | None, str], Position] = {}  # DROP FUNCTION f (any args)
        self.by_table_dependents: dict[tuple[str | None, str], Position] = {}  # a column dropped from it
        self.cascade: Position = (-1, -1)

    @staticmethod
    def _later(store: dict[Any, Position], key: Any, pos: Position) -> None:
        if key not in store or store[key] < pos:
            store[key] = pos

    def add(self, ref: ObjectRef, pos: Position) -> None:
        if ref.kind == CASCADE:
            self.cascade = max(self.cascade, pos)
            return
        if ref.kind == DEPENDENTS:
            self._later(self.by_table_dependents, (ref.schema, ref.name), pos)
            return
        self._later(self.by_key, ref.key, pos)
        if ref.kind == "schema":
            self._later(self.by_schema, ref.name, pos)
        if ref.family == "relation":
            self._later(self.by_container, (ref.schema, ref.name), pos)
        if ref.family == "routine" and ref.args is None:
            self._later(self.by_routine_name, (ref.schema, ref.name), pos)

    def last_touch(self, ref: ObjectRef) -> Position:
        candidates = [self.by_key.get(ref.key, (-1, -1))]
        if ref.schema is not None:
            candidates.append(self.by_schema.get(ref.schema, (-1, -1)))
        if ref.kind == "schema":
            candidates.append(self.by_schema.get(ref.name, (-1, -1)))
        if ref.parent is not None and (ref.kind in CHILD_KINDS or ref.kind == "index"):
            candidates.append(self.by_container.get((ref.schema, ref.parent), (-1, -1)))
            if ref.kind != "column":
                candidates.append(self.by_table_dependents.get((ref.schema, ref.parent), (-1, -1)))
        if ref.kind in _DEPENDENT_KINDS:
            candidates.append(self.cascade)
        if ref.family == "routine":
            candidates.append(self.by_routine_name.get((ref.schema, ref.name), (-1, -1)))
        return max(candidates)


def analyze(ordered: Iterable[MigrationEffects], tracking_schema: str = "public") -> History:
    """``ordered`` is the history in version order. Objects every database has, and the
    tracking schema poststack itself creates, are never evidence."""
    history = list(ordered)
    creations: Counter[tuple[Any, ...]] = Counter()
    touches = _TouchIndex()
    schemas: set[str] = set()
    for i, effects in enumerate(history):
        for j, statement in enumerate(effects.statements):
            for ref in statement.touches:
                touches.add(ref, (i, j))
            for ref in (*statement.creates, *statement.weak):
                creations[ref.key] += 1
                if ref.kind == "schema":
                    schemas.add(ref.name)
                elif ref.schema is not None:
                    schemas.add(ref.schema)

    never = ALWAYS_PRESENT | {("schema", tracking_schema)}
    evidence: dict[str, list[ObjectRef]] = defaultdict(list)
    for i, effects in enumerate(history):
        for j, statement in enumerate(effects.statements):
            for ref in statement.creates:
                if (ref.kind, ref.name) in never and ref.schema is None:
                    continue
                if creations[ref.key] == 1 and touches.last_touch(ref) < (i, j + 1):
                    evidence[effects.version].append(ref)
    return History(
        effects={e.version: e for e in history},
        evidence={v: tuple(refs) for v, refs in evidence.items()},
        schemas=frozenset(schemas),
    )
