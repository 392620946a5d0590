"""Text and JSON views of db baseline: what the evidence says of each migration, the plan,
and what was recorded. Pure: results in, strings out."""

from __future__ import annotations

from typing import Any

from reconciler.interface.report import apply_text, brief, database_line, executed_json, remediation_plan_text, to_json
from reconciler.remediation.baseline import CONFIRMED, CONTRADICTED, PENDING, RECORD, BaselineItem, BaselinePlan

_MARK = {CONFIRMED: "✅", "undetermined": "❔", CONTRADICTED: "❌"}
_SHOWN_TRACKED = 3  # tracked migrations listed one by one; more are summed up


def _item_line(item: BaselineItem) -> str:
    name = f"{item.version} {item.description}".rstrip()
    if item.decision == RECORD:
        basis = f" ({item.basis})" if item.basis else ""
        return f"  {_MARK[item.evidence or 'undetermined']} {name}: record as applied; {item.evidence}{basis}: {item.reason}"
    if item.decision == PENDING:
        says = f"; the evidence says applied ({item.basis}): {item.reason}" if item.evidence == CONFIRMED else ""
        return f"  ⏳ {name}: stays pending{says}"
    return f"  ·  {name}: already tracked, left as it is"


def baseline_plan_text(planned: BaselinePlan) -> str:
    """Before anything runs: the evidence for each migration, then the plan."""
    source = (
        "the catalog and the history replayed in a shadow" if planned.replayed else "the catalog and the parsed SQL"
    )
    lines = [f"Baseline at {planned.version}: what {source} say of each migration:"]
    tracked = [i for i in planned.items if i.decision not in (RECORD, PENDING)]
    for item in planned.items:
        if item in tracked and len(tracked) > _SHOWN_TRACKED:
            continue
        lines.append(_item_line(item))
    if len(tracked) > _SHOWN_TRACKED:
        lines.insert(1, f"  ·  {brief([i.version for i in tracked])}: already tracked, left as they are")
    for item in planned.applied_after:
        lines.append(
            f"⚠️  Migration {item.version} is after the baseline but the evidence says it is applied: it stays "
            "pending, and db migrate holds it until poststack db recover tracks it."
        )
    if planned.contradicted:
        versions = brief([i.version for i in planned.contradicted])
        lines.append(
            f"❌ The evidence contradicts {versions}: recording them as applied needs --confirm "
            "(db diagnose will then report what of them is missing)."
        )
    lines += ["", remediation_plan_text(planned.plan)]
    return "\n".join(lines)


def baseline_text(planned: BaselinePlan, result: Any) -> str:
    """After the plan ran (``result``: an ApplyResult), or when there was nothing to do (None)."""
    if result is None:
        return f"✅ {planned.nothing_to_do}." if planned.nothing_to_do else "Dry run: nothing was recorded."
    if not result.ok:
        return apply_text(result)
    done = [o.version for o in result.execution.outcomes if o.ok and o.action == "baseline_migration" and o.version]
    lines = [
        f"✅ Baselined at {planned.version}: recorded {brief(done)} as applied without running them "
        "(audit table: operation baseline)"
    ]
    against = [i.version for i in planned.contradicted if i.version in done]
    if against:
        lines.append(f"⚠️  Recorded against the evidence (--confirm): {brief(against)}")
    held = [i.version for i in planned.applied_after]
    runs = [i.version for i in planned.pending if i.version not in held]
    if runs and not held:
        lines.append(
            f"   Still pending: {brief(runs)}: poststack db migrate runs them (this baseline says they never ran)"
        )
    elif held:
        lines.append(
            f"   Still pending: {brief([i.version for i in planned.pending])}; the evidence says {brief(held)} "
            "applied: run poststack db recover first, or db migrate holds it and what follows"
        )
    return "\n".join([*lines, database_line(result.database)])


def baseline_json(planned: BaselinePlan, result: Any, database: str, *, dry_run: bool) -> str:
    plan = result.plan if result is not None else planned.plan
    execution = result.execution if result is not None else None
    return to_json(
        {
            "operation": "baseline",
            "version": planned.version,
            "database": result.database.url if result is not None else database,
            "dry_run": dry_run,
            "ok": result is None or result.ok,
            "replayed": planned.replayed,
            "nothing_to_do": planned.nothing_to_do,
            "items": [i.to_json() for i in planned.items],
            "plan": {**plan.to_json(), "hash": plan.hash},
            **executed_json(execution),  # the shape every command that changes the database shares
            "remaining_issues": None if result is None else [i.to_json() for i in result.remaining],
        }
    )
