"""The checks are pure: desired and observed state in, issues out. Table-driven, no database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.config import DEFAULT_TRACKING
from reconciler.db import ServerInfo
from reconciler.desired.effects import ObjectRef
from reconciler.diagnosis.checks import Facts, run_checks
from reconciler.diagnosis.issues import IssueType, Severity
from reconciler.diagnosis.lint.base import Hit, LintSeverity
from reconciler.diagnosis.lint.engine import Finding, LintFindings
from reconciler.diagnosis.linting import Linted
from reconciler.observed.catalog import CatalogSnapshot
from reconciler.observed.sizes import RelationSize
from reconciler.observed.state import ObservedState, read_desired
from reconciler.observed.tracking import LockState, ObservedTracking, TrackingRow

NOW = datetime(2026, 11, 24, tzinfo=UTC)
FILES = {
    "001_accounts.sql": "CREATE TABLE accounts (id int);",
    "002_users.sql": "CREATE TABLE users (id int); CREATE INDEX users_id ON users (id);",
    "003_backfill.sql": "UPDATE accounts SET id = id;",
    "004_billing.sql": "CREATE SCHEMA billing; CREATE TABLE billing.invoices (id int);",
}


def obj(kind: str, schema: str | None, name: str, parent: str | None = None) -> ObjectRef:
    return ObjectRef(kind, schema, name, parent)


ACCOUNTS = [obj("table", "public", "accounts"), obj("column", "public", "id", "accounts")]
USERS = [
    obj("table", "public", "users"),
    obj("column", "public", "id", "users"),
    obj("index", "public", "users_id", "users"),
]
BILLING = [
    obj("schema", None, "billing"),
    obj("table", "billing", "invoices"),
    obj("column", "billing", "id", "invoices"),
]


def row(
    version: str, *, success: bool = True, checksum: str | None = "same", row_id: int = 0, transactional: bool = True
) -> tuple:
    return (version, success, checksum, row_id, transactional)


def facts_for(tmp_path: Path, rows=(), objects=(), lock=None, verify=None, invalid=(), files=None) -> Facts:
    for name, text in (files or FILES).items():
        (tmp_path / name).write_text(text)
    desired = read_desired(tmp_path)
    checksums = {m.version: m.checksum for m in desired.migrations.migrations}
    tracking_rows = tuple(
        TrackingRow(
            i + 1,
            version,
            "d",
            checksums.get(version) if checksum == "same" else checksum,
            "sha256-lf",
            NOW,
            "me",
            1,
            success,
            None if success else "boom",
            transactional,
        )
        for i, (version, success, checksum, _, transactional) in enumerate(rows)
    )
    tracking = ObservedTracking(DEFAULT_TRACKING, frozenset(DEFAULT_TRACKING.tables), tracking_rows, lock)
    catalog = CatalogSnapshot(tuple(sorted([obj("schema", None, "public"), *objects])), tuple(invalid))
    server = ServerInfo("15.18", 150018, "app", "app", 1)
    return Facts(desired, ObservedState(tracking, catalog, verify or {}, server))


def found(facts: Facts, *types: IssueType) -> set[tuple[str, str | None]]:
    return {(i.type.value, i.version) for i in run_checks(facts, types or None)}


DEAD_LOCK = LockState(True, NOW, "ci:42", 999, "poststack", 60.0, False)
LIVE_LOCK = LockState(True, NOW, "ci:42", 999, "poststack", 60.0, True)

CASES = [
    # (name, rows, catalog objects, lock, verify, checked types, expected)
    (
        "all applied and tracked",
        [row("001"), row("002"), row("003"), row("004")],
        ACCOUNTS + USERS + BILLING,
        None,
        {},
        (),
        set(),
    ),
    (
        "applied by hand",
        [row("001")],
        ACCOUNTS + USERS,
        None,
        {},
        (IssueType.MISSING_TRACKING,),
        {("missing_tracking", "002")},
    ),
    (
        "not applied is not claimed",
        [row("001")],
        ACCOUNTS,
        None,
        {},
        (IssueType.MISSING_TRACKING, IssueType.PARTIAL_MIGRATION),
        set(),
    ),
    (
        "some objects only",
        [row("001")],
        ACCOUNTS + USERS[:1],
        None,
        {},
        (IssueType.MISSING_TRACKING, IssueType.PARTIAL_MIGRATION),
        {("partial_migration", "002")},
    ),
    (
        "no evidence",
        [row("001"), row("002")],
        ACCOUNTS + USERS,
        None,
        {},
        (IssueType.UNDETERMINED, IssueType.MISSING_TRACKING),
        {("undetermined", "003")},
    ),
    (
        "verify says applied",
        [row("001"), row("002")],
        ACCOUNTS + USERS,
        None,
        {"003": True},
        (IssueType.UNDETERMINED, IssueType.MISSING_TRACKING),
        {("missing_tracking", "003")},
    ),
    (
        "verify says no",
        [row("001"), row("002")],
        ACCOUNTS + USERS,
        None,
        {"003": False},
        (IssueType.UNDETERMINED, IssueType.MISSING_TRACKING),
        set(),
    ),
    (
        "verify fails",
        [row("001"), row("002")],
        ACCOUNTS + USERS,
        None,
        {"003": "division by zero"},
        (IssueType.UNDETERMINED,),
        {("undetermined", "003")},
    ),
    (
        "edited file",
        [row("001", checksum="0" * 64)],
        ACCOUNTS,
        None,
        {},
        (IssueType.CHECKSUM_MISMATCH,),
        {("checksum_mismatch", "001")},
    ),
    ("dead lock holder", [row("001")], ACCOUNTS, DEAD_LOCK, {}, (IssueType.STUCK_LOCK,), {("stuck_lock", None)}),
    ("live lock holder", [row("001")], ACCOUNTS, LIVE_LOCK, {}, (IssueType.STUCK_LOCK,), set()),
    (
        "two rows for 001",
        [row("001"), row("001")],
        ACCOUNTS,
        None,
        {},
        (IssueType.DUPLICATE_VERSION,),
        {("duplicate_version", "001")},
    ),
    (
        "a failed retry is no duplicate",
        [row("001", success=False), row("001", success=False)],
        [],
        None,
        {},
        (IssueType.DUPLICATE_VERSION,),
        set(),
    ),
    (
        "failed row",
        [row("001"), row("002", success=False)],
        ACCOUNTS,
        None,
        {},
        (IssueType.PARTIAL_MIGRATION,),
        {("partial_migration", "002")},
    ),
    (
        "tracked, file gone",
        [row("001"), row("009", checksum=None)],
        ACCOUNTS,
        None,
        {},
        (IssueType.MISSING_FILE,),
        {("missing_file", "009")},
    ),
    (
        "older one pending",
        [row("001"), row("004")],
        ACCOUNTS + BILLING,
        None,
        {},
        (IssueType.OUT_OF_ORDER,),
        # 003 only changes data: nothing shows whether it ran, and migrate holds it too.
        {("out_of_order", "002"), ("out_of_order", "003")},
    ),
    (
        "drift",
        [row("001"), row("002")],
        ACCOUNTS + USERS[:1],
        None,
        {},
        (IssueType.MISSING_OBJECTS,),
        {("missing_objects", "002")},
    ),
    (
        "stray schema",
        [row("001")],
        [*ACCOUNTS, obj("schema", None, "temp_schema")],
        None,
        {},
        (IssueType.ORPHANED_SCHEMA,),
        {("orphaned_schema", None)},
    ),
    (
        "migration schema is no orphan",
        [row("001"), row("004")],
        ACCOUNTS + BILLING,
        None,
        {},
        (IssueType.ORPHANED_SCHEMA,),
        set(),
    ),
    (
        "no rollbacks",
        [],
        [],
        None,
        {},
        (IssueType.ROLLBACK_MISSING,),
        {("rollback_missing", v) for v in ("001", "002", "003", "004")},
    ),
]


@pytest.mark.parametrize(
    ("name", "rows", "objects", "lock", "verify", "types", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_checks(tmp_path, name, rows, objects, lock, verify, types, expected):
    facts = facts_for(tmp_path, rows, objects, lock, verify)
    chosen = types or tuple(t for t in IssueType if t is not IssueType.ROLLBACK_MISSING)
    assert found(facts, *chosen) == expected


def test_invalid_index(tmp_path):
    bad = obj("index", "public", "users_id", "users")
    facts = facts_for(tmp_path, [row("001"), row("002")], ACCOUNTS + USERS, invalid=[bad])
    (issue,) = run_checks(facts, [IssueType.INVALID_INDEX])
    assert issue.details == {
        "index": "public.users_id",
        "table": "public.users",
        "schema": "public",
        "name": "users_id",
    }
    assert 'DROP INDEX CONCURRENTLY "public"."users_id"' in issue.suggested_fix


def test_duplicate_files_are_reported_not_fatal(tmp_path):
    files = {**FILES, "002_other.sql": "SELECT 1;"}
    facts = facts_for(tmp_path, [row("001")], ACCOUNTS, files=files)
    (issue,) = run_checks(facts, [IssueType.DUPLICATE_VERSION])
    assert issue.message == "Migration 002 has 2 files: 002_other.sql, 002_users.sql" and not issue.auto_fixable


def test_severity_floor_and_order(tmp_path):
    facts = facts_for(tmp_path, [row("001", checksum="0" * 64)], [*ACCOUNTS, obj("schema", None, "x")])
    issues = run_checks(facts)
    assert [i.severity for i in issues] == sorted((i.severity for i in issues), reverse=True)
    assert {i.type for i in run_checks(facts, minimum=Severity.HIGH)} == {IssueType.CHECKSUM_MISMATCH}


def test_checksum_compared_with_the_rows_own_algorithm(tmp_path):
    import hashlib

    facts = facts_for(tmp_path, [row("001")], ACCOUNTS)
    raw = hashlib.sha256((tmp_path / "001_accounts.sql").read_bytes()).hexdigest()
    rows = tuple(
        r.__class__(**{**r.__dict__, "checksum": raw, "checksum_algorithm": "sha256"})
        for r in facts.observed.tracking.rows
    )
    tracking = facts.observed.tracking.__class__(DEFAULT_TRACKING, facts.observed.tracking.tables, rows, None)
    legacy = Facts(facts.desired, facts.observed.__class__(tracking, facts.observed.catalog, {}, facts.observed.server))
    assert run_checks(legacy, [IssueType.CHECKSUM_MISMATCH]) == []
    rows = tuple(r.__class__(**{**r.__dict__, "checksum_algorithm": "md5"}) for r in rows)
    tracking = tracking.__class__(DEFAULT_TRACKING, tracking.tables, rows, None)
    unknown = Facts(
        facts.desired, facts.observed.__class__(tracking, facts.observed.catalog, {}, facts.observed.server)
    )
    (issue,) = run_checks(unknown, [IssueType.CHECKSUM_MISMATCH])
    assert "unknown checksum algorithm 'md5'" in issue.details["note"]


FLYWAY_FILES = {
    "V1__accounts.sql": "CREATE TABLE accounts (id int);",
    "U1__accounts.sql": "DROP TABLE accounts CASCADE;",
    "R__accounts_view.sql": "CREATE OR REPLACE VIEW accounts_view AS SELECT id FROM accounts;",
    "R__users_view.sql": "CREATE OR REPLACE VIEW users_view AS SELECT 1 AS one;",
    "afterMigrate.sql": "GRANT SELECT ON accounts TO PUBLIC;",
}
VIEWS = [obj("view", "public", "accounts_view"), obj("view", "public", "users_view")]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # One row per application, the last for an earlier content: history, pending, no issue.
        ([row("1"), row("R__accounts_view", checksum="old"), row("R__accounts_view")], set()),
        ([row("1"), row("R__accounts_view"), row("R__accounts_view", checksum="older")], set()),
        # Never applied, its view there already: pending all the same, never claimed applied.
        ([row("1")], set()),
        # Its last attempt failed after an earlier success: a partial_migration, as a versioned one's.
        (
            [row("1"), row("R__accounts_view"), row("R__accounts_view", success=False)],
            {("partial_migration", "R__accounts_view")},
        ),
        ([row("1"), row("R__accounts_view", success=False), row("R__accounts_view")], set()),
    ],
)
def test_repeatables_and_callbacks_are_judged_as_flyway_runs_them(tmp_path: Path, rows, expected) -> None:  # type: ignore[no-untyped-def]
    facts = facts_for(tmp_path, rows, ACCOUNTS + VIEWS, files=FLYWAY_FILES)
    assert found(facts) == expected
    assert not facts.desired.problems  # the callback is no invalid_file


# --- unsafe_migration: the lint read with the state, judged purely -----------------------------


def linted(version: str, *severities: str, measured: bool = False) -> Linted:
    """A lint of ``version`` with one PS101-like finding per severity, on public.accounts."""
    findings = tuple(
        Finding(
            "PS101",
            "table-rewrite",
            version,
            f"{version}.sql",
            line,
            "ALTER TABLE accounts ALTER COLUMN id TYPE bigint",
            Hit(
                "rewrites public.accounts under an ACCESS EXCLUSIVE lock",
                f"safer way {line}",
                LintSeverity.parse(severity),
                "public.accounts",
                "ACCESS EXCLUSIVE",
                True,
                True,
                "measured",
            ),
            RelationSize("public.accounts", True, 1000, 2 << 30),
        )
        for line, severity in enumerate(severities, start=1)
    )
    return Linted((version,), LintFindings(findings, (), len(findings)), (), None)


def with_lint(facts: Facts, lint: Linted | None) -> Facts:
    return Facts(facts.desired, facts.observed, lint)


UNSAFE_CASES = [
    # (name, severities of 004's findings, expected)
    ("one high finding", ("high",), {("unsafe_migration", "004")}),
    ("high among others", ("low", "high", "high"), {("unsafe_migration", "004")}),
    ("medium is not unsafe", ("medium", "low"), set()),
    ("no findings", (), set()),
]


@pytest.mark.parametrize(("name", "severities", "expected"), UNSAFE_CASES, ids=[c[0] for c in UNSAFE_CASES])
def test_unsafe_migration(
    tmp_path: Path, name: str, severities: tuple[str, ...], expected: set[tuple[str, str]]
) -> None:
    facts = with_lint(
        facts_for(tmp_path, [row("001"), row("002"), row("003")], ACCOUNTS + USERS), linted("004", *severities)
    )
    assert found(facts, IssueType.UNSAFE_MIGRATION) == expected


def test_unsafe_migration_details_and_fix(tmp_path: Path) -> None:
    facts = with_lint(
        facts_for(tmp_path, [row("001"), row("002"), row("003")], ACCOUNTS + USERS),
        linted("004", "low", "high", "high"),
    )
    (issue,) = run_checks(facts, [IssueType.UNSAFE_MIGRATION])
    assert issue.severity is Severity.HIGH and not issue.auto_fixable
    assert issue.message == (
        "Migration 004 rewrites public.accounts under an ACCESS EXCLUSIVE lock (PS101, line 2); "
        "and 1 more high-severity finding(s)"
    )
    assert [(f["code"], f["severity"], f["line"]) for f in issue.details["findings"]] == [
        ("PS101", "low", 1),
        ("PS101", "high", 2),
        ("PS101", "high", 3),
    ]
    assert issue.details["findings"][1]["size"] == {"rows": 1000, "bytes": 2 << 30}
    assert issue.details["measured"] is False
    assert issue.suggested_fix == "Rewrite it: safer way 2; safer way 3. Then check it with: poststack db lint 004"
    # Details are plain JSON values: a plan that carries the issue round-trips.
    assert json.loads(json.dumps(issue.to_json())) == issue.to_json()


def test_no_lint_no_unsafe_migration(tmp_path: Path) -> None:
    facts = facts_for(tmp_path, [row("001"), row("002"), row("003")], ACCOUNTS + USERS)
    assert found(facts, IssueType.UNSAFE_MIGRATION) == set()


def test_a_migration_shown_applied_is_not_unsafe(tmp_path: Path) -> None:
    # 004's objects are all there, untracked: recover tracks it; nothing will run it.
    facts = facts_for(tmp_path, [row("001"), row("002"), row("003")], ACCOUNTS + USERS + BILLING)
    facts = with_lint(facts, linted("004", "high"))
    assert found(facts, IssueType.UNSAFE_MIGRATION, IssueType.MISSING_TRACKING) == {("missing_tracking", "004")}
