"""The lint rule registry, and the facts every rule reads about one statement.

A rule is a pure function of one statement in context (its parse tree, what the shadow
measured it doing, how big the target's relations are) to the hits it finds. Its module
docstring is its documentation: the rules reference is generated from it.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from reconciler.desired.replay.measure import RelationLock, StatementFacts, StatementFailure
from reconciler.errors import UsageError, did_you_mean
from reconciler.observed.sizes import RelationSize

MB = 1 << 20
GB = 1 << 30
# Below this, an empty-looking relation is empty: a few pages of a table that had rows once.
EMPTY_BYTES = 1 * MB


class LintSeverity(IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> LintSeverity:
        try:
            return cls[value.upper()]
        except KeyError:
            raise UsageError(f"unknown severity {value!r}; use info, low, medium or high") from None


# (bytes below which it is LOW, MEDIUM): the time a lock is held grows with what is rewritten or read.
BLOCKS_READS_BYTES = (10 * MB, 1 * GB)  # ACCESS EXCLUSIVE: nobody reads or writes until it ends
BLOCKS_WRITES_BYTES = (100 * MB, 10 * GB)  # SHARE and stronger: reads go on, writes wait


def by_size(size: RelationSize | None, blocks_reads: bool) -> LintSeverity:
    """How much a lock held while the whole relation is rewritten or read matters, by the
    relation's live size on the target. A relation a pending migration makes is
    used by nobody yet: nobody waits for its lock."""
    if size is None or not size.exists or (size.empty and size.bytes < EMPTY_BYTES):
        return LintSeverity.INFO
    low, medium = BLOCKS_READS_BYTES if blocks_reads else BLOCKS_WRITES_BYTES
    if size.bytes < low:
        return LintSeverity.LOW
    if size.bytes < medium:
        return LintSeverity.MEDIUM
    return LintSeverity.HIGH


@dataclass(frozen=True)
class StatementContext:
    """One statement of a linted migration, with everything a rule may read."""

    version: str
    path: str
    line: int
    sql: str
    kind: str  # the parse node's name: AlterTableStmt
    node: dict[str, Any]  # its parse tree, as pglast's JSON gives it
    facts: StatementFacts | None  # None: not measured (no shadow, or the replay stopped before it)
    sizes: dict[str, RelationSize]  # schema.name -> live size on the target
    existing: frozenset[str]  # relations there before the migration (shadow, else target)
    created_here: frozenset[str]  # relations an earlier statement of the same migration made
    search_path: tuple[str, ...]
    file_sets_lock_timeout: bool  # an earlier statement of the file SETs lock_timeout (to more than 0)
    # What poststack sets for the migration (ddl_lock_timeout); 0: none, or an earlier
    # statement of the file turned it off (SET lock_timeout = 0, RESET).
    lock_timeout: float
    in_transaction: bool  # the migration runs in one transaction
    failure: StatementFailure | None = None  # the shadow refused this statement: the run stopped here

    def resolve(self, range_var: dict[str, Any]) -> str:
        """The schema.name a RangeVar means where this statement runs."""
        name = range_var.get("relname", "")
        if range_var.get("schemaname"):
            return f"{range_var['schemaname']}.{name}"
        # Only what is there: a name sized on the target and not found (as a guess from an
        # earlier pass, in a "$user" schema that does not exist) would hide the real one.
        known = self.existing | self.created_here | frozenset(n for n, size in self.sizes.items() if size.exists)
        for schema in self.search_path:
            if f"{schema}.{name}" in known:
                return f"{schema}.{name}"
        return f"{(self.search_path or ('public',))[0]}.{name}"

    def size(self, relation: str) -> RelationSize | None:
        return self.sizes.get(relation)

    def pre_existing(self, relation: str) -> bool:
        """The relation was there before this migration: a lock on it can block someone."""
        return relation in self.existing and relation not in self.created_here

    def lock(self, relation: str) -> RelationLock | None:
        return self.facts.lock_on(relation) if self.facts is not None else None


@dataclass(frozen=True)
class Hit:
    """What a rule found in one statement."""

    message: str  # what happens, in one sentence
    alternative: str  # the safer way, concretely
    severity: LintSeverity
    relation: str | None = None
    lock: str | None = None  # the mode, as LOCK TABLE writes it
    rewrites: bool | None = None  # None: not known (static)
    scans: bool | None = None
    basis: str = "static"  # "measured", "documented" or "static"


Check = Callable[[StatementContext], Iterable[Hit]]


@dataclass(frozen=True)
class Rule:
    code: str  # stable: PS101
    name: str  # kebab-case: table-rewrite
    check: Check = field(repr=False)
    doc: str = ""  # the module docstring: the rule's documentation

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0] if self.doc.strip() else self.name

    @property
    def measured(self) -> bool:
        return self.code.startswith("PS1")


RULES: dict[str, Rule] = {}


def rule(code: str, name: str) -> Callable[[Check], Check]:
    """Register ``check`` as rule ``code``; its module's docstring documents it."""

    def register(check: Check) -> Check:
        if code in RULES or any(r.name == name for r in RULES.values()):
            raise RuntimeError(f"lint rule {code} ({name}) is registered twice")
        doc = sys.modules[check.__module__].__doc__ or ""
        RULES[code] = Rule(code, name, check, doc)
        return check

    return register


def load_rules() -> dict[str, Rule]:
    """Every rule module under lint/rules, imported once."""
    from reconciler.diagnosis.lint import rules

    for module in pkgutil.iter_modules(rules.__path__):
        importlib.import_module(f"{rules.__name__}.{module.name}")
    return dict(sorted(RULES.items()))


def find_rule(code_or_name: str) -> Rule:
    """A rule by code (PS101) or name (table-rewrite); a usage error with a suggestion else."""
    rules = load_rules()
    wanted = code_or_name.strip()
    for found in rules.values():
        if wanted.upper() == found.code or wanted.lower() == found.name:
            return found
    names = [*rules, *(r.name for r in rules.values())]
    raise UsageError(f"unknown lint rule {code_or_name!r}{did_you_mean(wanted, names)}")


def walk(node: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (kind, node) in a parse tree, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, dict) and key[:1].isupper():
                yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)
