"""apply_migration and rollback_migration: a migration file's statements plus its tracking write."""

from __future__ import annotations

from typing import Any

from reconciler.desired.files import CHECKSUM_ALGORITHM, Migration, SqlFile
from reconciler.errors import UsageError
from reconciler.observed import tracking
from reconciler.remediation.actions.base import Action, BuildContext, migration_for, register
from reconciler.remediation.plan import PlannedStep
from reconciler.statements import Statement


def _migration(ctx: BuildContext, version: str) -> Migration:
    migration = ctx.migrations.find(str(version))
    if migration is None:
        raise UsageError(f"no migration {version} in {ctx.migrations.directory}")
    return migration


def _file_statements(file: SqlFile) -> tuple[Statement, ...]:
    source = str(file.path)
    return tuple(Statement(s.sql, None, source=source, line=s.line) for s in file.script.statements)


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
        if args.get("retry"):
            bookkeeping.append(tracking.delete_failed_rows_statement(ctx.location, ctx.spellings(migration.version)))
        if reapply:  # the row of its last application gives way to this one's
            bookkeeping.append(tracking.delete_version_statement(ctx.location, ctx.spellings(migration.version)))
        bookkeeping.append(tracking.insert_row_statement(ctx.location, success=True, **row))
        why = (
            " (retrying a failed attempt)"
            if args.get("retry")
            else " (changed since it was applied)"
            if reapply
            else ""
        )
        flags = {**({"retry": True} if args.get("retry") else {}), **({"reapply": True} if reapply else {})}
        return PlannedStep(
            action=self.name,
            reason=f"apply {migration.path.name}{why}",
            args={"version": migration.version, **flags},
            version=migration.version,
            statements=_file_statements(migration.file),
            bookkeeping=tuple(bookkeeping),
            on_failure=(tracking.insert_row_statement(ctx.location, success=False, **row),),
            transactional=script.transactional,
            no_transaction_reason=script.reason,
            commit_after=any(s.kind == "AlterEnumStmt" for s in script.statements),
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
            statements=_file_statements(migration.rollback),
            bookkeeping=(tracking.delete_version_statement(ctx.location, ctx.spellings(migration.version)),),
            transactional=script.transactional,
            no_transaction_reason=script.reason,
        )
