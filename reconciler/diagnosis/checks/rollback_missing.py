"""rollback_missing: a migration with no rollback (``.rollback.sql``, or its layout's down
file) cannot be rolled back. Not an issue in a layout that has no down migrations (Prisma)."""

from __future__ import annotations

from reconciler.desired.layouts import layout_named
from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType


@check(IssueType.ROLLBACK_MISSING)
def rollback_missing(facts: Facts) -> list[Issue]:
    expected = layout_named(facts.desired.migrations.layout).rollback_file
    if expected is None:
        return []
    return [
        Issue(
            IssueType.ROLLBACK_MISSING,
            f"Migration {m.version} has no rollback file",
            m.version,
            {"expected_file": expected(m)},
        )
        for m in facts.desired.migrations.migrations
        if m.rollback is None and not m.key.is_repeatable  # a repeatable is never undone
    ]
