"""db baseline VERSION: declare every migration up to and including VERSION applied, on
purpose, after looking at what the evidence says of each (Flyway's ``baseline``, Prisma's
``migrate resolve --applied``, alembic's ``stamp``).

``baseline_items`` is pure: the facts diagnosis reads (attributions by catalog, replay,
verify script, audit) in, one item per migration out, saying what baseline does with it:

- ``record``: at or below VERSION and not tracked as applied: recorded, not run;
- ``tracked``: already tracked as applied: left as it is;
- ``pending``: after VERSION and not tracked: stays pending for db migrate.

and what the evidence says of whether it is applied: ``confirmed`` (the catalog, the replay,
a verify script or the audit table shows it applied), ``contradicted`` (they show it absent,
or only partly applied) or ``undetermined`` (nothing tells: a data-only migration, one
changed by hand). ``plan_baseline`` makes the plan (the ``baseline`` playbook) through the
same planner every fix uses; the CLI refuses to run it over contradicted evidence without
--confirm, and the executor runs it under the lock, audited.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from reconciler.config import Settings
from reconciler.db import connect
from reconciler.desired.files import Migration
from reconciler.desired.layouts import load_migrations
from reconciler.desired.versions import parse_version
from reconciler.diagnosis.attribution import Attribution, Verdict
from reconciler.diagnosis.checks import Facts
from reconciler.errors import UsageError, did_you_mean
from reconciler.remediation.fixes import build_context, read_plan_facts, with_default_variables
from reconciler.remediation.plan import Plan
from reconciler.remediation.planner import PlanRequest, plan_remediation
from reconciler.remediation.playbook import load_all

RECORD, TRACKED, PENDING = "record", "tracked", "pending"
CONFIRMED, UNDETERMINED, CONTRADICTED = "confirmed", "undetermined", "contradicted"
_EVIDENCE = {
    Verdict.APPLIED: CONFIRMED,
    Verdict.UNDETERMINED: UNDETERMINED,
    Verdict.ABSENT: CONTRADICTED,
    Verdict.PARTIAL: CONTRADICTED,
}


@dataclass(frozen=True)
class BaselineItem:
    version: str  # as its file writes it
    description: str
    decision: str  # RECORD, TRACKED or PENDING
    baseline: str  # the baseline's version, as its file writes it
    evidence: str | None = None  # CONFIRMED, UNDETERMINED or CONTRADICTED; None when tracked
    basis: str | None = None  # catalog, replay, order, verify script, audit
    reason: str = ""  # what the evidence is, in words

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "description": self.description,
            "decision": self.decision,
            "baseline": self.baseline,
            "evidence": self.evidence,
            "basis": self.basis,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class BaselinePlan:
    version: str  # the baseline's version, as its file writes it
    plan: Plan
    items: tuple[BaselineItem, ...]
    replayed: bool  # the replay's evidence was there (not --no-replay, and the replay ran)
    nothing_to_do: str | None = None

    @property
    def recorded(self) -> tuple[BaselineItem, ...]:
        return tuple(i for i in self.items if i.decision == RECORD)

    @property
    def contradicted(self) -> tuple[BaselineItem, ...]:
        return tuple(i for i in self.recorded if i.evidence == CONTRADICTED)

    @property
    def pending(self) -> tuple[BaselineItem, ...]:
        return tuple(i for i in self.items if i.decision == PENDING)

    @property
    def applied_after(self) -> tuple[BaselineItem, ...]:
        """Migrations after the baseline that the evidence shows applied: they stay pending,
        and migrate holds them until db recover tracks them."""
        return tuple(i for i in self.pending if i.evidence == CONFIRMED)


def _evidence(found: Attribution | None) -> tuple[str, str | None, str]:
    if found is None:  # every unapplied migration is attributed; an empty file says nothing
        return UNDETERMINED, None, "nothing was attributed"
    basis = found.basis if found.verdict is not Verdict.UNDETERMINED or found.basis != "catalog" else None
    return _EVIDENCE[found.verdict], basis, found.reason or found.verdict.value


def _failed_attempt(facts: Facts, migration: Migration) -> str:
    failed = facts.observed.tracking.failed.get(migration.key)
    return f"; its failed attempt ({failed.error or 'no error recorded'}) is replaced" if failed is not None else ""


def baseline_items(facts: Facts, target: Migration) -> list[BaselineItem]:
    """One item per versioned migration (Flyway repeatables have no version to baseline at)."""
    applied = facts.observed.tracking.applied
    items = []
    for migration in facts.desired.migrations.migrations:
        if migration.key.is_repeatable:
            continue
        common = {"version": migration.version, "description": migration.description, "baseline": target.version}
        if migration.key in applied:
            items.append(BaselineItem(**common, decision=TRACKED, reason="already tracked as applied: left as it is"))
            continue
        evidence, basis, reason = _evidence(facts.attributions.get(migration.version))
        if migration.file.empty:
            evidence, basis, reason = UNDETERMINED, None, "the file is empty: it changes nothing"
        if migration.key <= target.key:
            reason += _failed_attempt(facts, migration)
            items.append(BaselineItem(**common, decision=RECORD, evidence=evidence, basis=basis, reason=reason))
        else:
            items.append(BaselineItem(**common, decision=PENDING, evidence=evidence, basis=basis, reason=reason))
    return items


def find_target(settings: Settings, version: str) -> Migration:
    """The migration VERSION names: a usage error naming the directory (and the closest
    version) when no file has it."""
    migrations = load_migrations(settings.migrations_dir, settings.layout)
    parse_version(version)  # not a version at all: said so
    target = migrations.find(version)
    if target is None or target.key.is_repeatable:
        versions = [m.version for m in migrations.migrations if not m.key.is_repeatable]
        raise UsageError(
            f"no migration {version} in {settings.migrations_dir}{did_you_mean(version, versions)}",
            f"Versions there run from {versions[0]} to {versions[-1]}." if versions else "The directory has none.",
        )
    return target


def plan_baseline(settings: Settings, version: str, notify: Any = None) -> BaselinePlan:
    """What the evidence says of every migration up to VERSION, and the plan that records the
    untracked ones as applied. Reads the database (and replays in a shadow); changes nothing."""
    target = find_target(settings, version)
    playbooks = load_all(settings.migrations_dir)
    with connect(settings, notify) as session:
        facts = read_plan_facts(session, settings, notify)
    items = baseline_items(facts, target)
    outcome = facts.desired.replay
    replayed = outcome is not None and outcome.replay is not None and outcome.same_major
    request = PlanRequest(
        ("baseline",),
        (),
        {},
        "baseline",
        include_unhandled=False,
        baseline=tuple(i.to_json() for i in items),
    )
    plan = plan_remediation(facts, playbooks, with_default_variables(request, settings), build_context(settings, facts))
    nothing = None
    if not any(i.decision == RECORD for i in items):
        current = facts.observed.tracking.current
        at = f" (tracking is at {current.version})" if current is not None else ""
        nothing = f"Nothing to do: every migration up to {target.version} is already tracked as applied{at}"
        plan = replace(plan, nothing_to_do=nothing)
    return BaselinePlan(target.version, plan, tuple(items), replayed, nothing)


def refuse_contradicted(planned: BaselinePlan, *, confirm: bool) -> None:
    """Recording a migration the evidence says is not applied is a claim against what the
    database shows: only with --confirm, whoever plans it."""
    versions = [i.version for i in planned.contradicted]
    if versions and not confirm:
        raise UsageError(
            f"not recorded: the evidence says migration(s) {', '.join(versions)} are not applied; "
            "pass --confirm to record them as applied anyway",
            "Nothing was changed. If they never ran, baseline at an earlier version and let db migrate run them.",
        )
