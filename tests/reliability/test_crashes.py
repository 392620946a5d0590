"""Crashes: SIGKILL a migrate, an apply or a backup at random points, or end poststack's
backend under it. Afterwards diagnose reports only what plan/apply can fix, and one apply
leaves the database consistent: every tracked migration's objects exist, no applied
migration is untracked, no lock is held, no version is tracked twice."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import run_process, sql, write
from tests.reliability.conftest import scale

# What `poststack apply` repairs on its own.
FIXABLE = {"stuck_lock", "missing_tracking", "checksum_mismatch", "duplicate_version", "invalid_index", "out_of_order"}


def history(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(1, 11):
        if i == 9:  # built concurrently, outside a transaction
            body = "-- poststack:no-transaction\nCREATE INDEX CONCURRENTLY c1_v_idx ON c1 (v);\n"
            rollback = "DROP INDEX IF EXISTS c1_v_idx;\n"
        else:
            body = f"CREATE TABLE c{i} (id int PRIMARY KEY, v text);\nINSERT INTO c{i} SELECT g, g::text FROM generate_series(1, 2000) g;\nSELECT pg_sleep(0.04);\n"
            rollback = f"DROP TABLE IF EXISTS c{i};\n"
        write(directory, f"{i:03d}_step_{i}.sql", body)
        write(directory, f"{i:03d}_step_{i}.rollback.sql", rollback)
    return directory


def launch(args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "POSTSTACK_DATABASE_URL")}
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler.interface.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def settle(conn) -> None:
    """Until the server has noticed the dead client (a running statement ends first)."""
    deadline = time.monotonic() + 15
    while sql(
        conn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'poststack'",
    ) != [(0,)]:
        if time.monotonic() > deadline:
            sql(
                conn,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'poststack'",
            )
        time.sleep(0.05)


@pytest.mark.parametrize("seed", range(scale(8, 30)))
def test_crash_then_recover(pg_server, template_db, tmp_path: Path, seed: int, figures):
    rng = random.Random(seed)
    mode = ("migrate", "apply", "backup", "terminate")[seed % 4]
    name = f"poststack_crash_{os.getpid()}_{seed}"
    admin = psycopg2.connect(pg_server.admin_url)
    admin.autocommit = True
    sql(admin, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = pg_server.url_for(name)
    migrations = history(tmp_path / "migrations")
    common = ["--database-url", url, "--migrations-dir", str(migrations)]
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        if mode == "migrate" or mode == "terminate":
            args = ["db", "migrate", *common]
        else:
            assert run_process("db", "migrate", "--target", "003", *common).exit_code == 0
            for version in ("004", "005"):  # applied by hand: work for apply
                (path,) = migrations.glob(f"{version}_*[0-9].sql")
                sql(conn, path.read_text())
            args = (
                ["apply", "--auto-approve", *common]
                if mode == "apply"
                else ["apply", "--playbook", "emergency-reset", "--confirm", *common]
            )
        proc = launch(args)
        delay = rng.uniform(0.2, 1.6)
        if mode == "terminate":
            time.sleep(delay)
            sql(
                conn,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'poststack'",
            )
            proc.wait(timeout=60)
            assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
        else:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        settle(conn)

        report = json.loads(run_process("db", "diagnose", "--format", "json", *common).stdout)
        unfixable = [i for i in report["issues"] if i["type"] not in FIXABLE and not i["auto_fixable"]]
        assert not unfixable, f"{mode} killed after {delay:.2f}s left: {unfixable}"

        fixed = run_process("apply", "--auto-approve", "--lock-timeout", "30", *common)
        assert fixed.exit_code == 0, f"{mode} after {delay:.2f}s: {fixed.output}"
        after = run_process("db", "diagnose", *common)
        assert after.exit_code == 0, f"{mode} after {delay:.2f}s, then apply: {after.output}"
        assert sql(conn, "SELECT locked FROM schema_migrations_lock") == [(False,)]
        assert sql(
            conn, "SELECT count(*) FROM (SELECT version FROM schema_migrations GROUP BY version HAVING count(*) > 1) d"
        ) == [(0,)]
        assert "✅ Database is up to date!" in run_process("db", "migration-status", *common).stdout
        figures("crashes", crashes=1, recovered=1, mode=mode, killed_after_s=round(delay, 2))
    finally:
        conn.close()
        sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        shutil.rmtree(migrations.parent / "backups", ignore_errors=True)
