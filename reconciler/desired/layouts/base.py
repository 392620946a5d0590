"""A layout: how one tool lays migrations out on disk, and how poststack reads it.

Each layout module registers one ``Layout``. A layout says which directory entries are its
own (for detection) and reads the whole directory into migrations and problems; an entry
it cannot read whole is a problem, never a migration.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from reconciler.desired.files import Callback, FileProblem, Migration, MigrationSet, Scan, SqlFile
from reconciler.desired.versions import VersionKey, version_key
from reconciler.errors import MigrationFileError, UsageError, did_you_mean


@dataclass(frozen=True)
class Entry:
    """One name in the migrations directory."""

    path: Path
    is_dir: bool
    # Kept, not derived on each use: detection asks every entry's name of every layout.
    name: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.path.name)


@dataclass(frozen=True)
class NewFile:
    """One file ``poststack new`` writes: where (relative to the migrations directory), what
    part of the migration it is, and what it starts with."""

    path: str  # relative, with "/" for a migration directory (diesel, Prisma)
    role: str  # "migration", "rollback", "verify", or "migration_and_rollback" (one file, both halves)
    text: str


def utc_timestamp(now: datetime) -> str:
    """dbmate's, golang-migrate's and Prisma's version: the UTC time as YYYYMMDDHHMMSS."""
    return now.astimezone(UTC).strftime("%Y%m%d%H%M%S")


@dataclass(frozen=True)
class Naming:
    """How a new migration is written in a layout (``poststack new``): its files, from its
    version and name, and how the tool numbers its first one."""

    files: Callable[[str, str], tuple[NewFile, ...]]  # (version, name) -> the migration and its rollback
    first_sequence: str  # the first version when numbering by sequence: its width is the padding
    numbering: str  # "sequence" or "timestamp": how the tool numbers when no migration shows
    timestamp: Callable[[datetime], str] = utc_timestamp
    verify: Callable[[str, str], NewFile] | None = None  # None: the layout has no verify scripts


@dataclass(frozen=True)
class Layout:
    name: str  # as --layout takes it
    tool: str  # the tool whose layout this is, for messages
    pattern: str  # the shape of its names, short: NNN_description.sql
    expected: str  # the file names it reads, in full, for messages
    claims: Callable[[Entry], bool]  # is this entry one of this layout's (cheap: names, a first line)
    read: Callable[[Path, Sequence[Entry]], Scan]  # every entry → migrations and problems
    # Where a migration's rollback goes in this layout, for "rollback_missing"; None: the
    # tool has no down migrations (Prisma), so their absence is no issue.
    rollback_file: Callable[[Migration], str] | None = None
    aliases: tuple[str, ...] = ()
    naming: Naming | None = None  # how poststack new writes one of its migrations


LAYOUTS: dict[str, Layout] = {}


def register(layout: Layout) -> Layout:
    for name in (layout.name, *layout.aliases):
        if name in LAYOUTS:
            raise ValueError(f"layout {name!r} is registered twice")
        LAYOUTS[name] = layout
    return layout


def layout_named(name: str) -> Layout:
    """The layout called ``name`` (or one of its aliases); a UsageError with a suggestion otherwise."""
    key = name.strip().lower()
    if key in LAYOUTS:
        return LAYOUTS[key]
    raise UsageError(
        f"unknown layout {name!r}{did_you_mean(key, LAYOUTS)}",
        f"poststack reads these layouts: {', '.join(sorted({layout.name for layout in LAYOUTS.values()}))}.",
    )


@dataclass(frozen=True)
class Found:
    """A migration a layout found, not yet read: reading may fail, and then it is a problem."""

    version: str  # as written
    description: str
    paths: tuple[Path, ...]  # every file it is made of, for messages
    load: Callable[[], tuple[SqlFile, SqlFile | None, SqlFile | None]]  # up, down, verify
    verify_at: Path | None = None  # where its verify script goes in this layout (None: nowhere)


def list_entries(directory: Path) -> list[Entry]:
    """The directory's visible entries, sorted. A missing or unlistable directory is a usage error."""
    try:
        if not directory.exists():
            raise UsageError(
                f"migrations directory {directory} does not exist",
                "Create it, or point --migrations-dir (or POSTSTACK_MIGRATIONS_DIR) at your migrations.",
            )
        if not directory.is_dir():
            raise UsageError(f"migrations directory {directory} is not a directory")
        # scandir knows each entry's type without a stat per file (2,000 migrations, 4,000 files).
        with os.scandir(directory) as listing:
            found = [Entry(directory / e.name, e.is_dir()) for e in listing if not e.name.startswith(".")]
    except OSError as e:  # a directory above it, or it, cannot be read
        raise UsageError(f"migrations directory {directory}: cannot read it: {e.strerror}") from e
    return sorted(found, key=lambda e: e.name)


def is_sql(entry: Entry) -> bool:
    # Case-insensitive, so 004_x.SQL is refused by name rather than silently skipped.
    return not entry.is_dir and entry.name.lower().endswith(".sql")


def holds_sql(entry: Entry) -> bool:
    """A directory with SQL files in it: some tool's migration, never to be passed over silently."""
    if not entry.is_dir:
        return False
    try:
        return any(name.lower().endswith(".sql") for name in os.listdir(entry.path))
    except OSError:
        return True  # unreadable: say so rather than skip it


def unrecognized(entries: Sequence[Entry], layout: Layout) -> list[FileProblem]:
    """Every SQL file or SQL-holding directory ``layout`` does not read: a bad name, never skipped.
    One that another layout reads says so: a directory holds one layout."""
    problems = []
    for entry in entries:
        if not (is_sql(entry) or holds_sql(entry)) or layout.claims(entry):
            continue
        kind = "directory" if entry.is_dir else "file"
        message = f"{entry.path}: {kind} name does not match {layout.pattern} (expected {layout.expected})"
        other = next((o for o in unique_layouts() if o is not layout and o.claims(entry)), None)
        if other is not None:
            message = (
                f"{entry.path}: {kind} name does not match {layout.pattern}: it is in {other.tool}'s layout, "
                f"not {layout.tool}'s (one layout per directory; --layout chooses it)"
            )
        problems.append(FileProblem("bad_name", message, None, (entry.path,)))
    return problems


def unique_layouts() -> list[Layout]:
    """Each registered layout once (aliases left out), in registration order."""
    return list(dict.fromkeys(LAYOUTS.values()))


def assemble(
    directory: Path, found: Sequence[Found], problems: Sequence[FileProblem], callbacks: Sequence[Callback] = ()
) -> Scan:
    """Order what a layout found by version key, refuse duplicate versions, read each whole.
    ``callbacks``: the scripts the layout runs around its migrations (already read)."""
    all_problems = list(problems)
    by_key: dict[VersionKey, list[Found]] = {}
    for item in found:
        key = version_key(item.version)
        if key is None:  # a layout's pattern admits only versions; this is a bug, said plainly
            raise ValueError(f"{item.paths[0]}: {item.version!r} is not a version")
        by_key.setdefault(key, []).append(item)
    migrations = []
    for key in sorted(by_key):
        items = by_key[key]
        if len(items) > 1:
            names = ", ".join(i.paths[0].name for i in items)
            message = f"{directory}: duplicate migration version {items[0].version}: {names}"
            paths = tuple(p for i in items for p in i.paths)
            all_problems.append(FileProblem("duplicate_version", message, items[0].version, paths))
            continue
        item = items[0]
        try:
            up, down, verify = item.load()
        except MigrationFileError as e:
            all_problems.append(FileProblem("unreadable", e.summary, item.version, item.paths))
            continue
        migrations.append(Migration(item.version, key, item.description, up, down, verify, item.verify_at))
    return Scan(MigrationSet(directory, tuple(migrations), callbacks=tuple(callbacks)), tuple(all_problems))


def read_directories(
    directory: Path,
    entries: Sequence[Entry],
    layout: Layout,
    name: re.Pattern[str],
    main_file: str,
    load: Callable[[Path], tuple[SqlFile, SqlFile | None, SqlFile | None]],
) -> Scan:
    """A layout of one directory per migration (diesel, Prisma): each ``name``d directory holding
    ``main_file`` is a migration, read by ``load``; one holding SQL but not it is an error."""
    found = []
    problems: list[FileProblem] = []
    for entry in entries:
        match = name.match(entry.name) if entry.is_dir else None
        if match is None:
            continue
        if not (entry.path / main_file).is_file():
            if any(entry.path.glob("*.sql")):
                message = f"{entry.path}: {layout.tool} migration directory without {main_file}"
                problems.append(FileProblem("unreadable", message, match["version"], (entry.path,)))
            continue
        paths = (entry.path / main_file,)
        found.append(Found(match["version"], match["description"], paths, lambda d=entry.path: load(d)))
    return assemble(directory, found, unrecognized(entries, layout) + problems)


def migration_directory_files(directory: Path, allowed: frozenset[str], holds: str) -> set[str]:
    """The files of a one-directory-per-migration layout's migration; any other visible file
    is refused (``holds`` says what the tool's migrations hold), never passed over."""
    try:
        names = {p.name for p in directory.iterdir() if not p.name.startswith(".")}
    except OSError as e:
        raise MigrationFileError(f"{directory}: cannot read it: {e.strerror}") from e
    strays = sorted(names - allowed)
    if strays:
        raise MigrationFileError(f"{directory / strays[0]}: {holds}")
    return names
