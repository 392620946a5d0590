"""A statement rewrites a whole table that already has rows.

**Measured.** In the shadow, the statement gave an existing table a new file
(``pg_class.relfilenode`` changed before the transaction committed): PostgreSQL copied every
row, and every index, while holding the lock it took, usually ACCESS EXCLUSIVE, so nobody
reads or writes the table until the copy ends. How long that is grows with the table: the
severity follows its live size on the target.

Whether a statement rewrites is measured on the server, not guessed from its text:
``ALTER COLUMN TYPE varchar(20) -> text`` or ``-> varchar(50)`` needs no rewrite, and
``ADD COLUMN ... DEFAULT 0`` needs none since PostgreSQL 11, while ``DEFAULT random()`` or
``int -> bigint`` does.

**Safer:** for a type change, add a column of the new type, backfill it in batches, switch
the code over, then drop the old column. For a volatile default, add the column without it
(or with a constant one) and backfill in batches. For ``VACUUM FULL`` or ``CLUSTER``, use an
online tool such as pg_repack, or a maintenance window.

**squawk:** ``changing-column-type`` and ``adding-field-with-default`` warn from the text;
poststack reports only the statements this server really rewrites ("measured: no rewrite on
this server" for the others: ``varchar(20)`` to ``text`` or to ``varchar(40)``, ``numeric(10,2)``
to ``numeric(14,2)``, ``timestamp`` to ``timestamptz`` when the session's TimeZone is UTC;
``--format json`` lists what every statement was measured doing, under
``measured.statements``), and says nothing of a table created in the same migration ("table
created in the same migration": nobody can be waiting for a table that did not exist).
squawk does not warn of ``ADD COLUMN ... serial``, which rewrites too.
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.diagnosis.lint.base import Hit, StatementContext, by_size, rule
from reconciler.diagnosis.lint.parts import a_lock, alter_commands, sized, what_the_lock_stops

_TYPE_CHANGE = (
    "add a column of the new type, backfill it in batches, switch reads and writes to it, then drop the old column"
)
_VOLATILE_DEFAULT = (
    "add the column without a default (or with a constant one), backfill it in batches, then set the default"
)
_REFRESH = "REFRESH MATERIALIZED VIEW CONCURRENTLY (it needs a unique index on the view): reads go on while it runs"
_OTHER = "rewrite it online (pg_repack) or in a maintenance window, not in a migration that runs during traffic"


@rule("PS101", "table-rewrite")
def table_rewrite(context: StatementContext) -> Iterator[Hit]:
    facts = context.facts
    if facts is None:
        return
    for relation in facts.rewritten:
        if not context.pre_existing(relation) or facts.root_of(relation) is not None:
            continue  # a partition's rewrite is its partitioned table's: said once, sized whole
        lock = facts.lock_on(relation)
        label = lock.label if lock is not None else "ACCESS EXCLUSIVE"
        size = context.size(relation)
        yield Hit(
            message=f"rewrites {sized(relation, size)} under {a_lock(label)}: {what_the_lock_stops(label)} "
            "until every row is copied",
            alternative=_alternative(context),
            severity=by_size(size, blocks_reads=label == "ACCESS EXCLUSIVE"),
            relation=relation,
            lock=label,
            rewrites=True,
            scans=relation in facts.scanned,
            basis=facts.basis,
        )


def _alternative(context: StatementContext) -> str:
    if context.kind == "RefreshMatViewStmt" and not context.node.get("concurrent"):
        return _REFRESH
    subtypes = {command.get("subtype") for command in alter_commands(context)}
    if "AT_AlterColumnType" in subtypes:
        return _TYPE_CHANGE
    if "AT_AddColumn" in subtypes or "AT_ColumnDefault" in subtypes:
        return _VOLATILE_DEFAULT
    return _OTHER
