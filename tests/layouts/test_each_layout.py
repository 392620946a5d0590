"""Every command on every layout, on a real server: a churning history in each tool's own
layout is applied, rolled back, applied again, diagnosed, and recovered after its tracking
is lost, without running anything twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, sql
from tests.layouts.histories import write_history

LAYOUTS = ["poststack", "golang-migrate", "dbmate", "flyway", "diesel", "prisma"]


@pytest.fixture(params=LAYOUTS)
def project(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path, list[str]]:
    directory = tmp_path / "migrations"
    versions = write_history(request.param, directory)
    return request.param, directory, versions


def poststack(database_url: str, directory: Path, *args: str):  # type: ignore[no-untyped-def]
    return run_cli(*args, "--database-url", database_url, "--migrations-dir", str(directory))


def test_apply_roll_back_apply_again(project, database_url: str, db) -> None:  # type: ignore[no-untyped-def]
    layout, directory, versions = project
    first = poststack(database_url, directory, "db", "migrate")
    assert first.exit_code == 0, first.output
    assert sql(db, "SELECT full_name, status::text FROM users") == [("admin", "new")]
    status = poststack(database_url, directory, "db", "migration-status", "--format", "json")
    data = json.loads(status.stdout)
    assert [m["version"] for m in data["applied"]] == versions  # as written, in the tool's order

    back = poststack(database_url, directory, "db", "rollback", versions[0])
    if layout == "prisma":
        assert back.exit_code != 0 and "rollback" in back.output.lower(), back.output
        return
    assert back.exit_code == 0, back.output
    assert sql(db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'users' ORDER BY 1") == [
        ("id",),
        ("name",),
    ]
    assert sql(db, "SELECT count(*) FROM users") == [(0,)]
    again = poststack(database_url, directory, "db", "migrate")
    assert again.exit_code == 0, again.output
    assert sql(db, "SELECT count(*) FROM users") == [(1,)]
    assert poststack(database_url, directory, "db", "diagnose").exit_code == 0


def test_lost_tracking_is_recovered_and_nothing_runs_twice(project, database_url: str, db) -> None:  # type: ignore[no-untyped-def]
    _layout, directory, versions = project
    assert poststack(database_url, directory, "db", "migrate").exit_code == 0
    sql(db, "DELETE FROM schema_migrations")

    diagnosis = poststack(database_url, directory, "db", "diagnose", "--format", "json")
    assert diagnosis.exit_code == 1
    missing = {i["version"] for i in json.loads(diagnosis.stdout)["issues"] if i["type"] == "missing_tracking"}
    assert missing == set(versions)  # the audit table vouches for the data and comment-only ones

    recovered = poststack(database_url, directory, "db", "recover")
    assert recovered.exit_code == 0, recovered.output
    migrate = poststack(database_url, directory, "db", "migrate")
    assert migrate.exit_code == 0, migrate.output
    assert sql(db, "SELECT count(*) FROM users") == [(1,)]  # the seed did not run again
    assert poststack(database_url, directory, "db", "diagnose").exit_code == 0


def test_plan_and_apply_migrate(project, database_url: str, db) -> None:  # type: ignore[no-untyped-def]
    _layout, directory, versions = project
    plan = run_cli("plan", "--format", "json", "--database-url", database_url, "--migrations-dir", str(directory))
    assert plan.exit_code == 0, plan.output
    steps = json.loads(plan.stdout)["steps"]
    planned = [s["version"] for s in steps if s["action"] == "apply_migration"]
    assert planned == versions
    # A data migration this plan runs is no question for a person (the on-call probe saw
    # "If it ran, track it: db recover --force" beside the step that runs it).
    assert not [s for s in steps if s["action"] == "manual" and s["version"] in planned]
    applied = run_cli("apply", "--auto-approve", "--database-url", database_url, "--migrations-dir", str(directory))
    assert applied.exit_code == 0, applied.output
    assert sql(db, "SELECT count(*) FROM users") == [(1,)]


def test_plan_and_apply_run_nothing_past_a_file_they_cannot_read_whole(tmp_path: Path, database_url: str, db) -> None:  # type: ignore[no-untyped-def]
    """The reviewer's cases: a dbmate file among poststack's files, and a Flyway placeholder,
    were run (whole, or skipped over) by plan/apply while db migrate refused them."""
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "001_a.sql").write_text("CREATE TABLE a (id int);\n")
    (mixed / "002_b.sql").write_text("CREATE TABLE b (id int);\n")
    (mixed / "003_c.sql").write_text("-- migrate:up\nCREATE TABLE c (id int);\n-- migrate:down\nDROP TABLE c;\n")
    flyway = tmp_path / "flyway"
    flyway.mkdir()
    (flyway / "V1__a.sql").write_text("CREATE TABLE fa (id int);\n")
    (flyway / "V2__b.sql").write_text("CREATE TABLE ${tbl} (id int);\n")
    (flyway / "V3__c.sql").write_text("CREATE TABLE fc (id int);\n")
    for directory, held in ((mixed, "001"), (flyway, "1")):
        plan = poststack(database_url, directory, "plan", "--format", "json")
        assert plan.exit_code == 0, plan.output
        steps = json.loads(plan.stdout)["steps"]
        assert not [s for s in steps if s["action"] == "apply_migration"]
        assert any(s["action"] == "manual" and s["version"] == held for s in steps)
        applied = poststack(database_url, directory, "apply", "--auto-approve")
        assert applied.exit_code == 1, applied.output
    assert sql(db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename ~ '^f?[abc]$'") == [(0,)]
