"""A constraint is added and checked against every existing row while the table is locked.

**Measured.** ``ADD CONSTRAINT ... FOREIGN KEY`` or ``CHECK`` without ``NOT VALID`` reads the
whole table to check it before the statement ends, holding its lock all the while: SHARE ROW
EXCLUSIVE on both tables of a foreign key (nobody writes them), ACCESS EXCLUSIVE for a CHECK
(nobody reads either). The shadow shows the scan (the table's scan count grows inside the
statement); the severity follows the table's live size.

A ``REFERENCES`` or ``CHECK`` written on a column that ``ADD COLUMN`` adds is checked the same
way when the new column has values to check (a default): the shadow shows the scan. Without
a default the column is all NULL, and this server reads nothing.

**Safer:** ``ADD CONSTRAINT ... NOT VALID`` (it only checks new rows, and takes its lock
briefly), then ``ALTER TABLE ... VALIDATE CONSTRAINT ...`` in a later migration: validating
takes SHARE UPDATE EXCLUSIVE, so reads and writes go on while it reads the table. For a new
column, add it without the constraint first.

**squawk:** ``adding-foreign-key-constraint`` and ``constraint-missing-not-valid``. A
constraint added to a table made in the same migration is not reported ("table created in the
same migration": it has no rows to check, and nobody waits for it), nor a ``REFERENCES`` on a
column ``ADD COLUMN`` adds without a default ("measured: no scan on this server": the column
is all NULL).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from reconciler.desired.replay.measure import LOCK_MODES, lock_name
from reconciler.diagnosis.lint.base import Hit, StatementContext, by_size, rule
from reconciler.diagnosis.lint.parts import a_lock, alter_commands, altered, sized, what_the_lock_stops

_ALTERNATIVE = (
    "ADD CONSTRAINT ... NOT VALID now, then ALTER TABLE ... VALIDATE CONSTRAINT in a later migration "
    "(SHARE UPDATE EXCLUSIVE: reads and writes go on)"
)
_ON_NEW_COLUMN = (
    "add the column without the constraint, then ADD CONSTRAINT ... NOT VALID, and VALIDATE CONSTRAINT in a "
    "later migration (SHARE UPDATE EXCLUSIVE: reads and writes go on)"
)
# The lock each kind is checked under, as pg_locks spells it; an ALTER TABLE takes its strongest.
_CHECKED = {"CONSTR_FOREIGN": "ShareRowExclusiveLock", "CONSTR_CHECK": "AccessExclusiveLock"}


@rule("PS103", "validating-constraint")
def validating_constraint(context: StatementContext) -> Iterator[Hit]:
    relation = altered(context)
    if relation is None or not context.pre_existing(relation):
        return
    commands = [(command, _validated(command)) for command in alter_commands(context)]
    kinds = [kind for _, found in commands for kind in found]
    if not kinds:
        return
    facts = context.facts
    if facts is not None and relation not in facts.scanned:
        return  # measured: nothing was read under the lock
    if facts is not None and relation in facts.rewritten:
        return  # the rewrite (PS101) is the finding: the check happens while it copies
    lock = context.lock(relation)
    label = lock.label if lock is not None else lock_name(max((_CHECKED[k] for k in kinds), key=LOCK_MODES.index))
    size = context.size(relation)
    # A foreign key locks the table it references too, as long: writers of that one wait as well.
    # A partition locked with its partitioned table (this one's, or the referenced one's) is
    # part of that table, sized with it: not a table of its own that the constraint references.
    referenced = [
        lock
        for lock in (facts.locks if facts is not None else ())
        if lock.relation != relation
        and lock.relation in facts.taken
        and lock.blocks_writes
        and context.pre_existing(lock.relation)
        and facts.root_of(lock.relation) is None
    ]
    also = "".join(
        f"; {sized(lock.relation, context.size(lock.relation))}, which it references, is held "
        f"{lock.label} as long: {what_the_lock_stops(lock.label)} either"
        for lock in referenced
    )
    yield Hit(
        message=f"checks every row of {sized(relation, size)} under {a_lock(label)}: {what_the_lock_stops(label)} "
        f"until the check ends{also}",
        alternative=_ON_NEW_COLUMN
        if any(found and command.get("subtype") == "AT_AddColumn" for command, found in commands)
        else _ALTERNATIVE,
        severity=by_size(size, blocks_reads=label == "ACCESS EXCLUSIVE"),
        relation=relation,
        lock=label,
        rewrites=False if facts is not None else None,
        scans=True,
        basis=facts.basis if facts is not None else "static",
    )


def _validated(command: dict[str, Any]) -> list[str]:
    """The kinds of constraint a subcommand adds and checks now: ADD CONSTRAINT without NOT
    VALID, or REFERENCES and CHECK written on the column ADD COLUMN adds."""
    definition = command.get("def") or {}
    if command.get("subtype") == "AT_AddConstraint":
        constraints = [definition.get("Constraint", {})]
    elif command.get("subtype") == "AT_AddColumn":
        constraints = [c.get("Constraint", {}) for c in definition.get("ColumnDef", {}).get("constraints") or []]
        if not any(c.get("contype") == "CONSTR_DEFAULT" for c in constraints):
            return []  # a new column without a default is NULL in every row: nothing to check
    else:
        return []
    return [str(c["contype"]) for c in constraints if c.get("contype") in _CHECKED and not c.get("skip_validation")]
