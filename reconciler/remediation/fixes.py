"""plan, apply and the guide's fix commands (recover, repair, clean, unlock-migrations).

One function per verb; each returns data. They all go through the same planner and the
same executor: a front-end only fixes which playbooks and variables are used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reconciler.config import Settings
from reconciler.db import DatabaseRef, Session, connect
from reconciler.desired.layouts import load_migrations
from reconciler.desired.replay.source import shadow_for
from reconciler.desired.versions import parse_version
from reconciler.diagnosis.checks import Facts, run_checks
from reconciler.diagnosis.issues import Issue, IssueType, Severity
from reconciler.diagnosis.linting import Linted, with_lint
from reconciler.errors import OperationFailed, PoststackError, UsageError
from reconciler.observed import locking
from reconciler.observed.foreign import read_foreign_history, tool_named
from reconciler.observed.state import read_state
from reconciler.observed.tracking import observe_tracking
from reconciler.remediation import executor
from reconciler.remediation.actions import BuildContext
from reconciler.remediation.importing import REFUSE, ImportItem, import_items
from reconciler.remediation.plan import Plan
from reconciler.remediation.planner import HELD, PlanRequest, plan_remediation
from reconciler.remediation.playbook import PENDING, load_all

DEFAULT_VARIABLES = {
    "force": False,
    "terminate": False,
    "allow_out_of_order": False,
    "allow_undetermined": False,
    "wait": False,
    "lock_timeout": 30.0,  # the command's --lock-timeout: how long a wait_for_backend step may wait
    "versions": [],  # db recover VERSION ...: only these
    "trust_order": False,  # db recover --trust-order: also what only its place in the history shows applied
    "tool": "",  # db import --from TOOL: the other tool, as messages name it
}


class StalePlan(OperationFailed):
    """The database changed since the plan was made."""


def build_context(settings: Settings, facts: Facts) -> BuildContext:
    return BuildContext(
        settings.tracking,
        facts.desired.migrations,
        settings.migrations_dir.resolve().parent / "backups",
        tuple(row.version for row in facts.observed.tracking.rows),
        settings.ddl_lock_timeout,
    )


def read_plan_facts(session: Session, settings: Settings, notify: Any = None, *, lint: bool = False) -> Facts:
    """The state a plan is made from; ``lint``: the pending migrations linted too."""
    desired, observed = read_state(
        session, settings.migrations_dir, settings.tracking, settings.layout, shadow_for(settings), notify
    )
    facts = Facts(desired, observed)
    return with_lint(session, settings, facts, notify) if lint else facts


def with_default_variables(request: PlanRequest, settings: Settings | None = None) -> PlanRequest:
    timeout = {"lock_timeout": settings.lock_timeout} if settings is not None else {}
    variables = {**DEFAULT_VARIABLES, **timeout, **request.variables}
    return replace(request, variables=variables)


def make_plan(settings: Settings, request: PlanRequest, notify: Any = None) -> Plan:
    return _planned(settings, request, notify, lint=False)[0]


@dataclass(frozen=True)
class ReviewedPlan:
    """A plan for a person to review (poststack plan, apply without a plan file), and what
    the migrations it runs lock and rewrite: computed when it is shown, beside the plan, never
    part of it (plan --out saves it next to the plan; apply never reads it; neither the
    fingerprint nor the hash covers it)."""

    plan: Plan
    lint: Linted | None  # None: nothing pending, or not linted (the request cannot migrate)


def plan_for_review(settings: Settings, request: PlanRequest, notify: Any = None) -> ReviewedPlan:
    """make_plan, and the pending migrations linted when the plan may run them or the
    request asks for unsafe_migration."""
    wanted = set(request.issue_types)
    lint = not wanted or bool(wanted & {PENDING, IssueType.UNSAFE_MIGRATION.value})
    plan, facts = _planned(settings, request, notify, lint=lint)
    return ReviewedPlan(plan, facts.lint)


def _planned(settings: Settings, request: PlanRequest, notify: Any, *, lint: bool) -> tuple[Plan, Facts]:
    playbooks = load_all(settings.migrations_dir)  # malformed playbooks fail before any connection
    with connect(settings, notify) as session:
        facts = read_plan_facts(session, settings, notify, lint=lint)
    variables = with_default_variables(request, settings)
    return plan_remediation(facts, playbooks, variables, build_context(settings, facts)), facts


# --- saved plans --------------------------------------------------------------------------


def save_plan(plan: Plan, path: Path, shown: dict[str, Any] | None = None) -> None:
    """The plan and its hash; ``shown``: what plan printed beside it (what its migrations
    lock), saved as printed for whoever reviews the file. Not part of the plan: the hash does
    not cover it and load_plan reads past it."""
    data = plan.to_json()
    data["hash"] = plan.hash
    data.update(shown or {})
    try:
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    except OSError as e:
        raise UsageError(f"cannot write plan file {path}: {e.strerror}") from e


def load_plan(path: Path) -> Plan:
    """Read a saved plan, refusing one that is not a poststack plan or was edited."""
    import jsonschema

    from reconciler.remediation.playbook import json_schema

    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"cannot read plan file {path}: {e.strerror}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not a poststack plan (not JSON: {e})") from e
    errors = list(jsonschema.Draft202012Validator(json_schema("plan.schema.json")).iter_errors(data))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise UsageError(f"{path}: not a poststack plan: {where}: {errors[0].message}")
    plan = Plan.from_json(data)
    if not data.get("hash"):
        raise UsageError(
            f"{path}: the plan has no hash, so an edit could not be told apart",
            "Make a new one with poststack plan --out FILE.",
        )
    if data["hash"] != plan.hash:
        raise UsageError(
            f"{path}: the plan was edited after it was made (its hash does not match)",
            "Make a new one with poststack plan --out FILE.",
        )
    return plan


# --- apply --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplyResult:
    """apply (and the fix commands): the plan run, how its steps went, and what a fresh diagnosis finds after."""

    plan: Plan
    execution: executor.ExecutionResult | None  # None when the plan had nothing to run
    remaining: tuple[Issue, ...]  # what a fresh diagnosis finds afterwards
    database: DatabaseRef  # where it ran: the report names it
    # apply converges the whole database: high-severity issues left afterwards make it fail.
    # The fix commands (recover, repair, clean) answer only for what they fix.
    whole: bool = False

    @property
    def held(self) -> tuple[str, ...]:
        """Pending migrations the plan did not run because they may have run already, or wait
        behind one that may: apply did not converge, and must not say it did."""
        return tuple(s.version for s in self.plan.steps if s.playbook == HELD and s.version)

    @property
    def unresolved(self) -> tuple[Issue, ...]:
        """For apply: high-severity issues a fresh diagnosis still finds (not healthy yet)."""
        if not self.whole:
            return ()
        return tuple(i for i in self.remaining if i.severity is not None and i.severity >= Severity.HIGH)

    @property
    def ok(self) -> bool:
        """Every step ran, no migration was held, and (for apply) no high-severity issue is left."""
        return (self.execution is None or self.execution.ok) and not self.held and not self.unresolved


def apply_plan(
    settings: Settings,
    plan: Plan,
    notify: Any = None,
    on_step: Any = None,
    replan: PlanRequest | None = None,
    whole: bool = False,
    on_lock_wait: executor.LockWaitCallback | None = None,
) -> ApplyResult:
    """Run a plan made by make_plan (now or saved). Refused, before anything runs, when it
    was made for another database or the database changed since (stale). ``whole``: the
    run answers for the whole database (poststack apply), not one kind of fix."""
    location = plan.tracking
    if location.schema != settings.tracking_schema:
        raise UsageError(
            f"the plan is for tracking schema {location.schema}, not {settings.tracking_schema} "
            f"(use --schema {location.schema})"
        )
    if location.prefix != settings.table_prefix:
        here = settings.tracking.migrations_table
        raise UsageError(
            f"the plan is for the tracking tables {location.migrations_table}*, not {here}* "
            f"(use --table-prefix {location.prefix})"
        )
    with connect(settings, notify) as session:
        database = session.server_info().database
        if plan.database is not None and plan.database != database:
            raise UsageError(
                f"the plan was made for database {plan.database}, not {database}",
                "Apply it where it was made, or make a new plan here with poststack plan.",
            )
        if not any(s.action != "manual" for s in plan.steps):
            return ApplyResult(
                plan, None, tuple(run_checks(read_plan_facts(session, settings))), session.database_ref, whole
            )
        # The lock row: a plan that releases a stuck lock, or that creates the tables, runs
        # under the advisory lock alone and leaves the row to its steps.
        releases_lock = any(s.action == "release_lock" for s in plan.steps)
        take_row = not releases_lock and location.lock_table in observe_tracking(session, location).tables
        # Backends the plan ends (the lock's holder, --terminate): the advisory lock one of
        # them keeps is not waited for, or the plan that ends it could never start.
        ending = frozenset(
            pid
            for s in plan.steps
            if s.action in ("wait_for_backend", "release_lock") and s.args.get("terminate")
            for pid in (s.args.get("backend_pid", s.args.get("holder_backend_pid")),)
            if isinstance(pid, int)
        )

        current = [plan]

        def still_fresh() -> None:
            # Under the advisory lock, before the lock row is touched: nothing slips in.
            facts = read_plan_facts(session, settings)
            if facts.observed.fingerprint == plan.fingerprint:
                return
            if replan is None:
                raise StalePlan(
                    "Saved plan is stale: the database changed since the plan was made",
                    "Nothing was run. Make a new plan with poststack plan (and review it) before applying.",
                )
            # Approved in advance: plan again, under the lock, from what is there now.
            books = load_all(settings.migrations_dir)
            current[0] = plan_remediation(
                facts, books, with_default_variables(replan, settings), build_context(settings, facts)
            )

        with locking.migration_lock(
            session,
            location,
            settings.lock_timeout,
            still_fresh,
            take_row=take_row,
            ending=ending,
            command=_COMMANDS.get(plan.operation, "poststack apply"),
        ):
            execution = executor.execute(
                session,
                current[0],
                on_step,
                settings.migrations_dir,
                settings.layout,
                shadow_for(settings),
                lock_retries=settings.ddl_lock_retries,
                on_lock_wait=on_lock_wait,
            )
        plan = current[0]
        remaining = tuple(run_checks(read_plan_facts(session, settings)))
    return ApplyResult(plan, execution, remaining, session.database_ref, whole)


def is_fresh(settings: Settings, plan: Plan, notify: Any = None) -> bool:
    """Whether the database is still as it was when ``plan`` was made (read only: apply checks
    again, under the migration lock, before it runs anything)."""
    with connect(settings, notify) as session:
        return read_plan_facts(session, settings).observed.fingerprint == plan.fingerprint


# The command a plan of each operation is applied by, named in a refusal through
# transaction pooling; a plan from poststack plan is applied by poststack apply.
_COMMANDS = {
    "recover": "db recover",
    "repair": "db repair",
    "clean": "db clean",
    "unlock": "db unlock-migrations",
    "baseline": "db baseline",
    "import": "db import",
}


# --- front-ends ---------------------------------------------------------------------------


def recover(
    settings: Settings, *, force: bool, versions: tuple[str, ...] = (), trust_order: bool = False, notify: Any = None
) -> Plan:
    """Track what shows applied; with ``force``, also the undetermined migrations migrate
    holds. ``versions``: only these (and with force, these even when nothing holds them:
    the person's word)."""
    migrations = load_migrations(settings.migrations_dir, settings.layout)
    for version in versions:
        if migrations.find(version) is None:
            raise UsageError(f"no migration {version} in {settings.migrations_dir}")
    named = [m.version for m in migrations.migrations if any(m.key == parse_version(v) for v in versions)]
    variables = {"force": force, "versions": named, "trust_order": trust_order}
    request = PlanRequest(("recover",), ("missing_tracking", "undetermined"), variables, "recover", False)
    return make_plan(settings, request, notify)


def repair(settings: Settings, *, issue_types: tuple[str, ...], force: bool, notify: Any = None) -> Plan:
    types = issue_types or ("checksum_mismatch", "duplicate_version", "partial_migration")
    for t in types:
        if t not in ("checksum_mismatch", "duplicate_version", "partial_migration"):
            raise UsageError(f"repair fixes checksum_mismatch, duplicate_version and partial_migration, not {t}")
    return make_plan(settings, PlanRequest(("repair",), types, {"force": force}, "repair", False), notify)


def clean(
    settings: Settings,
    *,
    locks: bool,
    duplicates: bool,
    terminate: bool,
    wait: bool = False,
    operation: str = "clean",
    notify: Any = None,
) -> Plan:
    if not (locks or duplicates):
        raise UsageError("say what to clean: --locks, --duplicates, or both")
    books = (("clean-locks",) if locks else ()) + (("clean-duplicates",) if duplicates else ())
    types = (("stuck_lock",) if locks else ()) + (("duplicate_version",) if duplicates else ())
    variables = {"terminate": terminate, "wait": wait}
    return make_plan(settings, PlanRequest(books, types, variables, operation, False), notify)


def checked_apply(
    settings: Settings,
    plan: Plan,
    notify: Any = None,
    on_step: Any = None,
    on_lock_wait: executor.LockWaitCallback | None = None,
) -> ApplyResult:
    """apply_plan for the front-ends, which plan and apply in one go."""
    try:
        return apply_plan(settings, plan, notify, on_step, on_lock_wait=on_lock_wait)
    except StalePlan as e:
        raise PoststackError("the database changed while the fix was being planned; run the command again") from e


@dataclass(frozen=True)
class ImportPlan:
    """db import's plan, and what it decided for each migration the other tool has a word on."""

    plan: Plan
    tool: str
    table: str  # the other tool's table, schema-qualified
    items: tuple[ImportItem, ...]

    @property
    def refused(self) -> tuple[ImportItem, ...]:
        return tuple(i for i in self.items if i.decision == REFUSE)


def import_history(
    settings: Settings,
    tool_name: str,
    *,
    from_schema: str | None = None,
    from_table: str | None = None,
    notify: Any = None,
) -> ImportPlan:
    """Read ``tool_name``'s history table (left as it is), cross-check each row against the
    catalog, and plan the import playbook over the result."""
    tool = tool_named(tool_name)
    playbooks = load_all(settings.migrations_dir)
    with connect(settings, notify) as session:
        facts = read_plan_facts(session, settings)
        schema = from_schema or session.query_one("SELECT current_schema()")[0]  # type: ignore[index]
        history = read_foreign_history(session, tool, schema, from_table)
    items = tuple(import_items(history, facts))
    request = PlanRequest(
        ("import",),
        (),
        {"tool": tool.label},
        "import",
        include_unhandled=False,
        imported=tuple(i.to_json() for i in items),
    )
    plan = plan_remediation(facts, playbooks, with_default_variables(request, settings), build_context(settings, facts))
    return ImportPlan(plan, tool.label, history.table, items)
