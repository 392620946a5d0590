"""The check registry and the facts every check reads."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from reconciler.desired.effects import CASCADE, CHILD_KINDS, DEPENDENTS, ROW_CHANGING, MigrationEffects
from reconciler.desired.files import Migration
from reconciler.desired.versions import VersionKey, version_key
from reconciler.diagnosis.attribution import Attribution, Verdict, attribute_unapplied
from reconciler.diagnosis.issues import Issue, IssueType, Severity
from reconciler.diagnosis.pending import Readiness, decide
from reconciler.diagnosis.replayed import Name, ReplayedObject, attribute_by_replay, drift_by_replay
from reconciler.errors import PoststackError
from reconciler.observed.state import DesiredState, ObservedState

if TYPE_CHECKING:
    from reconciler.diagnosis.linting import Linted

Check = Callable[["Facts"], list[Issue]]
CHECKS: dict[IssueType, Check] = {}


def check(issue_type: IssueType) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        if issue_type in CHECKS:
            raise RuntimeError(f"a check for {issue_type} is registered twice")
        CHECKS[issue_type] = fn
        return fn

    return register


@dataclass(frozen=True)
class Facts:
    desired: DesiredState
    observed: ObservedState
    # The pending migrations linted: measured in a shadow (desired), sized on the target
    # (observed), judged by the rules. Read with the state, by the commands that check
    # unsafe_migration; None when they were not (nothing pending, or not asked for).
    lint: Linted | None = None

    @cached_property
    def problem_versions(self) -> frozenset[VersionKey]:
        """Versions whose file is there but unusable (not UTF-8, unreadable, ...)."""
        return frozenset(k for p in self.desired.problems if p.version and (k := version_key(p.version)) is not None)

    @cached_property
    def untracked(self) -> tuple[Migration, ...]:
        """Migrations with no tracking row at all (failed rows count as tracked)."""
        tracked = set(self.observed.tracking.applied) | set(self.observed.tracking.failed)
        return tuple(m for m in self.desired.migrations.migrations if m.key not in tracked)

    @cached_property
    def unapplied(self) -> tuple[Migration, ...]:
        """Migrations with no successful tracking row: untracked, or only failed attempts."""
        applied = self.observed.tracking.applied
        return tuple(m for m in self.desired.migrations.migrations if m.key not in applied)

    @cached_property
    def tracked_versions(self) -> frozenset[str]:
        """The files' spellings of the versions tracked as applied."""
        applied = self.observed.tracking.applied
        return frozenset(m.version for m in self.desired.migrations.migrations if m.key in applied)

    @cached_property
    def replayed(self) -> dict[str, Attribution]:
        """Verdicts by state for the unapplied migrations the replay ran (none without replay)."""
        outcome, live = self.desired.replay, self.observed.live
        if outcome is None or outcome.replay is None or live is None:
            return {}
        # An empty migration changes nothing: whether it ran does not matter (migrate runs it).
        untracked = [m.version for m in self.unapplied if not m.file.empty]
        if not outcome.same_major:
            # Another major version prints definitions (and makes objects: PostgreSQL 18's NOT
            # NULL constraints) differently: an object could look absent that is there.
            return {}
        effects = self.desired.history.effects
        replay = outcome.replay
        if replay.stopped is not None and self._unreadable_after(replay.stopped.version):
            return {}  # what came after the stop cannot be told: the parsed evidence decides
        changes_data = frozenset(v for v in untracked if (e := effects.get(v)) is not None and e.may_change_rows)
        return attribute_by_replay(
            replay,
            live.objects,
            self.tracked_versions,
            untracked,
            self._proves_nothing,
            changes_data,
            {v: frozenset(_names(e)) for v, e in effects.items()},
            self._distrusted(untracked),
        )

    def _unreadable_after(self, stopped: str) -> bool:
        """A migration from the stop on does something to the schema the parser cannot name."""
        key = version_key(stopped)
        effects = self.desired.history.effects
        return any(
            u.statement not in ROW_CHANGING
            for m in self.desired.migrations.migrations
            if key is not None and m.key >= key and (e := effects.get(m.version)) is not None
            for u in e.unattributed
        )

    def _distrusted(self, untracked: list[str]) -> dict[str, str]:
        """Versions whose replayed proof is not enough on its own, and why."""
        # A tracked migration whose file is gone ran, but the replay could not run it: what it
        # made may be credited to another. (An edited file is replayed as it is now; a checksum
        # mismatch says so, and is too common, a comment added, to distrust everything.)
        tracking, by_key = self.observed.tracking, self.desired.by_key
        gone = [row.version for key, row in tracking.applied.items() if key not in by_key]
        if gone:
            why = f"but tracked migration {gone[0]}'s file is missing, so the history replayed is not the one that ran"
            return dict.fromkeys(untracked, why)
        effects = self.desired.history.effects
        return {
            m.version: "it runs outside a transaction and also changes data: its schema part may have run alone"
            for m in self.unapplied
            if m.version in untracked
            and (e := effects.get(m.version)) is not None
            and e.may_change_rows
            and not _transactional(m)
        }

    @property
    def _proves_nothing(self) -> frozenset[tuple[str, str]]:
        # The tracking schema: poststack makes it (create-schema), whoever else does.
        return frozenset({("schema", self.observed.tracking.schema)})

    @cached_property
    def replayed_versions(self) -> frozenset[str]:
        """Versions whose drift is judged on the replay: replayed on the target's major version,
        where definitions print alike (elsewhere, existence from the parsed SQL)."""
        outcome = self.desired.replay
        if outcome is None or outcome.replay is None or self.observed.live is None or not outcome.same_major:
            return frozenset()
        if outcome.replay.stopped is not None:
            return frozenset()  # what the migrations past the stop did is unknown: names only
        return frozenset(outcome.replay.versions)

    @cached_property
    def drift(self) -> dict[str, tuple[ReplayedObject, ...]]:
        """Tracked migrations' objects not as they made them (replayed_versions only)."""
        outcome, live = self.desired.replay, self.observed.live
        if not self.replayed_versions or outcome is None or outcome.replay is None or live is None:
            return {}
        applied = self.tracked_versions | self.shown_applied
        return drift_by_replay(
            outcome.replay, live.objects, applied, sorted(self.tracked_versions), self._proves_nothing
        )

    @cached_property
    def shown_applied(self) -> frozenset[str]:
        """Unapplied migrations the evidence shows applied: recover tracks them, nothing runs them."""
        return frozenset(v for v, found in self.attributions.items() if found.verdict is Verdict.APPLIED)

    @cached_property
    def attributions(self) -> dict[str, Attribution]:
        """What the evidence says of every unapplied migration (attribute_unapplied)."""
        desired, observed = self.desired, self.observed
        return attribute_unapplied(
            desired.migrations.migrations,
            observed.tracking.applied,
            desired.history,
            observed.catalog,
            observed.verify,
            observed.audited,
            self.replayed,
        )

    @cached_property
    def readiness(self) -> Readiness:
        """Which pending migrations may run now, with nothing explicitly allowed."""
        return decide(
            self.desired.migrations,
            self.observed.tracking,
            self.attributions,
            self.desired.history,
            self.observed.catalog,
            audited=self.observed.audited,
        )


def _names(effects: MigrationEffects) -> set[Name]:
    """What a migration's parsed SQL creates, keeps, replaces or drops, by name."""
    names: set[Name] = set()
    for statement in effects.statements:
        for ref in (*statement.creates, *statement.weak, *statement.touches):
            if ref.kind in (CASCADE, DEPENDENTS):
                continue
            table = ref.parent if ref.kind in CHILD_KINDS else None
            names.add((ref.family, ref.schema, table, ref.name))
    return names


def _transactional(migration: Migration) -> bool:
    try:
        return migration.file.script.transactional
    except PoststackError:
        return True  # unreadable: it never runs, so never half


def held_after_recovery(facts: Facts) -> frozenset[str]:
    """Versions migrate would still hold once recover has tracked what the catalog shows
    applied: the undetermined migrations a person must decide about (recover --force), as
    opposed to data migrations that simply have not run yet."""
    shown = frozenset(m.key for m in facts.unapplied if facts.attributions[m.version].verdict is Verdict.APPLIED)
    readiness = decide(
        facts.desired.migrations,
        facts.observed.tracking,
        facts.attributions,
        facts.desired.history,
        facts.observed.catalog,
        recorded=shown,
        audited=facts.observed.audited,
    )
    return frozenset(h.version for h in readiness.holds)


def run_checks(facts: Facts, types: Iterable[IssueType] | None = None, minimum: Severity = Severity.LOW) -> list[Issue]:
    wanted = set(types) if types else set(CHECKS)
    issues = [issue for t, fn in CHECKS.items() if t in wanted for issue in fn(facts)]
    return sorted((i for i in issues if i.severity is not None and i.severity >= minimum), key=lambda i: i.sort_key)
