"""db import: taking over from another tool, on a real server. Each tool's table is made by
the real tool where it installs from the registries (dbmate from npm, sqlx from PyPI), else
with the DDL and rows its source writes (tests/foreign/tools.py cites each file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, sql
from tests.foreign import tools as T
from tests.integration.test_json_output import problems
from tests.layouts.histories import write_history

# The tool, the layout its files are in, and whether its table is called schema_migrations
# (poststack's default name: then poststack's own tables need another prefix).
TOOLS = {
    "dbmate": ("dbmate", True),
    "golang-migrate": ("golang-migrate", True),
    "sqlx": ("golang-migrate", False),
    "diesel": ("diesel", False),
    "prisma": ("prisma", False),
    "flyway": ("flyway", False),
}
FOREIGN_TABLE = {
    "dbmate": "schema_migrations",
    "golang-migrate": "schema_migrations",
    "sqlx": "_sqlx_migrations",
    "diesel": "__diesel_schema_migrations",
    "prisma": "_prisma_migrations",
    "flyway": "flyway_schema_history",
}


def apply_with(tool: str, url: str, directory: Path, upto: str | None = None) -> None:
    """Run ``directory`` (up to ``upto``, for the tools that can stop there) with ``tool``."""
    if tool == "dbmate":
        T.dbmate_apply(url, directory)
    elif tool == "golang-migrate":
        T.golang_migrate_apply(url, directory, upto=int(upto) if upto else None)
    elif tool == "sqlx":
        T.sqlx_apply(url, directory)
    elif tool == "diesel":
        T.diesel_apply(url, directory)
    elif tool == "prisma":
        T.prisma_apply(url, directory)
    elif tool == "flyway":
        T.flyway_apply(url, directory, target=upto)


class Project:
    def __init__(self, tool: str, root: Path, url: str) -> None:
        self.tool = tool
        layout, collides = TOOLS[tool]
        self.directory = root / "migrations"
        self.versions = write_history(layout, self.directory)
        self.url = url
        self.prefix = ("--table-prefix", "poststack_") if collides else ()
        self.tracking = "poststack_migrations" if collides else "schema_migrations"

    def poststack(self, *args: str):  # type: ignore[no-untyped-def]
        return run_cli(*args, *self.prefix, "--database-url", self.url, "--migrations-dir", str(self.directory))

    def foreign_rows(self) -> list[tuple]:
        return sql_rows(self.url, f"SELECT * FROM {FOREIGN_TABLE[self.tool]} ORDER BY 1")


def sql_rows(url: str, query: str) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        return sql(conn, query)
    finally:
        conn.close()


@pytest.fixture(params=list(TOOLS))
def project(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Project:
    return Project(request.param, tmp_path, database_url)


def test_a_whole_history_is_imported_and_the_other_tools_table_left_alone(project: Project, db) -> None:  # type: ignore[no-untyped-def]
    apply_with(project.tool, project.url, project.directory)
    before = project.foreign_rows()

    shown = project.poststack("db", "import", "--from", project.tool, "--dry-run")
    assert shown.exit_code == 0, shown.output
    assert "import_migration" in shown.stdout and project.versions[-1] in shown.stdout
    assert sql(db, f"SELECT to_regclass('{project.tracking}') IS NULL") == [(True,)]  # a dry run writes nothing

    result = project.poststack("db", "import", "--from", project.tool, "--auto-approve", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert not problems(data, "import-result.schema.json")
    assert [i["version"] for i in data["items"] if i["decision"] == "import"] == project.versions
    assert project.foreign_rows() == before

    status = json.loads(project.poststack("db", "migration-status", "--format", "json").stdout)
    assert [m["version"] for m in status["applied"]] == project.versions
    assert project.poststack("db", "diagnose").exit_code == 0
    again = project.poststack("db", "migrate")
    assert again.exit_code == 0, again.output
    assert sql(db, "SELECT count(*) FROM users") == [(1,)]  # the data migration did not run twice
    audit = f"{project.tracking}_audit"
    recorded = (
        f"SELECT count(*) FROM {audit} WHERE action IN ('import_migration', 'track_migration') AND outcome = 'ok'"
    )
    assert sql(db, recorded) == [(len(project.versions),)]
    # golang-migrate keeps one row: the versions below it are applied by inference only.
    ran = sql(db, f"SELECT count(*) FROM {audit} WHERE action = 'import_migration'")[0][0]
    assert ran == (1 if project.tool == "golang-migrate" else len(project.versions))


def test_a_row_the_catalog_contradicts_is_reported_not_imported(project: Project, db) -> None:  # type: ignore[no-untyped-def]
    apply_with(project.tool, project.url, project.directory)
    # Only migration 5 makes the enum; the tool still says it is applied.
    sql(db, "DROP TYPE user_status CASCADE")
    result = project.poststack("db", "import", "--from", project.tool, "--auto-approve", "--format", "json")
    assert result.exit_code == 1, result.output
    refused = [i for i in json.loads(result.stdout)["items"] if i["decision"] == "refuse"]
    assert project.versions[4] in {i["version"] for i in refused}
    assert all("missing" in i["reason"] for i in refused)
    tracked = {r[0] for r in sql(db, f"SELECT version FROM {project.tracking}")}
    assert not tracked & {i["version"] for i in refused}


def test_golang_migrate_dirty_becomes_a_partial_migration(tmp_path: Path, database_url: str, db) -> None:  # type: ignore[no-untyped-def]
    project = Project("golang-migrate", tmp_path, database_url)
    apply_with("golang-migrate", database_url, project.directory, upto="5")
    T.golang_migrate_set_version(database_url, 6, dirty=True)  # 6 started and did not finish
    result = project.poststack("db", "import", "--from", "golang-migrate", "--auto-approve")
    assert result.exit_code == 0, result.output
    diagnosis = project.poststack("db", "diagnose", "--format", "json")
    issues = json.loads(diagnosis.stdout)["issues"]
    assert [(i["type"], i["version"]) for i in issues if i["type"] == "partial_migration"] == [
        ("partial_migration", "6")
    ]
    assert sql(db, "SELECT version FROM poststack_migrations WHERE success ORDER BY id") == [
        (v,) for v in ["1", "2", "3", "4", "5"]
    ]
    held = project.poststack("db", "migrate")
    assert held.exit_code == 1 and "6" in held.output  # nothing runs past a half-run migration


def test_flyway_success_false_becomes_a_partial_migration(tmp_path: Path, database_url: str) -> None:
    project = Project("flyway", tmp_path, database_url)
    apply_with("flyway", database_url, project.directory, upto="1.10")
    failed = next(m for m in T.flyway_migrations(project.directory) if m.version == "2")
    T.flyway_failed(database_url, failed)
    assert project.poststack("db", "import", "--from", "flyway", "--auto-approve").exit_code == 0
    issues = json.loads(project.poststack("db", "diagnose", "--format", "json").stdout)["issues"]
    assert ("partial_migration", "2") in {(i["type"], i["version"]) for i in issues}


def test_an_unfinished_prisma_migration_becomes_a_partial_migration(
    tmp_path: Path, database_url: str, pg_server
) -> None:  # type: ignore[no-untyped-def]
    prisma = Project("prisma", tmp_path / "p", database_url)
    T.prisma_apply(database_url, prisma.directory)
    name = sorted(p.name for p in prisma.directory.iterdir() if p.is_dir())[-1]
    conn_rows = sql_rows(
        database_url,
        f"UPDATE _prisma_migrations SET finished_at = NULL, logs = 'boom' WHERE migration_name = '{name}' RETURNING 1",
    )
    assert conn_rows == [(1,)]
    assert prisma.poststack("db", "import", "--from", "prisma", "--auto-approve").exit_code == 0
    issues = json.loads(prisma.poststack("db", "diagnose", "--format", "json").stdout)["issues"]
    assert ("partial_migration", prisma.versions[-1]) in {(i["type"], i["version"]) for i in issues}


def test_sqlx_failed_row_becomes_a_partial_migration(tmp_path: Path, database_url: str) -> None:
    project = Project("sqlx", tmp_path, database_url)
    T.sqlx_apply(database_url, project.directory)
    T.sqlx_mark_failed(database_url, 10)
    assert project.poststack("db", "import", "--from", "sqlx", "--auto-approve").exit_code == 0
    issues = json.loads(project.poststack("db", "diagnose", "--format", "json").stdout)["issues"]
    assert ("partial_migration", "10") in {(i["type"], i["version"]) for i in issues}


@pytest.mark.parametrize("tool", ["sqlx", "prisma", "flyway"])
def test_the_tools_own_checksum_is_kept_and_an_edit_since_is_seen(tool: str, tmp_path: Path, database_url: str) -> None:
    project = Project(tool, tmp_path, database_url)
    apply_with(tool, database_url, project.directory)
    assert project.poststack("db", "import", "--from", tool, "--auto-approve").exit_code == 0
    assert project.poststack("db", "diagnose").exit_code == 0  # the same file, in the tool's algorithm
    edited = next(
        p
        for p in sorted(project.directory.rglob("*.sql"))
        if "add_email" in str(p) and "down" not in p.name and not p.name.startswith("U")
    )
    edited.write_text(edited.read_text() + "-- reviewed\n")
    issues = json.loads(project.poststack("db", "diagnose", "--format", "json").stdout)["issues"]
    assert ("checksum_mismatch", project.versions[1]) in {(i["type"], i["version"]) for i in issues}


def test_dbmate_table_at_poststacks_location_is_refused_in_one_line(tmp_path: Path, database_url: str) -> None:
    project = Project("dbmate", tmp_path, database_url)
    apply_with("dbmate", database_url, project.directory)
    result = run_cli(
        "db", "import", "--from", "dbmate", "--auto-approve",
        "--database-url", database_url, "--migrations-dir", str(project.directory),
    )  # fmt: skip
    assert result.exit_code != 0
    first = result.stderr.strip().splitlines()[0]
    assert "schema_migrations" in first and "dbmate" in first and "--table-prefix" in first


def test_a_missing_table_names_itself(tmp_path: Path, database_url: str) -> None:
    project = Project("flyway", tmp_path, database_url)
    result = project.poststack("db", "import", "--from", "flyway", "--auto-approve")
    assert result.exit_code == 2
    assert "no Flyway history table public.flyway_schema_history" in result.stderr


def test_an_unknown_tool_suggests(tmp_path: Path, database_url: str) -> None:
    project = Project("flyway", tmp_path, database_url)
    result = project.poststack("db", "import", "--from", "flyaway")
    assert result.exit_code == 2 and "did you mean 'flyway'" in result.stderr


def test_flyway_baseline_versions_are_imported_on_flyways_word(tmp_path: Path, database_url: str, db) -> None:  # type: ignore[no-untyped-def]
    """The on-call probe's case: the baseline version itself (a seed) was dropped from the import,
    and migrate's hint would have run it again."""
    directory = tmp_path / "sql"
    directory.mkdir()
    (directory / "V1__a.sql").write_text("CREATE TABLE a (id int);\n")
    (directory / "V1.1__seed.sql").write_text("INSERT INTO a VALUES (1);\n")
    (directory / "V2__x.sql").write_text("CREATE TABLE x (id int);\n")
    sql(db, "CREATE TABLE a (id int); INSERT INTO a VALUES (1);")  # there before Flyway came
    T.flyway_baseline(database_url, "1.1")
    T.flyway_apply(database_url, directory)
    result = run_cli(
        "db", "import", "--from", "flyway", "--auto-approve", "--format", "json",
        "--database-url", database_url, "--migrations-dir", str(directory),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    decided = {i["version"]: i["decision"] for i in json.loads(result.stdout)["items"]}
    assert decided == {"1": "import", "1.1": "import", "2": "import"}
    migrate = run_cli("db", "migrate", "--database-url", database_url, "--migrations-dir", str(directory))
    assert migrate.exit_code == 0 and "up to date" in migrate.stdout, migrate.output
    assert sql(db, "SELECT count(*) FROM a") == [(1,)]


def test_importing_twice_records_a_failed_attempt_once(tmp_path: Path, database_url: str, db) -> None:  # type: ignore[no-untyped-def]
    project = Project("golang-migrate", tmp_path, database_url)
    apply_with("golang-migrate", database_url, project.directory, upto="5")
    T.golang_migrate_set_version(database_url, 6, dirty=True)
    for _ in range(2):
        assert project.poststack("db", "import", "--from", "golang-migrate", "--auto-approve").exit_code == 0
    assert sql(db, "SELECT count(*) FROM poststack_migrations WHERE version = '6'") == [(1,)]
    assert sql(db, "SELECT count(*) FROM poststack_migrations") == [(6,)]
