"""The migrated template every test database is cloned from, as Django's test runner does, but
kept between sessions: its name carries a digest of every file in the migrations directory,
so it is built again only when one changes (or poststack, or where the tracking tables go).

Built once, under an advisory lock on the server, so concurrent sessions (xdist's workers)
build it once and the others wait for it: in a database of its own name, renamed to the
template's only once every migration applied, so a template that exists is a whole one.
A clone is ``CREATE DATABASE … TEMPLATE``: PostgreSQL copies the files, no migration runs.

A session holds a shared advisory lock on its template for as long as it runs (on its admin
connection: a killed session's goes with its connection). A template for files as they were
is dropped only when no session holds that lock, so a session started before a migration
file changed goes on cloning from what it started with; one built by a killed session is
dropped once nobody holds its build lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from reconciler import __version__
from reconciler.config import Settings
from reconciler.errors import PoststackError
from reconciler.statements import quote_ident
from reconciler.testing.server import TestServer

if TYPE_CHECKING:
    from reconciler.remediation.runner import RunResult

TEMPLATE_PREFIX = "poststack_tpl_"
_BUILDING = "_build_"
# Lock spaces (pg_advisory_lock's two-int form) apart from poststack's migration lock.
_LOCK_SPACE = 0x706F7374  # "post": building a template
_IN_USE_SPACE = 0x74706C75  # "tplu": a session clones from it (shared)


@dataclass(frozen=True)
class Template:
    name: str
    project: str  # the part of the name every template of this project shares
    built: bool  # this session built it (False: an earlier one had, with the same files)


def project_tag(settings: Settings, role: str) -> str:
    """Names this project's templates: where its migrations are, where they are tracked, and
    the role that owns what they made (on a shared server, another role's clones of them
    could not use their tables)."""
    where = f"{settings.migrations_dir.resolve()}\0{settings.tracking_schema}\0{settings.table_prefix}\0{role}"
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


def template_name(settings: Settings, role: str) -> str:
    return f"{TEMPLATE_PREFIX}{project_tag(settings, role)}_{files_digest(settings)}"


def ensure_template(server: TestServer, settings: Settings, holder: psycopg2.extensions.connection) -> Template:
    """The project's template on ``server``: there already, or built now; in use by this
    session for as long as ``holder`` (a connection of the session's) stays open."""
    with holder.cursor() as cur:
        cur.execute("SELECT current_user")
        (role,) = cur.fetchone() or ("",)
    name = template_name(settings, str(role))
    project = name[: len(TEMPLATE_PREFIX) + 8]
    with holder.cursor() as cur:
        # Before looking: a session dropping old templates either dropped it already (and it
        # is built again here) or finds it in use.
        cur.execute("SELECT pg_advisory_lock_shared(%s, hashtext(%s))", (_IN_USE_SPACE, name))
        cur.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_SPACE, name))
        try:
            built = not _exists(cur, name)
            if built:
                _build(cur, server, settings, name)
            _drop_unused(cur, project, name)
            return Template(name, project, built=built)
        finally:
            cur.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_SPACE, name))


def _exists(cur: psycopg2.extensions.cursor, name: str) -> bool:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    return cur.fetchone() is not None


def _build(cur: psycopg2.extensions.cursor, server: TestServer, settings: Settings, name: str) -> None:
    from reconciler import commands

    building = f"{name}{_BUILDING}{os.getpid()}"
    cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(building)} WITH (FORCE)")
    cur.execute(f"CREATE DATABASE {quote_ident(building)} TEMPLATE template0")
    try:
        result = commands.migrate(replace(settings, database_url=server.url_for(building)), target=None, dry_run=False)
        if not result.ok:
            raise PoststackError(
                f"the migrations in {settings.migrations_dir} do not apply to an empty database: {run_failure(result)}",
                "Run poststack db migrate on an empty database to see it.",
            )
        cur.execute(f"ALTER DATABASE {quote_ident(building)} RENAME TO {quote_ident(name)}")
        cur.execute(f"ALTER DATABASE {quote_ident(name)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
    except BaseException:
        with contextlib.suppress(psycopg2.Error):
            cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(building)} WITH (FORCE)")
        raise


def _drop_unused(cur: psycopg2.extensions.cursor, project: str, keep: str) -> None:
    """This project's templates for files as they were, once no session clones from them, and
    the half-built databases of builds that were killed (nobody holds their build lock)."""
    cur.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s) AND datname <> %s", (project + "_", keep)
    )
    for (old,) in cur.fetchall():
        building = _BUILDING in old
        space, lock_name = (_LOCK_SPACE, old.split(_BUILDING)[0]) if building else (_IN_USE_SPACE, old)
        # Advisory locks are reentrant: this session's own build lock (on ``keep``) is taken
        # again, and a leftover build of ``keep`` is dropped (no one else can be building it).
        cur.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (space, lock_name))
        row = cur.fetchone()
        if not (row and row[0]):
            continue  # in use, or being built
        try:
            with contextlib.suppress(psycopg2.Error):
                if not building:
                    cur.execute(f"ALTER DATABASE {quote_ident(old)} WITH IS_TEMPLATE false")
                cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(old)} WITH (FORCE)")
        finally:
            cur.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (space, lock_name))


def clone(admin: psycopg2.extensions.connection, template: str, name: str) -> None:
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(template)}")
    except psycopg2.errors.InvalidCatalogName as e:
        raise PoststackError(
            f"the template database {template} is gone: it was dropped while this session cloned from it",
            "Sessions hold their template while they run; something else dropped it. Run the tests again.",
        ) from e


def drop(admin: psycopg2.extensions.connection, name: str) -> None:
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


KEPT_PREFIX = "poststack_kept_"


def kept_name(test_id: str) -> str:
    """``poststack_kept_<the test's name>_<digest of its id>``: readable, and one per test (two
    tests whose names read the same once shortened keep two databases)."""
    readable = re.sub(r"\W+", "_", test_id).strip("_").lower()[-36:].strip("_")
    return f"{KEPT_PREFIX}{readable}_{hashlib.sha256(test_id.encode()).hexdigest()[:8]}"


def keep(admin: psycopg2.extensions.connection, name: str, test_id: str) -> str:
    """Keep a failed test's database under its test's name (the one kept the last time that
    test failed is replaced). Connections the test left open are ended first: the database
    cannot be renamed under them, and it would be dropped under its clone's name."""
    kept = kept_name(test_id)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(kept)} WITH (FORCE)")
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        for _ in range(100):  # a backend told to end is gone a moment later
            try:
                cur.execute(f"ALTER DATABASE {quote_ident(name)} RENAME TO {quote_ident(kept)}")
                return kept
            except psycopg2.errors.ObjectInUse:
                time.sleep(0.05)
        cur.execute(f"ALTER DATABASE {quote_ident(name)} RENAME TO {quote_ident(kept)}")  # the server's error, as it is
    return kept


def run_failure(result: RunResult) -> str:
    """Why a run did not apply everything, in one line: the migration, where, the server's error."""
    failure = result.failure
    if failure is None:
        held = [s.version for s in result.plan.steps if s.action == "manual" and s.version]
        return f"migrations held for a person: {', '.join(held)}" if held else "not every migration was applied"
    return str(failure)
