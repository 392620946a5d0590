"""release_lock: clear the lock row a crashed or stopped run left behind.
wait_for_backend: before that, let the lock's backend end (or end it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from reconciler.errors import UsageError
from reconciler.observed import tracking
from reconciler.remediation.actions.base import Action, BuildContext, RunContext, StepError, register
from reconciler.remediation.plan import PlannedStep
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
            statements.append(tracking.terminate_holder_statement(ctx.location, pid))
        statements.append(tracking.clear_lock_row_statement(ctx.location, pid))
        verb = f"end backend {pid} and release" if args.get("terminate") else "release"
        return PlannedStep(
            action=self.name,
            reason=f"{verb} the migration lock {args['holder']}",
            args={"holder_backend_pid": pid, "holder": args["holder"], "terminate": bool(args.get("terminate"))},
            statements=tuple(statements),
            # Committed on its own: a dead holder's lock stays released when a later step of
            # the plan (a migration) fails and its transaction is rolled back.
            commit_after=True,
        )


@register
class WaitForBackend(Action):
    name = "wait_for_backend"
    summary = "Wait, up to a timeout, for the lock's backend to end (ending it first with terminate)"
    required = ("backend_pid", "timeout_s")
    optional = ("terminate",)

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        pid = args["backend_pid"]
        try:
            timeout = float(args["timeout_s"])
        except (TypeError, ValueError) as e:
            raise UsageError(
                f"action {self.name}: timeout_s must be a number of seconds, not {args['timeout_s']!r}"
            ) from e
        terminate = bool(args.get("terminate"))
        statements = [tracking.terminate_holder_statement(ctx.location, pid)] if terminate else []
        # The last statement is the probe, asked until it says the backend is gone.
        statements.append(
            Statement(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %(pid)s AND datname = current_database())",
                {"pid": pid},
            )
        )
        reason = (
            f"end backend {pid} and wait up to {timeout:g}s for it to exit"
            if terminate
            else f"wait up to {timeout:g}s for backend {pid} to end"
        )
        return PlannedStep(
            self.name,
            reason,
            {"backend_pid": pid, "timeout_s": timeout, "terminate": terminate},
            tuple(statements),
            transactional=False,
            # Inside a transaction pg_stat_activity stays as it was first read, and a held
            # snapshot could hold up the very statement (CREATE INDEX CONCURRENTLY) waited for.
            no_transaction_reason="it polls pg_stat_activity, which a transaction sees frozen",
        )

    def run_body(self, run: RunContext, step: PlannedStep, before: Callable[[Statement], None]) -> None:
        *ending, probe = step.statements
        for statement in ending:
            before(statement)
            run.session.run(statement)
        before(probe)
        timeout = float(step.args["timeout_s"])
        deadline, pause = time.monotonic() + timeout, 0.05
        while True:
            row = run.session.query_one(probe.sql, probe.params)
            if not (row and row[0]):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StepError(
                    f"backend {step.args['backend_pid']} is still running after {timeout:g}s; "
                    "wait longer (raise --lock-timeout) or end it (--terminate)"
                )
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.5)
