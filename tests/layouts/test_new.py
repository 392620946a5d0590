"""poststack new: a new migration in each layout, numbered after the existing ones, refused
when its name or version is taken or unsafe; and read back by poststack itself, applied
and rolled back on a real server. The clock is injected: no test depends on the time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.desired import scaffold
from reconciler.desired.layouts import LAYOUTS, layout_named, load_migrations, unique_layouts
from reconciler.desired.scaffold import Existing, next_version, plan_new
from reconciler.errors import UsageError
from tests.conftest import run_cli, sql
from tests.integration.test_json_output import conforming
from tests.layouts.test_each_layout import LAYOUTS as LAYOUT_NAMES

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[datetime]]:
    """The time poststack new numbers with: the list's last entry, set by the test."""
    times = [NOW]
    monkeypatch.setattr(scaffold, "utc_now", lambda: times[-1])
    yield times


def new(directory: Path, *args: str):  # type: ignore[no-untyped-def]
    return run_cli("new", *args, "--migrations-dir", str(directory))


def names(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


# --- numbering, pure ------------------------------------------------------------------------


def test_every_layout_can_name_a_new_migration():
    assert sorted(layout.name for layout in unique_layouts()) == sorted(LAYOUT_NAMES)
    assert all(layout.naming is not None for layout in LAYOUTS.values())


@pytest.mark.parametrize(
    ("layout", "existing", "expected"),
    [
        ("poststack", ["001", "003"], "004"),
        ("poststack", ["0009"], "0010"),  # the width follows the newest's zero-padding
        ("poststack", ["7"], "8"),
        ("poststack", ["099"], "100"),  # a sequence outgrows its padding rather than wrap
        ("golang-migrate", ["000001", "000002"], "000003"),
        ("flyway", ["1", "1.1", "1.2"], "1.3"),
        ("flyway", ["1", "2"], "3"),
        ("dbmate", ["001"], "002"),
        ("diesel", ["001"], "002"),
    ],
)
def test_a_sequence_continues_at_its_width(layout: str, existing: list[str], expected: str):
    version, numbering = next_version(layout_named(layout), [Existing(v, f"m{v}") for v in existing], None, NOW)
    assert (version, numbering) == (expected, "sequence")


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("poststack", "20260304050607"),
        ("golang-migrate", "20260304050607"),
        ("dbmate", "20260304050607"),
        ("flyway", "20260304050607"),
        ("prisma", "20260304050607"),
        ("diesel", "2026-03-04-050607"),  # diesel's own format
    ],
)
def test_after_a_timestamp_comes_the_utc_time_in_the_layouts_format(layout: str, expected: str):
    earlier = [Existing("20250101000000", "first")]
    in_another_zone = NOW.astimezone(timezone(timedelta(hours=-7)))
    assert next_version(layout_named(layout), earlier, None, in_another_zone) == (expected, "timestamp")


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("poststack", ("001", "sequence")),
        ("flyway", ("1", "sequence")),
        ("golang-migrate", ("20260304050607", "timestamp")),
        ("dbmate", ("20260304050607", "timestamp")),
        ("diesel", ("2026-03-04-050607", "timestamp")),
        ("prisma", ("20260304050607", "timestamp")),
    ],
)
def test_the_first_migration_is_numbered_as_its_tool_numbers(layout: str, expected: tuple[str, str]):
    assert next_version(layout_named(layout), [], None, NOW) == expected


def test_numbering_can_be_chosen():
    assert next_version(layout_named("dbmate"), [], "sequence", NOW) == ("001", "sequence")
    assert next_version(layout_named("golang-migrate"), [], "sequence", NOW) == ("000001", "sequence")
    assert next_version(layout_named("poststack"), [Existing("003", "x")], "timestamp", NOW) == (
        "20260304050607",
        "timestamp",
    )
    with pytest.raises(UsageError, match="numbering 'date' is not sequence or timestamp"):
        next_version(layout_named("poststack"), [], "date", NOW)


def plan(layout: str, existing: list[tuple[str, str]], name: str, **kwargs: object) -> scaffold.NewMigration:
    options = {"numbering": None, "verify": False, "now": NOW, **kwargs}
    return plan_new(Path("/m"), layout_named(layout), [Existing(v, d) for v, d in existing], name, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("poststack", [("migration", "004_add_x.sql"), ("rollback", "004_add_x.rollback.sql")]),
        ("golang-migrate", [("migration", "004_add_x.up.sql"), ("rollback", "004_add_x.down.sql")]),
        ("dbmate", [("migration_and_rollback", "004_add_x.sql")]),
        ("flyway", [("migration", "V004__add_x.sql"), ("rollback", "U004__add_x.sql")]),
        ("diesel", [("migration", "004_add_x/up.sql"), ("rollback", "004_add_x/down.sql")]),
        ("prisma", [("migration", "004_add_x/migration.sql")]),
    ],
)
def test_each_layout_names_its_files(layout: str, expected: list[tuple[str, str]]):
    result = plan(layout, [("003", "before")], "add_x")
    assert [(f.role, str(f.path.relative_to("/m"))) for f in result.files] == expected
    assert bool(result.notes) == (layout == "prisma")  # Prisma has no down: said, not invented


def test_only_poststacks_layout_writes_a_verify_script():
    written = plan("poststack", [], "add_x", verify=True).files
    assert [(f.role, f.path.name) for f in written][-1] == ("verify", "001_add_x.verify.sql")
    for layout in ("golang-migrate", "dbmate", "flyway", "diesel", "prisma"):
        with pytest.raises(UsageError, match="has no verify scripts"):
            plan(layout, [], "add_x", verify=True)


def test_a_taken_name_or_version_is_refused():
    with pytest.raises(UsageError, match="a migration named 'Add_Users' exists already"):
        plan("poststack", [("001", "add_users")], "Add_Users")
    # Two migrations in one second get one timestamp: the second is refused, not overwritten.
    with pytest.raises(UsageError, match="version 20260304050607 is taken"):
        plan("dbmate", [("20260304050607", "first")], "second")
    with pytest.raises(UsageError, match="would come before the newest"):
        plan("dbmate", [("20270101000000", "from_the_future")], "second")


@pytest.mark.parametrize(
    "name", ["", "add users", "../escape", "a/b", "x.sql", "-leading-dash", "_leading", "naïve", "a" * 101, "a\nb"]
)
def test_an_unsafe_name_is_refused(name: str):
    with pytest.raises(UsageError, match="not a safe file name part"):
        plan("poststack", [], name)


# --- the command ----------------------------------------------------------------------------


def test_new_takes_the_directory_and_layout_but_no_database():
    from tests.interface.test_shared_options import COMMANDS, DB_FLAGS, flags

    assert flags(COMMANDS["new"]) & DB_FLAGS == {"--migrations-dir", "--layout", "--debug"}


def test_new_creates_the_directory_and_says_what_it_wrote(tmp_path: Path, clock: list[datetime]):
    directory = tmp_path / "db" / "migrations"
    result = new(directory, "create_users")
    assert result.exit_code == 0, result.output
    assert f"Created the migrations directory {directory}" in result.stdout
    assert str(directory / "001_create_users.sql") in result.stdout
    assert str(directory / "001_create_users.rollback.sql") in result.stdout
    assert names(directory) == ["001_create_users.rollback.sql", "001_create_users.sql"]

    second = new(directory, "add_email", "--verify")
    assert second.exit_code == 0, second.output
    assert "Created" not in second.stdout
    assert names(directory)[-3:] == ["002_add_email.rollback.sql", "002_add_email.sql", "002_add_email.verify.sql"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create_users",), "a migration named 'create_users' exists already (version 001)"),
        (("bad name",), "migration name 'bad name' is not a safe file name part"),
        (("other", "--layout", "dbmat"), "unknown layout 'dbmat'"),
        (("other", "--layout", "dbmate", "--verify"), "--layout dbmate: the migrations in"),
    ],
)
def test_a_refusal_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, clock: list[datetime], args: tuple[str, ...], message: str
):
    directory = tmp_path / "migrations"
    assert new(directory, "create_users").exit_code == 0
    before = names(directory)
    result = new(directory, *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    summary, *detail = result.stderr.splitlines()
    assert summary.startswith("❌ ") and message in summary, result.stderr
    assert len(detail) <= 1  # a summary, and at most one line saying what to do
    assert names(directory) == before


def test_an_unknown_numbering_is_a_usage_error(tmp_path: Path):
    result = new(tmp_path / "migrations", "other", "--numbering", "weekly")
    assert result.exit_code == 2 and "'weekly' is not one of 'sequence', 'timestamp'" in result.stderr
    assert not (tmp_path / "migrations").exists()


def test_the_project_file_can_choose_the_numbering(
    tmp_path: Path, clock: list[datetime], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "poststack.toml").write_text('numbering = "timestamp"\n')
    made = new(tmp_path / "migrations", "create_users")
    assert made.exit_code == 0, made.output
    assert names(tmp_path / "migrations") == [
        "20260304050607_create_users.rollback.sql",
        "20260304050607_create_users.sql",
    ]
    clock.append(NOW + timedelta(minutes=1))
    assert new(tmp_path / "migrations", "add_email", "--numbering", "sequence").exit_code == 0  # the flag wins
    assert "20260304050608_add_email.sql" in names(tmp_path / "migrations")
    (tmp_path / "poststack.toml").write_text('numbering = "weekly"\n')
    refused = new(tmp_path / "migrations", "third")
    assert (
        refused.exit_code == 2
        and "numbering from poststack.toml is 'weekly', not sequence or timestamp" in refused.stderr
    )


def test_two_in_one_second_the_second_is_refused(tmp_path: Path, clock: list[datetime]):
    directory = tmp_path / "migrations"
    assert new(directory, "first", "--layout", "dbmate").exit_code == 0
    refused = new(directory, "second")  # the layout is detected from the first file
    assert refused.exit_code == 2 and "version 20260304050607 is taken by 20260304050607_first" in refused.stderr
    clock.append(NOW + timedelta(seconds=1))
    assert new(directory, "second").exit_code == 0
    assert names(directory) == ["20260304050607_first.sql", "20260304050608_second.sql"]


def test_new_follows_the_existing_files(tmp_path: Path, clock: list[datetime]):
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "V1__init.sql").write_text("CREATE TABLE a (id int);\n")
    (directory / "V2__more.sql").write_text("CREATE TABLE b (id int);\n")
    result = new(directory, "third")
    assert result.exit_code == 0, result.output
    assert "in Flyway's layout, numbered by sequence" in result.stdout
    assert names(directory) == ["U3__third.sql", "V1__init.sql", "V2__more.sql", "V3__third.sql"]


def test_a_layout_other_than_the_directorys_is_refused(tmp_path: Path, clock: list[datetime]):
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "001_init.sql").write_text("CREATE TABLE a (id int);\n")
    refused = new(directory, "more", "--layout", "dbmate")
    assert refused.exit_code == 2, refused.output
    assert "the migrations in" in refused.stderr and "poststack's layout" in refused.stderr
    assert names(directory) == ["001_init.sql"]
    assert new(directory, "more", "--layout", "poststack").exit_code == 0  # the directory's own: fine
    verify = new(tmp_path / "fresh", "first", "--layout", "dbmate", "--verify")
    assert verify.exit_code == 2 and "--verify: dbmate's layout has no verify scripts" in verify.stderr


def test_a_repeatables_name_is_free_for_a_versioned_migration(tmp_path: Path, clock: list[datetime]):
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "V1__init.sql").write_text("CREATE TABLE a (id int);\n")
    (directory / "R__views.sql").write_text("CREATE OR REPLACE VIEW v AS SELECT 1;\n")
    made = new(directory, "views")
    assert made.exit_code == 0, made.output
    assert "V2__views.sql" in names(directory)
    assert new(directory, "views").exit_code == 2  # now a versioned one has it


def test_new_format_json_matches_its_schema(tmp_path: Path, clock: list[datetime]):
    directory = tmp_path / "migrations"
    data = conforming(new(directory, "create_users", "--layout", "prisma", "--format", "json"), "new")
    assert data["layout"] == "prisma" and data["version"] == "20260304050607" and data["numbering"] == "timestamp"
    assert data["created_directory"] is True
    assert data["files"] == [
        {"role": "migration", "path": str(directory / "20260304050607_create_users" / "migration.sql")}
    ]
    assert data["notes"] == ["Prisma has no down migrations: db rollback cannot undo this one."]
    again = conforming(new(directory, "add_email", "--format", "json", "--numbering", "sequence"), "new")
    assert again["version"] == "20260304050608" and again["created_directory"] is False


# --- read back by poststack: applied and rolled back on a real server -----------------------

UP = {"widgets": "CREATE TABLE widgets (id int PRIMARY KEY);", "gadgets": "CREATE TABLE gadgets (id int);"}


def fill(written: list[dict[str, str]], table: str) -> None:
    """Write real SQL into the files poststack new wrote, as a person would."""
    for file in written:
        path = Path(file["path"])
        text = path.read_text()
        if file["role"] == "migration_and_rollback":
            text = text.replace("-- migrate:up\n", f"-- migrate:up\n{UP[table]}\n")
            text = text.replace("-- migrate:down\n", f"-- migrate:down\nDROP TABLE {table};\n")
        elif file["role"] == "migration":
            text += UP[table] + "\n"
        elif file["role"] == "rollback":
            text += f"DROP TABLE {table};\n"
        elif file["role"] == "verify":
            text += f"SELECT to_regclass('{table}') IS NOT NULL;\n"
        path.write_text(text)


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_what_new_writes_migrates_and_rolls_back(
    layout: str, tmp_path: Path, clock: list[datetime], database_url: str, db
) -> None:  # type: ignore[no-untyped-def]
    directory = tmp_path / "migrations"
    verify = ("--verify",) if layout == "poststack" else ()
    first = new(directory, "create_widgets", "--layout", layout, "--format", "json", *verify)
    assert first.exit_code == 0, first.output
    fill(json.loads(first.stdout)["files"], "widgets")
    clock.append(NOW + timedelta(minutes=1))
    second = new(directory, "create_gadgets", "--format", "json")  # no --layout: detected from the first
    assert second.exit_code == 0, second.output
    made = json.loads(second.stdout)
    assert made["layout"] == layout
    fill(made["files"], "gadgets")
    versions = [json.loads(first.stdout)["version"], made["version"]]

    read = load_migrations(directory)
    assert read.layout == layout
    assert [m.version for m in read.migrations] == versions
    assert [m.rollback is not None for m in read.migrations] == [layout != "prisma"] * 2
    assert (read.migrations[0].verify is not None) == (layout == "poststack")

    def poststack(*args: str):  # type: ignore[no-untyped-def]
        return run_cli(*args, "--database-url", database_url, "--migrations-dir", str(directory))

    migrated = poststack("db", "migrate")
    assert migrated.exit_code == 0, migrated.output
    assert sql(db, "SELECT to_regclass('widgets') IS NOT NULL, to_regclass('gadgets') IS NOT NULL") == [(True, True)]
    assert poststack("db", "validate").exit_code == 0

    back = poststack("db", "rollback", versions[0])
    if layout == "prisma":
        assert back.exit_code != 0 and "rollback" in back.output.lower(), back.output
        assert sql(db, "SELECT to_regclass('gadgets') IS NOT NULL") == [(True,)]
        return
    assert back.exit_code == 0, back.output
    assert sql(db, "SELECT to_regclass('widgets') IS NOT NULL, to_regclass('gadgets') IS NOT NULL") == [(True, False)]
    status = json.loads(poststack("db", "migration-status", "--format", "json").stdout)
    assert [m["version"] for m in status["applied"]] == versions[:1]
    assert [m["version"] for m in status["pending"]] == versions[1:]
