"""Which pending migrations may run now, and why the others wait. Pure.

A migration runs only when nothing observed says it may have run already. Tracking is
trusted where poststack itself ran the migrations before it; the catalog (or a verify
script) speaks for the rest. What is left unsure is held, with a sentence a person can act
on, and nothing after the first held migration runs: running a later migration over an
unresolved earlier one is how data migrations get applied twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from reconciler.config import TrackingLocation
from reconciler.desired.effects import ObjectRef, OwnTableConflict
from reconciler.desired.files import FileProblem, Migration, MigrationSet
from reconciler.desired.history import ALWAYS_PRESENT, History
from reconciler.desired.versions import VersionKey, version_key
from reconciler.diagnosis.attribution import ORDER, Attribution, Verdict
from reconciler.diagnosis.due import changed_repeatable
from reconciler.errors import MigrationFileError, PoststackError
from reconciler.observed.catalog import CatalogSnapshot
from reconciler.observed.tracking import FAILED_ATTEMPT, AuditedApplication, ObservedTracking, TrackingRow


class HoldKind(StrEnum):
    MISSING_TRACKING = "missing_tracking"
    PARTIAL = "partial_migration"
    FAILED_OUTSIDE_TRANSACTION = "failed_outside_transaction"
    OUT_OF_ORDER = "out_of_order"
    UNDETERMINED = "undetermined"
    RENUMBERED = "renumbered"
    UNREADABLE = "invalid_file"  # the directory has files poststack cannot read whole


@dataclass(frozen=True)
class Allowances:
    """What the user explicitly allowed (flags), beyond what the evidence allows."""

    out_of_order: bool = False  # --allow-out-of-order
    undetermined: bool = False  # --allow-undetermined
    retry_failed: bool = False  # --retry-failed: a failure outside a transaction was looked at
    retry: frozenset[str] = frozenset()  # versions whose failure outside a transaction may be retried


NOTHING_ALLOWED = Allowances()


@dataclass(frozen=True)
class Runnable:
    migration: Migration
    retry: bool  # a failed attempt's row is replaced when it succeeds
    reapply: bool = False  # a Flyway repeatable changed since it was applied: it gets a new row


@dataclass(frozen=True)
class Hold:
    version: str
    kind: HoldKind
    reason: str  # why it cannot run: one sentence
    remedy: str  # what to run next
    newer: str | None = None  # out of order: the newest applied migration it is older than


@dataclass(frozen=True)
class OwnTableRisk:
    """A statement of a migration that would run which would break poststack's own tables."""

    migration: Migration
    conflict: OwnTableConflict
    location: TrackingLocation

    @property
    def message(self) -> str:
        schema = "poststack" if self.location.schema != "poststack" else "poststack_tracking"
        prefix = "poststack_" if self.location.prefix != "poststack_" else "poststack_tracking_"
        # Another prefix keeps poststack's tables out of the way of a table of the same
        # name, not of a statement on the whole schema.
        apart = "" if self.conflict.whole_schema else f" or --table-prefix (e.g. --table-prefix {prefix}),"
        if self.conflict.what.startswith("drops everything "):
            return (
                f"{self.migration.path}:{self.conflict.line}: {self.conflict.what}. Drop the objects by name instead."
            )
        return (
            f"{self.migration.path}:{self.conflict.line}: {self.conflict.what}. Keep poststack's tables apart with "
            f"--schema (e.g. --schema {schema}){apart} or remove that statement."
        )


def own_table_risks(migration: Migration, history: History | None, location: TrackingLocation) -> list[OwnTableRisk]:
    """The statements of ``migration`` that would break poststack's tables at ``location``
    (the history was read with that location: see observed.state.read_history)."""
    effects = history.effects.get(migration.version) if history is not None else None
    return [OwnTableRisk(migration, c, location) for c in (effects.conflicts if effects else ())]


class OwnTablesAtRisk(MigrationFileError):
    """Migrations that would run would drop, rename, truncate, move or write poststack's own tables:
    refused before anything runs, as a file poststack cannot use with this tracking schema."""

    def __init__(self, risks: tuple[OwnTableRisk, ...]) -> None:
        more = (
            f" (and {len(risks) - 1} more such statement(s); poststack db validate lists them)"
            if len(risks) > 1
            else ""
        )
        super().__init__(risks[0].message + more)
        self.risks = risks


@dataclass(frozen=True)
class Readiness:
    runnable: tuple[Runnable, ...]  # in order, all before the first hold
    holds: tuple[Hold, ...]  # every held migration, in order
    waiting: tuple[str, ...]  # not held themselves, but after the first hold
    # Statements of runnable migrations that would break poststack's own tables: nothing may run.
    risks: tuple[OwnTableRisk, ...] = ()

    @property
    def blocked(self) -> bool:
        return bool(self.holds)


def decide(
    migrations: MigrationSet,
    tracking: ObservedTracking,
    attributions: Mapping[str, Attribution],
    history: History | None,
    catalog: CatalogSnapshot | None,
    allow: Allowances = NOTHING_ALLOWED,
    limit: VersionKey | None = None,
    recorded: frozenset[VersionKey] = frozenset(),
    audited: Mapping[VersionKey, AuditedApplication] | None = None,
    problems: Sequence[FileProblem] = (),
) -> Readiness:
    """``attributions`` covers every migration without a successful tracking row (it may be
    empty when there is none). ``recorded``: versions that steps earlier in the same plan
    record as applied without running them (recover). ``audited``: what the audit table
    says poststack ran, which a row recorded by recover since does not undo."""
    # version number -> whether poststack ran it (False: recorded without running it)
    audited = audited or {}
    # Baselined versions vouch as run ones do: the person said what after them has not run.
    ran = {n for n, a in audited.items() if a.vouches}
    applied: dict[VersionKey, bool] = {
        n: not row.recorded_without_running or n in ran for n, row in tracking.applied.items()
    }
    applied.update({n: False for n in recorded})
    shown_applied = [
        m.key for m in migrations.migrations if m.key not in applied and _verdict(attributions, m) is Verdict.APPLIED
    ]
    # Repeatables come after every version; a new version is not "older" than one of them.
    newest = max((k for k in [*applied, *shown_applied] if not k.is_repeatable), default=None)
    files = {m.key for m in migrations.migrations}
    fileless = [row for n, row in tracking.applied.items() if n not in files and row.checksum]
    runnable: list[Runnable] = []
    holds: list[Hold] = []
    waiting: list[str] = []
    risks: list[OwnTableRisk] = []
    for migration in migrations.migrations:
        if limit is not None and migration.key > limit:
            continue
        if problems and not holds and migration.key not in applied:
            # A file that cannot be read whole may be a migration that belongs before this one:
            # nothing runs until the directory is whole again, as db migrate refuses it.
            count = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            holds.append(
                Hold(
                    migration.version,
                    HoldKind.UNREADABLE,
                    f"Migration {migration.version} is not run while the migrations directory has a file poststack "
                    f"cannot read whole: {problems[0].message}{count}",
                    "Fix or remove it (poststack db validate lists every such file), then run this again.",
                )
            )
            continue
        if migration.key in applied:
            if not changed_repeatable(migration, tracking):
                continue
            # Run again whenever it changes, as Flyway does; held only when its last attempt
            # failed outside a transaction (it may be half-applied), like a versioned one.
            failed = tracking.failed.get(migration.key)
            hold = _failed_outside_transaction(migration, failed, allow) if failed is not None else None
            if hold is not None:
                holds.append(hold)
            elif holds:
                waiting.append(migration.version)
            else:
                runnable.append(Runnable(migration, failed is not None, reapply=True))
            continue
        hold = (
            None
            if migration.file.empty
            else (
                _renumbered(migration, fileless)
                or _failed_in_audit(migration, tracking, audited.get(migration.key), allow)
                or _hold(migration, tracking, attributions, history, catalog, allow, applied, newest)
            )
        )
        if hold is not None:
            holds.append(hold)
            continue
        if holds:
            waiting.append(migration.version)
        else:
            runnable.append(Runnable(migration, migration.key in tracking.failed))
            # Only what would run now: one behind a hold may yet be tracked without running.
            risks += own_table_risks(migration, history, tracking.location)
        # What poststack runs (now, or once the hold before it is resolved) vouches for what
        # follows; an empty migration vouches for nothing: it could never have been tracked by
        # whoever ran the ones around it by hand.
        if not migration.file.empty:
            applied[migration.key] = True
    return Readiness(tuple(runnable), tuple(holds), tuple(waiting), tuple(risks))


def _renumbered(migration: Migration, fileless: list[TrackingRow]) -> Hold | None:
    """A pending file with the very content of an applied migration whose file is gone: the
    same migration under a new number (a merge conflict resolved by renaming), not a new one.
    Repeatables have no number: one renamed is a new repeatable, and runs, as in Flyway."""
    if migration.key.is_repeatable:
        return None
    for row in fileless:
        if row.key.is_repeatable:
            continue
        if migration.file.checksum_as(row.checksum_algorithm) == row.checksum:
            return Hold(
                migration.version,
                HoldKind.RENUMBERED,
                f"Migration {migration.version} has the same content as applied migration {row.version}, whose "
                "file is gone: it was renumbered, and running it would apply it again",
                f"Give the file its old version back ({row.version}_…); if it is a new migration that only looks "
                "the same, make it differ (a comment will do).",
            )
    return None


def _kept(migration: Migration, error: str | None) -> str:
    """Which of its statements the failed attempt kept: those before the line it failed on
    (its error starts with file:line), said so a person can make them safe to run again."""
    match = re.match(r"^(?P<file>[^\n]*?):(?P<line>\d+): ", error or "")
    if match is None or not match["file"].endswith(migration.path.name):
        return ""
    try:
        statements = migration.file.script.statements
    except PoststackError:
        return ""
    before = [s for s in statements if s.line < int(match["line"])]
    if not before:
        return "; nothing before the failing statement ran"
    shown = ", ".join(f"line {s.line} ({s.kind.removesuffix('Stmt')})" for s in before[:4])
    more = f" and {len(before) - 4} more" if len(before) > 4 else ""
    return f"; kept from that attempt: {shown}{more}"


def _failed_in_audit(
    migration: Migration, tracking: ObservedTracking, audited: AuditedApplication | None, allow: Allowances
) -> Hold | None:
    """Its tracking rows are gone (a reset, rows deleted by hand), but the audit table's last
    word is a failed attempt of a file that runs outside a transaction: part of it may have
    been kept, and running it whole again may repeat that part."""
    if audited is None or audited.action != FAILED_ATTEMPT or migration.key in tracking.failed:
        return None
    try:
        transactional = migration.file.script.transactional
    except PoststackError:
        return None  # a file that does not parse is refused on its own
    if transactional or allow.retry_failed or migration.version in allow.retry:
        return None
    return Hold(
        migration.version,
        HoldKind.FAILED_OUTSIDE_TRANSACTION,
        f"Migration {migration.version} failed earlier outside a transaction and may be partly applied (the "
        f"audit table records its last attempt failing: {audited.detail}); its tracking rows are gone",
        "See what it left with poststack db diagnose, clean that up or make the file tolerate it, then run "
        "poststack db migrate --retry-failed.",
    )


def _failed_outside_transaction(migration: Migration, failed: TrackingRow, allow: Allowances) -> Hold | None:
    """Its last attempt failed outside a transaction, and no one said to retry it."""
    if failed.transactional or allow.retry_failed or migration.version in allow.retry:
        return None
    return Hold(
        migration.version,
        HoldKind.FAILED_OUTSIDE_TRANSACTION,
        f"Migration {migration.version} failed earlier outside a transaction and may be partly applied "
        f"(its error was: {failed.error}){_kept(migration, failed.error)}",
        "See what it left with poststack db diagnose (an INVALID index, some of its objects), clean that "
        "up or make the file tolerate it, then run poststack db migrate --retry-failed: the whole file "
        "runs again.",
    )


def _verdict(attributions: Mapping[str, Attribution], migration: Migration) -> Verdict | None:
    found = attributions.get(migration.version)
    return found.verdict if found is not None else None


def _hold(
    migration: Migration,
    tracking: ObservedTracking,
    attributions: Mapping[str, Attribution],
    history: History | None,
    catalog: CatalogSnapshot | None,
    allow: Allowances,
    applied: dict[VersionKey, bool],
    newest: VersionKey | None,
) -> Hold | None:
    version = migration.version
    found = attributions.get(version)
    verdict = found.verdict if found is not None else None
    failed = tracking.failed.get(migration.key)
    see = "poststack db diagnose shows the evidence"
    if failed is not None and not failed.transactional:
        held = _failed_outside_transaction(migration, failed, allow)
        if held is not None:
            return held
        if verdict is Verdict.APPLIED and found is not None:
            return Hold(
                version,
                HoldKind.MISSING_TRACKING,
                f"Migration {version} failed earlier outside a transaction, but now all of it shows in the "
                f"catalog ({found.reason}); running it again could apply it twice",
                "If it was finished by hand, clear the failed attempt (poststack db repair --force), then track "
                "it (poststack db recover).",
            )
        return None  # the person looked, and made the file tolerate what the attempt left
    if verdict is Verdict.APPLIED and found is not None and found.basis == ORDER:
        # Not released by --allow-out-of-order: that is the advice for a migration skipped on
        # purpose, and this one probably ran. Running it again is a decision of its own.
        if allow.undetermined:
            return None
        return Hold(
            version,
            HoldKind.UNDETERMINED,
            f"Migration {version} is pending but probably ran already: {found.reason.removesuffix(' (by order only)')}",
            f"If it ran, track it without running it: poststack db recover --trust-order {version}; if it did "
            "not, run it: poststack apply --allow-undetermined.",
        )
    if verdict is Verdict.APPLIED and found is not None:
        basis = found.reason if found.basis == "catalog" else found.reason or found.basis
        attempt = f" (an earlier attempt to run it failed: {failed.error})" if failed is not None else ""
        return Hold(
            version,
            HoldKind.MISSING_TRACKING,
            f"Migration {version} appears to be applied already but is not tracked ({basis}){attempt}; "
            "running it again could apply it twice",
            f"Track it without running it: poststack db recover ({see}).",
        )
    if verdict is Verdict.PARTIAL and found is not None:
        return Hold(
            version,
            HoldKind.PARTIAL,
            f"Migration {version} is partly applied ({found.reason})",
            f"Finish it or undo it by hand, then run poststack db migrate ({see}).",
        )
    if verdict is Verdict.UNDETERMINED and found is not None and found.basis == "audit" and not allow.undetermined:
        return Hold(
            version,
            HoldKind.UNDETERMINED,
            f"Migration {version} cannot be confirmed pending: {found.reason}",
            f"If it is still applied, track it: poststack db recover --force {version}; if it was undone and "
            "must run again: poststack db migrate --allow-undetermined.",
        )
    if newest is not None and migration.key < newest and not allow.out_of_order:
        newer = _version_of(newest, tracking, attributions)
        if verdict is Verdict.ABSENT:
            why = (
                f"Migration {version} is pending but older than applied migration {newer}: it was skipped, "
                "perhaps on purpose, or merged from another branch"
            )
            remedy = (
                "To run it now, out of order: poststack db migrate --allow-out-of-order; "
                f"or give it a version above {newer}."
            )
        else:
            why = (
                f"Migration {version} is pending but older than applied migration {newer}, and nothing in the "
                "catalog shows whether it ran: it was probably applied by hand (its tracking lost) or skipped on purpose"
            )
            remedy = (
                f"If it ran, track it without running it: poststack db recover --force {version} (or give it a "
                "verify script); to run it now, out of order: poststack db migrate --allow-out-of-order."
            )
        return Hold(version, HoldKind.OUT_OF_ORDER, why, remedy, newer)
    if verdict is Verdict.UNDETERMINED and failed is None and not allow.undetermined:
        unsure = _why_unsure(migration, applied, history, catalog, tracking.schema)
        if unsure is not None:
            return Hold(
                version,
                HoldKind.UNDETERMINED,
                f"Migration {version} cannot be confirmed pending: {unsure}, and nothing it does shows in the catalog",
                f"If it ran, track it: poststack db recover --force {version}"
                + (
                    f" (or add {migration.verify_at.name} returning true once it has run)"
                    if migration.verify_at
                    else ""
                )
                + "; if it did not, run it: poststack db migrate --allow-undetermined.",
            )
    return None


def _why_unsure(
    migration: Migration,
    applied: dict[VersionKey, bool],
    history: History | None,
    catalog: CatalogSnapshot | None,
    tracking_schema: str,
) -> str | None:
    """Why the tracking table cannot vouch that ``migration`` never ran, or None when it can:
    the migrations before it ran through poststack, which would have recorded this one too."""
    before = [n for n in applied if n < migration.key]
    if before:
        if applied[max(before)]:
            return None
        return "the migrations before it were recorded without poststack running them (db recover), so it may have run with them"
    present = _history_object_present(history, catalog, tracking_schema)
    if present is None:
        return None
    return (
        f"nothing before it is tracked, yet {present.display()}, which this history creates, exists: "
        "part of the history ran without poststack"
    )


def _history_object_present(
    history: History | None, catalog: CatalogSnapshot | None, tracking_schema: str
) -> ObjectRef | None:
    """An object the history creates that exists now (objects every database has, and the
    tracking schema, prove nothing)."""
    if history is None or catalog is None:
        return None
    never = ALWAYS_PRESENT | {("schema", tracking_schema)}
    for effects in history.effects.values():
        for statement in effects.statements:
            for ref in statement.creates:
                if (ref.kind, ref.name) in never and ref.schema is None:
                    continue
                if catalog.has(ref):
                    return ref
    return None


def _version_of(number: VersionKey, tracking: ObservedTracking, attributions: Mapping[str, Attribution]) -> str:
    row = tracking.applied.get(number)
    if row is not None:
        return row.version
    for version in attributions:
        if version_key(version) == number:
            return version
    return str(number)
