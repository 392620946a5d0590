"""Concurrent runs: every migration applied exactly once; every process exits 0 or fails
cleanly with "migration system is locked" after its lock timeout."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2

from tests.conftest import EXAMPLE_MIGRATIONS, run_process, sql, write
from tests.reliability.conftest import scale


def history(directory: Path, count: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        write(
            directory, f"{i:04d}_t{i}.sql", f"CREATE TABLE t{i} (id int PRIMARY KEY);\nINSERT INTO t{i} VALUES ({i});\n"
        )
    return directory


def migrate_args(url: str, migrations: Path, lock_timeout: str) -> tuple[str, ...]:
    return ("db", "migrate", "--database-url", url, "--migrations-dir", str(migrations), "--lock-timeout", lock_timeout)


def assert_each_once(url: str, count: int) -> None:
    """Every one of the ``count`` migrations has exactly one tracking row."""
    conn = psycopg2.connect(url)
    rows = sql(conn, "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version")
    conn.close()
    assert rows == [(f"{i:04d}", 1) for i in range(1, count + 1)]


def race(count: int, args: tuple[str, ...]) -> list:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: run_process(*args, timeout=600), range(count)))


def clean(result) -> bool:
    """Exit 0, or a one-line "migration system is locked" (exit 1); never a traceback."""
    if "Traceback" in result.output or "internal error" in result.output:
        return False
    return result.exit_code == 0 or (result.exit_code == 1 and "migration system is locked" in result.stderr)


def test_racing_migrates_apply_each_migration_once(database_url: str, tmp_path: Path, figures):
    processes, count = 8, scale(80, 200)
    migrations = history(tmp_path / "migrations", count)
    results = race(processes, migrate_args(database_url, migrations, "300"))
    assert all(clean(r) for r in results), [r.output for r in results if not clean(r)]
    assert_each_once(database_url, count)
    figures("concurrency", processes=processes, migrations=count, duplicates=0)


def test_short_lock_timeouts_fail_cleanly_and_nothing_twice(database_url: str, tmp_path: Path, figures):
    processes, count = 8, scale(40, 200)
    migrations = history(tmp_path / "migrations", count)
    results = race(processes, migrate_args(database_url, migrations, "0.2"))
    assert all(clean(r) for r in results), [r.output for r in results if not clean(r)]
    locked = [r for r in results if r.exit_code == 1]
    for result in locked:
        assert (result.stderr.count("\n") <= 2 and "held by" in result.stderr) or "backend pid" in result.stderr
    final = run_process(*migrate_args(database_url, migrations, "30"))
    assert final.exit_code == 0, final.output
    assert_each_once(database_url, count)
    figures("concurrency", processes=processes, migrations=count, locked_out=len(locked), duplicates=0)


def test_racing_applies_converge_once(database_url: str, tmp_path: Path, figures):
    import shutil

    applies = 4
    migrations = tmp_path / "migrations"
    shutil.copytree(EXAMPLE_MIGRATIONS, migrations)
    common = ("--database-url", database_url, "--migrations-dir", str(migrations))
    assert run_process("db", "migrate", "--target", "001", *common).exit_code == 0
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    for name in ("002_add_user_table.sql", "003_create_billing_schema.sql"):
        sql(conn, (migrations / name).read_text())  # applied by hand, untracked
    sql(
        conn,
        "INSERT INTO schema_migrations (version, description, checksum, success) SELECT version, description, checksum, true FROM schema_migrations",
    )
    results = race(applies, ("apply", "--auto-approve", "--lock-timeout", "300", *common))
    assert all(clean(r) for r in results), [r.output for r in results if not clean(r)]
    rows = sql(conn, "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version")
    assert rows == [(v, 1) for v in ("001", "002", "003", "004", "005")]
    assert sql(conn, "SELECT locked FROM schema_migrations_lock") == [(False,)]
    conn.close()
    diagnose = run_process("db", "diagnose", *common)
    assert diagnose.exit_code == 0, diagnose.output
    figures("concurrency", applies=applies, duplicates=0)
