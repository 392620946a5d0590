"""poststack's own version: cheap to import, for `poststack version`."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from reconciler import __version__


@dataclass(frozen=True)
class VersionResult:
    poststack: str
    python: str


def version() -> VersionResult:
    return VersionResult(__version__, sys.version.split()[0])


def version_text() -> str:
    """What `poststack version` prints."""
    result = version()
    return f"poststack {result.poststack} (python {result.python})"
