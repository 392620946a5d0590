"""The plugin's template: built once, kept until a migration file changes, whole or not at all."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import psycopg2
import pytest

from reconciler.config import resolve_settings
from reconciler.errors import PoststackError
from reconciler.testing import server as servers
from reconciler.testing import templates
from reconciler.testing.server import TestServer
from tests.conftest import run_together, write


@pytest.fixture
def server(pg_server) -> TestServer:
    return TestServer(pg_server.admin_url)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "project" / "migrations"
    directory.mkdir(parents=True)
    write(directory, "001_users.sql", "CREATE TABLE users (id bigserial PRIMARY KEY, name text);")
    write(directory, "002_seed.sql", "INSERT INTO users (name) VALUES ('root');")
    write(directory, "003_note.sql", "-- nothing to run: a reminder only\n")
    return directory


def settings_for(directory: Path):
    return resolve_settings(
        migrations_dir=directory, embedded_by_default=True, needs_database=False, cwd=directory.parent, environ={}
    )


def databases(server: TestServer, prefix: str) -> list[str]:
    conn = server.admin()
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY 1", (prefix,))
        names = [row[0] for row in cur.fetchall()]
    conn.close()
    return names


def drop_all(server: TestServer, prefix: str) -> None:
    conn = server.admin()
    with conn.cursor() as cur:
        for name in databases(server, prefix):
            cur.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
            cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def holder(server: TestServer):
    """The session's connection: its template is in use while it is open."""
    conn = server.admin()
    yield conn
    conn.close()


@pytest.fixture
def role(server: TestServer) -> str:
    conn = server.admin()
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        (name,) = cur.fetchone()
    conn.close()
    return name


@pytest.fixture
def cleanup(server: TestServer, project: Path, role: str):
    prefix = templates.TEMPLATE_PREFIX + templates.project_tag(settings_for(project), role)
    yield prefix
    drop_all(server, prefix)


def test_built_once_then_reused_until_a_file_changes(server, project, cleanup, holder):
    settings = settings_for(project)
    first = templates.ensure_template(server, settings, holder)
    assert first.built
    again = templates.ensure_template(server, settings, holder)
    assert again == replace(first, built=False)
    # Only a change to a file builds it again, and the template for the old files goes.
    (project / "003_note.sql").write_text("-- nothing to run: a reminder only\n")
    assert templates.ensure_template(server, settings, holder) == again
    write(project, "004_email.sql", "ALTER TABLE users ADD COLUMN email text;")
    changed = templates.ensure_template(server, settings, holder)
    assert changed.built and changed.name != first.name
    assert databases(server, cleanup) == [changed.name]
    # A rollback file is a file of the history too.
    write(project, "004_email.rollback.sql", "ALTER TABLE users DROP COLUMN email;")
    assert templates.ensure_template(server, settings, holder).built


def test_a_template_another_session_clones_from_stays_until_it_ends(server, project, cleanup, holder):
    settings = settings_for(project)
    other_session = server.admin()
    try:
        started = templates.ensure_template(server, settings, other_session)
        write(project, "004_email.sql", "ALTER TABLE users ADD COLUMN email text;")
        changed = templates.ensure_template(server, settings, holder)
        assert databases(server, cleanup) == sorted([started.name, changed.name])  # still in use
        clone = servers.clone_name()
        templates.clone(other_session, started.name, clone)  # the other session goes on cloning
        templates.drop(other_session, clone)
    finally:
        other_session.close()
    assert templates.ensure_template(server, settings, holder) == replace(changed, built=False)
    assert databases(server, cleanup) == [changed.name]  # its session ended: gone


def test_what_a_killed_build_left_is_dropped_by_the_next_session(server, project, cleanup, holder, role):
    settings = settings_for(project)
    name = templates.template_name(settings, role)
    admin = server.admin()
    with admin.cursor() as cur:  # a build killed half-way: its database, and nobody building
        cur.execute(f'CREATE DATABASE "{name}_build_4190000"')
    admin.close()
    made = templates.ensure_template(server, settings, holder)
    assert databases(server, cleanup) == [made.name]


def test_a_template_dropped_under_a_session_is_one_line(server, project, cleanup, holder):
    name = templates.ensure_template(server, settings_for(project), holder).name
    drop_all(server, cleanup)
    with pytest.raises(PoststackError, match=f"the template database {name} is gone"):
        templates.clone(holder, name, servers.clone_name())


def test_a_clone_has_the_migrations_and_is_its_own(server, project, cleanup, holder):
    name = templates.ensure_template(server, settings_for(project), holder).name
    admin = server.admin()
    clones = [servers.clone_name() for _ in range(2)]
    try:
        for clone in clones:
            templates.clone(admin, name, clone)
        first = psycopg2.connect(server.url_for(clones[0]))
        first.autocommit = True
        with first.cursor() as cur:
            cur.execute("INSERT INTO users (name) VALUES ('only here')")
            cur.execute("SELECT version FROM schema_migrations ORDER BY version")
            assert [row[0] for row in cur.fetchall()] == ["001", "002", "003"]
        first.close()
        second = psycopg2.connect(server.url_for(clones[1]))
        with second.cursor() as cur:
            cur.execute("SELECT name FROM users")
            assert cur.fetchall() == [("root",)]
        second.close()
    finally:
        for clone in clones:
            templates.drop(admin, clone)
        admin.close()
    assert not databases(server, clones[0].rsplit("_", 1)[0] + "_")


def test_a_migration_that_fails_leaves_no_template(server, project, cleanup, holder):
    write(project, "004_broken.sql", "ALTER TABLE users ADD COLUMN email text;\nALTER TABLE nope ADD COLUMN x int;\n")
    with pytest.raises(PoststackError) as failed:
        templates.ensure_template(server, settings_for(project), holder)
    assert "do not apply to an empty database" in failed.value.summary
    assert "004_broken.sql:2" in failed.value.summary and 'relation "nope" does not exist' in failed.value.summary
    assert databases(server, cleanup) == []  # neither a template nor the database it was built in


_BUILDER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from reconciler.config import resolve_settings
    from reconciler.testing import templates
    from reconciler.testing.server import TestServer

    admin, directory, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    settings = resolve_settings(migrations_dir=directory, embedded_by_default=True, needs_database=False,
                                cwd=directory.parent, environ={})
    while not go.exists():
        time.sleep(0.005)
    made = templates.ensure_template(TestServer(admin), settings, TestServer(admin).admin())
    print(json.dumps({"name": made.name, "built": made.built}))
    """
)


def test_sessions_starting_together_build_it_once(server, project, cleanup, tmp_path):
    # xdist's workers all ask for the template at the start: one builds, the others wait for it.
    write(project, "004_slow.sql", "SELECT pg_sleep(0.3);\nCREATE TABLE slow (id int);")
    made = run_together(_BUILDER, [server.admin_url, str(project)], 3, tmp_path / "go")
    assert len({m["name"] for m in made}) == 1
    assert sorted(m["built"] for m in made) == [False, False, True]
    assert databases(server, cleanup) == [made[0]["name"]]


def test_the_template_is_named_by_the_project_and_its_files(project, tmp_path):
    settings = settings_for(project)
    name = templates.template_name(settings, "postgres")
    assert len(name) <= 63 and name.startswith(templates.TEMPLATE_PREFIX)
    assert templates.template_name(replace(settings, tracking_schema="app"), "postgres") != name
    assert templates.template_name(settings, "another_role") != name  # its clones could not use the tables
    elsewhere = tmp_path / "elsewhere" / "migrations"
    elsewhere.parent.mkdir()
    import shutil

    shutil.copytree(project, elsewhere)
    other = templates.template_name(settings_for(elsewhere), "postgres")
    assert other != name and other.split("_")[-1] == name.split("_")[-1]  # same files, another project
