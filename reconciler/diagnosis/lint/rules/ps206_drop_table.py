"""An existing table is dropped: its rows are gone, and the running code may still read it.

**Static.** ``DROP TABLE`` is quick, but two things follow from it. The code deployed now may
still query the table, and fails from the moment the migration commits until the new code is
everywhere. And the rows are gone: a rollback file can create the table again, empty; a
``db backup`` taken before the migration holds the rows as they were then, not the ones the
application wrote after it, so restoring it loses those. The severity is medium whatever the
size: a table with no rows today can still be named by the code.

**Safer:** stop using the table in the code and deploy that first; then, in a later
migration, rename it aside (``ALTER TABLE t RENAME TO t_unused``) and drop it after a while,
once nothing failed; keep a dump of it (``pg_dump -t``) if its rows may be wanted back.

**squawk:** ``ban-drop-table`` warns on every dropped table; poststack does not report a
"table created in the same migration".
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.diagnosis.lint.base import Hit, LintSeverity, StatementContext, rule
from reconciler.diagnosis.lint.parts import dropped_relations, sized

_ALTERNATIVE = (
    "stop using the table in the code and deploy that first; then rename it aside (ALTER TABLE ... RENAME TO "
    "..._unused) in a later migration, and drop it once nothing failed, keeping a pg_dump -t of it"
)


@rule("PS206", "drop-table")
def drop_table(context: StatementContext) -> Iterator[Hit]:
    for relation in dropped_relations(context):
        if not context.pre_existing(relation):
            continue
        size = context.size(relation)
        lock = context.lock(relation)
        yield Hit(
            message=f"drops {sized(relation, size)}: the code running now may still read it, and its rows are gone "
            "(a rollback can create it again, empty; a backup taken before holds none of the rows written after)",
            alternative=_ALTERNATIVE,
            severity=LintSeverity.MEDIUM,
            relation=relation,
            lock=lock.label if lock is not None else "ACCESS EXCLUSIVE",
            rewrites=False,
            basis="static",
        )
