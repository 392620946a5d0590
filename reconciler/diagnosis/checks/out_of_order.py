"""out_of_order: a pending migration older than the newest applied one (often a merge, or
one applied by hand whose tracking was lost). migrate refuses it without
--allow-out-of-order: the check reports exactly the migrations migrate holds for that."""

from __future__ import annotations

from reconciler.diagnosis.attribution import ORDER, Verdict
from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType
from reconciler.diagnosis.pending import HoldKind


@check(IssueType.OUT_OF_ORDER)
def out_of_order(facts: Facts) -> list[Issue]:
    described = {m.version: m.description for m in facts.desired.migrations.migrations}
    return [
        Issue(
            IssueType.OUT_OF_ORDER,
            hold.reason,
            hold.version,
            {"description": described.get(hold.version, ""), "newest_applied": hold.newer},
            suggested_fix=hold.remedy,
        )
        for hold in facts.readiness.holds
        if hold.kind is HoldKind.OUT_OF_ORDER and not _by_order(facts, hold.version)
    ]


def _by_order(facts: Facts, version: str) -> bool:
    """Shown applied by its place alone: missing_tracking reports it, with that basis."""
    found = facts.attributions.get(version)
    return found is not None and found.verdict is Verdict.APPLIED and found.basis == ORDER
