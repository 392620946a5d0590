from pathlib import Path

import pytest

from reconciler.desired.files import read_sql_file
from reconciler.desired.layouts import load_migrations
from reconciler.errors import MigrationFileError, UsageError
from tests.conftest import write


def test_discovers_in_numeric_order_with_companions(tmp_path: Path):
    write(tmp_path, "10_ten.sql", "SELECT 10;")
    write(tmp_path, "002_two.sql", "SELECT 2;")
    write(tmp_path, "002_two.rollback.sql", "SELECT -2;")
    write(tmp_path, "002_two.verify.sql", "SELECT true;")
    write(tmp_path, "README.md", "not a migration")
    migrations = load_migrations(tmp_path).migrations
    assert [m.version for m in migrations] == ["002", "10"]
    assert migrations[0].rollback is not None and migrations[0].verify is not None
    assert migrations[1].rollback is None


def test_crlf_and_bom_do_not_change_the_checksum(tmp_path: Path):
    unix = write(tmp_path, "a.sql", "CREATE TABLE t (id int);\nSELECT 1;\n")
    windows = write(tmp_path, "b.sql", b"\xef\xbb\xbfCREATE TABLE t (id int);\r\nSELECT 1;\r\n")
    edited = write(tmp_path, "c.sql", "CREATE TABLE t (id bigint);\nSELECT 1;\n")
    assert read_sql_file(unix).checksum == read_sql_file(windows).checksum
    assert read_sql_file(unix).checksum != read_sql_file(edited).checksum


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"create_users.sql": "SELECT 1;"}, "create_users.sql: file name does not match NNN_description.sql"),
        ({"002_a b.sql": "SELECT 1;"}, "002_a b.sql: file name does not match"),
        ({"002_a.sql": "SELECT 1;", "2_b.sql": "SELECT 1;"}, "duplicate migration version"),
        ({"002_a.sql": b"SELECT '\xff';"}, "002_a.sql:1: not valid UTF-8"),
        (
            {"002_a.sql": "SELECT 1;", "003_b.rollback.sql": "SELECT 1;"},
            "003_b.rollback.sql: rollback file has no migration",
        ),
        ({"002_a.sql": "SELECT 1;", "002_a.down.sql": "SELECT 1;"}, "002_a.down.sql: file name does not match"),
        ({"002_a.sql": "SELECT 1;\x00"}, "contains a NUL byte"),
    ],
)
def test_bad_files_are_refused_by_name(tmp_path: Path, files, message):
    for name, content in files.items():
        write(tmp_path, name, content)
    with pytest.raises(MigrationFileError, match=message):
        load_migrations(tmp_path)


def test_several_problems_say_how_many(tmp_path: Path):
    write(tmp_path, "bad.sql", "SELECT 1;")
    write(tmp_path, "worse.sql", "SELECT 1;")
    with pytest.raises(MigrationFileError, match=r"and 1 more problem"):
        load_migrations(tmp_path)


def test_missing_directory_is_a_usage_error(tmp_path: Path):
    with pytest.raises(UsageError, match="does not exist"):
        load_migrations(tmp_path / "nope")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT 1;\n\nCREATE TABLE (;\n", r"002_a.sql:3: syntax error"),
    ],
)
def test_script_problems_name_file_and_line(tmp_path: Path, sql, message):
    write(tmp_path, "002_a.sql", sql)
    migration = load_migrations(tmp_path).migrations[0]
    with pytest.raises(MigrationFileError, match=message):
        _ = migration.file.script


@pytest.mark.parametrize("text", ["", "-- only a comment\n", "/* a block */\n-- and a line\n"])
def test_empty_and_comment_only_files_are_valid_no_ops(tmp_path: Path, text: str):
    write(tmp_path, "002_a.sql", text)
    migration = load_migrations(tmp_path).migrations[0]
    assert migration.file.script.statements == () and migration.file.script.transactional
    assert migration.file.empty


def test_scans_in_threads_each_read_the_files_themselves(tmp_path: Path):
    # An application's threads migrate at start-up together (reconciler.api): one scan's
    # read-once cache must never reach another, nor outlive its scan.
    import threading

    from reconciler.desired.layouts import load_migrations

    for n in range(1, 21):
        (tmp_path / f"{n:03d}_step.sql").write_text(f"CREATE TABLE t{n} (id int);\n")
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def scan() -> None:
        start.wait()
        try:
            for _ in range(30):
                assert len(load_migrations(tmp_path).migrations) == 20
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=scan) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    (tmp_path / "001_step.sql").write_text("CREATE TABLE edited (id int);\n")
    edited = load_migrations(tmp_path).find("001")
    assert edited is not None and "edited" in edited.file.text
