"""Statements that would drop, rename, truncate or move poststack's own tables. Pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.desired.effects import Namespace, own_table_conflicts
from reconciler.diagnosis.pending import NOTHING_ALLOWED, OwnTablesAtRisk, decide
from reconciler.errors import EXIT_PROBLEMS, MigrationFileError
from reconciler.observed.state import own_tables, read_desired
from reconciler.observed.tracking import ObservedTracking
from reconciler.remediation.runner import migrate_plan

TRACKING = "poststack's tracking table public.schema_migrations"
RECORD = "poststack would lose its record mid-run"
REFUSED = "PostgreSQL would refuse it mid-run"


def conflicts(sql: str, schema: str = "public", namespace: Namespace | None = None) -> list[tuple[int, str]]:
    return [(c.line, c.what) for c in own_table_conflicts(sql, own_tables(schema), namespace)]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("DROP TABLE schema_migrations", [(1, f"drops {TRACKING}; {RECORD}")]),
        ("DROP TABLE IF EXISTS schema_migrations CASCADE", [(1, f"drops {TRACKING}; {RECORD}")]),
        ("DROP TABLE Public.SCHEMA_MIGRATIONS", [(1, f"drops {TRACKING}; {RECORD}")]),  # folded, as PostgreSQL does
        ("DROP TABLE mydb.public.schema_migrations", [(1, f"drops {TRACKING}; {RECORD}")]),
        (
            "DROP TABLE old_versions, schema_migrations_lock",
            [(1, "drops poststack's lock table public.schema_migrations_lock; poststack would lose its lock mid-run")],
        ),
        (
            "-- clean up\n\nTRUNCATE ONLY schema_migrations_audit",
            [
                (
                    3,
                    "truncates poststack's audit table public.schema_migrations_audit; "
                    "poststack would lose its audit trail mid-run",
                )
            ],
        ),
        ("TRUNCATE public.schema_migrations RESTART IDENTITY", [(1, f"truncates {TRACKING}; {RECORD}")]),
        (
            "ALTER TABLE schema_migrations RENAME TO old_migrations",
            [(1, f"renames {TRACKING} to old_migrations; {RECORD}")],
        ),
        (
            "ALTER TABLE IF EXISTS public.schema_migrations RENAME TO old",
            [(1, f"renames {TRACKING} to old; {RECORD}")],
        ),
        (
            "ALTER TABLE old_versions RENAME TO schema_migrations",
            [(1, f"renames public.old_versions to the name of {TRACKING}; {REFUSED}")],
        ),
        ("ALTER TABLE schema_migrations SET SCHEMA archive", [(1, f"moves {TRACKING} to schema archive; {RECORD}")]),
        (
            "ALTER TABLE archive.schema_migrations SET SCHEMA public",
            [(1, f"moves archive.schema_migrations into schema public, where {TRACKING} is; {REFUSED}")],
        ),
        (
            "DROP SCHEMA public CASCADE",
            [(1, f"drops schema public with CASCADE, and poststack's tables in it; {RECORD}")],
        ),
        ("DROP SCHEMA IF EXISTS public", [(1, f"drops schema public, which holds poststack's tables; {REFUSED}")]),
        (
            "ALTER SCHEMA public RENAME TO old_public",
            [(1, f"renames schema public, and poststack's tables with it; {RECORD}")],
        ),
        ("CREATE TABLE t (a int);\nDROP TABLE t;\nDROP TABLE schema_migrations;", [(3, f"drops {TRACKING}; {RECORD}")]),
        # Not poststack's: another schema, a quoted name PostgreSQL does not fold, a temporary table,
        # a view or index of that name (PostgreSQL refuses those without harm), a column rename.
        ("DROP TABLE app.schema_migrations", []),
        ('DROP TABLE "Schema_Migrations"', []),
        ("CREATE TEMP TABLE schema_migrations (a int); DROP TABLE schema_migrations", []),
        ("DROP VIEW IF EXISTS schema_migrations", []),
        ("DROP SCHEMA app CASCADE", []),
        ("TRUNCATE accounts", []),
        ("ALTER TABLE archive.old RENAME TO schema_migrations", []),
        ("ALTER TABLE archive.schema_migrations SET SCHEMA other", []),
        ("SET search_path TO app; DROP TABLE schema_migrations", []),  # public is not on the path
    ],
)
def test_statements_against_poststacks_tables(sql: str, expected: list[tuple[int, str]]) -> None:
    assert conflicts(sql) == expected


def test_unqualified_names_resolve_through_the_search_path() -> None:
    # app is first on the path, yet holds no schema_migrations: PostgreSQL finds public's.
    namespace = Namespace(("app", "public"), schemas={"app", "public"})
    assert conflicts("DROP TABLE schema_migrations", namespace=namespace) == [(1, f"drops {TRACKING}; {RECORD}")]
    # An earlier migration made app.schema_migrations: that is the one dropped.
    namespace = Namespace(("app", "public"), schemas={"app", "public"})
    assert conflicts("CREATE TABLE app.schema_migrations (v text)", namespace=namespace) == []
    assert conflicts("DROP TABLE schema_migrations", namespace=namespace) == []
    # A search_path set in the file counts from where it is set.
    sql = "DROP TABLE IF EXISTS schema_migrations;\nSET search_path TO poststack;\nDROP TABLE schema_migrations;"
    assert conflicts(sql, "poststack") == [
        (3, "drops poststack's tracking table poststack.schema_migrations; " + RECORD)
    ]


def test_only_the_configured_tracking_schema_counts() -> None:
    assert conflicts("DROP TABLE public.schema_migrations; DROP SCHEMA public CASCADE", "poststack") == []
    assert conflicts("DROP TABLE schema_migrations", "poststack") == []
    assert conflicts("DROP SCHEMA poststack CASCADE", "poststack") == [
        (1, f"drops schema poststack with CASCADE, and poststack's tables in it; {RECORD}")
    ]


FILES = {
    "001_accounts.sql": "CREATE TABLE accounts (id int);",
    "002_drop_old.sql": "-- the old tool's table\nCREATE TABLE notes (id int);\nDROP TABLE schema_migrations;\n",
    "003_more.sql": "CREATE TABLE more (id int);",
}


def _desired(tmp_path: Path, schema: str = "public"):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    return read_desired(tmp_path, tracking_schema=schema)


def test_migrate_plan_refuses_a_runnable_migration_that_breaks_poststacks_tables(tmp_path: Path) -> None:
    desired = _desired(tmp_path)
    observed = ObservedTracking("public", frozenset(), (), None)
    readiness = decide(desired.migrations, observed, {}, desired.history, None, NOTHING_ALLOWED)
    with pytest.raises(OwnTablesAtRisk) as refused:
        migrate_plan(desired.migrations, observed, readiness)
    assert refused.value.summary == (
        f"{tmp_path / '002_drop_old.sql'}:3: drops {TRACKING}; {RECORD}. Keep poststack's tables apart with "
        "--schema (e.g. --schema poststack) or remove that statement."
    )
    assert isinstance(refused.value, MigrationFileError) and refused.value.exit_code == EXIT_PROBLEMS


def test_migrate_plan_runs_it_with_another_tracking_schema_or_below_the_target(tmp_path: Path) -> None:
    desired = _desired(tmp_path, "poststack")
    observed = ObservedTracking("poststack", frozenset(), (), None)
    readiness = decide(desired.migrations, observed, {}, desired.history, None, NOTHING_ALLOWED)
    assert readiness.risks == ()
    plan = migrate_plan(desired.migrations, observed, readiness)
    assert [s.version for s in plan.steps if s.action == "apply_migration"] == ["001", "002", "003"]

    desired = _desired(tmp_path)
    observed = ObservedTracking("public", frozenset(), (), None)
    readiness = decide(desired.migrations, observed, {}, desired.history, None, NOTHING_ALLOWED, limit=1)
    assert [s.version for s in migrate_plan(desired.migrations, observed, readiness, "001").steps][-1] == "001"
