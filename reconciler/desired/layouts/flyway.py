"""Flyway's layout: ``V<version>__<description>.sql``, ``U<version>__<description>.sql`` undo
files, per-script ``<file>.sql.conf`` settings, and SQL callbacks.

Versions are dotted (``V1.2.10__x``, or ``V1_2_10__x``: an underscore is a dot, as Flyway
reads it) and compare part by part as numbers. ``executeInTransaction=false`` in a script's
``.conf`` runs it outside a transaction. Flyway substitutes ``${placeholders}``; poststack
does not know their values, so a file that uses one is refused, not run half-right.
Repeatable ``R__<description>.sql`` files run after every versioned migration, by name, and
again whenever they change, as Flyway runs them; their version is written ``R__<description>``.

SQL callbacks (``beforeMigrate.sql``, ``afterEachMigrate__grants.sql``: a Flyway event, then an
optional ``__<description>``) are found beside the migrations, as Flyway finds them in its
locations. They are not migrations: never tracked, never pending. poststack runs the migrate
and undo ones (files.RUN_EVENTS) where Flyway does; the other events' (beforeClean, ...) are
read, so they are not refused as bad names, and not run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from reconciler.desired.files import Callback, FileProblem, Scan, SqlFile, read_sql_file
from reconciler.desired.layouts.base import Entry, Found, Layout, Naming, NewFile, assemble, register, unrecognized
from reconciler.desired.versions import REPEATABLE_PREFIX, VersionKey, parse_version
from reconciler.errors import MigrationFileError

# The description is optional: V1.sql is a migration (Flyway's ResourceNameParser).
FILE_NAME = re.compile(r"^(?P<prefix>[VU])(?P<version>\d+(?:[._]\d+)*)(?:__(?P<description>.+))?\.sql$")
REPEATABLE = re.compile(r"^R__(?P<description>.+)\.sql$")
CONF_SUFFIX = ".sql.conf"
PLACEHOLDER = re.compile(r"\$\{[^}\n]*\}")
# Flyway's callback events (its api/callback/Event.java ids): a script named after one, with an
# optional __<description>, is a callback (its SqlScriptCallbackFactory).
EVENTS = frozenset(
    f"{when}{what}"
    for what in ("Migrate", "EachMigrate", "Undo", "EachUndo", "Clean", "Validate", "Baseline", "Repair", "Info")
    for when in ("before", "after")
) | frozenset(
    {
        "beforeEachMigrateStatement",
        "afterEachMigrateStatement",
        "afterEachMigrateStatementError",
        "afterEachMigrateError",
        "afterMigrateError",
        "afterMigrateApplied",
        "afterVersioned",
        "beforeRepeatables",
        "beforeEachUndoStatement",
        "afterEachUndoStatement",
        "afterEachUndoStatementError",
        "afterEachUndoError",
        "afterUndoError",
        "afterCleanError",
        "afterValidateError",
        "afterBaselineError",
        "afterRepairError",
        "afterInfoError",
        "createSchema",
    }
)
CALLBACK = re.compile(r"^(?P<event>[a-zA-Z]+)(?:__(?P<description>.+))?\.sql$")


def _callback(name: str) -> re.Match[str] | None:
    match = CALLBACK.match(name)
    return match if match is not None and match["event"] in EVENTS else None


def _is_flyways(name: str) -> bool:
    return bool(FILE_NAME.match(name) or REPEATABLE.match(name) or _callback(name) or name.endswith(CONF_SUFFIX))


def _claims(entry: Entry) -> bool:
    if entry.is_dir:  # Flyway reads its locations recursively: a folder per release is common
        return any(_is_flyways(f.name) for f in _files_below(entry))
    return _is_flyways(entry.name)


def _files_below(entry: Entry) -> list[Entry]:
    """``entry``, or every file under it (hidden ones left out, as at the top)."""
    if not entry.is_dir:
        return [entry]

    def unreadable(error: OSError) -> None:
        raise MigrationFileError(f"{error.filename}: cannot read it: {error.strerror}")

    found = []
    for root, folders, files in os.walk(entry.path, onerror=unreadable):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        found += [Entry(Path(root) / name, False) for name in sorted(files) if not name.startswith(".")]
    return found


def _read_conf(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MigrationFileError(f"{path}: cannot read: {e}") from e
    settings = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        known = {"executeInTransaction": ("true", "false"), "encoding": ("UTF-8", "utf-8", "UTF8")}
        if not sep or key not in known or value not in known[key]:
            raise MigrationFileError(
                f"{path}:{number}: {line!r} is not a script setting poststack can honour "
                "(executeInTransaction=true|false, encoding=UTF-8)"
            )
        settings[key] = value
    return settings


def _read_script(path: Path, conf: Path | None) -> SqlFile:
    file = read_sql_file(path)
    found = PLACEHOLDER.search(file.text)
    if found is not None:
        line = file.text.count("\n", 0, found.start()) + 1
        raise MigrationFileError(
            f"{path}:{line}: Flyway placeholder {found.group()}: poststack does not substitute placeholders"
        )
    if conf is not None and _read_conf(conf).get("executeInTransaction") == "false":
        file = replace(file, no_transaction_marker=f"Flyway: executeInTransaction=false in {conf.name}")
    return file


def _read(directory: Path, entries: Sequence[Entry]) -> Scan:
    problems: list[FileProblem] = []
    entries = [f for e in entries for f in _files_below(e)]
    present = frozenset(e.path for e in entries)

    def conf_of(script: Path) -> Path | None:
        conf = script.with_name(script.name + ".conf")
        return conf if conf in present else None

    versioned: dict[Path, tuple[Path, re.Match[str]]] = {}
    undo: dict[VersionKey, Path] = {}
    found = []
    callbacks: dict[str, Callback] = {}
    for entry in entries:
        if entry.is_dir:
            continue
        callback = _callback(entry.name)
        if callback:
            if entry.name in callbacks:  # Flyway: "Found more than 1 SQL callback script called ..."
                other = callbacks[entry.name].file.path
                message = f"{entry.path}: a second SQL callback called {entry.name} (the other: {other})"
                problems.append(FileProblem("duplicate_callback", message, None, (other, entry.path)))
                continue
            try:
                script = _read_script(entry.path, conf_of(entry.path))
            except MigrationFileError as e:
                problems.append(FileProblem("unreadable", e.summary, None, (entry.path,)))
                continue
            callbacks[entry.name] = Callback(callback["event"], callback["description"], script)
            continue
        repeatable = REPEATABLE.match(entry.name)
        if repeatable:

            def load_repeatable(path: Path = entry.path):  # type: ignore[no-untyped-def]
                return _read_script(path, conf_of(path)), None, None

            version = f"{REPEATABLE_PREFIX}{repeatable['description']}"
            found.append(Found(version, repeatable["description"], (entry.path,), load_repeatable))
            continue
        if entry.name.endswith(CONF_SUFFIX):
            if entry.path.with_name(entry.name.removesuffix(".conf")) not in present:
                message = f"{entry.path}: script settings for {entry.name.removesuffix('.conf')}, which is not there"
                problems.append(FileProblem("orphan_companion", message, None, (entry.path,)))
            continue
        match = FILE_NAME.match(entry.name)
        if match is None:
            continue
        version = match["version"].replace("_", ".")
        if match["prefix"] == "U":
            key = parse_version(version)
            if key in undo:
                message = f"{entry.path}: a second undo file for version {version} (the other: {undo[key]})"
                problems.append(FileProblem("duplicate_version", message, version, (undo[key], entry.path)))
            undo[key] = entry.path
        else:
            versioned[entry.path] = (entry.path, match)
    matched_undo = set()
    for path, match in versioned.values():
        version = match["version"].replace("_", ".")
        undo_path = undo.get(parse_version(version))
        matched_undo.add(parse_version(version))

        def load(path: Path = path, undo_path: Path | None = undo_path):  # type: ignore[no-untyped-def]
            down = _read_script(undo_path, conf_of(undo_path)) if undo_path else None
            return _read_script(path, conf_of(path)), down, None

        made_of = (path, undo_path) if undo_path else (path,)
        found.append(Found(version, match["description"] or "", made_of, load))
    for version, path in sorted(undo.items()):
        if version not in matched_undo:
            message = f"{path}: undo file has no versioned migration V{version}__... beside it"
            problems.append(FileProblem("orphan_companion", message, None, (path,)))
    # One event's callbacks run unnamed first, then by description (Flyway's compareTo).
    ordered = sorted(callbacks.values(), key=lambda c: (c.event, c.description is not None, c.description or ""))
    return assemble(directory, found, unrecognized(entries, FLYWAY) + problems, ordered)


def _new_files(version: str, name: str) -> tuple[NewFile, ...]:
    return (
        NewFile(f"V{version}__{name}.sql", "migration", f"-- V{version}: {name}\n"),
        NewFile(f"U{version}__{name}.sql", "rollback", f"-- Undoes V{version}__{name}.sql (Flyway's undo).\n"),
    )


FLYWAY = register(
    Layout(
        name="flyway",
        tool="Flyway",
        pattern="V<version>__<description>.sql",
        expected=(
            "V<version>__<description>.sql, with U<version>__<description>.sql undo files, "
            "R__<description>.sql repeatables and <event>.sql callbacks such as beforeMigrate.sql"
        ),
        claims=_claims,
        read=_read,
        rollback_file=lambda m: str(m.path.with_name(f"U{m.version}__{m.description}.sql")),
        naming=Naming(_new_files, first_sequence="1", numbering="sequence"),
    )
)
