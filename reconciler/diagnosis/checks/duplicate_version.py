"""duplicate_version: several successful tracking rows for one version (repairable), or
several migration files with one version (a person must renumber one). A Flyway
repeatable's rows are one per application: several are its history, not duplicates."""

from __future__ import annotations

from collections import defaultdict

from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType


@check(IssueType.DUPLICATE_VERSION)
def duplicate_version(facts: Facts) -> list[Issue]:
    issues = []
    rows_by_key = defaultdict(list)
    for row in facts.observed.tracking.rows:
        if row.success and not row.key.is_repeatable:  # a repeatable has a row per application
            rows_by_key[row.key].append(row)
    for rows in rows_by_key.values():
        if len(rows) < 2:
            continue
        issues.append(
            Issue(
                IssueType.DUPLICATE_VERSION,
                f"Migration {rows[0].version} has {len(rows)} tracking rows",
                rows[0].version,
                {
                    "source": "tracking",
                    "row_ids": [r.id for r in rows],
                    "applied_at": [r.applied_at.isoformat() for r in rows],
                },
            )
        )
    for problem in facts.desired.problems:
        if problem.kind != "duplicate_version":
            continue
        names = [p.name for p in problem.paths]
        issues.append(
            Issue(
                IssueType.DUPLICATE_VERSION,
                f"Migration {problem.version} has {len(names)} files: {', '.join(names)}",
                problem.version,
                {"source": "files", "files": [str(p) for p in problem.paths]},
                suggested_fix="Renumber all but one of the files (a new, unused version each)",
                auto_fixable=False,
            )
        )
    return issues
