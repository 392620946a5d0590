"""Other tools' tracking tables, read as each tool writes them, for ``db import``.

One reader per tool, registered by name. Each turns its table into ``ForeignRow``s in the
order the tool applied them: which versions it says are applied, which failed part-way
(golang-migrate's ``dirty``, Flyway's and sqlx's ``success = false``, a Prisma migration
never finished), and which were undone. Read-only; the foreign table is never written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.errors import UsageError, did_you_mean
from reconciler.statements import qualified

APPLIED, FAILED, UNDONE, BASELINE = "applied", "failed", "undone", "baseline"


@dataclass(frozen=True)
class ForeignRow:
    version: str  # as the tool recorded it
    state: str  # APPLIED, FAILED, UNDONE or BASELINE (every version up to this one counts as applied)
    description: str | None = None
    checksum: str | None = None  # the tool's own, in ``algorithm``; None when it keeps none
    algorithm: str | None = None
    applied_at: datetime | None = None
    detail: str | None = None  # the tool's error text or log, for a failed one


@dataclass(frozen=True)
class ForeignHistory:
    tool: str  # as messages name it: Flyway, dbmate, ...
    table: str  # schema-qualified, for messages
    rows: tuple[ForeignRow, ...]  # in the order the tool applied them
    # golang-migrate keeps one row, the current version: everything below it is applied too.
    cumulative: bool = False


@dataclass(frozen=True)
class ForeignTool:
    name: str  # as --from takes it
    label: str  # for messages
    table: str  # its default table name
    columns: frozenset[str]  # the columns its table must have
    read: Callable[[Any, str], tuple[ForeignRow, ...]]  # session, qualified table -> rows
    cumulative: bool = False
    # Columns another tool's table of the same name has and this one's never does: dbmate's
    # and golang-migrate's are both schema_migrations, told apart by golang-migrate's dirty.
    not_columns: frozenset[str] = frozenset()


TOOLS: dict[str, ForeignTool] = {}


def _register(tool: ForeignTool) -> ForeignTool:
    if tool.name in TOOLS:
        raise ValueError(f"foreign tool {tool.name!r} registered twice")
    TOOLS[tool.name] = tool
    return tool


def tool_named(name: str) -> ForeignTool:
    key = name.strip().lower()
    if key in TOOLS:
        return TOOLS[key]
    raise UsageError(
        f"poststack cannot import from {name!r}{did_you_mean(key, TOOLS)}", f"It imports from {', '.join(TOOLS)}."
    )


def read_foreign_history(session: Any, tool: ForeignTool, schema: str, table: str | None) -> ForeignHistory:
    """``tool``'s history from ``schema.table`` (its default table when None). A missing table,
    or one of another shape, is a usage error naming it."""
    name = table or tool.table
    where = f"{schema}.{name}"
    rows = session.query(
        "SELECT a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND a.attnum > 0 AND NOT a.attisdropped",
        {"schema": schema, "table": name},
    )
    if not rows:
        raise UsageError(
            f"no {tool.label} history table {where} in this database",
            f"Name it with --from-table (and --from-schema) if {tool.label} was told to use another.",
        )
    columns = {r[0] for r in rows}
    missing = tool.columns - columns
    if columns & tool.not_columns:
        other = next((t.label for t in TOOLS.values() if t is not tool and t.columns <= columns), "another tool")
        raise UsageError(
            f"{where} is not {tool.label}'s history table: it has a {', '.join(sorted(columns & tool.not_columns))} "
            f"column, as {other}'s has",
            f"Its columns: {', '.join(sorted(columns))}. Check --from.",
        )
    if missing:
        raise UsageError(
            f"{where} is not {tool.label}'s history table: it has no {', '.join(sorted(missing))} column",
            f"Its columns: {', '.join(sorted(columns))}. Check --from.",
        )
    return ForeignHistory(tool.label, where, tool.read(session, qualified(schema, name)), tool.cumulative)


# --- the tools ----------------------------------------------------------------------------


def _dbmate(session: Any, table: str) -> tuple[ForeignRow, ...]:
    # dbmate keeps a row per applied version and deletes it on rollback; it records no time.
    return tuple(ForeignRow(str(v), APPLIED) for (v,) in session.query(f"SELECT version FROM {table} ORDER BY version"))


def _golang_migrate(session: Any, table: str) -> tuple[ForeignRow, ...]:
    # One row: the current version, and whether its last run failed part-way (dirty).
    return tuple(
        ForeignRow(
            str(v),
            FAILED if dirty else APPLIED,
            # golang-migrate sets the target version dirty before each step: an up of this
            # version, or a down from the one after it, stopped part-way.
            detail="dirty = true: its up, or the down of the migration after it, stopped part-way" if dirty else None,
        )
        for v, dirty in session.query(f"SELECT version, dirty FROM {table}")
    )


def _sqlx(session: Any, table: str) -> tuple[ForeignRow, ...]:
    return tuple(
        ForeignRow(
            str(v),
            APPLIED if success else FAILED,
            description,
            bytes(checksum).hex() if checksum is not None else None,
            "sha384" if checksum is not None else None,
            installed_on,
            None if success else "success = false",
        )
        for v, description, success, checksum, installed_on in session.query(
            f"SELECT version, description, success, checksum, installed_on FROM {table} ORDER BY version"
        )
    )


def _diesel(session: Any, table: str) -> tuple[ForeignRow, ...]:
    return tuple(
        ForeignRow(str(v), APPLIED, applied_at=run_on)
        for v, run_on in session.query(f"SELECT version, run_on FROM {table} ORDER BY version")
    )


_PRISMA_NAME = re.compile(r"^(?P<version>\d+)_(?P<description>.+)$")


def _prisma(session: Any, table: str) -> tuple[ForeignRow, ...]:
    rows = []
    for name, checksum, finished_at, rolled_back_at, logs, started_at in session.query(
        f"SELECT migration_name, checksum, finished_at, rolled_back_at, logs, started_at FROM {table} "
        "ORDER BY started_at, migration_name"
    ):
        match = _PRISMA_NAME.match(name)
        version, description = (match["version"], match["description"]) if match else (name, None)
        if rolled_back_at is not None:
            state = UNDONE  # prisma migrate resolve --rolled-back: not applied
        elif finished_at is None:
            state = FAILED
        else:
            state = APPLIED
        rows.append(ForeignRow(version, state, description, checksum, "sha256", finished_at or started_at, logs))
    return tuple(rows)


def _flyway(session: Any, table: str) -> tuple[ForeignRow, ...]:
    rows = []
    for version, description, kind, checksum, installed_on, success in session.query(
        f"SELECT version, description, type, checksum, installed_on, success FROM {table} ORDER BY installed_rank"
    ):
        if kind == "SCHEMA":
            continue  # Flyway's own bookkeeping: the schemas it created
        if kind == "DELETE":
            # flyway repair's mark that a migration's earlier row no longer counts
            if version is not None:
                rows.append(ForeignRow(str(version), UNDONE, description, detail="deleted by flyway repair"))
            continue
        if version is None:
            # A repeatable: its file is R__<description with _ for spaces>.sql; the last row counts.
            checksum_text = None if checksum is None else str(checksum)
            rows.append(
                ForeignRow(
                    f"R__{description.replace(' ', '_')}",
                    APPLIED if success else FAILED,
                    description,
                    checksum_text,
                    "flyway-crc32" if checksum_text else None,
                    installed_on,
                    None if success else f"success = false ({kind})",
                )
            )
            continue
        if kind == "BASELINE":
            state = BASELINE
        elif kind.startswith("UNDO"):
            state = UNDONE if success else FAILED
        else:
            state = APPLIED if success else FAILED
        checksum_text = None if checksum is None or kind != "SQL" else str(checksum)
        rows.append(
            ForeignRow(
                str(version),
                state,
                description,
                checksum_text,
                "flyway-crc32" if checksum_text else None,
                installed_on,
                None if success else f"success = false ({kind})",
            )
        )
    return tuple(rows)


_register(
    ForeignTool(
        "flyway",
        "Flyway",
        "flyway_schema_history",
        frozenset({"installed_rank", "version", "type", "success", "checksum", "description"}),
        _flyway,
    )
)
_register(
    ForeignTool(
        "dbmate", "dbmate", "schema_migrations", frozenset({"version"}), _dbmate, not_columns=frozenset({"dirty"})
    )
)
_register(
    ForeignTool(
        "golang-migrate",
        "golang-migrate",
        "schema_migrations",
        frozenset({"version", "dirty"}),
        _golang_migrate,
        cumulative=True,
    )
)
_register(
    ForeignTool(
        "sqlx",
        "sqlx",
        "_sqlx_migrations",
        frozenset({"version", "description", "success", "checksum", "installed_on"}),
        _sqlx,
    )
)
_register(ForeignTool("diesel", "diesel", "__diesel_schema_migrations", frozenset({"version", "run_on"}), _diesel))
_register(
    ForeignTool(
        "prisma",
        "Prisma",
        "_prisma_migrations",
        frozenset({"migration_name", "checksum", "finished_at", "rolled_back_at", "logs", "started_at"}),
        _prisma,
    )
)
