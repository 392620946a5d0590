"""SET NOT NULL reads the whole table under an ACCESS EXCLUSIVE lock.

**Measured.** ``ALTER COLUMN ... SET NOT NULL`` checks every row for a NULL, and nobody reads
or writes the table until it has. Since PostgreSQL 12 the check is skipped when a valid
``CHECK (column IS NOT NULL)`` constraint already proves it: the shadow shows whether this
server scanned (the table's scan count grows inside the statement). The severity follows the
table's live size.

**Safer:** ``ADD CONSTRAINT name CHECK (column IS NOT NULL) NOT VALID``; in a later migration
``VALIDATE CONSTRAINT name`` (reads and writes go on); then ``SET NOT NULL``, which uses the
constraint and reads nothing; then drop the constraint.

**squawk:** ``adding-not-nullable-field``. poststack says nothing when the server measured no
scan ("measured: no scan on this server": a validated CHECK already proves it, even one
validated in an earlier migration, which squawk cannot see; ``--format json`` lists what every
statement was measured doing, under ``measured.statements``), nor of a table created in the
same migration ("table created in the same migration": nobody can be waiting for it).
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.diagnosis.lint.base import Hit, StatementContext, by_size, rule
from reconciler.diagnosis.lint.parts import alter_commands, altered, sized

_ALTERNATIVE = (
    "ADD CONSTRAINT ... CHECK (column IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT in a later migration; "
    "then SET NOT NULL, which uses it and reads nothing; then drop the CHECK"
)


@rule("PS104", "not-null-scan")
def not_null_scan(context: StatementContext) -> Iterator[Hit]:
    relation = altered(context)
    if relation is None or not context.pre_existing(relation):
        return
    columns = [c.get("name") for c in alter_commands(context) if c.get("subtype") == "AT_SetNotNull"]
    if not columns:
        return
    facts = context.facts
    if facts is not None and (relation not in facts.scanned or relation in facts.rewritten):
        return  # measured: no scan (a CHECK proved it), or the rewrite (PS101) is the finding
    size = context.size(relation)
    yield Hit(
        message=f"reads every row of {sized(relation, size)} to check {', '.join(map(str, columns))} for NULLs, "
        "under an ACCESS EXCLUSIVE lock: nobody reads or writes it until it ends",
        alternative=_ALTERNATIVE,
        severity=by_size(size, blocks_reads=True),
        relation=relation,
        lock="ACCESS EXCLUSIVE",
        rewrites=False if facts is not None else None,
        scans=True,
        basis=facts.basis if facts is not None else "static",
    )
