"""Replayed states kept under .poststack/, so an unchanged history is not replayed again.

The state before the first migration is kept whole; after that, what each migration
changed (a history's cache grows with its changes, not with its length times its size).
A state is keyed by the server's major version, the snapshot query itself, the search_path
migrations run with, and the chain of every migration up to it (version, checksum, whether
it runs in a transaction): an edited file changes its key and every key after it, and only
those.

One file holds a history: the start, then each migration's key and changes, in order. It is
named by the start's key, so it is found without a search, and written whole (a temporary
file, then a rename) after each replay: one file, not one a migration (on a slow disk, 350
small files cost more than the replay's catalog reads). A file that cannot be read, or a
step whose key differs, ends what is known there. Switching between two branches replays
what follows where they part, each time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.desired.files import Migration
from reconciler.desired.replay.snapshot import SNAPSHOT_QUERY, Changes, Snapshot
from reconciler.kept import write_whole

_QUERY = hashlib.sha256(SNAPSHOT_QUERY.encode()).hexdigest()[:16]
_FORMAT = 4  # 4: states kept by incremental reads that missed what no event reports are not trusted


@dataclass(frozen=True)
class Known:
    """What the cache knows of a history: the start, and the changes of its first migrations."""

    start: Snapshot | None
    changes: tuple[Changes, ...] = ()  # empty when start is None


@dataclass(frozen=True)
class ReplayCache:
    directory: Path  # e.g. <project>/.poststack/replay
    server_major: int

    def keys(self, migrations: Sequence[Migration], context: str = "") -> list[str]:
        """The key of the state before the first migration, then of the state after each.
        ``context``: what else decides where things land (the search_path)."""
        key = hashlib.sha256(f"poststack replay {_FORMAT} {self.server_major} {_QUERY} {context}".encode()).hexdigest()
        keys = [key]
        for m in migrations:
            try:
                transactional = m.file.script.transactional
            except Exception:
                transactional = None
            key = hashlib.sha256(f"{key} {m.version} {m.checksum} {transactional}".encode()).hexdigest()
            keys.append(key)
        return keys

    def path(self, start_key: str) -> Path:
        return self.directory / str(self.server_major) / f"{start_key}.json"

    def load(self, keys: Sequence[str]) -> Known:
        """The start and the changes known for ``keys`` (as ``keys`` made them), in order."""
        try:
            kept = json.loads(self.path(keys[0]).read_text(encoding="utf-8"))
            start = Snapshot.of((str(k), str(i), str(d)) for k, i, d in kept["start"])
            changes: list[Changes] = []
            for key, (kept_key, rows) in zip(keys[1:], kept["steps"], strict=False):
                if kept_key != key:
                    break
                changes.append(tuple(((str(k), str(i)), None if d is None else str(d)) for k, i, d in rows))
        except (OSError, ValueError, TypeError, KeyError):
            return Known(None)
        return Known(start, tuple(changes))

    def save(self, keys: Sequence[str], start: Snapshot, changes: Sequence[Changes]) -> None:
        """Keep ``start`` and the ``changes`` of the first migrations, keyed by ``keys``.
        Best effort: a cache that cannot be written only makes the next run slower."""
        kept: dict[str, Any] = {
            "format": _FORMAT,
            "start": [[kind, identity, d] for (kind, identity), d in sorted(start.objects.items())],
            "steps": [
                [key, [[kind, identity, d] for (kind, identity), d in step]]
                for key, step in zip(keys[1:], changes, strict=False)
            ],
        }
        write_whole(self.path(keys[0]), json.dumps(kept))  # dumps: the C encoder
