"""A column is added to an existing table with a default computed anew for every row.

**Static.** Since PostgreSQL 11, ``ADD COLUMN ... DEFAULT`` with a constant (or a stable
expression such as ``now()``) is instant: the value is stored once, in the catalog. A
volatile default is not: every existing row gets its own value, computed while the whole
table is rewritten under an ACCESS EXCLUSIVE lock, so nobody reads or writes the table until
every row is copied. The defaults that do this: ``random()``, ``gen_random_uuid()``,
``uuid_generate_v1()``/``v4()``, ``uuidv4()``/``uuidv7()``, ``clock_timestamp()``,
``timeofday()``, ``nextval()``, ``txid_current()``; and the ``serial``, ``bigserial`` and
``smallserial`` types and ``GENERATED ... AS IDENTITY`` columns, which fill every row from a
sequence. The severity follows the table's live size.

This rule reads the SQL, for when nothing was measured (``--no-replay``, or no shadow could
be had). When the shadow measured the statement, the measurement decides: a rewrite is
reported by PS101 (table-rewrite), and no rewrite means this server computes the default
once, so neither rule reports it. A function of your own is volatile unless declared
otherwise, but the SQL alone cannot say: only the measurement reports it.

**Safer:** add the column with no default (or a constant one), then set the default for new
rows (``ALTER COLUMN ... SET DEFAULT gen_random_uuid()``: instant, existing rows keep NULL),
then backfill the existing rows in batches. For an id column, add a nullable ``bigint``, set
its default to ``nextval()`` of a new sequence, backfill in batches, then make it the key.

**squawk:** ``adding-field-with-default`` warns on volatile defaults (and, for PostgreSQL
before 11, on every default); ``adding-serial-primary-key-field`` on a serial primary key.
poststack reports any serial or identity column added to an existing table, key or not, and
only when the shadow did not measure it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from reconciler.diagnosis.lint.base import Hit, StatementContext, by_size, rule
from reconciler.diagnosis.lint.parts import (
    SERIAL_TYPES,
    added_columns,
    altered,
    called_functions,
    constraints,
    sized,
    type_name,
)

VOLATILE = frozenset(
    {
        "random",
        "random_normal",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "txid_current",
        "pg_current_xact_id",
    }
)
_ALTERNATIVE = (
    "add the column without a default (or with a constant one), then ALTER COLUMN ... SET DEFAULT for new rows "
    "(instant), then backfill the existing rows in batches"
)


@rule("PS203", "volatile-default")
def volatile_default(context: StatementContext) -> Iterator[Hit]:
    if context.facts is not None:
        return  # measured: a rewrite is PS101's finding, and no rewrite is no finding
    relation = altered(context)
    if relation is None or not context.pre_existing(relation):
        return
    computed = [found for column in added_columns(context) if (found := _per_row(column)) is not None]
    if not computed:
        return
    size = context.size(relation)
    yield Hit(
        message=f"adds {', '.join(computed)} to {sized(relation, size)}: every existing row gets its own value, "
        "computed while the whole table is rewritten under an ACCESS EXCLUSIVE lock (nobody reads or writes it "
        "until every row is copied)",
        alternative=_ALTERNATIVE,
        severity=by_size(size, blocks_reads=True),
        relation=relation,
        lock="ACCESS EXCLUSIVE",
        rewrites=True,
        basis="static",
    )


def _per_row(column: dict[str, Any]) -> str | None:
    """How the column's value is computed for each existing row ('id bigserial', 'token DEFAULT
    gen_random_uuid()'); None when it is computed once, or not at all."""
    name = column.get("colname", "?")
    kind = type_name(column)
    if kind in SERIAL_TYPES:
        return f"{name} {kind}"
    found = constraints(column)
    if "CONSTR_IDENTITY" in found:
        return f"{name} (an identity column)"
    default = found.get("CONSTR_DEFAULT")
    volatile = sorted(called_functions(default.get("raw_expr"))) if default is not None else []
    volatile = [f for f in volatile if f in VOLATILE]
    return f"{name} DEFAULT {volatile[0]}()" if volatile else None
