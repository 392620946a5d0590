"""Once it holds the migration lock, migrate looks again before it runs anything. The
catalog's evidence is read again whenever something that takes the lock may have changed
the database since the first look (another run's tracking rows or audit rows, or a wait for
the lock), and is kept only when nothing could have: never a migration run twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg2
import pytest

from reconciler import commands
from reconciler.config import DEFAULT_TRACKING, Settings, resolve_settings
from reconciler.db import host_pid
from reconciler.desired.layouts import load_migrations
from reconciler.observed import locking, state
from reconciler.remediation import runner
from tests.conftest import holding_advisory_lock, sql, start_process, wait_for, write


def _settings(url: str, directory: Path) -> Settings:
    return resolve_settings(database_url=url, migrations_dir=directory, environ={}, cwd=directory.parent)


def _prices(directory: Path) -> None:
    write(directory, "001_prices.sql", "CREATE TABLE prices (id int PRIMARY KEY, amount numeric NOT NULL);\n")
    write(directory, "002_discounts.sql", "CREATE TABLE discounts (id int PRIMARY KEY, pct numeric NOT NULL);\n")
    write(directory, "003_idx.sql", "CREATE INDEX prices_amount_idx ON prices (amount);\n")


@pytest.fixture
def catalog_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the catalog was read (one entry per read)."""
    reads: list[int] = []
    original = state.read_catalog

    def counted(*args, **kwargs):
        reads.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(state, "read_catalog", counted)
    return reads


@pytest.fixture
def between_looks(monkeypatch: pytest.MonkeyPatch) -> list[Callable[[], None]]:
    """What runs right after migrate's first look, before it takes the lock: what another
    run or a person did in between."""
    actions: list[Callable[[], None]] = []
    original = runner.look

    def look(*args, **kwargs):
        looked = original(*args, **kwargs)
        while actions:
            actions.pop(0)()
        return looked

    monkeypatch.setattr(runner, "look", look)
    return actions


def _applied(db: psycopg2.extensions.connection) -> list[str]:
    return [v for (v,) in sql(db, "SELECT version FROM schema_migrations WHERE success ORDER BY id")]


def test_with_nothing_changed_between_the_looks_the_catalog_is_read_once(
    database_url: str, db, tmp_path: Path, catalog_reads: list[int]
):
    directory = tmp_path / "migrations"
    directory.mkdir()
    _prices(directory)

    result = commands.migrate(_settings(database_url, directory), target=None, dry_run=False)

    assert result.execution is not None and result.execution.failure is None
    assert _applied(db) == ["001", "002", "003"]
    assert len(catalog_reads) == 1


@pytest.mark.parametrize("holder", ["elsewhere:4242", "this process's own host:pid (a container's twin)"])
def test_another_runs_audited_change_between_the_looks_is_seen(
    database_url: str,
    db,
    tmp_path: Path,
    catalog_reads: list[int],
    between_looks: list[Callable[[], None]],
    holder: str,
):
    directory = tmp_path / "migrations"
    directory.mkdir()
    _prices(directory)
    settings = _settings(database_url, directory)
    commands.migrate(settings, target="001", dry_run=False)
    catalog_reads.clear()

    def another_run() -> None:
        # Another run (poststack apply on another machine) made 002's table, audited, with no
        # tracking row: only the catalog read again shows it.
        sql(db, "CREATE TABLE discounts (id int PRIMARY KEY, pct numeric NOT NULL)")
        sql(
            db,
            "INSERT INTO schema_migrations_audit (host_pid, operation, step, action, outcome, detail) "
            "VALUES (%s, 'apply', 1, 'run_sql', 'ok', 'made discounts')",
            (holder if holder.startswith("elsewhere") else host_pid(),),
        )

    between_looks.append(another_run)
    with pytest.raises(runner.MigrationsHeld) as refused:
        commands.migrate(settings, target=None, dry_run=False)

    assert "Migration 002 appears to be applied already but is not tracked" in str(refused.value)
    assert len(catalog_reads) == 2
    assert _applied(db) == ["001"]


def test_another_runs_tracking_rows_between_the_looks_are_seen(
    database_url: str, db, tmp_path: Path, catalog_reads: list[int], between_looks: list[Callable[[], None]]
):
    directory = tmp_path / "migrations"
    directory.mkdir()
    _prices(directory)
    settings = _settings(database_url, directory)
    commands.migrate(settings, target="001", dry_run=False)
    checksum = load_migrations(directory).find("002").checksum
    catalog_reads.clear()

    def another_run() -> None:
        # A concurrent run applied 002 and finished between this run's first look and its lock.
        sql(db, "CREATE TABLE discounts (id int PRIMARY KEY, pct numeric NOT NULL)")
        sql(
            db,
            "INSERT INTO schema_migrations (version, description, checksum, success) "
            "VALUES ('002', 'discounts', %s, true)",
            (checksum,),
        )

    between_looks.append(another_run)
    result = commands.migrate(settings, target=None, dry_run=False)

    assert result.execution is not None and result.execution.failure is None
    ran = [o.version for o in result.execution.outcomes if o.action == "apply_migration"]
    assert ran == ["003"]
    assert _applied(db) == ["001", "002", "003"]
    assert len(catalog_reads) == 2


def test_a_migration_applied_by_hand_while_the_run_waited_for_the_lock_is_not_run_again(
    database_url: str, db, tmp_path: Path
):
    directory = tmp_path / "migrations"
    directory.mkdir()
    _prices(directory)
    args = ("--database-url", database_url, "--migrations-dir", str(directory))
    settings = _settings(database_url, directory)
    commands.migrate(settings, target="001", dry_run=False)

    key = locking.advisory_key(DEFAULT_TRACKING)
    with holding_advisory_lock(database_url, key):
        waiting = start_process("db", "migrate", "--lock-timeout", "60", *args)
        try:
            # It has looked (nothing of 002 there) and polls for the lock.
            wait_for(
                db,
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_try_advisory_lock%%' "
                "AND pid <> pg_backend_pid()",
                [(True,)],
            )
            sql(db, "CREATE TABLE discounts (id int PRIMARY KEY, pct numeric NOT NULL)")  # by hand, no lock
        except BaseException:
            waiting.kill()
            raise
    out, err = waiting.communicate(timeout=60)

    assert waiting.returncode == 1, out + err
    assert "Migration 002 appears to be applied already but is not tracked" in err
    assert _applied(db) == ["001"]
