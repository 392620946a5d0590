"""A statement waits for a lock that stops readers or writers, with no lock_timeout to give up.

**Static.** A statement that needs a strong lock on an existing table (ACCESS EXCLUSIVE for
most ``ALTER TABLE``, SHARE for ``CREATE INDEX``, SHARE ROW EXCLUSIVE for a foreign key or a
trigger) first waits for every query already running on the table. While it waits, every
query after it that its lock would stop waits behind it (for ACCESS EXCLUSIVE, even plain
reads): one slow report turns a brief schema change into an outage. A ``lock_timeout``
makes the statement give up instead of queueing everyone; without one it waits as long as it
takes. Which locks the statement takes is measured in the shadow when one ran (the locks it
took or made stronger, not those an earlier statement of its transaction already holds);
without a shadow it follows the statement's kind, as PostgreSQL documents it. What a shadow
cannot show is the lock_timeout: that comes from the run, not the SQL.

This rule rarely fires: ``db migrate`` sets a lock_timeout for every migration
(``ddl_lock_timeout``, 5 seconds unless configured) and retries a migration that timed out.
It fires only when the project turned that off (``ddl_lock_timeout = 0``) and the file sets
no ``lock_timeout`` of its own before the statement, or when the file itself turns it off
before the statement (``SET lock_timeout = 0``, as a pg_dump script starts, or ``RESET
lock_timeout``): that runs after poststack's, and wins. The severity follows what the lock
stops (reads and writes: medium; writes: low) on a table that has rows or sessions on it
now; on an empty, idle one, info.

**Safer:** keep poststack's ``ddl_lock_timeout``, or start the file with
``SET lock_timeout = '5s';`` (``SET LOCAL`` in a transactional file) and retry the migration
when it times out, at a quieter moment.

**squawk:** ``require-lock-timeout`` (``require-timeout-settings`` before squawk 2.60) warns
on every file that takes such a lock without a ``SET lock_timeout`` of its own: squawk reads
the SQL alone, so it cannot know that the tool running the migration sets one. poststack
knows it does, and warns only when that is switched off: where squawk warns, "poststack sets
lock_timeout for every migration" (with ``ddl_lock_timeout = 0`` this rule reports the
statement). Nor does it warn of a statement that "takes only SHARE UPDATE EXCLUSIVE"
(``CREATE INDEX CONCURRENTLY``, ``DROP INDEX CONCURRENTLY``, ``VALIDATE CONSTRAINT``: reads
and writes go on while it waits), of one that "locks no table against readers or writers" (a
function replaced, an enum value added; a view replaced or dropped takes ACCESS EXCLUSIVE on
the view itself, which is not measured), or of a "table created in the same migration".
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.desired.script import statement_detaches_concurrently
from reconciler.diagnosis.lint.base import Hit, LintSeverity, StatementContext, rule, walk
from reconciler.diagnosis.lint.parts import (
    a_lock,
    alter_commands,
    altered,
    dropped_relations,
    sized,
    what_the_lock_stops,
)

_ALTERNATIVE = (
    "keep db migrate's ddl_lock_timeout, or SET lock_timeout = '5s' at the top of the file, and retry the migration "
    "at a quieter moment when it times out"
)
_ACCESS_EXCLUSIVE, _SHARE_ROW_EXCLUSIVE, _SHARE = "ACCESS EXCLUSIVE", "SHARE ROW EXCLUSIVE", "SHARE"
_STRENGTH = {_SHARE: 1, _SHARE_ROW_EXCLUSIVE: 2, "EXCLUSIVE": 3, _ACCESS_EXCLUSIVE: 4}
# LOCK TABLE's mode numbers (lockdefs.h), from SHARE up: the modes that stop writers.
_LOCK_STMT_MODES = {5: _SHARE, 6: _SHARE_ROW_EXCLUSIVE, 7: "EXCLUSIVE", 8: _ACCESS_EXCLUSIVE}
# ALTER TABLE subcommands that take only SHARE UPDATE EXCLUSIVE on the table: reads and writes
# go on (storage parameters: fillfactor, autovacuum_*, the ones a migration sets).
_WEAK_ALTERS = frozenset(
    {
        "AT_ValidateConstraint",
        "AT_SetStatistics",
        "AT_ClusterOn",
        "AT_DropCluster",
        "AT_SetOptions",
        "AT_ResetOptions",
        "AT_SetRelOptions",
        "AT_ResetRelOptions",
        "AT_AttachPartition",
    }
)
# RENAMEs that lock the table ACCESS EXCLUSIVE (not an index's, a sequence's or a type's).
_RENAMES = frozenset({"OBJECT_TABLE", "OBJECT_COLUMN", "OBJECT_TABCONSTRAINT", "OBJECT_VIEW", "OBJECT_MATVIEW"})


@rule("PS201", "lock-timeout-missing")
def lock_timeout_missing(context: StatementContext) -> Iterator[Hit]:
    if context.lock_timeout > 0 or context.file_sets_lock_timeout:
        return
    locks = _measured(context) if context.facts is not None else _documented(context)
    locks = [(relation, label) for relation, label in locks if context.pre_existing(relation)]
    if not locks:
        return
    relation, label = max(locks, key=lambda pair: _STRENGTH.get(pair[1], 0))
    size = context.size(relation)
    busy = size is not None and size.exists and (not size.empty or size.sessions > 0)
    if not busy:
        severity = LintSeverity.INFO
    else:
        severity = LintSeverity.MEDIUM if label == _ACCESS_EXCLUSIVE else LintSeverity.LOW
    yield Hit(
        message=f"waits for {a_lock(label)} on {sized(relation, size)} with no lock_timeout: it waits as long as the "
        f"queries running on it take, and from the moment it asks, {what_the_lock_stops(label)}: they queue behind it",
        alternative=_ALTERNATIVE,
        severity=severity,
        relation=relation,
        lock=label,
        basis=context.facts.basis if context.facts is not None else "static",
    )


def _measured(context: StatementContext) -> list[tuple[str, str]]:
    """The locks the statement took (or made stronger) that stop writers, as the shadow saw."""
    facts = context.facts
    if facts is None:
        return []
    return [(lock.relation, lock.label) for lock in facts.locks if lock.relation in facts.taken and lock.blocks_writes]


def _documented(context: StatementContext) -> list[tuple[str, str]]:
    """The locks that stop writers PostgreSQL documents for the statement's kind."""
    kind, node = context.kind, context.node
    relation = altered(context)
    if kind == "AlterTableStmt" and relation is not None:
        commands = list(alter_commands(context))
        subtypes = [command.get("subtype") for command in commands]
        attached = [
            (context.resolve(c["def"]["PartitionCmd"]["name"]), _ACCESS_EXCLUSIVE)
            for c in commands
            if c.get("subtype") == "AT_AttachPartition" and "PartitionCmd" in (c.get("def") or {})
        ]  # the partition attached is locked ACCESS EXCLUSIVE, and read to check its bounds
        if statement_detaches_concurrently(node):
            return []  # SHARE UPDATE EXCLUSIVE on the table and the partition: reads and writes go on
        if subtypes and all(subtype in _WEAK_ALTERS for subtype in subtypes):
            return attached
        references = _referenced(context)
        if subtypes and all(subtype == "AT_AddConstraint" for subtype in subtypes) and references:
            return [(relation, _SHARE_ROW_EXCLUSIVE), *((r, _SHARE_ROW_EXCLUSIVE) for r in references)]
        return [(relation, _ACCESS_EXCLUSIVE), *((r, _SHARE_ROW_EXCLUSIVE) for r in references)]
    if kind == "IndexStmt" and relation is not None:
        return [] if node.get("concurrent") else [(relation, _SHARE)]
    if kind == "RenameStmt" and relation is not None and node.get("renameType") in _RENAMES:
        return [(relation, _ACCESS_EXCLUSIVE)]
    if kind == "CreateTrigStmt" and relation is not None:
        return [(relation, _SHARE_ROW_EXCLUSIVE)]
    if kind == "ClusterStmt" and relation is not None:
        return [(relation, _ACCESS_EXCLUSIVE)]
    if kind == "ReindexStmt" and relation is not None and node.get("kind") == "REINDEX_OBJECT_TABLE":
        concurrent = any(o.get("DefElem", {}).get("defname") == "concurrently" for o in node.get("params") or [])
        return [] if concurrent else [(relation, _SHARE)]
    if kind == "CreateStmt":
        return [(r, _SHARE_ROW_EXCLUSIVE) for r in _referenced(context)]
    if kind == "DropStmt":
        return [(r, _ACCESS_EXCLUSIVE) for r in dropped_relations(context)]
    if kind == "TruncateStmt":
        return [(context.resolve(r["RangeVar"]), _ACCESS_EXCLUSIVE) for r in node.get("relations") or []]
    if kind == "LockStmt" and node.get("mode") in _LOCK_STMT_MODES:
        mode = _LOCK_STMT_MODES[node["mode"]]
        return [(context.resolve(r["RangeVar"]), mode) for r in node.get("relations") or []]
    if kind == "VacuumStmt" and any(o.get("DefElem", {}).get("defname") == "full" for o in node.get("options") or []):
        rels = [r.get("VacuumRelation", {}).get("relation") for r in node.get("rels") or []]
        return [(context.resolve(r), _ACCESS_EXCLUSIVE) for r in rels if r]
    return []


def _referenced(context: StatementContext) -> list[str]:
    """The tables a statement's foreign keys reference (pktable): locked SHARE ROW EXCLUSIVE."""
    return [
        context.resolve(constraint["pktable"])
        for kind, constraint in walk(context.node)
        if kind == "Constraint" and constraint.get("contype") == "CONSTR_FOREIGN" and constraint.get("pktable")
    ]
