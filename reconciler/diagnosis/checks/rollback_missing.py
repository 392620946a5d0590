"""rollback_missing: a migration with no ``.rollback.sql`` cannot be rolled back."""

from __future__ import annotations

from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType


@check(IssueType.ROLLBACK_MISSING)
def rollback_missing(facts: Facts) -> list[Issue]:
    return [
        Issue(
            IssueType.ROLLBACK_MISSING,
            f"Migration {m.version} has no rollback file",
            m.version,
            {"expected_file": str(m.path.with_name(f"{m.label}.rollback.sql"))},
        )
        for m in facts.desired.migrations.migrations
        if m.rollback is None
    ]
