"""apply_migration and rollback_migration: a migration file's statements plus its tracking write;
run_callback: a SQL callback's statements, untracked.

A migration runs under PostgreSQL's lock_timeout (--ddl-lock-timeout): its step begins with
SET LOCAL lock_timeout, which ends with its transaction, or, outside one, with a session SET
the executor's reset after the step undoes. Either way it cannot reach the next migration or
poststack's bookkeeping, and a SET lock_timeout in the file runs after it, so the file's wins.

The callbacks of each migration (Flyway's beforeEachMigrate / afterEachMigrate, and
beforeEachUndo / afterEachUndo for a rollback) are part of its step: their statements run
before and after the file's, in its transaction, before its tracking row is written, as
Flyway runs them; a failing afterEachMigrate undoes its migration.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from reconciler.desired.files import (
    AFTER_EACH_MIGRATE,
    AFTER_EACH_UNDO,
    BEFORE_EACH_MIGRATE,
    BEFORE_EACH_UNDO,
    CHECKSUM_ALGORITHM,
    RUN_EVENTS,
    Callback,
    Migration,
    SqlFile,
)
from reconciler.desired.script import Script, builds_concurrently
from reconciler.errors import MigrationFileError, UsageError
from reconciler.observed import tracking
from reconciler.remediation.actions.base import Action, BuildContext, migration_for, register
from reconciler.remediation.plan import PlannedStep
from reconciler.statements import Statement


def lock_timeout_statement(seconds: float, *, transactional: bool) -> Statement:
    """PostgreSQL's lock_timeout for the statements after it: for the transaction, or outside
    one for the session. PostgreSQL counts it in whole milliseconds."""
    milliseconds = max(1, round(seconds * 1000))
    value = f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"
    scope = "SET LOCAL" if transactional else "SET"
    return Statement(f"{scope} lock_timeout = %(lock_timeout)s", {"lock_timeout": value})


def _under_lock_timeout(
    ctx: BuildContext, statements: tuple[Statement, ...], script: Script
) -> tuple[tuple[Statement, ...], float | None]:
    """``statements`` after the SET of the migration's lock_timeout, and that timeout (None: none set).

    None for a file that builds, drops or rebuilds an index CONCURRENTLY: such a build waits
    for every transaction older than it (a long report, a backup), and under a lock_timeout
    it fails half way, leaving an INVALID index, where it would have finished; while it waits
    it holds only SHARE UPDATE EXCLUSIVE, which makes nobody else wait."""
    if not ctx.ddl_lock_timeout or builds_concurrently(script):
        return statements, None
    return (lock_timeout_statement(ctx.ddl_lock_timeout, transactional=script.transactional), *statements), (
        ctx.ddl_lock_timeout
    )


def _migration(ctx: BuildContext, version: str) -> Migration:
    migration = ctx.migrations.find(str(version))
    if migration is None:
        raise UsageError(f"no migration {version} in {ctx.migrations.directory}")
    return migration


def _file_statements(file: SqlFile) -> tuple[Statement, ...]:
    source = str(file.path)
    return tuple(Statement(s.sql, None, source=source, line=s.line) for s in file.script.statements)


def _with_callbacks(ctx: BuildContext, file: SqlFile, before: str, after: str) -> tuple[Statement, ...]:
    """``file``'s statements between those of its ``before`` and ``after`` callbacks, which run
    in its transaction (if it has one). One that cannot run in a transaction, around a file
    that runs in one, is refused: PostgreSQL would refuse it half-way through the run."""
    around = (*ctx.migrations.callbacks_at(before), *ctx.migrations.callbacks_at(after))
    script = file.script
    for callback in around:
        if script.transactional and not callback.file.script.transactional:
            raise MigrationFileError(
                f"{callback.file.path}: {callback.event} callback runs in the transaction of each migration, "
                f"and it cannot run in one ({callback.file.script.reason})",
                "Make it transactional, or run it from a beforeMigrate/afterMigrate callback instead.",
            )
    statements = [s for c in ctx.migrations.callbacks_at(before) for s in _file_statements(c.file)]
    statements += _file_statements(file)
    statements += [s for c in ctx.migrations.callbacks_at(after) for s in _file_statements(c.file)]
    return tuple(statements)


def _alters_enum(ctx: BuildContext, script: Script, before: str, after: str) -> bool:
    """The file or its callbacks add an enum value: its transaction commits before the next step."""
    scripts = [script, *(c.file.script for e in (before, after) for c in ctx.migrations.callbacks_at(e))]
    return any(s.kind == "AlterEnumStmt" for one in scripts for s in one.statements)


@register
class RunCallback(Action):
    name = "run_callback"
    summary = "Run a SQL callback (beforeMigrate.sql, afterMigrate.sql, ...): not a migration, not tracked"
    required = ("file",)

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        callback = _callback(ctx, str(args["file"]))
        script = callback.file.script
        return PlannedStep(
            action=self.name,
            reason=f"run the {callback.event} callback {callback.name}",
            args={"file": callback.name},
            statements=_file_statements(callback.file),
            transactional=script.transactional,
            no_transaction_reason=script.reason,
        )


def _callback(ctx: BuildContext, name: str) -> Callback:
    callback = next((c for c in ctx.migrations.callbacks if c.name == name), None)
    if callback is None or not callback.runs:
        runnable = sorted(c.name for c in ctx.migrations.callbacks if c.runs)
        raise UsageError(
            f"no callback {name} poststack runs in {ctx.migrations.directory}",
            f"Callbacks there: {', '.join(runnable) or 'none'} (events poststack runs: {', '.join(sorted(RUN_EVENTS))}).",
        )
    return callback


@register
class ApplyMigration(Action):
    name = "apply_migration"
    summary = "Run a migration file and record it in the tracking table"
    required = ("version",)
    optional = ("retry", "reapply")

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        migration = migration_for(ctx, args["version"])
        script = migration.file.script
        reapply = bool(args.get("reapply"))
        if reapply and not migration.key.is_repeatable:
            raise UsageError(
                f"action {self.name}: only a repeatable migration is applied again, not {migration.version}"
            )
        row = {
            "version": migration.version,
            "description": migration.description,
            "checksum": migration.checksum,
            "algorithm": CHECKSUM_ALGORITHM,
            "transactional": script.transactional,
        }
        bookkeeping = []
        on_failure = [tracking.insert_row_statement(ctx.location, success=False, **row)]
        started: tuple[Statement, ...] = ()
        if not script.transactional:
            # Outside a transaction each statement is kept as it runs: a failed row committed
            # first is what a run killed part way leaves (no later run takes the migration for
            # never started, and runs it again); success or a recorded failure replaces it.
            forget = tracking.delete_failed_rows_statement(ctx.location, ctx.spellings(migration.version))
            marker = tracking.insert_row_statement(ctx.location, success=False, **row)
            started = (replace(marker, params={**(marker.params or {}), "error": tracking.STARTED_NOT_FINISHED}),)
            on_failure.insert(0, forget)
            if not args.get("retry"):
                bookkeeping.append(forget)
        if args.get("retry"):
            bookkeeping.append(tracking.delete_failed_rows_statement(ctx.location, ctx.spellings(migration.version)))
        # A repeatable applied again gets a row of its own, as in Flyway's history: one per application.
        bookkeeping.append(tracking.insert_row_statement(ctx.location, success=True, **row))
        why = (
            " (retrying a failed attempt)"
            if args.get("retry")
            else " (changed since it was applied)"
            if reapply
            else ""
        )
        flags = {**({"retry": True} if args.get("retry") else {}), **({"reapply": True} if reapply else {})}
        statements, lock_timeout = _under_lock_timeout(
            ctx, (*started, *_with_callbacks(ctx, migration.file, BEFORE_EACH_MIGRATE, AFTER_EACH_MIGRATE)), script
        )
        return PlannedStep(
            action=self.name,
            reason=f"apply {migration.path.name}{why}",
            args={"version": migration.version, **flags},
            version=migration.version,
            statements=statements,
            bookkeeping=tuple(bookkeeping),
            on_failure=tuple(on_failure),
            transactional=script.transactional,
            no_transaction_reason=script.reason,
            commit_after=_alters_enum(ctx, script, BEFORE_EACH_MIGRATE, AFTER_EACH_MIGRATE),
            lock_timeout=lock_timeout,
        )


@register
class RollbackMigration(Action):
    name = "rollback_migration"
    summary = "Run a migration's .rollback.sql and remove its tracking rows"
    required = ("version",)

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        migration = migration_for(ctx, args["version"])
        if migration.rollback is None:
            raise UsageError(f"Migration {migration.version} has no rollback file")
        script = migration.rollback.script
        return PlannedStep(
            action=self.name,
            reason=f"roll back {migration.path.name}"
            + ("" if migration.rollback.path == migration.path else f" with {migration.rollback.path.name}"),
            args={"version": migration.version},
            version=migration.version,
            statements=_with_callbacks(ctx, migration.rollback, BEFORE_EACH_UNDO, AFTER_EACH_UNDO),
            bookkeeping=(tracking.delete_version_statement(ctx.location, ctx.spellings(migration.version)),),
            transactional=script.transactional,
            no_transaction_reason=script.reason,
        )
