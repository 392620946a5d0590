"""Text and JSON views of command results. Pure: results in, strings out."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from reconciler import errors
from reconciler.desired.versions import version_key
from reconciler.diagnosis.issues import SHORT_CHECKSUM, Severity
from reconciler.observed.tracking import RUNTIME_PARAMS, LockState
from reconciler.remediation.plan import Plan, PlannedStep
from reconciler.statements import Statement

if TYPE_CHECKING:  # the types only: the execution stack is imported by the verbs that run something
    from reconciler.diagnosis.linting import Linted
    from reconciler.observed.blockers import LockHolder
    from reconciler.remediation.executor import LockWait

# --- JSON -------------------------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (Path, Decimal)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return str(value)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=_default, ensure_ascii=False)


# --- SQL previews -----------------------------------------------------------------------


def sql_literal(value: Any) -> str:
    """A display-only SQL literal. What runs uses bound parameters, never this."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "ARRAY[" + ", ".join(sql_literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def render_statement(statement: Statement) -> str:
    """The statement as it will run, parameters shown inline; measured values marked."""
    sql = statement.sql
    if statement.params:
        rendered = {}
        for key, value in statement.params.items():
            # The error is only measured for a failure's row; a success row's stays NULL.
            measured = (
                key in RUNTIME_PARAMS and value is None and not (key == "error" and statement.params.get("success"))
            )
            rendered[key] = "<measured at run time>" if measured else sql_literal(value)
        sql = sql.replace("%%", "\x00")
        for key, value in rendered.items():
            sql = sql.replace(f"%({key})s", value)
        sql = sql.replace("\x00", "%")
    return sql.rstrip().rstrip(";") + ";"


def render_step(index: int, step: PlannedStep, lint: list[str] | None = None) -> list[str]:
    """A step as it will run; ``lint``: what it locks and rewrites, shown under its title."""
    where = "in a transaction" if step.transactional else f"outside a transaction: {step.no_transaction_reason}"
    lines = [f"  {index}. {step.reason}  [{where}]"]
    lines += ["     " + line for line in lint or ()]
    last_source = None
    for statement in step.statements:
        if statement.source and statement.source != last_source:
            lines.append(f"     -- {statement.source}")
            last_source = statement.source
        lines += ["     " + line for line in render_statement(statement).splitlines()]
    if step.bookkeeping:
        lines.append(
            "     -- record it" + ("" if step.transactional else " (one transaction, after the statements above)")
        )
        for statement in step.bookkeeping:
            lines += ["     " + line for line in render_statement(statement).splitlines()]
    return lines


def render_plan(plan: Plan, lint: dict[int, list[str]] | None = None) -> str:
    """``lint``: per step index (1-based), the lines saying what it locks and rewrites."""
    if not plan.steps:
        return f"{plan.nothing_to_do or 'Nothing to do'}."
    count = len(plan.steps)
    lines = [
        f"Plan: {plan.operation}, {count} step{'s' if count != 1 else ''} (tracking schema {plan.tracking_schema})"
    ]
    for index, step in enumerate(plan.steps, start=1):
        lines += render_step(index, step, (lint or {}).get(index))
    return "\n".join(lines)


def step_lint_text(plan: Plan, linted: Linted | None) -> dict[int, list[str]]:
    """Per step that runs a migration, what it locks and rewrites, in words (none: not linted)."""
    if linted is None:
        return {}
    from reconciler.interface import lint_view

    return {index: lint_view.step_lint_lines(found) for index, found in lint_view.step_lint(plan, linted).items()}


def step_lint_json(plan: Plan, linted: Linted | None) -> dict[str, Any] | None:
    if linted is None:
        return None
    from reconciler.interface import lint_view

    return lint_view.plan_lint_json(plan, linted)


# --- where it ran -----------------------------------------------------------------------


def database_text(database: Any) -> str:
    """A DatabaseRef in words: the masked URL, and for the embedded server, that it is it."""
    url = database.url
    name = getattr(database, "name", None)
    if name and not re.search(rf"/{re.escape(quote(name))}(\?|$)", url):
        url += f" (database {name})"  # the URL left it to PGDATABASE or the user name
    if database.embedded_dir is None:
        return url
    # Its socket usually lives in the data directory: the URL then names it already.
    where = "" if str(database.embedded_dir) in database.url else f" ({database.embedded_dir})"
    return f"embedded PostgreSQL at {url}{where}"


def database_line(database: Any) -> str:
    """The last line of every command that changes a database: which one it changed."""
    return f"Database: {database_text(database)}"


def _with_database(text: str, database: Any) -> str:
    return f"{text}\n{database_line(database)}"


# --- migrate / rollback -----------------------------------------------------------------


# A list longer than this is shown by its ends and its count: 346 versions on one line help
# nobody on call. The whole list is in --format json.
BRIEF_LIMIT = 12


def brief(items: list[str], limit: int = BRIEF_LIMIT) -> str:
    """``items`` joined with commas, or, past ``limit``, the first and last few and a count."""
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:3])}, … {', '.join(items[-3:])} ({len(items)} in all; --format json lists them)"


def _versions(steps: Any) -> str:
    return brief([s.version for s in steps if s.version]) or "none"


def run_text(result: Any) -> str:
    return _with_database(_run_outcome_text(result), result.database)


# --- a migration's lock_timeout (--ddl-lock-timeout) --------------------------------------

MOST_HOLDERS = 3  # named in full; the rest counted (--format json lists them all)


def _utc(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else "unknown"


def lock_holder_text(holder: LockHolder) -> str:
    """pid 4242 (application psql, state idle in transaction, query started …Z, holds AccessShareLock)."""
    if holder.pid is None:
        return f"a prepared transaction (holds {', '.join(holder.modes)}; see pg_prepared_xacts)"
    return (
        f"pid {holder.pid} (application {holder.application_name or 'unknown'}, "
        f"state {holder.state or 'unknown'}, query started {_utc(holder.query_start)}, "
        f"holds {', '.join(holder.modes)})"
    )


def _lock_what(wait: LockWait) -> str:
    """a lock on public.orders held by pid 4242 (...) — or that no holder was found."""
    relations = ", ".join(wait.relations)
    if wait.holders:
        named = [lock_holder_text(h) for h in wait.holders[:MOST_HOLDERS]]
        more = len(wait.holders) - MOST_HOLDERS
        if more > 0:
            named.append(f"{more} more session(s) (--format json lists them)")
        return f"a lock on {relations} held by {'; '.join(named)}"
    if relations:
        return f"a lock on {relations} (no other session holds one now: its holder may just have ended)"
    return "a lock it could not identify (the statement names no table that exists)"


def _lock_source(wait: LockWait) -> str:
    if wait.location:
        path, _, line = wait.location.rpartition(":")
        return f"{Path(path).name}:{line}"
    return f"migration {wait.version}" if wait.version else f"step {wait.step}"


def _which_timeout(wait: LockWait) -> str:
    if wait.own_timeout:
        return "its own lock_timeout"
    if wait.lock_timeout is not None:
        return f"lock_timeout ({wait.lock_timeout:g}s)"
    return "lock_timeout"


def lock_wait_text(wait: LockWait) -> str:
    """A try that gave up waiting for a lock, and the next: the line poststack prints before
    it waits to try a migration again."""
    retry = f"; retry {wait.attempt} of {wait.tries - 1} in {wait.retry_in_s:g}s" if wait.retry_in_s is not None else ""
    return f"⏳ {_lock_source(wait)}: {_which_timeout(wait)} fired waiting for {_lock_what(wait)}{retry}"


def _lock_failure_lines(wait: LockWait) -> list[str]:
    """Who held the lock a failed step waited for, and why it was not tried again."""
    tries = f" after {wait.attempt} tries" if wait.attempt > 1 else ""
    lines = [f"   It gave up{tries}: {_which_timeout(wait)} fired waiting for {_lock_what(wait)}."]
    if not wait.transactional:
        lines.append(
            f"   poststack did not try it again: it runs outside a transaction, so what it did before "
            f"{_lock_source(wait)} was kept (a concurrent index build may leave an INVALID index), and "
            "running it again could do that twice."
        )
    return lines


def _lock_advice(wait: LockWait, then: str) -> str:
    """What to do about the sessions holding the lock, and ``then``."""
    ending = [h.pid for h in wait.holders if h.pid is not None]
    end = (
        f"end that session (SELECT pg_terminate_backend({ending[0]})) or let it finish"
        if len(ending) == 1
        else "end the sessions holding it or let them finish"
    )
    longer = "raise the file's own lock_timeout" if wait.own_timeout else "give it longer with --ddl-lock-timeout"
    return f"   To go on: {end}, then {then}; or {longer}."


def _run_outcome_text(result: Any) -> str:
    plan: Plan = result.plan
    migrations = [s for s in plan.steps if s.action in ("apply_migration", "rollback_migration")]
    # Flyway's SQL callbacks (beforeMigrate.sql, ...): run, never counted as migrations.
    callbacks = [s.args["file"] for s in plan.steps if s.action == "run_callback"]
    verb = "applied" if result.operation == "migrate" else "rolled back"
    if result.dry_run:
        if not migrations and not callbacks:
            return f"🔍 Dry run: {plan.nothing_to_do or 'nothing to do'}; nothing would change."
        head = (
            f"🔍 Dry run: {len(migrations)} migration(s) would be {verb}: {_versions(migrations)}"
            + (f", and callback(s) run: {brief(callbacks)}" if callbacks else "")
            + ". Nothing was changed."
        )
        return head + "\n" + render_plan(plan, step_lint_text(plan, result.lint))
    execution = result.execution
    ran = f"; ran callback(s) {brief(callbacks)}" if callbacks else ""
    if execution is not None and execution.ok and not migrations and callbacks:
        return f"✅ {plan.nothing_to_do or 'Nothing to do'}{ran}."
    if execution is None or (not migrations and execution.ok):
        if result.operation == "migrate" and plan.nothing_to_do == "Database is up to date":
            return "✅ Database is up to date!"
        return f"✅ {plan.nothing_to_do or 'Nothing to do'}."
    counted = [o for o in execution.outcomes if o.ok and o.action in ("apply_migration", "rollback_migration")]
    done = [o for o in counted if o.outcome != "skipped"]
    # Through transaction pooling: another run applied them while this one waited (docs/poolers.md).
    skipped = [o for o in counted if o.outcome == "skipped"]
    by_other = f"another run applied {_versions(skipped)} while this one waited" if skipped else ""
    if execution.ok:
        waited = [f"{o.version} ({o.lock_retries})" for o in done if o.lock_retries]
        retried = f"; tried again after its lock_timeout fired: {brief(waited)}" if waited else ""
        if not done and skipped:
            return f"✅ Database is up to date: {by_other}{ran} ({execution.elapsed_s:.2f}s)"
        by_other = f"; {by_other}" if by_other else ""
        return (
            f"✅ {verb.capitalize()} {len(done)} migration(s): {_versions(done)}{ran}{retried}{by_other} "
            f"({execution.elapsed_s:.2f}s)"
        )
    failure = execution.failure
    step = plan.steps[failure.step - 1]
    where = f"{failure.location}: " if failure.location else ""
    if step.action == "run_callback":
        return "\n".join(
            [
                f"❌ Callback {step.args['file']} failed: {where}{failure.message}",
                f"   {verb.capitalize()} before the failure: {_versions(done)}. Nothing after it ran; callbacks "
                "are not tracked, so fix it and run the command again.",
            ]
        )
    kept = (
        "Nothing of it was kept (it ran in a transaction)."
        if step.transactional
        else "It ran outside a transaction: statements before the failing one were kept."
    )
    lines = [f"❌ Migration {failure.version} failed: {where}{failure.message}"]
    wait = failure.lock_wait
    if wait is not None:
        lines += _lock_failure_lines(wait)
    lines.append(f"   {verb.capitalize()} before the failure: {_versions(done)}. {kept}")
    if result.operation == "migrate" and not failure.recorded:
        lines.append(
            "   poststack could not record the failure either (are its tracking tables still there?): "
            "run poststack db diagnose before anything else."
        )
    elif result.operation == "migrate" and wait is not None and step.transactional:
        lines.append("   It is recorded as failed; the file needs no fix.")
        lines.append(_lock_advice(wait, "run poststack db migrate again"))
    elif result.operation == "migrate" and wait is not None:
        lines.append("   It is recorded as failed; see what it left with poststack db diagnose and clean that up.")
        lines.append(_lock_advice(wait, "run poststack db migrate --retry-failed"))
    elif result.operation == "migrate" and step.transactional:
        lines.append("   It is recorded as failed; fix the file and run poststack db migrate again.")
    elif result.operation == "migrate":
        lines.append(
            "   It is recorded as failed; clean up what it left (see poststack db diagnose), fix the file, "
            "then run poststack db migrate --retry-failed."
        )
    return "\n".join(lines)


def executed_json(execution: Any) -> dict[str, Any]:
    """What ran, in every JSON result of a command that changes the database: one outcome
    per step that ran, the failed step (or null), and how long the steps took (or null)."""
    return {
        "outcomes": [asdict(o) for o in execution.outcomes] if execution else [],
        "failure": asdict(execution.failure) if execution and execution.failure else None,
        "elapsed_s": round(execution.elapsed_s, 3) if execution else None,
    }


def run_json(result: Any) -> str:
    return to_json(
        {
            "operation": result.operation,
            "database": result.database.url,
            "dry_run": result.dry_run,
            "ok": result.ok,
            "plan": result.plan.to_json(),
            **executed_json(result.execution),
            # A dry run's: what each migration it would run locks and rewrites (null otherwise).
            "lint": step_lint_json(result.plan, result.lint),
        }
    )


# --- interrupted (SIGINT, SIGTERM) ------------------------------------------------------

_KEPT = {
    errors.ROLLED_BACK: "rolled back; nothing of it was kept.",
    errors.HALF_DONE: "left half-done: it ran outside a transaction, so the statements before the "
    "interrupted one were kept.",
    errors.COMMITTED: "it had already committed, so it is kept; nothing after it ran.",
    errors.COMMIT_UNKNOWN: "told twice, poststack closed the connection while the step was committing: "
    "it may or may not have been applied.",
    errors.BETWEEN_STEPS: "no step was running.",
}


def interrupted_text(interruption: errors.Interruption) -> str:
    """What a stop signal cut short and what it kept, ending with the database."""
    i = interruption
    file = Path(i.source).name if i.source else None
    if i.step is None:
        where = "between steps"
    elif i.action == "apply_migration":
        where = f"during migration {i.version}" + (f" ({file})" if file else "")
    elif i.action == "rollback_migration":
        where = f"while rolling back migration {i.version}" + (f" ({file})" if file else "")
    else:
        where = f"during step {i.step} ({i.reason})"
    if i.kept == errors.CONNECTION_CLOSED:
        kept = "told twice, poststack closed the connection; " + (
            "the server rolls the step back when it notices."
            if i.transactional
            else "the statement it was running may still finish on the server, and those before it were kept."
        )
    else:
        kept = _KEPT.get(i.kept, i.kept)
    lines = [f"❌ Interrupted ({i.signal}) {where}: {kept}"]
    if i.undone:
        lines.append(f"   Rolled back with it (same transaction): step(s) {', '.join(map(str, i.undone))}.")
    lines.append(f"   {_done_before(i)}")
    lines.append(f"   {_after_interrupt(i)}")
    lines.append(database_line(i.database))
    return "\n".join(lines)


def _done_before(i: errors.Interruption) -> str:
    if i.operation in ("migrate", "rollback"):
        action = "apply_migration" if i.operation == "migrate" else "rollback_migration"
        versions = [version for _, a, version in i.done if a == action and version]
        verb = "Applied" if i.operation == "migrate" else "Rolled back"
        if not versions:
            return f"Nothing was {verb.lower()} before it."
        when = "in this run" if i.kept == errors.COMMITTED else "before the interrupt"
        return f"{verb} {when}: {brief(versions)}."
    if not i.done:
        return "No step was done before it."
    return f"Done before the interrupt: step(s) {brief([str(index) for index, _, _ in i.done])}."


def _after_interrupt(i: errors.Interruption) -> str:
    if i.kept in (errors.CONNECTION_CLOSED, errors.COMMIT_UNKNOWN):
        return (
            "Nothing more was recorded: run poststack db diagnose to see where it stopped "
            "(and to release the migration lock once its backend has ended)."
        )
    if i.kept == errors.HALF_DONE and i.operation == "migrate":
        return (
            "It is recorded as interrupted; see what it left with poststack db diagnose, clean that up, "
            "then run poststack db migrate --retry-failed."
        )
    if i.kept == errors.ROLLED_BACK and i.operation == "migrate":
        if i.recorded:
            return "It is recorded as interrupted; run poststack db migrate again to apply it."
        return "Run poststack db migrate again to apply it."
    if i.operation == "migrate":
        return "Run poststack db migrate again for what remains."
    return "Run the same command again to finish."


# --- status / info ----------------------------------------------------------------------


def status_text(result: Any) -> str:
    lines = [
        f"Current version: {result.current_version or 'none'}",
        f"Applied migrations: {len(result.applied)}",
        f"Pending migrations: {len(result.pending)}",
    ]
    if not result.tracking_exists:
        lines.append(f"(no tracking tables yet in schema {result.tracking_schema}; poststack db migrate creates them)")
    if result.failed:
        lines.append(f"Failed migrations: {len(result.failed)}")
        for entry in result.failed:
            lines.append(f"  ❌ {entry.version} {entry.description}: {entry.error or 'no error recorded'}")
    if result.pending:
        applied = {e.version for e in result.applied}
        lines.append("Pending: " + brief([_pending_label(e, applied) for e in result.pending]))
    if result.undetermined:
        lines.append(
            "Undetermined: "
            + brief([f"{e.version}_{e.description}" for e in result.undetermined])
            + " (nothing in the catalog shows whether they ran; see poststack db diagnose --type undetermined)"
        )
    missing = [e.version for e in result.applied if not e.file_present]
    if missing:
        lines.append(f"⚠️  Applied but their files are missing: {brief(list(missing))}")
    if result.up_to_date:
        lines.append("✅ Database is up to date!")
    return "\n".join(lines)


def _pending_label(entry: Any, applied: set[str]) -> str:
    """``002_name``; a Flyway repeatable by its name alone, and said to run again once changed."""
    key = version_key(entry.version)
    if key is None or not key.is_repeatable:
        return f"{entry.version}_{entry.description}"
    return f"{entry.version} (changed: runs again)" if entry.version in applied else entry.version


def status_json(result: Any) -> str:
    def entries(items: Any) -> list[dict[str, Any]]:
        return [asdict(e) for e in items]

    return to_json(
        {
            "database": result.database,
            "tracking_schema": result.tracking_schema,
            "tracking_exists": result.tracking_exists,
            "current_version": result.current_version,
            "applied_count": len(result.applied),
            "pending_count": len(result.pending),
            "failed_count": len(result.failed),
            "up_to_date": result.up_to_date,
            "applied": entries(result.applied),
            "pending": entries(result.pending),
            "failed": entries(result.failed),
            "undetermined": entries(result.undetermined),
        }
    )


def lock_text(lock: LockState | None) -> str:
    if lock is None:
        return "no lock table yet"
    if not lock.locked:
        return "unlocked"
    return "LOCKED " + lock.describe()


def info_text(result: Any) -> str:
    lines = [
        f"poststack {result.poststack_version}",
        f"Database: {result.database} (PostgreSQL {result.server_version})",
        f"Tracking schema: {result.tracking_schema}" + ("" if result.tracking_exists else " (tables not created yet)"),
        f"Migrations directory: {result.migrations_dir}",
        f"Checksum algorithm: {result.checksum_algorithm}",
        f"Lock: {lock_text(result.lock)}",
        f"Migrations: {len(result.files)}",
        "",
        f"  {'VERSION':<8} {'STATUS':<8} {'CHECKSUM':<12} {'ROLLBACK':<8} {'VERIFY':<6} {'TXN':<4} DESCRIPTION",
    ]
    for f in result.files:
        txn = "?" if f.transactional is None else ("yes" if f.transactional else "no")
        lines.append(
            f"  {f.version:<8} {f.status:<8} {f.checksum[:12]:<12} {'yes' if f.rollback else 'no':<8} "
            f"{'yes' if f.verify else 'no':<6} {txn:<4} {f.description}"
        )
    return "\n".join(lines)


def info_json(result: Any) -> str:
    data = asdict(result)
    lock = result.lock
    data["lock"] = (
        None if lock is None else {**asdict(lock), "holder_alive": lock.holder_alive, "description": lock_text(lock)}
    )
    return to_json(data)


# --- the rest ---------------------------------------------------------------------------


def create_schema_text(result: Any) -> str:
    lines = []
    if result.dropped:
        lines.append(
            f"🗑  Dropped {', '.join(result.dropped)} from schema {result.tracking_schema} "
            f"({result.dropped_rows} tracking row(s) were lost; the audit table keeps the history)"
        )
    if result.created:
        lines.append(f"✅ Created {', '.join(result.created)} in schema {result.tracking_schema}")
    else:
        lines.append(f"✅ Tracking tables already exist in schema {result.tracking_schema}; nothing created")
    lines.append(database_line(result.database))
    return "\n".join(lines)


def create_schema_json(result: Any) -> str:
    return to_json(
        {
            "operation": "create-schema",
            "database": result.database.url,
            "ok": result.execution.ok,
            "tracking_schema": result.tracking_schema,
            "dropped": list(result.dropped),
            "dropped_rows": result.dropped_rows,
            "created": list(result.created),
            **executed_json(result.execution),
        }
    )


def backup_text(result: Any) -> str:
    return (
        f"✅ Backup written to {result.path} ({_size(result.size_bytes)}, {result.elapsed_s:.1f}s) "
        f"with {result.tool.path} {result.tool.version} for PostgreSQL {result.server_major}"
    )


def backup_json(result: Any, database: str) -> str:
    """``database``: the one dumped, as its settings name it (BackupResult does not carry the
    DatabaseRef of the session commands.backup opened)."""
    return to_json(
        {
            "operation": "backup",
            "database": database,
            "ok": True,
            "path": str(result.path.absolute()),
            "size_bytes": result.size_bytes,
            "elapsed_s": round(result.elapsed_s, 3),
            "tool": {"path": str(result.tool.path), "version": result.tool.version, "major": result.tool.major},
            "server_major": result.server_major,
        }
    )


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def shell_text(result: Any) -> str:
    if not result.columns:
        return result.status
    cells = [[("" if v is None else str(v)) for v in row] for row in result.rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(result.columns)]
    lines = [" " + " | ".join(c.center(w) for c, w in zip(result.columns, widths, strict=False)).rstrip()]
    lines.append("-" + "-+-".join("-" * w for w in widths) + "-")
    lines += [" " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)).rstrip() for row in cells]
    lines.append(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")
    return "\n".join(lines)


def shell_json(result: Any) -> str:
    """db shell -c: the last statement's result; values as JSON has them, else as text."""
    rows = [[_cell(value) for value in row] for row in result.rows]
    return to_json(
        {
            "database": result.database.url,
            "status": result.status,
            "columns": list(result.columns),
            "rows": rows,
            "notices": list(result.notices),
        }
    )


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)  # NaN, Infinity: text
    if isinstance(value, (list, tuple)):
        return [_cell(v) for v in value]
    if isinstance(value, dict):  # json, jsonb
        return value
    return _default(value)  # numeric as text (no precision lost), times ISO 8601, bytea hex, ...


def server_status_text(status: Any) -> str:
    if not status.initialized:
        return f"Embedded PostgreSQL: not initialized ({status.data_dir}); the first command creates it"
    if not status.running:
        return f"Embedded PostgreSQL {status.version}: stopped ({status.data_dir})"
    return f"Embedded PostgreSQL {status.version}: running, pid {status.pid} ({status.data_dir})\nURL: {status.url}"


# --- diagnose / validate / verify -------------------------------------------------------


def _details_text(issue: Any) -> str | None:
    keys = issue.shown if issue.shown is not None else tuple(issue.details)
    shown = {}
    for key in keys:
        value = issue.details.get(key)
        if isinstance(value, str) and key.endswith("checksum") and len(value) == 64:
            value = value[:SHORT_CHECKSUM]
        shown[key] = value
    return repr(shown) if shown else None


def diagnosis_text(result: Any) -> str:
    issues = result.issues
    lines = [
        "Migration Diagnostics Report",
        "=" * 50,
        f"Overall Status: {'✅ PASS' if not issues else '❌ FAIL'}",
        f"Total Issues: {len(issues)}",
    ]
    if issues:
        lines += ["", "Issue Breakdown:"]
        for severity in sorted({i.severity for i in issues}, reverse=True):
            count = sum(1 for i in issues if i.severity == severity)
            lines.append(f"  {severity.emoji} {severity.name}: {count}")
        lines += ["", "Detailed Issues:"]
        for issue in issues:
            lines += ["", f"{issue.severity.emoji} {issue.type.value.upper()}: {issue.message}"]
            if issue.version is not None:
                lines.append(f"   Version: {issue.version}")
            details = _details_text(issue)
            if details:
                lines.append(f"   Details: {details}")
            if issue.details.get("error") and "error" not in (issue.shown or ()):
                lines.append(f"   Error: {issue.details['error']}")
            lines.append(f"   Suggested Fix: {issue.suggested_fix}")
            lines.append(f"   Auto-fixable: {'Yes' if issue.auto_fixable else 'No'}")
    return "\n".join(lines)


def diagnosis_json(result: Any) -> str:
    return to_json(
        {
            "overall_status": "pass" if not result.issues else "fail",
            "total_issues": len(result.issues),
            "checked_types": [t.value for t in result.types],
            "minimum_severity": result.minimum.label,
            "issues": [i.to_json() for i in result.issues],
            "database_state": result.database_state,
            "fingerprint": result.fingerprint,
        }
    )


def validation_text(result: Any) -> str:
    lines = []
    if result.errors:
        lines.append("❌ Validation failed:")
        lines += [f"  - {e}" for e in result.errors]
    if result.warnings:
        lines.append("⚠️  Validation warnings:")
        lines += [f"  - {w}" for w in result.warnings]
    if not result.errors:
        checked = "files parse, versions are unique" + (
            ", tracking is consistent" if result.checked_database else " (no database checked)"
        )
        trip = getattr(result, "round_trip", None)
        if trip is not None and trip.result is not None:
            checked += f", {trip.result.checked} rollback(s) round-trip in {trip.shadow}"
        lines.append(f"✅ Validation passed: {result.migrations} migration(s); {checked}")
    return "\n".join(lines)


def verification_text(result: Any) -> str:
    if result.ok:
        return f"✅ All {result.checked} applied migration(s) match their files"
    return "\n".join(["❌ Migration verification failed!", *(f"   Error: {e}" for e in result.errors)])


def checks_json(result: Any) -> str:
    """validate and verify-migrations: their result, and whether it passed."""
    data = {"ok": result.ok, **asdict(result)}
    if "round_trip" in data:  # validate: only with --round-trip, in a shape of its own
        data.pop("round_trip")
        if result.round_trip is not None:
            data["round_trip"] = round_trip_json(result.round_trip)
    return to_json(data)


def round_trip_json(check: Any) -> dict[str, Any]:
    """validate --round-trip: what was checked where, each rollback problem, where it stopped."""
    trip = check.result
    return {
        "shadow": check.shadow,
        "unavailable": check.unavailable,
        "checked": trip.checked if trip is not None else 0,
        "problems": [asdict(p) for p in trip.problems] if trip is not None else [],
        "stopped_at": None
        if trip is None or trip.stopped is None
        else {"version": trip.stopped.version, "reason": trip.stopped.reason},
        "warnings": list(check.warnings),
    }


# --- remediation plans, apply, front-ends -------------------------------------------------


def _step_lines(index: int, step: PlannedStep, lint: list[str] | None = None) -> list[str]:
    origin = f"[{step.playbook}: {step.action}]" if step.playbook else f"[{step.action}]"
    lines = [f"  {index}. {step.title or step.reason} {origin}"]
    lines += ["     " + line for line in lint or ()]
    if step.action == "manual":
        instructions = step.reason.removeprefix("MANUAL: ")
        if instructions != step.title:
            lines.append(f"     for a person: {instructions}")
    elif step.title and step.title != step.reason:
        lines.append(f"     {step.reason}")
    if step.command:
        lines.append("     $ " + " ".join(step.command))
    for statement in step.statements:
        lines += ["     " + line for line in render_statement(statement).splitlines()]
    for statement in step.bookkeeping:
        lines += ["     " + line for line in render_statement(statement).splitlines()]
    return lines


def plan_summary(plan: Plan) -> str:
    runnable = [s for s in plan.steps if s.action != "manual"]
    manual = len(plan.steps) - len(runnable)
    groups = [g for g in plan.transactions() if plan.steps[g[0]].action != "manual"]
    parts = [f"{len(runnable)} step(s) to run"]
    if runnable:
        parts.append(f"{len(groups)} transaction(s)")
    parts.append(f"{manual} for a person")
    return (
        "Plan: "
        + ", ".join(parts)
        + f"; fingerprint {plan.fingerprint[:12]}"
        + (" (DESTRUCTIVE)" if plan.destructive else "")
    )


def remediation_plan_text(plan: Plan, linted: Linted | None = None) -> str:
    """``linted``: what the migrations it runs lock and rewrite, shown under their steps."""
    lint = step_lint_text(plan, linted)
    lines = []
    if plan.issues:
        lines.append(f"Issues ({len(plan.issues)}):")
        for issue in plan.issues:
            severity = Severity[issue["severity"].upper()]
            lines.append(f"  {severity.emoji} {issue['type'].upper()}: {issue['message']}")
    else:
        lines.append("Issues: none")
    if plan.playbooks:
        lines.append("Playbooks: " + ", ".join(f"{p.name} v{p.version}" for p in plan.playbooks))
    if plan.steps:
        lines.append("")
        lines.append("Steps:")
        for number, group in enumerate(plan.transactions(), start=1):
            first = plan.steps[group[0]]
            if first.action == "manual":
                pass
            elif first.transactional:
                span = f"step {group[0] + 1}" if len(group) == 1 else f"steps {group[0] + 1}-{group[-1] + 1}"
                lines.append(f"  -- transaction {number}: {span}")
            else:
                lines.append(f"  -- step {group[0] + 1} runs outside a transaction: {first.no_transaction_reason}")
            for index in group:
                lines += _step_lines(index + 1, plan.steps[index], lint.get(index + 1))
    lines.append("")
    lines.append(plan.nothing_to_do + "." if plan.nothing_to_do and not plan.steps else plan_summary(plan))
    return "\n".join(lines)


def remediation_plan_json(plan: Plan, linted: Linted | None = None) -> str:
    """The plan as --out saves it, with what the migrations it runs lock and rewrite (null:
    not linted): shown beside the plan, not part of it (not in its hash, not read by apply)."""
    return to_json({**plan.to_json(), "hash": plan.hash, "lint": step_lint_json(plan, linted)})


def apply_text(result: Any) -> str:
    return _with_database(_apply_outcome_text(result), result.database)


def _apply_outcome_text(result: Any) -> str:
    plan = result.plan
    lines = []
    execution = result.execution
    held = f"pending migration(s) {brief(list(result.held))} held, not run (see below)" if result.held else ""
    if execution is None:
        if held:
            lines.append(f"❌ Nothing was run: {held}.")
        elif result.unresolved:
            lines.append(f"❌ Nothing was run, and {len(result.unresolved)} high-severity issue(s) remain (below).")
        else:
            lines.append(f"✅ {plan.nothing_to_do or 'Nothing to do'}; nothing was run.")
    elif execution.failure:
        failure = execution.failure
        step = plan.steps[failure.step - 1]
        where = f"{failure.location}: " if failure.location else ""
        lines.append(f"❌ Step {failure.step} ({step.title or step.reason}) failed: {where}{failure.message}")
        if failure.lock_wait is not None:
            lines += _lock_failure_lines(failure.lock_wait)
            lines.append(_lock_advice(failure.lock_wait, "run the command again"))
        undone = [o.index for o in execution.outcomes if o.outcome == "rolled back"]
        if undone:
            lines.append(f"   Rolled back with it (same transaction): step(s) {', '.join(map(str, undone))}.")
        kept = [o.index for o in execution.outcomes if o.ok]
        lines.append(
            f"   Kept: step(s) {brief([str(k) for k in kept]) or 'none'}. Nothing after step {failure.step} ran."
        )
    else:
        ran = [o for o in execution.outcomes if o.outcome == "ok"]
        if held:
            lines.append(f"❌ Applied in part: {len(ran)} step(s) run in {execution.elapsed_s:.2f}s; {held}.")
        elif result.unresolved:
            lines.append(
                f"❌ Applied {len(ran)} step(s) in {execution.elapsed_s:.2f}s, but {len(result.unresolved)} "
                "high-severity issue(s) remain (below)."
            )
        else:
            lines.append(f"✅ Apply complete: {len(ran)} step(s) run in {execution.elapsed_s:.2f}s.")
    lines += _afterwards(plan, result.remaining)
    return "\n".join(lines)


def _afterwards(plan: Plan, remaining: Any) -> list[str]:
    """What a person must still do, and what a fresh diagnosis finds."""
    lines = []
    manual = [s for s in plan.steps if s.action == "manual"]
    if manual:
        lines.append("For a person to do:")
        lines += [f"  - {s.reason.removeprefix('MANUAL: ')}" for s in manual]
    lines.append(_remaining_text(remaining))
    return lines


def _remaining_text(remaining: Any) -> str:
    if not remaining:
        return "Re-diagnosis: ✅ no issues left."
    shown = [f"  {i.severity.emoji} {i.type.value.upper()}: {i.message}" for i in remaining[:10]]
    more = [f"  … and {len(remaining) - 10} more"] if len(remaining) > 10 else []
    return "\n".join([f"Re-diagnosis: {len(remaining)} issue(s) remain:", *shown, *more])


def apply_json(result: Any) -> str:
    executed = executed_json(result.execution)
    return to_json(
        {
            "ok": result.ok,
            "database": result.database.url,
            "plan_hash": result.plan.hash,
            "outcomes": executed["outcomes"],
            "failure": executed["failure"],
            "remaining_issues": [i.to_json() for i in result.remaining],
        }
    )


def fix_result_json(result: Any) -> str:
    """recover, repair, clean and unlock-migrations, after their plan ran."""
    return _fix_json(result.plan, result.database.url, result.ok, result.execution, result.remaining)


def fix_plan_json(plan: Plan, database: str, *, dry_run: bool = False, ok: bool = True) -> str:
    """The same commands when their plan did not run: a dry run, or nothing to run (``ok``
    false when what is left is for a person). ``database``: where it was planned."""
    return _fix_json(plan, database, ok, None, None, dry_run=dry_run)


def _fix_json(plan: Plan, database: str, ok: bool, execution: Any, remaining: Any, *, dry_run: bool = False) -> str:
    return to_json(
        {
            "operation": plan.operation,
            "database": database,
            "dry_run": dry_run,
            "ok": ok,
            "plan": {**plan.to_json(), "hash": plan.hash},
            **executed_json(execution),
            # null: nothing ran, so the database was not diagnosed again
            "remaining_issues": None if remaining is None else [i.to_json() for i in remaining],
        }
    )


# --- db import ------------------------------------------------------------------------------

_DECISIONS = (
    ("import", "✅ import as applied"),
    ("failed", "⚠️  import as a failed attempt (a partial_migration to resolve)"),
    ("refuse", "❌ not imported"),
    ("skip", "   left as it is"),
)


def import_plan_text(imported: Any) -> str:
    """What db import read, what it decided for each migration and why, then the plan."""
    lines = [f"Read {imported.tool}'s history from {imported.table} (left as it is):"]
    for decision, label in _DECISIONS:
        items = [i for i in imported.items if i.decision == decision]
        if not items:
            continue
        lines.append(f"  {label}: {brief([i.version for i in items])}")
        if decision in ("refuse", "failed"):
            lines += [
                f"     {i.version}: {i.reason}" + (f" ({i.detail})" if i.detail else "") for i in items[:BRIEF_LIMIT]
            ]
    if not imported.items:
        lines.append("  (no rows)")
    return "\n".join(lines) + "\n\n" + remediation_plan_text(imported.plan)


def import_text(imported: Any, result: Any) -> str:
    """After the import ran (``result``), or when nothing could (None)."""
    if result is None:
        outcome = "Nothing to import." if not imported.refused else "Nothing imported."
        text = outcome + _refused_line(imported)
        return text
    if not result.ok:
        return _with_database(_apply_outcome_text(result), result.database)
    done = (
        # track_migration: applied by inference only (below golang-migrate's version, a Flyway baseline)
        [o.version for o in result.execution.outcomes if o.ok and o.action in ("import_migration", "track_migration")]
        if result.execution
        else []
    )
    failed = (
        [o.version for o in result.execution.outcomes if o.ok and o.action == "import_failed_attempt"]
        if result.execution
        else []
    )
    lines = [
        f"✅ Imported {imported.tool}'s history: {len(done)} migration(s) tracked as applied"
        + (f" ({brief(done)})" if done else "")
    ]
    if failed:
        lines.append(f"⚠️  Recorded {len(failed)} failed attempt(s) ({brief(failed)}): see poststack db diagnose")
    text = "\n".join(lines) + _refused_line(imported)
    return _with_database(text, result.database)


def _refused_line(imported: Any) -> str:
    refused = [i.version for i in imported.refused]
    if not refused:
        return ""
    return f"\n❌ Not imported, the catalog or the files disagree with {imported.tool}: {brief(refused)} (see above)"


def import_json(imported: Any, result: Any, database: str, *, dry_run: bool) -> str:
    plan = result.plan if result is not None else imported.plan
    ok = (result is None or result.ok) and not imported.refused
    execution = result.execution if result is not None else None
    return to_json(
        {
            "operation": "import",
            "tool": imported.tool,
            "table": imported.table,
            "database": result.database.url if result is not None else database,
            "dry_run": dry_run,
            "ok": ok,
            "items": [i.to_json() for i in imported.items],
            "plan": {**plan.to_json(), "hash": plan.hash},
            **executed_json(execution),
            "remaining_issues": None if result is None else [i.to_json() for i in result.remaining],
        }
    )


def recover_dry_run_text(plan: Plan) -> str:
    lines = ["🔍 Dry run - analyzing recovery options..."]
    tracked = [s for s in plan.steps if s.action == "track_migration"]
    if not tracked:
        lines.append("✅ Nothing to recover: every migration the catalog shows applied is tracked.")
        return "\n".join(lines)
    by_version = {i["version"]: i for i in plan.issues}
    lines.append(f"Would recover {len(tracked)} issue(s):")
    for step in tracked:
        issue = by_version.get(step.version, {})
        if issue.get("type") == "undetermined":
            lines.append(f"  - {issue['message']} (included by --force: {issue['details'].get('reason')})")
            lines.append("    Fix: Track it as applied without evidence")
        else:
            lines.append(f"  - {issue.get('message', step.reason)}")
            lines.append(f"    Fix: {issue.get('suggested_fix', 'Use recovery mode to track this migration')}")
    lines.append("")
    lines.append(remediation_plan_text(plan))
    return "\n".join(lines)


def recover_text(result: Any) -> str:
    return _with_database(_recover_outcome_text(result), result.database)


def _recover_outcome_text(result: Any) -> str:
    plan = result.plan
    tracked = [
        o.version
        for o in (result.execution.outcomes if result.execution else ())
        if o.ok and o.action == "track_migration"
    ]
    if result.execution is None:
        return nothing_to_recover_text(plan)
    if not result.ok:
        return "🔄 Starting migration recovery...\n" + _apply_outcome_text(result)
    forced = [i["version"] for i in plan.issues if i["type"] == "undetermined" and i["version"] in tracked]
    lines = ["🔄 Starting migration recovery...", "✅ Recovery completed successfully!"]
    lines.append(f"   Added tracking for migrations {brief(tracked)}")
    if forced:
        lines.append(f"   (without evidence, because of --force: {brief(forced)})")
    for issue in plan.issues:
        unchecked = issue["details"].get("unchecked_statements") if issue["type"] == "missing_tracking" else None
        if unchecked and issue["version"] in tracked:
            lines.append(
                f"⚠️  Migration {issue['version']} also changes data ({'; '.join(unchecked[:3])}): the catalog "
                "shows its schema changes, not whether those ran; check them by hand"
            )
    lines += _left_by_order(plan, tracked)
    return "\n".join(lines)


def nothing_to_recover_text(plan: Any) -> str:
    lines = ["✅ Nothing to recover: every migration the catalog shows applied is tracked.", *_left_by_order(plan, [])]
    return "\n".join(lines)


def _left_by_order(plan: Any, tracked: list[str]) -> list[str]:
    """Migrations shown applied only by their place in the history, which recover leaves
    for a person unless told to trust that (--trust-order)."""
    left = [
        i
        for i in plan.issues
        if i["type"] == "missing_tracking" and i["details"].get("evidence") == "order" and i["version"] not in tracked
    ]
    if not left:
        return []
    return [
        f"ℹ️  Left untracked, shown applied by order only (they change no schema, and sit between migrations "
        f"shown applied): {brief([i['version'] for i in left])}. If they ran: poststack db recover --trust-order"
    ]


def front_end_text(verb: str, result: Any) -> str:
    """repair and clean: what was done, in one line per kind of fix."""
    return _with_database(_front_end_outcome_text(verb, result), result.database)


def _front_end_outcome_text(verb: str, result: Any) -> str:
    if result.execution is None:
        return f"✅ Nothing to {verb}." + ("" if not result.plan.steps else "\n" + _apply_outcome_text(result))
    if not result.ok:
        return _apply_outcome_text(result)
    done = [result.plan.steps[o.index - 1] for o in result.execution.outcomes if o.ok and o.outcome == "ok"]
    lines = [f"✅ {verb.capitalize()} completed successfully!"]
    lines += [f"   {s.reason[0].upper()}{s.reason[1:]}" for s in done]
    lines += _afterwards(result.plan, result.remaining)
    return "\n".join(lines)


def unlock_text(result: Any) -> str:
    """db unlock-migrations, as it has always said it: the lock released, and whose it was."""
    holder = next(s.args["holder"] for s in result.plan.steps if s.action == "release_lock")
    return _with_database(f"✅ Released the migration lock ({holder.removeprefix('held by ')})", result.database)


def playbooks_text(playbooks: Any) -> str:
    lines = [f"  {'NAME':<20} {'VER':<4} {'AUTO':<5} {'DESTRUCTIVE':<12} {'HANDLES':<45} SOURCE"]
    for book in sorted(playbooks.values(), key=lambda b: (b.order, b.name)):
        handles = ", ".join(book.handles) or "(run by name)"
        source = "built-in" if book.builtin else str(book.path)
        lines.append(
            f"  {book.name:<20} {book.version:<4} {'yes' if book.auto else 'no':<5} "
            f"{'yes' if book.destructive else 'no':<12} {handles:<45} {source}"
        )
    return "\n".join(lines)


def playbook_show_text(book: Any) -> str:
    lines = [
        f"{book.name} v{book.version}{' (DESTRUCTIVE)' if book.destructive else ''}",
        book.description,
        f"Handles: {', '.join(book.handles) or '(run by name only)'}",
        f"File: {book.path} (sha256 {book.sha256[:12]})",
        "Steps:",
    ]
    for number, step in enumerate(book.steps, start=1):
        lines.append(f"  {number}. {step.name} [{step.action}] (line {step.line})")
        if step.for_each:
            lines.append(f"     for each: {step.for_each}")
        if step.when:
            lines.append(f"     when: {step.when}")
        for key, value in step.args.items():
            lines.append(f"     {key}: {value}")
    return "\n".join(lines)


def _playbook_summary(book: Any) -> dict[str, Any]:
    return {
        "name": book.name,
        "version": book.version,
        "description": book.description,
        "handles": list(book.handles),
        "auto": book.auto,
        "order": book.order,
        "destructive": book.destructive,
        "builtin": book.builtin,
        "path": str(book.path),
        "sha256": book.sha256,
        "steps": len(book.steps),
    }


def playbooks_json(playbooks: Any) -> str:
    """playbooks list, and the playbooks playbooks validate found valid: in the order plans use them."""
    ordered = sorted(playbooks, key=lambda b: (b.order, b.name))
    return to_json({"playbooks": [_playbook_summary(book) for book in ordered]})


def playbook_show_json(book: Any) -> str:
    steps = [
        {"name": s.name, "action": s.action, "args": s.args, "for_each": s.for_each, "when": s.when, "line": s.line}
        for s in book.steps
    ]
    return to_json({**_playbook_summary(book), "steps": steps})


def server_stop_json(data_dir: Path, stopped: bool) -> str:
    return to_json({"data_dir": str(data_dir), "stopped": stopped})


# --- db formalize -------------------------------------------------------------------------


def formalize_text(result: Any) -> str:
    orphans, generated, new = result.orphans, result.generated, result.migration
    lines = [f"ℹ️  {orphans.limitation}."] if orphans.limitation else []
    where = f" in schema {', '.join(result.only)}" if result.only else ""
    if generated is not None and new is None:
        lines.append(f"⚠️  Found only orphaned objects{where} poststack does not write; add them by hand:")
        lines += [f"  {s.kind} {s.identity}: {s.reason}" for s in generated.skipped]
        lines.append("Nothing written.")
        return "\n".join(lines)
    if generated is None or new is None:
        what = "objects" if orphans.evidence == "replay" else "schemas"
        scope = "in it" if result.only else "in the database"
        lines.append(f"✅ No orphaned {what}{where}: a migration creates every one {scope}. Nothing written.")
        return "\n".join(lines)
    found = (
        "the replayed history never makes" if orphans.evidence == "replay" else "are in a schema no migration creates"
    )
    lines.append(f"Found {len(generated.objects)} object(s){where} that {found}:")
    lines += [f"  {kind} {identity}" for kind, identity in generated.objects]
    if generated.skipped:
        lines.append("⚠️  Not written (add them by hand if they belong in the migration):")
        lines += [f"  {s.kind} {s.identity}: {s.reason}" for s in generated.skipped]
    if result.written:
        lines.append(f"✅ Wrote {new.path} and {new.rollback_path}")
    else:
        lines += [
            "Dry run: nothing written.",
            "",
            f"-- {new.path}",
            generated.sql.rstrip(),
            "",
            f"-- {new.rollback_path}",
            generated.rollback_sql.rstrip(),
            "",
        ]
    lines += _formalize_check_lines(result)
    if result.untracked:
        lines.append(
            f"⚠️  Migration(s) {brief(list(result.untracked))} are not tracked on this database: settle them first "
            f"(poststack db diagnose), or tracking {new.version} puts them out of order."
        )
    if result.ok:
        lines += [
            "",
            "Next:" if result.written else "Without --dry-run, it would be written; then:",
            f"  here, where the objects exist already: poststack db recover  (tracks {new.version} without running it)",
            "  on every other database: poststack db migrate  (creates them)",
        ]
    return "\n".join(lines)


def _formalize_check_lines(result: Any) -> list[str]:
    check = result.check
    after = f"after migration {result.history[-1]}" if result.history else "on an empty database"
    if check is None or not check.ran:
        why = f" ({check.reason})" if check is not None and check.reason else ""
        return [f"⚠️  Not checked in a shadow database{why}: read the migration before you track it."]
    if check.ok:
        compared = (
            "exactly as they are here" if check.definitions else "(names compared; the shadow's PostgreSQL differs)"
        )
        return [
            f"✅ Checked in {check.shadow}: run {after}, it makes these objects {compared}, "
            "and its rollback removes them."
        ]
    lines = [f"❌ Checked in {check.shadow}: run {after}, it does not reproduce them:"]
    if check.reason:
        lines.append(f"  {check.reason}")
    lines += [f"  it {d}" for d in check.differences]
    lines += [f"  its rollback {d}" for d in check.rollback_differences]
    lines.append(
        f"   Edit {result.migration.path.name} (and its rollback) until poststack db diagnose shows migration "
        f"{result.migration.version} applied but not tracked; then poststack db recover tracks it."
    )
    return lines


def formalize_json(result: Any) -> str:
    generated, new, check = result.generated, result.migration, result.check
    return to_json(
        {
            "operation": "formalize",
            "database": result.database,
            "dry_run": result.dry_run,
            "ok": result.ok,
            "written": result.written,
            "evidence": result.orphans.evidence,
            "limitation": result.orphans.limitation,
            "only": list(result.only),
            "untracked": list(result.untracked),
            "objects": [{"kind": k, "identity": i} for k, i in (generated.objects if generated else ())],
            "skipped": [
                {"kind": s.kind, "identity": s.identity, "reason": s.reason}
                for s in (generated.skipped if generated else ())
            ],
            "migration": None
            if new is None or generated is None
            else {
                "version": new.version,
                "path": str(new.path),
                "rollback_path": str(new.rollback_path),
                "sql": generated.sql,
                "rollback_sql": generated.rollback_sql,
            },
            "check": None
            if check is None
            else {
                "shadow": check.shadow,
                "ran": check.ran,
                "ok": check.ok,
                "reason": check.reason,
                "definitions_compared": check.definitions,
                "differences": list(check.differences),
                "rollback_differences": list(check.rollback_differences),
            },
        }
    )


# --- demo ---------------------------------------------------------------------------------


def demo_event_text(event: Any) -> str:
    if event.kind == "section":
        return f"\n━━ {event.text}"
    if event.kind == "note":
        return f"   • {event.text}"
    run = event.run
    lines = [f"\n$ {event.text}", *(f"    {line}" for line in run.output.splitlines())]
    if run.exit_code:
        lines.append(f"    (exit {run.exit_code})")
    return "\n".join(lines)


def demo_result_text(result: Any) -> str:
    ending = (
        "✅ Fixed: diagnose finds nothing wrong, and every migration is tracked."
        if result.healthy
        else "❌ The demo database still has problems (see the last diagnose above)."
    )
    if result.kept is None:
        return f"\n{ending}\nThe scratch database and its files have been removed."
    password = " (put the password back where it shows ***)" if "***" in result.database else ""
    return (
        f"\n{ending}\nKept for you to explore: the database {result.database} and the project in {result.kept}.\n"
        f"Try: cd {result.kept}, set POSTSTACK_DATABASE_URL to that URL{password}, and run poststack db diagnose"
    )
