"""Which migrations db migrate would run: the one judgment status, info, lint and planning
share. Its own small module, so the commands that only list (migration-status) do not
import the evidence and planning behind db migrate's decisions."""

from __future__ import annotations

from reconciler.desired.files import Migration
from reconciler.observed.tracking import ObservedTracking


def is_pending(migration: Migration, tracking: ObservedTracking) -> bool:
    """db migrate would run it: no successful tracking row, or a changed repeatable."""
    return migration.key not in tracking.applied or changed_repeatable(migration, tracking)


def changed_repeatable(migration: Migration, tracking: ObservedTracking) -> bool:
    """An applied Flyway repeatable due to run again: its file is not what was last applied,
    or its last attempt failed (a failed attempt is retried, as a versioned one's is)."""
    row = tracking.applied.get(migration.key)
    if not migration.key.is_repeatable or row is None:
        return False
    if migration.key in tracking.failed:
        return True
    return bool(row.checksum) and migration.file.checksum_as(row.checksum_algorithm) != row.checksum
