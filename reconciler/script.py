"""Split a migration's SQL into statements with PostgreSQL's own parser (pglast).

Pure: no database. Knows which statements PostgreSQL refuses inside a transaction
block, so the runner can run such a migration outside one.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

NO_TRANSACTION_DIRECTIVE = "-- poststack:no-transaction"


@dataclass(frozen=True)
class ScriptStatement:
    sql: str
    line: int  # 1-based line of the statement's first character in the file
    kind: str  # the parse node's name, e.g. CreateStmt
    no_transaction_reason: str | None  # why PostgreSQL refuses it in a transaction block


@dataclass(frozen=True)
class Script:
    statements: tuple[ScriptStatement, ...]
    transactional: bool
    reason: str | None  # why it runs outside a transaction, when it does


class ScriptSyntaxError(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class LineIndex:
    """Character offset → 1-based line, in O(log n): files can hold 100,000 statements."""

    def __init__(self, text: str) -> None:
        self.starts = [0]
        position = text.find("\n")
        while position >= 0:
            self.starts.append(position + 1)
            position = text.find("\n", position + 1)

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, max(0, offset))


def line_of(text: str, offset: int) -> int:
    """1-based line of character ``offset`` in ``text`` (for one lookup; use LineIndex for many)."""
    return text.count("\n", 0, max(0, offset)) + 1


def parse_script(text: str) -> Script:
    """Parse ``text`` into statements. Raises ScriptSyntaxError with the line of the error."""
    from pglast import parser  # here, not at the top: listing migrations never parses them

    try:
        raw = parser.parse_sql(text)
    except parser.ParseError as e:
        message, location = ((*e.args, None))[:2]
        # pglast reports the error position as a character index into the text.
        line = line_of(text, location) if isinstance(location, int) else 1
        raise ScriptSyntaxError(str(message), line) from e
    statements = []
    lines = LineIndex(text)
    for raw_stmt in raw:
        # pglast reports locations as character offsets into ``text``.
        start = raw_stmt.stmt_location or 0
        length = raw_stmt.stmt_len or (len(text) - start)
        chunk = text[start : start + length]
        # The statement's span starts after the previous semicolon: skip leading blanks
        # and comments so the line number points at the statement itself.
        lead = _leading_trivia(chunk)
        sql = chunk.strip()
        node = raw_stmt.stmt
        statements.append(
            ScriptStatement(
                sql=sql,
                line=lines.line(start + lead),
                kind=type(node).__name__,
                no_transaction_reason=_no_transaction_reason(node),
            )
        )
    first_line = text.lstrip("\ufeff").split("\n", 1)[0].strip().lower()
    if first_line.replace(" ", "") == NO_TRANSACTION_DIRECTIVE.replace(" ", ""):
        return Script(tuple(statements), False, f"directive {NO_TRANSACTION_DIRECTIVE}")
    for stmt in statements:
        if stmt.no_transaction_reason:
            return Script(tuple(statements), False, f"line {stmt.line}: {stmt.no_transaction_reason}")
    return Script(tuple(statements), True, None)


def _leading_trivia(chunk: str) -> int:
    """Characters of whitespace and comments before the first token of ``chunk``."""
    i, n = 0, len(chunk)
    while i < n:
        if chunk[i].isspace():
            i += 1
        elif chunk.startswith("--", i):
            end = chunk.find("\n", i)
            i = n if end < 0 else end + 1
        elif chunk.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if chunk.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif chunk.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            break
    return i


_OWN_TRANSACTION = frozenset(
    {
        "TRANS_STMT_BEGIN",
        "TRANS_STMT_START",
        "TRANS_STMT_COMMIT",
        "TRANS_STMT_ROLLBACK",
        "TRANS_STMT_PREPARE",
        "TRANS_STMT_COMMIT_PREPARED",
        "TRANS_STMT_ROLLBACK_PREPARED",
    }
)


def _kind_name(value: object) -> str:
    return str(getattr(value, "name", value))


def _defelem_names(items: object) -> set[str]:
    names = set()
    for item in items or ():
        name = getattr(item, "defname", None)
        if name:
            names.add(name.lower())
    return names


def _no_transaction_reason(node: object) -> str | None:
    """Why PostgreSQL would refuse ``node`` inside a transaction block, or None."""
    kind = type(node).__name__
    if kind == "IndexStmt" and getattr(node, "concurrent", False):
        return "CREATE INDEX CONCURRENTLY cannot run inside a transaction block"
    if kind == "DropStmt" and getattr(node, "concurrent", False):
        return "DROP INDEX CONCURRENTLY cannot run inside a transaction block"
    if kind == "ReindexStmt":
        if "concurrently" in _defelem_names(getattr(node, "params", None)):
            return "REINDEX CONCURRENTLY cannot run inside a transaction block"
        reindex_kind = _kind_name(getattr(node, "kind", None))
        if "SYSTEM" in reindex_kind or "DATABASE" in reindex_kind:
            return "REINDEX SYSTEM/DATABASE cannot run inside a transaction block"
    if kind == "VacuumStmt" and getattr(node, "is_vacuumcmd", False):
        return "VACUUM cannot run inside a transaction block"
    fixed = {
        "AlterSystemStmt": "ALTER SYSTEM cannot run inside a transaction block",
        "CreatedbStmt": "CREATE DATABASE cannot run inside a transaction block",
        "DropdbStmt": "DROP DATABASE cannot run inside a transaction block",
        "CreateTableSpaceStmt": "CREATE TABLESPACE cannot run inside a transaction block",
        "DropTableSpaceStmt": "DROP TABLESPACE cannot run inside a transaction block",
        "CreateSubscriptionStmt": "CREATE SUBSCRIPTION cannot run inside a transaction block",
        "DropSubscriptionStmt": "DROP SUBSCRIPTION cannot run inside a transaction block",
    }
    if kind in fixed:
        return fixed[kind]
    if kind == "TransactionStmt" and _kind_name(getattr(node, "kind", None)) in _OWN_TRANSACTION:
        # SAVEPOINT and RELEASE need the transaction we provide; BEGIN/COMMIT replace it.
        return "the file controls its own transactions (BEGIN/COMMIT)"
    if kind == "ClusterStmt" and getattr(node, "relation", None) is None:
        return "CLUSTER without a table cannot run inside a transaction block"
    return None
