"""Each file's effects kept under .poststack/effects, so an unchanged history is not parsed again.

Reading a history's effects means parsing every file with PostgreSQL's parser and resolving
its names against what the files before it created: for a long history, most of the time a
command spends before it does anything. The result for one file depends only on its bytes,
on what came before it, and on where the history runs (the search_path, the schemas that
exist, the role, poststack's own tables). So a file's effects are kept under a key chained
from the start through every file up to it (version and the bytes' SHA-256), as the replay
cache keys states: an edited file changes its key and every key after it, and only those are
read again. With them is kept what the file did to the names it resolved (its journal), so
the files after a kept prefix resolve names exactly as a full reading would.

One file holds one context's history, written whole (a temporary file, then a rename) when
something new was read. A file that cannot be read, or a step whose key differs, ends what
is known there; a cache that cannot be written is left alone. The key also covers the code
that reads effects and the parser's version, so an upgrade never trusts an old reading.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from reconciler.desired.effects import (
    MigrationEffects,
    NamespaceChange,
    ObjectRef,
    OwnTableConflict,
    StatementEffects,
    Unattributed,
)
from reconciler.desired.files import Migration
from reconciler.kept import beside, write_whole

_FORMAT = 2  # 2: a digest of the steps first; every field checked when read


@dataclass(frozen=True)
class KeptStep:
    """One file as a history read it: its key, the schemas it creates, its effects and journal."""

    key: str
    created: tuple[str, ...]
    effects: MigrationEffects
    journal: tuple[NamespaceChange, ...]


@dataclass(frozen=True)
class Kept:
    steps: tuple[KeptStep, ...] = ()

    def created_by(self, raw_sha256: str) -> tuple[str, ...] | None:
        """The schemas a file with these bytes creates, if any step read it (whatever came before)."""
        return self._created.get(raw_sha256)

    @cached_property
    def _created(self) -> dict[str, tuple[str, ...]]:
        return {step.key.split(":", 1)[1]: step.created for step in self.steps}


@dataclass(frozen=True)
class EffectsCache:
    directory: Path  # <project>/.poststack/effects

    @staticmethod
    def beside(migrations_dir: Path) -> EffectsCache:
        """Where the replay cache and the embedded server are: .poststack/ next to the migrations."""
        return EffectsCache(beside(migrations_dir) / "effects")

    def path(self, context: str) -> Path:
        return self.directory / f"{_digest(f'poststack effects {_FORMAT} {_code()} {context}')}.json"

    def load(self, context: str) -> Kept:
        """What was kept, or nothing: a file that is not exactly what save wrote (damaged, edited
        by hand, of another format) is read past whole, never in part."""
        try:
            digest, _, payload = self.path(context).read_text(encoding="utf-8").partition("\n")
            if digest != _digest(payload):
                return Kept()
            rows = json.loads(payload)
            _check(isinstance(rows, list))
            return Kept(tuple(_step(row) for row in rows))
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, RecursionError):
            return Kept()

    def save(self, context: str, steps: Sequence[KeptStep]) -> None:
        """Best effort: a cache that cannot be written (a read-only checkout) is read past. Its
        first line is the digest of the rest, so a damaged or edited file is never believed."""
        payload = json.dumps([_kept(s) for s in steps], separators=(",", ":"))
        write_whole(self.path(context), f"{_digest(payload)}\n{payload}")


def chain(start: str, migrations: Sequence[Migration]) -> list[str]:
    """Each file's key: ``index:sha256`` of the file, chained from ``start`` through every file
    before it (the digest after the colon names the file's bytes alone)."""
    keys, previous = [], start
    for m in migrations:
        previous = _digest(f"{previous} {m.version} {m.file.raw_sha256}")
        keys.append(f"{previous}:{m.file.raw_sha256}")
    return keys


def reusable(kept: Kept, keys: Sequence[str]) -> tuple[KeptStep, ...]:
    """The kept steps that match ``keys`` from the first, in order."""
    steps = []
    for step, key in zip(kept.steps, keys, strict=False):
        if step.key != key:
            break
        steps.append(step)
    return tuple(steps)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@cache
def _code() -> str:
    """The code a reading depends on: the effects reader and the parser, by their bytes."""
    sources = [Path(__file__).with_name(name) for name in ("effects.py", "script.py", "effects_cache.py")]
    parser = importlib.util.find_spec("pglast")  # its version, without importing it
    if parser is not None and parser.origin:
        sources.append(Path(parser.origin))
    digest = hashlib.sha256()
    for source in sources:
        with contextlib.suppress(OSError):
            digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _ref(ref: ObjectRef) -> list[Any]:
    return [ref.kind, ref.schema, ref.name, ref.parent, None if ref.args is None else list(ref.args)]


def _check(holds: bool) -> None:
    if not holds:
        raise ValueError("not a kept step")


def _text(value: Any, *, optional: bool = False) -> Any:
    _check(isinstance(value, str) or (optional and value is None))
    return value


def _number(value: Any) -> int:
    _check(isinstance(value, int) and not isinstance(value, bool))
    return int(value)


def _unref(row: Any) -> ObjectRef:
    kind, schema, name, parent, args = row
    _check(args is None or isinstance(args, list))
    return ObjectRef(
        _text(kind),
        _text(schema, optional=True),
        _text(name),
        _text(parent, optional=True),
        None if args is None else tuple(_text(a) for a in args),
    )


def _change(row: Any) -> tuple[str, ...]:
    _check(isinstance(row, list) and len(row) in (2, 4) and row[0] in ("+", "-"))
    return tuple(_text(part) for part in row)


def _kept(step: KeptStep) -> list[Any]:
    e = step.effects
    statements = [
        [
            s.line,
            [_ref(r) for r in s.creates],
            [_ref(r) for r in s.weak],
            [_ref(r) for r in s.touches],
            None if s.unattributed is None else [s.unattributed.line, s.unattributed.statement, s.unattributed.reason],
        ]
        for s in e.statements
    ]
    conflicts = [[c.line, c.what] for c in e.conflicts]
    return [step.key, list(step.created), [e.version, statements, e.error, conflicts], [list(c) for c in step.journal]]


def _step(row: Any) -> KeptStep:
    """One step as save wrote it; ValueError (or TypeError, IndexError) for anything else."""
    key, created, (version, statements, error, conflicts), journal = row
    chained, _, file_digest = _text(key).partition(":")
    _check(len(chained) == 64 and len(file_digest) == 64)
    effects = MigrationEffects(
        _text(version),
        tuple(
            StatementEffects(
                _number(line),
                tuple(_unref(r) for r in creates),
                tuple(_unref(r) for r in weak),
                tuple(_unref(r) for r in touches),
                None
                if unattributed is None
                else Unattributed(_number(unattributed[0]), _text(unattributed[1]), _text(unattributed[2])),
            )
            for line, creates, weak, touches, unattributed in statements
        ),
        _text(error, optional=True),
        tuple(OwnTableConflict(_number(line), _text(what)) for line, what in conflicts),
    )
    return KeptStep(key, tuple(_text(c) for c in created), effects, tuple(_change(c) for c in journal))
