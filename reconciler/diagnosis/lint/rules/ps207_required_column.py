"""A NOT NULL column without a default is added to an existing table: it fails if the table has rows.

**Static.** ``ADD COLUMN ... NOT NULL`` (or ``PRIMARY KEY``) with no default gives every
existing row a NULL in a column that forbids it, so PostgreSQL refuses the statement as soon
as the table has one row: the migration fails on the target. In the shadow it succeeds, since
the shadow's copy of the table is empty: this is what a shadow cannot show, so the rule reads
the SQL and the target's live row count. High when the table has rows on the target (the
migration will fail), info when it is empty (it will pass, but fail on any other database
that has rows, such as production after staging). A column filled for every row (a
``DEFAULT`` other than ``NULL``, a serial type, an identity or a stored generated column) is
not reported here.

**Safer:** add the column with a constant default (``ADD COLUMN ... NOT NULL DEFAULT 0``:
instant since PostgreSQL 11, no rewrite), or add it nullable, backfill it in batches, then
make it NOT NULL through a validated ``CHECK (column IS NOT NULL)`` (see PS104).

**squawk:** ``adding-required-field`` warns on every such column; poststack says how bad it is
from the live row count, and does not report one added to a "table created in the same
migration".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from reconciler.diagnosis.lint.base import Hit, LintSeverity, StatementContext, rule
from reconciler.diagnosis.lint.parts import SERIAL_TYPES, added_columns, altered, constraints, sized, type_name

_ALTERNATIVE = (
    "give it a constant default (ADD COLUMN ... NOT NULL DEFAULT ...: instant, no rewrite), or add it nullable, "
    "backfill in batches, then SET NOT NULL through a validated CHECK (column IS NOT NULL)"
)
_FILLED = ("CONSTR_IDENTITY", "CONSTR_GENERATED")


@rule("PS207", "required-column")
def required_column(context: StatementContext) -> Iterator[Hit]:
    relation = altered(context)
    if relation is None or not context.pre_existing(relation):
        return
    columns = [str(column.get("colname")) for column in added_columns(context) if _required(column)]
    if not columns:
        return
    size = context.size(relation)
    has_rows = size is not None and size.exists and not size.empty
    if has_rows:
        outcome = "the table has rows on this database, so the migration will fail here"
    else:
        outcome = "the table is empty here, so it passes, but it fails on any database where the table has rows"
    lock = context.lock(relation)
    yield Hit(
        message=f"adds {', '.join(columns)} NOT NULL with no default to {sized(relation, size)}: every existing row "
        f"would hold a NULL, so PostgreSQL refuses it when the table has a row; {outcome}",
        alternative=_ALTERNATIVE,
        severity=LintSeverity.HIGH if has_rows else LintSeverity.INFO,
        relation=relation,
        lock=lock.label if lock is not None else "ACCESS EXCLUSIVE",
        basis="static",
    )


def _required(column: dict[str, Any]) -> bool:
    """NOT NULL (or PRIMARY KEY) with nothing to fill the existing rows."""
    found = constraints(column)
    if "CONSTR_NOTNULL" not in found and "CONSTR_PRIMARY" not in found:
        return False
    if type_name(column) in SERIAL_TYPES or any(kind in found for kind in _FILLED):
        return False
    default = found.get("CONSTR_DEFAULT")
    return default is None or _is_null(default.get("raw_expr"))


def _is_null(expr: dict[str, Any] | None) -> bool:
    """DEFAULT NULL (possibly cast): no value at all."""
    while expr is not None and "TypeCast" in expr:
        expr = expr["TypeCast"].get("arg")
    return expr is None or bool(expr.get("A_Const", {}).get("isnull"))
