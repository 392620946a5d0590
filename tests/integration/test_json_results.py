"""The JSON result of every command that changes the database (create-schema, backup,
recover, repair, clean, unlock-migrations), produced for real and checked against its
schema: standard output is the JSON alone, warnings go to standard error, and the exit
codes are those of the text format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg2

from reconciler.config import masked_url
from tests.conftest import sql, write
from tests.integration.test_json_output import hold_lock_for_a_dead_run, json_of

UNTRACKED_BACKFILL = "UPDATE accounts SET display_name = lower(display_name);\n"


def versions(data: dict[str, Any], key: str = "outcomes") -> list[tuple[str, str | None]]:
    items = data[key] if key == "outcomes" else data["plan"]["steps"]
    return [(o["action"], o["version"]) for o in items]


def tracked(db) -> list[str]:
    return [v for (v,) in sql(db, "SELECT version FROM schema_migrations ORDER BY version")]


# --- create-schema ------------------------------------------------------------------------


def test_create_schema_then_again_then_forced(cli, db, database_url: str):
    tables = ["schema_migrations", "schema_migrations_audit", "schema_migrations_lock"]
    first = json_of(cli, "db", "create-schema")
    assert (first["operation"], first["ok"], first["tracking_schema"]) == ("create-schema", True, "public")
    assert first["database"] == masked_url(database_url)
    assert first["created"] == tables and first["dropped"] == [] and first["dropped_rows"] == 0
    assert versions(first) == [("create_tracking", None)] and first["failure"] is None
    again = json_of(cli, "db", "create-schema")
    assert again["created"] == [] and again["dropped"] == []
    json_of(cli, "db", "migrate")
    forced = json_of(cli, "db", "create-schema", "--force")
    assert forced["dropped"] == ["schema_migrations", "schema_migrations_lock"] and forced["dropped_rows"] == 5
    assert forced["created"] == ["schema_migrations", "schema_migrations_lock"]
    assert versions(forced) == [("drop_tracking", None), ("create_tracking", None)]
    assert tracked(db) == []


def test_create_schema_text_is_unchanged(cli):
    result = cli("db", "create-schema")
    assert result.exit_code == 0
    assert result.stdout.startswith("✅ Created schema_migrations, schema_migrations_audit, schema_migrations_lock")


# --- backup -------------------------------------------------------------------------------


def test_backup(cli, database_url: str, tmp_path: Path):
    json_of(cli, "db", "migrate")
    out = tmp_path / "dump.sql"
    data = json_of(cli, "db", "backup", "--output", str(out))
    assert (data["operation"], data["ok"], data["database"]) == ("backup", True, masked_url(database_url))
    assert data["path"] == str(out) and data["size_bytes"] == out.stat().st_size > 0
    assert data["tool"]["major"] >= data["server_major"] and Path(data["tool"]["path"]).name == "pg_dump"
    assert "CREATE TABLE public.accounts" in out.read_text()


# --- recover ------------------------------------------------------------------------------


def test_recover_dry_run_then_for_real_then_nothing(cli, db):
    json_of(cli, "db", "migrate")
    sql(db, "DELETE FROM schema_migrations WHERE version = '003'")
    dry = json_of(cli, "db", "recover", "--dry-run")
    assert (dry["operation"], dry["dry_run"], dry["ok"]) == ("recover", True, True)
    assert ("track_migration", "003") in versions(dry, "steps")
    assert [i["type"] for i in dry["plan"]["issues"]] == ["missing_tracking"]
    assert dry["outcomes"] == [] and dry["elapsed_s"] is None and dry["remaining_issues"] is None
    assert "003" not in tracked(db)
    data = json_of(cli, "db", "recover")
    assert (data["dry_run"], data["ok"], data["failure"]) == (False, True, None)
    assert ("track_migration", "003") in versions(data) and data["remaining_issues"] == []
    assert data["plan"]["hash"] == dry["plan"]["hash"]
    assert tracked(db) == ["001", "002", "003", "004", "005"]
    nothing = json_of(cli, "db", "recover")
    assert nothing["ok"] and nothing["outcomes"] == [] and nothing["plan"]["issues"] == []


def test_recover_force_warns_on_stderr_only(cli, db, migrations_dir: Path):
    json_of(cli, "db", "migrate")
    write(migrations_dir, "006_backfill.sql", UNTRACKED_BACKFILL)
    result = cli("db", "recover", "--force", "006", "--format", "json")
    assert result.exit_code == 0, result.output
    assert "⚠️  Including migration 006 without evidence (--force)" in result.stderr
    data = json_of(cli, "db", "migration-status")
    assert data["current_version"] == "006" and data["pending"] == []


# --- repair -------------------------------------------------------------------------------


def test_repair_dry_run_then_for_real(cli, db, migrations_dir: Path):
    json_of(cli, "db", "migrate")
    edited = migrations_dir / "002_add_user_table.sql"
    edited.write_text(edited.read_text() + "\n-- a comment added after it was applied\n")
    dry = json_of(cli, "db", "repair", "--dry-run")
    assert (dry["operation"], dry["dry_run"]) == ("repair", True)
    assert versions(dry, "steps") == [("update_checksum", "002")] and dry["remaining_issues"] is None
    data = json_of(cli, "db", "repair", "--issue-type", "checksum_mismatch")
    assert data["ok"] and versions(data) == [("update_checksum", "002")] and data["remaining_issues"] == []
    assert json_of(cli, "db", "verify-migrations")["ok"]


# --- clean and unlock-migrations ----------------------------------------------------------


def test_clean_previews_without_confirm_and_exits_2(cli, db):
    json_of(cli, "db", "create-schema")
    hold_lock_for_a_dead_run(db)
    result = cli("db", "clean", "--locks", "--format", "json")
    assert result.exit_code == 2 and "Nothing changed: add --confirm to do it." in result.stderr
    preview = json_of(cli, "db", "clean", "--locks", exit_code=2)
    assert (preview["operation"], preview["dry_run"]) == ("clean", True)
    assert versions(preview, "steps") == [("release_lock", None)] and preview["outcomes"] == []
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(True,)]
    data = json_of(cli, "db", "clean", "--locks", "--confirm")
    assert (data["dry_run"], data["ok"]) == (False, True) and versions(data) == [("release_lock", None)]
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]
    nothing = json_of(cli, "db", "clean", "--locks", "--duplicates", "--confirm")
    assert nothing["ok"] and nothing["plan"]["steps"] == [] and nothing["plan"]["nothing_to_do"]


def test_clean_duplicates(cli, db):
    json_of(cli, "db", "migrate")
    sql(
        db,
        "INSERT INTO schema_migrations (version, description, checksum, success) "
        "SELECT version, description, checksum, true FROM schema_migrations WHERE version = '002'",
    )
    data = json_of(cli, "db", "clean", "--duplicates", "--confirm")
    assert data["ok"] and [o["outcome"] for o in data["outcomes"]] == ["ok"] * len(data["outcomes"])
    assert [i["type"] for i in data["plan"]["issues"]] == ["duplicate_version"]
    assert tracked(db) == ["001", "002", "003", "004", "005"]


def test_unlock_migrations(cli, db):
    json_of(cli, "db", "create-schema")
    hold_lock_for_a_dead_run(db)
    data = json_of(cli, "db", "unlock-migrations", "--confirm")
    assert (data["operation"], data["ok"]) == ("unlock", True) and versions(data) == [("release_lock", None)]
    assert data["plan"]["steps"][0]["args"]["holder"].startswith("held by ci-runner-7:4242")
    nothing = json_of(cli, "db", "unlock-migrations", "--confirm")
    assert nothing["ok"] and nothing["outcomes"] == [] and nothing["remaining_issues"] is None


def test_unlock_refusing_a_live_holder_is_a_result_that_is_not_ok(cli, db, database_url: str):
    json_of(cli, "db", "create-schema")
    holder = psycopg2.connect(database_url, application_name="manual-session")
    holder.autocommit = True
    try:
        pid = sql(holder, "SELECT pg_backend_pid()")[0][0]
        sql(
            db,
            "UPDATE schema_migrations_lock SET locked = true, locked_at = now(), locked_by = 'x:1', backend_pid = %s",
            (pid,),
        )
        result = cli("db", "unlock-migrations", "--confirm", "--format", "json")
        assert result.exit_code == 1 and "may still be working" in result.stderr
        data = json_of(cli, "db", "unlock-migrations", "--confirm", exit_code=1)
        assert data["ok"] is False and data["failure"] is None and data["outcomes"] == []
        assert [s["action"] for s in data["plan"]["steps"]] == ["manual"]
        assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(True,)]
    finally:
        holder.close()


def test_the_text_of_the_fix_commands_is_unchanged(cli, db):
    json_of(cli, "db", "create-schema")
    hold_lock_for_a_dead_run(db)
    preview = cli("db", "unlock-migrations")
    assert preview.exit_code == 2 and preview.stdout.rstrip().endswith("Nothing changed: add --confirm to do it.")
    result = cli("db", "unlock-migrations", "--confirm")
    assert result.exit_code == 0 and result.stdout.startswith("✅ Released the migration lock (ci-runner-7:4242")
    assert cli("db", "clean", "--locks", "--confirm").stdout.startswith("✅ Nothing to clean.")
