"""Split a migration's SQL into statements with PostgreSQL's own parser (pglast).

Pure: no database. Knows which statements PostgreSQL refuses inside a transaction
block, so the runner can run such a migration outside one.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from typing import Any

NO_TRANSACTION_DIRECTIVE = "-- poststack:no-transaction"


@dataclass(frozen=True)
class ScriptStatement:
    sql: str
    line: int  # 1-based line of the statement's first character in the file
    kind: str  # the parse node's name, e.g. CreateStmt
    no_transaction_reason: str | None  # why PostgreSQL refuses it in a transaction block
    # What it changes beyond its own database (roles, databases, tablespaces, the server's
    # settings), e.g. "CREATE ROLE"; None for what stays inside the database.
    server_level: str | None = None


@dataclass(frozen=True)
class Script:
    statements: tuple[ScriptStatement, ...]
    transactional: bool
    reason: str | None  # why it runs outside a transaction, when it does


def builds_concurrently(script: Script) -> bool:
    """The file builds, drops or rebuilds an index CONCURRENTLY, or detaches a partition
    CONCURRENTLY: it waits for every older transaction, so poststack gives it no lock_timeout
    (one would leave an INVALID index, or a partition half detached)."""
    return any(
        s.no_transaction_reason is not None and "CONCURRENTLY" in s.no_transaction_reason for s in script.statements
    )


class ScriptSyntaxError(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class LineIndex:
    """Offset → 1-based line, in O(log n): files can hold 100,000 statements. Offsets count
    characters of a str, or bytes of the UTF-8 text when built from bytes."""

    def __init__(self, text: str | bytes) -> None:
        newline = "\n" if isinstance(text, str) else b"\n"
        self.starts = [0]
        position = text.find(newline)  # type: ignore[arg-type]
        while position >= 0:
            self.starts.append(position + 1)
            position = text.find(newline, position + 1)  # type: ignore[arg-type]

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, max(0, offset))


def line_of(text: str, offset: int) -> int:
    """1-based line of character ``offset`` in ``text`` (for one lookup; use LineIndex for many)."""
    return text.count("\n", 0, max(0, offset)) + 1


def parse_script(text: str) -> Script:
    """Parse ``text`` into statements. Raises ScriptSyntaxError with the line of the error.

    The parse tree comes back as JSON, not as pglast's Python objects: splitting a file and
    naming its statements needs only each statement's type and a few flags, and building
    the full object tree was most of the time to plan 500 migrations."""
    from pglast import parser  # here, not at the top: listing migrations never parses them

    try:
        raw = json.loads(parser.parse_sql_json(text))["stmts"]
    except parser.ParseError as e:
        message, location = ((*e.args, None))[:2]
        # pglast reports the error position as a character index into the text.
        line = line_of(text, location) if isinstance(location, int) else 1
        raise ScriptSyntaxError(str(message), line) from e
    statements = []
    data = text.encode("utf-8")
    lines = LineIndex(data)
    for raw_stmt in raw:
        # Locations in the JSON tree are byte offsets into the UTF-8 text.
        start = raw_stmt.get("stmt_location", 0)
        length = raw_stmt.get("stmt_len") or (len(data) - start)
        chunk = data[start : start + length].decode("utf-8")
        # The statement's span starts after the previous semicolon: skip leading blanks
        # and comments so the line number points at the statement itself.
        lead = len(chunk[: _leading_trivia(chunk)].encode("utf-8"))
        ((kind, node),) = raw_stmt["stmt"].items()
        statements.append(
            ScriptStatement(
                sql=chunk.strip(),
                line=lines.line(start + lead),
                kind=kind,
                no_transaction_reason=_no_transaction_reason(kind, node),
                server_level=server_level(kind, node),
            )
        )
    first_line = text.lstrip("\ufeff").split("\n", 1)[0].strip().lower()
    if first_line.replace(" ", "") == NO_TRANSACTION_DIRECTIVE.replace(" ", ""):
        return Script(tuple(statements), False, f"directive {NO_TRANSACTION_DIRECTIVE}")
    for stmt in statements:
        if stmt.no_transaction_reason:
            return Script(tuple(statements), False, f"line {stmt.line}: {stmt.no_transaction_reason}")
    return Script(tuple(statements), True, None)


def block_comment_end(sql: str, i: int) -> int:
    """Where the /* comment starting at ``i`` ends (PostgreSQL's comments nest)."""
    depth, i = 1, i + 2
    while i < len(sql) and depth:
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
        else:
            i += 1
    return i


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
            i = block_comment_end(chunk, i)
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


_ALWAYS_OUTSIDE = {
    "AlterSystemStmt": "ALTER SYSTEM cannot run inside a transaction block",
    "CreatedbStmt": "CREATE DATABASE cannot run inside a transaction block",
    "DropdbStmt": "DROP DATABASE cannot run inside a transaction block",
    "CreateTableSpaceStmt": "CREATE TABLESPACE cannot run inside a transaction block",
    "DropTableSpaceStmt": "DROP TABLESPACE cannot run inside a transaction block",
    "CreateSubscriptionStmt": "CREATE SUBSCRIPTION cannot run inside a transaction block",
    "DropSubscriptionStmt": "DROP SUBSCRIPTION cannot run inside a transaction block",
}


def _defelem_names(items: list[dict[str, Any]] | None) -> set[str]:
    return {item["DefElem"]["defname"].lower() for item in items or () if "defname" in item.get("DefElem", {})}


def statement_detaches_concurrently(node: dict[str, Any]) -> bool:
    """An ALTER TABLE (its JSON parse ``node``) that detaches a partition CONCURRENTLY."""
    return any(_detaches_concurrently(cmd) for cmd in node.get("cmds") or ())


def _detaches_concurrently(cmd: dict[str, Any]) -> bool:
    """ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY (PostgreSQL 14 on)."""
    command = cmd.get("AlterTableCmd", {})
    partition = (command.get("def") or {}).get("PartitionCmd", {})
    return command.get("subtype") == "AT_DetachPartition" and bool(partition.get("concurrent"))


def _no_transaction_reason(kind: str, node: dict[str, Any]) -> str | None:
    """Why PostgreSQL would refuse a ``kind`` statement (its JSON parse ``node``) inside a
    transaction block, or None. The JSON leaves out fields at their defaults."""
    if kind == "IndexStmt" and node.get("concurrent"):
        return "CREATE INDEX CONCURRENTLY cannot run inside a transaction block"
    if kind == "DropStmt" and node.get("concurrent"):
        return "DROP INDEX CONCURRENTLY cannot run inside a transaction block"
    if kind == "ReindexStmt":
        if "concurrently" in _defelem_names(node.get("params")):
            return "REINDEX CONCURRENTLY cannot run inside a transaction block"
        reindex_kind = node.get("kind", "")
        if "SYSTEM" in reindex_kind or "DATABASE" in reindex_kind:
            return "REINDEX SYSTEM/DATABASE cannot run inside a transaction block"
    if kind == "VacuumStmt" and node.get("is_vacuumcmd"):
        return "VACUUM cannot run inside a transaction block"
    if kind == "AlterTableStmt" and statement_detaches_concurrently(node):
        return "ALTER TABLE ... DETACH CONCURRENTLY cannot run inside a transaction block"
    if kind in _ALWAYS_OUTSIDE:
        return _ALWAYS_OUTSIDE[kind]
    if kind == "TransactionStmt" and node.get("kind") in _OWN_TRANSACTION:
        # SAVEPOINT and RELEASE need the transaction we provide; BEGIN/COMMIT replace it.
        return "the file controls its own transactions (BEGIN/COMMIT)"
    if kind == "DiscardStmt" and node.get("target") == "DISCARD_ALL":
        return "DISCARD ALL cannot run inside a transaction block"
    if kind == "ClusterStmt" and node.get("relation") is None:
        return "CLUSTER without a table cannot run inside a transaction block"
    return None


# Statements whose effect is the server's (shared catalogs, files beside the data), not
# one database's: a replay beside the target would make them on the target's server.
_SERVER_LEVEL = {
    "CreateRoleStmt": "CREATE ROLE",
    "AlterRoleStmt": "ALTER ROLE",
    "AlterRoleSetStmt": "ALTER ROLE ... SET",
    "DropRoleStmt": "DROP ROLE",
    "GrantRoleStmt": "GRANT/REVOKE of a role",
    "CreatedbStmt": "CREATE DATABASE",
    "DropdbStmt": "DROP DATABASE",
    "AlterDatabaseStmt": "ALTER DATABASE",
    "AlterDatabaseSetStmt": "ALTER DATABASE ... SET",
    "AlterDatabaseRefreshCollStmt": "ALTER DATABASE ... REFRESH COLLATION VERSION",
    "AlterSystemStmt": "ALTER SYSTEM",
    "CreateTableSpaceStmt": "CREATE TABLESPACE",
    "DropTableSpaceStmt": "DROP TABLESPACE",
    "AlterTableSpaceOptionsStmt": "ALTER TABLESPACE",
    "ReassignOwnedStmt": "REASSIGN OWNED",
    "DropOwnedStmt": "DROP OWNED",  # revokes privileges on databases and tablespaces too
    "CreateSubscriptionStmt": "CREATE SUBSCRIPTION",  # a replication slot on the publisher
    "AlterSubscriptionStmt": "ALTER SUBSCRIPTION",
    "DropSubscriptionStmt": "DROP SUBSCRIPTION",
}
_SHARED_OBJECTS = {
    "OBJECT_ROLE": "role",
    "OBJECT_DATABASE": "database",
    "OBJECT_TABLESPACE": "tablespace",
    "OBJECT_PARAMETER_ACL": "parameter",
}
_SHARED_VERBS = {
    "RenameStmt": "RENAME of",
    "AlterOwnerStmt": "ALTER ... OWNER of",
    "GrantStmt": "GRANT/REVOKE on",
    "CommentStmt": "COMMENT ON",
    "SecLabelStmt": "SECURITY LABEL on",
}
# Functions whose calls act on the server or on other sessions: another database through
# dblink, replication state, other backends, files and the configuration.
_SERVER_FUNCTIONS = frozenset(
    {
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "dblink_connect_u",
        "dblink_send_query",
        "dblink_open",
        "pg_create_physical_replication_slot",
        "pg_create_logical_replication_slot",
        "pg_copy_physical_replication_slot",
        "pg_copy_logical_replication_slot",
        "pg_drop_replication_slot",
        "pg_replication_origin_create",
        "pg_replication_origin_drop",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_promote",
        "pg_file_write",
        "pg_file_unlink",
        "pg_file_rename",
        "lo_export",
    }
)
# In a DO block's text, which no parse of the file reads: a call into another session.
_DBLINK_TEXT = re.compile(r"\bdblink\w*\s*\(", re.IGNORECASE)


def server_level(kind: str, node: dict[str, Any]) -> str | None:
    """What a ``kind`` statement (its JSON parse ``node``) changes beyond its database, or None."""
    if kind in _SERVER_LEVEL:
        return _SERVER_LEVEL[kind]
    shared = _SHARED_OBJECTS.get(node.get("renameType") or node.get("objectType") or node.get("objtype") or "")
    if shared is not None and kind in ("RenameStmt", "AlterOwnerStmt", "GrantStmt", "CommentStmt", "SecLabelStmt"):
        return f"{_SHARED_VERBS[kind]} a {shared}"
    if kind == "CopyStmt" and node.get("is_program"):
        return "COPY ... PROGRAM (a command on the server's machine)"
    if kind == "CopyStmt" and node.get("filename") and not node.get("is_from"):
        return "COPY ... TO a file on the server"
    called = _server_function(node)
    if called is not None:
        return f"a call of {called}()"
    if kind == "DoStmt":
        body = " ".join(
            str(item["DefElem"].get("arg", {}).get("String", {}).get("sval", ""))
            for item in node.get("args") or ()
            if item.get("DefElem", {}).get("defname") == "as"
        )
        if _DBLINK_TEXT.search(body):
            return "a DO block that calls dblink (another session)"
    return None


def _server_function(node: Any) -> str | None:
    """The first call in ``node`` (a JSON parse tree) of a function in _SERVER_FUNCTIONS."""
    if isinstance(node, dict):
        call = node.get("FuncCall")
        if isinstance(call, dict):
            name = str((call.get("funcname") or [{}])[-1].get("String", {}).get("sval", "")).lower()
            if name in _SERVER_FUNCTIONS:
                return name
        children: Any = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _server_function(child)
        if found is not None:
            return found
    return None


# --- what a statement locks (for naming who holds the lock a migration waited for) ----------

# DROP names its relations as lists of names, not RangeVars.
_DROPPED_RELATIONS = frozenset(
    {"OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_INDEX", "OBJECT_SEQUENCE", "OBJECT_FOREIGN_TABLE"}
)


def parse_trees(sql: str) -> list[dict[str, Any]]:
    """``sql``'s statements as pglast's JSON parse nodes ({"AlterTableStmt": {...}}); none
    when it does not parse alone."""
    from pglast import parser

    try:
        return [raw["stmt"] for raw in json.loads(parser.parse_sql_json(sql))["stmts"]]
    except parser.ParseError:
        return []


def relations_named(sql: str) -> tuple[tuple[str | None, str], ...]:
    """The relations ``sql`` names, as (schema or None, name), in order, once each: the tables
    it alters, drops, reads or writes. Names are as PostgreSQL folds them; an unqualified one
    is found through the search path. Pure: whether each exists is the database's to say."""
    found: dict[tuple[str | None, str], None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "relname" in node and "relpersistence" in node:  # a RangeVar
                found[(node.get("schemaname"), node["relname"])] = None
            drop = node.get("DropStmt")
            if isinstance(drop, dict) and drop.get("removeType") in _DROPPED_RELATIONS:
                for item in drop.get("objects") or ():
                    names = [n.get("String", {}).get("sval") for n in item.get("List", {}).get("items", ())]
                    if names and all(isinstance(n, str) for n in names):
                        found[(names[-2] if len(names) > 1 else None, names[-1])] = None
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            return
        for child in children:
            walk(child)

    walk(parse_trees(sql))
    return tuple(found)


def sets_setting(sql: str, name: str) -> bool:
    """``sql`` is a SET, SET LOCAL or RESET of the setting ``name`` (lock_timeout, ...)."""
    return any(node.get("VariableSetStmt", {}).get("name") == name for node in parse_trees(sql))


# The table lock a statement asks for, by kind, where it is weaker than ACCESS EXCLUSIVE
# (PostgreSQL's "Explicit Locking" table); anything else is taken to ask for the strongest.
_REQUESTED_BY_KIND = {
    "InsertStmt": "RowExclusiveLock",
    "UpdateStmt": "RowExclusiveLock",
    "DeleteStmt": "RowExclusiveLock",
    "MergeStmt": "RowExclusiveLock",
    "CreateTrigStmt": "ShareRowExclusiveLock",
}


def requested_lock(sql: str) -> str:
    """The lock mode (as pg_locks spells it) ``sql`` asks for on the table it acts on: SHARE
    for CREATE INDEX, SHARE ROW EXCLUSIVE for a foreign key, ACCESS EXCLUSIVE for most ALTER
    TABLE and whatever is not known. Pure: for saying which sessions stood in its way."""
    strongest = "AccessExclusiveLock"
    trees = parse_trees(sql)
    if len(trees) != 1:
        return strongest
    kind, node = next(iter(trees[0].items()))
    if kind == "IndexStmt":
        return "ShareUpdateExclusiveLock" if node.get("concurrent") else "ShareLock"
    if kind == "AlterTableStmt":
        commands = [c.get("AlterTableCmd", {}) for c in node.get("cmds") or []]
        if commands and all(c.get("subtype") == "AT_ValidateConstraint" for c in commands):
            return "ShareUpdateExclusiveLock"
        foreign = [
            c.get("subtype") == "AT_AddConstraint"
            and (c.get("def") or {}).get("Constraint", {}).get("contype") == "CONSTR_FOREIGN"
            for c in commands
        ]
        return "ShareRowExclusiveLock" if commands and all(foreign) else strongest
    return _REQUESTED_BY_KIND.get(kind, strongest)
