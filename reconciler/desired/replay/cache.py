"""Replayed states kept under .poststack/, so an unchanged history is not replayed again.

A state is keyed by the server's major version, the snapshot query itself, and the chain of
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
from reconciler.desired.replay.snapshot import SNAPSHOT_QUERY, Snapshot

_QUERY = hashlib.sha256(SNAPSHOT_QUERY.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ReplayCache:
    directory: Path  # e.g. <project>/.poststack/replay
    server_major: int

    def keys(self, migrations: tuple[Migration, ...] | list[Migration]) -> list[str]:
        """The key of the state before the first migration, then of the state after each."""
        key = hashlib.sha256(f"poststack replay {self.server_major} {_QUERY}".encode()).hexdigest()
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

    def load(self, key: str) -> Snapshot | None:
        try:
            rows = json.loads(self._path(key).read_text(encoding="utf-8"))
            return Snapshot.of((str(k), str(i), str(d)) for k, i, d in rows)
        except (OSError, ValueError, TypeError):
            return None

    def save(self, key: str, snapshot: Snapshot) -> None:
        """Best effort: a cache that cannot be written only makes the next run slower."""
        path = self._path(key)
        rows = [[kind, identity, definition] for (kind, identity), definition in sorted(snapshot.objects.items())]
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(rows, out)
                os.replace(temporary, path)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
