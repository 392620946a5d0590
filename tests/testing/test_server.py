"""The plugin's embedded server: shared by the pytest processes using it, stopped by the last."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reconciler import embedded
from reconciler.desired.replay.shadow import host_tag
from reconciler.testing import server as servers
from tests.conftest import REPO

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from reconciler.testing.server import session_server

    directory, ready, release = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    with session_server(directory, environ={}):
        ready.touch()
        while not release.exists():
            time.sleep(0.01)
    """
)


def _dead_pid() -> int:
    for pid in range(4_194_000, 4_000_000, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("no free pid")


def _names(server: servers.TestServer) -> set[str]:
    conn = server.admin()
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'poststack\\_t\\_%'")
        names = {row[0] for row in cur.fetchall()}
    conn.close()
    return names


@pytest.mark.slow
@pytest.mark.no_server  # its own embedded server, whatever the suite's
def test_the_last_process_stops_it_and_a_killed_sessions_databases_go(tmp_path: Path):
    migrations = tmp_path / "project" / "migrations"
    migrations.mkdir(parents=True)
    data = servers.data_dir(migrations)
    ready, release = tmp_path / "ready", tmp_path / "release"
    dead = f"{servers.CLONE_PREFIX}{host_tag()}_{_dead_pid()}_{int(time.time())}_0"
    mine = servers.clone_name()
    holder = None
    try:
        with servers.session_server(migrations, environ={}) as server:
            assert server.embedded_dir == data and embedded.status(data).running
            admin = server.admin()
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{dead}"')
                cur.execute(f'CREATE DATABASE "{mine}"')
            admin.close()
            holder = subprocess.Popen(
                [sys.executable, "-c", _HOLDER, str(migrations), str(ready), str(release)],
                env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            )
            deadline = time.monotonic() + 60
            while not ready.exists():
                assert holder.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
        assert embedded.status(data).running  # another process still uses it
        release.touch()
        assert holder.wait(60) == 0
        assert not embedded.status(data).running  # it was the last
        with servers.session_server(migrations, environ={}) as server:
            names = _names(server)
            assert dead not in names  # its process is gone: nobody will drop it else
            assert mine in names  # this process runs: its databases are its own business
            admin = server.admin()
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE "{mine}"')
            admin.close()
            server.keep_running()  # a test's database was kept: there to look at after the session
        assert embedded.status(data).running
        with servers.session_server(migrations, environ={}):
            pass
        assert not embedded.status(data).running  # the next session to end stops it
    finally:
        release.touch()
        if holder is not None and holder.poll() is None:
            holder.kill()
        embedded.stop(data)


def test_the_variable_names_the_server_and_nothing_starts(tmp_path: Path, pg_server):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    env = {servers.TEST_URL_VARIABLE: pg_server.admin_url}
    # Another machine's sessions on the shared server: one gone a day and more, one running.
    elsewhere = host_tag("another-ci-runner")
    stale = f"{servers.CLONE_PREFIX}{elsewhere}_4242_{int(time.time()) - 2 * 86400}_0"
    recent = f"{servers.CLONE_PREFIX}{elsewhere}_4242_{int(time.time())}_0"
    admin = servers.TestServer(pg_server.admin_url).admin()
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{stale}"')
        cur.execute(f'CREATE DATABASE "{recent}"')
    try:
        with servers.session_server(migrations, environ=env) as server:
            assert server.admin_url == pg_server.admin_url and server.embedded_dir is None
            names = _names(server)
            assert stale not in names and recent in names
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{recent}"')
            cur.execute(f'DROP DATABASE IF EXISTS "{stale}"')
        admin.close()
    assert not servers.data_dir(migrations).exists()


def test_a_role_that_may_not_create_databases_is_told_in_one_line(tmp_path: Path, pg_server):
    import psycopg2

    from reconciler import dsn
    from reconciler.errors import DatabaseUnavailable

    admin = psycopg2.connect(pg_server.admin_url)
    admin.autocommit = True
    role = f"nocreatedb_{os.getpid()}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE ROLE \"{role}\" LOGIN NOCREATEDB PASSWORD '{role}-pw'")  # a server may ask for one
    try:
        url = dsn.url_from_parameters({**dsn.parse(pg_server.admin_url), "user": role, "password": f"{role}-pw"})
        environ = {servers.TEST_URL_VARIABLE: url}
        with pytest.raises(DatabaseUnavailable) as refused, servers.session_server(tmp_path, environ=environ):
            pass
        assert refused.value.summary.startswith(f"role {role} in {servers.TEST_URL_VARIABLE} (")
        assert "may not create databases" in refused.value.summary
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP ROLE "{role}"')
        admin.close()
