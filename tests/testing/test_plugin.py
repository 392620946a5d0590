"""The pytest plugin as its users meet it: pytest run in a project of their own, in a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg2
import pytest

from reconciler import embedded
from reconciler.testing import server as servers
from tests.conftest import REPO, sql, wait_for, write

EXAMPLE = REPO / "tests" / "example_project"


def _pytest_env(project: Path, test_server: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "POSTSTACK_")) and k != "DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(project), str(REPO)])
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if test_server is not None:
        env[servers.TEST_URL_VARIABLE] = test_server
    return env


_PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]


def run_pytest(
    project: Path, *args: str, test_server: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """pytest in ``project`` as a user runs it: the plugin comes from the installed entry point.
    ``test_server``: POSTSTACK_TEST_DATABASE_URL for it; None: the embedded server."""
    return subprocess.run(
        [*_PYTEST, *args],
        cwd=cwd or project,
        env=_pytest_env(project, test_server),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def example(tmp_path: Path) -> Path:
    project = tmp_path / "example_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".poststack", "__pycache__"))
    return project


@pytest.mark.slow
@pytest.mark.no_server  # the plugin's own embedded server, whatever the suite's
def test_the_example_project_passes_on_the_embedded_server_alone_and_under_xdist(example):
    plain = run_pytest(example)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert re.search(r"\b11 passed\b", plain.stdout), plain.stdout
    data = servers.data_dir(example / "migrations")
    assert (data / "PG_VERSION").exists()  # its own embedded server: no Docker, no system PostgreSQL
    assert not embedded.status(data).running  # stopped when the session ended
    parallel = run_pytest(example, "-n", "2")
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    assert re.search(r"\b11 passed\b", parallel.stdout), parallel.stdout
    assert not embedded.status(data).running
    assert not list((data.with_name(servers.DATA_DIRECTORY + ".users")).iterdir())


_KEPT_PROJECT = {
    "db/001_notes.sql": "CREATE TABLE notes (body text NOT NULL);",
    "tests/test_notes.py": textwrap.dedent(
        """
        def test_passes(poststack_connection, poststack_database):
            with open("passed_in.txt", "w") as record:  # for the test that runs this one
                record.write(poststack_database.name)
            with poststack_connection.cursor() as cur:
                cur.execute("INSERT INTO notes VALUES ('kept? no')")
            poststack_connection.commit()

        LEFT_OPEN = []

        def test_fails(poststack_connection, poststack_url):
            import psycopg2
            LEFT_OPEN.append(psycopg2.connect(poststack_url))  # a connection the test never closes
            with poststack_connection.cursor() as cur:
                cur.execute("INSERT INTO notes VALUES ('evidence')")
            poststack_connection.commit()
            assert False, "look at the database"
        """
    ),
}


def _project(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write(root / Path(name).parent, Path(name).name, content)
    return root


def test_keep_keeps_only_the_failing_tests_database_and_says_where(tmp_path, pg_server):
    project = _project(tmp_path / "kept", _KEPT_PROJECT)
    result = run_pytest(
        project, "--poststack-migrations-dir", "db", "--poststack-keep", test_server=pg_server.admin_url
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed" in result.stdout
    section = result.stdout.split("poststack: kept test databases", 1)[1]
    line = next(line for line in section.splitlines() if "test_fails" in line)
    url = line.split(": ", 1)[1].strip()
    name = psycopg2.extensions.parse_dsn(url)["dbname"]
    assert re.fullmatch(r"poststack_kept_tests_test_notes_py_test_fails_[0-9a-f]{8}", name), name
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT body FROM notes")
        assert cur.fetchall() == [("evidence",)]
    conn.close()
    admin = psycopg2.connect(pg_server.admin_url)
    admin.autocommit = True
    passed_in = (project / "passed_in.txt").read_text()
    with admin.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname IN (%s, %s)", (name, passed_in))
        left = [row[0] for row in cur.fetchall()]
        cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()
    assert left == [name]  # the passing test's database was dropped


def test_the_migrations_flag_is_read_from_where_pytest_runs(tmp_path, pg_server):
    project = _project(tmp_path / "flagged", _KEPT_PROJECT)
    (project / "pytest.ini").write_text("[pytest]\n")  # the rootdir: the project, not tests/
    result = run_pytest(
        project,
        "--poststack-migrations-dir",
        "../db",
        "-k",
        "passes",
        test_server=pg_server.admin_url,
        cwd=project / "tests",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_without_keep_nothing_is_left(tmp_path, pg_server):
    project = _project(tmp_path / "unkept", _KEPT_PROJECT)
    result = run_pytest(project, "--poststack-migrations-dir", "db", test_server=pg_server.admin_url)
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert "kept test databases" not in result.stdout
    admin = psycopg2.connect(pg_server.admin_url)
    with admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'poststack_kept_tests_test_notes%%'")
        assert cur.fetchone() == (0,)
    admin.close()


def test_migrations_that_do_not_apply_fail_every_test_in_one_line(tmp_path, pg_server):
    project = _project(
        tmp_path / "broken",
        {
            "migrations/001_ok.sql": "CREATE TABLE ok (id int);",
            "migrations/002_broken.sql": "ALTER TABLE missing ADD COLUMN x int;",
            "tests/test_app.py": "def test_uses_the_database(poststack_url):\n    pass\n",
        },
    )
    result = run_pytest(project, test_server=pg_server.admin_url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert re.search(
        r"poststack: the migrations in \S+ do not apply to an empty database: migration 002 failed at \S+002_broken.sql:1",
        result.stdout,
    ), result.stdout


def test_no_migrations_directory_is_said_in_one_line(tmp_path, pg_server):
    project = _project(tmp_path / "none", {"tests/test_app.py": "def test_it(poststack_url):\n    pass\n"})
    result = run_pytest(project, test_server=pg_server.admin_url)
    assert "poststack: no migrations directory at" in result.stdout and "--poststack-migrations-dir" in result.stdout


def test_a_suite_that_asks_for_no_database_starts_nothing(tmp_path):
    project = _project(tmp_path / "plain", {"tests/test_plain.py": "def test_it():\n    assert True\n"})
    result = run_pytest(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (project / ".poststack").exists()
    assert "poststack" in run_pytest(project, "--help").stdout  # the options are there


def test_loading_the_plugin_imports_nothing_of_poststacks_yet():
    # pytest loads it in every session of every project poststack is installed in.
    probe = "import sys, reconciler.testing.plugin; print(sorted(m for m in sys.modules if m.startswith(('reconciler', 'psycopg2', 'sqlalchemy'))))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['reconciler', 'reconciler.testing', 'reconciler.testing.plugin']"


def test_ctrl_c_while_the_template_is_built_stops_pytest(tmp_path, pg_server):
    # The build waits on a role another connection is altering: a shared catalog's row, so the
    # wait crosses databases (an advisory lock is per database), and lasts exactly as long as
    # the test needs.
    role = f"poststack_ctrl_c_{os.getpid()}"
    project = _project(
        tmp_path / "interrupted",
        {
            "migrations/001_first.sql": "CREATE TABLE first (id int);",
            "migrations/002_waits.sql": f"SET LOCAL lock_timeout = 0;\nALTER ROLE {role} CONNECTION LIMIT 6;\n",
            "tests/test_app.py": "def test_one(poststack_url):\n    pass\n\ndef test_two():\n    pass\n",
        },
    )
    admin = psycopg2.connect(pg_server.admin_url)
    admin.autocommit = True
    sql(admin, f"CREATE ROLE {role}")
    blocker = psycopg2.connect(pg_server.admin_url)
    try:
        sql(blocker, f"ALTER ROLE {role} CONNECTION LIMIT 5")  # its transaction stays open
        process = subprocess.Popen(
            _PYTEST,
            cwd=project,
            env=_pytest_env(project, pg_server.admin_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                f"AND query LIKE 'ALTER ROLE {role} CONNECTION LIMIT 6%%'"
            )
            wait_for(admin, waiting, [(1,)], timeout=120)
            process.send_signal(signal.SIGINT)
            blocker.rollback()  # the statement returns; pytest sees the Ctrl-C
            out, _ = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 2, out  # pytest's "interrupted"
        assert "KeyboardInterrupt" in out and "passed" not in out, out
        # Neither a template nor its half-built database is left.
        left = sql(admin, "SELECT datname FROM pg_database WHERE datname LIKE %s", ("poststack\\_tpl\\_%_build\\_%",))
        assert left == []
    finally:
        blocker.close()
        sql(admin, f"DROP ROLE IF EXISTS {role}")
        admin.close()
