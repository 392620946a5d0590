"""Least privilege: the read-only commands work for a role with only CONNECT and SELECT,
inside READ ONLY transactions; a writing command tells such a role what it lacks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import catalog_snapshot, run_cli, sql

READ_ONLY_COMMANDS = [
    ["db", "migration-status"],
    ["db", "migration-info"],
    ["db", "diagnose"],
    ["db", "validate"],
    ["db", "verify-migrations"],
    ["plan"],
    ["db", "migrate", "--dry-run"],
    ["db", "rollback", "001", "--dry-run"],
    ["db", "recover", "--dry-run"],
    ["db", "repair", "--dry-run"],
]


@pytest.fixture
def reader(cli, db, database_url, pg_server):
    """A role with CONNECT, USAGE and SELECT only, whose sessions are read-only."""
    name = make_url(database_url).database
    role = f"poststack_reader_{os.getpid()}"
    password = "reader-pw-123"
    assert cli("db", "migrate").exit_code == 0
    sql(db, f"DROP ROLE IF EXISTS {role}")
    sql(db, f"CREATE ROLE {role} LOGIN PASSWORD %s", (password,))
    sql(db, f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC')
    sql(db, f'GRANT CONNECT ON DATABASE "{name}" TO {role}')
    sql(db, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    for schema in ("public", "billing"):
        sql(db, f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        sql(db, f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    sql(db, f'ALTER ROLE {role} IN DATABASE "{name}" SET default_transaction_read_only = on')
    yield pg_server.url_for(name, user=role, password=password)
    sql(db, f'ALTER ROLE {role} IN DATABASE "{name}" RESET ALL')
    sql(db, f"DROP OWNED BY {role}")
    sql(db, f'REVOKE ALL ON DATABASE "{name}" FROM {role}')
    sql(db, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
    sql(db, f"DROP ROLE IF EXISTS {role}")


def test_read_only_commands_need_only_connect_and_select(reader, db, migrations_dir: Path, figures):
    before = catalog_snapshot(db)
    for args in READ_ONLY_COMMANDS:
        result = run_cli(*args, "--database-url", reader, "--migrations-dir", str(migrations_dir))
        assert result.exit_code == 0, (args, result.output)
        assert "permission denied" not in result.output and "read-only" not in result.output
    assert catalog_snapshot(db) == before
    figures("privileges", commands=len(READ_ONLY_COMMANDS))


def test_a_writing_command_says_what_the_role_lacks(reader, db, migrations_dir: Path):
    (migrations_dir / "006_more.sql").write_text("CREATE TABLE more (id int);\n")
    result = run_cli("db", "migrate", "--database-url", reader, "--migrations-dir", str(migrations_dir))
    assert result.exit_code == 3
    assert "read-only" in result.stderr and "docs/privileges.md" in result.stderr
    assert sql(db, "SELECT to_regclass('more')") == [(None,)]
