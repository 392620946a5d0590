"""Property: after any sequence of recover, migrate and apply, no migration has run twice.

Random histories that churn as real ones do (a view dropped and recreated, a function
replaced again and again, renamed tables and columns, an enum that grows, data migrations
between the schema changes); a random prefix applied by poststack, the next part applied
by hand, the rest pending; tracking randomly lost. Every generated migration inserts its
version into a counter table, so a second run shows as a second row.

What no tool can see is left out on purpose: migrations run by hand *after* poststack's
last recorded one that leave nothing in the catalog are indistinguishable from pending
ones. So the part applied by hand ends with a migration that leaves a table of its own (as
a person's by-hand run that anyone could notice), and the first migration creates the
application's core table, which the history never drops.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import psycopg2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import run_cli, scratch_database, sql

_databases = itertools.count()
COUNTER = "CREATE TABLE migration_runs (version text NOT NULL)"


class _Schema:
    """What exists so far, so each generated statement is valid where it runs."""

    def __init__(self) -> None:
        self.tables: dict[str, list[str]] = {}  # churnable tables -> their columns
        self.view = False
        self.enum = False


def _statement(data: st.DataObject, schema: _Schema, n: int) -> str:
    kinds = ["table", "view", "function", "enum", "data"]
    if schema.tables:
        kinds += ["rename_column", "rename_table", "add_column", "drop"]
    kind = data.draw(st.sampled_from(kinds))
    if kind == "table":
        schema.tables[f"t{n}"] = [f"c{n}"]
        return f"CREATE TABLE t{n} (id int, c{n} text)"
    if kind == "view":
        if not schema.view:
            schema.view = True
            return f"CREATE VIEW report AS SELECT {n} AS k"
        if data.draw(st.booleans()):
            return f"CREATE OR REPLACE VIEW report AS SELECT {n} AS k"
        return f"DROP VIEW report;\nCREATE VIEW report AS SELECT {n} AS k"
    if kind == "function":
        return f"CREATE OR REPLACE FUNCTION calc() RETURNS int LANGUAGE sql AS 'SELECT {n}'"
    if kind == "enum":
        if not schema.enum:
            schema.enum = True
            return f"CREATE TYPE mood AS ENUM ('m{n}')"
        return f"ALTER TYPE mood ADD VALUE 'm{n}'"
    if kind == "data":
        return f"UPDATE core SET note = 'n{n}'"
    table = data.draw(st.sampled_from(sorted(schema.tables)))
    columns = schema.tables[table]
    if kind == "add_column":
        columns.append(f"c{n}")
        return f"ALTER TABLE {table} ADD COLUMN c{n} int"
    if kind == "rename_column":
        old = data.draw(st.sampled_from(columns))
        columns[columns.index(old)] = f"c{n}"
        return f"ALTER TABLE {table} RENAME COLUMN {old} TO c{n}"
    if kind == "rename_table":
        schema.tables[f"r{n}"] = schema.tables.pop(table)
        return f"ALTER TABLE {table} RENAME TO r{n}"
    del schema.tables[table]
    return f"DROP TABLE {table}"


def _history(data: st.DataObject) -> list[list[str]]:
    schema = _Schema()
    numbers = itertools.count(1)
    history = [["CREATE TABLE core (id int PRIMARY KEY, note text)"]]
    for _ in range(data.draw(st.integers(2, 8), label="more migrations")):
        history.append([_statement(data, schema, next(numbers)) for _ in range(data.draw(st.integers(1, 2)))])
    return history


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same histories on every run: CI is not a lottery
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_migration_ever_runs_twice(data, pg_server, template_db, tmp_path_factory):
    history = _history(data)
    count = len(history)
    by_poststack = data.draw(st.integers(0, count), label="applied by poststack")
    by_hand = data.draw(st.integers(0, count - by_poststack), label="then applied by hand")
    lost = data.draw(st.sampled_from(["kept", "tables dropped", "rows deleted"]), label="tracking")
    operations = data.draw(
        st.lists(st.sampled_from(["recover", "migrate", "apply"]), min_size=1, max_size=4), label="operations"
    )
    if by_hand:
        history[by_poststack + by_hand - 1].append(f"CREATE TABLE keep{by_poststack + by_hand} (id int)")

    directory: Path = tmp_path_factory.mktemp("history")
    for number, statements in enumerate(history, start=1):
        body = ";\n".join([*statements, f"INSERT INTO migration_runs VALUES ('{number:03d}')"])
        (directory / f"{number:03d}_m{number}.sql").write_text(body + ";\n")

    name = f"poststack_twice_{next(_databases)}_{id(history) % 100000}"
    story = [f"{by_poststack} by poststack, {by_hand} by hand, tracking {lost}, then {operations}"]
    with scratch_database(pg_server, name, template_db) as url:

        def cli(*args: str):
            return run_cli(*args, "--database-url", url, "--migrations-dir", str(directory))

        conn = psycopg2.connect(url)
        conn.autocommit = True
        sql(conn, COUNTER)
        if by_poststack:
            result = cli("db", "migrate", "--target", f"{by_poststack:03d}")
            assert result.exit_code == 0, result.output
        for number in range(by_poststack + 1, by_poststack + by_hand + 1):
            with psycopg2.connect(url) as by_hand_conn, by_hand_conn.cursor() as cur:
                cur.execute((directory / f"{number:03d}_m{number}.sql").read_text())
            by_hand_conn.close()
        if lost == "tables dropped" and by_poststack:
            sql(conn, "DROP TABLE schema_migrations, schema_migrations_lock, schema_migrations_audit")
        elif lost == "rows deleted" and by_poststack:
            sql(conn, "DELETE FROM schema_migrations")

        for operation in operations:
            if operation == "recover":
                result = cli("db", "recover")
            elif operation == "migrate":
                result = cli("db", "migrate")
            else:
                result = cli("apply", "--auto-approve")
            story.append(f"{operation}: exit {result.exit_code}: {result.output.strip()[:400]}")
            assert result.exit_code in (0, 1), "\n".join(story)
            twice = sql(conn, "SELECT version, count(*) FROM migration_runs GROUP BY 1 HAVING count(*) > 1")
            assert not twice, "ran twice: " + repr(twice) + "\n" + "\n".join(story) + "\n" + repr(history)
        conn.close()
