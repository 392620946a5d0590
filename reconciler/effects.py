"""Desired state, part two: what each migration does to the catalog, read with pglast.

Pure: no database. For every statement we record the objects it creates and the objects
it touches (drops, renames, moves), with names resolved against the schema in effect
(``SET search_path`` in the file, else ``public``). Statements we cannot attribute (DO
blocks, data changes, dynamic SQL) are recorded as such, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pglast import parser

from reconciler.script import LineIndex

DEFAULT_SCHEMA = "public"

RELATION_KINDS = frozenset({"table", "view", "materialized_view", "sequence", "index"})
TYPE_KINDS = frozenset({"enum", "composite", "domain", "range"})
ROUTINE_KINDS = frozenset({"function", "procedure"})
CHILD_KINDS = frozenset({"column", "trigger", "policy"})


@dataclass(frozen=True, order=True)
class ObjectRef:
    """A catalog object. ``parent`` is the table of a column, trigger or policy; ``args``
    are a routine's argument type names (pg_type.typname, ``_`` prefix for arrays)."""

    kind: str
    schema: str | None
    name: str
    parent: str | None = None
    args: tuple[str, ...] | None = None

    @property
    def family(self) -> str:
        """Objects of one family share a namespace: a table and an index cannot share a name."""
        if self.kind in RELATION_KINDS:
            return "relation"
        if self.kind in TYPE_KINDS:
            return "type"
        if self.kind in ROUTINE_KINDS:
            return "routine"
        return self.kind

    @property
    def key(self) -> tuple[Any, ...]:
        # An index is named on its own (DROP INDEX names no table); ``parent`` only links it
        # to the table whose drop takes it away.
        parent = None if self.family == "relation" else self.parent
        return (self.family, self.schema, parent, self.name, self.args)

    def display(self) -> str:
        kind = self.kind.replace("_", " ")
        if self.kind == "schema" or self.kind == "extension":
            return f"{kind} {self.name}"
        if self.kind in CHILD_KINDS:
            joiner = "." if self.kind == "column" else " on "
            return (
                f"{kind} {self.schema}.{self.parent}{joiner}{self.name}"
                if self.kind == "column"
                else (f"{kind} {self.name}{joiner}{self.schema}.{self.parent}")
            )
        if self.args is not None:
            return f"{kind} {self.schema}.{self.name}({', '.join(self.args)})"
        return f"{kind} {self.schema}.{self.name}"


@dataclass(frozen=True)
class Unattributed:
    line: int
    statement: str  # the parse node, e.g. DoStmt
    reason: str


@dataclass(frozen=True)
class StatementEffects:
    line: int
    creates: tuple[ObjectRef, ...] = ()
    touches: tuple[ObjectRef, ...] = ()  # dropped, renamed away, moved away, or replaced
    unattributed: Unattributed | None = None


@dataclass(frozen=True)
class MigrationEffects:
    version: str
    statements: tuple[StatementEffects, ...] = ()
    error: str | None = None  # the file does not parse: nothing is attributable

    @property
    def creates(self) -> tuple[ObjectRef, ...]:
        return tuple(o for s in self.statements for o in s.creates)

    @property
    def touches(self) -> tuple[ObjectRef, ...]:
        return tuple(o for s in self.statements for o in s.touches)

    @property
    def unattributed(self) -> tuple[Unattributed, ...]:
        return tuple(s.unattributed for s in self.statements if s.unattributed)


@dataclass
class _Scope:
    """Name resolution while reading one file: the schema unqualified names land in."""

    schema: str = DEFAULT_SCHEMA


def read_effects(version: str, text: str) -> MigrationEffects:
    """Effects of one migration's SQL."""
    try:
        raw = parser.parse_sql(text)
    except parser.ParseError as e:
        return MigrationEffects(version, (), f"does not parse: {e.args[0] if e.args else e}")
    scope = _Scope()
    results = []
    lines = LineIndex(text)
    for raw_stmt in raw:
        line = lines.line(raw_stmt.stmt_location or 0)
        line += _leading_newlines(text, raw_stmt.stmt_location or 0, raw_stmt.stmt_len or 0)
        results.append(_statement_effects(raw_stmt.stmt, line, scope))
    return MigrationEffects(version, tuple(results))


def _leading_newlines(text: str, start: int, length: int) -> int:
    chunk = text[start : start + length] if length else text[start:]
    stripped = chunk.lstrip()
    lead = chunk[: len(chunk) - len(stripped)]
    # Skip comment lines that precede the statement inside its span.
    count = lead.count("\n")
    rest = stripped
    while rest.startswith("--") or rest.startswith("/*"):
        if rest.startswith("--"):
            end = rest.find("\n")
            if end < 0:
                break
            count += 1
            rest = rest[end + 1 :]
        else:
            end = rest.find("*/")
            if end < 0:
                break
            count += rest[: end + 2].count("\n")
            rest = rest[end + 2 :]
        trimmed = rest.lstrip()
        count += rest[: len(rest) - len(trimmed)].count("\n")
        rest = trimmed
    return count


# --- helpers over pglast nodes -----------------------------------------------------------


def _strings(items: Any) -> list[str]:
    return [getattr(i, "sval", str(i)) for i in (items or ())]


def _kind_name(value: Any) -> str:
    return getattr(value, "name", str(value))


def _relation(scope: _Scope, rangevar: Any) -> tuple[str, str]:
    return (rangevar.schemaname or scope.schema, rangevar.relname)


def _qualified(scope: _Scope, names: list[str]) -> tuple[str, str]:
    if len(names) >= 2:
        return names[-2], names[-1]
    return scope.schema, names[-1]


def _type_key(scope: _Scope, type_name: Any) -> str:
    """pg_type.typname of an argument type: schema dropped, ``_`` prefix for arrays."""
    names = _strings(getattr(type_name, "names", None))
    name = names[-1] if names else "?"
    if getattr(type_name, "pct_type", False):
        name = "%TYPE"
    if getattr(type_name, "arrayBounds", None):
        name = "_" + name
    return name


def _routine_args(scope: _Scope, parameters: Any) -> tuple[str, ...]:
    """The call signature, as pg_proc.proargtypes holds it: IN, INOUT and VARIADIC."""
    args = []
    for p in parameters or ():
        mode = _kind_name(getattr(p, "mode", "")).upper()
        if "TABLE" in mode or ("OUT" in mode and "INOUT" not in mode):
            continue
        args.append(_type_key(scope, p.argType))
    return tuple(args)


def _object_with_args(scope: _Scope, obj: Any, kind: str) -> ObjectRef | None:
    names = _strings(getattr(obj, "objname", None))
    if not names:
        return None
    schema, name = _qualified(scope, names)
    if getattr(obj, "args_unspecified", False):
        return ObjectRef(kind, schema, name, None, None)  # DROP FUNCTION f: every overload
    params = getattr(obj, "objfuncargs", None)
    if params:
        return ObjectRef(kind, schema, name, None, _routine_args(scope, params))
    return ObjectRef(kind, schema, name, None, tuple(_type_key(scope, t) for t in (obj.objargs or ())))


# pglast ObjectType names of relations: what DROP, RENAME and SET SCHEMA can name.
_RELATION_KINDS = {
    "OBJECT_TABLE": "table",
    "OBJECT_VIEW": "view",
    "OBJECT_MATVIEW": "materialized_view",
    "OBJECT_SEQUENCE": "sequence",
    "OBJECT_INDEX": "index",
    "OBJECT_FOREIGN_TABLE": "table",
}

_DROP_KINDS = {
    **_RELATION_KINDS,
    "OBJECT_SCHEMA": "schema",
    "OBJECT_EXTENSION": "extension",
    "OBJECT_TYPE": "enum",  # family "type": any type kind
    "OBJECT_DOMAIN": "domain",
    "OBJECT_FUNCTION": "function",
    "OBJECT_PROCEDURE": "procedure",
    "OBJECT_ROUTINE": "function",
    "OBJECT_TRIGGER": "trigger",
    "OBJECT_POLICY": "policy",
    "OBJECT_COLUMN": "column",
}

_NEUTRAL = {
    # Understood, and with no object whose existence we check.
    "CommentStmt",
    "GrantStmt",
    "GrantRoleStmt",
    "AlterOwnerStmt",
    "AlterDefaultPrivilegesStmt",
    "AlterSeqStmt",
    "AlterDomainStmt",
    "AlterFunctionStmt",
    "AlterEnumStmt",
    "RuleStmt",
    "CreateRoleStmt",
    "AlterRoleStmt",
    "DropRoleStmt",
    "AlterExtensionStmt",
    "AlterPolicyStmt",
    "RefreshMatViewStmt",
    "ClusterStmt",
    "VacuumStmt",
    "ReindexStmt",
    "LockStmt",
    "TransactionStmt",
    "VariableShowStmt",
    "AlterTableSpaceOptionsStmt",
    "SecLabelStmt",
    "CreateStatsStmt",
    "AlterStatsStmt",
    "CheckPointStmt",
    "DiscardStmt",
    "ConstraintsSetStmt",
    "NotifyStmt",
}

_UNATTRIBUTED = {
    "DoStmt": "DO block: what it creates is decided at run time",
    "InsertStmt": "data change (INSERT)",
    "UpdateStmt": "data change (UPDATE)",
    "DeleteStmt": "data change (DELETE)",
    "MergeStmt": "data change (MERGE)",
    "CopyStmt": "data load (COPY)",
    "SelectStmt": "query or function call: its side effects cannot be read from the text",
    "CallStmt": "procedure call: its side effects cannot be read from the text",
    "ExecuteStmt": "EXECUTE of a prepared statement",
    "PrepareStmt": "PREPARE",
    "TruncateStmt": "data change (TRUNCATE)",
}


def _statement_effects(node: Any, line: int, scope: _Scope) -> StatementEffects:
    kind = type(node).__name__
    handler = _HANDLERS.get(kind)
    if handler is not None:
        creates, touches = handler(node, scope)
        return StatementEffects(line, tuple(creates), tuple(touches))
    if kind == "VariableSetStmt":
        _apply_set(node, scope)
        return StatementEffects(line)
    if kind in _NEUTRAL:
        return StatementEffects(line)
    reason = _UNATTRIBUTED.get(kind, f"{kind}: not read by poststack")
    return StatementEffects(line, unattributed=Unattributed(line, kind, reason))


def _apply_set(node: Any, scope: _Scope) -> None:
    if (node.name or "").lower() != "search_path":
        return
    if _kind_name(node.kind) in ("VAR_RESET", "VAR_SET_DEFAULT"):
        scope.schema = DEFAULT_SCHEMA
        return
    values = []
    for arg in node.args or ():
        value = getattr(getattr(arg, "val", None), "sval", None)
        if value:
            values.extend(v.strip().strip('"') for v in value.split(","))
    values = [v for v in values if v and v != "$user" and v != "pg_catalog"]
    if values:
        scope.schema = values[0]


def _columns(schema: str, table: str, elements: Any) -> list[ObjectRef]:
    return [
        ObjectRef("column", schema, e.colname, table)
        for e in elements or ()
        if type(e).__name__ == "ColumnDef" and e.colname
    ]


def _create_schema(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
    creates = [ObjectRef("schema", None, node.schemaname)]
    inner = _Scope(node.schemaname)
    for element in node.schemaElts or ():
        handler = _HANDLERS.get(type(element).__name__)
        if handler:
            c, _ = handler(element, inner)
            creates += c
    return creates, []


def _create_table(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
    schema, name = _relation(scope, node.relation)
    return [ObjectRef("table", schema, name), *_columns(schema, name, node.tableElts)], []


def _create_table_as(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
    schema, name = _relation(scope, node.into.rel)
    kind = "materialized_view" if "MATVIEW" in _kind_name(node.objtype) else "table"
    return [ObjectRef(kind, schema, name)], []


def _create_view(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
    schema, name = _relation(scope, node.view)
    ref = ObjectRef("view", schema, name)
    return [ref], ([ref] if node.replace else [])


def _create_index(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
    if not node.idxname:
        return [], []  # PostgreSQL picks the name: nothing to look for
    schema = node.relation.schemaname or scope.schema
    return [ObjectRef("index", schema, node.idxname, node.relation.relname)], []


def _create_sequence(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
    schema, name = _relation(scope, node.sequence)
    return [ObjectRef("sequence", schema, name)], []


def _create_function(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
    schema, name = _qualified(scope, _strings(node.funcname))
    kind = "procedure" if node.is_procedure else "function"
    ref = ObjectRef(kind, schema, name, None, _routine_args(scope, node.parameters))
    return [ref], ([ref] if node.replace else [])


def _create_type(kind: str) -> Any:
    def handler(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
        if kind == "composite":
            schema, name = _relation(scope, node.typevar)
        else:
            names = _strings(node.domainname if kind == "domain" else node.typeName)
            schema, name = _qualified(scope, names)
        return [ObjectRef(kind, schema, name)], []

    return handler


def _create_extension(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
    return [ObjectRef("extension", None, node.extname)], []


def _create_trigger(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
    schema, table = _relation(scope, node.relation)
    ref = ObjectRef("trigger", schema, node.trigname, table)
    return [ref], ([ref] if node.replace else [])


def _create_policy(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
    schema, table = _relation(scope, node.table)
    return [ObjectRef("policy", schema, node.policy_name, table)], []


def _alter_table(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
    if node.relation is None:
        return [], []
    schema, table = _relation(scope, node.relation)
    creates, touches = [], []
    for cmd in node.cmds or ():
        subtype = _kind_name(cmd.subtype)
        if subtype == "AT_AddColumn" and cmd.def_ is not None:
            creates.append(ObjectRef("column", schema, cmd.def_.colname, table))
        elif subtype == "AT_DropColumn" and cmd.name:
            touches.append(ObjectRef("column", schema, cmd.name, table))
    return creates, touches


def _drop(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
    kind = _DROP_KINDS.get(_kind_name(node.removeType))
    if kind is None:
        return [], []
    touches = []
    for obj in node.objects or ():
        if kind in ROUTINE_KINDS:
            ref = _object_with_args(scope, obj, kind)
        elif kind in ("schema", "extension"):
            ref = ObjectRef(kind, None, getattr(obj, "sval", str(obj)))
        elif kind in ("enum", "domain"):
            schema, name = _qualified(scope, _strings(getattr(obj, "names", None)))
            ref = ObjectRef(kind, schema, name)
        elif kind in ("trigger", "policy"):
            names = _strings(obj)
            schema, table = _qualified(scope, names[:-1])
            ref = ObjectRef(kind, schema, names[-1], table)
        else:
            schema, name = _qualified(scope, _strings(obj))
            ref = ObjectRef(kind, schema, name)
        if ref is not None:
            touches.append(ref)
    return [], touches


def _rename(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
    rename = _kind_name(node.renameType)
    new = node.newname
    if rename in _RELATION_KINDS and node.relation is not None:
        schema, name = _relation(scope, node.relation)
        kind = _RELATION_KINDS[rename]
        return [ObjectRef(kind, schema, new)], [ObjectRef(kind, schema, name)]
    if rename in ("OBJECT_COLUMN", "OBJECT_ATTRIBUTE") and node.relation is not None:
        schema, table = _relation(scope, node.relation)
        return [ObjectRef("column", schema, new, table)], [ObjectRef("column", schema, node.subname, table)]
    if rename == "OBJECT_SCHEMA":
        return [ObjectRef("schema", None, new)], [ObjectRef("schema", None, node.subname)]
    if rename in ("OBJECT_TRIGGER", "OBJECT_POLICY") and node.relation is not None:
        kind = "trigger" if rename == "OBJECT_TRIGGER" else "policy"
        schema, table = _relation(scope, node.relation)
        return [ObjectRef(kind, schema, new, table)], [ObjectRef(kind, schema, node.subname, table)]
    if rename in ("OBJECT_FUNCTION", "OBJECT_PROCEDURE", "OBJECT_ROUTINE"):
        kind = "procedure" if rename == "OBJECT_PROCEDURE" else "function"
        old = _object_with_args(scope, node.object, kind)
        if old is None:
            return [], []
        return [ObjectRef(kind, old.schema, new, None, old.args)], [old]
    if rename in ("OBJECT_TYPE", "OBJECT_DOMAIN"):
        kind = "domain" if rename == "OBJECT_DOMAIN" else "enum"
        schema, name = _qualified(scope, _strings(node.object))
        return [ObjectRef(kind, schema, new)], [ObjectRef(kind, schema, name)]
    return [], []


def _set_schema(node: Any, scope: _Scope) -> tuple[list[ObjectRef], list[ObjectRef]]:
    kind = _RELATION_KINDS.get(_kind_name(node.objectType))
    if kind is None or node.relation is None:
        return [], []
    schema, name = _relation(scope, node.relation)
    return [ObjectRef(kind, node.newschema, name)], [ObjectRef(kind, schema, name)]


_HANDLERS: dict[str, Any] = {
    "CreateSchemaStmt": _create_schema,
    "CreateStmt": _create_table,
    "CreateForeignTableStmt": lambda node, scope: _create_table(node.base, scope),
    "CreateTableAsStmt": _create_table_as,
    "ViewStmt": _create_view,
    "IndexStmt": _create_index,
    "CreateSeqStmt": _create_sequence,
    "CreateFunctionStmt": _create_function,
    "CreateEnumStmt": _create_type("enum"),
    "CompositeTypeStmt": _create_type("composite"),
    "CreateDomainStmt": _create_type("domain"),
    "CreateRangeStmt": _create_type("range"),
    "CreateExtensionStmt": _create_extension,
    "CreateTrigStmt": _create_trigger,
    "CreatePolicyStmt": _create_policy,
    "AlterTableStmt": _alter_table,
    "DropStmt": _drop,
    "RenameStmt": _rename,
    "AlterObjectSchemaStmt": _set_schema,
}
