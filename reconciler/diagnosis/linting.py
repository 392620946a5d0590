"""db lint: what the linted migrations will lock and rewrite on this database.

The history runs in a shadow up to the last linted migration, the linted ones watched
statement by statement (desired/replay/measure); the relations they touch are sized on the
target (observed/sizes); then the rules decide, purely (diagnosis/lint). Only catalog and
statistics reads reach the target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reconciler.config import Settings
from reconciler.db import Session, connect
from reconciler.desired.files import Migration, MigrationSet
from reconciler.desired.layouts import load_migrations
from reconciler.desired.replay.measure import StatementFacts
from reconciler.desired.replay.source import MeasuredRun, measure_in_shadow, shadow_for
from reconciler.diagnosis.lint.base import LintSeverity
from reconciler.diagnosis.lint.engine import (
    Finding,
    LintFindings,
    contexts,
    file_ignores,
    lint,
    named_relations,
    project_ignores,
)
from reconciler.diagnosis.pending import changed_repeatable
from reconciler.errors import UsageError
from reconciler.observed.catalog import session_search_path
from reconciler.observed.sizes import relation_sizes
from reconciler.observed.tracking import ObservedTracking, observe_tracking

# db migrate sets this lock_timeout for each migration unless configured otherwise (seconds).
DEFAULT_DDL_LOCK_TIMEOUT = 5.0


@dataclass(frozen=True)
class Linted:
    """The lint of some migrations on one database."""

    versions: tuple[str, ...]
    findings: LintFindings
    facts: tuple[StatementFacts, ...]  # what each statement was measured doing
    run: MeasuredRun | None  # None: measuring was not asked for (--no-replay)

    @property
    def notices(self) -> tuple[str, ...]:
        if self.run is None:
            return ("ℹ️  Nothing measured (--no-replay): findings come from the SQL alone.",)
        return self.run.notices

    def at_least(self, minimum: LintSeverity) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings.findings if f.severity >= minimum)

    def facts_of(self, version: str) -> tuple[StatementFacts, ...]:
        return tuple(f for f in self.facts if f.version == version)


@dataclass(frozen=True)
class LintResult:
    database: str
    scope: str  # "pending", "all" or "named"
    linted: Linted
    minimum: LintSeverity  # --severity: findings at or above it fail the command

    @property
    def failing(self) -> tuple[Finding, ...]:
        return self.linted.at_least(self.minimum)

    @property
    def ok(self) -> bool:
        return not self.failing


def pending(migrations: MigrationSet, observed: ObservedTracking) -> tuple[Migration, ...]:
    """What db migrate would run: no successful tracking row, or a changed repeatable."""
    applied = observed.applied
    return tuple(m for m in migrations.migrations if m.key not in applied or changed_repeatable(m, observed))


def chosen(
    migrations: MigrationSet, observed: ObservedTracking, versions: Sequence[str], every: bool
) -> tuple[str, tuple[Migration, ...]]:
    if versions and every:
        raise UsageError("give VERSIONs or --all, not both")
    if every:
        return "all", migrations.migrations
    if not versions:
        return "pending", pending(migrations, observed)
    named = []
    for version in versions:
        found = migrations.find(version)
        if found is None:
            known = ", ".join(m.version for m in migrations.migrations[-5:]) or "none"
            raise UsageError(f"no migration {version!r} in {migrations.directory}", f"The newest are: {known}.")
        named.append(found)
    order = {m.version: i for i, m in enumerate(migrations.migrations)}
    return "named", tuple(sorted(set(named), key=lambda m: order[m.version]))


def lint_on(session: Session, settings: Settings, migrations: MigrationSet, linted: Sequence[Migration]) -> Linted:
    """Lint ``linted`` (migrations of ``migrations``) for the database of ``session``."""
    ignores = {m.version: file_ignores(m) for m in linted}  # a bad comment is refused before any work
    project = project_ignores(settings.lint_ignore, _source(settings))
    for migration in linted:
        migration.file.script  # noqa: B018 - an unreadable file is an error naming it, before any work
    run = None
    shadow = shadow_for(settings)
    wanted = frozenset(m.version for m in linted)
    if shadow is not None and wanted:
        run = measure_in_shadow(session, migrations.migrations, wanted, shadow)
    measurement = run.measurement if run is not None else None
    path, schemas, _role = session_search_path(session)
    search_path = tuple(schema for schema in path if schema in schemas) or path  # "$user" has no schema, often
    timeout = ddl_lock_timeout(settings)
    first = contexts(linted, measurement, search_path, timeout)
    sizes = relation_sizes(session, named_relations(first))
    final = contexts(linted, measurement, search_path, timeout, sizes)
    findings = lint(final, ignores, project)
    facts = measurement.statements if measurement is not None else ()
    return Linted(tuple(m.version for m in linted), findings, facts, run)


def ddl_lock_timeout(settings: Settings) -> float:
    return float(getattr(settings, "ddl_lock_timeout", DEFAULT_DDL_LOCK_TIMEOUT))


def _source(settings: Settings) -> str:
    source = settings.origins.of("lint_ignore")
    return source if source != "default" else "the project"


def lint_migrations(
    settings: Settings,
    versions: Sequence[str],
    every: bool,
    minimum: LintSeverity,
    notify: Callable[[str], None] | None = None,
) -> LintResult:
    migrations = load_migrations(settings.migrations_dir, settings.layout)
    with connect(settings, notify) as session:
        observed = observe_tracking(session, settings.tracking)
        scope, linted = chosen(migrations, observed, versions, every)
        result = lint_on(session, settings, migrations, linted)
    if notify is not None and result.versions:
        for notice in result.notices:
            notify(notice)
    return LintResult(session.display_url, scope, result, minimum)
