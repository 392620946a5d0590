"""An UPDATE or DELETE changes every row of an existing table in one statement.

**Static.** An ``UPDATE`` or ``DELETE`` with no ``WHERE``, or with one that names no column
(``WHERE true``, ``WHERE 1 = 1``: the same answer for every row, so all of them or none), is
one long transaction over the whole table. It holds a row lock on every row it touches until
the migration commits, so the application's writes to those rows wait; an UPDATE writes a
new version of every row and leaves the old one dead, so the table and its indexes grow to
about twice their size (vacuum makes the space reusable, it does not give it back); and the
lock the migration took before it (an ``ALTER TABLE``'s ACCESS EXCLUSIVE) is held for as
long as the backfill takes. The shadow cannot show any of this: its copy of the table is
empty, so the statement takes no time there. The severity follows the table's live size on
the target, as for a lock that stops writers; when the shadow shows the migration already
holding a lock on the table that stops readers too (an ``ALTER TABLE`` earlier in the same
transaction), as for that lock: nobody reads the table until the backfill ends.

Not reported: a ``WHERE`` that names a column, even one that matches most rows
(``WHERE new_column IS NULL`` right after adding it is a whole-table backfill all the same:
the SQL cannot say how many rows match); and ``INSERT ... SELECT`` copying a whole table: it
reads the source under ACCESS SHARE (its readers and writers go on) and the rows it inserts
are new, so nobody waits for them. What such a copy costs is time, and a long transaction:
keep it out of a migration that takes a strong lock first.

**Safer:** backfill in batches, each its own transaction:
``UPDATE t SET ... WHERE id BETWEEN 1 AND 10000``, then the next range, in a loop, from a
migration marked ``-- poststack:no-transaction`` (each statement commits on its own) or a
script run outside the migrations. To empty a table, ``TRUNCATE`` is instant (under ACCESS
EXCLUSIVE, briefly).

**squawk:** no rule: squawk's rules are about schema changes, and a backfill is data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from reconciler.diagnosis.lint.base import Hit, StatementContext, by_size, rule
from reconciler.diagnosis.lint.parts import altered, names_a_column, sized, what_the_lock_stops

_UPDATE = (
    "backfill in batches, each its own transaction (UPDATE ... WHERE id BETWEEN 1 AND 10000, then the next range, "
    "in a loop), from a -- poststack:no-transaction migration or a script outside the migrations"
)
_DELETE = (
    "delete in batches, each its own transaction (DELETE ... WHERE id IN (SELECT id ... LIMIT 10000), repeated "
    "until none is left), from a -- poststack:no-transaction migration or a script; to empty it, TRUNCATE"
)
_WHAT = {
    "UpdateStmt": ("updates", "leaves a dead copy of each for vacuum", _UPDATE),
    "DeleteStmt": ("deletes", "leaves each one dead for vacuum", _DELETE),
}


@rule("PS202", "whole-table-update")
def whole_table_update(context: StatementContext) -> Iterator[Hit]:
    if context.kind not in _WHAT:
        return
    relation = altered(context)
    if relation is None or not context.pre_existing(relation) or not _every_row(context.node.get("whereClause")):
        return
    verb, dead, alternative = _WHAT[context.kind]
    held = context.lock(relation)  # measured: the strongest lock the migration holds on it by now
    strong = held is not None and held.blocks_writes
    size = context.size(relation)
    if strong and held is not None:
        waits = f"while the migration holds an {held.label} lock on it: {what_the_lock_stops(held.label)} until it ends"
    else:
        waits = "the application's writes to them wait"
    yield Hit(
        message=f"{verb} every row of {sized(relation, size)} in one statement: one transaction that locks each row "
        f"until the migration commits ({waits}) and {dead}",
        alternative=alternative,
        severity=by_size(size, blocks_reads=held is not None and held.blocks_reads),
        relation=relation,
        lock=held.label if held is not None else "ROW EXCLUSIVE",
        basis="static",
    )


def _every_row(where: dict[str, Any] | None) -> bool:
    """No WHERE, one that names no column (the same for every row), or one that is always true."""
    return where is None or not names_a_column(where) or _always_true(where)


def _always_true(expr: dict[str, Any]) -> bool:
    if "A_Const" in expr:
        return expr["A_Const"].get("boolval", {}).get("boolval") is True
    if "BoolExpr" in expr:
        boolop, args = expr["BoolExpr"].get("boolop"), expr["BoolExpr"].get("args") or []
        if boolop == "OR_EXPR":
            return any(_always_true(arg) for arg in args)
        if boolop == "AND_EXPR":
            return all(_every_row(arg) for arg in args)
    return False
