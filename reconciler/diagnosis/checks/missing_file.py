"""missing_file: a migration is tracked as applied but its file is gone."""

from __future__ import annotations

from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType


@check(IssueType.MISSING_FILE)
def missing_file(facts: Facts) -> list[Issue]:
    return [
        Issue(
            IssueType.MISSING_FILE,
            f"Migration {row.version} is tracked but its file is missing",
            row.version,
            {"description": row.description, "applied_at": row.applied_at.isoformat(), "checksum": row.checksum},
        )
        for number, row in sorted(facts.observed.tracking.applied.items())
        # A file that is there but unusable is an invalid_file, not a missing one.
        if number not in facts.desired.by_key and number not in facts.problem_versions
    ]
