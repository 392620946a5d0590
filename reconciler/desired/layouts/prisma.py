"""Prisma Migrate's layout: one directory per migration, ``<timestamp>_<name>/migration.sql``,
and ``migration_lock.toml`` beside them. Prisma writes no down migrations, so these
migrations cannot be rolled back (poststack says so, per migration, as for any without one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from reconciler.desired.files import Scan, SqlFile, read_sql_file
from reconciler.desired.layouts.base import Entry, Layout, read_directories, register
from reconciler.errors import MigrationFileError

DIRECTORY = re.compile(r"^(?P<version>\d+)_(?P<description>.+)$")
LOCK_FILE = "migration_lock.toml"


def _claims(entry: Entry) -> bool:
    if not entry.is_dir:
        return entry.name == LOCK_FILE
    return DIRECTORY.match(entry.name) is not None and (entry.path / "migration.sql").is_file()


def _load(directory: Path) -> tuple[SqlFile, None, None]:
    try:
        strays = sorted(p.name for p in directory.iterdir() if p.name != "migration.sql" and not p.name.startswith("."))
    except OSError as e:
        raise MigrationFileError(f"{directory}: cannot read it: {e.strerror}") from e
    if strays:
        raise MigrationFileError(f"{directory / strays[0]}: Prisma migrations hold migration.sql only")
    return read_sql_file(directory / "migration.sql"), None, None


def _read(directory: Path, entries: Sequence[Entry]) -> Scan:
    return read_directories(directory, entries, PRISMA, DIRECTORY, "migration.sql", _load)


PRISMA = register(
    Layout(
        name="prisma",
        tool="Prisma",
        pattern="<timestamp>_<name>/migration.sql",
        expected="<timestamp>_<name>/ directories holding migration.sql",
        claims=_claims,
        read=_read,
    )
)
