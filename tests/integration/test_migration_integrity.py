"""The integrity tests the troubleshooting guide points users at:

pytest tests/integration/test_migration_integrity.py::TestMigrationIntegrity::test_basic_functionality -v -s
pytest tests/integration/test_migration_integrity.py::TestMigrationIntegrity::test_migration_performance -v
"""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest

from tests.conftest import EXAMPLE_MIGRATIONS, run_process, write


def _rows(url: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


class TestMigrationIntegrity:
    def test_basic_functionality(self, database_url: str):
        """The database is reachable and the example history goes up, down and up again
        through the installed console script."""
        common = ("--database-url", database_url, "--migrations-dir", str(EXAMPLE_MIGRATIONS))
        assert _rows(database_url, "SELECT 1") == [(1,)]
        up = run_process("db", "migrate", *common)
        assert up.exit_code == 0, up.output
        status = run_process("db", "migration-status", *common)
        assert "Current version: 005" in status.stdout and "✅ Database is up to date!" in status.stdout
        down = run_process("db", "rollback", "001", *common)
        assert down.exit_code == 0, down.output
        assert "Current version: 001" in run_process("db", "migration-status", *common).stdout
        again = run_process("db", "migrate", *common)
        assert again.exit_code == 0, again.output
        versions = _rows(database_url, "SELECT version FROM schema_migrations WHERE success ORDER BY version")
        assert versions == [("001",), ("002",), ("003",), ("004",), ("005",)]

    @pytest.mark.slow
    def test_migration_performance(self, database_url: str, tmp_path: Path):
        """A long history (300 migrations, a table and an index each) applies, reports and
        rolls back correctly in one run each. Timings live in bench/, not here."""
        migrations = tmp_path / "migrations"
        migrations.mkdir()
        count = 300
        for i in range(1, count + 1):
            write(
                migrations,
                f"{i:04d}_table_{i}.sql",
                f"CREATE TABLE t{i} (id int PRIMARY KEY, v text);\nCREATE INDEX t{i}_v ON t{i} (v);\n",
            )
            write(migrations, f"{i:04d}_table_{i}.rollback.sql", f"DROP TABLE t{i};\n")
        common = ("--database-url", database_url, "--migrations-dir", str(migrations))
        up = run_process("db", "migrate", *common)
        assert up.exit_code == 0, up.output
        assert f"Applied {count} migration(s)" in up.stdout
        assert _rows(
            database_url, "SELECT count(*), count(DISTINCT version), bool_and(success) FROM schema_migrations"
        ) == [(count, count, True)]
        assert _rows(database_url, "SELECT count(*) FROM pg_tables WHERE tablename ~ '^t[0-9]+$'") == [(count,)]
        status = run_process("db", "migration-status", *common)
        assert f"Current version: {count:04d}" in status.stdout and "up to date" in status.stdout
        down = run_process("db", "rollback", f"{count - 50:04d}", *common)
        assert down.exit_code == 0, down.output
        assert _rows(database_url, "SELECT count(*) FROM schema_migrations") == [(count - 50,)]
