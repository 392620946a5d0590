"""orphaned_schema: a schema that no migration creates or puts anything in."""

from __future__ import annotations

from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType


@check(IssueType.ORPHANED_SCHEMA)
def orphaned_schema(facts: Facts) -> list[Issue]:
    # A fleet tenant's shared schemas are on its search_path by the targets file's word.
    expected = (
        facts.desired.history.schemas | {"public", facts.observed.tracking.schema} | (facts.observed.scope or set())
    )
    return [
        Issue(
            IssueType.ORPHANED_SCHEMA,
            f"Schema {schema} exists but has no corresponding migration",
            None,
            {"schema": schema},
        )
        for schema in facts.observed.catalog.schemas
        if schema not in expected
    ]
