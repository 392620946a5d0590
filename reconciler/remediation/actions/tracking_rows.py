"""Fixes to tracking rows: track a migration, remove rows, update a checksum, dedupe rows."""

from __future__ import annotations

from typing import Any

from reconciler.desired.files import CHECKSUM_ALGORITHM, CHECKSUM_ALGORITHMS, Migration
from reconciler.errors import UsageError
from reconciler.observed.tracking import (
    SAME_VERSION,
    delete_failed_rows_statement,
    delete_version_statement,
    recorded_row_statement,
)
from reconciler.remediation.actions.base import Action, BuildContext, migration_for, register
from reconciler.remediation.plan import PlannedStep
from reconciler.statements import Statement


def _recorded_applied(
    ctx: BuildContext, migration: Migration, checksum: str, algorithm: str
) -> tuple[Statement, Statement]:
    """The statements that record ``migration`` applied without running it. A failed attempt's
    row (it ran while the migration was already applied) is replaced by the row that says it
    is applied; the audit table keeps its history."""
    row = recorded_row_statement(
        ctx.location,
        version=migration.version,
        description=migration.description,
        checksum=checksum,
        algorithm=algorithm,
        transactional=migration.file.script.transactional,
    )
    return delete_failed_rows_statement(ctx.location, ctx.spellings(migration.version)), row


@register
class TrackMigration(Action):
    name = "track_migration"
    summary = "Record a migration as applied without running it (it was applied by hand)"
    required = ("version",)
    optional = ("reason",)

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        migration = migration_for(ctx, args["version"])
        statements = _recorded_applied(ctx, migration, migration.checksum, CHECKSUM_ALGORITHM)
        reason = f"track migration {migration.version} as applied"
        if args.get("reason"):
            reason += f" ({args['reason']})"
        return PlannedStep(self.name, reason, {"version": migration.version}, statements, version=migration.version)


@register
class RemoveTrackingRow(Action):
    name = "remove_tracking_row"
    summary = "Delete tracking rows of a version: its failed attempts, or the rows named by id"
    required = ("version",)
    optional = ("only_failed", "ids")

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        version = str(args["version"])
        table = ctx.location.migrations_sql
        if args.get("ids"):
            ids = [int(i) for i in args["ids"]]
            # Only rows of this version: an id list cannot reach another migration's rows.
            statement = Statement(
                f"DELETE FROM {table} WHERE id = ANY(%(ids)s) AND {SAME_VERSION}",
                {"ids": ids, "versions": ctx.spellings(version)},
            )
            reason = f"remove tracking row(s) {', '.join(map(str, ids))} of migration {version}"
        elif args.get("only_failed", True):
            statement = delete_failed_rows_statement(ctx.location, ctx.spellings(version))
            reason = f"remove the failed tracking row(s) of migration {version}, so migrate runs it again"
        else:
            statement = delete_version_statement(ctx.location, ctx.spellings(version))
            reason = f"remove every tracking row of migration {version}"
        return PlannedStep(self.name, reason, dict(args, version=version), (statement,), version=version)


@register
class UpdateChecksum(Action):
    name = "update_checksum"
    summary = "Record the file's current checksum for an applied migration (the edit was intended)"
    required = ("version",)

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        migration = migration_for(ctx, args["version"])
        statement = Statement(
            f"UPDATE {ctx.location.migrations_sql} SET checksum = %(checksum)s, "
            f"checksum_algorithm = %(algorithm)s WHERE {SAME_VERSION} AND success",
            {
                "checksum": migration.checksum,
                "algorithm": CHECKSUM_ALGORITHM,
                "versions": ctx.spellings(migration.version),
            },
        )
        reason = f"record checksum {migration.checksum[:12]} of {migration.path.name} for migration {migration.version}"
        return PlannedStep(self.name, reason, {"version": migration.version}, (statement,), version=migration.version)


@register
class DedupeRows(Action):
    name = "dedupe_rows"
    summary = "Keep the oldest successful tracking row of a version and delete the other successful ones"
    required = ("version",)

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        version = str(args["version"])
        table = ctx.location.migrations_sql
        statement = Statement(
            f"DELETE FROM {table} WHERE {SAME_VERSION} AND success AND id > "
            f"(SELECT min(id) FROM {table} WHERE {SAME_VERSION} AND success)",
            {"versions": ctx.spellings(version)},
        )
        reason = f"keep the oldest tracking row of migration {version}, delete its duplicates"
        return PlannedStep(self.name, reason, {"version": version}, (statement,), version=version)


@register
class ImportMigration(Action):
    name = "import_migration"
    summary = "Record a migration another tool applied (db import), with that tool's checksum when it kept one"
    required = ("version", "tool")
    optional = ("checksum", "algorithm", "reason")

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        migration = migration_for(ctx, args["version"])
        # The tool's own checksum, in its algorithm, says whether the file changed since that
        # tool ran it (diagnose compares in the row's algorithm); without one, today's file.
        algorithm = str(args.get("algorithm") or CHECKSUM_ALGORITHM)
        if algorithm not in CHECKSUM_ALGORITHMS:
            raise UsageError(f"action {self.name}: unknown checksum algorithm {algorithm!r}")
        checksum = str(args["checksum"]) if args.get("checksum") else migration.checksum
        if not args.get("checksum"):
            algorithm = CHECKSUM_ALGORITHM
        statements = _recorded_applied(ctx, migration, checksum, algorithm)
        reason = f"import migration {migration.version} as applied ({args['tool']} recorded it)"
        if args.get("reason"):
            reason += f": {args['reason']}"
        step_args = {"version": migration.version, "tool": args["tool"], "checksum": checksum, "algorithm": algorithm}
        return PlannedStep(self.name, reason, step_args, statements, version=migration.version)


@register
class ImportFailedAttempt(Action):
    name = "import_failed_attempt"
    summary = "Record that another tool's run of a migration failed part-way (a partial_migration to resolve)"
    required = ("version", "tool")
    optional = ("detail",)

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        migration = migration_for(ctx, args["version"])
        detail = f"{args['tool']}: {args.get('detail') or 'failed'}"
        # Outside a transaction as far as poststack can know: how far it got is for a person.
        statement = Statement(
            f"INSERT INTO {ctx.location.migrations_sql} "
            "(version, description, checksum, checksum_algorithm, execution_ms, success, error, transactional) "
            "VALUES (%(version)s, %(description)s, %(checksum)s, %(algorithm)s, NULL, false, %(error)s, false)",
            {
                "version": migration.version,
                "description": migration.description,
                "checksum": migration.checksum,
                "algorithm": CHECKSUM_ALGORITHM,
                "error": detail,
            },
        )
        reason = f"import {args['tool']}'s failed attempt at migration {migration.version} ({detail})"
        step_args = {"version": migration.version, "tool": args["tool"], "detail": args.get("detail")}
        return PlannedStep(self.name, reason, step_args, (statement,), version=migration.version)
