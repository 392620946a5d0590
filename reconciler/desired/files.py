"""Desired state, part one: the migration files on disk, in any layout poststack reads.

poststack's own layout is ``NNN_description.sql`` with optional ``.rollback.sql`` and
``.verify.sql`` companions; other tools' layouts are read by ``layouts/``. The checksum is SHA-256 of the text with a leading BOM dropped and CRLF folded to LF,
so a Windows checkout of an unchanged file is not a "modification".
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from reconciler.desired.script import Script, ScriptSyntaxError, parse_script
from reconciler.desired.versions import VersionKey, parse_version
from reconciler.errors import MigrationFileError

CHECKSUM_ALGORITHM = "sha256-lf"  # what poststack records now
# Every algorithm a tracking row may name: rows keep the one they were written with, so the
# default can change without turning old history into "mismatches".
# Imported rows keep the checksum the other tool recorded, in its algorithm (db import):
# sqlx's SHA-384 and Prisma's SHA-256 of the file's bytes, Flyway's CRC32 of its lines.
CHECKSUM_ALGORITHMS = ("sha256-lf", "sha256", "sha384", "flyway-crc32")


@dataclass(frozen=True)
class SqlFile:
    """One readable, UTF-8 SQL file."""

    path: Path
    text: str  # BOM dropped, line endings normalized to LF
    raw_sha256: str = ""  # of the bytes as they are on disk
    raw: bytes = field(default=b"", repr=False, compare=False)  # the bytes, for other tools' checksums
    # The layout's own way of saying "outside a transaction" (dbmate's transaction:false,
    # diesel's run_in_transaction = false, ...), honoured besides the parser's detection.
    no_transaction_marker: str | None = None

    @cached_property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def checksum_as(self, algorithm: str) -> str | None:
        """The checksum under ``algorithm``, or None for an algorithm poststack does not know."""
        if algorithm == "sha256-lf":
            return self.checksum
        if algorithm == "sha256":
            return self.raw_sha256
        if algorithm == "sha384":
            return hashlib.sha384(self.raw).hexdigest()
        if algorithm == "flyway-crc32":
            return str(flyway_checksum(self.text))
        return None

    @cached_property
    def script(self) -> Script:
        """The parsed statements. Raises MigrationFileError naming file and line."""
        try:
            script = parse_script(self.text)
        except ScriptSyntaxError as e:
            raise MigrationFileError(f"{self.path}:{e.line}: {e.message}") from e
        if self.no_transaction_marker and script.transactional:
            return replace(script, transactional=False, reason=self.no_transaction_marker)
        return script  # an empty or comment-only file is a valid no-op, as every peer treats it

    @cached_property
    def tree(self) -> tuple[Any, str | None]:
        """PostgreSQL's parse tree of the whole text, or why there is none (effects.parse):
        parsed once per file, however many targets of a fleet read its effects."""
        from reconciler.desired.effects import parse

        return parse(self.text)

    @property
    def empty(self) -> bool:
        """Holds no statement (empty, or only comments): running it changes nothing, so it
        can never run twice to harm. False for a file that does not parse."""
        try:
            return not self.script.statements
        except MigrationFileError:
            return False


@dataclass(frozen=True)
class Migration:
    version: str  # as written, e.g. "002", "20240101120000", "1.2.3"
    key: VersionKey  # for ordering and matching
    description: str
    file: SqlFile
    rollback: SqlFile | None
    verify: SqlFile | None
    # Where its verify script is, or would go, in its layout; None where the layout has no
    # place for one (a dbmate file, a Flyway script): then only db recover --force can vouch.
    verify_at: Path | None = None

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def checksum(self) -> str:
        return self.file.checksum

    @property
    def label(self) -> str:
        return self.version if self.key.is_repeatable else f"{self.version}_{self.description}"


# Flyway's SQL callbacks that poststack runs, by event (Flyway's Event ids). beforeMigrate and
# afterMigrate run once per db migrate, each in a transaction of its own (and so do
# afterVersioned, beforeRepeatables and afterMigrateApplied, where Flyway fires them); the
# *Each* ones run inside every migration's own transaction (undo: every rollback file's).
BEFORE_MIGRATE = "beforeMigrate"
AFTER_MIGRATE = "afterMigrate"
AFTER_VERSIONED = "afterVersioned"
BEFORE_REPEATABLES = "beforeRepeatables"
AFTER_MIGRATE_APPLIED = "afterMigrateApplied"
BEFORE_EACH_MIGRATE = "beforeEachMigrate"
AFTER_EACH_MIGRATE = "afterEachMigrate"
BEFORE_UNDO = "beforeUndo"
AFTER_UNDO = "afterUndo"
BEFORE_EACH_UNDO = "beforeEachUndo"
AFTER_EACH_UNDO = "afterEachUndo"
RUN_EVENTS = frozenset(
    {
        BEFORE_MIGRATE,
        AFTER_MIGRATE,
        AFTER_VERSIONED,
        BEFORE_REPEATABLES,
        AFTER_MIGRATE_APPLIED,
        BEFORE_EACH_MIGRATE,
        AFTER_EACH_MIGRATE,
        BEFORE_UNDO,
        AFTER_UNDO,
        BEFORE_EACH_UNDO,
        AFTER_EACH_UNDO,
    }
)


@dataclass(frozen=True)
class Callback:
    """A script run at an event of a run, around the migrations (Flyway's ``beforeMigrate.sql``,
    ``afterEachMigrate__grants.sql``): not a migration, never tracked, never pending."""

    event: str  # Flyway's event id: beforeMigrate, afterEachMigrate, ...
    description: str | None  # the part after ``__``, if any
    file: SqlFile

    @property
    def name(self) -> str:
        return self.file.path.name

    @property
    def runs(self) -> bool:
        """poststack runs it (db migrate, db rollback); the other events are Flyway's alone."""
        return self.event in RUN_EVENTS


@dataclass(frozen=True)
class MigrationSet:
    directory: Path
    migrations: tuple[Migration, ...]  # ordered by key
    layout: str = "poststack"
    callbacks: tuple[Callback, ...] = ()  # in the order Flyway runs one event's: unnamed first, then by description

    def callbacks_at(self, event: str) -> tuple[Callback, ...]:
        return tuple(c for c in self.callbacks if c.event == event)

    def by_key(self) -> dict[VersionKey, Migration]:
        return {m.key: m for m in self.migrations}

    def find(self, version: str) -> Migration | None:
        return self._by_key.get(parse_version(version))

    @cached_property
    def _by_key(self) -> dict[VersionKey, Migration]:
        # found by version once per step of a run: a search each time made 500 migrations quadratic
        first: dict[VersionKey, Migration] = {}
        for m in self.migrations:
            first.setdefault(m.key, m)
        return first


def flyway_checksum(text: str) -> int:
    """Flyway's checksum: CRC32 over each line's UTF-8 bytes, line breaks left out, as a
    signed 32-bit number (its ChecksumCalculator), so line endings do not count."""
    crc = 0
    lines = re.split(r"\r\n|\r|\n", text.removeprefix("\ufeff"))
    if lines and lines[-1] == "":
        lines.pop()  # a final line break ends the last line; it does not start another
    for line in lines:
        crc = zlib.crc32(line.encode("utf-8"), crc)
    return crc - (1 << 32) if crc >= 1 << 31 else crc


# Within a scan of a directory, each file is read from disk once (see reading_once). A context
# variable, not a global: threads of one application scan at once (api.migrate at start-up),
# and each scan's reads are its own.
_read_once: ContextVar[dict[Path, bytes] | None] = ContextVar("poststack_read_once", default=None)


@contextmanager
def reading_once() -> Iterator[None]:
    """Within the block each file is read from disk once, however many layouts look at it:
    detection reads each for a marker line, and the chosen layout's reader reads it whole.
    One scan of a directory; outside one, every read goes to the disk."""
    token = _read_once.set({} if _read_once.get() is None else _read_once.get())
    try:
        yield
    finally:
        _read_once.reset(token)


def file_bytes(path: Path) -> bytes:
    """The file's bytes (once per scan: reading_once). OSError as reading it raises."""
    cache = _read_once.get()
    if cache is None:
        return path.read_bytes()
    data = cache.get(path)
    if data is None:
        data = cache[path] = path.read_bytes()
    return data


def read_sql_file(path: Path) -> SqlFile:
    try:
        data = file_bytes(path)
    except OSError as e:
        raise MigrationFileError(f"{path}: cannot read: {e.strerror}") from e
    raw_sha256 = hashlib.sha256(data).hexdigest()
    raw = data
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise MigrationFileError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from e
    if "\x00" in text:
        raise MigrationFileError(f"{path}: contains a NUL byte; PostgreSQL cannot run it")
    return SqlFile(path=path, text=text.replace("\r\n", "\n"), raw_sha256=raw_sha256, raw=raw)


@dataclass(frozen=True)
class FileProblem:
    kind: str  # bad_name, duplicate_version, unreadable, orphan_companion, duplicate_callback
    message: str  # one line naming the file
    version: str | None = None
    paths: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Scan:
    """Every usable migration, and every problem, found in the directory."""

    migrations: MigrationSet
    problems: tuple[FileProblem, ...]
