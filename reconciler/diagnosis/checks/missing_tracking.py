"""missing_tracking: a migration applied (by hand) whose tracking row is missing.

Claimed only on evidence (attribution.py names the basis): its replayed changes are
present, every object only it leaves behind exists, or its verify script returns true.
A data-only migration shown applied only by its place in the history (basis "order") is
weaker evidence, and says so. Fixed by ``poststack db recover`` (``--trust-order``).
"""

from __future__ import annotations

from reconciler.diagnosis.attribution import ORDER, Verdict
from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType


@check(IssueType.MISSING_TRACKING)
def missing_tracking(facts: Facts) -> list[Issue]:
    issues = []
    failed_rows = facts.observed.tracking.failed
    for migration in facts.unapplied:
        found = facts.attributions[migration.version]
        if found.verdict is not Verdict.APPLIED:
            continue
        failed = failed_rows.get(migration.key)
        if failed is not None and not failed.transactional:
            continue  # it failed half-way outside a transaction: what exists may be its own half
        details = {
            "description": migration.description,
            "evidence": found.basis,
            "objects_found": [o.display() for o in found.found],
            "reason": found.reason,
        }
        effects = facts.desired.history.effects.get(migration.version)
        unchecked = [f"line {u.line}: {u.reason}" for u in (effects.unattributed if effects else ())]
        if unchecked and found.basis in ("catalog", "replay"):
            # The catalog shows what it built, not whether its data changes ran with it.
            details["unchecked_statements"] = unchecked
        if failed is not None:
            # The attempt rolled back: what the catalog shows was there before it (by hand).
            details["failed_attempt"] = failed.error
        if found.basis == ORDER:
            issues.append(
                Issue(
                    IssueType.MISSING_TRACKING,
                    f"Migration {migration.version} appears to be applied but not tracked, by order only: "
                    f"{found.reason.removesuffix(' (by order only)')}",
                    migration.version,
                    details,
                    suggested_fix="If it ran, poststack db recover --trust-order tracks it; if it did not, "
                    "poststack apply --allow-undetermined runs it",
                    shown=("evidence",),
                )
            )
            continue
        issues.append(
            Issue(
                IssueType.MISSING_TRACKING,
                f"Migration {migration.version} appears to be applied but not tracked",
                migration.version,
                details,
                shown=(),  # the guide shows no details for this one
            )
        )
    return issues
