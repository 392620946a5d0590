"""Domain errors: a one-line summary, an optional detail saying what to do, an exit code.

Library exceptions are caught where they enter poststack and re-raised as one of
these (``raise ... from e``); the CLI prints them without a traceback.
"""

from __future__ import annotations

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
