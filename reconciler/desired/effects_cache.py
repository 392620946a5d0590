"""Each file's effects, read once: kept under .poststack/effects, so an unchanged history is
not parsed again.

Reading a history's effects means parsing every file with PostgreSQL's parser and resolving
its names against what the files before it created: for a long history, most of the time a
command spends before it does anything. The result for one file depends only on its text,
on what came before it, and on where the history runs (the migrations directory, the
search_path, the schemas that exist, the role, poststack's own tables). So a file's effects
are kept under a key chained from the start through every file up to it (version and the
SHA-256 of the text parsed), as the replay cache keys states: an edited file changes its key
and every key after it, and only those are read again. With them is kept what the file did to
the names it resolved (its journal), so the files after a kept prefix resolve names exactly
as a full reading would.

One file holds one context's history, written whole (a temporary file, then a rename) when
something new was read, its first line the digest of the rest, readable only as its owner
wrote it. A file that is anything else (damaged, edited, another user's, writable by others)
is read past whole; a step whose key differs ends what is known there; a cache that cannot
be written is left alone. The file's name starts with a digest of the code that reads effects
(this module's, the reader's, poststack's version and the parser's), so an upgrade never
trusts an old reading, and writing removes what older builds kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.desired.effects import (
    MigrationEffects,
    Namespace,
    NamespaceChange,
    ObjectRef,
    OwnTableConflict,
    OwnTables,
    StatementEffects,
    Unattributed,
    parse,
    read_effects,
    schemas_created,
)
from reconciler.desired.files import Migration, MigrationSet
from reconciler.kept import beside, write_whole

_FORMAT = 3  # 3: keyed by the text parsed; named by the code; only the owner's files are read


def history_effects(
    migrations: MigrationSet,
    path: tuple[str, ...],
    existing: frozenset[str],
    user: str | None,
    own: OwnTables,
    *,
    cached: bool,
) -> list[MigrationEffects]:
    """Each migration's effects, in order, with names resolved as the history runs: on
    ``path``, in a database where the schemas ``existing`` exist, as ``user``, beside ``own``.
    ``cached``: through the files kept beside the migrations (a fleet's tenants, each with its
    own search_path, read the files)."""
    code = _code()
    cache = EffectsCache.beside(migrations.directory) if cached and code and migrations.migrations else None
    context = json.dumps(
        [str(migrations.directory.resolve()), list(path), sorted(existing), user, own.schema, own.tables]
    )
    kept = cache.load(context) if cache is not None else Kept()
    trees = _Trees(keep_on_files=not cached)
    created = [_created(m, user, kept, trees) for m in migrations.migrations]
    # A schema the history creates did not exist before the migration that creates it,
    # whatever exists now: only the others were there from the start.
    later = set().union(*created) if created else set()
    start = (set(existing) - later) if existing else set(path[:1])
    namespace = Namespace(path, schemas=start, user=user)
    keys = chain(json.dumps(sorted(start)), migrations.migrations)
    reused = reusable(kept, keys)
    steps = list(reused)
    for step in reused:
        namespace.replay(step.journal)
    for m, key, schemas in list(zip(migrations.migrations, keys, created, strict=True))[len(reused) :]:
        namespace.journal = []
        effects = read_effects(m.version, m.file.text, namespace, *trees.take(m), own)
        steps.append(KeptStep(key, tuple(sorted(schemas)), effects, tuple(namespace.journal)))
    namespace.journal = None
    if cache is not None and len(reused) < len(steps):
        cache.save(context, steps)
    return [step.effects for step in steps]


class _Trees:
    """Parse trees while a history is read. A fleet keeps each on its file, parsed once for every
    tenant; one database lets each go once its effects are read."""

    def __init__(self, *, keep_on_files: bool) -> None:
        self.keep_on_files = keep_on_files
        self.waiting: dict[int, tuple[Any, str | None]] = {}  # parsed for its schemas, not yet read

    def peek(self, migration: Migration) -> tuple[Any, str | None]:
        if self.keep_on_files:
            return migration.file.tree
        tree = self.waiting[id(migration)] = parse(migration.file.text)
        return tree

    def take(self, migration: Migration) -> tuple[Any, str | None]:
        if self.keep_on_files:
            return migration.file.tree
        held = self.waiting.pop(id(migration), None)
        return held if held is not None else parse(migration.file.text)


def _created(migration: Migration, user: str | None, kept: Kept, trees: _Trees) -> set[str]:
    """The schemas a migration creates: as kept for its text, else parsed. Only a file that
    says SCHEMA somewhere can create one (a keyword is never quoted nor escaped)."""
    known = kept.created_by(migration.file.checksum)
    if known is not None:
        return set(known)
    if "schema" not in migration.file.text.lower():
        return set()
    return schemas_created(trees.peek(migration)[0], user)


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

    def created_by(self, text_sha256: str) -> tuple[str, ...] | None:
        """The schemas a file with this text creates, if any step read it (whatever came before:
        they depend on the text and the role alone, and the role is the file's context)."""
        return self._created.get(text_sha256)

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
        return self.directory / f"{_code()}-{_digest(f'poststack effects {_FORMAT} {context}')[:32]}.json"

    def load(self, context: str) -> Kept:
        """What was kept, or nothing: a file that is not exactly what save wrote (damaged, edited
        by hand, of another format), or that another user could have written, is read past whole,
        never in part."""
        try:
            path = self.path(context)
            if not _owned(path):
                return Kept()
            digest, _, payload = path.read_text(encoding="utf-8").partition("\n")
            if digest != _digest(payload):
                return Kept()
            rows = json.loads(payload)
            _check(isinstance(rows, list))
            return Kept(tuple(_step(row) for row in rows))
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, RecursionError):
            return Kept()

    def save(self, context: str, steps: Sequence[KeptStep]) -> None:
        """Best effort: a cache that cannot be written (a read-only checkout) is read past. Its
        first line is the digest of the rest, so a damaged or edited file is never believed;
        only its owner may write it. What older builds kept here goes."""
        payload = json.dumps([_kept(s) for s in steps], separators=(",", ":"))
        if write_whole(self.path(context), f"{_digest(payload)}\n{payload}", mode=0o644):
            for old in self.directory.glob("*.json"):
                if not old.name.startswith(f"{_code()}-"):
                    with contextlib.suppress(OSError):
                        old.unlink()


def _owned(path: Path) -> bool:
    """Written by this user and by no one else: the effects decide which safety checks apply."""
    if not hasattr(os, "getuid"):  # Windows: no owner to compare
        return True
    info = path.stat()
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def chain(start: str, migrations: Sequence[Migration]) -> list[str]:
    """Each file's key: ``chained:text``, where ``text`` is the SHA-256 of the text parsed and
    ``chained`` a digest from ``start`` through every file's version and text up to it."""
    keys, previous = [], start
    for m in migrations:
        text = m.file.checksum
        previous = _digest(f"{previous} {m.version} {text}")
        keys.append(f"{previous}:{text}")
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


def code_sources() -> list[Path]:
    """The sources a reading depends on: this module, the effects reader (and the line index it
    uses), and the parser's package (its version is in it)."""
    here = Path(__file__)
    sources = [here, here.with_name("effects.py"), here.with_name("script.py")]
    parser = importlib.util.find_spec("pglast")  # without importing it
    if parser is not None and parser.origin:
        sources.append(Path(parser.origin))
    return sources


@cache
def _code() -> str | None:
    """A digest of the code a reading depends on, and poststack's version; None when a source
    cannot be read (an install without them): then nothing is kept, rather than kept unkeyed."""
    digest = hashlib.sha256(f"{__version__} {_FORMAT}".encode())
    try:
        for source in code_sources():
            digest.update(source.read_bytes())
    except OSError:
        return None
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
