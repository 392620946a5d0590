"""Flyway's run-level SQL callbacks around the migrations a plan applies, in the order Flyway's
DbMigrate fires them: beforeMigrate first; afterVersioned (and beforeRepeatables) between the
versioned migrations and the repeatables; afterMigrateApplied once something was applied;
afterMigrate last. The per-migration callbacks live inside each migration's step
(actions/migrations.py). db migrate and a plan that applies migrations (apply) place them
with this one function, so the two cannot leave a database differently."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from reconciler.desired.files import (
    AFTER_MIGRATE,
    AFTER_MIGRATE_APPLIED,
    AFTER_VERSIONED,
    BEFORE_MIGRATE,
    BEFORE_REPEATABLES,
)
from reconciler.desired.versions import parse_version
from reconciler.remediation.actions import BuildContext, get_action
from reconciler.remediation.plan import PlannedStep


def callback_steps(ctx: BuildContext, event: str) -> list[PlannedStep]:
    """A step per callback of ``event``: each in a transaction of its own, never tracked."""
    return [get_action("run_callback").step(ctx, {"file": c.name}) for c in ctx.migrations.callbacks_at(event)]


def with_run_callbacks(
    ctx: BuildContext, steps: Sequence[PlannedStep], *, every_run: bool, first: int | None = None
) -> list[PlannedStep]:
    """``steps`` with the run-level callbacks placed around their apply_migration steps.
    ``every_run``: db migrate, which runs beforeMigrate and afterMigrate even with nothing to
    apply (Flyway does); a plan runs them only when it applies something. ``first``: where
    beforeMigrate goes (default: before the first migration applied)."""
    applying = [i for i, s in enumerate(steps) if s.action == "apply_migration"]
    if not applying and not every_run:
        return list(steps)
    repeatable = next((i for i in applying if _is_repeatable(steps[i])), None)
    start = first if first is not None else (applying[0] if applying else len(steps))
    end = applying[-1] + 1 if applying else len(steps)
    out = list(steps[:start]) + callback_steps(ctx, BEFORE_MIGRATE)
    if repeatable is None:
        out += list(steps[start:end]) + callback_steps(ctx, AFTER_VERSIONED)
    else:
        out += list(steps[start:repeatable])
        out += callback_steps(ctx, AFTER_VERSIONED) + callback_steps(ctx, BEFORE_REPEATABLES)
        out += list(steps[repeatable:end])
    if applying:  # run only if everything before succeeded: the executor stops at a failure
        out += callback_steps(ctx, AFTER_MIGRATE_APPLIED)
    return _each_alone(out + callback_steps(ctx, AFTER_MIGRATE) + list(steps[end:]))


def _each_alone(steps: list[PlannedStep]) -> list[PlannedStep]:
    """Each run-level callback in a transaction of its own, as in Flyway, also where a plan
    would group steps into one (apply): what committed before it stays when it fails."""
    out = list(steps)
    for index, step in enumerate(out):
        if step.action == "run_callback":
            out[index] = replace(step, commit_after=True)
            if index > 0:
                out[index - 1] = replace(out[index - 1], commit_after=True)
    return out


def _is_repeatable(step: PlannedStep) -> bool:
    return step.version is not None and parse_version(step.version).is_repeatable
