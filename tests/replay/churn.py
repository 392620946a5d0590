"""Random histories that churn as real ones do, for property tests and benchmarks.

Tables are created and renamed, columns added, renamed and dropped; views are dropped and
recreated around those changes; functions are replaced again and again; enums grow; data
migrations and comment-only files sit in between. Some migrations stand alone (a table no
later migration touches): those may be left pending inside the applied part, as a branch
merged late is. Every history runs cleanly, in order, on an empty database.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class _Schema:
    tables: dict[str, list[str]] = field(default_factory=dict)  # table -> columns
    views: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # view -> (table, columns)
    functions: list[str] = field(default_factory=list)
    enums: dict[str, int] = field(default_factory=dict)  # enum -> labels so far


@dataclass(frozen=True)
class ChurnMigration:
    sql: str
    stands_alone: bool = False  # nothing later depends on it: it may be skipped
    data_only: bool = False


def churn_history(rng: random.Random, length: int) -> list[ChurnMigration]:
    schema = _Schema()
    names = iter(range(1, 10_000))
    history: list[ChurnMigration] = []
    for _ in range(length):
        n = next(names)
        kinds = ["table", "function", "enum", "comment", "alone"]
        if schema.tables:
            kinds += ["column", "column", "rename_column", "rename_table", "view", "view", "index", "data", "data"]
            kinds += ["drop_column"]
        if schema.functions:
            kinds += ["replace_function"] * 3
        if schema.enums:
            kinds += ["grow_enum"] * 2
        kind = rng.choice(kinds)
        history.append(_migration(kind, n, schema, rng))
    return history


def _views_on(schema: _Schema, table: str) -> list[str]:
    return [v for v, (t, _) in schema.views.items() if t == table]


def _migration(kind: str, n: int, schema: _Schema, rng: random.Random) -> ChurnMigration:
    if kind == "table":
        schema.tables[f"t{n}"] = ["id", f"a{n}"]
        return ChurnMigration(f"CREATE TABLE t{n} (id int PRIMARY KEY, a{n} text NOT NULL DEFAULT 'x{n}');\n")
    if kind == "alone":
        return ChurnMigration(f"CREATE TABLE alone{n} (id int, note text);\n", stands_alone=True)
    if kind == "function":
        schema.functions.append(f"f{n}")
        return ChurnMigration(f"CREATE FUNCTION f{n}() RETURNS int LANGUAGE sql AS $$ SELECT {n} $$;\n")
    if kind == "replace_function":
        name = rng.choice(schema.functions)
        return ChurnMigration(f"CREATE OR REPLACE FUNCTION {name}() RETURNS int LANGUAGE sql AS $$ SELECT {n} $$;\n")
    if kind == "enum":
        schema.enums[f"e{n}"] = 1
        return ChurnMigration(f"CREATE TYPE e{n} AS ENUM ('v0');\n")
    if kind == "grow_enum":
        name = rng.choice(sorted(schema.enums))
        schema.enums[name] += 1
        return ChurnMigration(f"ALTER TYPE {name} ADD VALUE 'v{n}';\n")
    if kind == "comment":
        return ChurnMigration(f"-- {n}: nothing to do on PostgreSQL (kept for another database).\n", data_only=True)
    table = rng.choice(sorted(schema.tables))
    columns = schema.tables[table]
    if kind == "column":
        columns.append(f"c{n}")
        return ChurnMigration(f"ALTER TABLE {table} ADD COLUMN c{n} integer DEFAULT {n};\n")
    if kind == "rename_column":
        old = rng.choice(columns[1:])
        columns[columns.index(old)] = f"r{n}"
        for view, (on, shown) in list(schema.views.items()):
            if on == table:
                schema.views[view] = (on, tuple(f"r{n}" if c == old else c for c in shown))
        return ChurnMigration(f"ALTER TABLE {table} RENAME COLUMN {old} TO r{n};\n")
    if kind == "rename_table":
        schema.tables[f"t{n}"] = schema.tables.pop(table)
        for view, (on, shown) in list(schema.views.items()):
            if on == table:
                schema.views[view] = (f"t{n}", shown)
        return ChurnMigration(f"ALTER TABLE {table} RENAME TO t{n};\n")
    if kind == "view":
        # Dropped and made again, on other columns: as around every column change.
        existing = _views_on(schema, table)
        name = rng.choice(existing) if existing and rng.random() < 0.6 else f"v{n}"
        shown = tuple(rng.sample(columns, k=rng.randint(1, len(columns))))
        schema.views[name] = (table, shown)
        return ChurnMigration(
            f"DROP VIEW IF EXISTS {name};\nCREATE VIEW {name} AS SELECT {', '.join(shown)} FROM {table} WHERE id > {n};\n"
        )
    if kind == "index":
        column = rng.choice(columns)
        return ChurnMigration(f"CREATE INDEX i{n} ON {table} ({column});\n")
    if kind == "drop_column":
        if len(columns) < 3:
            return ChurnMigration(f"UPDATE {table} SET id = id WHERE id < {n};\n", data_only=True)
        victim = rng.choice(columns[1:])
        columns.remove(victim)
        drops = [v for v in _views_on(schema, table) if victim in schema.views[v][1]]
        for view in drops:
            del schema.views[view]
        prefix = "".join(f"DROP VIEW {v};\n" for v in drops)
        return ChurnMigration(f"{prefix}ALTER TABLE {table} DROP COLUMN {victim};\n")
    # data: between the schema changes
    if rng.random() < 0.5:
        return ChurnMigration(f"INSERT INTO {table} (id) VALUES ({n}) ON CONFLICT DO NOTHING;\n", data_only=True)
    return ChurnMigration(f"UPDATE {table} SET id = id WHERE id = {n};\n", data_only=True)
