"""Checks: one small pure module per issue type, registered by type.

Each check is ``fn(facts) -> list[Issue]``; ``facts`` holds the desired and observed state
and what is derived from both once (attributions of untracked migrations).
"""

from __future__ import annotations

from reconciler.diagnosis.checks.base import CHECKS, Facts, run_checks

# Importing the modules registers their checks.
from reconciler.diagnosis.checks import (  # noqa: F401  isort: skip
    missing_tracking,
    checksum_mismatch,
    stuck_lock,
    duplicate_version,
    partial_migration,
    rollback_missing,
    orphaned_schema,
    missing_file,
    out_of_order,
    missing_objects,
    invalid_index,
    undetermined,
    invalid_file,
    unsafe_migration,
)

__all__ = ["CHECKS", "Facts", "run_checks"]
