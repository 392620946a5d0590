"""The per-target loop: canaries first, then up to ``parallel`` targets at once, stopping at
the first failure unless told to keep going.

Each target runs the same command function a single run calls, with its own connection,
lock and audit rows, so a fleet run stopped anywhere (a crash, Ctrl-C, a failed target)
leaves every target as a single run would, and running it again continues.

With ``parallel`` above 1 targets run in up to that many forked worker processes, each
running one target at a time, as the fleet hands them out: poststack's signal handling
(interrupts) and psycopg2's wait callback are process-wide, and a process running one
target at a time keeps them as a single run has them. Forking once per worker, not per
target, spares each target the fork's cost. Workers get a process group of their own, so a
Ctrl-C reaches the fleet once and is passed on once to each worker running a target (a
second one would mean "stop waiting": see interrupts); they die with the fleet process if
it is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler import interrupts
from reconciler.config import Settings, mask_url
from reconciler.errors import EXIT_PROBLEMS, Interrupted, PoststackError
from reconciler.fleet.report import SUCCESS, TargetReport, outcome_of_error
from reconciler.fleet.targets import Target

Notify = Callable[[str], None]
# What one target's run produces beside the common fields: outcome, version, issues, ...
Job = Callable[[Target, Settings, Notify], dict[str, Any]]
OnDone = Callable[[TargetReport, int, int], None]  # the report, how many are done, of how many


@dataclass(frozen=True)
class FleetPolicy:
    parallel: int = 1
    canary: int = 0  # run this many first, one at a time; any failure stops the fleet
    keep_going: bool = True  # False: stop starting targets after the first failure


def _base_report(target: Target, outcome: str, exit_code: int, **values: Any) -> TargetReport:
    return TargetReport(target.name, target.key, target.database, target.schema, outcome, exit_code, **values)


def run_one(target: Target, base: Settings, job: Job) -> TargetReport:
    """One target's run, as a report: never raises for what went wrong on the target."""
    notes: list[str] = []
    started = time.monotonic()

    def report(outcome: str, exit_code: int, **values: Any) -> TargetReport:
        return _base_report(target, outcome, exit_code, seconds=time.monotonic() - started, **values)

    try:
        values = job(target, target.settings(base), notes.append)
    except Interrupted as e:
        return report("interrupted", e.exit_code, error=mask_url(e.summary), notes=tuple(notes))
    except PoststackError as e:
        detail = mask_url(e.detail) if e.detail else None
        error = mask_url(e.summary)
        return report(outcome_of_error(e.exit_code), e.exit_code, error=error, detail=detail, notes=tuple(notes))
    except interrupts.Signalled as e:
        return report("interrupted", interrupts.exit_code(e.signum), error=f"stopped by {e.name}", notes=tuple(notes))
    except Exception as e:  # one target's surprise must not hide the others' results
        error = mask_url(f"internal error: {type(e).__name__}: {e}")
        return report("failed", EXIT_PROBLEMS, error=error, notes=tuple(notes))
    values["notes"] = (*notes, *values.get("notes", ()))
    outcome = values.pop("outcome")
    return report(outcome, values.pop("exit_code", 0 if outcome in SUCCESS else EXIT_PROBLEMS), **values)


def skipped(target: Target, why: str) -> TargetReport:
    return _base_report(target, "skipped", EXIT_PROBLEMS, error=why)


def run_fleet(
    targets: Sequence[Target], base: Settings, job: Job, policy: FleetPolicy, on_done: OnDone | None = None
) -> tuple[list[TargetReport], int | None]:
    """Every target's report, in the targets' order, and the stop signal if one stopped it."""
    reports: dict[int, TargetReport] = {}
    total = len(targets)

    def done(index: int, report: TargetReport) -> None:
        reports[index] = report
        if on_done is not None:
            on_done(report, len(reports), total)

    order = list(range(total))
    canaries, rest = order[: policy.canary], order[policy.canary :]
    stopped: int | None = None
    stop_reason: str | None = None
    for phase, indexes, width in (("canary", canaries, 1), ("fleet", rest, policy.parallel)):
        if stop_reason is not None:
            break
        keep_going = policy.keep_going and phase == "fleet"
        stopped, failed = _run_phase(targets, indexes, base, job, width, keep_going, done)
        if stopped is not None:
            stop_reason = f"not started: the run was stopped by {interrupts.signal_name(stopped)}"
        elif failed is not None and phase == "canary":
            stop_reason = f"not started: canary {targets[failed].name} did not succeed"
        elif failed is not None and not keep_going:
            stop_reason = f"not started: {targets[failed].name} did not succeed (pass --keep-going to go on)"
    for index in order:
        if index not in reports:
            done(index, skipped(targets[index], stop_reason or "not started"))
    return [reports[i] for i in order], stopped


def _run_phase(
    targets: Sequence[Target],
    indexes: Sequence[int],
    base: Settings,
    job: Job,
    width: int,
    keep_going: bool,
    done: Callable[[int, TargetReport], None],
) -> tuple[int | None, int | None]:
    """Run ``indexes``; the stop signal received, and the first target that did not succeed."""
    if width <= 1:
        return _in_process(targets, indexes, base, job, keep_going, done)
    return _in_workers(targets, indexes, base, job, width, keep_going, done)


def _in_process(
    targets: Sequence[Target],
    indexes: Sequence[int],
    base: Settings,
    job: Job,
    keep_going: bool,
    done: Callable[[int, TargetReport], None],
) -> tuple[int | None, int | None]:
    first_failed = None
    for index in indexes:
        report = run_one(targets[index], base, job)
        done(index, report)
        if report.outcome == "interrupted" or interrupts.pending() or interrupts.state.received:
            return interrupts.first(), first_failed
        if not report.succeeded and first_failed is None:
            first_failed = index
            if not keep_going:
                break
    return None, first_failed


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection  # the fleet's end of its pipe: target indexes out, reports back


def _start_worker(context: Any, targets: Sequence[Target], base: Settings, job: Job, others: list[_Worker]) -> _Worker:
    ours, theirs = context.Pipe(duplex=True)
    inherited = [w.conn for w in others]  # the other workers' pipes: the new one closes its copies
    process = context.Process(target=_worker, args=(theirs, inherited, targets, base, job, os.getpid()))
    # Whatever is buffered would be written again by the worker as it exits.
    sys.stdout.flush()
    sys.stderr.flush()
    # A stop signal passed on while the worker starts waits for its own handlers.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, interrupts.STOP_SIGNALS)
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    theirs.close()
    return _Worker(process, ours)


def _in_workers(
    targets: Sequence[Target],
    indexes: Sequence[int],
    base: Settings,
    job: Job,
    width: int,
    keep_going: bool,
    done: Callable[[int, TargetReport], None],
) -> tuple[int | None, int | None]:
    """Up to ``width`` worker processes, each running one target after another as the fleet
    hands them out: a fork per worker, not per target."""
    context = multiprocessing.get_context("fork")
    waiting = list(indexes)
    idle: list[_Worker] = []
    running: dict[Any, tuple[int, _Worker]] = {}  # conn -> (index, worker)
    first_failed: int | None = None
    forwarded = 0  # signals passed on to the workers
    # While the fleet waits, a stop signal is only noted (and wakes the wait below): it is
    # acted on here, between targets, never in the middle of handing one out.
    interrupts.state.waiting += 1
    try:
        while waiting or running:
            stopping = bool(interrupts.state.received)
            while not stopping and (keep_going or first_failed is None) and waiting and len(running) < width:
                if idle:
                    worker = idle.pop()
                else:
                    worker = _start_worker(context, targets, base, job, [*idle, *(w for _, w in running.values())])
                index = waiting.pop(0)
                try:
                    worker.conn.send(index)
                except OSError:  # it died waiting for work: the target goes to another
                    waiting.insert(0, index)
                    _end(worker)
                    continue
                running[worker.conn] = (index, worker)
            if not running:
                break
            wake = [interrupts.state.wakeup] if interrupts.state.wakeup is not None else []
            try:
                ready = multiprocessing.connection.wait([*running, *wake])
            except KeyboardInterrupt:  # Python's own SIGINT handler: interrupts.install() was not called
                interrupts.note(signal.SIGINT)
                ready = []
            if wake and wake[0] in ready:
                interrupts.drain_wakeup()
            if len(interrupts.state.received) > forwarded:
                # Each signal is passed on once, to the workers running a target: the first
                # stops each as it would stop a single run; a second, like a second Ctrl-C,
                # stops it waiting. Idle workers take no more targets.
                for signum in interrupts.state.received[forwarded:]:
                    for _index, worker in running.values():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(worker.process.pid, signum)
                forwarded = len(interrupts.state.received)
            for conn in ready:
                if conn not in running:
                    continue
                index, worker = running.pop(conn)
                received = _receive(conn, targets[index])
                if received is None:
                    report = _base_report(targets[index], "failed", EXIT_PROBLEMS, error=WORKER_DIED)
                    _end(worker)
                else:
                    report, leaving = received
                    if leaving:  # it was signalled: it takes no more targets (another is started)
                        _end(worker)
                    else:
                        idle.append(worker)
                done(index, report)
                if not report.succeeded and first_failed is None:
                    first_failed = index
    except BaseException:
        # The fleet process itself failed (a closed pipe, fork refused): its workers stop as a
        # stop signal stops them, and are waited for, so none runs on unseen.
        for _index, worker in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.process.pid, signal.SIGTERM)
        for _index, worker in running.values():
            _end(worker, deadline=WORKER_GRACE)
        raise
    finally:
        # Still only noting stop signals: one that comes while the idle workers are told to
        # go must neither leave some of them waiting for work nor lose the report.
        try:
            for worker in idle:
                _end(worker)
        finally:
            interrupts.state.waiting -= 1
    if interrupts.state.received:
        interrupts.mark_handled()
        return interrupts.first(), first_failed
    return None, first_failed


WORKER_GRACE = 30.0  # seconds a stopped worker has to roll back and release its lock
WORKER_DIED = "its worker process ended without a report"


def _end(worker: _Worker, deadline: float | None = None) -> None:
    """A worker told there is no more work (its pipe closed), and waited for: with
    ``deadline``, killed if it has not ended by then."""
    with contextlib.suppress(OSError):
        worker.conn.send(None)
    worker.conn.close()
    worker.process.join(deadline)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join()


def _receive(conn: Any, target: Target) -> tuple[TargetReport, bool] | None:
    """The worker's report on ``target``, and whether the worker is leaving; None when it
    ended without a report."""
    try:
        sent = conn.recv()
    except (EOFError, OSError):
        return None
    if not (isinstance(sent, tuple) and len(sent) == 2 and isinstance(sent[0], TargetReport)):
        return _base_report(target, "failed", EXIT_PROBLEMS, error="its worker process sent no report"), True
    return sent[0], bool(sent[1])


def _worker(conn: Any, inherited: list[Any], targets: Sequence[Target], base: Settings, job: Job, parent: int) -> None:
    """A forked worker: the signal state of a fresh run, then targets as the fleet hands them
    out, each run as a single run would be, until told there are no more, or until a stop
    signal reaches it (it reports the target it stopped, and leaves)."""
    os.setpgid(0, 0)  # Ctrl-C at a terminal reaches the fleet process, which passes it on once
    _die_with_parent()
    if os.getppid() != parent:  # the fleet was killed before the line above took effect
        os._exit(1)
    for other in inherited:  # the fleet's ends of the other workers' pipes: not this worker's to hold
        other.close()
    interrupts.fresh_process()
    # Between targets a stop signal is only noted: the fleet passes one on only to a worker
    # running a target, and hands out no more after it.
    interrupts.state.waiting += 1
    signal.pthread_sigmask(signal.SIG_UNBLOCK, interrupts.STOP_SIGNALS)
    while True:
        try:
            index = conn.recv()
        except (EOFError, OSError):
            break
        if index is None:
            break
        report = _run_noting_between(targets[index], base, job)
        leaving = bool(interrupts.state.received)
        try:
            conn.send((report, leaving))
        except OSError:
            break
        if leaving:
            break
    conn.close()


def _run_noting_between(target: Target, base: Settings, job: Job) -> TargetReport:
    """One target, stop signals handled as in a single run while it runs; only noted again
    as soon as it has ended. Not started when a stop signal came first."""
    report: TargetReport | None = None
    try:
        interrupts.state.waiting -= 1
        try:
            if interrupts.state.received:  # came after the target was handed out, before it started
                interrupts.mark_handled()
                name = interrupts.signal_name(interrupts.first())
                return skipped(target, f"not started: the run was stopped by {name}")
            report = run_one(target, base, job)
        finally:
            interrupts.state.waiting += 1
    except interrupts.Signalled as e:  # arrived as the run started, before run_one could catch it
        if report is None:
            report = _base_report(target, "interrupted", interrupts.exit_code(e.signum), error=f"stopped by {e.name}")
    return report


def _die_with_parent() -> None:
    """A worker outlives nothing: if the fleet process is killed (SIGKILL, an OOM kill), its
    workers get SIGKILL too, as a single run's connection dies with it (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
