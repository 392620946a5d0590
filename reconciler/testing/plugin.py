"""The pytest plugin (entry point ``pytest11: poststack``): installing poststack makes it there.

A test that asks for ``poststack_url``, ``poststack_engine`` or ``poststack_connection`` gets a
database of its own with the project's migrations applied, cloned (made ahead, while the tests
before it run: pool.py) from a template migrated once (templates.py) on the session's server (server.py): an embedded
PostgreSQL, or the one ``POSTSTACK_TEST_DATABASE_URL`` names. No Docker, no PostgreSQL
installed. ``poststack_migrations`` gives an empty one to walk the migrations on (migrations.py).
Nothing starts until a test asks; ``-p no:poststack`` leaves the plugin out.

Under pytest-xdist each worker is a session of its own: the embedded server is shared (the last
worker to finish stops it) and so is the template (built by the first worker that needs it,
under a lock on the server, while the others wait). Test databases are named by their process,
so workers never meet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import psycopg2.extensions
    from sqlalchemy.engine import Engine

    from reconciler.config import Settings
    from reconciler.testing.migrations import MigrationSteps
    from reconciler.testing.pool import ClonePool, Clones
    from reconciler.testing.server import TestServer

_KEPT = "poststack kept database"
_FAILED = pytest.StashKey[bool]()


@dataclass(frozen=True)
class TestDatabase:
    """A test's own database: its name, and a URL libpq and SQLAlchemy read."""

    name: str
    url: str

    __test__ = False


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("poststack", "migrated test databases (poststack)")
    group.addoption(
        "--poststack-migrations-dir",
        default=None,
        help="The migrations the test databases are built from, relative to where pytest runs (default: as "
        "poststack reads them: POSTSTACK_MIGRATIONS_DIR, poststack.toml, else ./migrations).",
    )
    group.addoption(
        "--poststack-keep",
        action="store_true",
        default=False,
        help="Keep a failing test's database (renamed poststack_kept_<test>) and print its URL.",
    )
    parser.addini(
        "poststack_migrations_dir", "As --poststack-migrations-dir, relative to the configuration file.", default=""
    )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_KeptDatabases(), "poststack-kept-databases")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and report.when in ("setup", "call"):
        item.stash[_FAILED] = True


class _KeptDatabases:
    """The databases --poststack-keep kept, from every worker's reports, listed at the end."""

    def __init__(self) -> None:
        self.kept: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.kept.extend(value for name, value in report.user_properties if name == _KEPT)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.kept:
            terminalreporter.section("poststack: kept test databases")
            for line in self.kept:
                terminalreporter.write_line(line)
            terminalreporter.write_line(
                "The server stays up for you to look (psql URL); an embedded one is stopped when the next "
                "pytest session using it ends. Kept databases stay until the same test fails again."
            )


@contextlib.contextmanager
def _in_one_line() -> Iterator[None]:
    """poststack's errors fail the test in their one line, without the traceback behind them
    (and a Ctrl-C that stopped a migration stops pytest, as any Ctrl-C does)."""
    from reconciler.errors import PoststackError, stopping_as_keyboard_interrupt

    try:
        with stopping_as_keyboard_interrupt():
            yield
    except PoststackError as e:
        raise pytest.fail.Exception(f"poststack: {e.summary}", pytrace=False) from None


# --- session: settings, server, template ----------------------------------------------------


@pytest.fixture(scope="session")
def poststack_settings(pytestconfig: pytest.Config) -> Settings:
    """The project's settings as poststack reads them from the rootdir (migrations, tracking
    schema, layout); never its database: tests get theirs from the plugin."""
    from dataclasses import replace

    from reconciler.config import resolve_settings
    from reconciler.desired.layouts import with_canonical_layout

    root = pytestconfig.rootpath
    # As pytest reads paths: a flag from where pytest was run, an ini value from its file.
    flag = pytestconfig.getoption("poststack_migrations_dir")
    ini = pytestconfig.getini("poststack_migrations_dir")
    given, base = (flag, pytestconfig.invocation_params.dir) if flag else (ini, pytestconfig.inipath or root)
    if base.is_file():
        base = base.parent
    directory = None
    if given:
        directory = Path(given) if Path(given).is_absolute() else base / given
    with _in_one_line():
        settings = resolve_settings(migrations_dir=directory, embedded_by_default=True, needs_database=False, cwd=root)
        settings = with_canonical_layout(replace(settings, database_url=None, shadow_url=None))
    if not settings.migrations_dir.is_dir():
        pytest.fail(
            f"poststack: no migrations directory at {settings.migrations_dir} "
            "(pass --poststack-migrations-dir, or set poststack_migrations_dir in the pytest configuration)",
            pytrace=False,
        )
    return settings


@pytest.fixture(scope="session")
def poststack_server(poststack_settings: Settings) -> Iterator[TestServer]:
    """The session's PostgreSQL: embedded (started on first use, stopped when the last pytest
    process using it ends), or the server in POSTSTACK_TEST_DATABASE_URL."""
    from reconciler.testing.server import session_server

    with _in_one_line(), session_server(poststack_settings.migrations_dir) as server:
        yield server


@pytest.fixture(scope="session")
def poststack_template(
    poststack_server: TestServer, poststack_settings: Settings, _poststack_admin: psycopg2.extensions.connection
) -> str:
    """The name of the template database: the migrations applied once, kept between sessions
    until a migration file changes."""
    from reconciler.testing.templates import ensure_template

    with _in_one_line():
        return ensure_template(poststack_server, poststack_settings, holder=_poststack_admin).name


@pytest.fixture(scope="session")
def _poststack_admin(poststack_server: TestServer) -> Iterator[psycopg2.extensions.connection]:
    with _in_one_line():
        conn = poststack_server.admin()
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def _poststack_clones(poststack_server: TestServer, poststack_template: str) -> Iterator[ClonePool]:
    from reconciler.testing.pool import ClonePool

    pool = ClonePool(poststack_server, poststack_template)
    yield pool
    pool.close()


# --- per test ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _own_database(request: pytest.FixtureRequest, clones: Clones, *, keepable: bool = True) -> Iterator[TestDatabase]:
    server: TestServer = request.getfixturevalue("poststack_server")
    with _in_one_line():
        name = clones.take()
    try:
        yield TestDatabase(name, server.url_for(name))
    finally:
        node = request.node
        if keepable and request.config.getoption("poststack_keep") and node.stash.get(_FAILED, False):
            node.user_properties.append((_KEPT, _keep(server, request, clones, name)))
        else:
            clones.give_back(name)


def _keep(server: TestServer, request: pytest.FixtureRequest, clones: Clones, name: str) -> str:
    """The failed test's database kept: a line saying where, or why it could not be (then it
    is dropped as any other)."""
    import psycopg2

    from reconciler.db import first_line
    from reconciler.testing import templates

    nodeid = request.node.nodeid
    try:
        kept = templates.keep(request.getfixturevalue("_poststack_admin"), name, nodeid)
    except psycopg2.Error as e:
        clones.give_back(name)
        return f"{nodeid}: not kept: {first_line(e)}"
    server.keep_running()
    return f"{nodeid}: {server.url_for(kept)}"


@pytest.fixture
def poststack_database(request: pytest.FixtureRequest, _poststack_clones: ClonePool) -> Iterator[TestDatabase]:
    """A database of the test's own, cloned from the migrated template (made while the tests
    before it ran); dropped after the test (kept when it failed, with --poststack-keep)."""
    with _own_database(request, _poststack_clones) as database:
        yield database


@pytest.fixture
def poststack_url(poststack_database: TestDatabase) -> str:
    """The URL of the test's migrated database (libpq's form; SQLAlchemy reads it too)."""
    return poststack_database.url


@pytest.fixture
def poststack_engine(poststack_url: str) -> Iterator[Engine]:
    """A SQLAlchemy engine on the test's migrated database, disposed of after the test."""
    from sqlalchemy import create_engine

    engine = create_engine(poststack_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    yield engine
    engine.dispose()


@pytest.fixture
def poststack_connection(poststack_url: str) -> Iterator[psycopg2.extensions.connection]:
    """A psycopg2 connection to the test's migrated database, closed after the test."""
    import psycopg2

    conn = psycopg2.connect(poststack_url)
    yield conn
    conn.close()


@pytest.fixture
def poststack_migrations(request: pytest.FixtureRequest, poststack_settings: Settings) -> Iterator[MigrationSteps]:
    """An empty database and the project's migrations, to apply one step at a time, put data
    in between, and check rollbacks (reconciler.testing.migrations.MigrationSteps)."""
    from reconciler.testing.migrations import MigrationSteps
    from reconciler.testing.pool import ClonesOnDemand

    empty = ClonesOnDemand(request.getfixturevalue("_poststack_admin"), "template0")

    @contextlib.contextmanager
    def scratch() -> Iterator[str]:
        with _own_database(request, empty, keepable=False) as database:
            yield database.url

    with _own_database(request, empty) as database:
        steps = MigrationSteps(database.url, poststack_settings, scratch)
        try:
            yield steps
        finally:
            steps.close()
