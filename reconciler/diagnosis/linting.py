"""db lint: what the linted migrations will lock and rewrite on this database.

The history runs in a shadow up to the last linted migration, the linted ones watched
statement by statement (desired/replay/measure); the relations they touch are sized on the
target (observed/sizes); then the rules decide, purely (diagnosis/lint). Only catalog and
statistics reads reach the target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from reconciler.config import Settings
from reconciler.db import Session, connect
from reconciler.desired.files import Migration, MigrationSet
from reconciler.desired.layouts import load_migrations
from reconciler.desired.replay.measure import LOCK_MODES, RelationLock, StatementFacts
from reconciler.desired.replay.source import MeasuredRun, measure_in_shadow, shadow_for
from reconciler.diagnosis.checks.base import Facts
from reconciler.diagnosis.due import is_pending
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
from reconciler.errors import MigrationFileError, UsageError
from reconciler.observed.catalog import session_search_path
from reconciler.observed.sizes import RelationSize, relation_sizes
from reconciler.observed.state import DesiredState, ObservedState, read_state_of
from reconciler.observed.tracking import ObservedTracking, observe_tracking


@dataclass(frozen=True)
class Linted:
    """The lint of some migrations on one database."""

    versions: tuple[str, ...]
    findings: LintFindings
    facts: tuple[StatementFacts, ...]  # what each statement was measured doing
    run: MeasuredRun | None  # None: measuring was not asked for (--no-replay)
    sizes: dict[str, RelationSize] = field(default_factory=dict)  # the relations named, on the target

    @property
    def notices(self) -> tuple[str, ...]:
        if self.run is None:
            return ("ℹ️  Nothing measured (--no-replay): findings come from the SQL alone.",)
        return self.run.notices

    def at_least(self, minimum: LintSeverity) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings.findings if f.severity >= minimum)

    def facts_of(self, version: str) -> tuple[StatementFacts, ...]:
        return tuple(f for f in self.facts if f.version == version)

    def measured(self, version: str) -> bool:
        """Its statements were watched in the shadow (else its findings come from the SQL alone)."""
        measurement = self.run.measurement if self.run is not None else None
        return measurement is not None and measurement.measured(version)

    def of(self, version: str) -> MigrationLint | None:
        """What one linted migration locks and rewrites, and its findings; None: not linted."""
        if version not in self.versions:
            return None
        statements = self.facts_of(version) if self.measured(version) else ()
        strongest: dict[str, RelationLock] = {}
        for statement in statements:
            for lock in statement.locks:
                held = strongest.get(lock.relation)
                if held is None or LOCK_MODES.index(lock.mode) > LOCK_MODES.index(held.mode):
                    strongest[lock.relation] = lock
        rewritten = {r for s in statements for r in s.rewritten}
        scanned = {r for s in statements for r in s.scanned}
        # A partition whose facts count for its partitioned table is said with the table.
        folded = {partition for s in statements for partition, _ in s.partitions}
        order = sorted(
            (lock for lock in strongest.values() if lock.relation not in folded),
            key=lambda lock: (-LOCK_MODES.index(lock.mode), lock.relation),
        )
        relations = tuple(
            LockedRelation(
                lock.relation,
                lock.label,
                self.sizes.get(lock.relation),
                lock.relation in rewritten,
                lock.relation in scanned,
            )
            for lock in order
        )
        findings = tuple(f for f in self.findings.findings if f.version == version)
        return MigrationLint(version, self.measured(version), relations, findings)


@dataclass(frozen=True)
class LockedRelation:
    """A relation that existed before a migration, and the strongest lock its statements hold on it."""

    relation: str  # schema.name
    lock: str  # the mode, as LOCK TABLE writes it: ACCESS EXCLUSIVE
    size: RelationSize | None  # its live size on the target
    rewritten: bool  # a statement gave it a new file: every row copied under the lock
    scanned: bool  # a statement read it through (a validation, an index build)


@dataclass(frozen=True)
class MigrationLint:
    """One migration's lint, as a step that runs it shows it: its locks, and its findings."""

    version: str
    measured: bool  # False: nothing was watched in a shadow; only the SQL's findings
    relations: tuple[LockedRelation, ...]  # strongest lock first
    findings: tuple[Finding, ...]

    @property
    def rewrites(self) -> bool:
        return any(r.rewritten for r in self.relations)

    @property
    def scans(self) -> bool:
        return any(r.scanned for r in self.relations)


@dataclass(frozen=True)
class LintResult:
    database: str
    scope: str  # "pending", "all" or "named"
    linted: Linted
    minimum: LintSeverity  # --severity: findings at or above it fail the command
    # Untracked migrations the evidence shows applied, not linted: nothing will run them.
    left_out: tuple[str, ...] = ()
    no_tracking_table: bool = False  # every migration counts as pending: none is recorded

    @property
    def failing(self) -> tuple[Finding, ...]:
        return self.linted.at_least(self.minimum)

    @property
    def ok(self) -> bool:
        return not self.failing


def pending(migrations: MigrationSet, observed: ObservedTracking) -> tuple[Migration, ...]:
    """What db migrate would run."""
    return tuple(m for m in migrations.migrations if is_pending(m, observed))


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
        run = measure_in_shadow(session, migrations.migrations, wanted, shadow, settings.tracking_schema)
    measurement = run.measurement if run is not None else None
    path, schemas, _role = session_search_path(session)
    search_path = tuple(schema for schema in path if schema in schemas) or path  # "$user" has no schema, often
    timeout = settings.ddl_lock_timeout
    first = contexts(linted, measurement, search_path, timeout)
    sizes = relation_sizes(session, named_relations(first))
    final = contexts(linted, measurement, search_path, timeout, sizes)
    findings = lint(final, ignores, project)
    facts = measurement.statements if measurement is not None else ()
    return Linted(tuple(m.version for m in linted), findings, facts, run, sizes)


def lint_alongside(
    session: Session,
    settings: Settings,
    migrations: MigrationSet,
    linted: Sequence[Migration],
    notify: Callable[[str], None] | None = None,
    *,
    measure: bool = True,
) -> Linted | None:
    """lint_on for a command that shows or judges migrations it does not lint for a living
    (db migrate --dry-run, plan, diagnose): nothing to lint is None, and a file the lint
    cannot read, or a lint-ignore comment it refuses, is said in one line instead of
    stopping the command (db lint names it). ``measure`` False: from the SQL alone."""
    if not linted:
        return None
    readable = []
    for migration in linted:
        try:
            migration.file.script  # noqa: B018 - parsed once, cached: unreadable ones are another check's
        except MigrationFileError:
            continue
        readable.append(migration)
    try:
        result = lint_on(session, settings if measure else replace(settings, replay=False), migrations, readable)
    except (UsageError, MigrationFileError) as e:
        if notify is not None:
            notify(f"⚠️  Not linted: {e.summary} (poststack db lint says more).")
        return None
    return result


def with_lint(session: Session, settings: Settings, facts: Facts, notify: Callable[[str], None] | None = None) -> Facts:
    """``facts`` with the migrations a run would apply linted: the pending ones, less those
    the evidence shows applied (recover tracks them; nothing runs them again, so neither
    their locks nor the time to watch them matter: a lost tracking table leaves hundreds)."""
    linted = lint_pending_state(session, settings, facts.desired, facts.observed, notify, facts.shown_applied)
    result = replace(facts, lint=linted)
    for judged in ("replayed", "attributions", "shown_applied"):  # what was worked out already, not again
        if judged in facts.__dict__:
            result.__dict__[judged] = facts.__dict__[judged]
    return result


def lint_pending_state(
    session: Session,
    settings: Settings,
    desired: DesiredState,
    observed: ObservedState,
    notify: Callable[[str], None] | None = None,
    shown_applied: frozenset[str] = frozenset(),
) -> Linted | None:
    """diagnose and plan: the pending migrations linted beside the state just read; None when
    nothing is pending. Measured in a shadow only where the history was replayed in one: not
    with --no-replay, nor where no shadow could be had or a file cannot be read whole (the
    replay said why); from the SQL alone then, as the rest of diagnose judges.
    ``shown_applied``: versions the evidence shows applied, left out."""
    waiting = tuple(m for m in pending(desired.migrations, observed.tracking) if m.version not in shown_applied)
    outcome = desired.replay
    replayed = outcome is not None and outcome.used
    result = lint_alongside(session, settings, desired.migrations, waiting, notify, measure=replayed)
    if result is None or outcome is None:
        return result  # outcome None: --no-replay, and the result says so
    if not replayed:
        why = outcome.unavailable or "the history could not be replayed"
        return replace(result, run=MeasuredRun(outcome.shadow, None, why))
    for notice in result.notices if notify is not None else ():
        if notice not in outcome.notices:  # the shadow's warnings were said by the replay already
            notify(notice)
    return result


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
        left_out: tuple[str, ...] = ()
        if scope == "pending" and any(m.key not in observed.applied and m.key not in observed.failed for m in linted):
            left_out = shown_applied(session, settings, migrations, linted)
            linted = tuple(m for m in linted if m.version not in left_out)
        result = lint_on(session, settings, migrations, linted)
    if notify is not None and result.versions:
        for notice in result.notices:
            notify(notice)
    missing = settings.tracking.migrations_table not in observed.tables
    return LintResult(session.display_url, scope, result, minimum, left_out, missing)


def shown_applied(
    session: Session, settings: Settings, migrations: MigrationSet, untracked: Sequence[Migration]
) -> tuple[str, ...]:
    """Which of ``untracked`` the catalog (their objects, or a verify script) shows applied:
    the parsed evidence diagnose starts from, without a second shadow run for it."""
    desired, observed = read_state_of(session, migrations, settings.tracking, definitions=False)
    shown = Facts(desired, observed).shown_applied
    return tuple(m.version for m in untracked if m.version in shown)
