"""Test databases for an application's own test suite, and helpers for testing migrations.

The pytest plugin (plugin.py) is registered through the ``pytest11`` entry point: installing
poststack makes its fixtures available. docs/testing.md shows them in use.

pytest loads the plugin in every session of every project where poststack is installed, so
this package imports nothing of poststack's until a fixture is used (or a name below asked for).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.testing.migrations import MigrationSteps
    from reconciler.testing.plugin import TestDatabase

__all__ = ["MigrationSteps", "TestDatabase"]


def __getattr__(name: str) -> Any:
    if name == "MigrationSteps":
        from reconciler.testing.migrations import MigrationSteps

        return MigrationSteps
    if name == "TestDatabase":
        from reconciler.testing.plugin import TestDatabase

        return TestDatabase
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
