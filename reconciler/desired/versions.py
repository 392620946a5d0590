"""Versions as written, and the ordered keys that sort them the way each tool does.

One rule serves every layout poststack reads: a version is digits, optionally in dotted
parts (Flyway's ``1.2.10``, or ``1_2_10`` in a file name), or digits with dashes (diesel's
``2020-01-01-000000``). Each part compares as a number, so digits of any width sort right
(``9`` before ``10``; ``002`` is ``2``), and trailing zero parts do not count, as in Flyway
(``1.0`` is ``1``). Flyway's repeatable migrations (``R__name``) have no version: they come
after every versioned one, by name, as Flyway runs them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reconciler.errors import UsageError

_DOTTED = re.compile(r"^\d+(?:[._]\d+)*$")
_DASHED = re.compile(r"^\d+(?:-\d+)+$")
REPEATABLE_PREFIX = "R__"
_AFTER_EVERY_VERSION = (1 << 63,)


@dataclass(frozen=True, order=True)
class VersionKey:
    """A version's place in the history. Compares and hashes by value: ``002`` and ``2`` are
    one version, ``1.10`` comes after ``1.9``."""

    parts: tuple[int, ...]
    repeatable: str = ""  # a Flyway repeatable's name; its parts sort after every version

    @property
    def is_repeatable(self) -> bool:
        return bool(self.repeatable)

    def __str__(self) -> str:
        return f"{REPEATABLE_PREFIX}{self.repeatable}" if self.repeatable else ".".join(str(p) for p in self.parts)


def version_key(text: str) -> VersionKey | None:
    """The key of a version as written, or None when ``text`` is not a version."""
    text = text.strip()
    if text.startswith(REPEATABLE_PREFIX) and len(text) > len(REPEATABLE_PREFIX):
        return VersionKey(_AFTER_EVERY_VERSION, text.removeprefix(REPEATABLE_PREFIX))
    if _DASHED.match(text):
        return VersionKey((int(text.replace("-", "")),))
    if not _DOTTED.match(text):
        return None
    parts = [int(p) for p in re.split(r"[._]", text)]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return VersionKey(tuple(parts))


def parse_version(text: str) -> VersionKey:
    """A version the user typed (``--target``, ``rollback VERSION``): a UsageError if it is none."""
    key = version_key(text)
    if key is None:
        raise UsageError(
            f"version {text!r} is not a version",
            "Versions are the digits a migration's name starts with: 042, 20240101120000, or Flyway's 1.2.3.",
        )
    return key
