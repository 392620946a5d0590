"""The one execution path: run a plan's steps in order, recording each in the audit table
inside the transaction that does its work.

Steps run in the transactions ``Plan.transactions()`` says: one per step for migrate and
rollback, consecutive steps together for remediation plans; a step PostgreSQL refuses in a
transaction runs on its own. A failure rolls back the unfinished transaction, is recorded
(tracking row, audit row), and stops the run: what committed before it stays. A stop signal
(SIGINT, SIGTERM: see interrupts.py) cancels the running statement and ends the run the
same way, raising Interrupted: what it kept is said, never guessed.

A migration's lock_timeout (PlannedStep.lock_timeout) that fires (SQLSTATE 55P03) in a
transaction has rolled that transaction back, so the transaction's steps are tried again,
up to ``lock_retries`` times, waiting longer each time, and each wait names the sessions
holding locks on what the statement names (observed/blockers.py). Nothing else is ever run
twice: a step outside a transaction may have kept statements before the one that timed out
(or, a concurrent index build, an INVALID index), so it fails as any failure does.

Through transaction pooling (docs/poolers.md) a run holds no session-level lock: each of its
transactions takes the lock's key for itself (PerTransactionLock), and a migration's then
reads its tracking rows again, so one another run applied meanwhile is skipped, never applied
twice. A step that cannot run in a transaction is refused before anything runs.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2

from reconciler.db import (
    BATCH_SEPARATOR,
    RESET_SESSION_SQL,
    Session,
    host_pid,
    is_connection_lost,
    server_error_text,
    sqlstate,
)
from reconciler.desired.script import relations_named, requested_lock, sets_setting
from reconciler.errors import (
    BETWEEN_STEPS,
    COMMIT_UNKNOWN,
    COMMITTED,
    CONNECTION_CLOSED,
    HALF_DONE,
    ROLLED_BACK,
    DatabaseUnavailable,
    Interrupted,
    Interruption,
    LockTimeout,
    OperationFailed,
)
from reconciler.interrupts import Signalled, signal_name
from reconciler.observed import blockers, locking, tracking
from reconciler.observed.blockers import LockHolder
from reconciler.remediation.actions import Action, RunContext, StepError, get_action
from reconciler.remediation.plan import Plan, PlannedStep
from reconciler.statements import Statement

RESET_SESSION = Statement(RESET_SESSION_SQL, None)
BEGIN = Statement("BEGIN", None)
COMMIT = Statement("COMMIT", None)
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout fired (or a NOWAIT lock was refused)
MAX_LOCK_BACKOFF_S = 60.0


def lock_backoff(timeout_s: float, attempt: int) -> float:
    """Seconds to wait after try ``attempt`` (from 1) of a step timed out waiting for a lock:
    its lock_timeout, doubled at each try, at most a minute."""
    return min(timeout_s * 2 ** (attempt - 1), MAX_LOCK_BACKOFF_S)


@dataclass(frozen=True)
class LockWait:
    """A statement of step ``step`` gave up waiting for a lock (SQLSTATE 55P03): what it
    named, who held locks on that, and what happens next. Its transaction, if it ran in
    one, was rolled back before anything else was asked."""

    step: int  # 1-based
    action: str
    version: str | None
    location: str | None  # file:line of the statement that timed out, when known
    lock_timeout: float | None  # seconds poststack set for the step; None: it set none
    own_timeout: bool  # a statement before it in the step (the file, a callback) set lock_timeout itself
    transactional: bool  # False: the statements before it were kept, so it is not tried again
    relations: tuple[str, ...]  # the relations the statement names, schema-qualified, that exist
    holders: tuple[LockHolder, ...]  # other sessions holding granted locks on them
    attempt: int  # the try that timed out, from 1
    tries: int  # tries it may have in all: 1 + lock_retries; 1 when it is not tried again
    retry_in_s: float | None  # seconds until the next try; None: no more (the step failed)


LockWaitCallback = Callable[[LockWait], None]


@dataclass(frozen=True)
class VersionGuard:
    """What a migration's transaction reads under the lock through transaction pooling: its
    rows, by every spelling of its version, against what the plan was made from."""

    version: str
    spellings: tuple[str, ...]
    checksum: str  # the file's: a repeatable whose latest row has it was applied meanwhile
    repeatable: bool
    retry: bool  # the plan retries failed attempts: their rows were there already


@dataclass(frozen=True)
class PerTransactionLock:
    """Through transaction pooling: each transaction of the run takes the migration lock's
    key for itself (locking.lock_transaction, waiting up to ``timeout_s``), and the migration
    of step i (1-based) checks ``guards[i]`` under it."""

    timeout_s: float
    guards: Mapping[int, VersionGuard] = field(default_factory=dict)


SKIPPED = "skipped"  # through transaction pooling: another run applied it while this one waited


@dataclass(frozen=True)
class StepOutcome:
    index: int  # 1-based
    action: str
    version: str | None
    ok: bool
    elapsed_ms: int
    error: str | None = None
    outcome: str = "ok"  # ok, failed, rolled back, manual, skipped
    lock_retries: int = 0  # tries after the first, its lock_timeout having fired in the ones before


@dataclass(frozen=True)
class Failure:
    step: int
    action: str
    version: str | None
    message: str  # the server's error
    location: str | None  # file:line of the failing statement, when known
    sqlstate: str | None = None
    recorded: bool = True  # its failed tracking row was written (False: the tables were gone too)
    lock_wait: LockWait | None = None  # it gave up waiting for a lock: who held it, how many tries

    def __str__(self) -> str:
        """One line: ``migration 007 failed at migrations/007_x.sql:3: <the server's error>``."""
        what = f"migration {self.version}" if self.version else f"step {self.step} ({self.action})"
        where = f" at {self.location}" if self.location else ""
        return f"{what} failed{where}: {self.message}"


@dataclass(frozen=True)
class ExecutionResult:
    plan: Plan
    outcomes: tuple[StepOutcome, ...]
    failure: Failure | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def done(self) -> tuple[StepOutcome, ...]:
        return tuple(o for o in self.outcomes if o.ok)


@dataclass
class _Context:
    session: Session
    plan: Plan
    migrations_dir: Path | None
    layout: str | None = None
    shadow: Any = None
    who: str = field(default_factory=host_pid)
    started: datetime | None = None  # the server's clock when the run began
    lock_retries: int = 0  # how many times a transaction its lock_timeout rolled back is tried again
    attempt: int = 1  # the try of the running transaction, from 1
    per_transaction: PerTransactionLock | None = None  # through transaction pooling

    @property
    def run(self) -> RunContext:
        return RunContext(self.session, self.plan.tracking, self.migrations_dir, self.layout, self.shadow)


StepCallback = Callable[[int, PlannedStep], None]


class _StepFailed(Exception):
    def __init__(self, failure: Failure, outcome: StepOutcome) -> None:
        self.failure = failure
        self.outcome = outcome


class _LockTimedOut(Exception):
    """A lock_timeout rolled the step's transaction back, and it is to be tried again."""

    def __init__(self, wait: LockWait) -> None:
        self.wait = wait


class _StepInterrupted(Exception):
    """A stop signal ended step ``index`` (0: none was running); ``kept`` says what of it
    stays (errors.py)."""

    def __init__(self, index: int, signum: int, kept: str, recorded: bool = False) -> None:
        self.index = index
        self.signum = signum
        self.kept = kept
        self.recorded = recorded


@dataclass
class _Progress:
    """How far a run got, for the report of an interrupted one."""

    committed: list[StepOutcome] = field(default_factory=list)
    open: list[StepOutcome] = field(default_factory=list)  # done in the transaction still open
    current: int | None = None  # the step running now (1-based)


def execute(
    session: Session,
    plan: Plan,
    on_step: StepCallback | None = None,
    migrations_dir: Path | None = None,
    layout: str | None = None,
    shadow: Any = None,
    *,
    lock_retries: int = 0,
    on_lock_wait: LockWaitCallback | None = None,
    per_transaction: PerTransactionLock | None = None,
) -> ExecutionResult:
    """Run ``plan`` on ``session``. The caller holds the migration lock, or passes
    ``per_transaction``: each transaction takes it. A stop signal raises
    Interrupted, once the open transaction is rolled back and the step recorded as
    interrupted. ``shadow``: how a re-diagnosing step replays (ShadowSettings), if at all.
    ``lock_retries``: how many more tries a transaction its step's lock_timeout rolled back
    gets; ``on_lock_wait`` is told before each wait."""
    if per_transaction is not None:
        refuse_outside_transactions(session, plan)
    ctx = _Context(session, plan, migrations_dir, layout, shadow, lock_retries=lock_retries)
    ctx.per_transaction = per_transaction
    progress = _Progress()
    try:
        return _execute(ctx, progress, on_step, on_lock_wait)
    except _StepInterrupted as stopped:
        raise Interrupted(_interruption(ctx, progress, stopped)) from stopped.__cause__
    except KeyboardInterrupt as e:
        # Outside a step's own handling (before it, between two, or while recording a
        # failure): roll back what is open; the step, if any, is not recorded.
        raise Interrupted(_interruption(ctx, progress, _outside_step(ctx, progress, e))) from e


def _execute(
    ctx: _Context, progress: _Progress, on_step: StepCallback | None, on_lock_wait: LockWaitCallback | None
) -> ExecutionResult:
    session, plan = ctx.session, ctx.plan
    # The server's clock at the start: this run's audit rows are the ones written after it
    # (the same plan, from the same host:pid, may have run before).
    started_row = session.query_one("SELECT clock_timestamp()")
    ctx.started = started_row[0] if started_row else None
    outcomes = progress.committed
    started = time.monotonic()
    for group in plan.transactions():
        transactional = plan.steps[group[0]].transactional
        ctx.attempt = 1
        while True:
            in_group: list[StepOutcome] = []
            progress.open = in_group
            try:
                began = False
                if ctx.per_transaction is not None:
                    began = True
                    skipped = _lock_transaction(ctx, group)
                    if skipped is not None:
                        in_group.append(skipped)
                        break
                for position, index in enumerate(group):
                    step = plan.steps[index]
                    progress.current = index + 1
                    if on_step and ctx.attempt == 1:
                        on_step(index + 1, step)
                    opens = transactional and position == 0 and not began
                    closes = transactional and position == len(group) - 1
                    in_group.append(_run_step(ctx, index + 1, step, opens=opens, closes=closes))
                    progress.current = None
            except _LockTimedOut as timed_out:
                # The whole transaction was rolled back, the group's earlier steps with it:
                # nothing of it stays, so it runs again from its first step, once the wait is over.
                progress.open = []
                if on_lock_wait:
                    on_lock_wait(timed_out.wait)
                time.sleep(timed_out.wait.retry_in_s or 0)
                ctx.attempt += 1
                continue
            except _StepFailed as failed:
                # The failed step's transaction is gone: the steps that shared it were undone.
                undone = [
                    replace(o, ok=False, outcome="rolled back", error=f"undone with step {failed.failure.step}")
                    for o in in_group
                ]
                outcomes += [*undone, failed.outcome]
                return ExecutionResult(plan, tuple(outcomes), failed.failure, time.monotonic() - started)
            break
        outcomes += in_group
        progress.open = []
    return ExecutionResult(plan, tuple(outcomes), None, time.monotonic() - started)


def refuse_outside_transactions(session: Session, plan: Plan) -> None:
    """Through transaction pooling every step runs in a transaction holding the lock's key:
    one PostgreSQL refuses in a transaction (CREATE INDEX CONCURRENTLY, VACUUM, a file's own
    BEGIN/COMMIT) would run between transactions, unlocked, and its session SET lock_timeout
    could reach another client of the pool. Refused before anything runs, naming the file."""
    for step in plan.steps:
        if step.transactional:
            continue
        source = next((s.source for s in step.statements if s.source and Path(s.source).name in step.reason), None)
        what = source or (f"migration {step.version}" if step.version else step.reason)
        raise DatabaseUnavailable(
            f"{what} cannot run in a transaction ({step.no_transaction_reason or 'it runs outside one'}), "
            f"and through {session.pooling.describe()} poststack runs every step in one: nothing was run",
            "Run it through a direct or session-pooled connection (docs/poolers.md).",
        )


def _lock_transaction(ctx: _Context, group: list[int]) -> StepOutcome | None:
    """Through transaction pooling: BEGIN the group's transaction holding the lock's key, and
    check its migration's rows under it. A StepOutcome (the transaction rolled back) when
    another run applied it meanwhile; an error when the row says a run stopped mid-way, or
    another run's attempt at it failed since this run's plan was made."""
    assert ctx.per_transaction is not None
    session, location = ctx.session, ctx.plan.tracking
    t0 = time.monotonic()
    locking.lock_transaction(session, location, ctx.per_transaction.timeout_s)
    index = group[0] + 1
    guard = ctx.per_transaction.guards.get(index)
    if guard is None:
        return None
    now = tracking.read_version_now(session, location, guard.spellings)
    if now.lock_set:
        # Set while its key is free: a run that stopped (the advisory lock went with its
        # session, the row stayed), perhaps mid-way through a migration outside a transaction.
        state = tracking.read_lock(session, location)
        session.rollback()
        raise locking.row_locked(state)
    if _applied(guard, now):
        session.rollback()
        step = ctx.plan.steps[group[0]]
        return StepOutcome(index, step.action, step.version, True, _ms_since(t0), None, SKIPPED)
    if now.failed and not guard.retry:
        session.rollback()
        raise OperationFailed(
            f"Migration {guard.version} was not run: another run's attempt at it failed while this one waited",
            "What this run applied before it is kept. See poststack db diagnose, then run poststack db migrate again.",
        )
    return None


def _applied(guard: VersionGuard, now: tracking.VersionNow) -> bool:
    """Applied since the plan was made: a successful row (a repeatable's latest with this checksum)."""
    return now.last_checksum == guard.checksum if guard.repeatable else now.applied > 0


@dataclass(frozen=True)
class OfflineStep:
    """One step as execute() sends it when it succeeds: its body (BEGIN first when it opens
    its transaction) and what records it (reset, bookkeeping, audit row, COMMIT)."""

    index: int  # 1-based
    step: PlannedStep
    body: tuple[Statement, ...]
    record: tuple[Statement, ...]


def offline(plan: Plan, who: Any, runtime: dict[str, object]) -> list[OfflineStep]:
    """The statements execute() would send for ``plan`` if every step succeeded, in its
    transactions, for a script another client runs (db migrate --dry-run --format sql).
    ``who`` and ``runtime`` stand for what a run knows only as it runs (its host:pid, the
    measured execution time): values or SQL expressions. A step whose action runs its body
    itself (a backup, an assertion) has no statements to write: refused."""
    steps: list[OfflineStep] = []
    for group in plan.transactions():
        transactional = plan.steps[group[0]].transactional
        for position, index in enumerate(group):
            step = plan.steps[index]
            if type(get_action(step.action)).run_body is not Action.run_body:
                raise OperationFailed(
                    f"step {index + 1} ({step.reason}) runs a program or a check, not statements: "
                    "it cannot be written as SQL"
                )
            opens = transactional and position == 0
            closes = transactional and position == len(group) - 1
            commits = closes or not step.transactional
            body = ([BEGIN] if opens else []) + list(step.statements)
            record = _record(plan, who, index + 1, step, runtime, [RESET_SESSION], commits=commits)
            steps.append(OfflineStep(index + 1, step, tuple(body), tuple(record)))
    return steps


def _outside_step(ctx: _Context, progress: _Progress, e: KeyboardInterrupt) -> _StepInterrupted:
    """A stop signal outside a step's own handling: roll back whatever is open."""
    session = ctx.session
    signum = e.signum if isinstance(e, Signalled) else signal.SIGINT
    index = progress.current or 0
    if session.conn.closed:
        return _StepInterrupted(index, signum, CONNECTION_CLOSED)
    was_open = session.in_transaction
    session.rollback()  # a group's transaction may be open between its steps
    if not was_open:  # what the group did had committed
        progress.committed += [o for o in progress.open if o not in progress.committed]
        progress.open = []
    if not index:
        return _StepInterrupted(0, signum, BETWEEN_STEPS)
    step = ctx.plan.steps[index - 1]
    return _StepInterrupted(index, signum, ROLLED_BACK if step.transactional or was_open else HALF_DONE)


def _interruption(ctx: _Context, progress: _Progress, stopped: _StepInterrupted) -> Interruption:
    """What an interrupted run kept, as data for the report."""
    step = ctx.plan.steps[stopped.index - 1] if stopped.index else None
    committed = stopped.kept == COMMITTED  # the open transaction committed with the step
    done = [(o.index, o.action, o.version) for o in (*progress.committed, *(progress.open if committed else ()))]
    if step is not None and committed:
        done.append((stopped.index, step.action, step.version))
    undone = () if committed or stopped.kept == HALF_DONE else tuple(o.index for o in progress.open)
    return Interruption(
        signal=signal_name(stopped.signum),
        signum=stopped.signum,
        operation=ctx.plan.operation,
        kept=stopped.kept,
        step=stopped.index or None,
        action=step.action if step else None,
        version=step.version if step else None,
        source=next((s.source for s in step.statements if s.source), None) if step else None,
        reason=step.reason if step else None,
        transactional=step.transactional if step else True,
        undone=undone,
        done=tuple(done),
        recorded=stopped.recorded,
        database=ctx.session.database_ref,
    )


def _run_step(ctx: _Context, index: int, step: PlannedStep, *, opens: bool, closes: bool) -> StepOutcome:
    """Run one step inside its group's transaction (or on its own, when it cannot be in one).
    ``opens``/``closes``: the step begins/commits the group's transaction.

    Round trips are the cost of a long history: BEGIN travels with the step's first
    statement, and the bookkeeping, audit row and COMMIT go together in one send."""
    session = ctx.session
    action = get_action(step.action)
    t0 = time.monotonic()
    current: list[tuple[Statement, int]] = []  # the statement being run, and where it starts in what was sent
    opening = [BEGIN] if opens else []
    commits = closes or not step.transactional
    committing = False  # the send that ends in COMMIT went out: from then on only the database knows
    try:
        if type(action).run_body is Action.run_body:  # the body is its statements: send them
            statements = list(step.statements)
            if step.lock_timeout is not None and step.transactional and len(statements) > 1:
                # Its SET LOCAL lock_timeout travels with the first statement too. (Outside a
                # transaction, a send of several statements would make one: not there.)
                opening.append(statements.pop(0))
            for statement in statements:
                current[:] = [(statement, _sent_length(session, opening))]
                session.run_batch([*opening, statement])
                opening = []
        else:  # backup, assert, manual: the action runs its body itself
            if opening:
                session.begin()
                opening = []
            action.run_body(ctx.run, step, lambda s: current.__setitem__(slice(None), [(s, 0)]))
        current.clear()
        runtime = {"execution_ms": _ms_since(t0), "error": None}
        tail = [*opening, *_record(ctx.plan, ctx.who, index, step, runtime, _reset(session), commits=commits)]
        outcome = "manual" if step.action == "manual" else "ok"
        committing = commits
        session.run_batch(tail, cancellable=not commits)
        return StepOutcome(index, step.action, step.version, True, _ms_since(t0), None, outcome, ctx.attempt - 1)
    except (psycopg2.Error, StepError) as e:
        lost = isinstance(e, psycopg2.Error) and (is_connection_lost(e) or session.conn.closed)
        # An error the server sent means the COMMIT did not happen; only a lost answer is a question.
        committed = _committed(ctx, index, step) if committing and lost else False
        if committed:
            # The COMMIT went through and only its answer was lost: the step is done.
            raise DatabaseUnavailable(
                f"lost the connection to the database just after step {index} ({step.reason}) committed: "
                f"{server_error_text(e) if isinstance(e, psycopg2.Error) else e}",
                "It is recorded as done; run poststack db migration-status to see where things stand.",
            ) from e
        session.rollback()
        if lost:
            _connection_lost(ctx, index, step, e, t0, unknown=committed is None)
        message = server_error_text(e) if isinstance(e, psycopg2.Error) else str(e)
        location = _location(*current[0], e) if current and isinstance(e, psycopg2.Error) else None
        wait = None
        if current and sqlstate(e) == LOCK_NOT_AVAILABLE:
            wait = _lock_wait(ctx, index, step, current[0][0], location)
            if wait.retry_in_s is not None:
                raise _LockTimedOut(wait) from e
        recorded = _record_failure(ctx, index, step, message + _lock_wait_note(wait), location, _ms_since(t0))
        failure = Failure(index, step.action, step.version, message, location, sqlstate(e), recorded, wait)
        outcome = StepOutcome(
            index, step.action, step.version, False, _ms_since(t0), message, "failed", ctx.attempt - 1
        )
        raise _StepFailed(failure, outcome) from e
    except KeyboardInterrupt as e:
        raise _stopped(ctx, index, step, e, t0, committing=committing) from e
    except BaseException:
        # Ended some other way (SystemExit): undo the open transaction and say so in
        # tracking, unless the step had already committed, in which case nothing failed.
        if not session.conn.closed and not (committing and _committed(ctx, index, step)):
            session.rollback()
            _record_failure(ctx, index, step, "interrupted", None, _ms_since(t0))
        raise


# What the tracking row of an interrupted step says after "interrupted by SIGINT: ".
_RECORDED = {ROLLED_BACK: "rolled back", HALF_DONE: "left half-done, statements before it were kept"}


def _stopped(
    ctx: _Context, index: int, step: PlannedStep, e: KeyboardInterrupt, t0: float, *, committing: bool
) -> _StepInterrupted:
    """A stop signal ended the step: its running statement was cancelled (or had just
    finished), or a second signal closed the connection. Undo what is open and record it as
    interrupted, unless the step had committed."""
    session = ctx.session
    signum = e.signum if isinstance(e, Signalled) else signal.SIGINT
    if session.conn.closed:  # told twice: nothing more is asked of the server
        return _StepInterrupted(index, signum, COMMIT_UNKNOWN if committing else CONNECTION_CLOSED)
    # A COMMIT on its way is let finish (interrupts.holding): the signal is raised after it.
    if committing and ((isinstance(e, Signalled) and e.completed) or _committed(ctx, index, step)):
        return _StepInterrupted(index, signum, COMMITTED)
    session.rollback()
    kept = ROLLED_BACK if step.transactional else HALF_DONE
    message = f"interrupted by {signal_name(signum)}: {_RECORDED[kept]}"
    return _StepInterrupted(index, signum, kept, _record_failure(ctx, index, step, message, None, _ms_since(t0)))


def _reset(session: Session) -> list[Statement]:
    """What a step SET (search_path, role, ...) must not leak into its bookkeeping or into the
    next step. Usually sent with the bookkeeping; on its own when the step changed
    client_encoding, because the server decodes a whole send in the encoding it had when
    the send arrived."""
    if session.client_encoding_changed():
        session.run(RESET_SESSION)
        return []
    return [RESET_SESSION]


def _committed(ctx: _Context, index: int, step: PlannedStep) -> bool | None:
    """After an error or interrupt once the COMMIT was sent: did the step commit? Its audit
    row, written in the same transaction, says. None: cannot tell (no audit row for this
    action, or the server is out of reach)."""
    session = ctx.session
    if not get_action(step.action).audited:
        return None
    if session.conn.closed and not session.reconnect():
        return None
    try:
        session.rollback()
        row = session.query_one(
            f"SELECT EXISTS (SELECT 1 FROM {ctx.plan.tracking.audit_sql} "
            "WHERE plan_hash = %s AND step = %s AND host_pid = %s AND outcome IN ('ok', 'manual') AND at >= %s)",
            (ctx.plan.hash, index, ctx.who, ctx.started),
        )
    except psycopg2.Error:
        return None
    return bool(row and row[0])


def _sent_length(session: Session, statements: list[Statement]) -> int:
    """Characters sent before the next statement in a batch of ``statements``."""
    return sum(len(s.sql if s.params is None else session.bind(s)) + len(BATCH_SEPARATOR) for s in statements)


def _lock_wait(ctx: _Context, index: int, step: PlannedStep, statement: Statement, location: str | None) -> LockWait:
    """Statement ``statement`` of step ``index`` gave up waiting for a lock, and what was open
    is rolled back: who holds locks on what it names, and whether the step is tried again.
    Only a step whose own lock_timeout fired in a transaction is: the rollback undid all of
    it. Outside one, the statements before it were kept, and running the file again would
    run them twice."""
    position = next((i for i, s in enumerate(step.statements) if s is statement), len(step.statements))
    own = any(
        s.source is not None and "lock_timeout" in s.sql.lower() and sets_setting(s.sql, "lock_timeout")
        for s in step.statements[:position]
    )
    try:
        found = blockers.lock_holders(ctx.session, relations_named(statement.sql), requested_lock(statement.sql))
    except psycopg2.Error:
        ctx.session.rollback()
        found = blockers.LockHolders((), ())
    retryable = step.lock_timeout is not None and step.transactional
    tries = 1 + ctx.lock_retries if retryable else 1
    again = retryable and ctx.attempt < tries
    return LockWait(
        step=index,
        action=step.action,
        version=step.version,
        location=location,
        lock_timeout=step.lock_timeout,
        own_timeout=own,
        transactional=step.transactional,
        relations=found.relations,
        holders=found.holders,
        attempt=ctx.attempt,
        tries=tries,
        retry_in_s=lock_backoff(step.lock_timeout, ctx.attempt) if again and step.lock_timeout else None,
    )


def _lock_wait_note(wait: LockWait | None) -> str:
    """What the failure's tracking row adds to the server's message: tries and holders."""
    if wait is None:
        return ""
    holders = [
        f"pid {h.pid} ({h.application_name or 'unknown application'}, {h.state or 'state unknown'})"
        if h.pid is not None
        else "a prepared transaction"
        for h in wait.holders
    ]
    held = f"locks on {', '.join(wait.relations)} held by {', '.join(holders)}" if holders else "holder not identified"
    tries = f"tried {wait.attempt} times; " if wait.attempt > 1 else ""
    return f" [{tries}{held}]"


def _connection_lost(
    ctx: _Context, index: int, step: PlannedStep, error: psycopg2.Error, t0: float, *, unknown: bool = False
) -> None:
    """``unknown``: the connection went while the step's COMMIT was on its way, and the server
    could not be asked afterwards whether it arrived."""
    if not unknown and ctx.session.reconnect():
        # Record it, so diagnose and the next migrate know the step did not finish.
        _record_failure(ctx, index, step, f"connection lost: {server_error_text(error)}", None, _ms_since(t0))
    if unknown:
        kept = "It was committing: it may or may not have been applied"
    elif step.transactional:
        kept = "The server rolled that step back"
    else:
        kept = "That step ran outside a transaction: the statements it had finished were kept"
    raise DatabaseUnavailable(
        f"lost the connection to the database during step {index} ({step.reason}): {server_error_text(error)}",
        f"{kept}; run poststack db diagnose to see where it stopped.",
    ) from error


def _record_failure(
    ctx: _Context, index: int, step: PlannedStep, message: str, location: str | None, elapsed_ms: int
) -> bool:
    """Write the failure's tracking row and audit row in a transaction of their own.
    False if that failed too."""
    session = ctx.session
    detail = f"{location}: {message}" if location else message
    runtime = {"execution_ms": elapsed_ms, "error": detail}
    try:
        reset = _reset(session)
    except psycopg2.Error:
        reset = [RESET_SESSION]
    opening, rows = [BEGIN], [_with_runtime(s, runtime) for s in step.on_failure]
    if ctx.per_transaction is not None:
        # Through transaction pooling, under the lock's key too: a run that applied the
        # migration since this attempt rolled back keeps its record, and this attempt is only
        # audited (a failed row beside a successful one would read as a partial migration).
        try:
            locking.lock_transaction(session, ctx.plan.tracking, ctx.per_transaction.timeout_s)
            opening = []
            guard = ctx.per_transaction.guards.get(index)
            if guard is not None and _applied(
                guard, tracking.read_version_now(session, ctx.plan.tracking, guard.spellings)
            ):
                rows = []
        except (psycopg2.Error, LockTimeout):
            session.rollback()
            return False
    record = [*opening, *reset, *rows]
    if get_action(step.action).audited:
        record.append(_audit(ctx, index, step, "failed", detail))
    try:
        session.run_batch([*record, COMMIT])
    except psycopg2.Error:
        session.rollback()  # the failure itself is still reported to the user
        return False
    return True


def _record(
    plan: Plan,
    who: Any,
    index: int,
    step: PlannedStep,
    runtime: dict[str, object],
    reset: list[Statement],
    *,
    commits: bool,
) -> list[Statement]:
    """What follows a step's body once it succeeded: BEGIN for a step run outside a
    transaction (its record is written atomically), the session reset, its bookkeeping with
    the ``runtime`` values, its audit row, and COMMIT when it ends the transaction."""
    tail = [] if step.transactional else [BEGIN]
    tail += [*reset, *(_with_runtime(s, runtime) for s in step.bookkeeping)]
    if get_action(step.action).audited:
        outcome = "manual" if step.action == "manual" else "ok"
        tail.append(_audit_statement(plan, who, index, step, outcome, None))
    if commits:
        tail.append(COMMIT)
    return tail


def _audit(ctx: _Context, index: int, step: PlannedStep, outcome: str, detail: str | None) -> Statement:
    return _audit_statement(ctx.plan, ctx.who, index, step, outcome, detail)


def _audit_statement(
    plan: Plan, who: Any, index: int, step: PlannedStep, outcome: str, detail: str | None
) -> Statement:
    return tracking.audit_statement(
        plan.tracking,
        host_pid=who,
        operation=plan.operation,
        plan_hash=plan.hash,
        step=index,
        action=step.action,
        version=step.version,
        outcome=outcome,
        detail=detail if detail is not None else step.reason,
    )


def _with_runtime(statement: Statement, runtime: dict[str, object]) -> Statement:
    if statement.params is None:
        return statement
    params = dict(statement.params)
    for key in tracking.RUNTIME_PARAMS & params.keys():
        if params[key] is None:
            params[key] = runtime[key]
    return replace(statement, params=params)


def _location(statement: Statement, offset: int, error: BaseException) -> str | None:
    """file:line of the failing statement, refined by the server's error position (counted
    from the start of what was sent, where the statement began at ``offset``)."""
    if statement.source is None or statement.line is None:
        return None
    line = statement.line
    position = getattr(getattr(error, "diag", None), "statement_position", None)
    if position and str(position).isdigit() and 0 < int(position) - offset <= len(statement.sql):
        line += statement.sql.count("\n", 0, int(position) - offset - 1)
    return f"{statement.source}:{line}"


def _ms_since(t0: float) -> int:
    return int((time.monotonic() - t0) * 1000)
