"""SIGINT and SIGTERM: stop when told, and leave nothing in doubt.

The CLI installs the handlers (``install``). In Python code (planning, the sleep between
tries for the migration lock, waiting for pg_dump) a signal raises ``Signalled`` at once.
While a statement is on its way to the server the handler only notes the signal and wakes
``db.wait_for_server``, which asks the server to cancel the statement (as psql does): an
exception raised inside psycopg2's wait callback would make psycopg2 close the connection,
and with it the chance to roll back, record the interruption and release the migration
lock. A second signal does close it: told twice, poststack stops waiting.

Standard library only: the CLI imports this before it knows whether it will need a database.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(signum: int) -> int:
    """What a shell reports for a process the signal ended: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + signum


class Signalled(KeyboardInterrupt):
    """A stop signal, raised where poststack can stop cleanly. A KeyboardInterrupt, so code
    that cleans up after Ctrl-C cleans up after SIGTERM too.

    ``signum``: the first signal received, the one the run stops for. ``completed``: the
    statement on its way finished before the signal could stop it (raised after it returned).
    ``closed``: a second signal closed the connection while a statement was on its way."""

    def __init__(self, signum: int, *, completed: bool = False, closed: bool = False) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum
        self.completed = completed
        self.closed = closed

    @property
    def name(self) -> str:
        return signal_name(self.signum)


@dataclass
class _State:
    received: list[int] = field(default_factory=list)  # in order of arrival
    handled: int = 0  # how many were acted on: raised, or turned into a cancel or a close
    waiting: int = 0  # > 0 while a statement is on its way: the handler only notes signals
    holding: int = 0  # > 0 while a COMMIT is on its way: a first signal waits for its answer
    shielded: int = 0  # > 0 while the migration lock is released: a first signal waits for that
    wakeup: int | None = None  # read end of the pipe signal.set_wakeup_fd writes to
    installed: bool = False  # the handlers are poststack's: the CLI, or a fleet's worker


state = _State()


def install() -> None:
    """Handle SIGINT and SIGTERM as described above. From the main thread, once."""
    if state.wakeup is None:
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        state.wakeup = read
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handler)
    state.installed = True


def installed() -> bool:
    """Whether poststack handles the stop signals in this process. Not when it is a library
    (reconciler.api): the application's handlers and its other connections are its own."""
    return state.installed


def _handler(signum: int, frame: FrameType | None) -> None:
    state.received.append(signum)
    if state.waiting or state.shielded:
        return  # the wait loop acts on it (the wakeup fd ends its select), or shielded() does
    state.handled = len(state.received)
    raise Signalled(state.received[0])


def note(signum: int) -> None:
    """A signal that reached poststack another way (Python's own SIGINT handler raised
    KeyboardInterrupt inside the wait loop): acted on like one the handler noted."""
    state.received.append(signum)


def drain_wakeup() -> None:
    if state.wakeup is None:
        return
    with suppress(BlockingIOError):
        while os.read(state.wakeup, 512):
            pass


def pending() -> bool:
    """A signal arrived that nothing has acted on yet."""
    return len(state.received) > state.handled


def first() -> int:
    return state.received[0] if state.received else signal.SIGINT


def mark_handled() -> None:
    state.handled = len(state.received)


@contextmanager
def statement() -> Iterator[None]:
    """Around one call into the driver: a signal that arrives meanwhile is left to the wait
    loop (a cancel request), then raised as Signalled once the call has returned, from the
    driver's error (usually query_canceled) or after its success."""
    if state.shielded:
        state.waiting += 1
        try:
            yield
        finally:
            state.waiting -= 1
        return
    before = len(state.received)
    state.waiting += 1
    try:
        yield
    except Signalled:
        raise  # a second signal closed the connection
    except Exception as e:
        if len(state.received) > before:
            mark_handled()
            raise Signalled(first()) from e
        raise
    finally:
        state.waiting -= 1
    if len(state.received) > before:
        mark_handled()
        raise Signalled(first(), completed=True)


@contextmanager
def holding() -> Iterator[None]:
    """While a COMMIT is on its way: a first signal lets it finish (the step's work is done,
    and its bookkeeping travels with it) and is raised once it has; a second one still
    closes the connection."""
    state.holding += 1
    try:
        yield
    finally:
        state.holding -= 1


@contextmanager
def shielded() -> Iterator[None]:
    """Cleanup that must finish, releasing the migration lock: a first signal neither
    interrupts nor cancels it, and is raised once it is done, unless the block runs because
    of an exception already (the run is stopping anyway); a second one still closes the
    connection."""
    before = len(state.received)
    stopping = sys.exc_info()[1] is not None  # inside a finally during an exception
    state.shielded += 1
    try:
        yield
    finally:
        state.shielded -= 1
    if len(state.received) > before and not stopping:
        mark_handled()
        raise Signalled(first(), completed=True)
    if len(state.received) > before:
        mark_handled()


def reset() -> None:
    """Forget the signals received (tests, which run many commands in one process)."""
    state.received.clear()
    state.handled = 0


def fresh_process() -> None:
    """In a forked worker (a fleet's): the state of a process that received nothing, with
    its own wakeup pipe, and the handlers installed."""
    global state
    state = _State()
    install()
