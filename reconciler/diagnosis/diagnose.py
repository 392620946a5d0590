"""diagnose, validate and verify-migrations: the reconciler's read-only verbs.

They read desired and observed state once, run the pure checks, and return data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from reconciler.config import Settings
from reconciler.db import connect
from reconciler.desired.files import Migration
from reconciler.desired.replay.source import RoundTripCheck, ShadowSettings, round_trip_in_shadow, shadow_for
from reconciler.desired.versions import version_key
from reconciler.diagnosis.attribution import Verdict
from reconciler.diagnosis.checks import Facts, run_checks
from reconciler.diagnosis.issues import Issue, IssueType, Severity
from reconciler.diagnosis.linting import Linted, with_lint
from reconciler.diagnosis.pending import own_table_risks
from reconciler.errors import MigrationFileError
from reconciler.observed.state import DesiredState, ObservedState, read_desired, read_state


@dataclass(frozen=True)
class Diagnosis:
    """db diagnose: every disagreement found between files, tracking and catalog, and the state read."""

    issues: tuple[Issue, ...]
    types: tuple[IssueType, ...]  # what was checked
    minimum: Severity
    database_state: dict[str, Any]
    fingerprint: str

    @property
    def ok(self) -> bool:
        """No issue was found (of the types checked, at or above the minimum severity)."""
        return not self.issues


def database_state(desired: DesiredState, observed: ObservedState, display_url: str) -> dict[str, Any]:
    tracking = observed.tracking
    lock = tracking.lock
    return {
        "database": display_url,
        "server": {
            "version": observed.server.version,
            "database": observed.server.database,
            "user": observed.server.user,
        },
        "tracking": {
            "schema": tracking.schema,
            "table_prefix": tracking.location.prefix,
            "tables_present": sorted(tracking.tables),
            "rows": len(tracking.rows),
            "applied": len(tracking.applied),
            "failed": len(tracking.failed),
            "current_version": tracking.current.version if tracking.current else None,
        },
        "files": {"migrations": len(desired.migrations.migrations), "problems": [p.message for p in desired.problems]},
        "lock": None
        if lock is None
        else {
            "locked": lock.locked,
            "locked_by": lock.locked_by,
            "backend_pid": lock.backend_pid,
            "application_name": lock.application_name,
            "age_seconds": round(lock.age_s) if lock.age_s is not None else None,
            "holder_alive": lock.holder_alive if lock.locked else None,
            "backend_alive": lock.backend_alive if lock.locked else None,
            "backend_state": lock.backend_state,
            "backend_query": lock.backend_query,
            "backend_query_seconds": round(lock.backend_query_s) if lock.backend_query_s is not None else None,
            "client_alive": lock.client_alive,
            "client_local": lock.client_local if lock.locked else None,
        },
        "catalog": observed.catalog.counts(),
        **({"replay": desired.replay.to_json()} if desired.replay is not None else {}),
    }


def read_facts(settings: Settings, notify: Any = None, *, lint: bool = False) -> tuple[Facts, str, int]:
    """Desired and observed state, the database's display URL, and the round trips it took.
    ``lint``: the pending migrations linted too (for unsafe_migration)."""
    with connect(settings, notify) as session:
        desired, observed = read_state(
            session, settings.migrations_dir, settings.tracking, settings.layout, shadow_for(settings), notify
        )
        facts = Facts(desired, observed)
        if lint:
            facts = with_lint(session, settings, facts, notify)
        return facts, session.display_url, session.round_trips


def lint_state(linted: Linted) -> dict[str, Any]:
    """How the pending migrations were linted, for database_state: what unsafe_migration saw."""
    run = linted.run
    return {
        "versions": list(linted.versions),
        "measured": [v for v in linted.versions if linted.measured(v)],
        "shadow": run.shadow if run is not None else "none",
        "unavailable": "--no-replay" if run is None else run.unavailable,
    }


def diagnose(
    settings: Settings,
    types: Iterable[IssueType] = (),
    minimum: Severity = Severity.LOW,
    notify: Any = None,
) -> Diagnosis:
    chosen = tuple(types) or tuple(IssueType)
    facts, url, round_trips = read_facts(settings, notify, lint=IssueType.UNSAFE_MIGRATION in chosen)
    issues = run_checks(facts, chosen, minimum)
    state = database_state(facts.desired, facts.observed, url)
    state["round_trips"] = round_trips
    if facts.lint is not None:
        state["lint"] = lint_state(facts.lint)
    return Diagnosis(tuple(issues), chosen, minimum, state, facts.observed.fingerprint)


# --- validate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    migrations: int
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    checked_database: bool
    missing_rollbacks: tuple[str, ...] = field(default=())
    round_trip: RoundTripCheck | None = None  # with --round-trip, once the files are sound

    @property
    def ok(self) -> bool:
        return not self.errors


def _parse_errors(migration: Migration) -> list[str]:
    errors = []
    for file in (migration.file, migration.rollback, migration.verify):
        if file is None:
            continue
        try:
            _ = file.script
        except MigrationFileError as e:
            errors.append(e.summary)
    return errors


# Tracking disagreements that make validation fail.
_TRACKING_ERRORS = (
    IssueType.CHECKSUM_MISMATCH,
    IssueType.DUPLICATE_VERSION,
    IssueType.PARTIAL_MIGRATION,
    IssueType.MISSING_FILE,
    IssueType.STUCK_LOCK,
)


def validate(
    settings: Settings, *, check_rollbacks: bool, round_trip: bool = False, offline: bool = False, notify: Any = None
) -> Validation:
    """Files first, without touching the database; then, if they are sound, tracking; with
    ``round_trip``, every rollback too, run after its migration in a shadow database.
    ``offline``: the files only (a pre-commit hook has no database)."""
    desired = read_desired(settings.migrations_dir, location=settings.tracking, layout=settings.layout)
    errors = [p.message for p in desired.problems]
    for migration in desired.migrations.migrations:
        errors += _parse_errors(migration)
    missing = tuple(m.version for m in desired.migrations.migrations if m.rollback is None)
    warnings = [f"Missing rollback files for migrations: {', '.join(missing)}"] if check_rollbacks and missing else []
    empty = [m.version for m in desired.migrations.migrations if m.file.empty]
    if empty:
        warnings.append(f"Migrations with no statements (tracked when applied, as no-ops): {', '.join(empty)}")
    count = len(desired.migrations.migrations)
    if errors or offline:
        return Validation(count, tuple(errors), tuple(warnings), False, missing)
    checked_round_trip = None
    with connect(settings, notify) as session:
        desired, observed = read_state(
            session, settings.migrations_dir, settings.tracking, settings.layout, shadow_for(settings), notify
        )
        if round_trip:
            shadow = ShadowSettings(settings.shadow_url, None, settings.embedded_data_dir)
            checked_round_trip = round_trip_in_shadow(session, desired.migrations.migrations, settings.tracking, shadow)
    facts = Facts(desired, observed)
    # Read with this database's search_path. What already ran (tracked, or shown applied
    # for recover to track) never runs again, so only the rest can break poststack's tables.
    for migration in facts.unapplied:
        if facts.attributions[migration.version].verdict is not Verdict.APPLIED:
            errors += [r.message for r in own_table_risks(migration, desired.history, settings.tracking)]
    for issue in run_checks(facts, _TRACKING_ERRORS):
        errors.append(issue.message)
    if checked_round_trip is not None:
        errors += _round_trip_errors(checked_round_trip)
        warnings += [f"Round-trip checking: {w}" for w in checked_round_trip.warnings]
    return Validation(count, tuple(errors), tuple(warnings), True, missing, checked_round_trip)


def _round_trip_errors(check: RoundTripCheck) -> list[str]:
    """One line per rollback problem; and why the walk did not reach the end, if it did not."""
    if check.result is None:
        return [f"Round-trip checking of rollbacks was unavailable: {check.unavailable}"]
    errors = [problem.message for problem in check.result.problems]
    stop = check.result.stopped
    if stop is not None:
        checked = any(problem.version == stop.version for problem in check.result.problems)
        after = "the migrations after it" if checked else "it and the migrations after it"
        errors.append(
            f"Round-trip checking stopped at migration {stop.version} ({stop.reason}): {after} were not round-tripped"
        )
    return errors


# --- verify-migrations ------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    checked: int
    errors: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


from reconciler.diagnosis.issues import SHORT_CHECKSUM as SHORT  # noqa: E402


def verify_migrations(settings: Settings, notify: Any = None) -> Verification:
    """Every applied migration's file exists and matches the checksum recorded for it."""
    facts, _, _ = read_facts(settings, notify)
    errors = []
    applied = facts.observed.tracking.applied
    for number, row in sorted(applied.items()):
        migration = facts.desired.by_key.get(number)
        if migration is None:
            problem = next((p for p in facts.desired.problems if p.version and version_key(p.version) == number), None)
            errors.append(problem.message if problem else f"Migration {row.version} is tracked but its file is missing")
            continue
        if number.is_repeatable:
            continue  # an edited repeatable is pending, to run again: not a mismatch (Flyway's rule)
        current = migration.file.checksum_as(row.checksum_algorithm)
        if row.checksum and current != row.checksum:
            got = current[:SHORT] if current else f"nothing (unknown algorithm {row.checksum_algorithm!r})"
            errors.append(f"Migration {row.version} checksum mismatch: expected {row.checksum[:SHORT]}, got {got}")
    return Verification(len(applied), tuple(errors))
