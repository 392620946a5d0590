"""Property: diagnose never claims an unapplied migration is applied, and never misses an
applied one that has attributable effects. Random histories, a random prefix applied by
hand, a random part of it tracked, on a real PostgreSQL."""

from __future__ import annotations

import itertools
from pathlib import Path

import psycopg2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.config import DEFAULT_TRACKING, resolve_settings
from reconciler.db import connect
from reconciler.desired.files import CHECKSUM_ALGORITHM
from reconciler.diagnosis.checks import Facts, run_checks
from reconciler.diagnosis.issues import IssueType
from reconciler.observed.state import observe, read_desired
from reconciler.observed.tracking import create_statements
from tests.conftest import scratch_database

_databases = itertools.count()


def _history(data: st.DataObject) -> list[str]:
    """A valid sequential history: each migration a few statements over what exists so far."""
    tables: list[str] = []  # live tables (qualified)
    names = itertools.count(1)
    migrations = []
    for _ in range(data.draw(st.integers(2, 7), label="migrations")):
        statements = []
        for _ in range(data.draw(st.integers(1, 3))):
            choices = ["table", "function", "data", "schema"] + (
                ["column", "index", "drop", "rename", "insert"] if tables else []
            )
            op = data.draw(st.sampled_from(choices))
            n = next(names)
            if op == "table":
                tables.append(f"t{n}")
                statements.append(f"CREATE TABLE t{n} (id int, v{n} text)")
            elif op == "schema":
                tables.append(f"s{n}.t{n}")
                statements.append(f"CREATE SCHEMA s{n}; CREATE TABLE s{n}.t{n} (id int)")
            elif op == "function":
                statements.append(f"CREATE FUNCTION f{n}(a integer, b text[]) RETURNS int LANGUAGE sql AS 'select 1'")
            elif op == "data":
                statements.append("SELECT 1")
            elif op == "column":
                statements.append(f"ALTER TABLE {data.draw(st.sampled_from(tables))} ADD COLUMN c{n} int")
            elif op == "index":
                statements.append(f"CREATE INDEX i{n} ON {data.draw(st.sampled_from(tables))} (id)")
            elif op == "insert":
                statements.append(f"INSERT INTO {data.draw(st.sampled_from(tables))} (id) VALUES ({n})")
            elif op == "drop":
                victim = data.draw(st.sampled_from(tables))
                tables.remove(victim)
                statements.append(f"DROP TABLE {victim}")
            else:
                victim = data.draw(st.sampled_from(tables))
                tables.remove(victim)
                schema = victim.split(".")[0] + "." if "." in victim else ""
                tables.append(f"{schema}r{n}")
                statements.append(f"ALTER TABLE {victim} RENAME TO r{n}")
        migrations.append(";\n".join(statements) + ";\n")
    return migrations


@settings(
    derandomize=True,  # the same histories on every run: CI is not a lottery
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_diagnose_never_lies(data, pg_server, template_db, tmp_path_factory):
    history = _history(data)
    applied = data.draw(st.integers(0, len(history)), label="applied prefix")
    tracked = set(data.draw(st.sets(st.integers(1, applied), max_size=applied), label="tracked")) if applied else set()

    directory: Path = tmp_path_factory.mktemp("history")
    for i, sql in enumerate(history, start=1):
        (directory / f"{i:03d}_m{i}.sql").write_text(sql)
    desired = read_desired(directory)

    name = f"poststack_prop_{next(_databases)}_{id(history) % 100000}"
    with scratch_database(pg_server, name, template_db) as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            for statement in create_statements(DEFAULT_TRACKING):
                cur.execute(statement.sql, statement.params)
            for migration in desired.migrations.migrations[:applied]:
                cur.execute(migration.file.text)
                if int(migration.version) in tracked:
                    cur.execute(
                        "INSERT INTO schema_migrations (version, description, checksum, checksum_algorithm, success) "
                        "VALUES (%s, %s, %s, %s, true)",
                        (migration.version, migration.description, migration.checksum, CHECKSUM_ALGORITHM),
                    )
        conn.close()
        settings_ = resolve_settings(database_url=url, migrations_dir=directory, environ={})
        with connect(settings_) as session:
            observed = observe(session, DEFAULT_TRACKING, desired)
        issues = run_checks(Facts(desired, observed), [IssueType.MISSING_TRACKING])
        claimed = {int(i.version) for i in issues}
        for migration in desired.migrations.migrations:
            number = int(migration.version)
            if number > applied:
                assert number not in claimed, f"claimed unapplied migration {number}\n{history}"
            elif number not in tracked and desired.history.evidence_of(migration.version):
                assert number in claimed, f"missed applied migration {number}\n{history}"
