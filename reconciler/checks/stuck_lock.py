"""stuck_lock: the lock row names a holder that is no longer a live backend.

A crashed or killed run leaves it; poststack never waits on it. Fixed by
``poststack db clean --locks --confirm``.
"""

from __future__ import annotations

from reconciler.checks.base import Facts, check
from reconciler.issues import Issue, IssueType


@check(IssueType.STUCK_LOCK)
def stuck_lock(facts: Facts) -> list[Issue]:
    lock = facts.observed.tracking.lock
    if lock is None or not lock.locked or lock.holder_alive:
        return []
    return [
        Issue(
            IssueType.STUCK_LOCK,
            f"Migration lock is {lock.describe()}",
            None,
            {
                "locked_by": lock.locked_by,
                "backend_pid": lock.backend_pid,
                "application_name": lock.application_name,
                "locked_at": lock.locked_at.isoformat() if lock.locked_at else None,
                "age_seconds": round(lock.age_s) if lock.age_s is not None else None,
                "holder_alive": lock.holder_alive,
            },
        )
    ]
