"""Choosing where the tracking tables live (issue 12, part 2): with a table prefix they are
<prefix>migrations, <prefix>migrations_lock and <prefix>migrations_audit, and every command
uses those names, so another tool's schema_migrations beside them is nobody's business:
not refused, not touched, and a migration may drop it. Two prefixes in one schema are two
independent histories."""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest

from reconciler.config import TrackingLocation
from reconciler.observed.locking import advisory_key
from tests.conftest import catalog_snapshot, run_cli, sql, write

PREFIX = ("--table-prefix", "poststack_")
# dbmate's table: https://github.com/amacneil/dbmate pkg/driver/postgres
DBMATE = "CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY)"


def tracking_tables(db) -> list[str]:
    """Every table, sequence and index in public whose name says it tracks migrations."""
    rows = sql(
        db, "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relname ~ 'migrations'"
    )
    return sorted(r[0] for r in rows)


POSTSTACK_TABLES = [
    "poststack_migrations",
    "poststack_migrations_audit",
    "poststack_migrations_audit_id_seq",
    "poststack_migrations_audit_pkey",
    "poststack_migrations_id_seq",
    "poststack_migrations_lock",
    "poststack_migrations_lock_pkey",
    "poststack_migrations_pkey",
    "poststack_migrations_version_idx",
]


def test_every_command_uses_the_prefixed_tables(cli, db, migrations_dir: Path):
    migrated = cli("db", "migrate", "--target", "004", *PREFIX)
    assert migrated.exit_code == 0, migrated.output
    assert tracking_tables(db) == POSTSTACK_TABLES  # and no schema_migrations*
    assert sql(db, "SELECT count(*) FROM poststack_migrations WHERE success") == [(4,)]

    status = cli("db", "migration-status", *PREFIX)
    assert status.exit_code == 0, status.output
    assert "Current version: 004" in status.stdout
    # Without the prefix, these tables are not poststack's: nothing is tracked there.
    assert "Current version: 004" not in cli("db", "migration-status").stdout
    assert cli("db", "diagnose", *PREFIX).exit_code == 0

    # 005 run by hand: diagnose sees it untracked, recover records it in poststack_migrations.
    sql(db, (migrations_dir / "005_index_users_by_created.sql").read_text())
    untracked = cli("db", "diagnose", *PREFIX)
    assert untracked.exit_code == 1 and "Version: 005" in untracked.stdout
    recovered = cli("db", "recover", *PREFIX)
    assert recovered.exit_code == 0, recovered.output
    assert sql(db, "SELECT version FROM poststack_migrations WHERE execution_ms IS NULL") == [("005",)]

    rolled_back = cli("db", "rollback", "003", *PREFIX)
    assert rolled_back.exit_code == 0, rolled_back.output
    assert sql(db, "SELECT max(version) FROM poststack_migrations") == [("003",)]

    sql(
        db,
        "UPDATE poststack_migrations_lock SET locked = true, locked_at = now() - interval '1 hour', "
        "locked_by = 'deploy-3:777', backend_pid = 999999, application_name = 'poststack'",
    )
    stuck = cli("db", "diagnose", *PREFIX)
    assert stuck.exit_code == 1 and "poststack db clean --locks --confirm" in stuck.stdout
    cleaned = cli("db", "clean", "--locks", "--confirm", *PREFIX)
    assert cleaned.exit_code == 0, cleaned.output
    assert sql(db, "SELECT locked FROM poststack_migrations_lock") == [(False,)]

    assert cli("db", "migrate", *PREFIX).exit_code == 0
    assert cli("db", "diagnose", *PREFIX).exit_code == 0
    audited = sql(db, "SELECT DISTINCT operation FROM poststack_migrations_audit ORDER BY 1")
    assert audited == [("clean",), ("create-schema",), ("migrate",), ("recover",), ("rollback",)]

    forced = cli("db", "create-schema", "--force", *PREFIX)
    assert forced.exit_code == 0, forced.output
    assert "Dropped poststack_migrations, poststack_migrations_lock" in forced.stdout
    assert sql(db, "SELECT count(*) FROM poststack_migrations") == [(0,)]
    assert tracking_tables(db) == POSTSTACK_TABLES


def test_another_tools_schema_migrations_is_left_alone_with_a_prefix(cli, db):
    sql(db, DBMATE + "; INSERT INTO schema_migrations VALUES ('20240101000000'), ('20240102000000')")
    before = catalog_snapshot(db)

    refused = cli("db", "migrate")
    assert refused.exit_code == 3, refused.output
    line = refused.stderr.strip()
    assert line.startswith("❌ public.schema_migrations belongs to another tool (it looks like dbmate's")
    assert "--schema poststack or --table-prefix poststack_ (" in line and len(line.splitlines()) == 1
    assert catalog_snapshot(db) == before

    for command in (("db", "migrate"), ("db", "migration-status"), ("db", "diagnose"), ("db", "validate")):
        result = cli(*command, *PREFIX)
        assert result.exit_code == 0, (command, result.output)
    assert sql(db, "SELECT version FROM schema_migrations ORDER BY 1") == [("20240101000000",), ("20240102000000",)]
    dbmate = [row for row in catalog_snapshot(db) if "schema_migrations" in row[2]]
    assert dbmate == [row for row in before if "schema_migrations" in row[2]]


def test_a_prefix_already_taken_by_another_tool_is_refused_with_other_names(cli, db):
    sql(db, "CREATE TABLE poststack_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL)")
    refused = cli("db", "migrate", *PREFIX)
    assert refused.exit_code == 3, refused.output
    assert "public.poststack_migrations belongs to another tool (it looks like golang-migrate's" in refused.stderr
    assert "--schema poststack or --table-prefix poststack_tracking_ (" in refused.stderr


def _history_that_drops_the_old_tools_table(migrations_dir: Path) -> Path:
    write(migrations_dir, "006_old_tool.sql", "CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY);\n")
    return write(migrations_dir, "007_drop_old_tool.sql", "-- dbmate is gone\nDROP TABLE schema_migrations;\n")


def test_a_migration_may_drop_schema_migrations_when_it_is_not_poststacks(cli, db, migrations_dir: Path):
    path = _history_that_drops_the_old_tools_table(migrations_dir)
    refused = cli("db", "migrate")
    assert refused.exit_code == 1
    assert f"{path}:2: drops poststack's tracking table public.schema_migrations" in refused.stderr
    assert "--table-prefix (e.g. --table-prefix poststack_)" in refused.stderr
    assert sql(db, "SELECT to_regclass('public.accounts')") == [(None,)]

    result = cli("db", "migrate", *PREFIX)
    assert result.exit_code == 0, result.output
    assert sql(db, "SELECT count(*) FROM poststack_migrations WHERE success") == [(7,)]
    assert sql(db, "SELECT to_regclass('public.schema_migrations')") == [(None,)]  # the old tool's, dropped
    assert cli("db", "validate", *PREFIX).exit_code == 0


def test_a_migration_dropping_the_prefixed_table_is_refused(cli, db, migrations_dir: Path):
    path = write(migrations_dir, "006_drop.sql", "DROP TABLE IF EXISTS poststack_migrations_lock;\n")
    refused = cli("db", "migrate", *PREFIX)
    assert refused.exit_code == 1
    assert f"{path}:1: drops poststack's lock table public.poststack_migrations_lock" in refused.stderr
    assert cli("db", "migrate").exit_code == 0  # under the default names, that table is nobody's


def test_two_prefixes_in_one_schema_are_two_histories(db, database_url: str, tmp_path: Path):
    """Two applications sharing a database, each with its own migrations and its own tables."""
    apps = {}
    for app in ("first", "second"):
        directory = tmp_path / app
        directory.mkdir()
        for n in (1, 2, 3):
            write(directory, f"00{n}_{app}_{n}.sql", f"CREATE TABLE {app}_{n} (id int);\n")
            write(directory, f"00{n}_{app}_{n}.rollback.sql", f"DROP TABLE {app}_{n};\n")

        def run(*args: str, app: str = app, directory: Path = directory):
            flags = ("--database-url", database_url, "--migrations-dir", str(directory), "--table-prefix", f"{app}_")
            return run_cli(*args, *flags)

        apps[app] = run
    first, second = apps["first"], apps["second"]
    assert first("db", "migrate", "--target", "002").exit_code == 0
    assert second("db", "migrate").exit_code == 0
    assert sql(db, "SELECT max(version) FROM first_migrations") == [("002",)]
    assert sql(db, "SELECT max(version) FROM second_migrations") == [("003",)]
    assert "Current version: 002" in first("db", "migration-status").stdout
    assert "Current version: 003" in second("db", "migration-status").stdout
    assert first("db", "diagnose").exit_code == 0 and second("db", "diagnose").exit_code == 0

    # Each has its own lock: a run holding first_'s does not hold up second_'s.
    holder = psycopg2.connect(database_url)
    holder.autocommit = True
    try:
        sql(holder, "SELECT pg_advisory_lock(%s)", (advisory_key(TrackingLocation("public", "first_")),))
        blocked = first("db", "migrate", "--lock-timeout", "0")
        assert blocked.exit_code == 1 and "migration system is locked" in blocked.stderr
        rolled_back = second("db", "rollback", "002", "--lock-timeout", "0")
        assert rolled_back.exit_code == 0, rolled_back.output
    finally:
        holder.close()
    assert sql(db, "SELECT max(version) FROM second_migrations") == [("002",)]
    assert sql(db, "SELECT max(version) FROM first_migrations") == [("002",)]
    assert first("db", "migrate").exit_code == 0
    assert sql(db, "SELECT to_regclass('first_3') IS NOT NULL, to_regclass('second_3') IS NULL") == [(True, True)]


def test_the_default_prefix_keeps_the_lock_key_of_older_versions():
    """A run of a poststack from before prefixes could be set still excludes a run of this one."""
    import hashlib

    old = int.from_bytes(hashlib.sha256(b"poststack:public").digest()[:8], "big", signed=True)
    assert advisory_key(TrackingLocation()) == old
    assert advisory_key(TrackingLocation("public", "poststack_")) != old


def test_a_saved_plan_is_applied_only_with_its_prefix(cli, db, tmp_path: Path):
    assert cli("db", "migrate", "--target", "004", *PREFIX).exit_code == 0
    sql(db, "UPDATE poststack_migrations_lock SET locked = true, locked_by = 'deploy:1', backend_pid = 999999")
    plan = tmp_path / "plan.json"
    assert cli("plan", "--out", str(plan), *PREFIX).exit_code == 0
    refused = cli("apply", str(plan), "--auto-approve")
    assert refused.exit_code == 2, refused.output
    assert "the plan is for the tracking tables poststack_migrations*, not schema_migrations*" in refused.stderr
    assert "--table-prefix poststack_" in refused.stderr
    applied = cli("apply", str(plan), "--auto-approve", *PREFIX)
    assert applied.exit_code == 0, applied.output
    assert sql(db, "SELECT locked FROM poststack_migrations_lock") == [(False,)]


@pytest.mark.parametrize("where", ["env", "poststack.toml"])
def test_the_prefix_from_the_environment_or_the_project_file(
    where: str, database_url: str, migrations_dir: Path, db, tmp_path: Path, monkeypatch
):
    common = ("--database-url", database_url, "--migrations-dir", str(migrations_dir))
    env: dict[str, str | None] = {}
    if where == "env":
        env["POSTSTACK_TABLE_PREFIX"] = "from_env_"
        prefix = "from_env_"
    else:
        project = tmp_path / "project"
        project.mkdir()
        (project / "poststack.toml").write_text('table_prefix = "from_toml_"\n')
        monkeypatch.chdir(project)
        prefix = "from_toml_"
    result = run_cli("db", "migrate", *common, env=env)
    assert result.exit_code == 0, result.output
    assert sql(db, f"SELECT count(*) FROM {prefix}migrations WHERE success") == [(5,)]
    assert sql(db, "SELECT to_regclass('public.schema_migrations')") == [(None,)]
    # The flag wins over both.
    flagged = run_cli("db", "migration-status", *common, "--table-prefix", "other_", env=env)
    assert "Current version: none" in flagged.stdout and "no tracking tables yet in schema public" in flagged.stdout
