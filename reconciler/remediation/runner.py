"""migrate and rollback: build a plan from files and tracking (pure), then hand it to the
executor under the migration lock. One execution path for everything that writes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from psycopg2.extensions import AsIs

from reconciler.config import DEFAULT_DDL_LOCK_TIMEOUT, Settings
from reconciler.db import DatabaseRef, Session
from reconciler.desired import psql
from reconciler.desired.files import (
    AFTER_UNDO,
    BEFORE_UNDO,
    MigrationSet,
)
from reconciler.desired.layouts import layout_named
from reconciler.desired.versions import VersionKey, parse_version
from reconciler.diagnosis.attribution import attribute_unapplied
from reconciler.diagnosis.pending import NOTHING_ALLOWED, Allowances, OwnTablesAtRisk, Readiness, decide
from reconciler.errors import DatabaseUnavailable, OperationFailed, UsageError
from reconciler.observed import locking, tracking
from reconciler.observed.catalog import still_unapplied_statement
from reconciler.observed.state import read_state_of
from reconciler.observed.tracking import LockState, ObservedTracking, audited_after, observe_tracking
from reconciler.remediation import executor
from reconciler.remediation.actions import BuildContext, get_action
from reconciler.remediation.callbacks import callback_steps, with_run_callbacks
from reconciler.remediation.plan import Plan, PlannedStep
from reconciler.statements import Statement

if TYPE_CHECKING:
    from reconciler.diagnosis.linting import Linted

INSUFFICIENT_PRIVILEGE = "42501"


@dataclass(frozen=True)
class RunResult:
    """What db migrate or db rollback did (or, dry, would do): the plan, and how its steps went."""

    operation: str  # migrate, rollback
    plan: Plan
    execution: executor.ExecutionResult | None  # None for a dry run
    dry_run: bool
    database: DatabaseRef  # where it ran: the report names it, so no run passes for another's
    # A dry run's: what the migrations it would run lock and rewrite. Shown, never part of
    # the plan: it changes nothing that runs.
    lint: Linted | None = None

    @property
    def ok(self) -> bool:
        """Every step ran (a dry run: nothing was asked to run)."""
        return self.execution is None or self.execution.ok

    @property
    def failure(self) -> executor.Failure | None:
        """The step that failed: its migration, file:line and the server's error; None when none did."""
        return self.execution.failure if self.execution is not None else None


MIGRATE_COMMAND = "db migrate"  # named in its lock row (and in a refusal through transaction pooling)


def migrate_plan(
    migrations: MigrationSet,
    observed: ObservedTracking,
    readiness: Readiness,
    target: str | None = None,
    *,
    ddl_lock_timeout: float = DEFAULT_DDL_LOCK_TIMEOUT,
) -> Plan:
    """Every pending migration up to ``target``, in numeric order, as ``readiness`` allows,
    each under ``ddl_lock_timeout`` (seconds of PostgreSQL's lock_timeout; 0: none set).
    Pure. Refused whole when any migration up to ``target`` is held: a later one never runs
    over an unresolved earlier one."""
    ctx = BuildContext(
        observed.location,
        migrations,
        recorded=tuple(row.version for row in observed.rows),
        ddl_lock_timeout=ddl_lock_timeout,
    )
    limit = _target_number(migrations, target) if target is not None else None
    if not migrations.migrations and observed.applied:
        raise UsageError(
            f"no migration files in {migrations.directory}, yet {len(observed.applied)} migration(s) are tracked "
            "as applied there",
            "Point --migrations-dir (or POSTSTACK_MIGRATIONS_DIR) at the project's migrations.",
        )
    if readiness.risks:  # found only half-way through a run otherwise, poststack's record gone
        raise OwnTablesAtRisk(readiness.risks)
    if readiness.holds:
        raise MigrationsHeld(readiness)
    steps: list[PlannedStep] = []
    notes: list[str] = []
    if not observed.complete:
        steps.append(get_action("create_tracking").step(ctx, {}))

    for migration in migrations.migrations:
        row = observed.applied.get(migration.key)
        if migration.key.is_repeatable:
            continue  # a changed repeatable is run again, as Flyway runs it: not an edit
        if row is not None and row.checksum and row.checksum != migration.file.checksum_as(row.checksum_algorithm):
            notes.append(
                f"Migration {migration.version} was edited after it was applied "
                f"(checksum {row.checksum[:8]} tracked, {migration.checksum[:8]} on disk); "
                "see poststack db diagnose --type checksum_mismatch"
            )
    newest_applied = max((k for k in observed.applied if not k.is_repeatable), default=None)
    for item in readiness.runnable:
        migration = item.migration
        if newest_applied is not None and migration.key < newest_applied:
            notes.append(
                f"Migration {migration.version} is applied out of order "
                f"(migration {observed.applied[newest_applied].version} is already applied; --allow-out-of-order)"
            )
        arguments = {"version": migration.version, "retry": item.retry, "reapply": item.reapply}
        steps.append(get_action("apply_migration").step(ctx, arguments))
    # beforeMigrate first, before the tracking tables are made, as in Flyway; and on every run.
    steps = with_run_callbacks(ctx, steps, every_run=True, first=0)
    ignored = [c.name for c in migrations.callbacks if not c.runs]
    if ignored:
        notes.append(f"Flyway callbacks poststack does not run (events it has no equivalent of): {', '.join(ignored)}")

    reason = None
    if not any(s.action == "apply_migration" for s in steps):
        reason = "Database is up to date" if limit is None else f"Database is already at or past {target}"
    return Plan("migrate", observed.location, observed.fingerprint, tuple(steps), reason, tuple(notes))


class MigrationsHeld(OperationFailed):
    """Pending migrations that may already have run, or must not run yet: nothing runs."""

    def __init__(self, readiness: Readiness) -> None:
        first = readiness.holds[0]
        others = [h.version for h in readiness.holds[1:]]
        detail = first.remedy
        if others:
            detail += f" Also held: {_listing(others)}."
        if readiness.waiting:
            detail += f" Waiting behind them: {_listing(list(readiness.waiting))}."
        super().__init__(f"Nothing was run. {first.reason}.", detail)
        self.readiness = readiness

    @property
    def versions(self) -> tuple[str, ...]:
        """The held migrations, in order."""
        return tuple(h.version for h in self.readiness.holds)


def _listing(versions: list[str], most: int = 6) -> str:
    if len(versions) <= most:
        return ", ".join(versions)
    return f"{', '.join(versions[:3])} … {', '.join(versions[-2:])} ({len(versions)} in all)"


def rollback_plan(migrations: MigrationSet, observed: ObservedTracking, target: str) -> Plan:
    """Undo every applied migration above ``target``, newest first. Refuses the whole plan
    if any of them has no rollback file. Pure."""
    limit = parse_version(target)
    known = {m.key for m in migrations.migrations} | set(observed.applied)
    if limit != VersionKey((0,)) and limit not in known:  # 0: roll everything back
        raise UsageError(
            f"no migration {target} in {migrations.directory} or in the tracking table",
            "Name an existing version to roll back to: every applied migration above it is undone.",
        )
    ctx = BuildContext(observed.location, migrations, recorded=tuple(row.version for row in observed.rows))
    by_key = migrations.by_key()
    # Repeatables are not undone (Flyway has no undo for them either): they stay applied.
    to_undo = sorted((n for n in observed.applied if n > limit and not n.is_repeatable), reverse=True)
    no_file = [observed.applied[n].version for n in sorted(to_undo) if n not in by_key]
    if no_file:
        raise OperationFailed(
            f"Rollback failed: Migration {no_file[0]} is tracked but its file is missing",
            f"Tracked without a file: {', '.join(no_file)}. Nothing was rolled back.",
        )
    no_rollback = [observed.applied[n].version for n in sorted(to_undo) if by_key[n].rollback is None]
    if no_rollback:
        layout = layout_named(migrations.layout)
        why = (
            f"{layout.tool} writes no down migrations: undo it with a new migration instead"
            if layout.rollback_file is None
            else f"Missing rollback files for migrations: {', '.join(no_rollback)}"
        )
        raise OperationFailed(
            f"Rollback failed: Migration {no_rollback[0]} has no rollback file",
            f"{why}. Nothing was rolled back.",
        )
    undo = [get_action("rollback_migration").step(ctx, {"version": by_key[n].version}) for n in to_undo]
    # Flyway's undo callbacks, around the undo files, when there is anything to undo.
    steps = tuple([*callback_steps(ctx, BEFORE_UNDO), *undo, *callback_steps(ctx, AFTER_UNDO)] if undo else [])
    reason = None if steps else f"Nothing to roll back: no applied migration above {target}"
    return Plan("rollback", observed.location, observed.fingerprint, steps, reason)


def _target_number(migrations: MigrationSet, target: str) -> VersionKey:
    if migrations.find(target) is None:
        raise UsageError(f"--target {target}: no migration {target} in {migrations.directory}")
    return parse_version(target)


def ensure_tracking(session: Session, settings: Settings, migrations: MigrationSet) -> None:
    """Create the tracking tables when absent (under the advisory lock, by the executor)."""
    observed = observe_tracking(session, settings.tracking)
    if observed.complete:
        return
    result = executor.execute(session, _create_tracking_plan(settings, migrations, observed))
    if result.failure:
        if result.failure.sqlstate == INSUFFICIENT_PRIVILEGE:
            raise DatabaseUnavailable(
                f"cannot create the tracking tables in schema {settings.tracking_schema}: {result.failure.message}",
                f"Grant the role CREATE on schema {settings.tracking_schema}, or point --schema at a schema it owns.",
            )
        raise OperationFailed(f"cannot create the tracking tables: {result.failure.message}")


def _create_tracking_plan(settings: Settings, migrations: MigrationSet, observed: ObservedTracking) -> Plan:
    ctx = BuildContext(settings.tracking, migrations)
    return Plan(
        "create-schema", settings.tracking, observed.fingerprint, (get_action("create_tracking").step(ctx, {}),)
    )


@dataclass(frozen=True)
class Looked:
    """What a look found: tracking, and which pending migrations may run."""

    tracking: ObservedTracking
    readiness: Readiness
    audit_seen: int | None = None  # the audit's newest row id when the catalog was read too; None: it was not


def look(
    session: Session,
    settings: Settings,
    migrations: MigrationSet,
    target: str | None,
    allow: Allowances,
    tracking: ObservedTracking | None = None,
) -> Looked:
    """Which pending migrations may run: from tracking alone when nothing is pending, else
    from one read of tracking and catalog together, in diagnose's constant number of queries."""
    tracking = tracking if tracking is not None else observe_tracking(session, settings.tracking)
    limit = _target_number(migrations, target) if target is not None else None
    if all(m.key in tracking.applied or (limit is not None and m.key > limit) for m in migrations.migrations):
        return Looked(tracking, decide(migrations, tracking, {}, None, None, allow, limit))
    desired, observed = read_state_of(session, migrations, settings.tracking, definitions=False)
    attributions = attribute_unapplied(
        migrations.migrations,
        observed.tracking.applied,
        desired.history,
        observed.catalog,
        observed.verify,
        observed.audited,
    )
    readiness = decide(
        migrations,
        observed.tracking,
        attributions,
        desired.history,
        observed.catalog,
        allow,
        limit,
        audited=observed.audited,
    )
    return Looked(observed.tracking, readiness, observed.audit_seen)


def look_again(
    session: Session,
    settings: Settings,
    migrations: MigrationSet,
    target: str | None,
    allow: Allowances,
    earlier: Looked,
    *,
    untouched: bool,
) -> Looked:
    """The look taken again once the migration lock is held. Tracking is always read again.
    The catalog's evidence is read again unless nothing that takes this lock can have changed
    the database since ``earlier``: ``untouched`` (the lock was had without waiting for
    another run, and no run audited anything in between: every poststack run that changes a
    database audits it) and the same tracking rows. A change made by hand, without the lock,
    may come just after a look under the lock as well as just before it: reading the catalog
    again would not keep it out."""
    now = observe_tracking(session, settings.tracking)
    if untouched and earlier.audit_seen is not None and now.rows == earlier.tracking.rows:
        return Looked(now, earlier.readiness, earlier.audit_seen)
    return look(session, settings, migrations, target, allow, tracking=now)


def migrate(
    session: Session,
    settings: Settings,
    migrations: MigrationSet,
    *,
    target: str | None = None,
    dry_run: bool = False,
    allow: Allowances = NOTHING_ALLOWED,
    on_step: executor.StepCallback | None = None,
    on_lock_wait: executor.LockWaitCallback | None = None,
) -> RunResult:
    # Planning from a read-only look first parses every pending file and reads the catalog,
    # so a bad file or a migration that may have run already is refused before anything
    # (even the tracking tables) is written.
    earlier = look(session, settings, migrations, target, allow)
    tracking, readiness = earlier.tracking, earlier.readiness
    locked = tracking.lock is not None and tracking.lock.locked
    if dry_run or readiness.risks or not (readiness.holds and locked):
        plan = migrate_plan(migrations, tracking, readiness, target, ddl_lock_timeout=settings.ddl_lock_timeout)
    # Held while the migration lock is taken: a live run may be half-way through a migration
    # outside a transaction, and a dead one explains itself first (the lock says it stopped
    # mid-way). Either way the lock decides first; the evidence is read again under it.
    if dry_run:
        return RunResult("migrate", plan, None, True, session.database_ref)
    if not session.pooling.keeps_session:
        return _migrate_per_transaction(
            session, settings, migrations, tracking, readiness, target, allow, on_step, on_lock_wait
        )
    audited: list[bool] = []

    def prepare() -> None:
        # Asked once the lock is held and before this run writes anything (the tracking
        # tables and their audit row): whether any run audited a change since the first look.
        audited.append(audited_after(session, settings.tracking, earlier.audit_seen))
        ensure_tracking(session, settings, migrations)

    with locking.migration_lock(
        session, settings.tracking, settings.lock_timeout, prepare, command=MIGRATE_COMMAND
    ) as held:
        # Looked at again under the lock: a concurrent run's work, or a migration applied by
        # hand while this one waited, is seen, never repeated.
        untouched = not held.waited and audited == [False]
        now = look_again(session, settings, migrations, target, allow, earlier, untouched=untouched)
        plan = migrate_plan(migrations, now.tracking, now.readiness, target, ddl_lock_timeout=settings.ddl_lock_timeout)
        execution = executor.execute(
            session, plan, on_step, lock_retries=settings.ddl_lock_retries, on_lock_wait=on_lock_wait
        )
    return RunResult("migrate", plan, execution, False, session.database_ref)


def _migrate_per_transaction(
    session: Session,
    settings: Settings,
    migrations: MigrationSet,
    observed: ObservedTracking,
    readiness: Readiness,
    target: str | None,
    allow: Allowances,
    on_step: executor.StepCallback | None,
    on_lock_wait: executor.LockWaitCallback | None,
) -> RunResult:
    """migrate through transaction pooling (docs/poolers.md), where no session-level lock
    holds: the plan made from the look, each of its transactions taking the lock's key for
    itself and each migration checked under it (executor.PerTransactionLock), so a migration a
    concurrent run applied meanwhile is skipped and none runs twice. What cannot run in a
    transaction is refused before anything runs."""
    if readiness.holds and observed.lock is not None and observed.lock.locked:
        # Held while another run holds the lock (a direct one, part-way through a migration):
        # wait for it as a direct run would, then look again.
        locking.lock_transaction(session, settings.tracking, settings.lock_timeout)
        session.rollback()
        again = look(session, settings, migrations, target, allow)
        observed, readiness = again.tracking, again.readiness
    plan = migrate_plan(migrations, observed, readiness, target, ddl_lock_timeout=settings.ddl_lock_timeout)
    ctx = BuildContext(observed.location, migrations, recorded=tuple(row.version for row in observed.rows))
    guards = {}
    for index, step in enumerate(plan.steps, start=1):
        migration = migrations.find(step.version) if step.action == "apply_migration" and step.version else None
        if migration is not None:
            guards[index] = executor.VersionGuard(
                migration.version,
                tuple(ctx.spellings(migration.version)),
                migration.checksum,
                migration.key.is_repeatable,
                bool(step.args.get("retry")),
            )
    execution = executor.execute(
        session,
        plan,
        on_step,
        lock_retries=settings.ddl_lock_retries,
        on_lock_wait=on_lock_wait,
        per_transaction=executor.PerTransactionLock(settings.lock_timeout, guards),
    )
    return RunResult("migrate", plan, execution, False, session.database_ref)


def rollback(
    session: Session,
    settings: Settings,
    migrations: MigrationSet,
    target: str,
    *,
    dry_run: bool = False,
    on_step: executor.StepCallback | None = None,
) -> RunResult:
    location = settings.tracking
    if dry_run:
        plan = rollback_plan(migrations, observe_tracking(session, location), target)
        return RunResult("rollback", plan, None, True, session.database_ref)
    observed = observe_tracking(session, location)
    if not observed.exists:
        plan = rollback_plan(migrations, observed, target)  # nothing applied: a plan with no steps
        return RunResult("rollback", plan, None, False, session.database_ref)
    with locking.migration_lock(
        session,
        location,
        settings.lock_timeout,
        lambda: ensure_tracking(session, settings, migrations),
        command="db rollback",
    ):
        plan = rollback_plan(migrations, observe_tracking(session, location), target)
        execution = executor.execute(session, plan, on_step)
    return RunResult("rollback", plan, execution, False, session.database_ref)


# --- offline: the run as one psql script (db migrate --dry-run --format sql) -------------------


@dataclass(frozen=True)
class ScriptStep:
    """One step of an offline script: what the executor would send, parameters bound."""

    index: int  # 1-based, in its plan
    reason: str
    transactional: bool
    no_transaction_reason: str | None
    body: tuple[str, ...]  # BEGIN first when it opens its transaction
    record: tuple[str, ...]  # session reset, bookkeeping, audit row, COMMIT


@dataclass(frozen=True)
class OfflineScript:
    """Everything migrate (or rollback) would send to run ``plan``, for psql to run later: the
    lock taken as a run takes it, the tables created as a run creates them, then the steps
    with the rows they write. Empty ``steps`` and ``prepare``: a no-op script."""

    operation: str  # migrate, rollback
    database: DatabaseRef
    plan: Plan  # the plan the run would make under the lock (its hash is in the audit rows)
    mark_start: str  # SQL psql runs before each step, keeping its result (\gset): the step's start
    acquire: tuple[str, ...]  # the advisory lock, then the check that tracking is as it was
    prepare: tuple[ScriptStep, ...]  # the tracking tables, when absent (a create-schema plan)
    take: tuple[str, ...]  # the lock row: refused when set, then taken
    steps: tuple[ScriptStep, ...]
    release: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.steps and not self.prepare


def migrate_script(
    session: Session,
    settings: Settings,
    migrations: MigrationSet,
    *,
    target: str | None = None,
    allow: Allowances = NOTHING_ALLOWED,
) -> OfflineScript:
    """migrate as a script: the plan migrate would make under the lock, from one read-only look."""
    looked = look(session, settings, migrations, target, allow)
    observed, readiness = looked.tracking, looked.readiness
    prepare = None if observed.complete else _create_tracking_plan(settings, migrations, observed)
    plan = migrate_plan(
        migrations, _as_under_lock(observed), readiness, target, ddl_lock_timeout=settings.ddl_lock_timeout
    )
    # What may have been run by hand since: the verify scripts of what it runs, asked again.
    again = _write_again("migrate")
    running = [migrations.find(s.version) for s in plan.steps if s.action == "apply_migration" and s.version]
    checks = tuple(still_unapplied_statement(m.version, m.verify.text, again) for m in running if m and m.verify)
    return _script(session, "migrate", plan, prepare, observed, checks)


def rollback_script(session: Session, settings: Settings, migrations: MigrationSet, target: str) -> OfflineScript:
    """rollback as a script: with no tracking table there is nothing to roll back (a no-op)."""
    observed = observe_tracking(session, settings.tracking)
    if not observed.exists:
        return _script(session, "rollback", rollback_plan(migrations, observed, target), None, observed)
    prepare = None if observed.complete else _create_tracking_plan(settings, migrations, observed)
    plan = rollback_plan(migrations, _as_under_lock(observed), target)
    return _script(session, "rollback", plan, prepare, observed)


def _as_under_lock(observed: ObservedTracking) -> ObservedTracking:
    """Tracking as a run sees it once it holds the lock: the tables there, the lock row taken.
    The plan made from it is the run's own, down to its hash."""
    lock = observed.lock or LockState(False, None, None, None, None, None, False)
    return replace(observed, tables=frozenset(observed.location.tables), lock=replace(lock, locked=True))


def _script(
    session: Session,
    operation: str,
    plan: Plan,
    prepare: Plan | None,
    observed: ObservedTracking,
    checks: tuple[Statement, ...] = (),
) -> OfflineScript:
    location = plan.tracking
    who = AsIs(tracking.OFFLINE_HOLDER_SQL)
    runtime = {"execution_ms": AsIs(tracking.OFFLINE_EXECUTION_MS_SQL), "error": None}
    bind = session.bind

    def steps(of: Plan | None) -> tuple[ScriptStep, ...]:
        if of is None:
            return ()
        out = []
        for item in executor.offline(of, who, runtime):
            for statement in item.step.statements:
                _refuse_psql_hazards(statement)
            out.append(
                ScriptStep(
                    item.index,
                    item.step.reason,
                    item.step.transactional,
                    item.step.no_transaction_reason,
                    tuple(bind(s) for s in item.body),
                    tuple(bind(s) for s in item.record),
                )
            )
        return tuple(out)

    from reconciler.desired.replay.snapshot import read_catalog_digest, unchanged_catalog_statement

    again = _write_again(operation)
    digest = tracking.read_rows_digest(session, location, observed.exists)
    catalog = read_catalog_digest(session, location)
    acquire = [
        locking.offline_acquire_statement(location),
        tracking.unchanged_rows_statement(location, digest, again),
        unchanged_catalog_statement(location, catalog, again),
        *checks,
    ]
    return OfflineScript(
        operation=operation,
        database=session.database_ref,
        plan=plan,
        mark_start=tracking.OFFLINE_MARK_START_SQL,
        acquire=tuple(bind(s) for s in acquire),
        prepare=steps(prepare),
        take=tuple(bind(s) for s in locking.offline_take_row_statements(location, who)),
        steps=steps(plan),
        release=tuple(bind(s) for s in locking.offline_release_statements(location)),
    )


def _write_again(operation: str) -> str:
    """The hint of a script's refusal: what to run for a script of the database as it is now."""
    return f"Write it again: poststack db {operation} --dry-run --format sql"


def _refuse_psql_hazards(statement: Statement) -> None:
    """A statement psql would change on its way to the server cannot go in the script."""
    found = psql.hazards(statement.sql)
    if not found:
        return
    first = found[0]
    line = (statement.line or 1) + statement.sql.count("\n", 0, first.offset)
    where = f"{statement.source}:{line}" if statement.source else f"line {line}"
    raise UsageError(
        f"{where}: {first.describe()}; it cannot be written into a psql script as it is",
        "Run it with poststack db migrate, or change the text (for an array slice, a space after the colon).",
    )
