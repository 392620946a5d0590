"""Actions, one class each, registered by name. Importing this package registers them all."""

from reconciler.actions import locks, migrations, tracking_tables  # noqa: F401  (registration)
from reconciler.actions.base import Action, BuildContext, get_action, registered

__all__ = ["Action", "BuildContext", "get_action", "registered"]
