"""An index is built on an existing table without CONCURRENTLY.

**Measured.** ``CREATE INDEX`` takes a SHARE lock on the table for the whole build: reads go
on, but every INSERT, UPDATE and DELETE waits until the index is built, and building it reads
the whole table. A UNIQUE or PRIMARY KEY constraint added with ``ALTER TABLE`` builds its index
under ACCESS EXCLUSIVE: nobody reads either. The severity follows the table's live size.

**Safer:** ``CREATE INDEX CONCURRENTLY`` in a migration file of its own (poststack runs such a
file outside a transaction, as PostgreSQL requires). For a constraint, build the unique index
concurrently, then ``ALTER TABLE ... ADD CONSTRAINT ... UNIQUE USING INDEX``. A concurrent
build that fails leaves an INVALID index: ``db diagnose`` reports it. PostgreSQL refuses
``CONCURRENTLY`` on a partitioned table: create the index ``ON ONLY`` the partitioned table
(nothing is built: the shadow shows no read, and nothing is reported), build each partition's
concurrently, then ``ALTER INDEX ... ATTACH PARTITION`` each one.

**squawk:** ``require-concurrent-index-creation``, ``disallowed-unique-constraint`` and
``adding-serial-primary-key-field`` (a primary key added without ``USING INDEX``); squawk's
``constraint-missing-not-valid`` also warns of an added UNIQUE or PRIMARY KEY constraint,
which cannot be NOT VALID: its index build is this finding. poststack says nothing of an index
on a table created in the same migration ("table created in the same migration": nobody can
be waiting for a table that did not exist).
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.diagnosis.lint.base import Hit, StatementContext, by_size, rule
from reconciler.diagnosis.lint.parts import a_lock, alter_commands, altered, sized, what_the_lock_stops

_CONCURRENTLY = "CREATE INDEX CONCURRENTLY, in a migration file of its own"
# PostgreSQL refuses CONCURRENTLY on a partitioned table.
_PARTITIONED = (
    "CREATE INDEX ... ON ONLY the partitioned table (it builds nothing), then CREATE INDEX CONCURRENTLY on each "
    "partition, in a migration file of its own, and ALTER INDEX ... ATTACH PARTITION each one"
)
_USING_INDEX = (
    "CREATE UNIQUE INDEX CONCURRENTLY in a file of its own, then ALTER TABLE ... ADD CONSTRAINT ... UNIQUE "
    "(or PRIMARY KEY) USING INDEX"
)


@rule("PS102", "blocking-index-build")
def blocking_index_build(context: StatementContext) -> Iterator[Hit]:
    relation = altered(context)
    if relation is None or not context.pre_existing(relation):
        return
    if context.kind == "IndexStmt" and not context.node.get("concurrent"):
        alternative, default_lock = _CONCURRENTLY, "SHARE"
    elif any(_adds_unique(command) for command in alter_commands(context)):
        alternative, default_lock = _USING_INDEX, "ACCESS EXCLUSIVE"
    else:
        return
    facts = context.facts
    if facts is not None and relation in facts.rewritten:
        return  # the rewrite (PS101) is the finding: its indexes are rebuilt with it
    if facts is not None and facts.basis == "measured" and relation not in facts.scanned:
        return  # measured: nothing was built (CREATE INDEX ON ONLY a partitioned table)
    if alternative == _CONCURRENTLY and facts is not None and any(root == relation for _, root in facts.partitions):
        alternative = _PARTITIONED
    lock = context.lock(relation)
    label = lock.label if lock is not None else default_lock
    size = context.size(relation)
    yield Hit(
        message=f"builds an index on {sized(relation, size)} under {a_lock(label)}: {what_the_lock_stops(label)} "
        "until the whole table is read and the index written",
        alternative=alternative,
        severity=by_size(size, blocks_reads=label == "ACCESS EXCLUSIVE"),
        relation=relation,
        lock=label,
        rewrites=False if context.facts is not None else None,
        scans=True,
        basis=context.facts.basis if context.facts is not None else "static",
    )


def _adds_unique(command: dict[str, object]) -> bool:
    if command.get("subtype") != "AT_AddConstraint":
        return False
    constraint = (command.get("def") or {}).get("Constraint", {})  # type: ignore[union-attr]
    return constraint.get("contype") in ("CONSTR_UNIQUE", "CONSTR_PRIMARY") and not constraint.get("indexname")
