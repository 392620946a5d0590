"""Where the files poststack ships beside its code live: the built-in playbooks, the JSON
Schemas and the example migrations.

In a source checkout (and an editable install) they are the repository's top-level
directories; an installed wheel carries copies under ``reconciler/_data/`` (setup.py).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_ROOT = _PACKAGE / "_data" if (_PACKAGE / "_data").is_dir() else _PACKAGE.parent

PLAYBOOKS = _ROOT / "playbooks"
SCHEMAS = _ROOT / "schemas"
EXAMPLE_MIGRATIONS = _ROOT / "migrations"
