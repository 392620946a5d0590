"""``poststack new NAME``: the files of a new migration, in the directory's layout, numbered
after the ones already there.

Deciding is pure (``plan_new``: the existing versions and names, the layout, the time in,
the files out); ``write_new`` then writes them all or none. Each layout says how its files
are named (``Layout.naming``); this module only numbers and checks.

Numbering follows the files: after a timestamped version (14 digits or more, as dbmate,
golang-migrate, diesel and Prisma write them) the next is the current UTC time in the
layout's format; after a sequence the next number, as zero-padded as the newest (003 ->
004). ``--numbering`` overrides; with no migration yet, the layout's tool decides.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from reconciler.desired.layouts import Layout, choose_layout, layout_named, list_entries
from reconciler.desired.versions import version_key
from reconciler.errors import UsageError
from reconciler.numbering import NUMBERINGS, next_in_sequence, numbering_of

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


@dataclass(frozen=True)
class Existing:
    """A migration already in the directory, as far as numbering and collisions care."""

    version: str
    description: str


@dataclass(frozen=True)
class PlannedFile:
    path: Path
    role: str  # migration, rollback, verify or migration_and_rollback
    text: str


@dataclass(frozen=True)
class NewMigration:
    """The result of ``poststack new``: what was (or is to be) written, and where."""

    directory: Path
    layout: str
    version: str
    name: str
    numbering: str
    files: tuple[PlannedFile, ...]
    created_directory: bool = False  # the migrations directory did not exist and was made
    notes: tuple[str, ...] = ()  # what the user should know (Prisma has no down migrations)


def check_name(name: str) -> str:
    """The name, if it is safe as part of a file name in every layout; else a UsageError."""
    if not SAFE_NAME.match(name):
        raise UsageError(
            f"migration name {name!r} is not a safe file name part",
            "Use letters, digits, '_' and '-' (starting with a letter or digit, at most 100): add_users_table.",
        )
    return name


def next_version(layout: Layout, existing: Sequence[Existing], numbering: str | None, now: datetime) -> tuple[str, str]:
    """The new migration's version and how it was numbered (sequence or timestamp)."""
    naming = layout.naming
    if naming is None:  # every registered layout has one; a new layout without is a bug
        raise ValueError(f"layout {layout.name} cannot name a new migration")
    if numbering is not None and numbering not in NUMBERINGS:
        raise UsageError(
            f"numbering {numbering!r} is not sequence or timestamp",
            "Set --numbering, POSTSTACK_NUMBERING or numbering in poststack.toml to sequence or timestamp.",
        )
    keyed = [(k, e) for e in existing if (k := version_key(e.version)) is not None and not k.is_repeatable]
    newest = max(keyed, key=lambda pair: pair[0])[1].version if keyed else None
    chosen = numbering or (numbering_of(newest) if newest is not None else naming.numbering)
    if chosen == "timestamp":
        return naming.timestamp(now), chosen
    if newest is None:
        return naming.first_sequence, chosen
    return next_in_sequence(newest), chosen


def plan_new(
    directory: Path,
    layout: Layout,
    existing: Sequence[Existing],
    name: str,
    *,
    numbering: str | None,
    verify: bool,
    now: datetime,
) -> NewMigration:
    """The files to write, or a UsageError when the name or version is taken, the name is
    unsafe, or a verify script is asked of a layout without them. Writes nothing."""
    check_name(name)
    naming = layout.naming
    if naming is None:
        raise ValueError(f"layout {layout.name} cannot name a new migration")
    if verify and naming.verify is None:
        raise UsageError(
            f"--verify: {layout.tool}'s layout has no verify scripts",
            "Only poststack's layout has them (NNN_name.verify.sql); leave --verify out.",
        )
    # A repeatable's name is not a version's (Flyway's V3__views.sql beside R__views.sql).
    versioned = [e for e in existing if not ((k := version_key(e.version)) and k.is_repeatable)]
    taken_name = next((e for e in versioned if e.description.casefold() == name.casefold()), None)
    if taken_name is not None:
        raise UsageError(
            f"a migration named {name!r} exists already (version {taken_name.version})",
            "Choose another name.",
        )
    version, chosen = next_version(layout, existing, numbering, now)
    key = version_key(version)
    taken = next((e for e in existing if version_key(e.version) == key), None)
    if taken is not None:
        raise UsageError(
            f"version {version} is taken by {taken.version}_{taken.description}",
            "Wait a second for a new timestamp, or number by sequence (--numbering sequence).",
        )
    newest = max((k for e in existing if (k := version_key(e.version)) and not k.is_repeatable), default=None)
    if newest is not None and key is not None and key < newest:
        raise UsageError(
            f"version {version} would come before the newest migration ({newest}): migrate would refuse it as out of order",
            "Number by sequence (--numbering sequence), or check the clock and the newest file's version.",
        )
    written = naming.files(version, name) + ((naming.verify(version, name),) if verify and naming.verify else ())
    files = tuple(PlannedFile(directory / f.path, f.role, f.text) for f in written)
    notes = (
        () if layout.rollback_file else (f"{layout.tool} has no down migrations: db rollback cannot undo this one.",)
    )
    return NewMigration(directory, layout.name, version, name, chosen, files, notes=notes)


def existing_migrations(directory: Path, layout: Layout) -> list[Existing]:
    """Every migration the layout finds in the directory, and the versions of files it could
    not read (a broken file's version is still taken)."""
    scan = layout.read(directory, list_entries(directory))
    found = [Existing(m.version, m.description) for m in scan.migrations.migrations]
    found += [Existing(p.version, "") for p in scan.problems if p.version is not None]
    return found


def write_new(plan: NewMigration) -> NewMigration:
    """Write the planned files, creating the directory if it is missing. A file that appeared
    since planning is not overwritten, and a failed write removes what it wrote: all or nothing."""
    created = not plan.directory.exists()
    made: list[Path] = []
    try:
        for directory in (plan.directory, *dict.fromkeys(f.path.parent for f in plan.files)):
            if not directory.exists():
                directory.mkdir(parents=True)
                made.append(directory)
        for file in plan.files:
            with file.path.open("x", encoding="utf-8", newline="\n") as out:  # "x": never overwrite
                made.append(file.path)
                out.write(file.text)
    except OSError as e:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                if path.is_dir():
                    path.rmdir()
                else:
                    path.unlink()
        raise UsageError(f"cannot write {e.filename}: {e.strerror}", "Nothing was written.") from e
    return replace(plan, created_directory=created)


def utc_now() -> datetime:
    """The time a new migration is numbered with (tests put their own in its place)."""
    return datetime.now(UTC)


def new_migration(
    directory: Path,
    name: str,
    *,
    layout: str | None,
    numbering: str | None,
    verify: bool,
    now: datetime,
) -> NewMigration:
    """The verb: choose the layout (named, or detected from the files; poststack's for a new
    project), plan the files and write them."""
    check_name(name)
    if directory.exists():
        entries = list_entries(directory)
        chosen = choose_layout(directory, entries, layout)
        found = choose_layout(directory, entries, None)
        if found.name != chosen.name and any(found.claims(e) for e in entries):
            raise UsageError(
                f"--layout {chosen.name}: the migrations in {directory} are in {found.tool}'s layout",
                f"A {chosen.tool} file there would be refused by every command; leave --layout out to write "
                f"{found.tool}'s, or keep {chosen.tool}'s migrations in a directory of their own.",
            )
        existing = existing_migrations(directory, chosen)
    else:
        chosen = layout_named(layout) if layout is not None else layout_named("poststack")
        existing = []
    plan = plan_new(directory, chosen, existing, name, numbering=numbering, verify=verify, now=now)
    return write_new(plan)
