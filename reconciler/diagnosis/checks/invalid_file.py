"""invalid_file: a file in the migrations directory poststack cannot use: a bad name, bytes
that are not UTF-8, two files with one version's companion, a rollback with no migration.
Duplicate versions are reported as duplicate_version."""

from __future__ import annotations

from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType


@check(IssueType.INVALID_FILE)
def invalid_file(facts: Facts) -> list[Issue]:
    return [
        Issue(
            IssueType.INVALID_FILE,
            problem.message,
            problem.version,
            {"kind": problem.kind, "files": [str(p) for p in problem.paths]},
        )
        for problem in facts.desired.problems
        if problem.kind != "duplicate_version"
    ]
