"""missing_objects: drift. A tracked, successful migration's objects are gone, or, where the
history was replayed, are not as it made them (their definitions differ)."""

from __future__ import annotations

from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType
from reconciler.diagnosis.replayed import ReplayedObject


@check(IssueType.MISSING_OBJECTS)
def missing_objects(facts: Facts) -> list[Issue]:
    issues = []
    catalog = facts.observed.catalog
    drift = facts.drift
    for key, row in sorted(facts.observed.tracking.applied.items()):
        migration = facts.desired.by_key.get(key)
        if migration is None:
            continue
        if key.is_repeatable and row.checksum and row.checksum != migration.file.checksum_as(row.checksum_algorithm):
            continue  # edited since it ran: pending, to run again; what it makes now is not there yet
        # A repeatable is replayed after every versioned migration, but ran where it ran among
        # them: a later versioned migration that changes its view on purpose would read as
        # drift. Its objects are judged by name, as without replay.
        if migration.version in facts.replayed_versions and not key.is_repeatable:
            issue = _replayed_drift(row.version, row.description, drift.get(migration.version, ()))
            if issue is not None:
                issues.append(issue)
            continue
        # The history knows the file's spelling of the version ("1.0"), the row may have another ("1").
        evidence = facts.desired.history.evidence_of(migration.version)
        missing = [o for o in evidence if not catalog.has(o)]
        if not missing:
            continue
        issues.append(
            Issue(
                IssueType.MISSING_OBJECTS,
                f"Migration {row.version} is tracked as applied but {len(missing)} of its {len(evidence)} objects are missing",
                row.version,
                {"objects_missing": [o.display() for o in missing], "description": row.description},
            )
        )
    return issues


def _replayed_drift(version: str, description: str, off: tuple[ReplayedObject, ...]) -> Issue | None:
    if not off:
        return None
    missing = [o for o in off if o.found is None]
    changed = [o for o in off if o.found is not None]
    said = []
    if missing:
        said.append(f"{len(missing)} of its objects {'is' if len(missing) == 1 else 'are'} missing")
    if changed:
        who = "" if missing else " of its objects"
        said.append(f"{len(changed)}{who} {'differs' if len(changed) == 1 else 'differ'} from what it made")
    details: dict[str, object] = {"description": description, "evidence": "replay"}
    if missing:
        details["objects_missing"] = [o.name for o in missing]
    if changed:
        details["objects_changed"] = [{"object": o.name, "expected": o.expected, "found": o.found} for o in changed]
    return Issue(
        IssueType.MISSING_OBJECTS,
        f"Migration {version} is tracked as applied but " + " and ".join(said),
        version,
        details,
        suggested_fix=None
        if not changed
        else "Restore what the migration made (details show both definitions), or write a new migration that "
        "makes the change on purpose",
        shown=("objects_missing", "objects_changed"),
    )
