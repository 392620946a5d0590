"""Fleet fixtures: 200 tenant schemas in one database and 50 databases, all at the same
history (bench/tenant_history.py), built once per session and copied per test.

Migrating 250 targets with poststack would take minutes, so poststack migrates one of each
kind and the rest are copies: databases with ``CREATE DATABASE ... TEMPLATE``, tenant schemas
by running the same files with the schema first on the search_path and copying the tracking
and audit rows (what poststack itself would have left there). The pristine copies are never
connected to by a command: tests that change targets get their own copies of them
(``fleets.databases(n)``, ``fleets.tenants(n)``); tests that only read share
``shared_db_fleet`` and ``shared_tenant_fleet``.

Every target URL carries a password (the test server's own, or one its trust authentication
ignores) so that every command's output can be checked for it: ``Fleet.run`` does, for
every command.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import psycopg2
import pytest
from psycopg2 import sql as pgsql
from sqlalchemy.engine import make_url

from bench.tenant_history import VERSIONS, clone_tenants, write_tenant_history
from tests.conftest import REPO, Result, Server, _worker, run_cli, run_process

TENANTS = 200
# A fleet's first diagnose replays the history once per tenant (the replay cache is keyed by
# the tenant's schema): the tests that diagnose, plan and apply several times use a database
# of fewer tenants; the 200 serve the commands that do not replay, and one diagnose of a shard.
FEW_TENANTS = 24
DATABASES = 50


def _fleet_password() -> str:
    """The password every target URL carries: the test server's own when it has one (CI's
    PostgreSQL 15 checks it), else one the embedded server's trust authentication ignores."""
    given = os.environ.get("POSTSTACK_TEST_DATABASE_URL")
    password = make_url(given).password if given else None
    return str(password) if password else "fl33t-s3cret-pw"


FLEET_PASSWORD = _fleet_password()
REPORT_SCHEMA = json.loads((REPO / "schemas" / "fleet-report.schema.json").read_text())


def _admin(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def _url(server: Server, database: str, *, password: str | None = None) -> str:
    url = make_url(server.admin_url).set(database=database)
    if password is not None:
        url = url.set(password=password)
    return url.render_as_string(hide_password=False).replace("postgresql+psycopg2://", "postgresql://")


def _name(base: str) -> str:
    """This worker's and process's own database name (two xdist workers share the server)."""
    name = f"{base}_{_worker()}_{os.getpid()}"
    assert len(name.encode()) <= 63, name
    return name


# --- targets and fleets ----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str  # the display name the fleet report uses ("name:" in the file, or the schema)
    url: str  # with the password; for a schema target, the database's URL
    schema: str | None = None  # a tenant schema target

    @property
    def tracking(self) -> str:
        return self.schema or "public"

    @contextlib.contextmanager
    def connect(self) -> Iterator[psycopg2.extensions.connection]:
        """A connection as a migration of this target sees the database (search_path set)."""
        conn = _admin(self.url)
        try:
            if self.schema:
                with conn.cursor() as cur:
                    cur.execute(pgsql.SQL("SET search_path = {}").format(pgsql.Identifier(self.schema)))
            yield conn
        finally:
            conn.close()

    def query(self, text: str, params: object = None) -> list[tuple]:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(text, params)
            return cur.fetchall() if cur.description else []

    def execute(self, text: str) -> None:
        self.query(text)

    def alone(self, migrations: Path) -> tuple[str, ...]:
        """The options that point a single-target poststack command at this target."""
        if self.schema is None:
            return ("--database-url", self.url, "--migrations-dir", str(migrations))
        url = make_url(self.url).update_query_dict({"options": f"-csearch_path={self.schema}"})
        url_text = url.render_as_string(hide_password=False).replace("postgresql+psycopg2://", "postgresql://")
        return ("--database-url", url_text, "--schema", self.schema, "--migrations-dir", str(migrations))


@dataclass
class Fleet:
    kind: str  # "databases" or "schemas"
    targets: list[Target]
    file: Path
    migrations: Path
    databases: list[str] = field(default_factory=list)  # the scratch databases behind it

    def __getitem__(self, name: str) -> Target:
        (target,) = [t for t in self.targets if t.name == name]
        return target

    def run(self, *args: str, targets: Path | None = None, migrations: Path | None = None) -> Result:
        """One poststack command over the fleet, as a user runs it (a real process). No
        output, in any format, may show a password."""
        result = run_process(
            *args,
            "--targets",
            str(targets or self.file),
            "--migrations-dir",
            str(migrations or self.migrations),
            cwd=self.migrations.parent,
            timeout=300,
        )
        assert_masked(result)
        assert "Traceback" not in result.output, result.output
        return result

    def report(self, *args: str, expect_exit: int | None = None, **kwargs: Any) -> dict:
        """The command's JSON fleet report, checked against schemas/fleet-report.schema.json."""
        result = self.run(*args, "--format", "json", **kwargs)
        if expect_exit is not None:
            assert result.exit_code == expect_exit, result.output
        return fleet_json(result)

    def state(self, *names: str) -> dict[str, Any]:
        """Each target's tracking, lock and audit rows and its catalog (to prove "untouched")."""
        return {t.name: target_state(t) for t in self.targets if not names or t.name in names}


def assert_masked(result: Result) -> None:
    assert FLEET_PASSWORD not in result.output, f"password shown:\n{result.output}"


def fleet_json(result: Result) -> dict:
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON (exit {result.exit_code}):\n{result.output}") from None
    jsonschema.validate(report, REPORT_SCHEMA)
    return report


def by_target(report: dict) -> dict[str, dict]:
    entries = {entry["target"]: entry for entry in report["targets"]}
    assert len(entries) == len(report["targets"]), "two targets with one name"
    return entries


def target_state(target: Target) -> dict[str, Any]:
    t = pgsql.Identifier(target.tracking)
    queries = {
        "rows": pgsql.SQL("SELECT * FROM {}.schema_migrations ORDER BY id").format(t),
        "lock": pgsql.SQL("SELECT * FROM {}.schema_migrations_lock").format(t),
        "audit": pgsql.SQL("SELECT * FROM {}.schema_migrations_audit ORDER BY id").format(t),
        "catalog": pgsql.SQL(
            "SELECT c.relname, c.relkind::text, c.relfilenode::bigint FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s ORDER BY 1"
        ),
        "schemas": pgsql.SQL("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' ORDER BY 1"),
        "events": pgsql.SQL("SELECT kind, count(*) FROM {}.app_events GROUP BY kind ORDER BY kind").format(t),
    }
    with target.connect() as conn, conn.cursor() as cur:
        state = {}
        for key, query in queries.items():
            cur.execute(query, (target.tracking,) if key == "catalog" else None)
            state[key] = cur.fetchall()
    if target.schema:  # the other tenants' schemas are not this target's business
        state["schemas"] = [s for s in state["schemas"] if not s[0].startswith("tenant_")]
    return state


def applied_versions(target: Target) -> list[tuple[str, bool]]:
    return target.query(
        pgsql.SQL("SELECT version, success FROM {}.schema_migrations ORDER BY version, id").format(
            pgsql.Identifier(target.tracking)
        )
    )


def write_targets(path: Path, fleet_targets: list[Target], *, named: bool = True) -> Path:
    """A YAML targets file: databases (``url`` + ``name``, or bare URLs) or tenant schemas."""
    import yaml

    if fleet_targets and fleet_targets[0].schema:
        data: dict[str, Any] = {"url": fleet_targets[0].url, "schemas": [t.schema for t in fleet_targets]}
    else:
        data = {"targets": [{"url": t.url, "name": t.name} if named else t.url for t in fleet_targets]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- building ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pristine:
    """The session's migrated originals, never used by a command directly."""

    server: Server
    migrations: Path
    database: str  # one database at the history
    tenants: str  # one database with TENANTS tenant schemas at the history
    few_tenants: str  # one database with FEW_TENANTS of them
    schemas: tuple[str, ...]


_copies = itertools.count()


@pytest.fixture(scope="session")
def pristine(pg_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pristine]:
    started = time.monotonic()
    project = tmp_path_factory.mktemp("fleet-project")
    migrations = project / "migrations"
    write_tenant_history(migrations)
    admin = _admin(pg_server.admin_url)
    database, tenants, few = _name("fleet_tpl"), _name("fleet_tenants_tpl"), _name("fleet_few_tpl")
    schemas = tuple(f"tenant_{i:03d}" for i in range(1, TENANTS + 1))
    try:
        with admin.cursor() as cur:
            for name in (database, tenants, few):
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cur.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        args = ("--migrations-dir", str(migrations))
        result = run_cli("db", "migrate", "--database-url", _url(pg_server, database), *args)
        assert result.exit_code == 0, result.output
        first = schemas[0]
        for name, count in ((tenants, TENANTS), (few, FEW_TENANTS)):
            one = write_targets(project / f"{name}.yaml", [Target(first, _url(pg_server, name), first)])
            result = run_cli("db", "migrate", "--targets", str(one), *args)
            assert result.exit_code == 0, result.output
            clone_tenants(_url(pg_server, name), migrations, first, list(schemas[1:count]))
        print(f"fleet pristine copies made in {time.monotonic() - started:.1f}s")
        yield Pristine(pg_server, migrations, database, tenants, few, schemas)
    finally:
        with admin.cursor() as cur:
            for name in (database, tenants, few):
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


class FleetFactory:
    """Copies of the pristine fleet, dropped at the end of the scope that made them."""

    def __init__(self, pristine: Pristine, directory: Path) -> None:
        self.pristine = pristine
        self.directory = directory
        self.made: list[str] = []

    def _create(self, template: str) -> str:
        name = _name(f"fleet_{next(_copies)}")
        with contextlib.closing(_admin(self.pristine.server.admin_url)) as admin, admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        self.made.append(name)
        return name

    def databases(self, count: int = DATABASES, migrations: Path | None = None) -> Fleet:
        names = [self._create(self.pristine.database) for _ in range(count)]
        targets = [
            Target(f"db_{i:02d}", _url(self.pristine.server, name, password=FLEET_PASSWORD))
            for i, name in enumerate(names, start=1)
        ]
        return self._fleet("databases", targets, names, migrations)

    def tenants(self, count: int = TENANTS, migrations: Path | None = None) -> Fleet:
        """``count`` tenants, alone in their database (TENANTS or FEW_TENANTS)."""
        assert count in (TENANTS, FEW_TENANTS), count
        name = self._create(self.pristine.tenants if count == TENANTS else self.pristine.few_tenants)
        url = _url(self.pristine.server, name, password=FLEET_PASSWORD)
        targets = [Target(schema, url, schema) for schema in self.pristine.schemas[:count]]
        return self._fleet("schemas", targets, [name], migrations)

    def empty_tenants(self, schemas: list[str]) -> Fleet:
        """A new database with empty tenant schemas, for poststack to migrate."""
        name = self._create("template0")
        url = _url(self.pristine.server, name, password=FLEET_PASSWORD)
        with contextlib.closing(_admin(url)) as conn, conn.cursor() as cur:
            for schema in schemas:
                cur.execute(pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(schema)))
        return self._fleet("schemas", [Target(schema, url, schema) for schema in schemas], [name], None)

    def _fleet(self, kind: str, targets: list[Target], names: list[str], migrations: Path | None) -> Fleet:
        directory = self.directory / f"fleet{next(_copies)}"
        directory.mkdir()
        if migrations is None:
            migrations = directory / "migrations"
            write_tenant_history(migrations)
        file = write_targets(directory / "targets.yaml", targets)
        return Fleet(kind, targets, file, migrations, names)

    def drop(self) -> None:
        with contextlib.closing(_admin(self.pristine.server.admin_url)) as admin, admin.cursor() as cur:
            for name in self.made:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def shared_fleets(pristine: Pristine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetFactory]:
    factory = FleetFactory(pristine, tmp_path_factory.mktemp("fleet-shared"))
    yield factory
    factory.drop()


@pytest.fixture(scope="session")
def shared_db_fleet(shared_fleets: FleetFactory) -> Fleet:
    """50 databases at the history, for tests that only read."""
    return shared_fleets.databases()


@pytest.fixture(scope="session")
def shared_tenant_fleet(shared_fleets: FleetFactory) -> Fleet:
    """200 tenant schemas in one database at the history, for tests that only read."""
    return shared_fleets.tenants()


@pytest.fixture
def fleets(pristine: Pristine, tmp_path: Path) -> Iterator[FleetFactory]:
    """This test's own copies: ``fleets.databases(n)``, ``fleets.tenants(n)``."""
    factory = FleetFactory(pristine, tmp_path)
    yield factory
    factory.drop()


def versions_applied_once(target: Target, versions: tuple[str, ...] = VERSIONS) -> None:
    rows = applied_versions(target)
    assert rows == [(v, True) for v in versions], f"{target.name}: {rows}"
