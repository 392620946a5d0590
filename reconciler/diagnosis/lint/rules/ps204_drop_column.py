"""A column is dropped from an existing table that the running code may still read.

**Static.** ``DROP COLUMN`` is quick (PostgreSQL only marks the column dropped, under a
brief ACCESS EXCLUSIVE lock), but the application deployed now was written against the
column. A query that names it fails from the moment the migration commits until the new
code is everywhere; so does one that does not name it but caches the columns: an ORM that
lists every column of a model in its INSERTs and SELECTs, a prepared ``SELECT *`` whose
result shape changed (``cached plan must not change result type``). The migration runs
before or during the deploy, so the old code and the missing column meet. The severity is
medium whatever the table's size: what breaks is the code, not the lock.

**Safer:** first stop reading and writing the column in the code (in an ORM: remove it from
the model, or list it in the ignored columns, such as Rails' ``ignored_columns``), and
deploy that; then drop the column in a later migration.

**squawk:** ``ban-drop-column`` warns on every dropped column; poststack does not report one
dropped from a "table created in the same migration".
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.diagnosis.lint.base import Hit, LintSeverity, StatementContext, rule
from reconciler.diagnosis.lint.parts import alter_commands, altered, sized

_ALTERNATIVE = (
    "stop reading and writing the column in the code first (drop it from the model, or list it in the ORM's "
    "ignored columns) and deploy that; drop the column in a later migration"
)


@rule("PS204", "drop-column")
def drop_column(context: StatementContext) -> Iterator[Hit]:
    relation = altered(context)
    if relation is None or not context.pre_existing(relation):
        return
    columns = [str(c.get("name")) for c in alter_commands(context) if c.get("subtype") == "AT_DropColumn"]
    if not columns:
        return
    lock = context.lock(relation)
    yield Hit(
        message=f"drops {', '.join(columns)} from {sized(relation, context.size(relation))}: the code running now "
        "may still read or write it, and fails from the moment the migration commits until new code is deployed",
        alternative=_ALTERNATIVE,
        severity=LintSeverity.MEDIUM,
        relation=relation,
        lock=lock.label if lock is not None else "ACCESS EXCLUSIVE",
        rewrites=relation in context.facts.rewritten if context.facts is not None else False,
        basis="static",
    )
