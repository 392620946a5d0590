"""baseline_migration: record a migration as applied on a person's word (db baseline VERSION).

The row is the one db recover writes (no execution time: recorded, not run); the audit row
says it was a baseline, at which version, and what the evidence said of the migration."""

from __future__ import annotations

from typing import Any

from reconciler.desired.files import CHECKSUM_ALGORITHM
from reconciler.errors import UsageError
from reconciler.observed.tracking import BASELINED, delete_failed_rows_statement, recorded_row_statement
from reconciler.remediation.actions.base import Action, BuildContext, migration_for, register
from reconciler.remediation.plan import PlannedStep


@register
class BaselineMigration(Action):
    name = BASELINED
    summary = "Record a migration as applied without running it, as part of a baseline at a version (db baseline)"
    required = ("version", "baseline")
    optional = ("evidence",)

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        migration = migration_for(ctx, args["version"])
        baseline = migration_for(ctx, args["baseline"])
        if migration.key > baseline.key:
            raise UsageError(
                f"action {self.name}: migration {migration.version} is after the baseline {baseline.version}"
            )
        # A failed attempt's row gives way to the row that says it is applied (the audit keeps it).
        statements = (
            delete_failed_rows_statement(ctx.location, ctx.spellings(migration.version)),
            recorded_row_statement(
                ctx.location,
                version=migration.version,
                description=migration.description,
                checksum=migration.checksum,
                algorithm=CHECKSUM_ALGORITHM,
                transactional=migration.file.script.transactional,
            ),
        )
        reason = f"baseline at {baseline.version}: record migration {migration.version} as applied without running it"
        if args.get("evidence"):
            reason += f" (evidence: {args['evidence']})"
        step_args = {"version": migration.version, "baseline": baseline.version, "evidence": args.get("evidence")}
        return PlannedStep(self.name, reason, step_args, statements, version=migration.version)
