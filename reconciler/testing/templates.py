"""The migrated template every test database is cloned from, as Django's test runner does, but
kept between sessions: its name carries a digest of every file in the migrations directory,
so it is built again only when one changes (or poststack, or where the tracking tables go).

Built once, under an advisory lock on the server, so concurrent sessions (xdist's workers)
build it once and the others wait for it: in a database of its own name, renamed to the
template's only once every migration applied, so a template that exists is a whole one.
A clone is ``CREATE DATABASE … TEMPLATE``: PostgreSQL copies the files, no migration runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import psycopg2
import psycopg2.extensions

from reconciler import __version__
from reconciler.config import Settings
from reconciler.errors import PoststackError
from reconciler.testing.server import CLONE_PREFIX, TestServer

if TYPE_CHECKING:
    from reconciler.remediation.runner import RunResult

TEMPLATE_PREFIX = "poststack_tpl_"
_BUILDING = "_build_"
# Two lock spaces (pg_advisory_lock's two-int form) apart from poststack's migration lock.
_LOCK_SPACE = 0x706F7374  # "post"


@dataclass(frozen=True)
class Template:
    name: str
    project: str  # the part of the name every template of this project shares
    built: bool  # this session built it (False: an earlier one had, with the same files)


def project_tag(settings: Settings) -> str:
    """Names this project's templates: where its migrations are, and where they are tracked."""
    where = f"{settings.migrations_dir.resolve()}\0{settings.tracking_schema}\0{settings.table_prefix}"
    return hashlib.sha256(where.encode()).hexdigest()[:8]


def files_digest(settings: Settings) -> str:
    """Every file under the migrations directory, by its path and checksum; and what else
    decides what the template holds: poststack's version and the layout."""
    digest = hashlib.sha256(f"{__version__}\0{settings.layout or ''}\0".encode())
    directory = settings.migrations_dir
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def template_name(settings: Settings) -> str:
    return f"{TEMPLATE_PREFIX}{project_tag(settings)}_{files_digest(settings)}"


def ensure_template(server: TestServer, settings: Settings) -> Template:
    """The project's template on ``server``: there already, or built now."""
    name = template_name(settings)
    project = name[: len(TEMPLATE_PREFIX) + 8]
    admin = server.admin()
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_SPACE, name))
            try:
                if _exists(cur, name):
                    return Template(name, project, built=False)
                _build(cur, server, settings, name)
                _drop_older(cur, project, name)
                return Template(name, project, built=True)
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_SPACE, name))
    finally:
        admin.close()


def _exists(cur: psycopg2.extensions.cursor, name: str) -> bool:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    return cur.fetchone() is not None


def _build(cur: psycopg2.extensions.cursor, server: TestServer, settings: Settings, name: str) -> None:
    from reconciler import commands

    building = f"{name}{_BUILDING}{os.getpid()}"
    cur.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
    cur.execute(f'CREATE DATABASE "{building}" TEMPLATE template0')
    try:
        result = commands.migrate(replace(settings, database_url=server.url_for(building)), target=None, dry_run=False)
        if not result.ok:
            raise PoststackError(
                f"the migrations in {settings.migrations_dir} do not apply to an empty database: {run_failure(result)}",
                "Run poststack db migrate on an empty database to see it.",
            )
        cur.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        cur.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
    except BaseException:
        with contextlib.suppress(psycopg2.Error):
            cur.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
        raise


def _drop_older(cur: psycopg2.extensions.cursor, project: str, keep: str) -> None:
    """This project's templates for files as they were: never used again. One a session is
    still cloning from stays (it is in use) and goes next time."""
    cur.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s) AND datname <> %s", (project + "_", keep)
    )
    for (old,) in cur.fetchall():
        if _BUILDING in old:
            continue  # another session's build in progress (under its own template's lock)
        with contextlib.suppress(psycopg2.Error):
            cur.execute(f'ALTER DATABASE "{old}" WITH IS_TEMPLATE false')
            cur.execute(f'DROP DATABASE "{old}"')


_counter = itertools.count()


def clone_name() -> str:
    """A test database's name: this process's (a killed session's are known by their pid)."""
    return f"{CLONE_PREFIX}{os.getpid()}_{next(_counter)}"


def clone(admin: psycopg2.extensions.connection, template: str, name: str) -> None:
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def drop(admin: psycopg2.extensions.connection, name: str) -> None:
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def keep(admin: psycopg2.extensions.connection, name: str, label: str) -> str:
    """Keep a failed test's database under a name that says which test: ``poststack_kept_<label>``
    (the previous one kept for that test is replaced). Its own name when it cannot be renamed."""
    kept = f"poststack_kept_{label}"[:63]
    with admin.cursor() as cur:
        try:
            cur.execute(f'DROP DATABASE IF EXISTS "{kept}" WITH (FORCE)')
            cur.execute(f'ALTER DATABASE "{name}" RENAME TO "{kept}"')
        except psycopg2.Error:
            return name  # the test left a connection open to it: it stays as it is
    return kept


def run_failure(result: RunResult) -> str:
    """Why a run did not apply everything, in one line: the migration, where, the server's error."""
    failure = result.failure
    if failure is None:
        held = [s.version for s in result.plan.steps if s.action == "manual" and s.version]
        return f"migrations held for a person: {', '.join(held)}" if held else "not every migration was applied"
    where = f" at {failure.location}" if failure.location else ""
    return f"migration {failure.version or '?'} failed{where}: {failure.message}"
