"""A table, view or column that exists is renamed while the running code uses the old name.

**Static.** ``ALTER TABLE ... RENAME`` (``RENAME COLUMN``, ``ALTER VIEW ... RENAME``) is
quick, under a brief ACCESS EXCLUSIVE lock, but every query of the code deployed now names
the old name, and fails from the moment the migration commits until the new code is
everywhere: a migration runs before or during a deploy, never at the same instant. The
severity is medium whatever the size: what breaks is the code, not the lock.

A table or materialized view counts when it was there before the migration; a view when it
is not made earlier in the same migration (the shadow measures tables, not views, so a view
made by an earlier pending migration is reported too).

**Safer:** expand and contract. For a column: add the new one, write both from the code,
backfill the new one in batches, switch the reads, then drop the old column in a later
migration. For a table: rename it and, in the same migration, create a view with the old name
(``CREATE VIEW old_name AS SELECT * FROM new_name``: a simple view is updatable, so the old
code goes on reading and writing through it), then drop the view once no code uses it.

**squawk:** ``renaming-column`` and ``renaming-table`` warn on every rename; poststack does not
report one of a relation made in the same migration (a "table created in the same migration",
or a view).
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.diagnosis.lint.base import Hit, LintSeverity, StatementContext, rule
from reconciler.diagnosis.lint.parts import altered, sized

_RELATIONS = {
    "OBJECT_TABLE": "table",
    "OBJECT_VIEW": "view",
    "OBJECT_MATVIEW": "materialized view",
}
_COLUMN = (
    "expand and contract: add the new column, write both from the code, backfill it in batches, switch the reads "
    "to it, then drop the old column in a later migration"
)
_TABLE = (
    "rename it and, in the same migration, CREATE VIEW with the old name AS SELECT * FROM the new one (a simple "
    "view is updatable: the old code goes on through it); drop the view once no code uses the old name"
)


@rule("PS205", "rename")
def rename(context: StatementContext) -> Iterator[Hit]:
    if context.kind != "RenameStmt":
        return
    node = context.node
    renamed = node.get("renameType")
    relation_type = node.get("relationType") if renamed == "OBJECT_COLUMN" else renamed
    relation = altered(context)
    if relation is None or relation_type not in _RELATIONS or not _exists(context, relation, relation_type):
        return
    what = _RELATIONS[str(relation_type)]
    size = context.size(relation) if relation_type != "OBJECT_VIEW" else None
    if renamed == "OBJECT_COLUMN":
        subject, alternative = f"renames column {node.get('subname')} of {sized(relation, size)}", _COLUMN
    else:
        subject, alternative = f"renames the {what} {sized(relation, size)}", _TABLE
    lock = context.lock(relation)
    yield Hit(
        message=f"{subject} to {node.get('newname')}: the code running now still uses the old name, and fails from "
        "the moment the migration commits until new code is deployed",
        alternative=alternative,
        severity=LintSeverity.MEDIUM,
        relation=relation,
        lock=lock.label if lock is not None else "ACCESS EXCLUSIVE",
        rewrites=False,
        basis="static",
    )


def _exists(context: StatementContext, relation: str, relation_type: object) -> bool:
    if relation_type == "OBJECT_VIEW":
        return relation not in context.created_here
    return context.pre_existing(relation)
