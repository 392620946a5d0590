"""db import: another tool's history, cross-checked against the catalog, as items for the
import playbook. Pure: the foreign rows and the observed state in, one item per migration
the tool has an opinion on out.

Each item says what import does with it and why:
- ``import``: the tool recorded it applied, and the catalog agrees or cannot tell;
- ``failed``: the tool's run failed part-way (golang-migrate ``dirty``, Flyway or sqlx
  ``success = false``, a Prisma migration never finished): recorded as a failed attempt, so
  diagnose shows a partial_migration for a person to resolve;
- ``refuse``: the tool says applied but the catalog contradicts it, or there is no file for
  it: reported, never imported silently;
- ``skip``: poststack already tracks it, or the tool undid it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from reconciler.desired.files import Migration
from reconciler.desired.versions import VersionKey, version_key
from reconciler.diagnosis.attribution import Verdict, attribute
from reconciler.diagnosis.checks import Facts
from reconciler.observed.foreign import APPLIED, BASELINE, FAILED, UNDONE, ForeignHistory, ForeignRow

IMPORT, FAILED_ATTEMPT, REFUSE, SKIP = "import", "failed", "refuse", "skip"


@dataclass(frozen=True)
class ImportItem:
    version: str  # the file's, as written; the tool's when there is no file
    tool_version: str  # as the tool recorded it
    decision: str  # IMPORT, FAILED_ATTEMPT, REFUSE or SKIP
    reason: str
    description: str | None = None
    checksum: str | None = None  # the tool's, kept when the file changed since the tool ran it
    algorithm: str | None = None
    detail: str | None = None  # a failed run's error
    # Applied only by inference (below golang-migrate's current version, at or below a Flyway
    # baseline), not by a row of its own: recorded as tracked, not as run.
    inferred: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _claims(
    history: ForeignHistory, migrations: tuple[Migration, ...]
) -> list[tuple[ForeignRow, Migration | None, bool]]:
    """What the tool says of each version: its rows' last word per version, and for
    golang-migrate (one row, the current version) or a Flyway baseline, the versions below."""
    last: dict[VersionKey | str, ForeignRow] = {}
    for row in history.rows:
        key = version_key(row.version)
        last[key if key is not None else row.version] = row
    by_key = {m.key: m for m in migrations}
    claims: list[tuple[ForeignRow, Migration | None, bool]] = []
    floors = [
        (k, r) for k, r in last.items() if isinstance(k, VersionKey) and (r.state == BASELINE or history.cumulative)
    ]
    for key, row in floors:
        # Below the current (golang-migrate) or baseline (Flyway) version: applied, says the tool.
        word = "below golang-migrate's current version" if history.cumulative else "at or below Flyway's baseline"
        for migration in migrations:
            at_baseline = row.state == BASELINE and migration.key == key
            if (migration.key < key and migration.key not in last) or at_baseline:
                claims.append((ForeignRow(migration.version, APPLIED, detail=f"{word} {row.version}"), migration, True))
    for key, row in last.items():
        if row.state == BASELINE:
            continue
        claims.append((row, by_key.get(key) if isinstance(key, VersionKey) else None, False))
    return sorted(claims, key=lambda c: (c[1].key if c[1] else VersionKey((-1,)), c[0].version))


def _unchanged(row: ForeignRow, migration: Migration) -> bool | None:
    """Is the file what the tool ran, by the tool's own rule? None: the tool keeps no checksum.
    Prisma accepts the script with LF or CRLF line ends, and its early unpadded hex."""
    if not row.checksum or not row.algorithm:
        return None
    file = migration.file
    if row.algorithm == "sha256":
        texts = (file.raw, file.text.encode("utf-8"), file.text.replace("\n", "\r\n").encode("utf-8"))
        digests = [hashlib.sha256(t).digest() for t in texts]
        return row.checksum in {d.hex() for d in digests} | {"".join(f"{b:x}" for b in d) for d in digests}
    return file.checksum_as(row.algorithm) == row.checksum


def import_items(history: ForeignHistory, facts: Facts) -> list[ImportItem]:
    desired, observed = facts.desired, facts.observed
    items = []
    for row, migration, inferred in _claims(history, desired.migrations.migrations):
        tool = history.tool
        if migration is None:
            if row.state in (APPLIED, FAILED):
                if row.version.startswith("-"):
                    why = (
                        f"{tool} recorded version {row.version} {row.state}: rolling back the first migration "
                        "failed part-way, so what is left of it is for a person to check"
                    )
                else:
                    why = f"{tool} recorded version {row.version} {row.state}, but no migration file has that version"
                items.append(ImportItem(row.version, row.version, REFUSE, why, row.description))
            continue
        version = migration.version
        tracked = observed.tracking.applied.get(migration.key)
        if tracked is not None:
            items.append(ImportItem(version, row.version, SKIP, "already tracked by poststack", migration.description))
            continue
        if row.state == UNDONE:
            items.append(ImportItem(version, row.version, SKIP, f"{tool} undid it", migration.description))
            continue
        if row.state == FAILED and migration.key in observed.tracking.failed:
            items.append(
                ImportItem(version, row.version, SKIP, "its failed attempt is already recorded", migration.description)
            )
            continue
        if row.state == FAILED:
            items.append(
                ImportItem(
                    version,
                    row.version,
                    FAILED_ATTEMPT,
                    f"{tool}'s run failed part-way",
                    migration.description,
                    detail=row.detail or "failed",
                )
            )
            continue
        said = f"{tool} recorded it applied" + (f" ({row.detail})" if row.detail else "")
        if migration.key.is_repeatable:
            # Written to run again, so the catalog cannot contradict it: the tool's last run
            # stands, with its checksum when the file changed since, so migrate runs it again.
            items.append(_imported(row, migration, f"{said}; a repeatable is taken as {tool} ran it", tool))
            continue
        found = attribute(
            migration,
            desired.history,
            observed.catalog,
            observed.verify.get(version),
            observed.audited.get(migration.key),
        )
        if found.verdict is Verdict.APPLIED:
            reason = f"{said}; the {found.basis} agrees"
        elif found.verdict is Verdict.UNDETERMINED:
            reason = f"{said}; the catalog cannot tell ({found.reason or 'it leaves nothing to see'})"
        else:
            missing = ", ".join(m.display() for m in found.missing[:3]) or "what it creates"
            state = "only part of it" if found.verdict is Verdict.PARTIAL else "none of it"
            reason = f"{said}, but the catalog shows {state}: {missing} missing"
            items.append(ImportItem(version, row.version, REFUSE, reason, migration.description))
            continue
        items.append(_imported(row, migration, reason, tool, inferred))
    return items


def _imported(row: ForeignRow, migration: Migration, reason: str, tool: str, inferred: bool = False) -> ImportItem:
    """Unchanged since the tool ran it: recorded with poststack's checksum of the file. Changed:
    the tool's own, so diagnose reports the edit (checksum_mismatch) in the tool's terms (for
    a repeatable: so migrate runs it again)."""
    changed = _unchanged(row, migration) is False
    checksum, algorithm = (row.checksum, row.algorithm) if changed else (None, None)
    if changed:
        reason += f"; the file changed since {tool} ran it"
    return ImportItem(
        migration.version, row.version, IMPORT, reason, migration.description, checksum, algorithm, None, inferred
    )
