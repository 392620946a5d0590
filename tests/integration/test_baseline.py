"""db baseline VERSION on a real server: a legacy database declared applied up to a version,
after poststack shows what the evidence says of each migration; then db migrate runs what
comes after (Flyway's baseline-then-migrate)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from reconciler.interface import cli as cli_module
from tests.conftest import Result, catalog_snapshot, run_cli, sql, write
from tests.integration.test_json_output import conforming, hold_lock_for_a_dead_run

# A legacy history: 001 made the table, 002 and 003 only changed data (so nothing in the
# catalog tells whether they ran), 004 changes data again and 005 adds a column.
LEGACY = {
    "001_customers.sql": "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);\n",
    "002_seed.sql": "INSERT INTO customers VALUES (1, 'ada'), (2, 'grace');\n",
    "003_capitalize.sql": "UPDATE customers SET name = initcap(name);\n",
    "004_mark.sql": "UPDATE customers SET name = name || '!';\n",
    "005_email.sql": "ALTER TABLE customers ADD COLUMN email text;\n",
}


def _project(tmp_path: Path, url: str, files: dict[str, str]) -> tuple[Path, Callable[..., Result]]:
    directory = tmp_path / "migrations"
    directory.mkdir()
    for name, body in files.items():
        write(directory, name, body)

    def cli(*args: str) -> Result:
        return run_cli(*args, "--database-url", url, "--migrations-dir", str(directory))

    return directory, cli


def _by_hand(db, directory: Path, *names: str) -> None:
    """What a legacy deploy did: the files run with psql, nothing tracked."""
    for name in names:
        sql(db, (directory / name).read_text())


def _tracking_exists(db) -> bool:
    return sql(db, "SELECT to_regclass('public.schema_migrations') IS NOT NULL")[0][0]


def _evidence(data: dict) -> dict[str, tuple[str, str | None]]:
    return {i["version"]: (i["decision"], i["evidence"]) for i in data["items"]}


def test_a_data_only_history_is_baselined_then_migrate_runs_the_rest(database_url: str, db, tmp_path: Path):
    directory, cli = _project(tmp_path, database_url, LEGACY)
    _by_hand(db, directory, "001_customers.sql", "002_seed.sql", "003_capitalize.sql")

    dry = cli("db", "baseline", "003", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "Baseline at 003: what the catalog and the history replayed in a shadow say" in dry.stdout
    assert "✅ 001 customers: record as applied; confirmed (replay)" in dry.stdout
    assert "❔ 002 seed: record as applied; undetermined" in dry.stdout
    assert "❔ 003 capitalize: record as applied; undetermined" in dry.stdout
    assert "⏳ 004 mark: stays pending" in dry.stdout and "⏳ 005 email: stays pending" in dry.stdout
    # What it would record, statement by statement, and nothing recorded.
    assert 'INSERT INTO "public"."schema_migrations"' in dry.stdout and "'003', 'capitalize'" in dry.stdout
    assert dry.stdout.rstrip().endswith("Dry run: nothing was recorded.")
    assert not _tracking_exists(db)

    # Parsed SQL only: the catalog still shows 001; the data migrations stay undetermined.
    parsed = json.loads(cli("db", "baseline", "003", "--dry-run", "--no-replay", "--format", "json").stdout)
    assert parsed["replayed"] is False
    assert _evidence(parsed)["001"] == ("record", "confirmed") and parsed["items"][0]["basis"] == "catalog"
    assert _evidence(parsed)["002"] == ("record", "undetermined")

    # No terminal to ask on: the usual approval rule (as apply and import): --auto-approve.
    unapproved = cli("db", "baseline", "003")
    assert unapproved.exit_code == 2 and "pass --auto-approve" in unapproved.stderr
    assert not _tracking_exists(db)

    done = cli("db", "baseline", "003", "--auto-approve")
    assert done.exit_code == 0, done.output
    assert "✅ Baselined at 003: recorded 001, 002, 003 as applied without running them" in done.stdout
    assert "Still pending: 004, 005: poststack db migrate runs them" in done.stdout
    # Recorded, not run: no execution time, as db recover records; the audit says baseline.
    assert sql(db, "SELECT version, success, execution_ms FROM schema_migrations ORDER BY id") == [
        ("001", True, None),
        ("002", True, None),
        ("003", True, None),
    ]
    audit = sql(
        db,
        "SELECT operation, action, version, outcome, actor = current_user, detail FROM schema_migrations_audit "
        "WHERE action = 'baseline_migration' ORDER BY id",
    )
    assert [row[:5] for row in audit] == [
        ("baseline", "baseline_migration", v, "ok", True) for v in ("001", "002", "003")
    ]
    assert audit[0][5].startswith("baseline at 003: record migration 001 as applied without running it")
    assert "evidence: confirmed (replay)" in audit[0][5]
    assert "evidence: undetermined" in audit[1][5]
    assert sql(db, "SELECT count(*) FROM customers WHERE name = 'Ada'") == [(1,)]  # nothing ran

    report = json.loads(cli("db", "diagnose", "--format", "json").stdout)
    about = {(i["type"], i["version"]) for i in report["issues"]}
    for version in ("001", "002", "003"):
        assert ("missing_tracking", version) not in about and ("undetermined", version) not in about, about

    # The baseline vouches for what follows: 004 (data only) runs, as after a poststack run.
    migrated = cli("db", "migrate")
    assert migrated.exit_code == 0, migrated.output
    assert "Applied 2 migration(s): 004, 005" in migrated.stdout
    assert sql(db, "SELECT name FROM customers ORDER BY id") == [("Ada!",), ("Grace!",)]
    status = json.loads(cli("db", "migration-status", "--format", "json").stdout)
    assert status["current_version"] == "005" and status["pending"] == []


def test_a_contradicted_migration_needs_confirm(database_url: str, db, tmp_path: Path):
    files = {
        "001_customers.sql": LEGACY["001_customers.sql"],
        "002_orders.sql": "CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers (id));\n",
        "003_seed.sql": "INSERT INTO customers VALUES (1, 'ada');\n",
    }
    directory, cli = _project(tmp_path, database_url, files)
    _by_hand(db, directory, "001_customers.sql", "003_seed.sql")  # 002 never ran
    before = catalog_snapshot(db)

    for args in ((), ("--auto-approve",)):
        refused = cli("db", "baseline", "003", *args)
        assert refused.exit_code == 2, refused.output
        assert "❌ 002 orders: record as applied; contradicted (replay)" in refused.stdout
        assert refused.stderr.splitlines()[0] == (
            "❌ not recorded: the evidence says migration(s) 002 are not applied; "
            "pass --confirm to record them as applied anyway"
        )
        assert catalog_snapshot(db) == before  # no tracking table made, nothing recorded

    refused_json = cli("db", "baseline", "003", "--format", "json")
    assert refused_json.exit_code == 2 and refused_json.stdout == ""

    confirmed = cli("db", "baseline", "003", "--confirm")
    assert confirmed.exit_code == 0, confirmed.output
    assert "⚠️  Recorded against the evidence (--confirm): 002" in confirmed.stdout
    assert sql(db, "SELECT version FROM schema_migrations ORDER BY id") == [("001",), ("002",), ("003",)]
    # Declared applied, and diagnose says what of it is missing: nothing is hidden.
    report = json.loads(cli("db", "diagnose", "--format", "json").stdout)
    assert ("missing_objects", "002") in {(i["type"], i["version"]) for i in report["issues"]}


def test_tracked_rows_are_left_alone_and_a_baseline_below_them_does_nothing(cli, db, migrations_dir: Path):
    assert cli("db", "migrate", "--target", "002").exit_code == 0
    rows = sql(db, "SELECT id, version, applied_at, execution_ms FROM schema_migrations ORDER BY id")
    sql(db, (migrations_dir / "003_create_billing_schema.sql").read_text())  # 003 applied by hand

    nothing = cli("db", "baseline", "002")
    assert nothing.exit_code == 0, nothing.output
    assert "✅ Nothing to do: every migration up to 002 is already tracked as applied (tracking is at 002)" in (
        nothing.stdout
    )

    data = conforming(cli("db", "baseline", "003", "--auto-approve", "--format", "json"), "db baseline")
    assert (data["operation"], data["version"], data["ok"], data["dry_run"]) == ("baseline", "003", True, False)
    assert _evidence(data) == {
        "001": ("tracked", None),
        "002": ("tracked", None),
        "003": ("record", "confirmed"),
        "004": ("pending", "contradicted"),
        "005": ("pending", "contradicted"),
    }
    assert [(o["action"], o["version"]) for o in data["outcomes"]] == [("baseline_migration", "003")]
    assert data["remaining_issues"] == []
    after = sql(db, "SELECT id, version, applied_at, execution_ms FROM schema_migrations ORDER BY id")
    assert after[:2] == rows and [r[1] for r in after] == ["001", "002", "003"]
    assert after[2][3] is None  # recorded, not run

    again = conforming(cli("db", "baseline", "003", "--format", "json"), "db baseline")
    assert again["nothing_to_do"].startswith("Nothing to do") and again["outcomes"] == []
    assert cli("db", "migrate").exit_code == 0
    assert [v for (v,) in sql(db, "SELECT version FROM schema_migrations ORDER BY id")] == [
        "001",
        "002",
        "003",
        "004",
        "005",
    ]


def test_dry_run_json_and_a_saved_plan_that_apply_runs(cli, db, migrations_dir: Path, tmp_path: Path):
    for name in ("001_create_accounts.sql", "002_add_user_table.sql"):
        sql(db, (migrations_dir / name).read_text())
    dry = conforming(cli("db", "baseline", "002", "--dry-run", "--format", "json"), "db baseline")
    assert dry["dry_run"] is True and dry["outcomes"] == [] and dry["remaining_issues"] is None
    steps = [(s["action"], s["version"]) for s in dry["plan"]["steps"]]
    assert steps == [("create_tracking", None), ("baseline_migration", "001"), ("baseline_migration", "002")]
    assert not _tracking_exists(db)

    saved = tmp_path / "baseline.json"
    out = cli("db", "baseline", "002", "--out", str(saved))
    assert out.exit_code == 0, out.output
    assert f"run it with: poststack apply {saved}" in out.stderr and not _tracking_exists(db)
    applied = cli("apply", str(saved))
    assert applied.exit_code == 0, applied.output
    assert sql(db, "SELECT version FROM schema_migrations ORDER BY id") == [("001",), ("002",)]
    assert sql(db, "SELECT DISTINCT operation FROM schema_migrations_audit WHERE action = 'baseline_migration'") == [
        ("baseline",)
    ]


def test_bad_versions_and_a_held_lock_change_nothing(cli, db):
    unknown = cli("db", "baseline", "009")
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("❌ no migration 009 in ") and "did you mean '005'?" in unknown.stderr
    not_a_version = cli("db", "baseline", "latest")
    assert not_a_version.exit_code == 2 and "version 'latest' is not a version" in not_a_version.stderr

    assert cli("db", "create-schema").exit_code == 0
    hold_lock_for_a_dead_run(db)
    before = catalog_snapshot(db)
    locked = cli("db", "baseline", "005", "--confirm")
    assert locked.exit_code == 1, locked.output
    assert "locked" in locked.stderr and "ci-runner-7:4242" in locked.stderr
    assert catalog_snapshot(db) == before


def test_flyway_versions_repeatables_and_a_failed_attempt(database_url: str, db, tmp_path: Path):
    """Flyway's layout: versions as Flyway orders them (1.1 before 1.10), repeatables left
    for migrate (they have no version to baseline at), and a failed attempt of a baselined
    migration replaced by the row that says it is applied."""
    files = {
        "V1__customers.sql": LEGACY["001_customers.sql"],
        "V1.1__seed.sql": LEGACY["002_seed.sql"],
        "V1.10__mark.sql": LEGACY["004_mark.sql"],
        "R__customer_names.sql": "CREATE OR REPLACE VIEW customer_names AS SELECT name FROM customers;\n",
    }
    directory, cli = _project(tmp_path, database_url, files)
    _by_hand(db, directory, "V1__customers.sql", "V1.1__seed.sql")
    assert cli("db", "create-schema").exit_code == 0
    sql(
        db,
        "INSERT INTO schema_migrations (version, description, checksum, execution_ms, success, error, transactional) "
        "VALUES ('1.1', 'seed', 'x', 3, false, 'V1.1__seed.sql:1: duplicate key value', true)",
    )

    data = conforming(cli("db", "baseline", "1.1", "--auto-approve", "--format", "json"), "db baseline")
    assert [(i["version"], i["decision"]) for i in data["items"]] == [
        ("1", "record"),
        ("1.1", "record"),
        ("1.10", "pending"),
    ]
    seed = data["items"][1]
    assert "its failed attempt (V1.1__seed.sql:1: duplicate key value) is replaced" in seed["reason"]
    assert sql(db, "SELECT version, success FROM schema_migrations ORDER BY id") == [("1", True), ("1.1", True)]

    assert cli("db", "migrate").exit_code == 0
    assert sql(db, "SELECT name FROM customers ORDER BY id") == [("ada!",), ("grace!",)]
    assert sql(db, "SELECT count(*) FROM customer_names") == [(2,)]


class _Terminal:
    """Standard input as a person's terminal: whatever the runner feeds, but a TTY."""

    def __getattr__(self, name: str) -> object:
        return getattr(sys.stdin, name)

    def isatty(self) -> bool:
        return True


class _SysAtATerminal:
    stdin = _Terminal()

    def __getattr__(self, name: str) -> object:
        return getattr(sys, name)


def test_at_a_terminal_it_shows_the_evidence_then_asks(database_url: str, db, tmp_path: Path, monkeypatch):
    directory, _ = _project(tmp_path, database_url, LEGACY)
    _by_hand(db, directory, "001_customers.sql", "002_seed.sql")
    monkeypatch.setattr(cli_module, "sys", _SysAtATerminal())
    args = ["db", "baseline", "002", "--database-url", database_url, "--migrations-dir", str(directory)]

    declined = CliRunner().invoke(cli_module.app, args, input="n\n")
    assert declined.exit_code == 2, declined.output
    assert "❔ 002 seed: record as applied" in declined.stdout  # the evidence, then the question (on stderr)
    assert "Apply this plan?" in declined.stderr and "not approved: nothing was applied" in declined.stderr
    assert not _tracking_exists(db)

    accepted = CliRunner().invoke(cli_module.app, args, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "✅ Baselined at 002: recorded 001, 002" in accepted.stdout
    assert sql(db, "SELECT version FROM schema_migrations ORDER BY id") == [("001",), ("002",)]


def test_a_migration_after_the_baseline_that_shows_applied_is_pointed_out(cli, db, migrations_dir: Path):
    for name in ("001_create_accounts.sql", "002_add_user_table.sql", "003_create_billing_schema.sql"):
        sql(db, (migrations_dir / name).read_text())
    result = cli("db", "baseline", "002", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert "⏳ 003 create_billing_schema: stays pending; the evidence says applied (replay)" in result.stdout
    assert (
        "⚠️  Migration 003 is after the baseline but the evidence says it is applied: it stays pending, "
        "and db migrate holds it until poststack db recover tracks it." in result.stdout
    )
    held = cli("db", "migrate")
    assert held.exit_code == 1 and "Migration 003 appears to be applied already" in held.stderr
    assert cli("db", "recover").exit_code == 0
    assert cli("db", "migrate").exit_code == 0
    assert [v for (v,) in sql(db, "SELECT version FROM schema_migrations ORDER BY version")] == [
        "001",
        "002",
        "003",
        "004",
        "005",
    ]
