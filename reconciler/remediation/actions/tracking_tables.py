"""create_tracking and drop_tracking: poststack's own tables."""

from __future__ import annotations

from typing import Any

from reconciler.observed import tracking
from reconciler.remediation.actions.base import Action, BuildContext, register
from reconciler.remediation.plan import PlannedStep


@register
class CreateTracking(Action):
    name = "create_tracking"
    summary = "Create schema_migrations, schema_migrations_lock and schema_migrations_audit if absent"

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        return PlannedStep(
            action=self.name,
            reason=f"create the tracking tables in schema {ctx.schema}",
            args={},
            statements=tuple(tracking.create_statements(ctx.schema)),
        )


@register
class DropTracking(Action):
    name = "drop_tracking"
    summary = "Drop the tracking and lock tables (their rows are lost; the append-only audit table is kept)"
    destructive = True

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        return PlannedStep(
            action=self.name,
            reason=f"drop the tracking tables in schema {ctx.schema}",
            args={},
            statements=tuple(tracking.drop_statements(ctx.schema)),
        )
