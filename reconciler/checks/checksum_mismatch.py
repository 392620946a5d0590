"""checksum_mismatch: an applied migration's file was edited after it was applied.

Line endings and a BOM do not count as edits (the checksum normalizes them). Fixed by
``poststack db repair --issue-type checksum_mismatch`` or by restoring the file.
"""

from __future__ import annotations

from reconciler.checks.base import Facts, check
from reconciler.issues import Issue, IssueType


@check(IssueType.CHECKSUM_MISMATCH)
def checksum_mismatch(facts: Facts) -> list[Issue]:
    issues = []
    for number, row in sorted(facts.observed.tracking.applied.items()):
        migration = facts.desired.by_number.get(number)
        if migration is None or row.checksum is None or row.checksum == migration.checksum:
            continue
        issues.append(
            Issue(
                IssueType.CHECKSUM_MISMATCH,
                f"Migration {row.version} has checksum mismatch",
                row.version,
                {"tracked_checksum": row.checksum, "file_checksum": migration.checksum, "file": str(migration.path)},
            )
        )
    return issues
