"""MigrationSteps: the history a step at a time, data in between, and rollback round trips."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.config import resolve_settings
from reconciler.testing import MigrationSteps
from tests.conftest import scratch_database, write


@pytest.fixture
def history(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir()
    write(directory, "001_people.sql", "CREATE TABLE people (id serial PRIMARY KEY, name text);")
    write(directory, "001_people.rollback.sql", "DROP TABLE people;")
    write(directory, "002_rename.sql", "ALTER TABLE people RENAME COLUMN name TO full_name;")
    write(directory, "002_rename.rollback.sql", "ALTER TABLE people RENAME COLUMN full_name TO name;")
    write(directory, "003_comment.sql", "-- a file that only explains\n")
    write(directory, "004_upper.sql", "UPDATE people SET full_name = upper(full_name);")
    return directory


@pytest.fixture
def steps(database_url: str, history: Path, pg_server) -> Iterator[MigrationSteps]:
    settings = resolve_settings(
        migrations_dir=history, embedded_by_default=True, needs_database=False, cwd=history.parent, environ={}
    )

    @contextlib.contextmanager
    def scratch() -> Iterator[str]:
        with scratch_database(pg_server, f"steps_scratch_{os.getpid()}") as url:
            yield url

    walker = MigrationSteps(database_url, settings, scratch)
    yield walker
    walker.close()


def test_data_put_in_between_steps_meets_the_next_migration(steps):
    assert steps.versions == ("001", "002", "003", "004")
    steps.migrate(to="002")
    steps.execute("INSERT INTO people (full_name) VALUES (%s)", ("ada lovelace",))
    steps.migrate(to="004")
    assert steps.execute("SELECT full_name FROM people") == [("ADA LOVELACE",)]
    assert steps.execute("SELECT count(*) FROM schema_migrations") == [(4,)]


def test_a_failing_step_fails_the_test_naming_file_and_line(steps, history):
    write(history, "005_bad.sql", "SELECT 1;\nALTER TABLE nobody ADD COLUMN x int;")
    with pytest.raises(AssertionError, match=r"migration 005 failed at \S+005_bad.sql:2: relation \"nobody\""):
        steps.migrate()


def test_a_rollback_that_restores_the_schema_passes(steps):
    steps.assert_rollback_round_trip("002")
    assert steps.execute("SELECT version FROM schema_migrations ORDER BY 1") == [("001",), ("002",)]
    steps.assert_rollback_round_trip("001")  # the first: rolled back to nothing


def test_a_rollback_that_leaves_something_behind_fails_and_says_what(steps, history):
    write(history, "002_rename.rollback.sql", "ALTER TABLE people RENAME COLUMN full_name TO nom;")
    with pytest.raises(AssertionError, match=r"Rollback of migration 002 does not restore the schema: .*nom"):
        steps.assert_rollback_round_trip("002")


def test_the_whole_history_round_trip_uses_a_scratch_database(steps, history):
    steps.assert_rollback_round_trip()
    assert steps.execute("SELECT to_regclass('people')") == [(None,)]  # this database was left alone
    write(history, "001_people.rollback.sql", "DROP TABLE people; CREATE TABLE leftover (id int);")
    with pytest.raises(AssertionError, match=r"Rollback of migration 001 does not restore the schema: .*leftover"):
        steps.assert_rollback_round_trip()


def test_snapshot_reads_the_schema_without_poststacks_tables(steps):
    steps.migrate(to="001")
    identities = {identity for (kind, identity) in steps.snapshot().objects}
    assert any("people" in identity for identity in identities)
    assert not any("schema_migrations" in identity for identity in identities)
