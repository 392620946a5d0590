"""A history of a few hundred migrations in another tool's layout, comment-only files among
them, applies, rolls all the way back and applies again: the issue's measurement, made ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, sql
from tests.layouts.histories import write_long_history

GROUPS = 30  # 300 migrations


@pytest.mark.parametrize("layout", ["dbmate", "flyway"])
def test_three_hundred_migrations_apply_roll_back_and_apply_again(
    layout: str, tmp_path: Path, database_url: str, db
) -> None:  # type: ignore[no-untyped-def]
    directory = tmp_path / "db" / "migrations"
    versions = write_long_history(layout, directory, GROUPS)
    assert len(versions) == 300

    def poststack(*args: str):  # type: ignore[no-untyped-def]
        return run_cli(*args, "--database-url", database_url, "--migrations-dir", str(directory))

    first = poststack("db", "migrate")
    assert first.exit_code == 0, first.output
    assert len(first.stdout.splitlines()) < 40, "a long run is summed up, not listed"
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE success") == [(300,)]
    assert sql(db, "SELECT count(*) FROM t29") == [(3,)]

    back = poststack("db", "rollback", "0", "--format", "json")
    assert back.exit_code == 0, back.output
    assert len(json.loads(back.stdout)["plan"]["steps"]) == 300
    assert sql(db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename ~ '^t[0-9]+$'") == [(0,)]
    assert sql(db, "SELECT count(*) FROM pg_type WHERE typname ~ '^e[0-9]+$'") == [(0,)]

    again = poststack("db", "migrate")
    assert again.exit_code == 0, again.output
    assert sql(db, "SELECT sum(n) FROM (SELECT count(*) AS n FROM t0 UNION ALL SELECT count(*) FROM t29) s") == [(6,)]
    assert poststack("db", "diagnose").exit_code == 0
