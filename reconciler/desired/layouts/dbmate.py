"""dbmate's layout: one file per migration, ``<version>_<name>.sql``, holding both halves:

    -- migrate:up [transaction:false]
    ...
    -- migrate:down [transaction:false]
    ...

Each half is read on its own, with its lines where they are in the file (the other half's
lines left blank), so errors name the file's own line numbers. A file without
``-- migrate:up`` is not dbmate's; an option dbmate does not know is an error, not ignored.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from reconciler.desired.files import FileProblem, Scan, SqlFile, file_bytes, read_sql_file
from reconciler.desired.layouts.base import Entry, Found, Layout, Naming, NewFile, assemble, register, unrecognized
from reconciler.errors import MigrationFileError

# dbmate's own rule: the leading digits are the version, the rest is free (pkg/dbmate/db.go).
FILE_NAME = re.compile(r"^(?P<version>\d+)[_\-.]?(?P<description>.*)\.sql$")
MARKER = re.compile(r"^--\s*migrate:(?P<direction>up|down)\b(?P<options>.*)$")
_MARKER_BYTES = re.compile(rb"^--[ \t]*migrate:up\b", re.MULTILINE)
OPTIONS = {"transaction": ("true", "false")}


def has_dbmate_sections(path: Path) -> bool:
    """Does the file have dbmate's ``-- migrate:up`` line? Unreadable: no (its reader says why)."""
    try:
        data = file_bytes(path)
    except OSError:
        return False
    # The substring first: most files of a directory are not dbmate's, and a plain search is
    # many times faster than the line-anchored pattern.
    return b"migrate:up" in data and _MARKER_BYTES.search(data) is not None


def _anothers(entry: Entry) -> bool:
    """Named like a dbmate file but plainly another tool's (golang-migrate's .up.sql, ...): said
    so by name, rather than read as a dbmate file that lacks its -- migrate:up line."""
    from reconciler.desired.layouts.base import unique_layouts

    others = (o for o in unique_layouts() if o.name not in ("dbmate", "poststack"))
    return not has_dbmate_sections(entry.path) and any(o.claims(entry) for o in others)


def _claims(entry: Entry) -> bool:
    return not entry.is_dir and FILE_NAME.match(entry.name) is not None and has_dbmate_sections(entry.path)


def split_sections(file: SqlFile) -> tuple[SqlFile, SqlFile | None]:
    """The up and down halves of a dbmate file, each with the file's line numbering."""
    lines = file.text.split("\n")
    starts: dict[str, tuple[int, dict[str, str]]] = {}
    for number, line in enumerate(lines):
        match = MARKER.match(line.rstrip())  # at the start of the line, as dbmate requires
        if match is None:
            continue
        direction = match["direction"]
        if direction in starts:
            raise MigrationFileError(f"{file.path}:{number + 1}: a second -- migrate:{direction} line")
        starts[direction] = (number, _options(file.path, number + 1, match["options"]))
    if "up" not in starts:
        raise MigrationFileError(f"{file.path}:1: no -- migrate:up line (dbmate's layout needs one)")
    if "down" in starts and starts["down"][0] < starts["up"][0]:
        raise MigrationFileError(
            f"{file.path}:{starts['down'][0] + 1}: -- migrate:down comes before -- migrate:up (dbmate refuses that too)"
        )
    bounds = sorted((index, direction) for direction, (index, _) in starts.items())

    def half(direction: str) -> SqlFile:
        first, options = starts[direction]
        following = [index for index, _ in bounds if index > first]
        last = following[0] if following else len(lines)
        text = "\n".join(line if first < i < last else "" for i, line in enumerate(lines))
        head = [line for line in lines[:first] if line.strip() and not line.strip().startswith("--")]
        if direction == "up" and head:
            raise MigrationFileError(f"{file.path}:1: SQL before the -- migrate:up line belongs to neither half")
        data = text.encode("utf-8")
        section = replace(file, text=text, raw_sha256=hashlib.sha256(data).hexdigest(), raw=data)
        if options.get("transaction") == "false":
            section = replace(section, no_transaction_marker=f"dbmate: -- migrate:{direction} transaction:false")
        return section

    return half("up"), (half("down") if "down" in starts else None)


def _options(path: Path, line: int, text: str) -> dict[str, str]:
    options = {}
    for word in text.split():
        key, _, value = word.partition(":")
        if key not in OPTIONS or value not in OPTIONS[key]:
            raise MigrationFileError(
                f"{path}:{line}: dbmate option {word!r} is not one dbmate knows (transaction:true or transaction:false)"
            )
        options[key] = value
    return options


def _read(directory: Path, entries: Sequence[Entry]) -> Scan:
    found = []
    for entry in entries:
        # Every file named like a migration is read as one: without -- migrate:up it is an
        # error here, as it is to dbmate, not another layout's file to pass over.
        match = FILE_NAME.match(entry.name) if not entry.is_dir else None
        if match is None or _anothers(entry):
            continue

        def load(path: Path = entry.path):  # type: ignore[no-untyped-def]
            up, down = split_sections(read_sql_file(path))
            return up, down, None

        found.append(Found(match["version"], match["description"], (entry.path,), load))
    problems: list[FileProblem] = unrecognized(
        [e for e in entries if not FILE_NAME.match(e.name) or _anothers(e)], DBMATE
    )
    return assemble(directory, found, problems)


def _new_files(version: str, name: str) -> tuple[NewFile, ...]:
    # What dbmate new writes: one file, both halves (the down half is the rollback).
    return (NewFile(f"{version}_{name}.sql", "migration_and_rollback", "-- migrate:up\n\n\n-- migrate:down\n\n"),)


DBMATE = register(
    Layout(
        name="dbmate",
        tool="dbmate",
        pattern="<version>_<name>.sql with -- migrate:up",
        expected="<version>_<name>.sql holding -- migrate:up and -- migrate:down sections",
        claims=_claims,
        read=_read,
        rollback_file=lambda m: f"{m.path} (a -- migrate:down section)",
        naming=Naming(_new_files, first_sequence="001", numbering="timestamp"),
    )
)
