"""db lint: findings in words and as JSON."""

from __future__ import annotations

import json
from typing import Any

from reconciler.desired.replay.source import MeasuredRun
from reconciler.diagnosis.lint.base import LintSeverity
from reconciler.diagnosis.lint.engine import Finding
from reconciler.diagnosis.lint.parts import human_bytes, sized
from reconciler.diagnosis.linting import Linted, LintResult, LockedRelation, MigrationLint
from reconciler.interface.report import brief
from reconciler.remediation.plan import Plan

_MARK = {LintSeverity.INFO: "ℹ️ ", LintSeverity.LOW: "🟢", LintSeverity.MEDIUM: "🟡", LintSeverity.HIGH: "🟠"}
# (one, several) of what was linted
_SCOPE = {
    "pending": ("pending migration", "pending migrations"),
    "all": ("migration in the history", "migrations in the history"),
    "named": ("migration named", "migrations named"),
}


def _one_line(sql: str, width: int = 100) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def finding_lines(finding: Finding) -> list[str]:
    hit = finding.hit
    facts = []
    if hit.lock is not None:
        facts.append(f"lock {hit.lock}" + (f" on {hit.relation}" if hit.relation else ""))
    if hit.rewrites is not None:
        facts.append("rewrites" if hit.rewrites else "no rewrite")
    if finding.size is not None and finding.size.exists:
        size = finding.size
        facts.append(f"{size.rows:,} rows, {human_bytes(size.bytes)}, {size.sessions} session(s) on it now")
    facts.append(hit.basis)
    return [
        f"{_MARK[finding.severity]} {finding.severity.label.upper()} {finding.code} {finding.name}  {finding.where}",
        f"   {_one_line(finding.statement)}",
        f"   {hit.message}.",
        f"   ({'; '.join(facts)})",
        f"   Safer: {hit.alternative}.",
    ]


def _context_lines(result: LintResult) -> list[str]:
    """What decided which migrations count as pending, when tracking does not say it all."""
    lines = []
    if result.no_tracking_table:
        lines.append(
            "⚠️  No tracking table here: every migration counts as pending. If they were applied without "
            "poststack, poststack db diagnose says which, and poststack db recover tracks them."
        )
    if result.left_out:
        lines.append(
            f"Left out {len(result.left_out)} untracked migration(s) the catalog shows applied "
            f"({brief(list(result.left_out))}): nothing runs them again; poststack db recover tracks them."
        )
    return lines


def lint_text(result: LintResult) -> str:
    linted = result.linted
    context = _context_lines(result)
    if not linted.versions:
        return "\n".join([*context, f"Nothing to lint: no {_SCOPE[result.scope][0]} ({result.database})."])
    count = len(linted.versions)
    what = _SCOPE[result.scope][count != 1]
    statements = linted.findings.statements
    said = f"{statements} statement" + ("" if statements == 1 else "s")
    lines = [*context, f"Linted {count} {what} ({said}) on {result.database}."]
    for finding in linted.findings.findings:
        lines += ["", *finding_lines(finding)]
    found = linted.findings.findings
    counts = {s: sum(1 for f in found if f.severity == s) for s in LintSeverity}
    summary = ", ".join(f"{n} {s.label}" for s, n in sorted(counts.items(), reverse=True) if n) or "no findings"
    lines += ["", f"Findings: {summary}."]
    if linted.findings.ignored:
        lines.append(
            f"Switched off: {len(linted.findings.ignored)} ({', '.join(sorted({i.by for i in linted.findings.ignored}))})."
        )
    if result.failing:
        lines.append(f"❌ {len(result.failing)} at or above {result.minimum.label}.")
    else:
        lines.append(f"✅ None at or above {result.minimum.label}.")
    return "\n".join(lines)


def finding_json(finding: Finding) -> dict[str, Any]:
    hit = finding.hit
    return {
        "code": finding.code,
        "rule": finding.name,
        "severity": finding.severity.label,
        "version": finding.version,
        "file": finding.path,
        "line": finding.line,
        "statement": finding.statement,
        "relation": hit.relation,
        "lock": hit.lock,
        "rewrites": hit.rewrites,
        "scans": hit.scans,
        "size": finding.size.to_json() if finding.size is not None else None,
        "message": hit.message,
        "alternative": hit.alternative,
        "basis": hit.basis,
    }


def _shadow_json(run: MeasuredRun | None) -> dict[str, Any]:
    """Where the linted migrations were measured, or why they were not, and where it stopped."""
    measurement = run.measurement if run is not None else None
    stopped = measurement.stopped if measurement is not None else None
    return {
        "shadow": run.shadow if run is not None else "none",
        "unavailable": "--no-replay" if run is None else run.unavailable,
        "stopped_at": None if stopped is None else {"version": stopped.version, "reason": stopped.reason},
    }


def lint_json(result: LintResult) -> str:
    linted = result.linted
    return json.dumps(
        {
            "database": result.database,
            "scope": result.scope,
            "versions": list(linted.versions),
            "left_out": list(result.left_out),
            "severity_threshold": result.minimum.label,
            "ok": result.ok,
            "statements": linted.findings.statements,
            "findings": [finding_json(f) for f in linted.findings.findings],
            "ignored": [
                {**finding_json(i.finding), "ignored_by": i.by, "reason": i.reason} for i in linted.findings.ignored
            ],
            "measured": {**_shadow_json(linted.run), "statements": [f.to_json() for f in linted.facts]},
        },
        indent=2,
    )


# --- beside a plan: db migrate --dry-run, poststack plan ----------------------------------

# A step says this many relations by name; the rest by count (--format json lists them all).
STEP_RELATIONS = 4


def _relation_text(relation: LockedRelation) -> str:
    what = ", rewritten" if relation.rewritten else ", read through" if relation.scanned else ""
    return f"{relation.lock} on {sized(relation.relation, relation.size)}{what}"


def step_lint_lines(found: MigrationLint) -> list[str]:
    """Two lines under a step that runs a migration: what it locks (and rewrites), and the
    findings at or above low, each by code and line."""
    if not found.measured:
        locks = "locks: not measured (from the SQL alone)"
    elif not found.relations:
        locks = "locks: nothing that existed before it"
    else:
        shown = [_relation_text(r) for r in found.relations[:STEP_RELATIONS]]
        more = len(found.relations) - STEP_RELATIONS
        locks = "locks: " + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
    worth = [f for f in found.findings if f.severity >= LintSeverity.LOW]
    if worth:
        said = ", ".join(f"{_MARK[f.severity]} {f.severity.label.upper()} {f.code} line {f.line}" for f in worth)
        lint = f"lint: {said} (poststack db lint {found.version})"
    else:
        lint = "lint: no findings at or above low"
    return [locks, lint]


def step_lint(plan: Plan, linted: Linted | None) -> dict[int, MigrationLint]:
    """Per step index (1-based) that runs a migration: its lint, where there is one."""
    if linted is None:
        return {}
    found = {}
    for index, step in enumerate(plan.steps, start=1):
        if step.action == "apply_migration" and step.version and (of := linted.of(step.version)) is not None:
            found[index] = of
    return found


def migration_lint_json(found: MigrationLint, step: int) -> dict[str, Any]:
    return {
        "step": step,
        "version": found.version,
        "measured": found.measured,
        "locks": [
            {
                "relation": r.relation,
                "mode": r.lock,
                "rewrites": r.rewritten,
                "scans": r.scanned,
                "size": r.size.to_json() if r.size is not None else None,
            }
            for r in found.relations
        ],
        "rewrites": found.rewrites,
        "scans": found.scans,
        "findings": [finding_json(f) for f in found.findings],
    }


def plan_lint_json(plan: Plan, linted: Linted | None) -> dict[str, Any] | None:
    """What the migrations a plan runs lock and rewrite, per step; None: not linted."""
    if linted is None:
        return None
    return {
        **_shadow_json(linted.run),
        "migrations": [migration_lint_json(found, step) for step, found in step_lint(plan, linted).items()],
    }
