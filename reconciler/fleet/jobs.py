"""What each command does on one target of a fleet: it calls the function a single run calls
(commands.py, diagnosis, remediation) and keeps what the fleet report shows of its result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reconciler import commands
from reconciler.config import Settings, mask_url
from reconciler.errors import (
    EXIT_DATABASE,
    EXIT_PROBLEMS,
    HALF_DONE,
    Interrupted,
    Interruption,
    LockTimeout,
    PoststackError,
)
from reconciler.fleet.report import outcome_of_error
from reconciler.fleet.run import Job, Notify
from reconciler.fleet.targets import Target

if TYPE_CHECKING:
    from reconciler.diagnosis.issues import IssueType, Severity
    from reconciler.diagnosis.pending import Allowances
    from reconciler.remediation.plan import Plan
    from reconciler.remediation.planner import PlanRequest

Values = dict[str, Any]


_MIGRATIONS = ("apply_migration", "rollback_migration")


def standing(settings: Settings, notify: Notify) -> Values:
    """Where the target stands: its version, and how many migrations are pending and failed."""
    return _standing_of(commands.migration_status(settings, notify=notify))


def _standing_of(status: commands.StatusResult) -> Values:
    return {
        "current_version": status.current_version,
        "pending": len(status.pending),
        "failed": len(status.failed),
    }


def _issues(issues: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> Values:
    """Counts by severity, and each issue as the report lists it, from issues as diagnose
    --format json shows them (a plan keeps them so)."""
    counts = {"high": 0, "medium": 0, "low": 0}
    listed = []
    for issue in issues:
        severity = str(issue.get("severity", "low"))
        counts[severity] = counts.get(severity, 0) + 1
        listed.append(
            {
                "type": issue.get("type"),
                "severity": severity,
                "version": issue.get("version"),
                "summary": mask_url(str(issue.get("message", ""))),
                "fix": issue.get("suggested_fix"),
            }
        )
    return {"issues": counts, "issue_list": tuple(listed)}


def _standing(job: Job) -> Job:
    """When a change fails or is stopped on a target, its row still says where the target
    stands (its version, pending and failed migrations), read afterwards; a stopped one also
    what it applied before the signal, and what to do when it left a migration half-done."""

    def wrapped(target: Target, settings: Settings, notify: Notify) -> Values:
        try:
            return job(target, settings, notify)
        except PoststackError as e:
            if e.exit_code == EXIT_DATABASE:
                raise  # not reached: nothing more to ask it
            try:
                values = standing(settings, notify)
            except PoststackError:
                raise e from None
            if isinstance(e, Interrupted):
                return values | _interrupted(e.interruption, e.exit_code)
            detail = mask_url(e.detail) if e.detail else None
            return values | {
                "outcome": outcome_of_error(e.exit_code),
                "exit_code": e.exit_code,
                "error": mask_url(e.summary),
                "detail": detail,
            }

    return wrapped


def _lost_mid_run(settings: Settings, notify: Notify, error: PoststackError, started: list[str]) -> Values:
    """The target was reached and migrating when its connection was lost: not unreachable.
    Where it stands is read again on a new connection; what this run applied is what it began
    that is tracked as applied now (each migration commits with its tracking row)."""
    try:
        status = commands.migration_status(settings, notify=notify)
    except PoststackError:
        raise error from None
    applied_now = {entry.version for entry in status.applied}
    return _standing_of(status) | {
        "outcome": "failed",
        "exit_code": error.exit_code,
        "applied": tuple(version for version in started if version in applied_now),
        "error": f"the connection was lost during the run: {mask_url(error.summary)}",
        "detail": "Each migration committed with its tracking row or not at all: run the command again to go on.",
    }


def _interrupted(interruption: Interruption, exit_code: int) -> Values:
    i = interruption
    where = f" during migration {i.version}" if i.action == "apply_migration" and i.version else ""
    half_done = i.kept == HALF_DONE
    return {
        "outcome": "interrupted",
        "exit_code": exit_code,
        "applied": tuple(version for _step, action, version in i.done if action in _MIGRATIONS and version),
        "error": f"interrupted by {i.signal}{where}: {i.kept}",
        "detail": "It ran outside a transaction: the statements before the stopped one were kept, and it is "
        "recorded failed. Clean up what it left (db diagnose shows it), then run db migrate --targets ... "
        "--retry-failed."
        if half_done
        else None,
    }


def status_job(*, exit_code: bool) -> Job:
    def job(target: Target, settings: Settings, notify: Notify) -> Values:
        values = standing(settings, notify)
        behind = values["failed"] or (exit_code and values["pending"])
        return values | {"outcome": "problems" if behind else "ok"}

    return job


def migrate_job(*, up_to: str | None, allow: Allowances) -> Job:
    """``up_to``: db migrate --target, the version to stop at."""

    @_standing
    def job(target: Target, settings: Settings, notify: Notify) -> Values:
        started: list[str] = []  # the migrations this run began, in order

        def began(_index: int, step: Any) -> None:
            if step.action in _MIGRATIONS and step.version:
                started.append(step.version)

        try:
            try:
                result, status = commands.migrate_then_status(
                    settings, target=up_to, allow=allow, notify=notify, on_step=began
                )
            except PoststackError as e:
                if e.exit_code == EXIT_DATABASE and started:
                    return _lost_mid_run(settings, notify, e, started)
                raise
        except LockTimeout:
            # A fleet run that was killed left its lock rows: the re-run continues where it
            # stopped when that is safe (commands.release_killed_run_lock), else says so.
            released = commands.release_killed_run_lock(settings, notify)
            if released is None:
                raise
            notify(
                f"⚠️  Released the migration lock of a db migrate that ended without releasing it ({released}): "
                "every migration it "
                "could have been running runs in a transaction, so each committed with its tracking row or not at all."
            )
            result, status = commands.migrate_then_status(
                settings, target=up_to, allow=allow, notify=notify, on_step=began
            )
        execution = result.execution
        done = execution.outcomes if execution is not None else ()
        applied = tuple(o.version for o in done if o.ok and o.outcome == "ok" and o.action in _MIGRATIONS and o.version)
        values = _standing_of(status)
        values["applied"] = applied
        values["notes"] = tuple(f"⚠️  {note}" for note in result.plan.notes)  # as db migrate warns of them
        if execution is not None and execution.failure is not None:
            failure = execution.failure
            where = f" ({failure.location})" if failure.location else ""
            values["error"] = mask_url(f"{failure.version or failure.action}{where}: {failure.message}")
            return values | {"outcome": "failed"}
        return values | {"outcome": "applied" if applied else "ok"}

    return job


def diagnose_job(types: tuple[IssueType, ...], minimum: Severity) -> Job:
    def job(target: Target, settings: Settings, notify: Notify) -> Values:
        from reconciler.diagnosis import diagnose as diagnosis

        result = diagnosis.diagnose(settings, types, minimum, notify=notify)
        values = standing(settings, notify) | _issues([i.to_json() for i in result.issues])
        return values | {"outcome": "ok" if result.ok else "problems"}

    return job


def validate_job(*, check_rollbacks: bool, round_trip: bool) -> Job:
    def job(target: Target, settings: Settings, notify: Notify) -> Values:
        from reconciler.diagnosis import diagnose as diagnosis

        result = diagnosis.validate(settings, check_rollbacks=check_rollbacks, round_trip=round_trip, notify=notify)
        values = standing(settings, notify)
        values["notes"] = result.warnings
        if result.errors:
            values["error"] = mask_url(result.errors[0]) + (
                f" (and {len(result.errors) - 1} more)" if len(result.errors) > 1 else ""
            )
        return values | {"outcome": "ok" if result.ok else "problems"}

    return job


def plan_job(request: PlanRequest) -> Job:
    """The target's plan goes into its report (``plan``), and from there into a fleet plan."""

    def job(target: Target, settings: Settings, notify: Notify) -> Values:
        from reconciler.remediation import fixes as remediation

        plan = remediation.plan_for_review(settings, request, notify=notify).plan
        values = standing(settings, notify) | _issues(plan.issues)
        values["plan"] = plan.to_json() | {"hash": plan.hash}
        values["notes"] = plan.notes
        runnable = [s for s in plan.steps if s.action != "manual"]
        return values | {"outcome": "planned" if runnable else "ok", "applied": ()}

    return job


def apply_job(plans: dict[str, Plan] | None, request: PlanRequest | None, *, confirm: bool) -> Job:
    """Apply the target's saved plan (``plans``, by target key: refused when the target
    changed since it was made), or plan afresh (``request``) and apply that."""

    @_standing
    def job(target: Target, settings: Settings, notify: Notify) -> Values:
        from reconciler.remediation import fixes as remediation

        if plans is not None:
            plan = plans[target.key]
        else:
            assert request is not None
            plan = remediation.plan_for_review(settings, request, notify=notify).plan
            if plan.destructive and not confirm:
                return (
                    standing(settings, notify)
                    | _issues(plan.issues)
                    | {
                        "outcome": "refused",
                        "exit_code": EXIT_PROBLEMS,
                        "error": "its plan is destructive (it drops or rewrites something): nothing was run",
                        "detail": "Review it with poststack plan --targets, then apply with --confirm.",
                        "plan": plan.to_json() | {"hash": plan.hash},
                    }
                )
        try:
            result = remediation.apply_plan(settings, plan, notify=notify, whole=True)
        except remediation.StalePlan as e:
            return {"outcome": "refused", "exit_code": e.exit_code, "error": e.summary, "detail": e.detail}
        execution = result.execution
        done = execution.outcomes if execution is not None else ()
        # What this run changed: not a step left to a person, nor one another run had done.
        applied = tuple(o.version or o.action for o in done if o.ok and o.outcome == "ok" and o.action != "manual")
        values = standing(settings, notify) | _issues([i.to_json() for i in result.remaining])
        values |= {"applied": applied, "plan": plan.to_json() | {"hash": plan.hash}}
        if execution is not None and execution.failure is not None:
            failure = execution.failure
            values["error"] = mask_url(f"step {failure.step} ({failure.version or failure.action}): {failure.message}")
            return values | {"outcome": "failed"}
        if not result.ok:
            held = f"held for a person: {', '.join(result.held)}" if result.held else ""
            left = f"{len(result.unresolved)} high-severity issue(s) remain" if result.unresolved else ""
            values["error"] = "; ".join(x for x in (held, left) if x)
            return values | {"outcome": "problems"}
        return values | {"outcome": "applied" if applied else "ok"}

    return job


def fresh_job(plans: dict[str, Plan]) -> Job:
    """Before a saved fleet plan runs anywhere: has the target changed since it was planned?"""

    def job(target: Target, settings: Settings, notify: Notify) -> Values:
        from reconciler.remediation import fixes as remediation

        if remediation.is_fresh(settings, plans[target.key], notify):
            return {"outcome": "ok"}
        return {
            "outcome": "refused",
            "exit_code": EXIT_PROBLEMS,
            "error": "it changed since the plan was made (its fingerprint differs)",
            "detail": "Make a new plan with poststack plan --targets ... --out FILE, or apply the rest with --partial.",
        }

    return job
