"""Domain errors: a one-line summary, an optional detail saying what to do, an exit code.

Library exceptions are caught where they enter poststack and re-raised as one of
these (``raise ... from e``); the CLI prints them without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Exit codes, as DESIGN.md fixes them.
EXIT_OK = 0
EXIT_PROBLEMS = 1  # checks found problems, or an operation failed
EXIT_USAGE = 2  # the command line (or a file it names) is wrong
EXIT_DATABASE = 3  # cannot reach or configure the database


class PoststackError(Exception):
    """An error a user can act on. ``summary`` is one line; ``detail`` says what to do."""

    exit_code = EXIT_PROBLEMS

    def __init__(self, summary: str, detail: str | None = None, *, exit_code: int | None = None) -> None:
        super().__init__(summary)
        self.summary = summary
        self.detail = detail
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(PoststackError):
    """A flag, argument or configured path is wrong."""

    exit_code = EXIT_USAGE


class MigrationFileError(PoststackError):
    """A migration file cannot be used (name, encoding, duplicate version, SQL syntax)."""

    exit_code = EXIT_PROBLEMS


class DatabaseUnavailable(PoststackError):
    """The database cannot be reached, authenticated against, or configured."""

    exit_code = EXIT_DATABASE


class LockTimeout(PoststackError):
    """Another run holds the migration lock, or a crashed run left it held."""

    exit_code = EXIT_PROBLEMS
    holder_known = True


class OperationFailed(PoststackError):
    """A step of a plan failed on the server; what ran before it is kept, it is rolled back."""

    exit_code = EXIT_PROBLEMS


# What became of the step a stop signal interrupted (Interruption.kept).
ROLLED_BACK = "rolled back"  # its transaction was rolled back: nothing of it was kept
HALF_DONE = "left half-done"  # it ran outside a transaction: statements before the interrupted one were kept
COMMITTED = "committed"  # it had committed before the signal could stop it
CONNECTION_CLOSED = "connection closed"  # a second signal closed the connection: the server rolls back
COMMIT_UNKNOWN = "commit unknown"  # ... while its COMMIT was on its way: applied or not, unknown
BETWEEN_STEPS = "between steps"  # no step was running


@dataclass(frozen=True)
class Interruption:
    """Where a stop signal caught a run that changes the database, and what was kept."""

    signal: str  # "SIGINT", "SIGTERM"
    signum: int
    operation: str  # the plan's: migrate, rollback, apply, recover, ...
    kept: str  # one of the constants above
    step: int | None = None  # 1-based; None between steps
    action: str | None = None
    version: str | None = None
    source: str | None = None  # the file the step was running
    reason: str | None = None  # the step as plans show it
    transactional: bool = True
    undone: tuple[int, ...] = ()  # earlier steps rolled back with it (same transaction)
    done: tuple[tuple[int, str, str | None], ...] = ()  # (step, action, version) kept before it
    recorded: bool = False  # the step's tracking and audit rows say it was interrupted
    database: Any = None  # a db.DatabaseRef (this module sits below db)


class Interrupted(PoststackError):
    """SIGINT or SIGTERM stopped a run that changes the database. The exit code is the
    shell's for a process ended by that signal: 130 for SIGINT, 143 for SIGTERM."""

    def __init__(self, interruption: Interruption) -> None:
        super().__init__(f"interrupted by {interruption.signal}", exit_code=128 + interruption.signum)
        self.interruption = interruption


@contextmanager
def stopping_as_keyboard_interrupt() -> Iterator[None]:
    """poststack as a library (the API, the pytest plugin): a Ctrl-C that stopped a run cleanly
    comes out as Python's own KeyboardInterrupt, so the application (or pytest) stops as for
    any Ctrl-C and an uncaught one ends the process as SIGINT does (a subclass would exit 1).
    Its ``interruption`` says where the run stopped and what was kept."""
    try:
        yield
    except Interrupted as e:
        stop = KeyboardInterrupt(e.summary)
        stop.interruption = e.interruption  # type: ignore[attr-defined]
        raise stop from e


def did_you_mean(name: str, known: Collection[str]) -> str:
    """``; did you mean 'x'?`` for the closest known name, compared without case and with
    ``-`` read as ``_`` (``database-url``, ``DATABASE_URL``); else nothing. For every
    registry and setting poststack looks a name up in."""
    by_form = {k.lower().replace("-", "_"): k for k in known}
    close = difflib.get_close_matches(name.lower().replace("-", "_"), list(by_form), n=1, cutoff=0.6)
    return f"; did you mean {by_form[close[0]]!r}?" if close else ""
