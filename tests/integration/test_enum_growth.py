"""An enum grows in one migration and the next one uses the new value: plan/apply run the
migrations in one transaction, and PostgreSQL refuses a new enum value's use in the
transaction that added it ("unsafe use of new value"). The step that adds it commits first."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli, sql


def test_apply_commits_an_enum_value_before_a_later_migration_uses_it(tmp_path: Path, database_url: str, db) -> None:  # type: ignore[no-untyped-def]
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "001_status.sql").write_text(
        "CREATE TYPE status AS ENUM ('new');\nCREATE TABLE orders (id int, status status NOT NULL DEFAULT 'new');\n"
    )
    (directory / "002_grow_status.sql").write_text("ALTER TYPE status ADD VALUE 'shipped';\n")
    (directory / "003_backfill.sql").write_text("INSERT INTO orders VALUES (1, 'shipped');\n")
    (directory / "004_more.sql").write_text("CREATE INDEX orders_status ON orders (status);\n")
    args = ("--database-url", database_url, "--migrations-dir", str(directory))

    plan = run_cli("plan", "--format", "json", *args)
    steps = json.loads(plan.stdout)["steps"]
    assert [s.get("commit_after", False) for s in steps if s["action"] == "apply_migration"] == [
        False,
        True,
        False,
        False,
    ]
    text = run_cli("plan", *args).stdout
    assert "-- transaction 1: steps 1-3" in text and "-- transaction 2: steps 4-" in text, text

    applied = run_cli("apply", "--auto-approve", *args)
    assert applied.exit_code == 0, applied.output
    assert sql(db, "SELECT status::text FROM orders") == [("shipped",)]
