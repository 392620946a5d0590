"""create_tracking and drop_tracking: poststack's own tables."""

from __future__ import annotations

from typing import Any

from reconciler.config import DEFAULT_TABLE_PREFIX
from reconciler.observed import tracking
from reconciler.remediation.actions.base import Action, BuildContext, register
from reconciler.remediation.plan import PlannedStep


@register
class CreateTracking(Action):
    name = "create_tracking"
    summary = "Create the tracking, lock and audit tables (<prefix>migrations, _lock, _audit) if absent"

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        return PlannedStep(
            action=self.name,
            reason=f"create the tracking tables {_where(ctx)}",
            args={},
            statements=tuple(tracking.create_statements(ctx.location)),
        )


@register
class DropTracking(Action):
    name = "drop_tracking"
    summary = "Drop the tracking and lock tables (their rows are lost; the append-only audit table is kept)"
    destructive = True

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        return PlannedStep(
            action=self.name,
            reason=f"drop the tracking tables {_where(ctx)}",
            args={},
            statements=tuple(tracking.drop_statements(ctx.location)),
        )


def _where(ctx: BuildContext) -> str:
    """``in schema public``; with another prefix, the tables' names too."""
    location = ctx.location
    if location.prefix == DEFAULT_TABLE_PREFIX:
        return f"in schema {location.schema}"
    return f"{location.migrations_table}* in schema {location.schema}"
