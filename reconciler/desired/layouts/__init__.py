"""The layouts poststack reads, one module per tool, registered by name; and detection.

A directory is read in one layout: the one ``--layout`` names, or else the one that claims
most of its entries. Files that layout does not read are refused by name (and said to be in
another tool's layout when they are), so a mixed directory is an error, never half-read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from reconciler.desired.layouts.base import (
    LAYOUTS,
    Entry,
    Layout,
    layout_named,
    list_entries,
    register,
    unique_layouts,
)

# Importing the modules registers their layouts, in the order detection prefers on a tie.
from reconciler.desired.layouts import (  # noqa: F401  isort: skip
    poststack,
    updown,
    dbmate,
    flyway,
    diesel,
    prisma,
)
from reconciler.config import Settings
from reconciler.desired.files import MigrationSet, Scan, reading_once
from reconciler.errors import MigrationFileError

__all__ = [
    "LAYOUTS",
    "Entry",
    "Layout",
    "choose_layout",
    "layout_named",
    "list_entries",
    "load_migrations",
    "pinned",
    "register",
    "scan_migrations",
]


def choose_layout(directory: Path, entries: Sequence[Entry], name: str | None) -> Layout:
    """The layout named, or the one most of the directory's migrations are in."""
    if name is not None:
        return layout_named(name)
    counts = {layout.name: sum(1 for e in entries if layout.claims(e)) for layout in unique_layouts()}
    best = max(counts.values(), default=0)
    if best == 0:
        # Nothing in any layout: poststack's own (also a new project's) names what it expected.
        return LAYOUTS["poststack"]
    leaders = [n for n, c in counts.items() if c == best]
    if "poststack" in leaders:
        leaders = ["poststack"]  # a tie with the home layout: the others' files are refused by name
    if len(leaders) > 1:
        examples = [f"{LAYOUTS[n].tool}: {next(e.name for e in entries if LAYOUTS[n].claims(e))}" for n in leaders]
        raise MigrationFileError(
            f"{directory}: mixes layouts, as many files in each ({'; '.join(examples)})",
            "Keep one layout per directory, or pass --layout to choose one (the others' files are then refused).",
        )
    return LAYOUTS[leaders[0]]


# Directories read once for a whole fleet run (see pinned), by (resolved path, layout).
_pinned: dict[tuple[Path, str | None], Scan] = {}


@contextmanager
def pinned(directory: Path, layout: str | None = None) -> Iterator[Scan]:
    """Within the block, ``directory`` is read once: every target of a fleet gets the same
    files (a checkout that changes mid-run cannot give tenants different histories), and
    none reads or hashes them again."""
    key = (directory.resolve(), layout)
    if key in _pinned:
        yield _pinned[key]
        return
    _pinned[key] = scan = scan_migrations(directory, layout)
    try:
        yield scan
    finally:
        _pinned.pop(key, None)


def scan_migrations(directory: Path, layout: str | None = None) -> Scan:
    """Discover and read migration files in ``layout`` (detected when None), keeping the
    usable ones and naming the rest. A missing or unlistable directory, or one whose files
    follow no layout or several, is a usage error."""
    if _pinned and (held := _pinned.get((directory.resolve(), layout))) is not None:
        return held
    with reading_once():
        entries = list_entries(directory)
        chosen = choose_layout(directory, entries, layout)
        scan = chosen.read(directory, entries)
    return Scan(replace(scan.migrations, layout=chosen.name), scan.problems)


def load_migrations(directory: Path, layout: str | None = None) -> MigrationSet:
    """The migrations, or MigrationFileError naming the first bad file: any bad file name,
    duplicate version, orphaned companion or unreadable file is refused before anything runs."""
    scan = scan_migrations(directory, layout)
    if scan.problems:
        first = scan.problems[0].message
        more = f" (and {len(scan.problems) - 1} more problem(s) in {directory})" if len(scan.problems) > 1 else ""
        raise MigrationFileError(first + more)
    return scan.migrations


def with_canonical_layout(settings: Settings) -> Settings:
    """``settings`` with its layout checked and named as poststack names it (an alias, another
    case): config sits below desired/ and cannot know the layouts."""
    if settings.layout is None:
        return settings
    return replace(settings, layout=layout_named(settings.layout).name)
