"""What each statement of a migration locks, rewrites and scans, measured in a shadow.

The history is run in a shadow (as replay runs it) up to the last migration asked about.
Those migrations run statement by statement, and after each one, in the same round trip and
before the transaction commits, the migrating backend reads its own state:

- ``pg_locks`` for its own pid: the relation locks it now holds, and in which mode;
- ``pg_class.relfilenode``: a relation given a new file was rewritten (but for TRUNCATE,
  whose new file is empty: nothing was copied);
- ``pg_stat_get_xact_numscans``: a relation the statement read through (a validation scan).

Only relations that existed before the migration count: creating a table and indexing it in
the same file blocks nobody. A statement PostgreSQL refuses in a transaction (CREATE INDEX
CONCURRENTLY, VACUUM) holds its locks only while it runs: its facts are the ones PostgreSQL
documents for it, and say so (basis "documented").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg2

from reconciler.config import DEFAULT_SCHEMA
from reconciler.db import LOCK_MODES, Session, server_error_text
from reconciler.desired.files import Migration
from reconciler.desired.replay.replay import (
    NOT_BESIDE_THE_TARGET,
    ReplayStop,
    reset_statement,
    run_batched,
    run_migration,
    run_transaction_statement,
    shadow_start,
)
from reconciler.desired.replay.server_guard import GUARD_SQLSTATE, ServerGuard, server_guard, server_level_statement
from reconciler.desired.script import ScriptStatement, parse_trees, statement_detaches_concurrently
from reconciler.errors import MigrationFileError
from reconciler.statements import Statement, quote_ident

# What each mode stops others from doing while it is held.
BLOCKS_READS = frozenset({"AccessExclusiveLock"})
BLOCKS_WRITES = frozenset({"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"})

# The relations of the shadow a migration can touch: one row each, read before a migration;
# for a partition, the partitioned tables above it, its parent first, up to the top of its
# tree (PostgreSQL 12 on): a sub-partitioned partition is a partitioned table too.
_RELATIONS = """SELECT c.oid, n.nspname, c.relname, {ancestors} FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname <> 'information_schema'
  AND n.nspname NOT LIKE 'pg\\_%'"""
_ANCESTORS = """CASE WHEN c.relispartition THEN ARRAY(
  SELECT a.relid::oid FROM pg_catalog.pg_partition_ancestors(c.oid) WITH ORDINALITY AS a(relid, n)
  WHERE a.relid <> c.oid ORDER BY a.n) END"""
# After each statement, in the migrating backend: per relation that existed before the
# migration, its file, the scans so far in this session, and the strongest lock held. A
# relation the transaction dropped has no pg_class row (no file) but keeps its lock until
# the end: DROP TABLE holds ACCESS EXCLUSIVE on it.
_STATE = """SELECT o.oid, c.relfilenode, pg_catalog.pg_stat_get_xact_numscans(o.oid),
  (SELECT max(array_position(%(modes)s::text[], l.mode)) FROM pg_catalog.pg_locks l
    WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'relation' AND l.relation = o.oid AND l.granted)
FROM unnest(%(oids)s::oid[]) AS o(oid) LEFT JOIN pg_catalog.pg_class c ON c.oid = o.oid"""

# Statements that give a relation a new, empty file: nothing is copied, so no rewrite.
_EMPTIES = frozenset({"TruncateStmt"})


def lock_name(mode: str) -> str:
    """'AccessExclusiveLock' -> 'ACCESS EXCLUSIVE', as LOCK TABLE and the docs write it."""
    words, word = [], ""
    for char in mode.removesuffix("Lock"):
        if char.isupper() and word:
            words.append(word)
            word = ""
        word += char
    return " ".join([*words, word]).upper()


@dataclass(frozen=True)
class RelationLock:
    relation: str  # schema.name
    mode: str  # as pg_locks spells it: AccessExclusiveLock

    @property
    def label(self) -> str:
        return lock_name(self.mode)

    @property
    def blocks_reads(self) -> bool:
        return self.mode in BLOCKS_READS

    @property
    def blocks_writes(self) -> bool:
        return self.mode in BLOCKS_WRITES


@dataclass(frozen=True)
class StatementFacts:
    """What one statement did to relations that existed before its migration."""

    version: str
    index: int  # its position among its file's statements: several may share a line
    line: int
    # The locks held once it ran, strongest first: a lock is held until its transaction ends,
    # so one an earlier statement took is held through this one too.
    locks: tuple[RelationLock, ...]
    rewritten: tuple[str, ...]  # relations it gave a new file
    scanned: tuple[str, ...]  # relations it read through
    basis: str = "measured"  # or "documented": it cannot run in a transaction to be watched
    taken: tuple[str, ...] = ()  # relations whose lock this statement took or made stronger
    # (partition, its partitioned table) for the partitions above. What a statement on a
    # partitioned table does to its partitions it does to the table: a partition rewritten
    # or read counts for the table too, which is locked as strongly all the while.
    partitions: tuple[tuple[str, str], ...] = ()

    def root_of(self, relation: str) -> str | None:
        """The partitioned table a partition's facts were counted for, if they were."""
        return next((root for partition, root in self.partitions if partition == relation), None)

    def lock_on(self, relation: str) -> RelationLock | None:
        return next((lock for lock in self.locks if lock.relation == relation), None)

    @property
    def strongest(self) -> RelationLock | None:
        return self.locks[0] if self.locks else None

    def to_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "line": self.line,
            "locks": [
                {"relation": lock.relation, "mode": lock.label, "taken_here": lock.relation in self.taken}
                for lock in self.locks
            ],
            "rewrites": list(self.rewritten),
            "scans": list(self.scanned),
            "basis": self.basis,
        }


@dataclass(frozen=True)
class StatementFailure:
    """The statement PostgreSQL refused in the shadow: the migration cannot have run there."""

    version: str
    index: int  # its position among its file's statements
    line: int
    error: str  # the server's words
    sqlstate: str | None
    # The shadow is a scratch database on the target's own server: what the server lacks (an
    # extension's files), the target lacks too.
    on_targets_server: bool = False


@dataclass(frozen=True)
class Measurement:
    """The facts of every statement of the measured migrations, and where measuring stopped."""

    statements: tuple[StatementFacts, ...]
    existing: dict[str, frozenset[str]]  # per measured version: the relations there before it
    stopped: ReplayStop | None = None
    failure: StatementFailure | None = None  # the statement the stop was on, if one was refused

    def failure_at(self, version: str, index: int) -> StatementFailure | None:
        found = self.failure
        return found if found is not None and (found.version, found.index) == (version, index) else None

    def of(self, version: str, index: int) -> StatementFacts | None:
        """The facts of statement ``index`` (its position in the file's script) of ``version``."""
        return next((f for f in self.statements if f.version == version and f.index == index), None)

    def measured(self, version: str) -> bool:
        return version in self.existing and (self.stopped is None or self.stopped.version != version)


def measure(
    open_shadow: Callable[[], AbstractContextManager[Session]],
    history: Sequence[Migration],
    wanted: frozenset[str],
    search_path: str | None = None,
    guarded: bool = True,
    tracking_schema: str = DEFAULT_SCHEMA,
) -> Measurement:
    """Run ``history`` in order in a shadow, up to the last version in ``wanted``; the
    versions in ``wanted`` are measured statement by statement."""
    last = max((i for i, m in enumerate(history) if m.version in wanted), default=-1)
    reset = reset_statement(search_path)
    facts: list[StatementFacts] = []
    existing: dict[str, frozenset[str]] = {}
    if last < 0:
        return Measurement((), existing)
    with open_shadow() as shadow:
        shadow.run(shadow_start(search_path, tracking_schema))
        guard = server_guard(shadow) if guarded else None
        for migration in history[: last + 1]:
            if migration.version not in wanted:
                stop = run_batched(shadow, migration, reset, guard)
            else:
                above = _ANCESTORS if shadow.server_info().version_num >= 120000 else "NULL::oid[]"
                rows = shadow.query(_RELATIONS.format(ancestors=above))
                relations = {oid: f"{schema}.{name}" for oid, schema, name, _ in rows}
                ancestors = {
                    relations[oid]: tuple(relations[a] for a in tops if a in relations)
                    for oid, _, _, tops in rows
                    if tops
                }
                existing[migration.version] = frozenset(relations.values())
                watched = _Watched(shadow, migration, reset, guard, relations, facts.append, ancestors)
                stop = watched.run()
                if stop is not None:
                    return Measurement(tuple(facts), existing, stop, watched.failure)
            if stop is not None:
                return Measurement(tuple(facts), existing, stop)
    return Measurement(tuple(facts), existing)


class _Watched:
    """One migration run statement by statement, each one's facts read before it commits."""

    def __init__(
        self,
        shadow: Session,
        migration: Migration,
        reset: Statement,
        guard: ServerGuard | None,
        relations: dict[int, str],
        record: Callable[[StatementFacts], None],
        ancestors: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.shadow, self.migration, self.reset, self.guard = shadow, migration, reset, guard
        self.relations = relations
        self.ancestors = ancestors or {}  # partition -> the partitioned tables above it, its parent first
        self.failure: StatementFailure | None = None
        self.record = record
        self.before: dict[int, tuple[Any, ...]] = {}
        self.baseline: list[tuple[Any, ...]] | None = None  # the shared catalogs when the file's BEGIN ran
        self.params = {"modes": list(LOCK_MODES), "oids": list(relations)}

    def run(self) -> ReplayStop | None:
        migration, shadow = self.migration, self.shadow
        try:
            script = migration.file.script
        except MigrationFileError as e:
            return ReplayStop(migration.version, e.summary)
        if self.guard is not None and server_level_statement(script.statements) is not None:
            return run_migration(shadow, migration, self.reset, self.guard)  # says why it stops
        current: ScriptStatement | None = None
        index = len(script.statements) - 1
        try:
            if script.transactional:
                baseline = self._begin()
                for index, current in enumerate(script.statements):
                    self._watch(index, current)
                current = None
                self._commit(baseline)
            else:
                for index, current in enumerate(script.statements):
                    self._outside(index, current)
        except psycopg2.Error as e:
            shadow.rollback()
            if e.pgcode == GUARD_SQLSTATE:
                return ReplayStop(
                    migration.version, f"{migration.path}: {e.diag.message_primary}: {NOT_BESIDE_THE_TARGET}"
                )
            # One that fails as it commits (a deferred constraint) fails on its last statement.
            failing = current if current is not None else (script.statements[-1] if script.statements else None)
            if failing is not None:
                self.failure = StatementFailure(
                    migration.version, index, failing.line, server_error_text(e), e.pgcode, self.guard is not None
                )
            where = f"{migration.path}:{current.line}" if current is not None else str(migration.path)
            return ReplayStop(migration.version, f"{where}: {server_error_text(e)}")
        finally:
            if not shadow.conn.closed:
                shadow.rollback()
                shadow.run(self.reset)
        return None

    def _begin(self) -> list[tuple[Any, ...]] | None:
        if self.guard is None:
            self.shadow.begin()
            self.before = self._state()
            return None
        baseline = self.guard.open(self.shadow)
        self.before = self._state()
        return baseline

    def _commit(self, baseline: list[tuple[Any, ...]] | None) -> None:
        if self.guard is not None and baseline is not None:
            self.shadow.query(self.guard.check(baseline))
        self.shadow.commit()

    def _outside(self, index: int, statement: ScriptStatement) -> None:
        """A statement of a file that runs outside a transaction: inside the file's own
        BEGIN ... COMMIT it is watched there; elsewhere in a transaction of its own, unless
        PostgreSQL refuses that, when its documented facts stand in."""
        shadow = self.shadow
        if statement.kind == "TransactionStmt":
            # On a shared server the file's own transaction is checked as replay checks it:
            # what it did to the server's roles or databases is refused before its COMMIT.
            self.baseline = run_transaction_statement(shadow, statement.sql, self.guard, self.baseline)
            if shadow.in_transaction:
                self.before = self._state()
            return
        if shadow.in_transaction:
            self._watch(index, statement)
            return
        if statement.no_transaction_reason is not None:
            # Read before it runs: DROP INDEX CONCURRENTLY leaves no index to ask about.
            documented = self._documented(index, statement)
            shadow.run(Statement(statement.sql, None))
            self.record(documented)
            return
        baseline = self._begin()
        self._watch(index, statement)
        self._commit(baseline)

    def _state(self, sql: str | None = None) -> dict[int, tuple[Any, ...]]:
        query = _STATE if sql is None else f"{sql}\n;\n{_STATE}"
        # The statement and the read in one round trip, the read's parameters bound as literals
        # and sent without parameters (so the statement's own % signs reach the server as
        # written): the last result is the read.
        rows = self.shadow.query(self.shadow.bind(Statement(query, self.params)))
        return {row[0]: row[1:] for row in rows}

    def _watch(self, index: int, statement: ScriptStatement) -> None:
        # Without parameters the statement's own % signs stay as written: mogrify only binds the read.
        after = self._state(statement.sql.replace("%", "%%"))
        locks: list[RelationLock] = []
        taken: list[str] = []
        rewritten: list[str] = []
        scanned: list[str] = []
        for oid, (filenode, scans, mode) in after.items():
            name = self.relations[oid]
            old = self.before.get(oid)
            if old is None:
                continue
            old_filenode, old_scans, old_mode = old
            if mode is not None:
                locks.append(RelationLock(name, LOCK_MODES[mode - 1]))
                if old_mode is None or mode > old_mode:
                    taken.append(name)
            if filenode != old_filenode and filenode and old_filenode and statement.kind not in _EMPTIES:
                rewritten.append(name)
            if (scans or 0) > (old_scans or 0):
                scanned.append(name)
        self.before = after
        partitions = self._fold_partitions(locks, rewritten, scanned)
        locks.sort(key=lambda lock: (-LOCK_MODES.index(lock.mode), lock.relation))
        self.record(
            StatementFacts(
                self.migration.version,
                index,
                statement.line,
                tuple(locks),
                tuple(sorted(set(rewritten))),
                tuple(sorted(set(scanned))),
                taken=tuple(sorted(taken)),
                partitions=partitions,
            )
        )

    def _fold_partitions(
        self, locks: list[RelationLock], rewritten: list[str], scanned: list[str]
    ) -> tuple[tuple[str, str], ...]:
        """Count a partition's rewrite or scan for the partitioned tables above it too, each
        one up from its parent that is locked at least as strongly (the statement acted on that
        table, not on one partition): a sub-partitioned partition's own partitions do its work.
        The pair kept is the partition and the highest of them, where its finding is said."""
        held = {lock.relation: LOCK_MODES.index(lock.mode) for lock in locks}
        folded = []
        for lock in locks:
            above = []
            for table in self.ancestors.get(lock.relation, ()):
                if held.get(table, -1) < held[lock.relation]:
                    break
                above.append(table)
            if not above:
                continue
            folded.append((lock.relation, above[-1]))
            if lock.relation in rewritten:
                rewritten.extend(above)
            if lock.relation in scanned:
                scanned.extend(above)
        return tuple(sorted(folded))

    def _documented(self, index: int, statement: ScriptStatement) -> StatementFacts:
        relation = _documented_relation(statement.sql)
        locks = ()
        if relation is not None:
            # The table itself, or for an index the table it is on.
            found = self.shadow.query_one(
                "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = COALESCE((SELECT i.indrelid FROM pg_catalog.pg_index i "
                "WHERE i.indexrelid = to_regclass(%s)), to_regclass(%s))",
                (relation[0], relation[0]),
            )
            if found is not None and found[0] in self.relations.values():
                locks = (RelationLock(found[0], relation[1]),)
        rewritten = tuple(lock.relation for lock in locks if relation is not None and relation[2])
        taken = tuple(lock.relation for lock in locks)
        return StatementFacts(self.migration.version, index, statement.line, locks, rewritten, (), "documented", taken)


def _documented_relation(sql: str) -> tuple[str, str, bool] | None:
    """(the table or index, the lock mode PostgreSQL documents on the table, whether it
    rewrites) for a statement that runs outside a transaction: CREATE INDEX CONCURRENTLY,
    DROP INDEX CONCURRENTLY, REINDEX, VACUUM."""
    trees = parse_trees(sql)
    if not trees:
        return None
    kind, node = next(iter(trees[0].items()))
    if kind == "IndexStmt" and node.get("relation"):
        return _name(node["relation"]), "ShareUpdateExclusiveLock", False
    if kind == "VacuumStmt":
        rels = node.get("rels") or []
        options = {o.get("DefElem", {}).get("defname") for o in node.get("options") or []}
        full = "full" in options
        if rels and (relation := rels[0].get("VacuumRelation", {}).get("relation")):
            return _name(relation), "AccessExclusiveLock" if full else "ShareUpdateExclusiveLock", full
    if kind == "ReindexStmt" and node.get("relation") and node.get("kind") == "REINDEX_OBJECT_TABLE":
        return _name(node["relation"]), "ShareUpdateExclusiveLock", False
    if kind == "DropStmt" and node.get("removeType") == "OBJECT_INDEX" and node.get("concurrent"):
        names = [item["String"]["sval"] for item in node["objects"][0]["List"]["items"]]
        index = {"schemaname": names[-2] if len(names) > 1 else None, "relname": names[-1]}
        return _name(index), "ShareUpdateExclusiveLock", False
    if kind == "AlterTableStmt" and node.get("relation") and statement_detaches_concurrently(node):
        return _name(node["relation"]), "ShareUpdateExclusiveLock", False
    return None


def _name(range_var: dict[str, Any]) -> str:
    parts = [range_var[k] for k in ("schemaname", "relname") if range_var.get(k)]
    return ".".join(quote_ident(p) for p in parts)
