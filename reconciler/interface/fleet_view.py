"""A fleet report in words and in JSON: one row per target, the totals, then what went wrong
where and what to do about it."""

from __future__ import annotations

import json
from typing import Any

from reconciler.config import mask_url

_MARK = {
    "ok": "✅",
    "applied": "✅",
    "planned": "📋",
    "problems": "⚠️ ",
    "failed": "❌",
    "refused": "⛔",
    "unreachable": "❌",
    "interrupted": "⏹️ ",
    "skipped": "⏭️ ",
}
_COLUMNS = ("target", "version", "pending", "failed", "issues H/M/L", "outcome", "time")


def _row(target: Any) -> tuple[str, ...]:
    issues = target.issues
    return (
        target.target,
        target.current_version or "-",
        "-" if target.pending is None else str(target.pending),
        "-" if target.failed is None else str(target.failed),
        f"{issues.get('high', 0)}/{issues.get('medium', 0)}/{issues.get('low', 0)}",
        target.outcome,
        f"{target.seconds:.2f}s",
    )


def fleet_text(report: Any) -> str:
    rows = [_COLUMNS, *(_row(t) for t in report.targets)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    numeric = {1, 2, 3, 6}

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(w) if i in numeric and row is not _COLUMNS else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    lines = [line(_COLUMNS), "  ".join("-" * w for w in widths)]
    lines += [line(row) for row in rows[1:]]
    totals = report.totals
    outcomes = ", ".join(f"{count} {name}" for name, count in totals["outcomes"].items()) or "no targets"
    issues = totals["issues"]
    shards = f" (shards {', '.join(report.shards)})" if report.shards else ""
    lines.append("")
    lines.append(
        f"{report.command} on {totals['targets']} target(s){shards}: {outcomes}; "
        f"{totals['pending']} pending, {totals['failed']} failed, "
        f"issues {issues['high']} high / {issues['medium']} medium / {issues['low']} low; {report.seconds:.1f}s"
    )
    lines += _issue_lines(report.targets)
    for target in report.targets:
        warnings = [n.strip() for n in target.notes if _warning(n)]
        if target.outcome == "skipped" or not (target.error or warnings):
            continue
        lines.append("")
        where = "" if target.target == target.database else f" ({target.database})"
        lines.append(f"{_MARK.get(target.outcome, '')} {target.target}{where}: {target.outcome}")
        lines += [f"   {text}" for text in (target.error, target.detail, *warnings) if text]
    if any(t.issue_list or t.outcome in ("problems", "failed", "refused") for t in report.targets):
        lines.append("")
        lines.append(_FLEET_FIX)
    not_started: dict[str, list[str]] = {}
    for target in report.targets:
        if target.outcome == "skipped":
            not_started.setdefault(target.error or "not started", []).append(target.target)
    for why, names in not_started.items():
        lines.append("")
        lines.append(f"{_MARK['skipped']} {len(names)} skipped ({_names(names)}): {why}")
    if report.missing_shards:
        lines.append("")
        lines.append(
            f"❌ No report for shard {', '.join(report.missing_shards)}: its targets are not in this report "
            "(did that job fail before it wrote one?)."
        )
    if report.interrupted:
        lines.append("")
        lines.append(
            f"⏹️  Stopped by {report.interrupted}: each target kept what it finished; run the command again to go on "
            "(a target that left a migration half-done says first what to do)."
        )
    elif report.ok:
        lines.append("✅ Every target succeeded.")
    return mask_url("\n".join(lines))


# Each target's advice names the command for one database; over a fleet the fix is a plan.
_FLEET_FIX = (
    "To fix: each target's advice names the command for one database. Over the fleet, run poststack plan with "
    "the same targets and --out FILE, review it, then poststack apply FILE with them: only the targets with "
    "something to fix change."
)
_RANK = {"high": 0, "medium": 1, "low": 2}


def _names(names: list[str]) -> str:
    return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _issue_lines(targets: Any) -> list[str]:
    """Each issue once, with the targets that have it: a fleet's hundred tenants missing the
    same rollback file is one line, and the one tenant with a stuck lock stands out."""
    grouped: dict[tuple[str, ...], list[str]] = {}
    for target in targets:
        for issue in target.issue_list:
            key = (
                issue["severity"],
                issue["type"],
                issue.get("version") or "",
                issue["summary"],
                issue.get("fix") or "",
            )
            grouped.setdefault(key, []).append(target.target)
    if not grouped:
        return []
    lines = ["", "Issues:"]
    for (severity, kind, version, summary, fix), names in sorted(
        grouped.items(), key=lambda kv: (_RANK.get(kv[0][0], 3), kv[0])
    ):
        where = f"{len(names)} targets ({_names(names)})" if len(names) > 1 else names[0]
        lines.append(f"  [{severity}] {kind}{' ' + version if version else ''} on {where}: {summary}")
        if fix:
            lines.append(f"      fix: {fix}")
    return lines


def _warning(note: str) -> bool:
    return note.lstrip().startswith("⚠️")


def fleet_json(report: Any) -> str:
    return mask_url(json.dumps(report.to_json(), indent=2, default=str))


def progress_line(report: Any, done: int, total: int) -> str:
    why = f": {report.error}" if report.error and report.outcome != "skipped" else ""
    return mask_url(f"[{done}/{total}] {report.target} {report.outcome} ({report.seconds:.2f}s){why}")
