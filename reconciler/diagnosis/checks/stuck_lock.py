"""stuck_lock: the lock row names a run that is no longer alive.

A crashed or killed run leaves it; poststack never waits on it. Usually the run's backend
is gone too: fixed by ``poststack db clean --locks --confirm``. When the run's poststack
process is gone but its backend still runs its last statement (it notices the vanished
client only when that statement ends), the row is not released blindly: wait for the
backend (``--wait``) or end it (``--terminate``).
"""

from __future__ import annotations

from reconciler.diagnosis.checks.base import Facts, check
from reconciler.diagnosis.issues import Issue, IssueType

ORPHAN_FIX = (
    "Wait for its backend to end, then release the lock: poststack db clean --locks --confirm --wait; "
    "or end it now: poststack db clean --locks --confirm --terminate"
)


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
                "client_alive": lock.client_alive,
                "backend_alive": lock.backend_alive,
            },
            suggested_fix=ORPHAN_FIX if lock.orphaned else None,
        )
    ]
