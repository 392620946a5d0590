"""How psql reads SQL text: what in a statement psql itself would act on.

An offline script (db migrate --dry-run --format sql) is run by psql, which reads its text
before the server does. Outside quotes, comments and dollar-quoted bodies, psql replaces
``:name``, ``:'name'``, ``:"name"`` and ``:{?name}`` with its variables and treats a
backslash as the start of a meta-command; inside them it passes everything through. This
lexer follows psql's (psqlscan.l) far enough to find those places, so a statement that
would not reach the server as written is refused rather than silently changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reconciler.desired.script import block_comment_end

# psql's name characters: ASCII letters, digits and _, and every non-ASCII character. Written
# as the ASCII characters they exclude: a class up to \U0010ffff takes ~10 ms to compile, each
# time it appears, at every start-up.
_NAME_CHAR = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"
_NAME_START = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"  # the same, without digits
_VARIABLE = re.compile(rf":(?:{_NAME_CHAR}+|'{_NAME_CHAR}+'|\"{_NAME_CHAR}+\"|\{{\?{_NAME_CHAR}+\}})")
_DOLLAR_TAG = re.compile(rf"\$(?:{_NAME_START}{_NAME_CHAR}*)?\$")


@dataclass(frozen=True)
class Hazard:
    offset: int  # in the statement's text
    text: str  # what psql would act on: ``:name`` or a backslash command
    kind: str  # "variable" or "meta-command"

    def describe(self) -> str:
        if self.kind == "variable":
            return f"{self.text} outside quotes is a psql variable reference, which psql would replace"
        return f"{self.text} outside quotes is a psql meta-command, which psql would run instead of sending it"


def hazards(sql: str) -> list[Hazard]:
    """The places in ``sql`` where psql would not pass the text through to the server.
    Assumes standard_conforming_strings (on by default since PostgreSQL 9.1)."""
    found: list[Hazard] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            i = block_comment_end(sql, i)
        elif c == "'":
            escapes = i > 0 and sql[i - 1] in "eE" and not _name_char(sql, i - 2)
            i = _quoted_end(sql, i, "'", escapes)
        elif c == '"':
            i = _quoted_end(sql, i, '"', False)
        elif c == "$" and (tag := _DOLLAR_TAG.match(sql, i)) and not _name_char(sql, i - 1):
            end = sql.find(tag.group(), tag.end())
            i = n if end < 0 else end + len(tag.group())
        elif sql.startswith("::", i):
            i += 2
        elif c == ":" and (variable := _VARIABLE.match(sql, i)):
            found.append(Hazard(i, variable.group(), "variable"))
            i = variable.end()
        elif c == "\\":
            command = re.match(r"\\[^\s]*", sql[i:])
            found.append(Hazard(i, command.group() if command else "\\", "meta-command"))
            i += 1
        elif _name_char(sql, i):
            while i < n and _name_char(sql, i):  # a whole word: $ inside one is not a dollar quote
                i += 1
                if i < n and sql[i] == "$":
                    i += 1
        else:
            i += 1
    return found


def _name_char(sql: str, i: int) -> bool:
    return 0 <= i < len(sql) and (sql[i].isalnum() or sql[i] == "_" or ord(sql[i]) >= 0x80)


def _quoted_end(sql: str, i: int, quote: str, escapes: bool) -> int:
    i += 1
    while i < len(sql):
        if escapes and sql[i] == "\\":
            i += 2
        elif sql[i] == quote:
            if sql.startswith(quote * 2, i):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return i
