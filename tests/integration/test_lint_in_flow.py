"""db lint in the flow people already use: db migrate --dry-run and poststack plan show, per
migration step, what it locks and rewrites (measured in a shadow, sized here); db diagnose
reports a pending migration with a high-severity finding as unsafe_migration.

A HIGH table-rewrite needs a table of a gigabyte; these tests lower the size thresholds in
process instead (``high_from_any_size``), so the same real measurement on a table of 500
rows counts as HIGH.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.remediation.fixes import load_plan
from reconciler.remediation.plan import Plan
from tests.conftest import catalog_snapshot, sql, write
from tests.integration.test_json_output import conforming, json_of

# Rewrites accounts (a type change PostgreSQL cannot do in place), then a brief lock.
WIDEN = (
    "ALTER TABLE accounts ALTER COLUMN display_name TYPE varchar(200);\nALTER TABLE accounts ADD COLUMN note text;\n"
)
ROWS = 500


@pytest.fixture
def pending_rewrite(cli, db, migrations_dir: Path) -> Path:
    """001-005 applied, accounts holding rows, and 006 pending: it rewrites accounts."""
    assert cli("db", "migrate").exit_code == 0
    sql(db, f"INSERT INTO accounts (email, display_name) SELECT g || '@x', 'n' FROM generate_series(1, {ROWS}) g")
    sql(db, "ANALYZE accounts")
    return write(migrations_dir, "006_widen_names.sql", WIDEN)


@pytest.fixture
def high_from_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock that stops readers while a relation is rewritten is HIGH from 2 bytes on."""
    monkeypatch.setattr("reconciler.diagnosis.lint.base.BLOCKS_READS_BYTES", (1, 2))


def _step_block(text: str, head: str) -> list[str]:
    """The lines of the step whose first line contains ``head``, up to the next step."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if head in line)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip()[:1].isdigit()), len(lines))
    return lines[start:end]


# --- db migrate --dry-run ---------------------------------------------------------------------


def test_dry_run_shows_what_each_migration_locks_and_rewrites(cli, db, pending_rewrite):
    before = catalog_snapshot(db)
    result = cli("db", "migrate", "--dry-run")
    assert result.exit_code == 0, result.output
    step = _step_block(result.stdout, "apply 006_widen_names.sql")
    assert (
        step[1] == f"     locks: ACCESS EXCLUSIVE on public.accounts ({ROWS} rows, {step[1].split(', ')[1]}, rewritten"
    )
    assert step[2] == "     lint: 🟢 LOW PS101 line 1 (poststack db lint 006)"
    assert "ALTER TABLE accounts ALTER COLUMN display_name TYPE varchar(200);" in [line.strip() for line in step]
    assert result.stderr == ""  # measured: nothing to say about the evidence
    assert catalog_snapshot(db) == before  # measured in a scratch database, not here
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '006'") == [(0,)]


def test_dry_run_json_has_a_lint_per_migration_step_beside_an_unchanged_plan(cli, pending_rewrite):
    data = json_of(cli, "db", "migrate", "--dry-run")
    lint = data["lint"]
    assert lint["shadow"] == "a scratch database on the target's server" and lint["unavailable"] is None
    (found,) = lint["migrations"]
    assert data["plan"]["steps"][found["step"] - 1]["version"] == "006"
    assert found["version"] == "006" and found["measured"] and found["rewrites"]
    (lock,) = found["locks"]
    assert (lock["relation"], lock["mode"], lock["rewrites"]) == ("public.accounts", "ACCESS EXCLUSIVE", True)
    assert lock["size"]["rows"] == ROWS and lock["size"]["bytes"] > 0
    assert [(f["code"], f["severity"], f["line"]) for f in found["findings"]] == [("PS101", "low", 1)]
    assert "lint" not in data["plan"]
    # The facts are shown beside the plan, never in it: measured or not, it is the same plan.
    unmeasured = json_of(cli, "db", "migrate", "--dry-run", "--no-replay")
    assert unmeasured["plan"] == data["plan"]


def test_dry_run_without_replay_says_so_once_and_measures_nothing(cli, pending_rewrite):
    result = cli("db", "migrate", "--dry-run", "--no-replay")
    assert result.exit_code == 0, result.output
    step = _step_block(result.stdout, "apply 006_widen_names.sql")
    assert step[1:3] == ["     locks: not measured (from the SQL alone)", "     lint: no findings at or above low"]
    assert result.stderr == "ℹ️  Nothing measured (--no-replay): findings come from the SQL alone.\n"
    data = json_of(cli, "db", "migrate", "--dry-run", "--no-replay")
    assert data["lint"]["unavailable"] == "--no-replay" and data["lint"]["shadow"] == "none"
    assert data["lint"]["migrations"][0]["measured"] is False and data["lint"]["migrations"][0]["locks"] == []


def test_dry_run_without_a_shadow_says_why_in_one_line(cli, pending_rewrite, monkeypatch):
    from reconciler.errors import PoststackError

    def no_shadow(*_: object) -> None:
        raise PoststackError("the target's role may not create databases, and no shadow is configured (--shadow-url)")

    monkeypatch.setattr("reconciler.desired.replay.source.choose_shadow", no_shadow)
    result = cli("db", "migrate", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "ℹ️  Nothing measured (no shadow database could be had: the target's role may not create databases, and no "
        "shadow is configured (--shadow-url)): findings come from the SQL alone."
    ]
    assert "locks: not measured (from the SQL alone)" in result.stdout


def test_a_real_run_measures_nothing_and_reports_no_lint(cli, db, pending_rewrite):
    data = json_of(cli, "db", "migrate")
    assert data["lint"] is None and [o["version"] for o in data["outcomes"]] == ["006"]
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '006' AND success") == [(1,)]


def test_nothing_to_run_has_no_lint(cli):
    assert cli("db", "migrate").exit_code == 0
    data = json_of(cli, "db", "migrate", "--dry-run")
    assert data["lint"] is None and data["plan"]["nothing_to_do"] == "Database is up to date"


# --- poststack plan -----------------------------------------------------------------------------


def test_plan_shows_the_locks_and_a_saved_plan_still_applies(cli, db, pending_rewrite, tmp_path):
    saved = tmp_path / "plan.json"
    result = cli("plan", "--out", str(saved))
    assert result.exit_code == 0, result.output
    step = _step_block(result.stdout, "Apply migration 006 [migrate: apply_migration]")
    assert step[1].startswith(f"     locks: ACCESS EXCLUSIVE on public.accounts ({ROWS} rows, ")
    assert step[2] == "     lint: 🟢 LOW PS101 line 1 (poststack db lint 006)"
    # Saved as plan --format json prints it, the lint beside the plan; the plan round-trips.
    shown = json_of(cli, "plan")
    data = json.loads(saved.read_text())
    assert data == shown and data["lint"]["migrations"][0]["version"] == "006"
    plan = load_plan(saved)
    assert Plan.from_json(plan.to_json()) == plan
    assert "lint" not in plan.to_json()
    # The lint is not part of the plan: edited, the plan still loads (same hash) and applies.
    data["lint"] = None
    saved.write_text(json.dumps(data))
    assert load_plan(saved) == plan
    applied = cli("apply", str(saved), "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE version = '006' AND success") == [(1,)]
    assert sql(db, "SELECT data_type FROM information_schema.columns WHERE column_name = 'display_name'") == [
        ("character varying",)
    ]


def test_plan_with_an_unsafe_migration_lists_it_and_still_shows_only_its_step(cli, pending_rewrite, high_from_any_size):
    data = json_of(cli, "plan")
    assert [(i["type"], i["version"]) for i in data["issues"] if i["type"] == "unsafe_migration"] == [
        ("unsafe_migration", "006")
    ]
    # The plan runs it: its step shows the facts and the reviewer decides; no manual step.
    assert [s["version"] for s in data["steps"] if s["action"] == "apply_migration"] == ["006"]
    manual = [s["args"]["issue"]["type"] for s in data["steps"] if s["action"] == "manual"]
    assert "unsafe_migration" not in manual
    assert data["lint"]["migrations"][0]["findings"][0]["severity"] == "high"
    text = cli("plan").stdout
    assert "🟠 UNSAFE_MIGRATION: Migration 006 rewrites public.accounts" in text
    assert "lint: 🟠 HIGH PS101 line 1 (poststack db lint 006)" in text
    # Asked for alone, nothing runs it: a person rewrites the file.
    only = json_of(cli, "plan", "--issue-type", "unsafe_migration")
    (manual,) = only["steps"]
    assert manual["action"] == "manual" and manual["version"] == "006"
    assert "poststack db lint 006" in manual["reason"]


# --- db diagnose ---------------------------------------------------------------------------------


def test_diagnose_reports_a_high_finding_as_unsafe_migration(cli, pending_rewrite, high_from_any_size):
    data = json_of(cli, "db", "diagnose", "--type", "unsafe_migration", exit_code=1)
    (issue,) = data["issues"]
    assert (issue["type"], issue["severity"], issue["version"], issue["auto_fixable"]) == (
        "unsafe_migration",
        "high",
        "006",
        False,
    )
    assert issue["message"].startswith(f"Migration 006 rewrites public.accounts ({ROWS} rows, ")
    assert issue["message"].endswith("(PS101, line 1)")
    (finding,) = issue["details"]["findings"]
    assert {k: finding[k] for k in ("code", "severity", "line", "relation", "lock", "rewrites")} == {
        "code": "PS101",
        "severity": "high",
        "line": 1,
        "relation": "public.accounts",
        "lock": "ACCESS EXCLUSIVE",
        "rewrites": True,
    }
    assert finding["size"]["rows"] == ROWS and issue["details"]["measured"] is True
    assert issue["suggested_fix"].startswith("Rewrite it: add a column of the new type")
    assert issue["suggested_fix"].endswith("Then check it with: poststack db lint 006")
    assert data["database_state"]["lint"]["measured"] == ["006"]
    text = cli("db", "diagnose")
    assert text.exit_code == 1
    assert "🟠 UNSAFE_MIGRATION: Migration 006 rewrites public.accounts" in text.stdout
    assert "Auto-fixable: No" in text.stdout


def test_diagnose_does_not_report_a_low_finding(cli, pending_rewrite):
    data = json_of(cli, "db", "diagnose", "--type", "unsafe_migration")
    assert data["overall_status"] == "pass"
    assert data["database_state"]["lint"] == {
        "versions": ["006"],
        "measured": ["006"],
        "shadow": "a scratch database on the target's server",
        "unavailable": None,
    }


def test_diagnose_without_replay_lints_from_the_sql_alone(cli, pending_rewrite, high_from_any_size):
    # A rewrite is only known by measuring it: without replay there is nothing to report,
    # and the report says the lint was from the SQL alone.
    data = json_of(cli, "db", "diagnose", "--no-replay", "--type", "unsafe_migration")
    assert data["issues"] == []
    assert data["database_state"]["lint"]["measured"] == [] and data["database_state"]["lint"]["unavailable"] == (
        "--no-replay"
    )


def test_diagnose_lints_nothing_when_nothing_is_pending_or_the_type_is_not_asked(cli, pending_rewrite):
    assert "lint" not in json_of(cli, "db", "diagnose", "--type", "stuck_lock")["database_state"]
    assert cli("db", "migrate").exit_code == 0
    assert "lint" not in json_of(cli, "db", "diagnose", "--type", "unsafe_migration")["database_state"]


def test_a_migration_the_catalog_shows_applied_is_not_unsafe(cli, db, pending_rewrite, high_from_any_size):
    # Run by hand, never tracked: recover tracks it, nothing runs it again.
    sql(db, WIDEN)
    data = json_of(cli, "db", "diagnose", exit_code=1)
    assert ("missing_tracking", "006") in {(i["type"], i["version"]) for i in data["issues"]}
    assert "unsafe_migration" not in {i["type"] for i in data["issues"]}


def test_a_file_lint_refuses_is_said_and_diagnose_goes_on(cli, pending_rewrite, migrations_dir):
    write(migrations_dir, "006_widen_names.sql", "-- poststack:lint-ignore PS101\n" + WIDEN)
    result = cli("db", "diagnose", "--type", "unsafe_migration", "--format", "json")
    conforming(result, "db diagnose", 0)
    assert "⚠️  Not linted: " in result.stderr and "says no reason" in result.stderr


# --- the real path: a required column added to a table with rows (PS207, static) ----------------

REQUIRED = "ALTER TABLE accounts ADD COLUMN plan_id int NOT NULL;\n"


@pytest.mark.parametrize("replay", [(), ("--no-replay",)], ids=["measured", "no-replay"])
def test_a_required_column_on_a_table_with_rows_is_unsafe_with_or_without_replay(cli, db, migrations_dir, replay):
    assert cli("db", "migrate").exit_code == 0
    sql(db, "INSERT INTO accounts (email, display_name) VALUES ('a@x', 'a')")
    sql(db, "ANALYZE accounts")  # rows are counted from the statistics, as on a live database
    write(migrations_dir, "006_require_plan.sql", REQUIRED)
    # A rule that reads the SQL and the live row count: --no-replay leaves it running.
    data = json_of(cli, "db", "diagnose", "--type", "unsafe_migration", *replay, exit_code=1)
    (issue,) = data["issues"]
    assert issue["version"] == "006" and issue["message"].endswith("(PS207, line 1)")
    (finding,) = [f for f in issue["details"]["findings"] if f["code"] == "PS207"]
    assert (finding["severity"], finding["relation"], finding["size"]["rows"]) == ("high", "public.accounts", 1)
    assert issue["details"]["measured"] is (not replay)
    dry = cli("db", "migrate", "--dry-run", *replay)
    assert "lint: 🟠 HIGH PS207 line 1 (poststack db lint 006)" in dry.stdout
    # What the dry run said: the run fails here.
    assert cli("db", "migrate").exit_code == 1


def test_a_required_column_on_an_empty_table_is_not_unsafe(cli, migrations_dir):
    assert cli("db", "migrate").exit_code == 0
    write(migrations_dir, "006_require_plan.sql", REQUIRED)
    assert json_of(cli, "db", "diagnose", "--type", "unsafe_migration")["issues"] == []
    assert cli("db", "migrate").exit_code == 0


def test_diagnose_lints_only_what_a_run_would_apply_not_what_the_catalog_shows_applied(
    cli, db, pending_rewrite, high_from_any_size
):
    """Tracking lost (Scenario 1): 001-005 are applied but untracked, 006 is really pending.
    Only 006 is linted and measured: recover tracks the others, nothing runs them again."""
    sql(db, "DROP TABLE schema_migrations")
    data = json_of(cli, "db", "diagnose", exit_code=1)
    assert data["database_state"]["lint"]["versions"] == ["006"]
    assert data["database_state"]["lint"]["measured"] == ["006"]
    unsafe = [i["version"] for i in data["issues"] if i["type"] == "unsafe_migration"]
    assert unsafe == ["006"]
    assert {i["version"] for i in data["issues"] if i["type"] == "missing_tracking"} >= {"001", "002"}


def test_lint_leaves_out_what_the_catalog_shows_applied_when_tracking_is_lost(cli, db, pending_rewrite):
    """db lint lints what db migrate would run: after a lost tracking table, not the
    migrations whose objects are all there (recover tracks them), and it says so."""
    sql(db, "DROP TABLE schema_migrations")
    data = json_of(cli, "db", "lint", "--severity", "high")
    assert data["versions"] == ["006"]
    assert set(data["left_out"]) >= {"001", "002"} and "006" not in data["left_out"]
    text = cli("db", "lint", "--severity", "high")
    assert text.exit_code == 0, text.output
    assert text.stdout.startswith("⚠️  No tracking table here: every migration counts as pending.")
    assert "untracked migration(s) the catalog shows applied" in text.stdout
    named = json_of(cli, "db", "lint", "002", "--severity", "high")
    assert named["versions"] == ["002"] and named["left_out"] == []  # named: linted as asked
