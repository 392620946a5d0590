"""missing_objects: drift. A tracked, successful migration's objects are gone."""

from __future__ import annotations

from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType


@check(IssueType.MISSING_OBJECTS)
def missing_objects(facts: Facts) -> list[Issue]:
    issues = []
    catalog = facts.observed.catalog
    for key, row in sorted(facts.observed.tracking.applied.items()):
        migration = facts.desired.by_key.get(key)
        if migration is None:
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
