"""Attaching or adding a partition reads a whole table while the partitioned table is locked.

**Measured.** ``ALTER TABLE ... ATTACH PARTITION`` reads every row of the table it attaches,
to prove each fits the partition's bounds; with a default partition, it and ``CREATE TABLE
... PARTITION OF`` also read every row of the default partition, to prove none belongs to
the new one (and fail if one does: the shadow's default partition is empty, the target's may
not be). All the while the table read is held ACCESS EXCLUSIVE, and the partitioned table
too for ``CREATE TABLE ... PARTITION OF``. The shadow shows which tables were read; the
severity follows the size of the one read.

**Safer:** before attaching, add to the table a ``CHECK`` matching the partition's bounds,
``NOT VALID``, and ``VALIDATE`` it in an earlier migration (reads and writes go on): ATTACH
then skips the read; drop the ``CHECK`` after. For a default partition, add a ``CHECK`` to it
that excludes the new range the same way, or move its rows out first.

**squawk:** none: squawk has no rule for attaching partitions.
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.diagnosis.lint.base import Hit, StatementContext, by_size, rule
from reconciler.diagnosis.lint.parts import a_lock, alter_commands, altered, sized, what_the_lock_stops

_ATTACH = (
    "add a CHECK matching the partition's bounds to the table, NOT VALID, and VALIDATE it in an earlier "
    "migration: ATTACH then skips the read; drop the CHECK after"
)
_DEFAULT = (
    "add a CHECK to the default partition excluding the new range, NOT VALID, and VALIDATE it in an earlier "
    "migration (or move its rows out first): then nothing is read"
)


@rule("PS107", "partition-check")
def partition_check(context: StatementContext) -> Iterator[Hit]:
    facts = context.facts
    if facts is None:
        return
    attaching = [c for c in alter_commands(context) if c.get("subtype") == "AT_AttachPartition"]
    attached = {context.resolve(c["def"]["PartitionCmd"]["name"]) for c in attaching if "PartitionCmd" in c["def"]}
    if attaching:
        parent = altered(context)
    elif context.kind == "CreateStmt" and context.node.get("partbound") and context.node.get("inhRelations"):
        parent = context.resolve(context.node["inhRelations"][0].get("RangeVar", {}))
    else:
        return
    for relation in facts.scanned:
        if relation == parent or not context.pre_existing(relation):
            continue
        lock = facts.lock_on(relation)
        label = lock.label if lock is not None else "ACCESS EXCLUSIVE"
        size = context.size(relation)
        why = (
            "to check each row fits the partition's bounds"
            if relation in attached
            else "to check none of its rows belongs to the new partition (a row that does makes it fail)"
        )
        yield Hit(
            message=f"reads every row of {sized(relation, size)} {why}, under {a_lock(label)}: "
            f"{what_the_lock_stops(label)} until it ends",
            alternative=_ATTACH if relation in attached else _DEFAULT,
            severity=by_size(size, blocks_reads=label == "ACCESS EXCLUSIVE"),
            relation=relation,
            lock=label,
            rewrites=False,
            scans=True,
            basis=facts.basis,
        )
