"""One small history that churns as real ones do, written out in each tool's layout.

A table created, a column added, a data migration between schema changes, a comment-only
file (kept for another database's dialect), an enum created and grown, a view replaced
around a column rename, a function replaced twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Step:
    name: str
    up: str
    down: str


STEPS = (
    Step("create_users", "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);\n", "DROP TABLE users;\n"),
    Step("add_email", "ALTER TABLE users ADD COLUMN email text;\n", "ALTER TABLE users DROP COLUMN email;\n"),
    Step(
        "seed_admin",
        "INSERT INTO users (name, email) VALUES ('admin', 'admin@example.com');\n",
        "DELETE FROM users WHERE name = 'admin';\n",
    ),
    Step("mysql_only", "-- MySQL needs an engine change here; nothing to do on PostgreSQL.\n", "-- nothing\n"),
    Step(
        "status_enum",
        "CREATE TYPE user_status AS ENUM ('new', 'active');\n"
        "ALTER TABLE users ADD COLUMN status user_status NOT NULL DEFAULT 'new';\n",
        "ALTER TABLE users DROP COLUMN status;\nDROP TYPE user_status;\n",
    ),
    Step(
        "active_view",
        "CREATE VIEW active_users AS SELECT id, name FROM users WHERE status = 'active';\n",
        "DROP VIEW active_users;\n",
    ),
    Step(
        "count_fn",
        "CREATE OR REPLACE FUNCTION user_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM users $$;\n",
        "DROP FUNCTION user_count();\n",
    ),
    Step("grow_enum", "ALTER TYPE user_status ADD VALUE IF NOT EXISTS 'archived';\n", "-- enum values stay\n"),
    Step(
        "rename_name",
        "DROP VIEW active_users;\nALTER TABLE users RENAME COLUMN name TO full_name;\n"
        "CREATE VIEW active_users AS SELECT id, full_name FROM users WHERE status = 'active';\n"
        "CREATE OR REPLACE FUNCTION user_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM users WHERE status <> 'archived' $$;\n",
        "DROP VIEW active_users;\nALTER TABLE users RENAME COLUMN full_name TO name;\n"
        "CREATE VIEW active_users AS SELECT id, name FROM users WHERE status = 'active';\n"
        "CREATE OR REPLACE FUNCTION user_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM users $$;\n",
    ),
)

# Each layout's versions, in its own order and spelling: widths, timestamps, dotted parts.
VERSIONS = {
    "poststack": [f"{i:03d}" for i in range(1, 10)],
    "golang-migrate": ["1", "2", "3", "4", "5", "6", "7", "8", "10"],
    "dbmate": [f"2024010112{i:02d}00" for i in range(1, 10)],
    "flyway": ["1", "1.1", "1.2", "1.10", "2", "2.0.1", "3", "3.1", "10"],
    "diesel": [f"2024-01-{i:02d}-120000" for i in range(1, 10)],
    "prisma": [f"202401{i:02d}120000" for i in range(1, 10)],
}


def write_history(layout: str, directory: Path, steps: tuple[Step, ...] = STEPS) -> list[str]:
    """Write ``steps`` in ``layout`` into ``directory``; returns the versions as written."""
    directory.mkdir(parents=True, exist_ok=True)
    versions = VERSIONS[layout][: len(steps)]
    for version, step in zip(versions, steps, strict=True):
        for name, text in files_for(layout, version, step).items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if layout == "prisma":
        (directory / "migration_lock.toml").write_text('provider = "postgresql"\n')
    return versions


def files_for(layout: str, version: str, step: Step) -> dict[str, str]:
    if layout == "poststack":
        return {f"{version}_{step.name}.sql": step.up, f"{version}_{step.name}.rollback.sql": step.down}
    if layout == "golang-migrate":
        return {f"{version}_{step.name}.up.sql": step.up, f"{version}_{step.name}.down.sql": step.down}
    if layout == "dbmate":
        return {f"{version}_{step.name}.sql": f"-- migrate:up\n{step.up}\n-- migrate:down\n{step.down}"}
    if layout == "flyway":
        return {f"V{version}__{step.name}.sql": step.up, f"U{version}__{step.name}.sql": step.down}
    if layout == "diesel":
        return {f"{version}_{step.name}/up.sql": step.up, f"{version}_{step.name}/down.sql": step.down}
    if layout == "prisma":
        return {f"{version}_{step.name}/migration.sql": step.up}
    raise ValueError(layout)


def long_history(groups: int) -> tuple[Step, ...]:
    """Ten migrations per group, each group churning its own table the way real histories do;
    a comment-only migration (both halves) in every group, and comment-only downs where
    PostgreSQL cannot undo (an enum value)."""
    steps: list[Step] = []
    for g in range(groups):
        t, v, f, e = f"t{g}", f"v{g}", f"f{g}", f"e{g}"
        steps += [
            Step(
                f"create_{t}", f"CREATE TABLE {t} (id serial PRIMARY KEY, name text NOT NULL);\n", f"DROP TABLE {t};\n"
            ),
            Step(
                f"add_email_{t}", f"ALTER TABLE {t} ADD COLUMN email text;\n", f"ALTER TABLE {t} DROP COLUMN email;\n"
            ),
            Step(
                f"seed_{t}",
                f"INSERT INTO {t} (name) SELECT 'row ' || n FROM generate_series(1, 3) n;\n",
                f"DELETE FROM {t} WHERE name LIKE 'row %';\n",
            ),
            Step(f"other_dialect_{g}", "-- SQLite cannot do this; PostgreSQL needs nothing.\n", "-- nothing to undo\n"),
            Step(f"view_{v}", f"CREATE VIEW {v} AS SELECT id, name FROM {t};\n", f"DROP VIEW {v};\n"),
            Step(
                f"function_{f}",
                f"CREATE OR REPLACE FUNCTION {f}() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM {t} $$;\n",
                f"DROP FUNCTION {f}();\n",
            ),
            Step(
                f"rename_{t}_name",
                f"DROP VIEW {v};\nALTER TABLE {t} RENAME COLUMN name TO full_name;\n"
                f"CREATE VIEW {v} AS SELECT id, full_name FROM {t};\n"
                f"CREATE OR REPLACE FUNCTION {f}() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) + 0 FROM {t} $$;\n",
                f"DROP VIEW {v};\nALTER TABLE {t} RENAME COLUMN full_name TO name;\n"
                f"CREATE VIEW {v} AS SELECT id, name FROM {t};\n"
                f"CREATE OR REPLACE FUNCTION {f}() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM {t} $$;\n",
            ),
            Step(
                f"enum_{e}",
                f"CREATE TYPE {e} AS ENUM ('new');\nALTER TABLE {t} ADD COLUMN status {e} NOT NULL DEFAULT 'new';\n",
                f"ALTER TABLE {t} DROP COLUMN status;\nDROP TYPE {e};\n",
            ),
            Step(
                f"grow_{e}", f"ALTER TYPE {e} ADD VALUE IF NOT EXISTS 'done';\n", "-- enum values cannot be removed\n"
            ),
            Step(f"index_{t}", f"CREATE INDEX {t}_email ON {t} (email);\n", f"DROP INDEX {t}_email;\n"),
        ]
    return tuple(steps)


def write_long_history(layout: str, directory: Path, groups: int) -> list[str]:
    """``long_history(groups)`` in ``layout``, with versions of that layout's kind."""
    steps = long_history(groups)
    directory.mkdir(parents=True, exist_ok=True)
    versions = [_nth_version(layout, i) for i in range(len(steps))]
    for version, step in zip(versions, steps, strict=True):
        for name, text in files_for(layout, version, step).items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return versions


def _nth_version(layout: str, i: int) -> str:
    if layout == "flyway":
        return f"{i // 10 + 1}.{i % 10}"  # 1.0 .. 1.9, 2.0 ...
    if layout == "diesel":
        return f"2023-{i // 28 % 12 + 1:02d}-{i % 28 + 1:02d}-{i // 336:06d}"
    if layout in ("dbmate", "prisma"):
        return f"{20230101000000 + i * 100}"
    if layout == "golang-migrate":
        return str(i + 1)  # 1 .. 300: digits of every width
    return f"{i + 1:04d}"
