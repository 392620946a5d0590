"""Test databases for an application's own test suite, and helpers for testing migrations.

The pytest plugin (plugin.py) is registered through the ``pytest11`` entry point: installing
poststack makes its fixtures available. docs/testing.md shows them in use.
"""

from reconciler.testing.migrations import MigrationSteps
from reconciler.testing.plugin import TestDatabase

__all__ = ["MigrationSteps", "TestDatabase"]
