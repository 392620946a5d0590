"""A migration history written as a team writes one, for linting side by side with squawk.

Deterministic for a seed. The first part builds a schema and fills it: tables with rows,
enums, functions, views, indexes, foreign keys. The rest churns it the way years of feature
work do: columns added with constant and volatile defaults, types changed in ways that do
and do not rewrite, indexes built with and without CONCURRENTLY (CONCURRENTLY in a file of
its own), foreign keys and CHECKs added with and without NOT VALID and validated later,
SET NOT NULL with and without a validated CHECK before it, renames, dropped columns and
tables, backfills with and without WHERE, views recreated, functions replaced, enums grown,
comment-only files, and files that SET lock_timeout first. Every history runs cleanly, in
order, on an empty database (the side-by-side test applies and replays it).

Files are in poststack's layout: ``NNN_description.sql``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_TABLES = [
    "accounts",
    "customers",
    "orders",
    "invoices",
    "payments",
    "products",
    "shipments",
    "events",
    "sessions",
    "comments",
    "subscriptions",
    "refunds",
    "coupons",
    "addresses",
    "devices",
    "reviews",
    "carts",
    "warehouses",
    "suppliers",
    "tickets",
    "campaigns",
    "memberships",
    "vouchers",
    "deliveries",
]
_WORDS = [
    "status",
    "amount",
    "email",
    "region",
    "sku",
    "quantity",
    "rating",
    "source",
    "channel",
    "currency",
    "weight",
    "label",
    "kind",
    "priority",
    "score",
    "note",
    "level",
    "origin",
    "batch",
    "notes",
    "tier",
    "phone",
    "locale",
    "flags",
]


@dataclass(frozen=True)
class CorpusFile:
    name: str  # 001_create_accounts.sql
    sql: str

    @property
    def version(self) -> str:
        return self.name.split("_", 1)[0]


@dataclass(frozen=True)
class Corpus:
    files: tuple[CorpusFile, ...]
    applied: int  # the first ``applied`` files are applied to the target; the rest are pending

    @property
    def last_applied(self) -> str:
        return self.files[self.applied - 1].version

    @property
    def pending(self) -> tuple[CorpusFile, ...]:
        return self.files[self.applied :]

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for file in self.files:
            path = directory / file.name
            path.write_text(file.sql, encoding="utf-8")
            paths.append(path)
        return paths


@dataclass
class _Column:
    type: str
    nulls: bool  # holds NULLs now
    not_null: bool = False
    digits: bool = False  # text of digits only: USING col::int works
    unique: bool = False  # its values are distinct (or NULL)
    role: str = ""  # "generated", "serial" or "fk": never backfilled, retyped or made NOT NULL

    @property
    def fixed(self) -> bool:
        return bool(self.role)


@dataclass
class _Table:
    name: str
    id_type: str
    columns: dict[str, _Column]
    rows: int
    keyed: bool = True  # id is its primary key: other tables may reference it


@dataclass
class _View:
    table: str
    sources: list[str]  # the table's columns it shows
    outputs: list[str]  # its own column names (a renamed source keeps its old name here)


@dataclass
class _Constraint:
    table: str
    column: str
    kind: str  # "fk", "check", "notnull-check", "unique"
    validated: bool = True
    parent: str | None = None  # a foreign key's table


@dataclass
class _Schema:
    tables: dict[str, _Table] = field(default_factory=dict)
    views: dict[str, _View] = field(default_factory=dict)
    indexes: dict[str, tuple[str, str, bool]] = field(default_factory=dict)  # name -> table, column, unique
    constraints: dict[str, _Constraint] = field(default_factory=dict)
    functions: list[str] = field(default_factory=list)
    enums: dict[str, list[str]] = field(default_factory=dict)


# What a new table's columns can be: name, type, the value for row g, digits, unique.
_TEMPLATES = (
    ("name", "varchar(40)", "'name ' || g", False, True),
    ("code", "text", "lpad(g::text, 8, '0')", True, True),
    ("quantity", "integer", "g % 97", False, False),
    ("amount", "numeric(10,2)", "(g % 1000) / 4.0", False, False),
    ("created_at", "timestamptz", "now() - g * interval '1 minute'", False, False),
    ("note", "text", "NULL", False, False),
    ("active", "boolean", "g % 2 = 0", False, False),
    ("legacy_ref", "varchar(20)", "g::text", True, True),
    ("seen_at", "timestamp", "localtimestamp", False, False),
    ("external_id", "varchar(24)", "'ext-' || g", False, True),
)
_ROWS = (0, 250, 800, 1500, 3000, 6000)


class _Writer:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.schema = _Schema()
        self.counter = 0
        self.tables = list(_TABLES)
        self.rng.shuffle(self.tables)
        self.only: _Table | None = None  # shaping a table made in this very migration

    # -- names --------------------------------------------------------------------------

    def n(self) -> int:
        self.counter += 1
        return self.counter

    def table_name(self) -> str:
        if self.tables:
            return self.tables.pop()
        return f"archive_{self.n()}"

    def column_name(self, table: _Table) -> str:
        word = self.rng.choice(_WORDS)
        return word if word not in table.columns else f"{word}_{self.n()}"

    # -- what the schema allows ---------------------------------------------------------

    def candidates(self) -> list[_Table]:
        return [self.only] if self.only is not None else list(self.schema.tables.values())

    def pick_table(self, want: Callable[[_Table], bool] = lambda t: True) -> _Table | None:
        found = [t for t in self.candidates() if want(t)]
        return self.rng.choice(sorted(found, key=lambda t: t.name)) if found else None

    def in_view(self, table: str, column: str) -> bool:
        return any(v.table == table and column in v.sources for v in self.schema.views.values())

    def constrained(self, table: str, column: str) -> bool:
        return any(c.table == table and c.column == column for c in self.schema.constraints.values())

    def indexed(self, table: str, column: str) -> bool:
        return any(t == table and c == column for t, c, _ in self.schema.indexes.values())

    def free_columns(self, table: _Table, want: Callable[[str, _Column], bool]) -> list[str]:
        """Columns other than id, in no view and under no constraint, that ``want`` accepts."""
        return [
            name
            for name, column in table.columns.items()
            if name != "id" and not self.in_view(table.name, name) and not self.constrained(table.name, name)
            if want(name, column)
        ]

    def referenced(self, table: str) -> bool:
        return any(c.parent == table for c in self.schema.constraints.values())

    # -- values -------------------------------------------------------------------------

    def fill(self, table: _Table, name: str, column: _Column, row: str) -> str:
        """An expression for the column's value in row ``row`` (an id, or g), keeping the
        column's promises (digits, distinct, non-negative)."""
        kind = column.type
        if column.digits:
            return f"{row}::text"
        if kind in ("integer", "bigint"):
            return row if column.unique else f"{row} % 13"
        if kind.startswith("numeric"):
            return f"({row} % 500) / 2.0"
        if kind.startswith("varchar"):
            size = int(kind[8:-1])
            return f"left('v' || {row}, {size})"
        if kind == "text":
            return f"'filled ' || {row}" if column.unique else "'filled'"
        if kind == "boolean":
            return "true"
        if kind == "timestamptz":
            return "now()"
        if kind == "timestamp":
            return "localtimestamp"
        if kind == "uuid":
            return "gen_random_uuid()"
        if kind == "double precision":
            return "random()"
        if kind in self.schema.enums:
            return f"'{self.schema.enums[kind][0]}'"
        raise AssertionError(f"no value for {table.name}.{name} {kind}")

    # -- the first part: a schema with rows -----------------------------------------------

    def create_table(self, rows: int | None = None, with_parent: bool = True) -> tuple[str, list[str]]:
        name = self.table_name()
        id_type = self.rng.choice(("integer", "integer", "bigint"))
        picked = self.rng.sample(_TEMPLATES, k=self.rng.randint(2, 5))
        keyed = self.rng.random() < 0.85  # a log-like table may start without a key
        table = _Table(name, id_type, {"id": _Column(id_type, False, True, unique=True)}, 0, keyed)
        lines = [f"    id {id_type} {'PRIMARY KEY' if keyed else 'NOT NULL'}"]
        values = ["g"]
        for column, kind, value, digits, unique in picked:
            table.columns[column] = _Column(kind, value == "NULL", digits=digits, unique=unique)
            lines.append(f"    {column} {kind}")
            values.append(value)
        parent = self.pick_table(lambda t: t.keyed and t.rows > 0 and t.name != name) if with_parent else None
        if parent is not None and self.rng.random() < 0.5:
            column = f"{parent.name.removesuffix('s')}_id"
            table.columns[column] = _Column(parent.id_type, False, role="fk")
            lines.append(f"    {column} {parent.id_type} REFERENCES {parent.name} (id)")
            values.append(f"1 + (g % {min(parent.rows, 50)})")
            self.schema.constraints[f"{name}_{column}_fkey"] = _Constraint(name, column, "fk", parent=parent.name)
        self.schema.tables[name] = table
        statements = [f"CREATE TABLE {name} (\n" + ",\n".join(lines) + "\n)"]
        rows = self.rng.choice(_ROWS[1:]) if rows is None else rows
        if rows:
            columns = ", ".join(table.columns)
            statements.append(
                f"INSERT INTO {name} ({columns})\nSELECT {', '.join(values)}\nFROM generate_series(1, {rows}) AS g"
            )
            table.rows = rows
        return f"create_{name}", statements

    def create_function(self) -> tuple[str, list[str]]:
        name = f"{self.rng.choice(_WORDS)}_total_{self.n()}"
        self.schema.functions.append(name)
        return f"function_{name}", [self._function(name)]

    def _function(self, name: str) -> str:
        body = self.rng.choice(("SELECT {n}", "SELECT {n} + 1", "SELECT coalesce(NULL, {n})"))
        return (
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS integer\n"
            f"LANGUAGE sql IMMUTABLE AS $$ {body.format(n=self.n())} $$"
        )

    def create_enum(self) -> tuple[str, list[str]]:
        name = f"{self.rng.choice(('order', 'payment', 'ticket', 'review'))}_state_{self.n()}"
        self.schema.enums[name] = ["new", "open"]
        return f"enum_{name}", [f"CREATE TYPE {name} AS ENUM ('new', 'open')"]

    def create_view(self) -> tuple[str, list[str]] | None:
        table = self.pick_table(lambda t: len(t.columns) > 2)
        if table is None:
            return None
        name = f"{table.name}_view_{self.n()}"
        return f"view_{name}", self._view(name, table, replace=False)

    def _view(self, name: str, table: _Table, replace: bool) -> list[str]:
        others = [c for c in table.columns if c != "id"]
        shown = ["id", *self.rng.sample(others, k=self.rng.randint(1, min(3, len(others))))]
        self.schema.views[name] = _View(table.name, shown, list(shown))
        create = f"CREATE VIEW {name} AS\nSELECT {', '.join(shown)}\nFROM {table.name}"
        return [f"DROP VIEW {name}", create] if replace else [create]

    # -- the churn ----------------------------------------------------------------------

    def add_column(self) -> tuple[str, list[str]] | None:
        empty = self.pick_table(lambda t: t.rows == 0)  # a table nobody writes yet takes NOT NULL without a default
        table = empty if empty is not None and self.rng.random() < 0.3 else self.pick_table()
        if table is None:
            return None
        name = self.column_name(table)
        kinds: list[tuple[str, str, _Column]] = [
            ("integer DEFAULT 0", "constant", _Column("integer", False)),
            ("text NOT NULL DEFAULT 'none'", "constant", _Column("text", False, True)),
            ("boolean NOT NULL DEFAULT false", "constant", _Column("boolean", False, True)),
            ("timestamptz DEFAULT now()", "stable", _Column("timestamptz", False)),
            ("text", "nullable", _Column("text", table.rows > 0, unique=True)),
            ("integer", "nullable", _Column("integer", table.rows > 0, unique=True)),
            ("varchar(30)", "nullable", _Column("varchar(30)", table.rows > 0, unique=True)),
            ("uuid DEFAULT gen_random_uuid()", "volatile", _Column("uuid", False, unique=True)),
            ("double precision DEFAULT random()", "volatile", _Column("double precision", False)),
            ("timestamptz DEFAULT clock_timestamp()", "volatile", _Column("timestamptz", False)),
            ("bigint GENERATED ALWAYS AS (id * 2) STORED", "generated", _Column("bigint", False, role="generated")),
            ("serial", "serial", _Column("integer", False, True, unique=True, role="serial")),
        ]
        if self.schema.enums:
            enum = self.rng.choice(sorted(self.schema.enums))
            kinds.append((f"{enum} NOT NULL DEFAULT 'new'", "constant", _Column(enum, False, True)))
        if table.rows == 0:
            kinds.append(("integer NOT NULL", "required", _Column("integer", False, True)))
        weights = {"constant": 4, "stable": 2, "nullable": 4, "volatile": 2, "generated": 1, "serial": 1, "required": 3}
        definition, kind, column = self.rng.choices(kinds, weights=[weights[k[1]] for k in kinds])[0]
        table.columns[name] = column
        return f"add_{kind}_{name}_to_{table.name}", [f"ALTER TABLE {table.name} ADD COLUMN {name} {definition}"]

    def add_reference_column(self) -> tuple[str, list[str]] | None:
        table = self.pick_table()
        parent = self.pick_table(lambda t: table is not None and t.keyed and t.name != table.name)
        if table is None or parent is None:
            return None
        name = f"{parent.name.removesuffix('s')}_ref_{self.n()}"
        table.columns[name] = _Column(parent.id_type, table.rows > 0, role="fk")
        self.schema.constraints[f"{table.name}_{name}_fkey"] = _Constraint(table.name, name, "fk", parent=parent.name)
        return f"reference_{parent.name}_from_{table.name}", [
            f"ALTER TABLE {table.name} ADD COLUMN {name} {parent.id_type} REFERENCES {parent.name} (id)"
        ]

    def change_type(self) -> tuple[str, list[str]] | None:
        changes: list[tuple[_Table, str, str, str]] = []  # table, column, new type, USING
        for table in self.candidates():
            for name in self.free_columns(table, lambda _, c: not c.fixed):
                kind = table.columns[name].type
                if kind.startswith("varchar"):
                    size = int(kind[8:-1])
                    changes += [(table, name, "text", ""), (table, name, f"varchar({size * 2})", "")]
                elif kind == "integer":
                    changes.append((table, name, "bigint", ""))
                elif kind == "text" and table.columns[name].digits:
                    changes.append((table, name, "integer", f" USING {name}::integer"))
                elif kind == "numeric(10,2)":
                    changes.append((table, name, "numeric(14,2)", ""))
                elif kind == "timestamp":
                    changes.append((table, name, "timestamptz", ""))
        if not changes:
            return None
        table, name, kind, using = self.rng.choice(changes)
        column = table.columns[name]
        column.type = kind
        if kind == "integer":
            column.digits = False
        return f"{name}_of_{table.name}_to_{kind.split('(')[0]}", [
            f"ALTER TABLE {table.name} ALTER COLUMN {name} TYPE {kind}{using}"
        ]

    def create_index(self, concurrently: bool) -> tuple[str, list[str]] | None:
        table = self.pick_table()
        if table is None:
            return None
        candidates = [
            c
            for c in table.columns
            if (c != "id" or (not table.keyed and concurrently)) and not self.indexed(table.name, c)
        ]
        if not candidates:
            return None
        column = self.rng.choice(candidates)
        unique = column == "id" or (table.columns[column].unique and self.rng.random() < 0.4)
        name = f"{table.name}_{column}_{self.n()}_{'key' if unique else 'idx'}"
        self.schema.indexes[name] = (table.name, column, unique)
        how = "CONCURRENTLY " if concurrently else ""
        kind = "UNIQUE INDEX" if unique else "INDEX"
        return f"index_{table.name}_{column}", [f"CREATE {kind} {how}{name} ON {table.name} ({column})"]

    def unique_using_index(self) -> tuple[str, list[str]] | None:
        found = sorted(
            (name, table, column)
            for name, (table, column, unique) in self.schema.indexes.items()
            if unique and not self.constrained(table, column)
        )
        if not found:
            return None
        index, table, column = self.rng.choice(found)
        del self.schema.indexes[index]  # the constraint owns it now
        if column == "id":
            self.schema.tables[table].keyed = True
            return f"primary_key_{table}", [
                f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY USING INDEX {index}"
            ]
        self.schema.constraints[index] = _Constraint(table, column, "unique")
        return f"unique_{table}_{column}", [f"ALTER TABLE {table} ADD CONSTRAINT {index} UNIQUE USING INDEX {index}"]

    def add_primary_key(self) -> tuple[str, list[str]] | None:
        table = self.pick_table(lambda t: not t.keyed and not self.indexed(t.name, "id"))
        if table is None:
            return None
        table.keyed = True
        return f"primary_key_{table.name}", [f"ALTER TABLE {table.name} ADD PRIMARY KEY (id)"]

    def add_unique(self) -> tuple[str, list[str]] | None:
        table = self.pick_table()
        if table is None:
            return None
        columns = self.free_columns(table, lambda _, c: c.unique and not c.fixed)
        if not columns:
            return None
        column = self.rng.choice(columns)
        name = f"{table.name}_{column}_unique"
        self.schema.constraints[name] = _Constraint(table.name, column, "unique")
        return f"unique_{table.name}_{column}", [f"ALTER TABLE {table.name} ADD CONSTRAINT {name} UNIQUE ({column})"]

    def drop_index(self, concurrently: bool) -> tuple[str, list[str]] | None:
        if not self.schema.indexes:
            return None
        name = self.rng.choice(sorted(self.schema.indexes))
        del self.schema.indexes[name]
        return f"drop_{name}", [f"DROP INDEX {'CONCURRENTLY ' if concurrently else ''}{name}"]

    def add_foreign_key(self) -> tuple[str, list[str]] | None:
        child = self.pick_table()
        parent = self.pick_table(lambda t: child is not None and t.keyed and t.name != child.name and t.rows > 0)
        if child is None or parent is None:
            return None
        column = f"{parent.name.removesuffix('s')}_id_{self.n()}"
        name = f"{child.name}_{column}_fkey"
        statements = [f"ALTER TABLE {child.name} ADD COLUMN {column} {parent.id_type}"]
        if child.rows:
            statements.append(f"UPDATE {child.name} SET {column} = 1 + (id % {min(parent.rows, 50)})")
        valid = self.rng.random() < 0.5
        self.schema.constraints[name] = _Constraint(child.name, column, "fk", valid, parent.name)
        child.columns[column] = _Column(parent.id_type, False, role="fk")
        statements.append(
            f"ALTER TABLE {child.name}\n    ADD CONSTRAINT {name} FOREIGN KEY ({column})\n"
            f"    REFERENCES {parent.name} (id){'' if valid else ' NOT VALID'}"
        )
        return f"{child.name}_references_{parent.name}", statements

    def add_check(self) -> tuple[str, list[str]] | None:
        table = self.pick_table()
        if table is None:
            return None
        columns = self.free_columns(
            table, lambda _, c: (c.type in ("integer", "bigint") or c.type.startswith("numeric")) and not c.fixed
        )
        if not columns:
            return None
        column = self.rng.choice(columns)
        valid = self.rng.random() < 0.5
        name = f"{table.name}_{column}_check"
        self.schema.constraints[name] = _Constraint(table.name, column, "check", valid)
        return f"check_{table.name}_{column}", [
            f"ALTER TABLE {table.name} ADD CONSTRAINT {name} CHECK ({column} >= 0){'' if valid else ' NOT VALID'}"
        ]

    def not_null_check(self) -> tuple[str, list[str]] | None:
        """The first step of the safe SET NOT NULL: a CHECK (col IS NOT NULL) NOT VALID."""
        table = self.pick_table()
        if table is None:
            return None
        columns = self.free_columns(table, lambda _, c: not c.not_null and not c.fixed)
        if not columns:
            return None
        column = self.rng.choice(columns)
        name = f"{table.name}_{column}_not_null"
        statements = []
        if table.columns[column].nulls:
            statements.append(self._backfill(table, column, f"{column} IS NULL"))
        self.schema.constraints[name] = _Constraint(table.name, column, "notnull-check", False)
        statements.append(f"ALTER TABLE {table.name} ADD CONSTRAINT {name} CHECK ({column} IS NOT NULL) NOT VALID")
        return f"not_null_check_{table.name}_{column}", statements

    def validate(self) -> tuple[str, list[str]] | None:
        waiting = sorted(name for name, c in self.schema.constraints.items() if not c.validated)
        if not waiting:
            return None
        name = self.rng.choice(waiting)
        constraint = self.schema.constraints[name]
        constraint.validated = True
        return f"validate_{name}", [f"ALTER TABLE {constraint.table} VALIDATE CONSTRAINT {name}"]

    def set_not_null(self) -> tuple[str, list[str]] | None:
        proven = sorted(
            name for name, c in self.schema.constraints.items() if c.kind == "notnull-check" and c.validated
        )
        if proven and self.only is None and self.rng.random() < 0.5:
            name = self.rng.choice(proven)
            constraint = self.schema.constraints.pop(name)
            self.schema.tables[constraint.table].columns[constraint.column].not_null = True
            return f"{constraint.column}_of_{constraint.table}_not_null", [
                f"ALTER TABLE {constraint.table} ALTER COLUMN {constraint.column} SET NOT NULL",
                f"ALTER TABLE {constraint.table} DROP CONSTRAINT {name}",
            ]
        table = self.pick_table()
        if table is None:
            return None
        columns = [
            n
            for n, c in table.columns.items()
            if n != "id" and not c.not_null and not c.fixed and not self.constrained(table.name, n)
        ]
        if not columns:
            return None
        column = self.rng.choice(columns)
        statements = [self._backfill(table, column, f"{column} IS NULL")] if table.columns[column].nulls else []
        table.columns[column].not_null = True
        statements.append(f"ALTER TABLE {table.name} ALTER COLUMN {column} SET NOT NULL")
        return f"{column}_of_{table.name}_not_null", statements

    def _backfill(self, table: _Table, name: str, where: str = "") -> str:
        """UPDATE every row, or the rows ``where`` says; a value per row keeps distinct columns distinct."""
        column = table.columns[name]
        if not where or where == f"{name} IS NULL":
            column.nulls = False
        condition = f" WHERE {where}" if where else ""
        return f"UPDATE {table.name} SET {name} = {self.fill(table, name, column, 'id')}{condition}"

    def backfill(self) -> tuple[str, list[str]] | None:
        table = self.pick_table(lambda t: t.rows > 0)
        if table is None:
            return None
        columns = [
            n
            for n, c in table.columns.items()
            if n != "id" and not c.fixed and not self.constrained(table.name, n) and not self.indexed(table.name, n)
        ]
        if not columns:
            return None
        column = self.rng.choice(columns)
        where = self.rng.choice(("", f"{column} IS NULL", f"id <= {max(1, table.rows // 2)}"))
        return f"backfill_{column}_of_{table.name}", [self._backfill(table, column, where)]

    def insert_rows(self) -> tuple[str, list[str]] | None:
        table = self.pick_table(lambda t: t.rows > 0)
        if table is None:
            return None
        columns, values = ["id"], ["g"]
        for name, column in table.columns.items():
            if name == "id" or column.role in ("generated", "serial"):
                continue
            if column.role == "fk":
                parent = next(
                    self.schema.tables[c.parent]
                    for c in self.schema.constraints.values()
                    if (c.table, c.column) == (table.name, name) and c.parent
                )
                if parent.rows == 0:
                    continue  # NULL: nothing to point at
                columns.append(name)
                values.append(f"1 + (g % {min(parent.rows, 50)})")
                continue
            columns.append(name)
            values.append(self.fill(table, name, column, "g"))
        first, count = table.rows + 1, self.rng.choice((50, 200, 500))
        table.rows += count
        return f"more_{table.name}", [
            f"INSERT INTO {table.name} ({', '.join(columns)})\n"
            f"SELECT {', '.join(values)}\nFROM generate_series({first}, {first + count - 1}) AS g"
        ]

    def rename_column(self) -> tuple[str, list[str]] | None:
        table = self.pick_table(lambda t: len(t.columns) > 1)
        if table is None:
            return None
        old = self.rng.choice([c for c in table.columns if c != "id"])
        new = f"{old.split('_')[0]}_{self.n()}"
        table.columns = {new if k == old else k: v for k, v in table.columns.items()}
        for view in self.schema.views.values():
            if view.table == table.name:
                view.sources = [new if c == old else c for c in view.sources]
        for name, (on, column, unique) in list(self.schema.indexes.items()):
            if on == table.name and column == old:
                self.schema.indexes[name] = (on, new, unique)
        for constraint in self.schema.constraints.values():
            if constraint.table == table.name and constraint.column == old:
                constraint.column = new
        return f"rename_{old}_of_{table.name}", [f"ALTER TABLE {table.name} RENAME COLUMN {old} TO {new}"]

    def rename_table(self) -> tuple[str, list[str]] | None:
        table = self.pick_table()
        if table is None:
            return None
        old, new = table.name, f"{table.name.split('_')[0]}_{self.n()}"
        table.name = new
        self.schema.tables = {new if k == old else k: v for k, v in self.schema.tables.items()}
        for view in self.schema.views.values():
            view.table = new if view.table == old else view.table
        for name, (on, column, unique) in list(self.schema.indexes.items()):
            self.schema.indexes[name] = (new if on == old else on, column, unique)
        for constraint in self.schema.constraints.values():
            constraint.table = new if constraint.table == old else constraint.table
            constraint.parent = new if constraint.parent == old else constraint.parent
        return f"rename_{old}", [f"ALTER TABLE {old} RENAME TO {new}"]

    def drop_column(self) -> tuple[str, list[str]] | None:
        table = self.pick_table()
        if table is None:
            return None
        columns = self.free_columns(table, lambda n, _: not self.indexed(table.name, n))
        if not columns:
            return None
        column = self.rng.choice(columns)
        del table.columns[column]
        return f"drop_{column}_of_{table.name}", [f"ALTER TABLE {table.name} DROP COLUMN {column}"]

    def drop_table(self) -> tuple[str, list[str]] | None:
        table = self.pick_table(
            lambda t: not self.referenced(t.name) and not any(v.table == t.name for v in self.schema.views.values())
        )
        if table is None or len(self.schema.tables) < 6:
            return None
        del self.schema.tables[table.name]
        self.schema.indexes = {k: v for k, v in self.schema.indexes.items() if v[0] != table.name}
        self.schema.constraints = {k: c for k, c in self.schema.constraints.items() if c.table != table.name}
        return f"drop_{table.name}", [f"DROP TABLE {table.name}"]

    def recreate_view(self) -> tuple[str, list[str]] | None:
        if not self.schema.views:
            return self.create_view()
        name = self.rng.choice(sorted(self.schema.views))
        view = self.schema.views[name]
        table = self.schema.tables[view.table]
        extra = [c for c in table.columns if c not in view.sources]
        if view.sources == view.outputs and extra and self.rng.random() < 0.5:
            view.sources.append(self.rng.choice(extra))
            view.outputs = list(view.sources)
            return f"replace_{name}", [
                f"CREATE OR REPLACE VIEW {name} AS\nSELECT {', '.join(view.sources)}\nFROM {table.name}"
            ]
        return f"recreate_{name}", self._view(name, table, replace=True)

    def replace_function(self) -> tuple[str, list[str]] | None:
        if not self.schema.functions:
            return self.create_function()
        name = self.rng.choice(self.schema.functions)
        return f"replace_{name}", [self._function(name)]

    def grow_enum(self) -> tuple[str, list[str]] | None:
        if not self.schema.enums:
            return self.create_enum()
        name = self.rng.choice(sorted(self.schema.enums))
        label = f"state_{self.n()}"
        self.schema.enums[name].append(label)
        return f"grow_{name}", [f"ALTER TYPE {name} ADD VALUE '{label}'"]

    def new_table_worked_on(self) -> tuple[str, list[str]]:
        """A table made and shaped in one migration: nobody can be waiting for it yet."""
        slug, statements = self.create_table(rows=self.rng.choice((0, 0, 40)))
        table = self.schema.tables[slug.removeprefix("create_")]
        steps: tuple[Callable[[], tuple[str, list[str]] | None], ...] = (
            lambda: self.create_index(concurrently=False),
            self.add_check,
            self.set_not_null,
            self.change_type,
            self.add_unique,
        )
        self.only = table
        try:
            for step in self.rng.sample(steps, k=2):
                made = step()
                if made is not None:
                    statements += made[1]
        finally:
            self.only = None
        return slug, statements


def _comment(rng: random.Random) -> str:
    return rng.choice(
        (
            "-- Intentionally empty: this version was a MySQL-only change, kept so numbering matches production.\n",
            "-- Reverted in review; the file stays so environments that ran it agree.\n",
            "-- Nothing to do on PostgreSQL.\n",
        )
    )


_LOCK_TIMEOUTS = ("SET lock_timeout = '3s'", "SET lock_timeout TO '5s'", "SET LOCAL lock_timeout = '2s'")


def squawk_corpus(seed: int, files: int = 200, applied: int = 45) -> Corpus:
    """``files`` migrations; the first ``applied`` build and fill the schema."""
    writer = _Writer(seed)
    rng = writer.rng
    written: list[CorpusFile] = []

    def add(slug: str, statements: list[str], transactional: bool = True, comment: str = "") -> None:
        version = f"{len(written) + 1:03d}"
        head = comment
        if statements and rng.random() < 0.2:
            timeout = rng.choice(_LOCK_TIMEOUTS if transactional else _LOCK_TIMEOUTS[:2])
            statements = [timeout, *statements]
        body = "".join(f"{s};\n" for s in statements)
        if statements and rng.random() < 0.3:
            head += f"-- {slug.replace('_', ' ')}\n"
        written.append(CorpusFile(f"{version}_{slug[:60]}.sql", head + body))

    start = [writer.create_enum, writer.create_function]
    while len(written) < applied:
        if len(writer.schema.tables) < 12 or rng.random() < 0.35:
            slug, statements = writer.create_table()
        else:
            step = rng.choice((*start, writer.create_view, writer.add_column, writer.insert_rows))
            made = step()
            if made is None:
                continue
            slug, statements = made
        add(slug, statements)

    alone: dict[str, Callable[[], tuple[str, list[str]] | None]] = {
        "index_concurrently": lambda: writer.create_index(concurrently=True),
        "drop_index_concurrently": lambda: writer.drop_index(concurrently=True),
    }
    steps: dict[str, tuple[int, Callable[[], tuple[str, list[str]] | None]]] = {
        "add_column": (14, writer.add_column),
        "reference": (2, writer.add_reference_column),
        "change_type": (9, writer.change_type),
        "index": (6, lambda: writer.create_index(concurrently=False)),
        "unique_using_index": (5, writer.unique_using_index),
        "unique": (2, writer.add_unique),
        "primary_key": (2, writer.add_primary_key),
        "drop_index": (2, lambda: writer.drop_index(concurrently=False)),
        "foreign_key": (5, writer.add_foreign_key),
        "check": (4, writer.add_check),
        "not_null_check": (3, writer.not_null_check),
        "validate": (5, writer.validate),
        "set_not_null": (5, writer.set_not_null),
        "backfill": (6, writer.backfill),
        "insert": (3, writer.insert_rows),
        "rename_column": (3, writer.rename_column),
        "rename_table": (2, writer.rename_table),
        "drop_column": (3, writer.drop_column),
        "drop_table": (2, writer.drop_table),
        "view": (4, writer.recreate_view),
        "function": (3, writer.replace_function),
        "enum": (3, writer.grow_enum),
        "table": (2, lambda: writer.create_table(rows=rng.choice((0, 0, 300)))),
        "new_table": (3, writer.new_table_worked_on),
    }
    names, weights = list(steps), [w for w, _ in steps.values()]
    while len(written) < files:
        roll = rng.random()
        if roll < 0.04:
            add("nothing", [], comment=_comment(rng))
            continue
        if roll < 0.12:
            made = rng.choice(list(alone.values()))()
            if made is not None:
                add(*made, transactional=False)
            continue
        made = steps[rng.choices(names, weights=weights)[0]][1]()
        if made is None:
            continue
        slug, statements = made
        while rng.random() < 0.3:  # a feature's changes, shipped together
            more = steps[rng.choices(names, weights=weights)[0]][1]()
            if more is not None:
                statements += more[1]
        add(slug, statements)
    return Corpus(tuple(written), applied)
