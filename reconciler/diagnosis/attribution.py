"""Is an untracked migration applied? Decided from evidence only, never guessed.

Pure. Every verdict names its basis. A verify script has the last word. Then the replayed
states, where the history could be replayed (diagnosis/replayed.py: ``replay``, or
``order`` for a data-only migration between two shown applied). Else the parsed evidence
(``catalog``): applied only when every object only it leaves behind exists. With none of
these it is undetermined.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from reconciler.desired.files import Migration
from reconciler.desired.history import History
from reconciler.desired.versions import VersionKey
from reconciler.observed.catalog import CatalogSnapshot
from reconciler.observed.tracking import AuditedApplication

# Bases a verdict may name besides the catalog: the history's order, and the replayed history.
ORDER = "order"
REPLAY = "replay"


class Verdict(StrEnum):
    APPLIED = "applied"
    PARTIAL = "partial"
    ABSENT = "absent"
    UNDETERMINED = "undetermined"


class Shown(Protocol):
    """An object a verdict names: a parsed ObjectRef, or a replayed object."""

    def display(self) -> str: ...


@dataclass(frozen=True)
class Attribution:
    version: str
    verdict: Verdict
    found: tuple[Shown, ...] = ()
    missing: tuple[Shown, ...] = ()
    basis: str = "catalog"  # catalog, replay, order, verify script, audit, repeatable
    reason: str = ""


def attribute(
    migration: Migration,
    history: History,
    catalog: CatalogSnapshot,
    verify: bool | str | None,
    audited: AuditedApplication | None = None,
    replayed: Attribution | None = None,
) -> Attribution:
    if migration.key.is_repeatable:
        # Whatever the catalog shows, a repeatable never applied runs, as Flyway runs it: it is
        # written to be run again (CREATE OR REPLACE), so what exists is no sign it ran.
        return Attribution(
            migration.version,
            Verdict.ABSENT,
            basis="repeatable",
            reason="a repeatable runs whenever it is new or changed",
        )
    found = _attribute(migration, history, catalog, verify)
    if replayed is not None and verify is None:  # a verify script has the last word
        found = _combined(found, replayed)
    if audited is not None and audited.applied and found.basis != "verify script":
        # poststack's own audit trail says it ran and was not rolled back since: its tracking
        # row was lost. What the catalog lacks of it was dropped later (drift, or dynamic SQL
        # the parser cannot see): running it again would not undo that, and may apply its
        # data twice. A verify script still has the last word.
        how = "applied" if audited.action == "apply_migration" else "recorded as applied"
        reason = (
            f"the audit table says poststack {how} it at {audited.at:%Y-%m-%d %H:%M:%S %Z} "
            "and has not rolled it back since"
        )
        if found.verdict in (Verdict.ABSENT, Verdict.PARTIAL):
            # Two witnesses disagree: undone by hand, or dropped later. A person decides.
            reason += f", but the catalog lacks it ({found.reason}): undone by hand, or dropped later"
            return Attribution(found.version, Verdict.UNDETERMINED, found.found, found.missing, "audit", reason)
        return Attribution(found.version, Verdict.APPLIED, found.found, (), basis="audit", reason=reason)
    return found


def _combined(parsed: Attribution, replayed: Attribution) -> Attribution:
    """The replay decides where it can; where it cannot, the parsed evidence may still."""
    if replayed.verdict is not Verdict.UNDETERMINED:
        return replayed
    if parsed.verdict is not Verdict.UNDETERMINED:
        return parsed
    reason = f"{parsed.reason}; replayed, {replayed.reason}"
    return Attribution(parsed.version, Verdict.UNDETERMINED, basis=replayed.basis, reason=reason)


def _attribute(
    migration: Migration, history: History, catalog: CatalogSnapshot, verify: bool | str | None
) -> Attribution:
    version = migration.version
    if isinstance(verify, bool):
        verdict = Verdict.APPLIED if verify else Verdict.ABSENT
        return Attribution(
            version,
            verdict,
            basis="verify script",
            reason=f"{migration.verify.path.name if migration.verify else 'its verify script'} returned "
            f"{str(verify).lower()}",
        )
    if isinstance(verify, str):
        return Attribution(
            version, Verdict.UNDETERMINED, basis="verify script", reason=f"its verify script gave no answer: {verify}"
        )
    effects = history.effects.get(version)
    if effects is not None and effects.error:
        return Attribution(version, Verdict.UNDETERMINED, reason=f"the file {effects.error}")
    evidence = history.evidence_of(version)
    # What it drops for good must be gone if it ran: one still there says it did not (fully).
    left = tuple(o for o in history.gone_after(version) if catalog.has(o))
    if not evidence:
        if left:
            return Attribution(version, Verdict.ABSENT, reason=f"{left[0].display()}, which it drops, still exists")
        return Attribution(version, Verdict.UNDETERMINED, reason=_no_evidence_reason(migration, history))
    found = tuple(o for o in evidence if catalog.has(o))
    missing = tuple(o for o in evidence if not catalog.has(o)) + left
    reason = f"{len(found)} of {len(evidence)} objects exist"
    if left:
        reason += f"; {len(left)} it drops still exist ({', '.join(o.display() for o in left[:3])})"
    if not missing:
        verdict = Verdict.APPLIED
    elif found:
        verdict = Verdict.PARTIAL
    else:
        verdict = Verdict.ABSENT
    return Attribution(version, verdict, found, missing, reason=reason)


def attribute_unapplied(
    migrations: Iterable[Migration],
    applied: Container[int],
    history: History,
    catalog: CatalogSnapshot,
    verify: Mapping[str, bool | str],
    audited: Mapping[VersionKey, AuditedApplication],
    replayed: Mapping[str, Attribution] | None = None,
) -> dict[str, Attribution]:
    """What the evidence says of every migration without a successful tracking row. A failed
    attempt does not stop the look: the migration may have been applied by hand before it
    (the attempt failed on that). ``replayed``: verdicts by state, where replay ran."""
    replayed = replayed or {}
    return {
        m.version: attribute(m, history, catalog, verify.get(m.version), audited.get(m.key), replayed.get(m.version))
        for m in migrations
        if m.key not in applied
    }


def _no_evidence_reason(migration: Migration, history: History) -> str:
    effects = history.effects.get(migration.version)
    unattributed = effects.unattributed if effects else ()
    if unattributed:
        kinds = sorted({u.reason for u in unattributed})
        return "it has no attributable effects (" + "; ".join(kinds) + ") and no verify script"
    if effects and effects.creates:
        return "everything it creates is also created, dropped or renamed by another migration, and it has no verify script"
    return "it has no attributable effects and no verify script"
