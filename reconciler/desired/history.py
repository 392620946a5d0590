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
from dataclasses import dataclass, field
from typing import Any

from reconciler.desired.effects import CASCADE, DEPENDENTS, MigrationEffects, ObjectRef

# Dependent objects: a DROP ... CASCADE anywhere after them may take them away.
_DEPENDENT_KINDS = frozenset(
    {"view", "materialized_view", "trigger", "policy", "index", "column", "function", "procedure", "sequence"}
)
# Objects every database has: their existence proves nothing about a migration.
ALWAYS_PRESENT = frozenset({("schema", "public"), ("extension", "plpgsql")})

Position = tuple[int, int]  # (migration index, statement index)


@dataclass(frozen=True)
class History:
    effects: dict[str, MigrationEffects]  # by version
    evidence: dict[str, tuple[ObjectRef, ...]]  # by version: what it alone leaves behind
    schemas: frozenset[str]  # schemas the history creates or puts objects in
    gone: dict[str, tuple[ObjectRef, ...]] = field(default_factory=dict)  # what it drops for good

    def evidence_of(self, version: str) -> tuple[ObjectRef, ...]:
        return self.evidence.get(version, ())

    def gone_after(self, version: str) -> tuple[ObjectRef, ...]:
        """Objects an earlier migration made that this one drops (or renames away) and no
        later one makes again: if one is still there, this migration did not (fully) run."""
        return self.gone.get(version, ())


class _TouchIndex:
    """Where things are touched: drops, renames and moves of an object, of its table, of
    its schema; cascades and column drops."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[Any, ...], set[Position]] = defaultdict(set)
        self.by_container: dict[tuple[str | None, str], set[Position]] = defaultdict(set)  # (schema, table)
        self.by_schema: dict[str, set[Position]] = defaultdict(set)
        self.by_routine_name: dict[tuple[str | None, str], set[Position]] = defaultdict(set)  # every overload
        self.by_table_dependents: dict[tuple[str | None, str], Position] = {}  # a column dropped from it
        self.cascade: Position = (-1, -1)
        self.parents: dict[tuple[str | None, str], str] = {}  # (schema, table) -> its parent table

    def add(self, ref: ObjectRef, pos: Position) -> None:
        if ref.kind == CASCADE:
            self.cascade = max(self.cascade, pos)
            return
        if ref.kind == DEPENDENTS:
            key = (ref.schema, ref.name)
            self.by_table_dependents[key] = max(self.by_table_dependents.get(key, pos), pos)
            return
        self.by_key[ref.key].add(pos)
        if ref.kind == "schema":
            self.by_schema[ref.name].add(pos)
        if ref.family == "relation":
            self.by_container[(ref.schema, ref.name)].add(pos)
        if ref.family == "routine" and ref.args is None:
            self.by_routine_name[(ref.schema, ref.name)].add(pos)

    def touched(self, ref: ObjectRef, created_at: Position) -> bool:
        """Whether anything touches ``ref``: a drop, rename or move of it, its table or its
        schema, at any position but its own creation (one before it means it existed
        already); a cascade or a column drop of its table, after its creation."""
        direct = [self.by_key.get(ref.key, set())]
        if ref.schema is not None:
            direct.append(self.by_schema.get(ref.schema, set()))
        if ref.kind == "schema":
            direct.append(self.by_schema.get(ref.name, set()))
        container = (ref.schema, ref.parent) if ref.parent is not None else None
        seen = set()
        while container is not None and container not in seen:  # a partition's index goes with the parent
            seen.add(container)
            direct.append(self.by_container.get(container, set()))
            parent = self.parents.get(container)
            container = (container[0], parent) if parent else None
        if ref.family == "routine":
            direct.append(self.by_routine_name.get((ref.schema, ref.name), set()))
        if any(p != created_at for positions in direct for p in positions):
            return True
        never = (-1, -1)
        later = []
        if ref.parent is not None and ref.kind != "column":
            later.append(self.by_table_dependents.get((ref.schema, ref.parent), never))
        if ref.kind in _DEPENDENT_KINDS or (ref.kind == "table" and ref.parent is not None):
            later.append(self.cascade)
        return max(later, default=never) > created_at


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
                if ref.kind == "table" and ref.parent is not None:
                    touches.parents[(ref.schema, ref.name)] = ref.parent
                if ref.kind == "schema":
                    schemas.add(ref.name)
                elif ref.schema is not None:
                    schemas.add(ref.schema)

    never = ALWAYS_PRESENT | {("schema", tracking_schema)}
    evidence: dict[str, list[ObjectRef]] = defaultdict(list)
    first_creation: dict[tuple[Any, ...], Position] = {}
    last_creation: dict[tuple[Any, ...], Position] = {}
    for i, effects in enumerate(history):
        for j, statement in enumerate(effects.statements):
            for ref in (*statement.creates, *statement.weak):
                first_creation.setdefault(ref.key, (i, j))
                last_creation[ref.key] = (i, j)
            for ref in statement.creates:
                if (ref.kind, ref.name) in never and ref.schema is None:
                    continue
                if creations[ref.key] == 1 and not touches.touched(ref, (i, j)):
                    evidence[effects.version].append(ref)
    gone: dict[str, list[ObjectRef]] = defaultdict(list)
    for i, effects in enumerate(history):
        for j, statement in enumerate(effects.statements):
            for ref in statement.touches:
                if ref.kind in (CASCADE, DEPENDENTS) or (ref.args is None and ref.family == "routine"):
                    continue
                made_before = first_creation.get(ref.key, (i, j)) < (i, j)
                made_again = last_creation.get(ref.key, (-1, -1)) >= (i, j)
                if made_before and not made_again:
                    gone[effects.version].append(ref)
    return History(
        effects={e.version: e for e in history},
        evidence={v: tuple(refs) for v, refs in evidence.items()},
        schemas=frozenset(schemas),
        gone={v: tuple(refs) for v, refs in gone.items()},
    )
