"""golang-migrate's layout, shared by sqlx and popx: ``<version>_<name>.up.sql`` with an
optional ``<version>_<name>.down.sql``.

popx adds infixes before ``.up``/``.down``: a dialect (``.postgres.``; files for other
databases are not PostgreSQL's and are left to them, and a dialect's file wins over the
generic one) and ``.autocommit.`` (run outside a transaction). sqlx's first-line
``-- no-transaction`` runs the file outside one too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from reconciler.desired.files import FileProblem, Scan, SqlFile, read_sql_file
from reconciler.desired.layouts.base import Entry, Found, Layout, Naming, NewFile, assemble, register, unrecognized

FILE_NAME = re.compile(
    r"^(?P<version>\d+)_(?P<description>.+?)"
    r"(?:\.(?P<dialect>postgres|postgresql|pg|cockroach|cockroachdb|crdb|mysql|mariadb|sqlite|sqlite3|mssql|sqlserver|yugabyte))?"
    r"(?P<autocommit>\.autocommit)?\.(?P<direction>up|down)\.sql$"
)
OURS = (None, "postgres", "postgresql", "pg")  # PostgreSQL's, as popx canonicalizes them
SQLX_NO_TRANSACTION = "-- no-transaction"


def _claims(entry: Entry) -> bool:
    return not entry.is_dir and FILE_NAME.match(entry.name) is not None


def _read_one(path: Path, autocommit: bool) -> SqlFile:
    file = read_sql_file(path)
    if autocommit:
        return _marked(file, f"popx: {path.name} is .autocommit.")
    return sqlx_marked(file)


def sqlx_marked(file: SqlFile) -> SqlFile:
    """sqlx runs a file that starts with ``-- no-transaction`` outside a transaction (its own
    test is starts_with), in its reversible and in its plain ``<version>_<name>.sql`` files."""
    if file.text.startswith(SQLX_NO_TRANSACTION):
        return _marked(file, f"sqlx: the file starts with {SQLX_NO_TRANSACTION}")
    return file


def _marked(file: SqlFile, marker: str) -> SqlFile:
    from dataclasses import replace

    return replace(file, no_transaction_marker=marker)


def _read(directory: Path, entries: Sequence[Entry]) -> Scan:
    problems: list[FileProblem] = []
    # (version, description, direction) -> (path, dialect, autocommit); a dialect's file wins
    chosen: dict[tuple[str, str, str], tuple[Path, str | None, bool]] = {}
    for entry in entries:
        match = FILE_NAME.match(entry.name) if not entry.is_dir else None
        if match is None or match["dialect"] not in OURS:
            continue
        slot = (match["version"], match["description"], match["direction"])
        earlier = chosen.get(slot)
        if earlier is not None and (earlier[1] is None) == (match["dialect"] is None):
            names = f"{earlier[0].name}, {entry.name}"
            problems.append(
                FileProblem(
                    "duplicate_version",
                    f"{directory}: two files for one migration: {names}",
                    match["version"],
                    (earlier[0], entry.path),
                )
            )
            continue
        if earlier is None or earlier[1] is None:
            chosen[slot] = (entry.path, match["dialect"], match["autocommit"] is not None)
    found = []
    for (version, description, direction), (path, _dialect, autocommit) in sorted(chosen.items()):
        if direction != "up":
            if (version, description, "up") not in chosen:
                message = f"{path}: down file has no up file {version}_{description}.up.sql beside it"
                problems.append(FileProblem("orphan_companion", message, None, (path,)))
            continue
        down = chosen.get((version, description, "down"))

        def load(path: Path = path, autocommit: bool = autocommit, down: tuple[Path, str | None, bool] | None = down):  # type: ignore[no-untyped-def]
            return _read_one(path, autocommit), (_read_one(down[0], down[2]) if down else None), None

        paths = (path, down[0]) if down else (path,)
        found.append(Found(version, description, paths, load))
    return assemble(directory, found, unrecognized(entries, UPDOWN) + problems)


def _new_files(version: str, name: str) -> tuple[NewFile, ...]:
    # As golang-migrate's create writes them (-seq: six digits; else a UTC timestamp).
    return (
        NewFile(f"{version}_{name}.up.sql", "migration", ""),
        NewFile(f"{version}_{name}.down.sql", "rollback", ""),
    )


UPDOWN = register(
    Layout(
        name="golang-migrate",
        tool="golang-migrate",
        pattern="<version>_<name>.up.sql",
        expected="<version>_<name>.up.sql and <version>_<name>.down.sql, as golang-migrate, sqlx and popx write them",
        claims=_claims,
        read=_read,
        rollback_file=lambda m: str(m.path.with_name(f"{m.version}_{m.description}.down.sql")),
        aliases=("sqlx", "popx", "migrate"),
        naming=Naming(_new_files, first_sequence="000001", numbering="timestamp"),
    )
)
