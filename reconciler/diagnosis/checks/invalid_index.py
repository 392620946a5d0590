"""invalid_index: an INVALID index, left by a failed CREATE INDEX CONCURRENTLY."""

from __future__ import annotations

from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType
from reconciler.statements import qualified


@check(IssueType.INVALID_INDEX)
def invalid_index(facts: Facts) -> list[Issue]:
    issues = []
    for index in facts.observed.catalog.invalid_indexes:
        assert index.schema is not None
        issues.append(
            Issue(
                IssueType.INVALID_INDEX,
                f"Index {index.schema}.{index.name} is INVALID (a concurrent build failed or is in progress)",
                None,
                {
                    "index": f"{index.schema}.{index.name}",
                    "table": f"{index.schema}.{index.parent}",
                    "schema": index.schema,
                    "name": index.name,
                },
                suggested_fix=f"DROP INDEX CONCURRENTLY {qualified(index.schema, index.name)}; then build it again",
            )
        )
    return issues
