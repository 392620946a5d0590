"""poststack's own layout: ``NNN_description.sql`` with ``.rollback.sql`` and ``.verify.sql``
companions. Also sqlx's and Flyway-less projects' plain ``<version>_<name>.sql``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from reconciler.desired.files import FileProblem, Scan, read_sql_file
from reconciler.desired.layouts.base import Entry, Found, Layout, Naming, NewFile, assemble, register, unrecognized
from reconciler.desired.layouts.dbmate import has_dbmate_sections
from reconciler.desired.layouts.updown import sqlx_marked

FILE_NAME = re.compile(
    r"^(?P<version>\d+)_(?P<description>[A-Za-z0-9][A-Za-z0-9_\-]*)(?:\.(?P<kind>rollback|verify))?\.sql$"
)
PATTERN = "NNN_description.sql"
EXPECTED = "NNN_description.sql, NNN_description.rollback.sql or NNN_description.verify.sql"


def _claims(entry: Entry) -> bool:
    if entry.is_dir or not FILE_NAME.match(entry.name):
        return False
    # dbmate's files have the same names; their -- migrate:up line tells them apart.
    return FILE_NAME.match(entry.name)["kind"] is not None or not has_dbmate_sections(entry.path)  # type: ignore[index]


def _read(directory: Path, entries: Sequence[Entry]) -> Scan:
    problems: list[FileProblem] = []
    mains: dict[str, tuple[Path, re.Match[str]]] = {}
    companions: dict[tuple[str, str], Path] = {}
    for entry in entries:
        match = FILE_NAME.match(entry.name)
        if match is None or not _claims(entry):
            continue  # a dbmate file among ours is refused by name (unrecognized), never run whole
        if match["kind"]:
            companions[(match["kind"], f"{match['version']}_{match['description']}")] = entry.path
        else:
            mains[entry.name] = (entry.path, match)
    found = []
    for path, match in mains.values():
        label = f"{match['version']}_{match['description']}"
        rollback = companions.pop(("rollback", label), None)
        verify = companions.pop(("verify", label), None)

        def load(path: Path = path, rollback: Path | None = rollback, verify: Path | None = verify):  # type: ignore[no-untyped-def]
            return (
                sqlx_marked(read_sql_file(path)),  # sqlx's plain files are this layout too
                read_sql_file(rollback) if rollback else None,
                read_sql_file(verify) if verify else None,
            )

        paths = tuple(p for p in (path, rollback, verify) if p is not None)
        verify_at = path.with_name(f"{label}.verify.sql")
        found.append(Found(match["version"], match["description"], paths, load, verify_at))
    for (kind, label), path in sorted(companions.items()):
        message = f"{path}: {kind} file has no migration {label}.sql beside it"
        problems.append(FileProblem("orphan_companion", message, None, (path,)))
    problems = unrecognized(entries, POSTSTACK) + problems
    return assemble(directory, found, problems)


def _new_files(version: str, name: str) -> tuple[NewFile, ...]:
    label = f"{version}_{name}"
    return (
        NewFile(
            f"{label}.sql", "migration", f"-- {label}: the change, run in one transaction with its tracking row.\n"
        ),
        NewFile(f"{label}.rollback.sql", "rollback", f"-- Undoes {label}.sql (poststack db rollback).\n"),
    )


def _new_verify(version: str, name: str) -> NewFile:
    label = f"{version}_{name}"
    text = (
        f"-- One query returning one boolean: is {label} applied? It has the last word in db diagnose.\n"
        "-- For example: SELECT to_regclass('public.users') IS NOT NULL;\n"
    )
    return NewFile(f"{label}.verify.sql", "verify", text)


POSTSTACK = register(
    Layout(
        name="poststack",
        tool="poststack",
        pattern=PATTERN,
        expected=EXPECTED,
        claims=_claims,
        read=_read,
        rollback_file=lambda m: str(m.path.with_name(f"{m.label}.rollback.sql")),
        naming=Naming(_new_files, first_sequence="001", numbering="sequence", verify=_new_verify),
    )
)
