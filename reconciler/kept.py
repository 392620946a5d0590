"""What poststack keeps beside a project: .poststack/, next to the migrations directory.

The embedded server's data, replayed states and each file's effects live there. Nothing in it
is a record: deleting it costs time, never an answer. Files are written whole (a temporary
file, then a rename), readable by whoever shares the project, and the directory tells git to
ignore it, so a `db migrate` never leaves a project with files to commit.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

DIRECTORY = ".poststack"
_IGNORE = "# Made by poststack: caches and the embedded server's data, never to commit.\n*\n"


def beside(migrations_dir: Path) -> Path:
    """The project's .poststack/: the migrations directory's sibling."""
    return migrations_dir.resolve().parent / DIRECTORY


def make_directory(path: Path) -> None:
    """``path`` and its parents; the .poststack/ among them gets its .gitignore. Raises OSError
    (a read-only checkout, a file where a directory goes)."""
    path.mkdir(parents=True, exist_ok=True)
    for root in (path, *path.parents):
        if root.name == DIRECTORY:
            ignore = root / ".gitignore"
            if not ignore.exists():
                with contextlib.suppress(OSError):
                    ignore.write_text(_IGNORE, encoding="utf-8")
            break


def write_whole(path: Path, text: str, *, mode: int = 0o666) -> bool:
    """Replace ``path`` with ``text`` at once: a reader sees the old file or the new one. False
    when it cannot be written: a cache left unwritten is read from the files next time.
    ``mode``, less the umask: mkstemp makes 0600, and a project shared between people is read
    by all of them."""
    try:
        make_directory(path.parent)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:  # owns fd from here, closed on any error
            os.chmod(temporary, mode & ~_umask())
            out.write(text)
        os.replace(temporary, path)
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
