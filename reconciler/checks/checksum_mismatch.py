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
        if migration is None or row.checksum is None:
            continue
        # Compare with the algorithm the row was written with.
        current = migration.file.checksum_as(row.checksum_algorithm)
        if current == row.checksum:
            continue
        details = {
            "tracked_checksum": row.checksum,
            "file_checksum": current if current is not None else migration.checksum,
            "algorithm": row.checksum_algorithm,
            "file": str(migration.path),
        }
        if current is None:
            details["note"] = f"unknown checksum algorithm {row.checksum_algorithm!r}; compared nothing"
        issues.append(
            Issue(
                IssueType.CHECKSUM_MISMATCH,
                f"Migration {row.version} has checksum mismatch",
                row.version,
                details,
                shown=("tracked_checksum", "file_checksum"),
            )
        )
    return issues
