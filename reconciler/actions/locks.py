"""release_lock: clear the lock row a crashed or stopped run left behind."""

from __future__ import annotations

from typing import Any

from reconciler import tracking
from reconciler.actions.base import Action, BuildContext, register
from reconciler.plan import PlannedStep
from reconciler.statements import Statement


@register
class ReleaseLock(Action):
    name = "release_lock"
    summary = "Release the migration lock row (optionally ending the backend that holds it)"
    required = ("holder_backend_pid", "holder")
    optional = ("terminate",)

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        pid = args["holder_backend_pid"]
        statements = []
        if args.get("terminate") and pid is not None:
            statements.append(Statement("SELECT pg_terminate_backend(%(pid)s)", {"pid": pid}))
        statements.append(tracking.clear_lock_row_statement(ctx.schema, pid))
        verb = f"end backend {pid} and release" if args.get("terminate") else "release"
        return PlannedStep(
            action=self.name,
            reason=f"{verb} the migration lock {args['holder']}",
            args={"holder_backend_pid": pid, "holder": args["holder"], "terminate": bool(args.get("terminate"))},
            statements=tuple(statements),
        )
