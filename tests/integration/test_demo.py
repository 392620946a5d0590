"""poststack demo: a scratch database broken the guide's ways, fixed by the real commands,
and removed (or kept with --keep)."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg2
import psycopg2.extensions
from sqlalchemy.engine import make_url

from reconciler.demo import DATABASE_PREFIX
from tests.conftest import PASSWORD, PASSWORD_ROLE, Server, run_cli, run_process, sql

BROKEN = (
    "MISSING_TRACKING: Migration 002 appears to be applied but not tracked",
    "MISSING_TRACKING: Migration 004 appears to be applied but not tracked",
    "MISSING_TRACKING: Migration 006 appears to be applied but not tracked",
    "CHECKSUM_MISMATCH: Migration 001 has checksum mismatch",
    "DUPLICATE_VERSION: Migration 001 has 2 tracking rows",
    "STUCK_LOCK: Migration lock is held by",
)


def _demo_databases(admin_url: str) -> list[str]:
    conn = psycopg2.connect(admin_url)
    try:
        return [
            r[0] for r in sql(conn, "SELECT datname FROM pg_database WHERE datname LIKE %s", (DATABASE_PREFIX + "%",))
        ]
    finally:
        conn.close()


def test_demo_breaks_diagnoses_fixes_and_cleans_up(pg_server: Server, tmp_path: Path):
    before = set(_demo_databases(pg_server.admin_url))
    result = run_process("demo", "--database-url", pg_server.admin_url, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    # The guide's breakages, each found by diagnose before the fix ...
    for issue in BROKEN:
        assert issue in out
    assert "❌ migration system is locked" in out  # migrate refuses the killed run's lock
    # ... planned, applied, and gone afterwards.
    diagnose_runs = out.split("$ poststack db diagnose")
    assert len(diagnose_runs) == 4
    # Parsed SQL alone cannot tell whether 006 (a function replaced) ran; the replay can.
    assert "UNDETERMINED: Migration 006 cannot be confirmed applied or pending" in diagnose_runs[1]
    assert "Overall Status: ❌ FAIL" in diagnose_runs[2] and "Total Issues: 8" in diagnose_runs[2]
    assert "UNDETERMINED" not in diagnose_runs[2]
    assert "Overall Status: ✅ PASS" in diagnose_runs[3]
    assert "Re-diagnosis: ✅ no issues left." in out
    assert "Current version: 006" in out.split("$ poststack db migration-status")[-1]
    assert "(prints the plan shown above, then runs it)" in out
    assert out.rstrip().endswith("The scratch database and its files have been removed.")
    assert set(_demo_databases(pg_server.admin_url)) == before
    assert not list(tmp_path.iterdir())  # nothing written where it was run (no embedded server)


def test_demo_keep_leaves_the_database_and_project(pg_server: Server, tmp_path: Path):
    before = set(_demo_databases(pg_server.admin_url))
    result = run_process("demo", "--keep", "--database-url", pg_server.admin_url, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    (kept,) = set(_demo_databases(pg_server.admin_url)) - before
    workspace = Path(result.stdout.split("the project in ")[1].split(".\n")[0])
    try:
        assert kept in result.stdout and (workspace / "fix.plan.json").is_file()
        status = run_process("db", "migration-status", "--database-url", pg_server.url_for(kept), cwd=workspace)
        assert "Current version: 006" in status.stdout
    finally:
        conn = psycopg2.connect(pg_server.admin_url)
        conn.autocommit = True
        sql(conn, f'DROP DATABASE "{kept}" WITH (FORCE)')
        conn.close()
        shutil.rmtree(workspace, ignore_errors=True)


def test_demo_without_createdb_says_so(pg_server: Server, database_url: str, tmp_path: Path):
    # The password role has no CREATEDB.
    url = pg_server.url_for(make_url(database_url).database, user=PASSWORD_ROLE, password=PASSWORD)
    result = run_process("demo", "--database-url", url, cwd=tmp_path)
    assert result.exit_code == 3, result.output
    assert "the demo cannot create its scratch database" in result.stderr
    assert PASSWORD not in result.output
    assert len(result.stderr.strip().splitlines()) <= 2


def _libpq_parts(url: str) -> dict[str, str]:
    return psycopg2.extensions.parse_dsn(url)


def _query_url(parts: dict[str, str], **extra: str) -> str:
    """A URL that names everything in its query, as libpq allows."""
    from urllib.parse import quote, urlencode

    return "postgresql:///?" + urlencode({**parts, **extra}, quote_via=quote)  # libpq reads no "+" as a space


def test_demo_never_touches_the_database_the_url_names(pg_server: Server, database_url: str, db, tmp_path: Path):
    """libpq lets ?dbname= override the path: the scratch database must still be the one used."""
    url = _query_url(_libpq_parts(pg_server.admin_url), dbname=make_url(database_url).database)
    result = run_process("demo", "--database-url", url, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert sql(db, "SELECT to_regclass('public.schema_migrations'), to_regclass('public.accounts')") == [(None, None)]


def test_demo_on_a_host_list_url_leaves_nothing_behind(pg_server: Server, tmp_path: Path):
    parts = _libpq_parts(pg_server.admin_url)
    host, port = parts.get("host", "localhost"), parts.get("port", "5432")
    url = _query_url(parts, host=f"{host},{host}", port=f"{port},{port}")
    before = set(_demo_databases(pg_server.admin_url))
    result = run_process("demo", "--database-url", url, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert set(_demo_databases(pg_server.admin_url)) == before


def test_demo_keeps_settings_with_spaces_in_the_url(pg_server: Server, tmp_path: Path):
    """A value with a space (options=-c ...) must reach the scratch database as written."""
    url = _query_url(_libpq_parts(pg_server.admin_url), options="-c statement_timeout=0")
    result = run_process("demo", "--database-url", url, cwd=tmp_path)
    assert result.exit_code == 0, result.output


def test_demo_keep_does_not_keep_a_database_it_never_got_into(pg_server: Server, tmp_path: Path):
    before = set(_demo_databases(pg_server.admin_url))
    url = _query_url(_libpq_parts(pg_server.admin_url), options="-c no_such_setting=1")
    result = run_process("demo", "--keep", "--database-url", url, cwd=tmp_path)
    assert result.exit_code == 3, result.output
    assert set(_demo_databases(pg_server.admin_url)) == before


def test_demo_runs_on_the_embedded_server_whatever_the_environment_names(monkeypatch, tmp_path: Path):
    """DATABASE_URL, POSTSTACK_DATABASE_URL and .env name the application's servers: the demo
    creates its scratch database only where --database-url says, else on the embedded one."""
    import reconciler.demo

    seen = []

    def capture(settings, *args, **kwargs):
        seen.append(settings)
        raise KeyboardInterrupt  # stop before any server is started

    monkeypatch.setattr(reconciler.demo, "run_demo", capture)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("POSTSTACK_DATABASE_URL=postgresql://app@prod-db/app\n")
    env = {"DATABASE_URL": "postgresql://app@dev-db/app"}
    run_cli("demo", env=env)
    assert seen and seen[-1].embedded
    run_cli("demo", "--database-url", "postgresql://demo@elsewhere/postgres", env=env)
    assert seen[-1].database_url == "postgresql://demo@elsewhere/postgres"
