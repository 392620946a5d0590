"""No success on a database nobody chose: with none named, a deploy (no terminal, or CI)
stops before doing anything; a typo in a setting's name is named; and every command that
changes a database ends by naming it, password masked."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from reconciler.interface import cli as cli_module
from tests.conftest import EXAMPLE_MIGRATIONS, PASSWORD, PASSWORD_ROLE, Result, run_cli, run_process, sql

DEAD_HOLDER = (
    "UPDATE schema_migrations_lock SET locked = true, locked_at = now() - interval '5 minutes', "
    "locked_by = 'ci-runner-7:4242', backend_pid = 999999, application_name = 'poststack'"
)


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "p"
    shutil.copytree(EXAMPLE_MIGRATIONS, project / "migrations")
    return project


def _assert_refused(result: Result, project: Path) -> None:
    assert result.exit_code == 3, result.output
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()  # one sentence, no hint line after it
    assert line.startswith("❌ no database named: poststack looked at --database-url, POSTSTACK_DATABASE_URL, ")
    assert f"{project}/poststack.toml" in line and f"{project}/pyproject.toml [tool.poststack]" in line
    assert "pass --embedded for a throwaway local server" in line
    assert "Using embedded PostgreSQL" not in result.output
    assert not (project / ".poststack").exists()  # nothing started


def test_no_database_and_no_terminal_stops_before_anything(tmp_path: Path):
    project = _project(tmp_path)
    result = run_process("db", "migrate", cwd=project)  # output captured: not a terminal
    _assert_refused(result, project)


def test_ci_stops_it_even_on_a_terminal(tmp_path: Path):
    """A CI job may run under a pseudo-terminal; CI=true still means nobody is there to choose."""
    project = _project(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTSTACK_") and k != "DATABASE_URL"}
    script = Path(sys.executable).parent / "poststack"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "reconciler.interface.cli"]
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [*argv, "db", "migrate"],
            cwd=project,
            env={**env, "CI": "true"},
            stdin=terminal,
            stderr=terminal,
            stdout=subprocess.PIPE,
            text=True,
            timeout=120,
        )
        os.close(terminal)
        terminal = -1
        stderr = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            stderr += chunk
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    _assert_refused(Result(proc.returncode, proc.stdout, stderr.decode().replace("\r\n", "\n")), project)


@pytest.mark.parametrize(
    ("stdin", "stderr", "ci", "expected"),
    [
        (True, True, None, True),
        (True, True, "true", False),
        (True, True, "1", False),
        (True, True, "woodpecker", False),  # some CI systems set their own name
        (True, True, "false", True),
        (True, True, "", True),
        (False, True, None, False),
        (True, False, None, False),
    ],
)
def test_only_a_person_at_a_terminal_gets_the_embedded_default(monkeypatch, stdin, stderr, ci, expected):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: stdin, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: stderr, raising=False)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    assert cli_module._interactive() is expected


def test_embedded_with_a_url_is_a_usage_error(database_url: str, migrations_dir: Path):
    result = run_cli(
        "db", "migrate", "--embedded", "--database-url", database_url, "--migrations-dir", str(migrations_dir)
    )
    assert result.exit_code == 2, result.output
    assert "--embedded and --database-url" in result.stderr and "name two databases" in result.stderr


def test_a_mistyped_key_in_poststack_toml_is_named(database_url: str, db, tmp_path: Path):
    project = _project(tmp_path)
    (project / "poststack.toml").write_text(f'database-url = "{database_url}"\n')
    result = run_process("db", "migrate", cwd=project)
    assert result.exit_code == 2, result.output
    assert f"{project}/poststack.toml: unknown key 'database-url'; did you mean 'database_url'?" in result.stderr
    assert sql(db, "SELECT to_regclass('public.schema_migrations')") == [(None,)]
    assert not (project / ".poststack").exists()


def test_a_mistyped_variable_is_named(database_url: str, db, migrations_dir: Path):
    result = run_cli(
        "db", "migrate", "--migrations-dir", str(migrations_dir), env={"POSTSTACK_DATABSE_URL": database_url}
    )
    assert result.exit_code == 2, result.output
    assert (
        "environment variable POSTSTACK_DATABSE_URL is not one poststack reads; "
        "did you mean 'POSTSTACK_DATABASE_URL'?" in result.stderr
    )
    assert sql(db, "SELECT to_regclass('public.schema_migrations')") == [(None,)]
    # The variables of poststack's own tests and benchmarks are not typos.
    env = {"POSTSTACK_TEST_DATABASE_URL": "x", "POSTSTACK_BENCH_DATABASE_URL": "x", "POSTSTACK_RELIABILITY": "full"}
    result = run_cli("db", "migrate", "--database-url", database_url, "--migrations-dir", str(migrations_dir), env=env)
    assert result.exit_code == 0, result.output


# --- the last line names the database ---------------------------------------------------------


def _ends_naming(result: Result, shown: str, *, stream: str = "stdout") -> None:
    assert PASSWORD not in result.output
    assert getattr(result, stream).strip().splitlines()[-1] == f"Database: {shown}", result.output


def test_every_changing_command_ends_naming_the_database(pg_server, database_url: str, db, migrations_dir: Path):
    name = make_url(database_url).database
    sql(db, f"GRANT CREATE ON SCHEMA public TO {PASSWORD_ROLE}")
    sql(db, f'GRANT CREATE ON DATABASE "{name}" TO {PASSWORD_ROLE}')  # migration 003 creates a schema
    url = pg_server.url_for(name, user=PASSWORD_ROLE, password=PASSWORD)
    shown = url.replace(f":{PASSWORD}@", ":***@")
    assert shown != url and name in shown

    def run(*args: str) -> Result:
        result = run_cli(*args, "--database-url", url, "--migrations-dir", str(migrations_dir))
        assert result.exit_code == 0, result.output
        return result

    migrated = run("db", "migrate")
    assert "✅ Applied 5 migration(s)" in migrated.stdout
    _ends_naming(migrated, shown)
    _ends_naming(run("db", "migrate"), shown)  # nothing to do: still says where it looked
    _ends_naming(run("db", "rollback", "003"), shown)

    # Migration 003 run by hand: recover tracks it.
    _ends_naming(
        run("db", "shell", "-c", "DELETE FROM schema_migrations WHERE version = '003'"), shown, stream="stderr"
    )
    recovered = run("db", "recover")
    assert "Recovery completed successfully" in recovered.stdout
    _ends_naming(recovered, shown)

    # A duplicate row: clean removes it.
    run(
        "db",
        "shell",
        "-c",
        "INSERT INTO schema_migrations (version, description, checksum, checksum_algorithm, success) "
        "SELECT version, description, checksum, checksum_algorithm, success FROM schema_migrations WHERE version = '001'",
    )
    cleaned = run("db", "clean", "--duplicates", "--confirm")
    assert "Clean completed successfully" in cleaned.stdout
    _ends_naming(cleaned, shown)

    # A lock left by a killed run: apply releases it, and says where.
    sql(db, DEAD_HOLDER)
    applied = run("apply", "--auto-approve")
    assert "Apply complete" in applied.stdout
    _ends_naming(applied, shown)
    sql(db, DEAD_HOLDER)
    _ends_naming(run("db", "unlock-migrations", "--confirm"), shown)

    _ends_naming(run("db", "create-schema"), shown)
    as_json = json.loads(run("db", "migrate", "--format", "json").stdout)
    assert as_json["database"] == shown


def test_the_database_line_names_the_database_the_url_left_to_pgdatabase(database_url: str, migrations_dir: Path):
    url = make_url(database_url)
    without_name = url.set(database="").render_as_string(hide_password=False).replace("+psycopg2", "")
    result = run_cli(
        "db",
        "migrate",
        "--database-url",
        without_name,
        "--migrations-dir",
        str(migrations_dir),
        env={"PGDATABASE": url.database},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().splitlines()[-1].endswith(f"(database {url.database})")
