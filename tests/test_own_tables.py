"""Statements that would drop, rename, truncate or move poststack's own tables. Pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config import DEFAULT_TRACKING, TrackingLocation
from reconciler.desired.effects import Namespace, own_table_conflicts
from reconciler.desired.versions import parse_version
from reconciler.diagnosis.pending import NOTHING_ALLOWED, OwnTablesAtRisk, decide
from reconciler.errors import EXIT_PROBLEMS, MigrationFileError
from reconciler.observed.state import own_tables, read_desired
from reconciler.observed.tracking import ObservedTracking
from reconciler.remediation.runner import migrate_plan

TRACKING = "poststack's tracking table public.schema_migrations"
RECORD = "poststack would lose its record mid-run"
REFUSED = "PostgreSQL would refuse it mid-run"
ROWS = "its rows are poststack's record, kept by poststack's own commands"


def conflicts(
    sql: str, schema: str = "public", namespace: Namespace | None = None, prefix: str = "schema_"
) -> list[tuple[int, str]]:
    return [(c.line, c.what) for c in own_table_conflicts(sql, own_tables(TrackingLocation(schema, prefix)), namespace)]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("DROP TABLE schema_migrations", [(1, f"drops {TRACKING}; {RECORD}")]),
        # Rows: DELETE is TRUNCATE by another name, and a migration writing tracking rows lies.
        ("DELETE FROM schema_migrations", [(1, f"deletes rows of {TRACKING}; {ROWS}")]),
        ("UPDATE public.schema_migrations SET success = true", [(1, f"updates {TRACKING}; {ROWS}")]),
        ("INSERT INTO schema_migrations (version) VALUES ('9')", [(1, f"inserts into {TRACKING}; {ROWS}")]),
        ("DELETE FROM users; UPDATE other.schema_migrations SET x = 1", []),
        # Dynamic SQL: what it does cannot be read, so naming poststack's table is enough.
        (
            "SELECT 1;\nDO $$ BEGIN EXECUTE 'DELETE FROM schema_migrations'; END $$;",
            [(2, f"runs a DO block that names {TRACKING}, and what dynamic SQL does to it cannot be read; {RECORD}")],
        ),
        ("DO $$ BEGIN RAISE NOTICE 'schema_migrations_x'; END $$;", []),
        # Everything the role owns goes, poststack's tables with it when that role made them.
        (
            "DROP OWNED BY app",
            [(1, f"drops everything app owns, poststack's tables in public too when app owns them; {RECORD}")],
        ),
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


def test_only_the_configured_table_names_count() -> None:
    """With another prefix, a table called schema_migrations is anybody's (an old tool's):
    the point of the setting. poststack's own names are protected as before."""
    assert conflicts("DROP TABLE schema_migrations; TRUNCATE schema_migrations_lock", prefix="poststack_") == []
    assert conflicts("ALTER TABLE schema_migrations RENAME TO old_versions", prefix="poststack_") == []
    assert conflicts("DROP TABLE poststack_migrations, schema_migrations_audit", prefix="poststack_") == [
        (1, f"drops poststack's tracking table public.poststack_migrations; {RECORD}")
    ]
    assert conflicts("ALTER TABLE old RENAME TO poststack_migrations_audit", prefix="poststack_") == [
        (1, f"renames public.old to the name of poststack's audit table public.poststack_migrations_audit; {REFUSED}")
    ]
    assert conflicts("DROP SCHEMA public CASCADE", prefix="poststack_") == [
        (1, f"drops schema public with CASCADE, and poststack's tables in it; {RECORD}")
    ]


FILES = {
    "001_accounts.sql": "CREATE TABLE accounts (id int);",
    "002_drop_old.sql": "-- the old tool's table\nCREATE TABLE notes (id int);\nDROP TABLE schema_migrations;\n",
    "003_more.sql": "CREATE TABLE more (id int);",
}


def _desired(tmp_path: Path, location: TrackingLocation = DEFAULT_TRACKING):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    return read_desired(tmp_path, location=location)


def test_migrate_plan_refuses_a_runnable_migration_that_breaks_poststacks_tables(tmp_path: Path) -> None:
    desired = _desired(tmp_path)
    observed = ObservedTracking(TrackingLocation(), frozenset(), (), None)
    readiness = decide(desired.migrations, observed, {}, desired.history, None, NOTHING_ALLOWED)
    with pytest.raises(OwnTablesAtRisk) as refused:
        migrate_plan(desired.migrations, observed, readiness)
    assert refused.value.summary == (
        f"{tmp_path / '002_drop_old.sql'}:3: drops {TRACKING}; {RECORD}. Keep poststack's tables apart with "
        "--schema (e.g. --schema poststack) or --table-prefix (e.g. --table-prefix poststack_), or remove that statement."
    )
    assert isinstance(refused.value, MigrationFileError) and refused.value.exit_code == EXIT_PROBLEMS


def test_a_statement_on_the_whole_schema_is_kept_apart_by_schema_alone(tmp_path: Path) -> None:
    (tmp_path / "001_reset.sql").write_text("DROP SCHEMA public CASCADE;\nCREATE SCHEMA public;\n")
    desired = read_desired(tmp_path)
    observed = ObservedTracking(TrackingLocation(), frozenset(), (), None)
    readiness = decide(desired.migrations, observed, {}, desired.history, None, NOTHING_ALLOWED)
    assert [r.message for r in readiness.risks] == [
        f"{tmp_path / '001_reset.sql'}:1: drops schema public with CASCADE, and poststack's tables in it; {RECORD}. "
        "Keep poststack's tables apart with --schema (e.g. --schema poststack) or remove that statement."
    ]


@pytest.mark.parametrize(
    "location", [TrackingLocation("poststack"), TrackingLocation("public", "poststack_")], ids=["schema", "prefix"]
)
def test_migrate_plan_runs_it_with_poststacks_tables_elsewhere(tmp_path: Path, location: TrackingLocation) -> None:
    desired = _desired(tmp_path, location)
    observed = ObservedTracking(location, frozenset(), (), None)
    readiness = decide(desired.migrations, observed, {}, desired.history, None, NOTHING_ALLOWED)
    assert readiness.risks == ()
    plan = migrate_plan(desired.migrations, observed, readiness)
    assert [s.version for s in plan.steps if s.action == "apply_migration"] == ["001", "002", "003"]
    assert plan.tracking == location
    assert location.migrations_sql in plan.steps[0].statements[1].sql  # create_tracking names its tables


def test_migrate_plan_runs_it_below_the_target(tmp_path: Path) -> None:
    desired = _desired(tmp_path)
    observed = ObservedTracking(TrackingLocation(), frozenset(), (), None)
    readiness = decide(
        desired.migrations, observed, {}, desired.history, None, NOTHING_ALLOWED, limit=parse_version("1")
    )
    assert [s.version for s in migrate_plan(desired.migrations, observed, readiness, "001").steps][-1] == "001"
