"""Each tool's layout read as it is on disk: detection, versions in each tool's order, the
halves of a dbmate file, no-transaction markers, and refusals that name the file. Pure:
no database."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.desired.layouts import load_migrations, scan_migrations
from reconciler.desired.versions import parse_version, version_key
from reconciler.errors import MigrationFileError, UsageError


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        ("9", "10"),
        ("002", "10"),
        ("1.9", "1.10"),
        ("1.2", "1.2.1"),
        ("1_9", "1.10"),
        ("2020-01-01-000000", "2020-01-02-000000"),
    ],
)
def test_versions_order_as_each_tool_does(smaller: str, larger: str) -> None:
    assert parse_version(smaller) < parse_version(larger)


@pytest.mark.parametrize(
    ("a", "b"), [("002", "2"), ("1.0", "1"), ("1_1", "1.1"), ("2020-01-01-000000", "20200101000000")]
)
def test_one_version_written_two_ways(a: str, b: str) -> None:
    assert version_key(a) == version_key(b)


def test_a_non_version_is_refused_by_name() -> None:
    assert version_key("abc") is None
    with pytest.raises(UsageError, match="'v1' is not a version"):
        parse_version("v1")


def test_golang_migrate_up_and_down(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "1_users.up.sql": "CREATE TABLE users (id int);",
            "1_users.down.sql": "DROP TABLE users;",
            "10_later.up.sql": "SELECT 1;",
            "2_items.up.sql": "CREATE TABLE items (id int);",
            "2_items.down.sql": "DROP TABLE items;",
        },
    )
    migrations = load_migrations(tmp_path)
    assert migrations.layout == "golang-migrate"
    assert [m.version for m in migrations.migrations] == ["1", "2", "10"]
    assert (
        migrations.migrations[0].rollback is not None and "DROP TABLE users" in migrations.migrations[0].rollback.text
    )
    assert migrations.migrations[2].rollback is None


def test_popx_dialects_and_autocommit(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "20200101000000_a.up.sql": "CREATE TABLE generic (id int);",
            "20200101000000_a.postgres.up.sql": "CREATE TABLE pg (id int);",
            "20200101000000_a.mysql.up.sql": "CREATE TABLE my (id int) ENGINE=InnoDB;",
            "20200102000000_idx.postgres.autocommit.up.sql": "UPDATE pg SET id = id;",
            "20200103000000_plain.up.sql": "CREATE INDEX j ON pg (id);",
        },
    )
    migrations = load_migrations(tmp_path, "popx")
    first, index, plain = migrations.migrations
    assert "pg" in first.file.text and "mysql" not in first.file.path.name
    assert not index.file.script.transactional and "autocommit" in (index.file.script.reason or "")
    assert plain.file.script.transactional


@pytest.mark.parametrize("name", ["3_idx.up.sql", "3_idx.sql"])  # sqlx's reversible and plain files
def test_sqlx_no_transaction_line(tmp_path: Path, name: str) -> None:
    write(tmp_path, {name: "-- no-transaction\nCREATE INDEX i ON t (id);"})
    (migration,) = load_migrations(tmp_path).migrations
    assert not migration.file.script.transactional
    assert "sqlx" in (migration.file.script.reason or "")


def test_dbmate_halves_keep_the_files_line_numbers(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "20240101120000_users.sql": "-- migrate:up\nCREATE TABLE users (id int);\n\n-- migrate:down\nDROP TABLE users;\n",
            "20240102120000_idx.sql": "-- migrate:up transaction:false\nUPDATE users SET id = id;\n"
            "-- migrate:down\nDROP INDEX i;\n",
        },
    )
    migrations = load_migrations(tmp_path)
    assert migrations.layout == "dbmate"
    users, index = migrations.migrations
    assert [s.sql for s in users.file.script.statements] == ["CREATE TABLE users (id int)"]
    assert users.rollback is not None
    assert [(s.sql, s.line) for s in users.rollback.script.statements] == [("DROP TABLE users", 5)]
    assert not index.file.script.transactional and "transaction:false" in (index.file.script.reason or "")
    assert index.rollback is not None and index.rollback.script.transactional


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("-- migrate:up\nSELECT 1;\n-- migrate:up\nSELECT 2;\n", ":3: a second -- migrate:up line"),
        ("-- migrate:up transaction:maybe\nSELECT 1;\n", ":1: dbmate option 'transaction:maybe'"),
        ("CREATE TABLE early (id int);\n-- migrate:up\nSELECT 1;\n", "SQL before the -- migrate:up line"),
        ("-- migrate:down\nSELECT 2;\n-- migrate:up\nSELECT 1;\n", ":1: -- migrate:down comes before -- migrate:up"),
    ],
)
def test_dbmate_files_it_cannot_read_whole_are_refused(tmp_path: Path, text: str, says: str) -> None:
    write(tmp_path, {"20240101120000_a.sql": text, "20240102120000_b.sql": "-- migrate:up\nSELECT 1;\n"})
    with pytest.raises(MigrationFileError, match=says):
        load_migrations(tmp_path)


def test_a_dbmate_file_without_its_up_line_is_an_error(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "20240101120000_a.sql": "-- migrate:up\nSELECT 1;\n",
            "20240102120000_b.sql": "-- migrate:up\nSELECT 1;\n",
            "20240103120000_c.sql": "SELECT 1;\n",
        },
    )
    with pytest.raises(MigrationFileError, match=r"20240103120000_c.sql:1: no -- migrate:up line"):
        load_migrations(tmp_path)


def test_flyway_versions_undo_and_script_settings(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "V1__init.sql": "CREATE TABLE a (id int);",
            "V1.10__later.sql": "SELECT 1;",
            "V1_2__second.sql": "SELECT 1;",
            "U1_2__second.sql": "SELECT 2;",
            "V2__idx.sql": "CREATE INDEX i ON a (id);",
            "V2__idx.sql.conf": "executeInTransaction=false\n",
        },
    )
    migrations = load_migrations(tmp_path)
    assert migrations.layout == "flyway"
    assert [m.version for m in migrations.migrations] == ["1", "1.2", "1.10", "2"]
    assert migrations.migrations[1].rollback is not None
    assert not migrations.migrations[3].file.script.transactional


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({"V1__a.sql": "SELECT '${schema}';"}, r"V1__a.sql:1: Flyway placeholder \$\{schema\}"),
        ({"V1__a.sql": "SELECT 1;", "V1__a.sql.conf": "mixed=true\n"}, "V1__a.sql.conf:1: 'mixed=true'"),
        ({"V1__a.sql": "SELECT 1;", "U2__b.sql": "SELECT 1;"}, "U2__b.sql: undo file has no versioned migration"),
        ({"V1__a.sql": "SELECT 1;", "V1.0__b.sql": "SELECT 1;"}, "duplicate migration version"),
    ],
)
def test_flyway_files_poststack_cannot_honour_are_refused(tmp_path: Path, files: dict[str, str], says: str) -> None:
    write(tmp_path, files)
    with pytest.raises(MigrationFileError, match=says):
        load_migrations(tmp_path)


def test_flyway_repeatables_come_after_every_version_by_name(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "V1__init.sql": "CREATE TABLE a (id int);",
            "R__b_view.sql": "CREATE OR REPLACE VIEW b AS SELECT 1 AS one;",
            "R__a_view.sql": "CREATE OR REPLACE VIEW a_v AS SELECT id FROM a;",
            "V20240101__later.sql": "SELECT 1;",
        },
    )
    migrations = load_migrations(tmp_path)
    assert [m.version for m in migrations.migrations] == ["1", "20240101", "R__a_view", "R__b_view"]
    assert [m.key.is_repeatable for m in migrations.migrations] == [False, False, True, True]
    assert parse_version("R__a_view") == migrations.migrations[2].key


def test_flyway_reads_its_folders_recursively(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "release1/V1__init.sql": "CREATE TABLE a (id int);",
            "release2/V2__more.sql": "SELECT 1;",
            "release2/U2__more.sql": "SELECT 2;",
            "release2/V2__more.sql.conf": "executeInTransaction=false\n",
        },
    )
    migrations = load_migrations(tmp_path)
    assert migrations.layout == "flyway"
    assert [m.version for m in migrations.migrations] == ["1", "2"]
    assert migrations.migrations[1].rollback is not None
    assert not migrations.migrations[1].file.script.transactional
    write(tmp_path, {"release2/notes.sql": "SELECT 3;"})
    with pytest.raises(MigrationFileError, match=r"release2/notes.sql: file name does not match V<version>__"):
        load_migrations(tmp_path)
    (tmp_path / "release2" / "notes.sql").unlink()
    write(tmp_path, {"release3/U2__again.sql": "SELECT 2;"})
    with pytest.raises(MigrationFileError, match="a second undo file for version 2"):
        load_migrations(tmp_path)


def test_diesel_directories(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "00000000000000_diesel_initial_setup/up.sql": "-- nothing\n",
            "00000000000000_diesel_initial_setup/down.sql": "",
            "2020-01-01-000000_users/up.sql": "CREATE TABLE users (id int);",
            "2020-01-01-000000_users/down.sql": "DROP TABLE users;",
            "2020-01-02-000000_idx/up.sql": "UPDATE users SET id = id;",
            "2020-01-02-000000_idx/down.sql": "DROP INDEX CONCURRENTLY i;",
            "2020-01-02-000000_idx/metadata.toml": "run_in_transaction = false\n",
            "2020-01-03-000000_plain/up.sql": "SELECT 1;",
            "2020-01-03-000000_plain/metadata.toml": "run_in_transaction = true\n",
        },
    )
    migrations = load_migrations(tmp_path)
    assert migrations.layout == "diesel"
    assert [m.version for m in migrations.migrations] == [
        "00000000000000",
        "2020-01-01-000000",
        "2020-01-02-000000",
        "2020-01-03-000000",
    ]
    index = migrations.migrations[2]
    assert "run_in_transaction" in (index.file.script.reason or "")
    assert migrations.migrations[3].file.script.transactional


def test_diesel_directory_with_a_stray_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, {"2020-01-01-000000_a/up.sql": "SELECT 1;", "2020-01-01-000000_a/notes.sql": "SELECT 2;"})
    with pytest.raises(MigrationFileError, match=r"notes.sql: diesel migrations hold up.sql"):
        load_migrations(tmp_path)


def test_prisma_directories(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "migration_lock.toml": 'provider = "postgresql"\n',
            "20210101000000_init/migration.sql": "CREATE TABLE a (id int);",
            "20210102000000_more/migration.sql": "-- comment only\n",
        },
    )
    migrations = load_migrations(tmp_path)
    assert migrations.layout == "prisma"
    assert [m.description for m in migrations.migrations] == ["init", "more"]
    assert all(m.rollback is None for m in migrations.migrations)


def test_a_directory_of_one_layout_with_another_tools_file_names_it(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "001_a.sql": "SELECT 1;",
            "002_b.sql": "SELECT 1;",
            "V3__c.sql": "SELECT 1;",
        },
    )
    scan = scan_migrations(tmp_path)
    assert scan.migrations.layout == "poststack"
    (problem,) = scan.problems
    assert "V3__c.sql: file name does not match NNN_description.sql: it is in Flyway's layout" in problem.message


def test_an_even_mix_is_an_error_naming_both(tmp_path: Path) -> None:
    write(tmp_path, {"1_a.up.sql": "SELECT 1;", "V2__b.sql": "SELECT 1;"})
    with pytest.raises(MigrationFileError, match=r"mixes layouts.*golang-migrate: 1_a.up.sql.*Flyway: V2__b.sql"):
        load_migrations(tmp_path)


def test_layout_named_overrides_detection(tmp_path: Path) -> None:
    write(tmp_path, {"1_a.up.sql": "SELECT 1;", "V2__b.sql": "SELECT 1;"})
    with pytest.raises(MigrationFileError, match=r"1_a.up.sql: file name does not match V<version>__"):
        load_migrations(tmp_path, "flyway")


def test_a_diesel_directory_in_a_poststack_project_is_not_passed_over(tmp_path: Path) -> None:
    write(tmp_path, {"001_a.sql": "SELECT 1;", "002_b.sql": "SELECT 1;", "2020-01-01-000000_x/up.sql": "SELECT 1;"})
    with pytest.raises(MigrationFileError, match=r"2020-01-01-000000_x: directory name does not match.*diesel"):
        load_migrations(tmp_path)


def test_unknown_layout_name_suggests(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="did you mean 'flyway'"):
        load_migrations(tmp_path, "flywya")


def test_flyway_callbacks_are_read_beside_the_migrations_not_as_migrations(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "V1__init.sql": "CREATE TABLE a (id int);",
            "afterMigrate__b_grants.sql": "GRANT SELECT ON a TO PUBLIC;",
            "afterMigrate.sql": "SELECT 1;",
            "afterMigrate__a_stats.sql": "ANALYZE a;",
            "sub/beforeEachMigrate.sql": "SET lock_timeout = '5s';",
            "beforeClean.sql": "SELECT 2;",  # an event poststack has no equivalent of: read, not run
        },
    )
    migrations = load_migrations(tmp_path)
    assert migrations.layout == "flyway"
    assert [m.version for m in migrations.migrations] == ["1"]
    # One event's callbacks: the unnamed one first, then by description, as Flyway orders them.
    assert [c.name for c in migrations.callbacks_at("afterMigrate")] == [
        "afterMigrate.sql",
        "afterMigrate__a_stats.sql",
        "afterMigrate__b_grants.sql",
    ]
    assert [(c.name, c.runs) for c in migrations.callbacks_at("beforeEachMigrate")] == [("beforeEachMigrate.sql", True)]
    assert [(c.name, c.runs) for c in migrations.callbacks_at("beforeClean")] == [("beforeClean.sql", False)]


@pytest.mark.parametrize(
    ("files", "says"),
    [
        (
            {"a/afterMigrate.sql": "SELECT 1;", "b/afterMigrate.sql": "SELECT 2;"},
            "a second SQL callback called afterMigrate.sql",
        ),
        ({"afterMigrate.sql": "GRANT SELECT ON t TO ${role};"}, r"afterMigrate.sql:1: Flyway placeholder \$\{role\}"),
        ({"afterMigrat.sql": "SELECT 1;"}, "afterMigrat.sql: file name does not match"),
    ],
)
def test_flyway_callbacks_poststack_cannot_use_are_refused(tmp_path: Path, files: dict[str, str], says: str) -> None:
    write(tmp_path, {"V1__init.sql": "SELECT 1;", **files})
    with pytest.raises(MigrationFileError, match=says):
        load_migrations(tmp_path)
