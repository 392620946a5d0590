"""The poststack-validate pre-commit hook (.pre-commit-hooks.yaml) runs ``poststack db
validate --offline``: a commit has no database, so it checks the files alone. Tried for real
with ``pre-commit try-repo`` on a temporary git repository, passing and failing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_cli

UNREACHABLE = "postgresql://nobody@127.0.0.1:9/nowhere"


def test_the_hook_runs_db_validate_offline():
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "poststack-validate"
    assert hook["entry"] == "poststack db validate --offline"
    assert hook["language"] == "python" and hook["pass_filenames"] is False


def test_validate_offline_reads_the_files_and_no_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "001_create_users.sql").write_text("CREATE TABLE users (id int);\n")
    (directory / "001_create_users.rollback.sql").write_text("DROP TABLE users;\n")
    offline = ("db", "validate", "--offline", "--migrations-dir", str(directory))
    passed = run_cli(*offline, "--database-url", UNREACHABLE)  # never connected to
    assert passed.exit_code == 0, passed.output
    assert (
        "✅ Validation passed: 1 migration(s); files parse, versions are unique (no database checked)" in passed.stdout
    )
    assert run_cli(*offline).exit_code == 0  # and none need be named, even outside a terminal
    # A project whose environments name their databases by secrets: a commit has none of them.
    (tmp_path / "poststack.toml").write_text("[environments.prod]\nlock_timeout = 60\n")
    monkeypatch.chdir(tmp_path)
    chosen = run_cli(*offline, env={"POSTSTACK_ENV": "prod"})
    assert chosen.exit_code == 0, chosen.output

    (directory / "002_broken.sql").write_text("CREATE TABL oops (id int);\n")
    failed = run_cli(*offline, "--format", "json")
    assert failed.exit_code == 1
    assert '"checked_database": false' in failed.stdout and "002_broken.sql:1: syntax error" in failed.stdout
    refused = run_cli(*offline, "--check-rollbacks", "--round-trip")
    assert refused.exit_code == 2 and "cannot be used with --offline" in refused.stderr


def git(project: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=Dev", "-c", "user.email=dev@example.com", *args],
        cwd=project,
        check=True,
        capture_output=True,
    )


@pytest.mark.slow
@pytest.mark.no_server
def test_pre_commit_try_repo_passes_good_files_and_fails_bad_ones(tmp_path: Path):
    if not (REPO / ".git").exists():
        pytest.skip("pre-commit try-repo needs this source as a git repository")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTSTACK_", "PG")) and k != "DATABASE_URL"}
    env.update({"PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "CI": "true", "NO_COLOR": "1"})
    project = tmp_path / "project"
    (project / "migrations").mkdir(parents=True)
    (project / "migrations" / "001_create_users.sql").write_text("CREATE TABLE users (id int);\n")
    (project / "migrations" / "001_create_users.rollback.sql").write_text("DROP TABLE users;\n")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "first migration")

    def try_repo() -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "pre_commit", "try-repo", str(REPO), "poststack-validate", "--all-files"]
        return subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=900)

    passed = try_repo()
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "poststack db validate --offline" in passed.stdout and "Passed" in passed.stdout

    (project / "migrations" / "002_add_email.sql").write_text("ALTER TABLE users ADD COLUMN email tex t;\n")
    git(project, "add", "-A")
    failed = try_repo()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Failed" in failed.stdout
    assert "002_add_email.sql:1: syntax error" in failed.stdout

    (project / "migrations" / "002_add_email.sql").write_text("ALTER TABLE users ADD COLUMN email text;\n")
    (project / "migrations" / "002_add_users.sql").write_text("SELECT 1;\n")  # a second 002
    git(project, "add", "-A")
    duplicate = try_repo()
    assert duplicate.returncode == 1 and "duplicate migration version 002" in duplicate.stdout, duplicate.stdout
