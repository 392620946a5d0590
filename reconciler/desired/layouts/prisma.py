"""Prisma Migrate's layout: one directory per migration, ``<timestamp>_<name>/migration.sql``,
and ``migration_lock.toml`` beside them. Prisma writes no down migrations, so these
migrations cannot be rolled back (poststack says so, per migration, as for any without one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from reconciler.desired.files import Scan, SqlFile, read_sql_file
from reconciler.desired.layouts.base import (
    Entry,
    Layout,
    Naming,
    NewFile,
    migration_directory_files,
    read_directories,
    register,
)

DIRECTORY = re.compile(r"^(?P<version>\d+)_(?P<description>.+)$")
LOCK_FILE = "migration_lock.toml"


def _claims(entry: Entry) -> bool:
    if not entry.is_dir:
        return entry.name == LOCK_FILE
    return DIRECTORY.match(entry.name) is not None and (entry.path / "migration.sql").is_file()


def _load(directory: Path) -> tuple[SqlFile, None, None]:
    migration_directory_files(directory, frozenset({"migration.sql"}), "Prisma migrations hold migration.sql only")
    return read_sql_file(directory / "migration.sql"), None, None


def _read(directory: Path, entries: Sequence[Entry]) -> Scan:
    return read_directories(directory, entries, PRISMA, DIRECTORY, "migration.sql", _load)


def _new_files(version: str, name: str) -> tuple[NewFile, ...]:
    # Prisma has no down migrations: the migration alone, never an invented rollback.
    return (
        NewFile(
            f"{version}_{name}/migration.sql",
            "migration",
            "-- This migration has no down migration (Prisma writes none).\n",
        ),
    )


PRISMA = register(
    Layout(
        name="prisma",
        tool="Prisma",
        pattern="<timestamp>_<name>/migration.sql",
        expected="<timestamp>_<name>/ directories holding migration.sql",
        claims=_claims,
        read=_read,
        naming=Naming(_new_files, first_sequence="001", numbering="timestamp"),
    )
)
