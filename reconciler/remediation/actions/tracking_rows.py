"""Fixes to tracking rows: track a migration, remove rows, update a checksum, dedupe rows."""

from __future__ import annotations

from typing import Any

from reconciler.desired.files import CHECKSUM_ALGORITHM
from reconciler.observed.tracking import (
    MIGRATIONS_TABLE,
    SAME_VERSION,
    delete_failed_rows_statement,
    delete_version_statement,
    recorded_row_statement,
)
from reconciler.remediation.actions.base import Action, BuildContext, migration_for, register
from reconciler.remediation.plan import PlannedStep
from reconciler.statements import Statement, qualified


@register
class TrackMigration(Action):
    name = "track_migration"
    summary = "Record a migration as applied without running it (it was applied by hand)"
    required = ("version",)
    optional = ("reason",)

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        migration = migration_for(ctx, args["version"])
        row = recorded_row_statement(
            ctx.schema,
            version=migration.version,
            description=migration.description,
            checksum=migration.checksum,
            algorithm=CHECKSUM_ALGORITHM,
            transactional=migration.file.script.transactional,
        )
        # A failed attempt's row (it ran while the migration was already applied by hand) is
        # replaced by the row that says it is applied; the audit table keeps its history.
        statements = (delete_failed_rows_statement(ctx.schema, migration.version), row)
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
        table = qualified(ctx.schema, MIGRATIONS_TABLE)
        if args.get("ids"):
            ids = [int(i) for i in args["ids"]]
            # Only rows of this version: an id list cannot reach another migration's rows.
            statement = Statement(
                f"DELETE FROM {table} WHERE id = ANY(%(ids)s) AND {SAME_VERSION}", {"ids": ids, "version": version}
            )
            reason = f"remove tracking row(s) {', '.join(map(str, ids))} of migration {version}"
        elif args.get("only_failed", True):
            statement = delete_failed_rows_statement(ctx.schema, version)
            reason = f"remove the failed tracking row(s) of migration {version}, so migrate runs it again"
        else:
            statement = delete_version_statement(ctx.schema, version)
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
            f"UPDATE {qualified(ctx.schema, MIGRATIONS_TABLE)} SET checksum = %(checksum)s, "
            f"checksum_algorithm = %(algorithm)s WHERE {SAME_VERSION} AND success",
            {"checksum": migration.checksum, "algorithm": CHECKSUM_ALGORITHM, "version": migration.version},
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
        table = qualified(ctx.schema, MIGRATIONS_TABLE)
        statement = Statement(
            f"DELETE FROM {table} WHERE {SAME_VERSION} AND success AND id > "
            f"(SELECT min(id) FROM {table} WHERE {SAME_VERSION} AND success)",
            {"version": version},
        )
        reason = f"keep the oldest tracking row of migration {version}, delete its duplicates"
        return PlannedStep(self.name, reason, {"version": version}, (statement,), version=version)
