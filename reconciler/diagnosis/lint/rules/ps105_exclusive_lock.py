"""A statement takes a lock that stops readers or writers of an existing table.

**Measured.** Even a quick ``ALTER TABLE`` (a rename, a dropped column, a new column with a
constant default) takes ACCESS EXCLUSIVE. It is brief, but it must wait for every query
already running on the table, and every query that comes after waits behind it: one slow
report can stop the application. The shadow shows which tables each statement locks, and in
which mode. Statements that also rewrite, scan or build an index are reported by PS101-PS104
instead.

**Safer:** keep the migration short, with nothing slow after the lock is taken in the same
transaction, and let it give up rather than queue everyone: ``db migrate`` sets a
lock_timeout for each migration (``ddl_lock_timeout``) and retries. For ``DROP INDEX``, use
``DROP INDEX CONCURRENTLY`` in a migration file of its own.

**squawk:** ``require-concurrent-index-deletion`` for DROP INDEX; squawk has no rule for the
other brief locks. poststack reports a lock once, at the statement that takes it: a DROP INDEX
after an earlier statement of the same migration took ACCESS EXCLUSIVE on its table waits for
nothing more ("the migration already holds that lock").
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.diagnosis.lint.base import Hit, LintSeverity, StatementContext, rule
from reconciler.diagnosis.lint.parts import sized, what_the_lock_stops

_STRONG = ("AccessExclusiveLock", "ExclusiveLock")
_BRIEF = "keep the migration short and let db migrate's lock_timeout (ddl_lock_timeout) stop it from queueing others"
_DROP_INDEX = "DROP INDEX CONCURRENTLY, in a migration file of its own"


@rule("PS105", "exclusive-lock")
def exclusive_lock(context: StatementContext) -> Iterator[Hit]:
    facts = context.facts
    if facts is None:
        return
    for lock in facts.locks:
        relation = lock.relation
        if lock.mode not in _STRONG or relation not in facts.taken or not context.pre_existing(relation):
            continue
        if facts.root_of(relation) is not None:
            continue  # a partition locked with its partitioned table: said once, for the table
        if relation in facts.rewritten or relation in facts.scanned:
            continue  # rewrites, index builds and validations have rules of their own
        size = context.size(relation)
        busy = size is not None and size.exists and (not size.empty or size.sessions > 0)
        dropping_index = context.kind == "DropStmt" and context.node.get("removeType") == "OBJECT_INDEX"
        yield Hit(
            message=f"takes an {lock.label} lock on {sized(relation, size)}, held until its transaction commits: "
            f"it waits for every query running on it, and while it waits and holds it {what_the_lock_stops(lock.label)}",
            alternative=_DROP_INDEX if dropping_index else _BRIEF,
            severity=LintSeverity.LOW if busy else LintSeverity.INFO,
            relation=relation,
            lock=lock.label,
            rewrites=False,
            scans=False,
            basis=facts.basis,
        )
