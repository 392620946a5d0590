"""A project's ``.env`` file, read as dbmate, docker compose and python-dotenv read it.

One ``KEY=value`` a line, optionally after ``export``; blank lines and ``#`` comments are
skipped. An unquoted value ends at its last non-blank character or at `` #``; a
single-quoted value is literal; a double-quoted one understands ``\\n``, ``\\t``, ``\\r``,
``\\"`` and ``\\\\``. Either quote may span lines (a PEM key). Values are not expanded
(``${VAR}`` stays as written; config refuses it in a value poststack reads). A bare
``KEY`` line (compose: take it from the environment) is skipped. A line that is none of these is an error naming file:line,
rather than a setting silently dropped: that, and never echoing a line (it may hold a
secret), is why this is not python-dotenv, which logs a warning and skips such a line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import UsageError

FILENAME = ".env"

# Other applications' keys share the file: accept the names they commonly use (a.b, a-b).
_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(?P<rest>.*)$", re.DOTALL)
_BARE_KEY = re.compile(r"^\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_.-]*\s*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


@dataclass(frozen=True)
class Entry:
    key: str
    value: str
    line: int  # 1-based line of its KEY=


def _unquoted(rest: str) -> str:
    # A "#" starts a comment only after whitespace: a password may contain one (pa#ss).
    return re.split(r"\s#", rest, maxsplit=1)[0].strip()


def _double_quoted(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[0]), body, flags=re.DOTALL)


def _quoted_end(text: str, quote: str) -> int | None:
    """The index of the quote closing ``text`` (which starts after the opening one)."""
    index = 0
    while index < len(text):
        char = text[index]
        if quote == '"' and char == "\\":
            index += 2
            continue
        if char == quote:
            return index
        index += 1
    return None


def parse(text: str, path: Path | str) -> list[Entry]:
    """The assignments in ``text`` (the contents of ``path``, named in errors), in order."""
    lines = text.splitlines()
    entries: list[Entry] = []
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if _BARE_KEY.match(line):
            continue  # KEY alone: compose's "take it from the environment"; nothing to read here
        match = _ASSIGNMENT.match(line)
        if match is None:
            raise UsageError(
                f"{path}:{number}: not a KEY=value line",
                "Write KEY=value (or export KEY=value); quote a value with spaces; start a comment with #.",
            )
        key, rest, start = match["key"], match["rest"].lstrip(), number
        if not rest or rest[0] not in "'\"":
            entries.append(Entry(key, _unquoted(rest), start))
            continue
        quote, body = rest[0], rest[1:]
        end = _quoted_end(body, quote)
        while end is None and number < len(lines):  # a quoted value may span lines
            body += "\n" + lines[number]
            number += 1
            end = _quoted_end(body, quote)
        if end is None:
            raise UsageError(f"{path}:{start}: the value of {key} opens a {quote} quote that is never closed")
        after = body[end + 1 :].strip()
        if after and not after.startswith("#"):
            raise UsageError(
                f"{path}:{number}: unexpected text after the quoted value of {key}",
                "Put a comment after whitespace and #, or quote the whole value.",
            )
        value = body[:end]
        entries.append(Entry(key, _double_quoted(value) if quote == '"' else value, start))
    return entries


def read(directory: Path) -> tuple[Path | None, list[Entry]]:
    """``directory/.env`` and its assignments; (None, []) when there is no such file."""
    path = directory / FILENAME
    if not path.is_file():
        return None, []
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not part of the first key
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror}") from e
    return path, parse(text, path)
