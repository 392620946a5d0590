"""Benchmark: diagnose with replay on a churny 350-migration history, applied by hand.

Targets (issue 13): cold, at most 2× the time psql takes to apply the same history once;
warm (the replay cached under .poststack/replay), at most 1 s. Also measured: how many of
the migrations that change the schema diagnose finds applied-but-untracked
(missing_tracking), and, with the last fifth left pending, that none of those is claimed.

    python -m bench.replay_350 [--runs 3] [--count 350] [--seed 13] [--phases] [--profile]

--phases times where one cold and one warm diagnose go (the replay's functions wrapped with
timers, no profiler), and the snapshot query's parts on the final state; --profile runs one
cold diagnose under cProfile. Each run: psql on a fresh database (the floor); psql again on
another (by hand, nothing tracked); diagnose with the cache removed (cold); diagnose twice
more (warm). Then once with only the first 80 % applied by hand, the rest pending.

The floor is one psql session applying every file, each in its own transaction (BEGIN;
\\i file; COMMIT; files marked ``-- poststack:no-transaction`` outside one): what a careful
person runs, and the lowest time PostgreSQL itself needs for the history. Every timing is a
whole process (psql, or the poststack console script), on a fresh database each run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    compile_package,
    fresh_database,
    machine,
    median,
    poststack_argv,
    run_psql_script,
    server_url,
)

NO_TRANSACTION = "-- poststack:no-transaction"
COLD_TARGET = 2.0  # × psql
WARM_TARGET = 1.0  # seconds
RECALL_TARGET = 0.98


# --- the history ---------------------------------------------------------------------------


@dataclass
class Migration:
    name: str
    sql: str
    schema: bool  # changes something the catalog shows (not data, not comments only)
    transactional: bool = True


@dataclass
class Table:
    name: str
    columns: dict[str, str]  # name -> type, in order; id and name are never changed
    referenced: bool = False  # another table has a foreign key to it
    touched: bool = False  # has the updated_at trigger


@dataclass
class View:
    name: str
    table: str
    columns: list[tuple[str, str]]  # (the table's column, the view's output column)

    def uses(self, column: str) -> bool:
        return any(source == column for source, _ in self.columns)


NOUNS = (
    "accounts",
    "orders",
    "invoices",
    "products",
    "customers",
    "shipments",
    "payments",
    "refunds",
    "coupons",
    "carts",
    "reviews",
    "suppliers",
    "warehouses",
    "stock_moves",
    "price_lists",
    "tax_rates",
    "addresses",
    "sessions",
    "audit_events",
    "webhooks",
    "subscriptions",
    "plans",
    "usage_records",
    "teams",
    "memberships",
    "projects",
)
WORDS = (
    "status",
    "note",
    "amount",
    "quantity",
    "total",
    "reference",
    "region",
    "channel",
    "priority",
    "score",
    "label",
    "source",
    "external_id",
    "discount",
    "weight",
    "currency",
    "country",
    "locale",
    "due_on",
    "shipped_at",
    "flags",
)
TYPES = ("text", "integer", "bigint", "numeric(12,2)", "boolean", "timestamptz", "jsonb", "date")
WIDER = {  # ALTER COLUMN TYPE: from, to
    "integer": "bigint",
    "numeric(12,2)": "numeric(16,4)",
    "text": "varchar(500)",
    "varchar(500)": "text",
    "date": "timestamptz",
}


@dataclass
class Generator:
    """A schema that grows and churns as a team's would; each migration valid on what the
    ones before it left. Deterministic for a seed."""

    rng: random.Random
    tables: dict[str, Table] = field(default_factory=dict)
    views: dict[str, View] = field(default_factory=dict)
    enums: dict[str, list[str]] = field(default_factory=dict)
    functions: dict[str, int] = field(default_factory=dict)  # name -> revision
    indexes: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (table, column)
    counter: int = 0
    touch_function: int = 0  # revision of public.touch_updated_at(), 0: not yet made

    def unique(self, base: str) -> str:
        self.counter += 1
        return f"{base}_{self.counter}"

    # Each operation returns (name, sql, changes the schema) or None when it does not apply.

    def create_table(self) -> tuple[str, str, bool]:
        name = self.unique(self.rng.choice(NOUNS))
        table = Table(name, {"id": "bigint", "name": "text", "created_at": "timestamptz"})
        lines = [
            f"CREATE TABLE public.{name} (",
            "    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,",
            "    name text NOT NULL,",
            "    created_at timestamptz NOT NULL DEFAULT now()",
        ]
        if self.tables and self.rng.random() < 0.5:
            parent = self.rng.choice(sorted(self.tables))
            self.tables[parent].referenced = True
            column = f"{parent}_id"
            lines[-1] += ","
            lines.append(f"    {column} bigint REFERENCES public.{parent} (id) ON DELETE CASCADE")
            table.columns[column] = "bigint"
            index = self.unique(f"{name}_{parent}_idx")
            after = f"\nCREATE INDEX {index} ON public.{name} ({column});\n"
            self.indexes[index] = (name, column)
        else:
            after = "\n"
        self.tables[name] = table
        return f"create_{name}", "\n".join(lines) + "\n);\n" + after, True

    def add_column(self) -> tuple[str, str, bool] | None:
        table = self.pick_table()
        if table is None:
            return None
        column = self.unique(self.rng.choice(WORDS))
        if self.enums and self.rng.random() < 0.25:
            enum = self.rng.choice(sorted(self.enums))
            kind, default = f"public.{enum}", f" NOT NULL DEFAULT '{self.enums[enum][0]}'"
        else:
            kind = self.rng.choice(TYPES)
            default = {"boolean": " NOT NULL DEFAULT false", "jsonb": " NOT NULL DEFAULT '{}'::jsonb"}.get(kind, "")
        sql = f"ALTER TABLE public.{table.name} ADD COLUMN {column} {kind}{default};\n"
        if kind in ("integer", "bigint", "numeric(12,2)") and self.rng.random() < 0.3:
            sql += (
                f"ALTER TABLE public.{table.name} ADD CONSTRAINT {table.name}_{column}_nonnegative"
                f" CHECK ({column} >= 0);\n"
            )
        table.columns[column] = kind
        return f"add_{column}_to_{table.name}", sql, True

    def pick_column(self, retype: bool = False) -> tuple[Table, str] | None:
        """A column to rename, drop or (``retype``) change the type of; more often than not
        one a view uses, so that the views have to be dropped and made again around it."""
        candidates = [
            (table, column)
            for table in (self.tables[n] for n in sorted(self.tables))
            for column, kind in table.columns.items()
            if column not in ("id", "name", "created_at", "updated_at")
            and not (column.endswith("_id") and kind == "bigint")  # foreign keys stay
            and (not retype or kind in WIDER)
        ]
        viewed = [(t, c) for t, c in candidates if any(v.table == t.name and v.uses(c) for v in self.views.values())]
        if viewed and self.rng.random() < 0.6:
            candidates = viewed
        return self.rng.choice(candidates) if candidates else None

    def around_views(self, table: Table, column: str, change: str, rename: str | None = None) -> str:
        """``change`` with the views that use ``column`` dropped before and made again after
        (ALTER COLUMN TYPE and DROP COLUMN refuse while a view depends on the column)."""
        dependent = [v for v in self.views.values() if v.table == table.name and v.uses(column)]
        before = "".join(f"DROP VIEW public.{v.name};\n" for v in dependent)
        for view in dependent:
            if rename is not None:  # made again, the view's column takes the new name too
                view.columns = [(rename, rename) if s == column else (s, o) for s, o in view.columns]
            elif change.startswith(f"ALTER TABLE public.{table.name} DROP COLUMN"):
                view.columns = [(s, o) for s, o in view.columns if s != column]
        after = "".join(self.view_sql(v, replace=False) for v in dependent)
        return before + change + after

    def rename_column(self) -> tuple[str, str, bool] | None:
        picked = self.pick_column()
        if picked is None:
            return None
        table, column = picked
        new = self.unique(column.rsplit("_", 1)[0])
        change = f"ALTER TABLE public.{table.name} RENAME COLUMN {column} TO {new};\n"
        # Views follow a rename by themselves; half the time the author recreates them anyway.
        sql = self.around_views(table, column, change, rename=new) if self.rng.random() < 0.5 else change
        for view in self.views.values():  # views not made again keep their column's old name
            if view.table == table.name:
                view.columns = [(new, o) if s == column else (s, o) for s, o in view.columns]
        table.columns = {(new if c == column else c): t for c, t in table.columns.items()}
        for index, (t, c) in list(self.indexes.items()):
            if t == table.name and c == column:
                self.indexes[index] = (t, new)
        return f"rename_{column}_on_{table.name}", sql, True

    def change_type(self) -> tuple[str, str, bool] | None:
        picked = self.pick_column(retype=True)
        if picked is None:
            return None
        table, column = picked
        new = WIDER[table.columns[column]]
        using = f" USING {column}::{new}" if table.columns[column] == "date" else ""
        change = f"ALTER TABLE public.{table.name} ALTER COLUMN {column} TYPE {new}{using};\n"
        table.columns[column] = new
        return f"retype_{column}_on_{table.name}", self.around_views(table, column, change), True

    def drop_column(self) -> tuple[str, str, bool] | None:
        picked = self.pick_column()
        if picked is None:
            return None
        table, column = picked
        change = f"ALTER TABLE public.{table.name} DROP COLUMN {column};\n"
        sql = self.around_views(table, column, change)
        del table.columns[column]
        for index, (t, c) in list(self.indexes.items()):
            if t == table.name and c == column:
                del self.indexes[index]
        return f"drop_{column}_from_{table.name}", sql, True

    def view_sql(self, view: View, replace: bool) -> str:
        head = "CREATE OR REPLACE VIEW" if replace else "CREATE VIEW"
        columns = ", ".join(s if s == o else f"{s} AS {o}" for s, o in view.columns)
        return (
            f"{head} public.{view.name} AS\n    SELECT {columns}\n"
            f"    FROM public.{view.table}\n    WHERE created_at > '2020-01-01'::timestamptz;\n"
        )

    def create_view(self) -> tuple[str, str, bool] | None:
        table = self.pick_table()
        if table is None:
            return None
        extra = [c for c in table.columns if c not in ("id", "name", "created_at")]
        chosen = self.rng.sample(extra, min(len(extra), self.rng.randint(1, 4)))
        view = View(self.unique(f"{table.name}_view"), table.name, [(c, c) for c in ("id", "name", *chosen)])
        self.views[view.name] = view
        return f"create_view_{view.name}", self.view_sql(view, replace=False), True

    def extend_view(self) -> tuple[str, str, bool] | None:
        """CREATE OR REPLACE VIEW may only add columns at the end: a new column shows up."""
        options = []
        for view in self.views.values():
            missing = [c for c in self.tables[view.table].columns if not view.uses(c)]
            if missing:
                options.append((view, missing))
        if not options:
            return None
        view, missing = self.rng.choice(options)
        column = self.rng.choice(missing)
        view.columns.append((column, column))
        return f"extend_view_{view.name}", self.view_sql(view, replace=True), True

    def function(self) -> tuple[str, str, bool]:
        """A new function, or (mostly) another revision of one: CREATE OR REPLACE, body changed."""
        if self.functions and self.rng.random() < 0.8:
            name = self.rng.choice(sorted(self.functions))
        else:
            name = self.unique(self.rng.choice(("compute", "score", "normalize", "price", "rank")))
            self.functions[name] = 0
        self.functions[name] += 1
        revision = self.functions[name]
        branches = "\n".join(
            f"    IF p_value > {i * 100} THEN\n        result := result + {revision + i};\n    END IF;"
            for i in range(1, 1 + revision % 5)
        )
        sql = (
            f"CREATE OR REPLACE FUNCTION public.{name}(p_value integer, p_factor numeric DEFAULT 1)\n"
            "RETURNS numeric\nLANGUAGE plpgsql\nIMMUTABLE\nAS $function$\nDECLARE\n    result numeric := 0;\n"
            f"BEGIN\n    -- revision {revision}\n    result := p_value * p_factor * {revision};\n{branches}\n"
            "    RETURN result;\nEND\n$function$;\n"
        )
        return f"{name}_revision_{revision}", sql, True

    def create_enum(self) -> tuple[str, str, bool]:
        name = self.unique(self.rng.choice(("order_status", "priority", "plan_tier", "channel_kind")))
        values = ["draft", "active"]
        self.enums[name] = values
        quoted = ", ".join(f"'{v}'" for v in values)
        return f"create_enum_{name}", f"CREATE TYPE public.{name} AS ENUM ({quoted});\n", True

    def grow_enum(self) -> tuple[str, str, bool, bool] | None:
        """ALTER TYPE ... ADD VALUE, alone in its file and outside a transaction (PostgreSQL
        before 12 refuses it in one; no version lets the value be used in the same one)."""
        if not self.enums:
            return None
        name = self.rng.choice(sorted(self.enums))
        value = self.unique("state")
        where = ""
        if len(self.enums[name]) > 2 and self.rng.random() < 0.3:
            where = f" BEFORE '{self.enums[name][-1]}'"
            self.enums[name].insert(-1, value)
        else:
            self.enums[name].append(value)
        sql = f"{NO_TRANSACTION}\nALTER TYPE public.{name} ADD VALUE IF NOT EXISTS '{value}'{where};\n"
        return f"add_{value}_to_{name}", sql, True, False

    def create_index(self) -> tuple[str, str, bool, bool] | None:
        table = self.pick_table()
        if table is None:
            return None
        column = self.rng.choice([c for c in table.columns if c != "id"])
        index = self.unique(f"{table.name}_{column}_idx")
        self.indexes[index] = (table.name, column)
        if self.rng.random() < 0.15:
            sql = f"{NO_TRANSACTION}\nCREATE INDEX CONCURRENTLY {index} ON public.{table.name} ({column});\n"
            return f"index_{index}_concurrently", sql, True, False
        return f"index_{index}", f"CREATE INDEX {index} ON public.{table.name} ({column});\n", True, True

    def drop_index(self) -> tuple[str, str, bool] | None:
        if not self.indexes:
            return None
        index = self.rng.choice(sorted(self.indexes))
        del self.indexes[index]
        return f"drop_{index}", f"DROP INDEX public.{index};\n", True

    def touch_trigger(self) -> tuple[str, str, bool] | None:
        options = [t for t in self.tables.values() if not t.touched]
        if not options:
            return None
        table = self.rng.choice(sorted(options, key=lambda t: t.name))
        sql = ""
        self.touch_function += 1
        sql += (
            "CREATE OR REPLACE FUNCTION public.touch_updated_at()\nRETURNS trigger\nLANGUAGE plpgsql\n"
            f"AS $function$\nBEGIN\n    -- revision {self.touch_function}\n    NEW.updated_at := now();\n"
            "    RETURN NEW;\nEND\n$function$;\n"
        )
        if "updated_at" not in table.columns:
            sql += f"ALTER TABLE public.{table.name} ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();\n"
            table.columns["updated_at"] = "timestamptz"
        sql += (
            f"CREATE TRIGGER {table.name}_touch BEFORE UPDATE ON public.{table.name}\n"
            "    FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();\n"
        )
        table.touched = True
        return f"touch_{table.name}", sql, True

    def drop_table(self) -> tuple[str, str, bool] | None:
        options = [t for t in self.tables.values() if not t.referenced]
        if len(self.tables) < 8 or not options:
            return None
        table = self.rng.choice(sorted(options, key=lambda t: t.name))
        views = [v for v in self.views.values() if v.table == table.name]
        sql = "".join(f"DROP VIEW public.{v.name};\n" for v in views) + f"DROP TABLE public.{table.name};\n"
        for view in views:
            del self.views[view.name]
        for index, (t, _) in list(self.indexes.items()):
            if t == table.name:
                del self.indexes[index]
        del self.tables[table.name]
        return f"drop_table_{table.name}", sql, True

    def data(self) -> tuple[str, str, bool] | None:
        """INSERT or UPDATE: no schema change."""
        table = self.pick_table()
        if table is None:
            return None
        if self.rng.random() < 0.5:
            rows = self.rng.randint(20, 400)
            sql = f"INSERT INTO public.{table.name} (name)\nSELECT 'seed ' || g FROM generate_series(1, {rows}) AS g;\n"
            return f"seed_{table.name}", sql, False
        values = {
            "text": "'backfilled ' || id",
            "varchar(500)": "'backfilled ' || id",
            "integer": "(id % 1000)::integer",
            "bigint": "id",
            "numeric(12,2)": "(id * 1.5)::numeric(12,2)",
            "numeric(16,4)": "(id * 1.5)::numeric(16,4)",
            "boolean": "true",
            "timestamptz": "now()",
            "jsonb": "jsonb_build_object('backfilled', id)",
            "date": "current_date",
        }
        settable = []
        for column, kind in table.columns.items():
            if column in ("id", "created_at") or (column.endswith("_id") and kind == "bigint"):
                continue
            if kind.startswith("public."):
                settable.append((column, f"'{self.rng.choice(self.enums[kind.removeprefix('public.')])}'"))
            elif kind in values:
                settable.append((column, values[kind]))
        column, value = self.rng.choice(settable)
        sql = f"UPDATE public.{table.name}\nSET {column} = {value}\nWHERE id % {self.rng.randint(2, 7)} = 0;\n"
        return f"backfill_{column}_on_{table.name}", sql, False

    def comment(self) -> tuple[str, str, bool] | None:
        """Comments only: a file with SQL comments and nothing else, or COMMENT ON (which the
        catalog snapshot does not show)."""
        table = self.pick_table()
        if table is None or self.rng.random() < 0.5:
            sql = (
                "-- Intentionally empty: this change was folded into the previous migration\n"
                "-- (kept so that the numbering stays stable across environments).\n"
            )
            return self.unique("placeholder"), sql, False
        column = self.rng.choice(list(table.columns))
        sql = (
            f"COMMENT ON TABLE public.{table.name} IS 'Owned by the {self.rng.choice(WORDS)} team';\n"
            f"COMMENT ON COLUMN public.{table.name}.{column} IS 'See the data dictionary';\n"
        )
        return f"document_{table.name}", sql, False

    def pick_table(self) -> Table | None:
        return self.rng.choice([self.tables[n] for n in sorted(self.tables)]) if self.tables else None

    def operations(self) -> tuple[tuple[Callable[[], tuple | None], int], ...]:
        """Each operation and its weight (a subclass may add its own)."""
        return (
            (self.create_table, 10),
            (self.add_column, 15),
            (self.rename_column, 7),
            (self.change_type, 5),
            (self.drop_column, 3),
            (self.create_view, 6),
            (self.extend_view, 4),
            (self.function, 15),
            (self.create_enum, 2),
            (self.grow_enum, 5),
            (self.create_index, 7),
            (self.drop_index, 2),
            (self.touch_trigger, 2),
            (self.drop_table, 1),
            (self.data, 10),
            (self.comment, 4),
        )

    def history(self, count: int) -> list[Migration]:
        functions, weights = zip(*self.operations(), strict=True)
        migrations: list[Migration] = []
        bootstrap = [self.create_table, self.create_table, self.create_enum, self.create_table, self.add_column]
        while len(migrations) < count:
            operation = bootstrap.pop(0) if bootstrap else self.rng.choices(functions, weights)[0]
            made = operation()
            if made is None:
                continue
            name, sql, schema, *transactional = made
            migrations.append(Migration(name, sql, schema, transactional[0] if transactional else True))
        return migrations


def write_churny_history(directory: Path, count: int = 350, seed: int = 13) -> list[tuple[Path, Migration]]:
    """``count`` migrations as ``NNN_name.sql`` in ``directory``; (path, migration) in order."""
    directory.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(count)))
    written = []
    for number, migration in enumerate(Generator(random.Random(seed)).history(count), start=1):
        path = directory / f"{number:0{width}d}_{migration.name}.sql"
        path.write_text(migration.sql)
        written.append((path, migration))
    return written


# --- measuring -----------------------------------------------------------------------------


def psql_bin() -> str:
    from reconciler import embedded

    return str(embedded.bin_dir() / "psql")


def psql_script(history: list[tuple[Path, Migration]], out: Path) -> Path:
    """One session; each file in its own transaction, unless it must run outside one."""
    lines = []
    for path, migration in history:
        lines += ["BEGIN;", f"\\i {path}", "COMMIT;"] if migration.transactional else [f"\\i {path}"]
    out.write_text("\n".join(lines) + "\n")
    return out


def apply_with_psql(url: str, script: Path) -> float:
    return run_psql_script(psql_bin(), url, script)


def diagnose(url: str, directory: Path, profile: Path | None = None) -> tuple[float, dict]:
    argv = poststack_argv(
        "db", "diagnose", "--format", "json", "--database-url", url, "--migrations-dir", str(directory)
    )
    if profile is not None:  # the same command in-process under cProfile (-m cProfile -m breaks typer's hints)
        import sys

        wrapper = (
            "import cProfile, sys\nfrom reconciler.interface.cli import main\n"
            "sys.argv = ['poststack', *sys.argv[2:]]\nprofiler = cProfile.Profile()\n"
            "try:\n    profiler.runcall(main)\nfinally:\n    profiler.dump_stats(sys.argv_profile)\n"
        ).replace("sys.argv_profile", repr(str(profile)))
        argv = [sys.executable, "-c", wrapper, "--", *argv[-8:]]
    env = {k: v for k, v in os.environ.items() if k not in ("POSTSTACK_DATABASE_URL", "POSTSTACK_SHADOW_DATABASE_URL")}
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"diagnose failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return elapsed, json.loads(proc.stdout)


PHASES = """
import contextlib, json, sys, time
from reconciler.desired.replay import cache, incremental, replay, source
from reconciler.diagnosis import diagnose as diagnosis, replayed
from reconciler.observed import state
from reconciler.interface.cli import main

out, sys.argv = sys.argv[1], ["poststack", *sys.argv[2:]]
phases, snapshots = {}, []

def add(name, started, keep=None):
    took = time.perf_counter() - started
    count, total = phases.get(name, (0, 0.0))
    phases[name] = (count + 1, total + took)
    if keep is not None:
        keep.append(took)

def timed(name, fn, keep=None):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            add(name, started, keep)
    return wrapper

def wrap(owner, attribute, name, keep=None):
    if hasattr(owner, attribute):  # the tree moves on: time what is there
        setattr(owner, attribute, timed(name, getattr(owner, attribute), keep))

wrap(replay, "read_snapshot", "replay: read_snapshot (shadow catalog)", snapshots)
wrap(incremental.IncrementalReader, "read", "replay: catalog read after a migration (incremental)", snapshots)
wrap(incremental.IncrementalReader, "agrees", "replay: the check against a full read, at the end")
wrap(replay, "_run", "replay: _run (a migration's statements)")
wrap(replay, "run_migration", "replay: run_migration (a migration's statements)")
wrap(cache.ReplayCache, "save", "replay: cache.save")
wrap(cache.ReplayCache, "load", "replay: cache.load")
wrap(source, "replay", "replay (all of it)")
wrap(state, "read_desired", "read_desired (files, parse, effects)")
wrap(state, "observe", "observe (the target: tracking, catalog, live snapshot)")
wrap(diagnosis, "run_checks", "run_checks (attribution, issues)")
writes = getattr(replayed, "_Writes", None)
if writes is not None:
    writes.of = classmethod(timed("  of which replayed._Writes.of", writes.of.__func__))
scratch = source.scratch_session

@contextlib.contextmanager
def scratch_session(url):
    started = time.perf_counter()
    manager = scratch(url)
    session = manager.__enter__()
    add("scratch database: create and connect", started)
    try:
        yield session
    finally:
        started = time.perf_counter()
        manager.__exit__(None, None, None)
        add("scratch database: drop", started)

source.scratch_session = scratch_session
started = time.perf_counter()
try:
    main()
finally:
    add("diagnose in-process (no interpreter start-up)", started)
    with open(out, "w") as f:
        json.dump({"phases": phases, "snapshots": snapshots}, f)
"""


def diagnose_phases(url: str, directory: Path, out: Path) -> tuple[float, dict]:
    """One diagnose with its replay's phases timed (wrapped functions, no profiler): the whole
    process's time, and {"phases": {name: (calls, seconds)}, "snapshots": [seconds, ...]}."""
    import sys

    compile_package()
    argv = [sys.executable, "-c", PHASES, str(out), "db", "diagnose", "--format", "json"]
    argv += ["--database-url", url, "--migrations-dir", str(directory)]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"diagnose failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return elapsed, json.loads(out.read_text())


def print_phases(label: str, elapsed: float, timings: dict, migrations: int) -> None:
    print(f"\nwhere a {label} diagnose goes ({elapsed:.2f} s as a process, {migrations} migrations):")
    for name, (calls, seconds) in sorted(timings["phases"].items(), key=lambda kv: -kv[1][1]):
        print(f"  {name:48} {seconds:7.2f} s  {calls:4d} calls  {seconds / calls * 1000:8.1f} ms each")
    inside = timings["phases"].get("diagnose in-process (no interpreter start-up)", (1, 0.0))[1]
    print(f"  {'interpreter start-up and imports (the rest)':48} {elapsed - inside:7.2f} s")
    shots = timings["snapshots"]
    if len(shots) >= 20:
        print(
            f"  catalog reads: first 10 {median(shots[:10]) * 1000:.1f} ms each (median), "
            f"last 10 {median(shots[-10:]) * 1000:.1f} ms each"
        )


def missing(report: dict) -> list[dict]:
    return [i for i in report["issues"] if i["type"] == "missing_tracking"]


def snapshot_parts(url: str, runs: int = 5) -> None:
    """The snapshot query's parts (one per kind of object), each timed alone on ``url``."""
    import psycopg2

    from reconciler.config import TrackingLocation
    from reconciler.desired.replay import snapshot

    location = TrackingLocation()
    params = {"own_schema": location.schema, "own_tables": list(location.tables)}
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SET search_path = pg_catalog")
            timings = []
            for part in (*(p.select() for p in snapshot._PARTS), snapshot.SNAPSHOT_QUERY):
                times, rows = [], 0
                for _ in range(runs):
                    started = time.perf_counter()
                    cur.execute(part, params)
                    rows = len(cur.fetchall())
                    times.append(time.perf_counter() - started)
                kind = "the whole query" if part is snapshot.SNAPSHOT_QUERY else _part_name(part)
                timings.append((kind, median(times), rows))
    finally:
        conn.close()
    print(f"\nthe snapshot query on the final state, by part (median of {runs}):")
    for kind, seconds, rows in timings:
        print(f"  {kind:20} {seconds * 1000:7.1f} ms  {rows:5d} rows")


def _part_name(part: str) -> str:
    """What one UNION ALL part of the snapshot query reads: its kind."""
    for marker, name in (
        ("typtype WHEN 'd'", "domains, types"),
        ("relkind WHEN 'r'", "relations"),
        ("prokind", "functions"),
    ):
        if marker in part:
            return name
    return part.split("'")[1]


def found_applied(report: dict) -> set[str]:
    return {i["version"] for i in missing(report)}


def replay_summary(report: dict) -> str:
    replay = report.get("database_state", {}).get("replay") or report.get("replay") or {}
    if not replay:
        return "no replay in the report"
    stopped = replay.get("stopped_at")
    return (
        f"replayed {replay.get('replayed')}, from cache {replay.get('from_cache')}, "
        f"stopped at {stopped['version'] + ' (' + stopped['reason'] + ')' if stopped else 'none'}"
        + (f", unavailable: {replay['unavailable']}" if replay.get("unavailable") else "")
    )


@dataclass
class Result:
    psql: list[float]
    cold: list[float]
    warm: list[float]
    schema_versions: int
    found_full: int  # of the schema-changing migrations, found missing_tracking (all applied)
    found_other_full: int  # missing_tracking for migrations that change no schema (by order)
    evidence: dict[str, int]  # missing_tracking issues by their evidence (replay, order, ...)
    pending: int
    false_claims: list[str]  # pending migrations reported missing_tracking
    applied_schema: int
    found_partial: int
    replay_cold: str
    replay_warm: str
    server: str = ""  # version and durability settings, for the record

    @property
    def ratio(self) -> float:
        return median(self.cold) / median(self.psql)

    @property
    def paired(self) -> list[float]:
        """cold / psql within each run (measured back to back: steadier on a busy machine)."""
        return [c / f for c, f in zip(self.cold, self.psql, strict=True)]

    @property
    def recall_full(self) -> float:
        return self.found_full / self.schema_versions

    @property
    def recall_partial(self) -> float:
        return self.found_partial / self.applied_schema

    @property
    def passed(self) -> dict[str, bool]:
        return {
            "cold": self.ratio <= COLD_TARGET,
            "warm": median(self.warm) <= WARM_TARGET,
            "recall": self.recall_full >= RECALL_TARGET and self.recall_partial >= RECALL_TARGET,
            "false_claims": not self.false_claims,
        }


def measure(
    admin: str, work: Path, runs: int, count: int = 350, seed: int = 13, phases: bool = False, profile: bool = False
) -> Result:
    directory = work / "project" / "migrations"  # the cache goes to project/.poststack/replay
    history = write_churny_history(directory, count, seed)
    cache = directory.resolve().parent / ".poststack" / "replay"
    schema_versions = {p.name.split("_", 1)[0] for p, m in history if m.schema}
    full_script = psql_script(history, work / "all.psql")
    cut = len(history) * 4 // 5
    partial_script = psql_script(history[:cut], work / "first_four_fifths.psql")

    floor, cold, warm = [], [], []
    report_cold = report_warm = {}
    for i in range(runs):
        floor.append(apply_with_psql(fresh_database(admin, f"poststack_bench_r350_psql_{i}"), full_script))
        url = fresh_database(admin, f"poststack_bench_r350_{i}")
        apply_with_psql(url, full_script)  # by hand: nothing tracked (Scenario 1, at scale)
        shutil.rmtree(cache, ignore_errors=True)
        elapsed, report_cold = diagnose(url, directory)
        cold.append(elapsed)
        for _ in range(2):
            elapsed, report_warm = diagnose(url, directory)
            warm.append(elapsed)
    found = found_applied(report_cold)
    if found != found_applied(report_warm):
        print("warning: the warm diagnose found other migrations than the cold one")

    # The last fifth pending: applied by hand up to 80 %, the rest never run.
    url = fresh_database(admin, "poststack_bench_r350_partial")
    apply_with_psql(url, partial_script)
    shutil.rmtree(cache, ignore_errors=True)
    _, report_partial = diagnose(url, directory)
    applied = {p.name.split("_", 1)[0] for p, _ in history[:cut]}
    pending = {p.name.split("_", 1)[0] for p, _ in history[cut:]}
    found_partial = found_applied(report_partial)

    if phases or profile:
        url = fresh_database(admin, "poststack_bench_r350_phases")
        apply_with_psql(url, full_script)
        if phases:
            shutil.rmtree(cache, ignore_errors=True)
            print_phases("cold", *diagnose_phases(url, directory, work / "cold.json"), len(history))
            print_phases("warm", *diagnose_phases(url, directory, work / "warm.json"), len(history))
            snapshot_parts(url)
        if profile:
            shutil.rmtree(cache, ignore_errors=True)
            diagnose(url, directory, profile=work / "diagnose.prof")
            print_profile(work / "diagnose.prof")

    return Result(
        psql=floor,
        cold=cold,
        warm=warm,
        schema_versions=len(schema_versions),
        found_full=len(found & schema_versions),
        found_other_full=len(found - schema_versions),
        evidence=dict(Counter(i["details"].get("evidence") for i in missing(report_cold))),
        pending=len(pending),
        false_claims=sorted(found_partial & pending),
        applied_schema=len(applied & schema_versions),
        found_partial=len(found_partial & applied & schema_versions),
        replay_cold=replay_summary(report_cold),
        replay_warm=replay_summary(report_warm),
        server=server_settings(admin),
    )


def server_settings(url: str) -> str:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT current_setting('server_version'), current_setting('fsync'),"
                " current_setting('synchronous_commit'), current_setting('shared_buffers')"
            )
            version, fsync, commit, buffers = cur.fetchone()
    finally:
        conn.close()
    return f"PostgreSQL {version}, fsync {fsync}, synchronous_commit {commit}, shared_buffers {buffers}"


def print_profile(path: Path) -> None:
    import pstats

    print(f"\ncProfile of one cold diagnose ({path}), by cumulative time:")
    pstats.Stats(str(path)).sort_stats("cumulative").print_stats(30)


def _ms(values: list[float]) -> str:
    return f"median {median(values):.2f} s, min {min(values):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=350)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--phases", action="store_true", help="also time the replay's phases, cold and warm")
    parser.add_argument("--profile", action="store_true", help="also profile one cold diagnose (cProfile)")
    args = parser.parse_args()

    admin, stop = server_url()
    work = Path(tempfile.mkdtemp(prefix="poststack-bench-"))
    try:
        r = measure(admin, work, args.runs, args.count, args.seed, args.phases, args.profile)
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)
    ok = r.passed
    verdict = {True: "pass", False: "FAIL"}
    print(f"machine: {machine()}")
    print(f"server: {r.server}")
    print(f"history: {args.count} migrations (seed {args.seed}), {r.schema_versions} of them change the schema")
    print(f"psql, one session, whole history:     {_ms(r.psql)}  ({args.runs} runs)")
    print(
        f"diagnose with replay, cold:           {_ms(r.cold)}  = {r.ratio:.2f}× psql "
        f"(target ≤ {COLD_TARGET:g}×: {verdict[ok['cold']]})"
    )
    print(f"diagnose with replay, warm (cached):  {_ms(r.warm)}  (target ≤ {WARM_TARGET:g} s: {verdict[ok['warm']]})")
    print(f"  cold / psql within each run: {', '.join(f'{x:.2f}×' for x in r.paired)} (median {median(r.paired):.2f}×)")
    print(f"  replay, cold: {r.replay_cold}")
    print(f"  replay, warm: {r.replay_warm}")
    print(
        f"all applied by hand: missing_tracking for {r.found_full} of {r.schema_versions} schema-changing "
        f"migrations ({r.recall_full:.1%}), and for {r.found_other_full} that change no schema; evidence: "
        + ", ".join(f"{k} {v}" for k, v in sorted(r.evidence.items()))
    )
    print(
        f"first 80 % applied by hand: {r.found_partial} of {r.applied_schema} applied schema-changing found "
        f"({r.recall_partial:.1%}, target ≥ {RECALL_TARGET:.0%}: {verdict[ok['recall']]}); "
        f"pending claimed applied: {len(r.false_claims)} of {r.pending}"
        + (f" {r.false_claims}" if r.false_claims else "")
        + f" ({verdict[ok['false_claims']]})"
    )


if __name__ == "__main__":
    main()
