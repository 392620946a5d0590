"""Actions, one class each, registered by name. Importing this package registers them all."""

from reconciler.remediation.actions import (  # noqa: F401  (registration)
    baseline,
    locks,
    migrations,
    operations,
    tracking_rows,
    tracking_tables,
)
from reconciler.remediation.actions.base import Action, BuildContext, RunContext, StepError, get_action, registered

__all__ = ["Action", "BuildContext", "RunContext", "StepError", "get_action", "registered"]
