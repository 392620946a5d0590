"""Replayed states kept under .poststack/, so an unchanged history is not replayed again.

The state before the first migration is kept whole; after that, what each migration
changed (a history's cache grows with its changes, not with its length times its size).
A state is keyed by the server's major version, the snapshot query itself, the search_path
migrations run with, and the chain of
every migration up to it (version, checksum, whether it runs in a transaction): an edited
file changes its key and every key after it, and only those. Files are written whole
(a temporary file, then a rename), and one that cannot be read is treated as absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reconciler.desired.files import Migration
from reconciler.desired.replay.snapshot import SNAPSHOT_QUERY, Changes, Snapshot

_QUERY = hashlib.sha256(SNAPSHOT_QUERY.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ReplayCache:
    directory: Path  # e.g. <project>/.poststack/replay
    server_major: int

    def keys(self, migrations: tuple[Migration, ...] | list[Migration], context: str = "") -> list[str]:
        """The key of the state before the first migration, then of the state after each.
        ``context``: what else decides where things land (the search_path)."""
        key = hashlib.sha256(f"poststack replay 2 {self.server_major} {_QUERY} {context}".encode()).hexdigest()
        keys = [key]
        for m in migrations:
            try:
                transactional = m.file.script.transactional
            except Exception:
                transactional = None
            key = hashlib.sha256(f"{key} {m.version} {m.checksum} {transactional}".encode()).hexdigest()
            keys.append(key)
        return keys

    def _path(self, key: str) -> Path:
        return self.directory / str(self.server_major) / f"{key}.json"

    def load_start(self, key: str) -> Snapshot | None:
        rows = self._load(key)
        try:
            return Snapshot.of((str(k), str(i), str(d)) for k, i, d in rows) if rows is not None else None
        except (TypeError, ValueError):
            return None

    def load_changes(self, key: str) -> Changes | None:
        rows = self._load(key)
        try:
            return (
                tuple(((str(k), str(i)), None if d is None else str(d)) for k, i, d in rows)
                if rows is not None
                else None
            )
        except (TypeError, ValueError):
            return None

    def save_start(self, key: str, snapshot: Snapshot) -> None:
        self._save(key, [[kind, identity, d] for (kind, identity), d in sorted(snapshot.objects.items())])

    def save_changes(self, key: str, changes: Changes) -> None:
        self._save(key, [[kind, identity, d] for (kind, identity), d in changes])

    def _load(self, key: str) -> list[list[str | None]] | None:
        try:
            rows = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return rows if isinstance(rows, list) else None

    def _save(self, key: str, rows: list[list[str | None]]) -> None:
        """Best effort: a cache that cannot be written only makes the next run slower."""
        path = self._path(key)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(json.dumps(rows))  # dumps: the C encoder; dump writes piece by piece
                os.replace(temporary, path)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
