"""Asked for (--embedded, or the URL "embedded"), poststack starts an embedded PostgreSQL
beside the migrations, says so, names it as the database it changed, keeps it running for
the next command, and stops it on request. The demo uses it with nothing configured."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import EXAMPLE_MIGRATIONS, run_process


def test_embedded_end_to_end(tmp_path: Path):
    project = tmp_path / "p"
    shutil.copytree(EXAMPLE_MIGRATIONS, project / "migrations")
    data = project / ".poststack" / "pgdata"
    try:
        first = run_process("db", "migrate", "--embedded", cwd=project, env={"CI": "true"})
        assert first.exit_code == 0, first.output
        assert "Using embedded PostgreSQL in" in first.stderr and ".poststack" in first.stderr
        assert first.stderr.count("\n") == 1
        assert "Applied 5 migration(s)" in first.stdout
        # The last line says it was the throwaway server, not a database someone chose.
        last = first.stdout.strip().splitlines()[-1]
        assert last.startswith("Database: embedded PostgreSQL at postgresql://") and str(data) in last
        status = run_process("db", "server", "status", cwd=project)
        assert "running, pid" in status.stdout
        pid = status.stdout.split("pid ")[1].split()[0]
        # The value "embedded" chooses it from any source.
        second = run_process("db", "migration-status", cwd=project, env={"POSTSTACK_DATABASE_URL": "embedded"})
        assert "Current version: 005" in second.stdout
        assert f"pid {pid}" in run_process("db", "server", "status", cwd=project).stdout  # reused, not restarted
        (project / "poststack.toml").write_text('database_url = "embedded"\n')
        backup = run_process("db", "backup", cwd=project)
        assert backup.exit_code == 0, backup.output
        assert list((project / "backups").glob("poststack-*.sql"))
    finally:
        stop = run_process("db", "server", "stop", cwd=project)
    assert stop.exit_code == 0 and "Stopped" in stop.stdout
    assert "stopped" in run_process("db", "server", "status", cwd=project).stdout


def test_demo_on_the_embedded_server(tmp_path: Path):
    """The README's first command: no server configured, the demo runs on the embedded one."""
    try:
        result = run_process("demo", cwd=tmp_path, env={"CI": "true"})  # no terminal, in CI: still its default
        assert result.exit_code == 0, result.output
        assert "Using embedded PostgreSQL in" in result.stderr
        assert "Overall Status: ✅ PASS" in result.stdout
        assert "The scratch database and its files have been removed." in result.stdout
    finally:
        run_process("db", "server", "stop", cwd=tmp_path)
