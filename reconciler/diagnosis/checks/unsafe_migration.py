"""unsafe_migration: a pending migration that db lint finds a high-severity problem in: on
this database, as big as its tables are now, it would hold a lock that stops the
application for long (a table rewritten, read through, or an index built under it), or it
would fail outright.

The lint is read with the state (Facts.lint); a migration the catalog shows applied is
left out: recover tracks it, nothing runs it. Fixed by editing the file, never
automatically.
"""

from __future__ import annotations

from typing import Any

from reconciler.diagnosis.attribution import Verdict
from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType
from reconciler.diagnosis.lint.base import LintSeverity
from reconciler.diagnosis.lint.engine import Finding

FAILS_IN_SHADOW = "PS106"


@check(IssueType.UNSAFE_MIGRATION)
def unsafe_migration(facts: Facts) -> list[Issue]:
    lint = facts.lint
    if lint is None:
        return []
    issues = []
    for migration in facts.desired.migrations.migrations:
        found = lint.of(migration.version)
        if found is None:
            continue
        # A failed attempt is on record (partial_migration): that it fails is known already.
        known_to_fail = migration.key in facts.observed.tracking.failed
        high = [
            f
            for f in found.findings
            if f.severity >= LintSeverity.HIGH and not (known_to_fail and f.code == FAILS_IN_SHADOW)
        ]
        if not high:
            continue
        shown = facts.attributions.get(migration.version)
        if shown is not None and shown.verdict is Verdict.APPLIED:
            continue  # it ran already, says the catalog: recover tracks it, nothing runs it again
        first = high[0]
        more = f"; and {len(high) - 1} more high-severity finding(s)" if len(high) > 1 else ""
        alternatives = list(dict.fromkeys(f.hit.alternative for f in high))
        issues.append(
            Issue(
                IssueType.UNSAFE_MIGRATION,
                f"Migration {migration.version} {first.hit.message} ({first.code}, line {first.line}){more}",
                migration.version,
                {
                    "description": migration.description,
                    "file": str(migration.path),
                    "measured": found.measured,  # false: from the SQL alone (no shadow)
                    "findings": [_finding(f) for f in found.findings if f.severity >= LintSeverity.LOW],
                },
                suggested_fix=f"Rewrite it: {'; '.join(alternatives)}. Then check it with: "
                f"poststack db lint {migration.version}",
                shown=("file",),
            )
        )
    return issues


def _finding(finding: Finding) -> dict[str, Any]:
    hit, size = finding.hit, finding.size
    return {
        "code": finding.code,
        "rule": finding.name,
        "severity": finding.severity.label,
        "line": finding.line,
        "relation": hit.relation,
        "lock": hit.lock,
        "rewrites": hit.rewrites,
        "scans": hit.scans,
        "size": {"rows": size.rows, "bytes": size.bytes} if size is not None and size.exists else None,
        "message": hit.message,
        "alternative": hit.alternative,
        "basis": hit.basis,
    }
