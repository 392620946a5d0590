"""checksum_mismatch: an applied migration's file was edited after it was applied.

Line endings and a BOM do not count as edits (the checksum normalizes them). Fixed by
``poststack db repair --issue-type checksum_mismatch`` or by restoring the file.
"""

from __future__ import annotations

from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType


@check(IssueType.CHECKSUM_MISMATCH)
def checksum_mismatch(facts: Facts) -> list[Issue]:
    issues = []
    for number, row in sorted(facts.observed.tracking.applied.items()):
        migration = facts.desired.by_key.get(number)
        if migration is None or row.checksum is None or number.is_repeatable:
            continue  # a changed Flyway repeatable is not an edit: migrate runs it again
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
        replaced = _replaced_by(facts, row.checksum, row.checksum_algorithm, row.description, migration.description)
        if replaced:
            # Not an edit: another migration took this number (a merge renumbered the applied
            # one). Accepting the new file's checksum would record it as applied unrun.
            details["replaced"] = replaced
            details["content_moved"] = replaced.startswith("what was applied")
        issues.append(
            Issue(
                IssueType.CHECKSUM_MISMATCH,
                f"Migration {row.version} has checksum mismatch" + (f": {replaced}" if replaced else ""),
                row.version,
                details,
                shown=("tracked_checksum", "file_checksum", "replaced")
                if replaced
                else ("tracked_checksum", "file_checksum"),
                suggested_fix=(
                    "Give the applied migration its version back and the new one a new version: accepting "
                    f"{migration.path.name}'s checksum would record it as applied without running it"
                    + ("" if details["content_moved"] else " (if it is only renamed, poststack db repair --force)")
                )
                if replaced
                else None,
                auto_fixable=False if replaced else None,
            )
        )
    return issues


def _replaced_by(facts: Facts, checksum: str, algorithm: str, applied_name: str, file_name: str) -> str | None:
    """Why the file under an applied version is another migration, not an edited one: the
    applied content now sits in another file, or the file has another name."""
    for other in facts.desired.migrations.migrations:
        if other.file.checksum_as(algorithm) == checksum:
            return f"what was applied is now {other.path.name} (renumbered?), and this file is another migration"
    if applied_name and file_name and applied_name != file_name:
        return f"the file is named {file_name!r}, the migration applied as this version was {applied_name!r}"
    return None
