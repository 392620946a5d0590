"""issues + playbooks → Plan. Pure: no database, no clock beyond backup file names.

Playbooks are chosen by name, or by the issue types they handle; each step is expanded
over its ``for_each`` items, filtered by ``when`` and rendered; an issue no chosen
playbook handles becomes a manual step saying what a person must do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler.desired.versions import VersionKey, parse_version, version_key
from reconciler.diagnosis.attribution import Verdict, attribute
from reconciler.diagnosis.checks import Facts, run_checks
from reconciler.diagnosis.issues import Issue, IssueType
from reconciler.diagnosis.pending import Allowances, Hold, OwnTablesAtRisk, Readiness, decide, own_table_risks
from reconciler.errors import UsageError
from reconciler.remediation.actions import BuildContext, get_action
from reconciler.remediation.callbacks import with_run_callbacks
from reconciler.remediation.plan import Plan, PlannedStep, PlaybookRef
from reconciler.remediation.playbook import (
    BASELINE,
    EVIDENCE_APPLIED,
    IMPORTED,
    PENDING,
    Playbook,
    PlaybookError,
    StepSpec,
    find,
)
from reconciler.remediation.render import RenderError, evaluate, render_value

HELD = "(held: not run)"  # the playbook name of the steps that say which migrations were held


@dataclass(frozen=True)
class PlanRequest:
    playbooks: tuple[str, ...] = ()  # --playbook: exactly these
    issue_types: tuple[str, ...] = ()  # --issue-type: only these (and "pending")
    variables: dict[str, Any] = field(default_factory=dict)  # force, terminate, ...
    operation: str = "remediate"
    include_unhandled: bool = True  # add manual steps for issues no playbook handles
    imported: tuple[dict[str, Any], ...] = ()  # db import's items (importing.py), for for_each: imported
    baseline: tuple[dict[str, Any], ...] = ()  # db baseline's items (remediation/baseline.py), for for_each: baseline


def issue_type_values(values: Iterable[str]) -> tuple[str, ...]:
    """Issue types as a person gives them (repeated, or comma-separated), by their values."""
    parts = [t.strip() for value in values for t in value.split(",") if t.strip()]
    return tuple(t if t == PENDING else IssueType.parse(t).value for t in parts)


def remediation_request(
    playbooks: Iterable[str] = (),
    issue_types: Iterable[str] = (),
    *,
    force: bool = False,
    allow_out_of_order: bool = False,
    allow_undetermined: bool = False,
) -> PlanRequest:
    """What plan and apply were asked for (their flags, or the API's arguments)."""
    variables = {"force": force, "allow_out_of_order": allow_out_of_order, "allow_undetermined": allow_undetermined}
    return PlanRequest(tuple(playbooks), issue_type_values(issue_types), variables)


def _readiness(facts: Facts, request: PlanRequest, retryable: set[str], recorded: frozenset[VersionKey]) -> Readiness:
    """Which pending migrations may run after the steps planned so far (``recorded``: what
    they track as applied). A migration that failed outside a transaction is retried only
    when its repair was planned (``retryable``) or forced."""
    variables = request.variables
    allow = Allowances(
        out_of_order=bool(variables.get("allow_out_of_order")),
        undetermined=bool(variables.get("allow_undetermined")),
        retry_failed=bool(variables.get("force")),
        retry=frozenset(retryable),
    )
    desired, observed = facts.desired, facts.observed
    return decide(
        desired.migrations,
        observed.tracking,
        facts.attributions,
        desired.history,
        observed.catalog,
        allow,
        recorded=recorded,
        audited=observed.audited,
        problems=desired.problems,  # plan/apply run nothing past a file it cannot read whole
    )


def _pending_items(readiness: Readiness) -> list[dict[str, Any]]:
    return [
        {"version": r.migration.version, "description": r.migration.description, "retry": r.retry, "reapply": r.reapply}
        for r in readiness.runnable
    ]


def _observed_summary(facts: Facts) -> dict[str, Any]:
    tracking = facts.observed.tracking
    lock = tracking.lock
    return {
        "schema": tracking.schema,
        "table_prefix": tracking.location.prefix,
        "migrations_table": tracking.location.migrations_table,
        "database": facts.observed.server.database,
        "tables_present": sorted(tracking.tables),
        "applied": [row.version for _, row in sorted(tracking.applied.items())],
        "current_version": tracking.current.version if tracking.current else None,
        "lock": {
            "locked": bool(lock and lock.locked),
            "holder": lock.describe() if lock else "not locked",
            "backend_pid": lock.backend_pid if lock else None,
            "holder_alive": bool(lock and lock.holder_alive),
            "backend_alive": bool(lock and lock.backend_alive),
            "client_alive": lock.client_alive if lock else None,
        },
    }


def _evidence_applied(facts: Facts) -> list[dict[str, Any]]:
    """Every migration the catalog (or its verify script) shows applied, tracked or not:
    what an emergency reset tracks again."""
    desired, observed = facts.desired, facts.observed
    items = []
    for migration in desired.migrations.migrations:
        found = attribute(
            migration,
            desired.history,
            observed.catalog,
            observed.verify.get(migration.version),
            observed.audited.get(migration.key),
        )
        tracked = migration.key in observed.tracking.applied
        if found.verdict is Verdict.APPLIED or (tracked and found.verdict is Verdict.UNDETERMINED):
            items.append(
                {
                    "version": migration.version,
                    "description": migration.description,
                    "basis": found.basis if not tracked else "tracked before the reset",
                }
            )
        elif found.verdict is Verdict.UNDETERMINED:
            items.append(
                {
                    "version": migration.version,
                    "description": migration.description,
                    "basis": None,
                    "reason": found.reason,
                }
            )
    return items


def choose(playbooks: dict[str, Playbook], request: PlanRequest, present: set[str]) -> list[Playbook]:
    if request.playbooks:
        chosen = [find(playbooks, name) for name in request.playbooks]
    else:
        chosen = [p for p in playbooks.values() if p.auto and present & set(p.handles)]
    return sorted(chosen, key=lambda p: (p.order, p.name))


def plan_remediation(facts: Facts, playbooks: dict[str, Playbook], request: PlanRequest, ctx: BuildContext) -> Plan:
    wanted = {t for t in request.issue_types}
    types = [IssueType(t) for t in wanted if t != PENDING] if wanted else list(IssueType)
    issues = run_checks(facts, types)
    retryable = {i.version for i in issues if i.type is IssueType.PARTIAL_MIGRATION and i.auto_fixable and i.version}
    migrating = not wanted or PENDING in wanted
    # Only for choosing playbooks: what recover in the same plan would track counts as tracked.
    trust_order = bool(request.variables.get("trust_order"))
    tracked_by_recover = frozenset(
        k
        for i in issues
        if i.type is IssueType.MISSING_TRACKING
        and i.version
        and (trust_order or i.details.get("evidence") != "order")  # order alone: recover --trust-order
        and (k := version_key(i.version)) is not None
    )
    readiness = _readiness(facts, request, retryable, tracked_by_recover) if migrating else None
    present = {i.type.value for i in issues} | ({PENDING} if readiness and readiness.runnable else set())
    chosen = choose(playbooks, request, present)

    context: dict[str, Any] = {
        "issues": [i.to_json() for i in issues],
        "pending": [],
        "observed": _observed_summary(facts),
        # Attributing every migration is the costly part: only for a step that ranges over it.
        EVIDENCE_APPLIED: _evidence_applied(facts)
        if any(s.for_each == EVIDENCE_APPLIED for p in chosen for s in p.steps)
        else [],
        "vars": dict(request.variables),
        IMPORTED: list(request.imported),
        BASELINE: list(request.baseline),
    }
    steps: list[PlannedStep] = []
    for book in chosen:
        if migrating:
            # Pending is what may run after the steps before this playbook: a migration they
            # track as applied by hand is never run, and anything older than it is out of order.
            recorded = frozenset(parse_version(s.version) for s in steps if s.action == "track_migration" and s.version)
            readiness = _readiness(facts, request, retryable, recorded)
            context["pending"] = _pending_items(readiness)
        for spec in book.steps:
            steps += _expand(book, spec, context, ctx, issues, context["pending"])
    # Flyway's run-level callbacks around what the plan applies, as db migrate places them.
    steps = with_run_callbacks(ctx, steps, every_run=False)
    # A plan that would run a migration breaking poststack's own tables is no plan: it
    # would fail half-way, poststack's record gone.
    desired = facts.desired
    running = [desired.migrations.find(s.version) for s in steps if s.action == "apply_migration" and s.version]
    risks = [r for m in running if m is not None for r in own_table_risks(m, desired.history, ctx.location)]
    if risks:
        raise OwnTablesAtRisk(tuple(risks))

    # What stays held once every step has run: said when this plan is the one that converges
    # the database (chosen by the issues, or naming a playbook that migrates).
    final = None
    if migrating and (not request.playbooks or any(s.for_each == PENDING for p in chosen for s in p.steps)):
        recorded = frozenset(parse_version(s.version) for s in steps if s.action == "track_migration" and s.version)
        final = _readiness(facts, request, retryable, recorded)
    held = {h.version for h in final.holds} if final else set()

    handled = {t for p in chosen for t in p.handles}
    if not request.variables.get("allow_out_of_order"):
        handled.discard(IssueType.OUT_OF_ORDER.value)  # only an explicit flag runs them
    # An undetermined migration this plan runs needs no person: its step is the answer. An
    # unsafe one's step shows what it locks and rewrites: the person reviewing the plan decides.
    running = {s.version for s in steps if s.action == "apply_migration" and s.version}
    if request.include_unhandled:
        for issue in issues:
            if issue.type in (IssueType.UNDETERMINED, IssueType.UNSAFE_MIGRATION) and issue.version in running:
                continue
            if issue.type.value not in handled and issue.version not in held:
                steps.append(_manual_for(issue, ctx))
    if final and final.holds:
        # Every held migration gets a step of its own, so apply can tell it did not converge;
        # one a playbook's step already explains is named briefly.
        covered = {s.version for s in steps if s.action == "manual"}
        waiting = list(final.waiting)
        for hold in final.holds:
            steps.append(_manual_for_hold(hold, waiting, ctx, brief=hold.version in covered))
            waiting = []  # said once, with the first

    # A step's own action counts too (the loader also refuses one in a playbook not marked destructive).
    destructive = any(p.destructive for p in chosen) or any(get_action(s.action).destructive for s in steps)
    if destructive and not (steps and steps[0].action == "backup"):
        steps.insert(
            0, replace(get_action("backup").step(ctx, {}), playbook="(required before a destructive playbook)")
        )

    runnable = [s for s in steps if s.action != "manual"]
    nothing = None
    if not runnable:
        nothing = "Nothing to do: no issue a playbook can fix" if issues else "Nothing to do: no issues found"
    return Plan(
        operation=request.operation,
        tracking=ctx.location,
        fingerprint=facts.observed.fingerprint,
        steps=tuple(steps),
        nothing_to_do=nothing,
        grouping="batch",
        playbooks=tuple(PlaybookRef(p.name, p.version, p.sha256, p.builtin) for p in chosen),
        issues=tuple(i.to_json() for i in issues),
        database=facts.observed.server.database,
        destructive=destructive,
    )


def _expand(
    book: Playbook,
    spec: StepSpec,
    base: dict[str, Any],
    ctx: BuildContext,
    issues: list[Issue],
    pending: list[dict[str, Any]],
) -> list[PlannedStep]:
    if spec.for_each is None:
        items: list[tuple[str | None, Any]] = [(None, None)]
    elif spec.for_each == PENDING:
        items = [("migration", m) for m in pending]
    elif spec.for_each == EVIDENCE_APPLIED:
        items = [("migration", m) for m in base[EVIDENCE_APPLIED]]
    elif spec.for_each in (IMPORTED, BASELINE):
        items = [("migration", m) for m in base[spec.for_each]]
    else:  # an issue type: the loader refused anything else
        items = [("issue", i.to_json()) for i in issues if i.type.value == spec.for_each]
    planned = []
    for name, item in items:
        context = dict(base)
        if name is not None:
            context[name] = item
        try:
            if spec.when is not None and not evaluate(spec.when, context):
                continue
            args = render_value(spec.args, context)
            title = render_value(spec.name, context)
        except RenderError as e:
            raise PlaybookError(f"{book.where(spec)}: step {spec.name!r}: {e}") from e
        try:
            step = get_action(spec.action).step(ctx, args)
        except UsageError as e:
            raise PlaybookError(f"{book.where(spec)}: step {spec.name!r}: {e.summary}") from e
        planned.append(replace(step, playbook=book.name, title=str(title)))
    return planned


def _manual_for_hold(hold: Hold, waiting: list[str], ctx: BuildContext, *, brief: bool) -> PlannedStep:
    instructions = (
        f"Migration {hold.version} is not run until the step above is done."
        if brief
        else f"{hold.reason}. {hold.remedy}"
    )
    if waiting:
        them = f"Migration {waiting[0]} waits" if len(waiting) == 1 else f"Migrations {', '.join(waiting)} wait"
        instructions += f" {them} until migration {hold.version} is resolved."
    held = {"type": hold.kind.value, "version": hold.version, "message": hold.reason}
    step = get_action("manual").step(ctx, {"instructions": instructions, "issue": held})
    return replace(step, playbook=HELD, title=f"migration {hold.version} is held ({hold.kind.value})")


def _manual_for(issue: Issue, ctx: BuildContext) -> PlannedStep:
    instructions = f"{issue.message}: {issue.suggested_fix}"
    step = get_action("manual").step(ctx, {"instructions": instructions, "issue": issue.to_json()})
    return replace(step, playbook="(no playbook)", title=f"{issue.type.value} needs a person")
