"""partial_migration: a tracking row recording a failed application, or an untracked
migration of which some but not all objects exist."""

from __future__ import annotations

from reconciler.desired.files import Migration
from reconciler.diagnosis.attribution import Verdict
from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType
from reconciler.errors import PoststackError
from reconciler.observed.tracking import STARTED_NOT_FINISHED


@check(IssueType.PARTIAL_MIGRATION)
def partial_migration(facts: Facts) -> list[Issue]:
    issues = []
    shown_by_catalog = []  # failed attempts that rolled back, where the catalog says more
    for number, row in sorted(facts.observed.tracking.failed.items()):
        migration = facts.desired.by_key.get(number)
        found = facts.attributions.get(migration.version) if migration is not None else None
        if row.transactional and found is not None and found.verdict in (Verdict.APPLIED, Verdict.PARTIAL):
            # The attempt left nothing: the objects were there before it. Applied: missing_tracking
            # says so; partly there: reported below, as an untracked half-applied migration.
            if found.verdict is Verdict.PARTIAL:
                shown_by_catalog.append(migration)
            continue
        details = {
            "version": row.version,
            "description": row.description,
            "error": row.error,
            "ran_in_transaction": row.transactional,
            "file_present": number in facts.desired.by_key,
        }
        shown = ("version", "description")
        if not row.transactional and found is not None and (found.found or found.missing):
            # Outside a transaction, what it kept is what a person must look at before a retry.
            details["objects_found"] = [o.display() for o in found.found]
            details["objects_missing"] = [o.display() for o in found.missing]
            shown += ("objects_found", "objects_missing")
        issues.append(
            Issue(
                IssueType.PARTIAL_MIGRATION,
                f"Migration {row.version} was not successfully applied",
                row.version,
                details,
                # Retrying is safe when the failure left nothing behind: it ran in a transaction,
                # or it was one statement that failed (a killed concurrent build leaves only an
                # INVALID index, which drop-invalid-indexes removes). Not a run killed inside it:
                # its one statement may have committed after the client was gone.
                auto_fixable=row.transactional or (_single_statement(migration) and row.error != STARTED_NOT_FINISHED),
                shown=shown,
            )
        )
    for migration in (*facts.untracked, *shown_by_catalog):
        found = facts.attributions[migration.version]
        if found.verdict is not Verdict.PARTIAL:
            continue
        issues.append(
            Issue(
                IssueType.PARTIAL_MIGRATION,
                f"Migration {migration.version} is partly applied: {found.reason}",
                migration.version,
                {
                    "version": migration.version,
                    "description": migration.description,
                    "objects_found": [o.display() for o in found.found],
                    "objects_missing": [o.display() for o in found.missing],
                },
                suggested_fix="Finish it by hand or undo what exists, then run poststack db migrate",
                auto_fixable=False,
            )
        )
    return issues


def _single_statement(migration: Migration | None) -> bool:
    if migration is None:
        return False
    try:
        return len(migration.file.script.statements) == 1
    except PoststackError:
        return False
