"""out_of_order: a pending migration older than the newest applied one (often a merge)."""

from __future__ import annotations

from reconciler.attribution import Verdict
from reconciler.checks.base import Facts, check
from reconciler.issues import Issue, IssueType


@check(IssueType.OUT_OF_ORDER)
def out_of_order(facts: Facts) -> list[Issue]:
    applied = facts.observed.tracking.applied
    if not applied:
        return []
    newest = applied[max(applied)]
    issues = []
    for migration in facts.untracked:
        if migration.number >= newest.number:
            continue
        if facts.attributions[migration.version].verdict is not Verdict.ABSENT:
            continue  # applied, partial or undetermined: another check says so
        issues.append(
            Issue(
                IssueType.OUT_OF_ORDER,
                f"Migration {migration.version} is pending but older than applied migration {newest.version}",
                migration.version,
                {"description": migration.description, "newest_applied": newest.version},
            )
        )
    return issues
