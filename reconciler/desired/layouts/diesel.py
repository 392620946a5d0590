"""diesel's layout: one directory per migration, ``<version>_<name>/`` holding ``up.sql``,
``down.sql`` and optionally ``metadata.toml``, whose ``run_in_transaction = false`` runs it
outside a transaction. As in diesel, a ``metadata.toml`` that leaves the key out means
false too (its field is ``#[serde(default)] bool``, diesel_migrations/migrations_internals).

The version is the directory name before its first ``_``, written with or without dashes
(``2020-01-01-000000``); diesel records it without them, and the key compares the digits.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
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
from reconciler.errors import MigrationFileError, did_you_mean

DIRECTORY = re.compile(r"^(?P<version>\d+(?:-\d+)*)_(?P<description>.+)$")
KNOWN_FILES = frozenset({"up.sql", "down.sql", "metadata.toml"})


def _claims(entry: Entry) -> bool:
    return entry.is_dir and DIRECTORY.match(entry.name) is not None and (entry.path / "up.sql").is_file()


def _run_in_transaction(path: Path) -> bool:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise MigrationFileError(f"{path}: cannot read: {e}") from e
    unknown = sorted(set(data) - {"run_in_transaction"})
    if unknown:
        raise MigrationFileError(
            f"{path}: unknown key {unknown[0]!r}{did_you_mean(unknown[0], ['run_in_transaction'])} "
            "(diesel reads run_in_transaction = true|false)"
        )
    if not isinstance(data.get("run_in_transaction", False), bool):
        raise MigrationFileError(f"{path}: run_in_transaction must be true or false")
    return bool(data.get("run_in_transaction", False))


def _load(directory: Path) -> tuple[SqlFile, SqlFile | None, None]:
    names = migration_directory_files(
        directory, KNOWN_FILES, "diesel migrations hold up.sql, down.sql and metadata.toml"
    )
    up = read_sql_file(directory / "up.sql")
    down = read_sql_file(directory / "down.sql") if "down.sql" in names else None
    metadata = directory / "metadata.toml"
    if "metadata.toml" in names and not _run_in_transaction(metadata):
        marker = f"diesel: run_in_transaction = false in {metadata}"
        up = replace(up, no_transaction_marker=marker)
        down = replace(down, no_transaction_marker=marker) if down else None
    return up, down, None


def _read(directory: Path, entries: Sequence[Entry]) -> Scan:
    return read_directories(directory, entries, DIESEL, DIRECTORY, "up.sql", _load)


def _new_files(version: str, name: str) -> tuple[NewFile, ...]:
    # What diesel migration generate writes: a directory with up.sql and down.sql.
    return (
        NewFile(f"{version}_{name}/up.sql", "migration", "-- Your SQL goes here\n"),
        NewFile(f"{version}_{name}/down.sql", "rollback", "-- This file should undo anything in `up.sql`\n"),
    )


def _timestamp(now: datetime) -> str:
    """diesel's version: the UTC time as YYYY-MM-DD-HHMMSS."""
    return now.astimezone(UTC).strftime("%Y-%m-%d-%H%M%S")


DIESEL = register(
    Layout(
        name="diesel",
        tool="diesel",
        pattern="<version>_<name>/up.sql",
        expected="<version>_<name>/ directories holding up.sql, down.sql and optionally metadata.toml",
        claims=_claims,
        read=_read,
        rollback_file=lambda m: str(m.path.with_name("down.sql")),
        naming=Naming(_new_files, first_sequence="001", numbering="timestamp", timestamp=_timestamp),
    )
)
