"""The ways a target's migration history breaks (the guide's, and the catalogue's others that
belong to one target), each done to one target of a fleet at the history of
bench/tenant_history.py, as it happens in life, and what diagnose then says.

rollback_missing is not here: a rollback file is missing for every target that shares the
migrations directory (tests/fleet/test_fleet_diagnose.py has it apart).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg2.errors
from psycopg2 import sql as pgsql

from tests.conftest import run_cli
from tests.fleet.conftest import Target


@dataclass(frozen=True)
class Way:
    issue: str  # the issue type diagnose reports
    severity: str
    version: str | None
    auto_fixable: bool  # as diagnose says it
    fixed: bool  # plan/apply fixes it (else the plan has only a person's steps)
    databases_only: bool = False  # meaningless for a tenant schema (a database-wide thing)


def _tracking(target: Target, text: str) -> None:
    """``text`` with {t} the target's tracking schema (quoted)."""
    target.query(pgsql.SQL(text).format(t=pgsql.Identifier(target.tracking)))


def applied_by_hand(target: Target, migrations: Path) -> None:
    """010 run with psql at 3 a.m.: its objects exist, poststack has no record of it."""
    _tracking(
        target,
        "DELETE FROM {t}.schema_migrations WHERE version = '010'; "
        "DELETE FROM {t}.schema_migrations_audit WHERE version = '010'",
    )


def file_edited_after_deploy(target: Target, migrations: Path) -> None:
    """The recorded checksum of 006 is not its file's (it ran from another revision of it)."""
    _tracking(target, "UPDATE {t}.schema_migrations SET checksum = repeat('0', 64) WHERE version = '006'")


def killed_run(target: Target, migrations: Path) -> None:
    """A run killed while it held the lock: the lock row names a backend that is gone."""
    _tracking(
        target,
        "UPDATE {t}.schema_migrations_lock SET locked = true, locked_at = now() - interval '10 minutes', "
        "locked_by = 'ci-runner-3:4242', backend_pid = 999999, application_name = 'poststack'",
    )


def tracked_twice(target: Target, migrations: Path) -> None:
    """Two tracking rows for 004 (a retried deploy that recorded it again)."""
    _tracking(
        target,
        "INSERT INTO {t}.schema_migrations (version, description, checksum, success) "
        "SELECT version, description, checksum, true FROM {t}.schema_migrations WHERE version = '004'",
    )


def failed_midway(target: Target, migrations: Path) -> None:
    """010 rolled back, then run again from a revision that fails (its transaction rolled
    back, a failed tracking row recorded): what poststack leaves after a failed deploy."""
    broken = migrations.parent / f"broken-{target.name}"
    shutil.copytree(migrations, broken)
    path = broken / "010_add_order_note.sql"
    path.write_text(path.read_text() + "SELECT 1 / 0;\n")
    result = run_cli("db", "rollback", "009", *target.alone(migrations))
    assert result.exit_code == 0, result.output
    result = run_cli("db", "migrate", *target.alone(broken))
    assert result.exit_code == 1, result.output
    shutil.rmtree(broken)


def stray_schema(target: Target, migrations: Path) -> None:
    """A schema someone made by hand that no migration creates."""
    target.execute("CREATE SCHEMA temp_schema")


def tracked_from_another_branch(target: Target, migrations: Path) -> None:
    """A migration deployed from a branch that was never merged: tracked, no file."""
    _tracking(
        target,
        "INSERT INTO {t}.schema_migrations (version, description, checksum, success) "
        "VALUES ('011', 'hotfix_from_branch', repeat('1', 64), true)",
    )


def dropped_by_hand(target: Target, migrations: Path) -> None:
    """An index 010 made, dropped by hand: tracked as applied, an object missing (drift)."""
    target.execute("DROP INDEX orders_status_idx")


def failed_concurrent_build(target: Target, migrations: Path) -> None:
    """A CREATE UNIQUE INDEX CONCURRENTLY that failed on duplicate data: an INVALID index."""
    target.execute("INSERT INTO customers (full_name, email) VALUES ('Ann', 'ann@a.example'), ('Ann', 'ann@b.example')")
    try:
        target.execute("CREATE UNIQUE INDEX CONCURRENTLY customers_full_name_key ON customers (full_name)")
    except psycopg2.errors.UniqueViolation:
        pass
    else:
        raise AssertionError("the concurrent build was expected to fail")


WAYS: dict[str, tuple[Callable[[Target, Path], None], Way]] = {
    "missing_tracking": (applied_by_hand, Way("missing_tracking", "high", "010", True, True)),
    "checksum_mismatch": (file_edited_after_deploy, Way("checksum_mismatch", "high", "006", True, True)),
    "stuck_lock": (killed_run, Way("stuck_lock", "high", None, True, True)),
    "duplicate_version": (tracked_twice, Way("duplicate_version", "high", "004", True, True)),
    "partial_migration": (failed_midway, Way("partial_migration", "high", "010", True, True)),
    "orphaned_schema": (stray_schema, Way("orphaned_schema", "medium", None, False, False, databases_only=True)),
    "missing_file": (tracked_from_another_branch, Way("missing_file", "high", "011", False, False)),
    "missing_objects": (dropped_by_hand, Way("missing_objects", "high", "010", False, False)),
    "invalid_index": (failed_concurrent_build, Way("invalid_index", "high", None, False, True)),
}


def ways_for(kind: str) -> dict[str, tuple[Callable[[Target, Path], None], Way]]:
    return {name: way for name, way in WAYS.items() if kind == "databases" or not way[1].databases_only}
