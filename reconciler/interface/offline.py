"""The offline script view: an OfflineScript as one file for psql (db migrate --dry-run --format sql).

The statements are the executor's, bound as it binds them; this only frames them with
comments and the psql settings the script needs.
"""

from __future__ import annotations

from datetime import UTC, datetime

from reconciler import __version__
from reconciler.remediation.runner import OfflineScript, ScriptStep

RUN_WITH = "psql -X -v ON_ERROR_STOP=1 -f FILE"
# psql settings the script relies on, whatever a psqlrc or the command line set.
_ENCODING = "\\encoding UTF8"
_SETTINGS = ("\\set ON_ERROR_STOP on", "\\set AUTOCOMMIT on", "\\set ON_ERROR_ROLLBACK off", _ENCODING)


def script_sql(script: OfflineScript, *, now: datetime | None = None) -> str:
    """The whole script: a header saying what it is and how to run it, then the statements."""
    plan = script.plan
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"-- poststack db {script.operation} --dry-run --format sql",
        f"-- Written {stamp} by poststack {__version__} for {_one_line(script.database.url)}",
        f"-- (tracking tables {plan.tracking.migrations_sql}, {plan.tracking.lock_sql}, {plan.tracking.audit_sql}).",
        f"-- Run it on that database with: {RUN_WITH}",
        "-- The script is UTF-8; on a database whose encoding is not UTF8, set PGCLIENTENCODING=UTF8 too.",
    ]
    for note in plan.notes:
        lines.append(f"-- Note: {_one_line(note)}")
    if script.empty:
        reason = plan.nothing_to_do or "Nothing to do"
        lines += [
            "--",
            f"-- {_one_line(reason)}: this script is a no-op. It changes nothing, and psql runs it without error.",
        ]
        return "\n".join(lines) + "\n"
    lines += [
        f"-- It does what poststack db {script.operation} would do: the same migration lock, the same statements",
        "-- in the same transactions, and the same tracking and audit rows (their times, execution_ms, applied_by",
        "-- and actor as they are when it runs; the audit rows' host_pid names psql's backend).",
        "-- It stops before changing anything if another run holds the lock, or if the tracking rows (versions,",
        "-- checksums, outcomes) or the schema (every object poststack reads, by definition) are not those it was",
        "-- written for: which migrations it holds as applied by hand was decided from them. A twin database, the",
        "-- same history and the same schema, will do.",
        "-- At an error it stops there: a step in a transaction is rolled back, one outside keeps",
        "-- what ran; no failure row is written, and the lock row stays set, as a killed run leaves it",
        "-- (poststack db diagnose, then poststack db unlock-migrations --confirm).",
        "",
        *_SETTINGS,
        "",
        "-- The migration lock (the advisory lock db migrate takes; never waited for), and the checks that the",
        "-- tracking rows and the schema are those this script was written for.",
        *_statements(script.acquire),
    ]
    if script.prepare:
        lines += ["", "-- Create the tracking tables, as db migrate does first under the lock (a create-schema run)."]
        for step in script.prepare:
            lines += _step(script, step)
    lines += ["", "-- The lock row: refused if a run left it set, then taken.", *_statements(script.take)]
    for step in script.steps:
        lines += _step(script, step)
    lines += ["", "-- Release the lock row and the advisory lock.", *_statements(script.release), ""]
    return "\n".join(lines)


def _step(script: OfflineScript, step: ScriptStep) -> list[str]:
    where = (
        "in one transaction"
        if step.transactional
        else f"outside a transaction ({_one_line(step.no_transaction_reason or 'no-transaction')}): "
        "its statements one by one, then its record in a transaction of its own"
    )
    return [
        "",
        f"-- Step {step.index}: {_one_line(step.reason)}, {where}.",
        f"{script.mark_start} \\gset",
        *_statements(step.body),
        "-- record it",
        *_statements(step.record, after_reset=_ENCODING),
    ]


def _statements(texts: tuple[str, ...], after_reset: str | None = None) -> list[str]:
    # The terminator on a line of its own: a statement's trailing -- comment cannot swallow it.
    lines = []
    for text in texts:
        lines.append(f"{text}\n;")
        if after_reset is not None and "RESET ALL" in text:
            # RESET ALL puts client_encoding back to psql's own (the locale's): the rows that
            # follow, and the next step, are UTF-8 text.
            lines.append(after_reset)
    return lines


def _one_line(text: str) -> str:
    return " ".join(text.split())
