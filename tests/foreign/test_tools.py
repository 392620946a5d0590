"""The helpers in tools.py make the tables the tools make: the emulations against the real dbmate and
sqlx where those are installed, and each emulation against its tool's documented behaviour."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import psycopg2
import pytest

from tests.foreign import tools as T


def _write(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def _rows(url: str, query: str) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchall()
    finally:
        conn.close()


def _shape(url: str, table: str) -> list[tuple]:
    return _rows(
        url,
        "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default "
        f"FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '{table}' "
        "ORDER BY ordinal_position",
    ) + _rows(url, f"SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = '{table}' ORDER BY 1")


def _reset(url: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    conn.close()


DBMATE = {
    "20240101000000_users.sql": "-- migrate:up\ncreate table users (id int);\n\n-- migrate:down\ndrop table users;\n",
    "20240102000000_index.sql": (
        "-- migrate:up transaction:false\ncreate index concurrently users_id on users (id);\n\n"
        "-- migrate:down\ndrop index users_id;\n"
    ),
    "003_short.sql": "-- a comment first is allowed\n-- migrate:up\ncreate table s (id int);\n-- migrate:down\ndrop table s;\n",
    "notes.sql": "not a migration: no leading digit",
}

SQLX = {
    "1_create_users.sql": "create table users (id int);\n",
    "2_add_index.sql": "-- no-transaction\ncreate index concurrently users_id on users (id);\n",
    "20240103000000_three_parts.up.sql": "create table t3 (id int);\n",
    "20240103000000_three_parts.down.sql": "drop table t3;\n",
}


@pytest.mark.parametrize("tool", ["dbmate", "sqlx"])
def test_the_emulation_writes_what_the_real_tool_writes(tool: str, database_url: str, tmp_path: Path) -> None:
    binary = T.dbmate_binary() if tool == "dbmate" else T.sqlx_binary()
    if binary is None:
        pytest.skip(T.missing_reason(tool))
    apply, files, table, query = {
        "dbmate": (T.dbmate_apply, DBMATE, "schema_migrations", "SELECT version FROM schema_migrations ORDER BY 1"),
        "sqlx": (
            T.sqlx_apply,
            SQLX,
            "_sqlx_migrations",
            "SELECT version, description, success, checksum, execution_time > 0 FROM _sqlx_migrations ORDER BY 1",
        ),
    }[tool]
    directory = _write(tmp_path / tool, files)
    assert apply(database_url, directory, real=True) == "real"
    real = _shape(database_url, table), _rows(database_url, query)
    _reset(database_url)
    assert apply(database_url, directory, real=False) == "emulated"
    assert (_shape(database_url, table), _rows(database_url, query)) == real


@pytest.mark.parametrize("real", [True, False])
def test_sqlx_refuses_a_partially_applied_row(real: bool, database_url: str, tmp_path: Path) -> None:
    if real and T.sqlx_binary() is None:
        pytest.skip(T.missing_reason("sqlx"))
    directory = _write(tmp_path / "sqlx", SQLX)
    T.sqlx_apply(database_url, directory, real=real)
    T.sqlx_mark_failed(database_url, 2)
    with pytest.raises(T.ToolFailed, match="partially applied"):
        T.sqlx_apply(database_url, directory, real=real)


def test_golang_migrate_keeps_one_row_and_a_failed_file_leaves_it_dirty(database_url: str, tmp_path: Path) -> None:
    directory = _write(
        tmp_path / "gm",
        {
            "1_init.up.sql": "create table a (id int);\n",
            "1_init.down.sql": "drop table a;\n",
            "2_bad.up.sql": "create table b (id int);\nselect nope;\n",
            "2_bad.down.sql": "drop table b;\n",
        },
    )
    with pytest.raises(T.ToolFailed):
        T.golang_migrate_apply(database_url, directory)
    assert _rows(database_url, "SELECT version, dirty FROM schema_migrations") == [(2, True)]
    with pytest.raises(T.ToolFailed, match="Dirty database version 2"):
        T.golang_migrate_apply(database_url, directory)
    T.golang_migrate_set_version(database_url, 1, False)  # migrate force 1
    (directory / "2_bad.up.sql").write_text("create table b (id int);\n")
    assert T.golang_migrate_apply(database_url, directory) == [2]
    assert _rows(database_url, "SELECT version, dirty FROM schema_migrations") == [(2, False)]


def test_diesel_versions_and_metadata(database_url: str, tmp_path: Path) -> None:
    directory = _write(
        tmp_path / "diesel",
        {
            "2020-01-01-000000_create_users/up.sql": "create table users (id int);\n",
            "2020-01-02-000000_index/up.sql": "create index concurrently users_id on users (id);\n",
            "2020-01-02-000000_index/metadata.toml": "run_in_transaction = false\n",
        },
    )
    assert T.diesel_apply(database_url, directory) == ["20200101000000", "20200102000000"]
    assert _rows(database_url, "SELECT version FROM __diesel_schema_migrations ORDER BY 1") == [
        ("20200101000000",),
        ("20200102000000",),
    ]


def test_prisma_failed_then_rolled_back_then_applied(database_url: str, tmp_path: Path) -> None:
    directory = _write(
        tmp_path / "prisma",
        {
            "migration_lock.toml": T.PRISMA_LOCK_TOML,
            "20240101000000_init/migration.sql": 'CREATE TABLE "User" ("id" SERIAL PRIMARY KEY);\n',
            "20240102000000_bad/migration.sql": 'CREATE TABLE "Post" ("id" int);\nSELECT nope;\n',
        },
    )
    with pytest.raises(T.ToolFailed):
        T.prisma_apply(database_url, directory)
    query = (
        "SELECT migration_name, checksum, finished_at IS NOT NULL, rolled_back_at IS NOT NULL, applied_steps_count "
        "FROM _prisma_migrations ORDER BY started_at, finished_at NULLS FIRST"
    )
    init = hashlib.sha256((directory / "20240101000000_init/migration.sql").read_bytes()).hexdigest()
    rows = _rows(database_url, query)
    assert rows[0] == ("20240101000000_init", init, True, False, 1)
    assert rows[1][0] == "20240102000000_bad" and rows[1][2:] == (False, False, 0)
    T.prisma_resolve_rolled_back(database_url, "20240102000000_bad")
    (directory / "20240102000000_bad/migration.sql").write_text('CREATE TABLE "Post" ("id" int);\n')
    assert T.prisma_apply(database_url, directory) == ["20240102000000_bad"]
    assert [r[2:] for r in _rows(database_url, query)] == [(True, False, 1), (False, True, 0), (True, False, 1)]


# CRC-32s from a Java program doing what Flyway's ChecksumCalculator does (BufferedReader.readLine,
# BOM dropped from the first line, CRC32 over each line's UTF-8 bytes), run on these bytes.
@pytest.mark.parametrize(
    ("data", "checksum"),
    [
        (b"create table a (id int);\ninsert into a values (1);\n", -94847981),
        (b"create table a (id int);\r\ninsert into a values (1);\r\n", -94847981),
        (b"create table a (id int);\rinsert into a values (1);\r", -94847981),
        (b"create table a (id int);\ninsert into a values (1);", -94847981),
        (b"\xef\xbb\xbfcreate table a (id int);\n", -897341557),
        (b"", 0),
        (b"\n", 0),
        (b"\n\n\nselect 1;\n\n", -690524359),
        ("select 'héllo — ✓';\n".encode(), -1421861259),
        (b"a\r\n\rb\n\r\nc", 891568578),
        (b"select 1;\x0b\x0cselect 2;\x1c\n\xc2\x85x\n", 1935144529),
    ],
)
def test_flyway_checksum(data: bytes, checksum: int) -> None:
    assert T.flyway_checksum(data) == checksum


def test_flyway_history(database_url: str, tmp_path: Path) -> None:
    directory = _write(
        tmp_path / "flyway",
        {
            "V1__create_users.sql": "create table users (id int);\n",
            "V1_1__add_name.sql": "alter table users add column name text;\n",
            "sub/V2.0.1__Index_Users.sql": "create index concurrently users_id on users (id);\n",
            "sub/V2.0.1__Index_Users.sql.conf": "executeInTransaction=false\n",
            "V010__leading_zeros.sql": "create table t10 (id int);\n",
            "R__view.sql": "create view v as select 1 as x;\n",
            "U1_1__drop_name.sql": "alter table users drop column name;\n",
            "beforeMigrate.sql": "select 1;\n",
        },
    )
    T.flyway_apply(database_url, directory)
    query = "SELECT installed_rank, version, description, type, script, success FROM flyway_schema_history ORDER BY 1"
    assert _rows(database_url, query) == [
        (1, "1", "create users", "SQL", "V1__create_users.sql", True),
        (2, "1.1", "add name", "SQL", "V1_1__add_name.sql", True),
        (3, "2.0.1", "Index Users", "SQL", "sub/V2.0.1__Index_Users.sql", True),
        (4, "010", "leading zeros", "SQL", "V010__leading_zeros.sql", True),
        (5, None, "view", "SQL", "R__view.sql", True),
    ]
    # A failed non-transactional migration leaves success = false; a failed transactional one leaves nothing.
    _write(
        directory,
        {
            "V11__bad.sql": "create index concurrently nope_idx on nope (id);\n",
            "V11__bad.sql.conf": "executeInTransaction=false\n",
        },
    )
    with pytest.raises(T.ToolFailed):
        T.flyway_apply(database_url, directory)
    assert _rows(database_url, "SELECT version, success FROM flyway_schema_history WHERE installed_rank = 6") == [
        ("11", False)
    ]
    with pytest.raises(T.ToolFailed, match="Detected failed migration to version 11"):
        T.flyway_apply(database_url, directory)
