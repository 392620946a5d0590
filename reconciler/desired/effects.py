"""Desired state, part two: what each migration does to the catalog, read with pglast.

Pure: no database. For every statement we record the objects it creates and the objects
it touches (drops, renames, moves, replaces), with names resolved as PostgreSQL would:
a new object lands in the first schema of the search_path in effect (``SET search_path``
in the file, else the session default), an unqualified reference finds the first schema
that holds that name. Creations that prove nothing (``IF NOT EXISTS``, ``OR REPLACE``,
names PostgreSQL makes up for constraints and serial columns) are kept apart as *weak*.
Statements we cannot attribute (DO blocks, data changes, dynamic SQL) are recorded as
such, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from reconciler.desired.script import LineIndex

DEFAULT_SCHEMA = "public"
DEFAULT_PATH = (DEFAULT_SCHEMA,)

RELATION_KINDS = frozenset({"table", "view", "materialized_view", "sequence", "index"})
TYPE_KINDS = frozenset({"enum", "composite", "domain", "range"})
ROUTINE_KINDS = frozenset({"function", "procedure"})
CHILD_KINDS = frozenset({"column", "trigger", "policy"})
# Markers in ``touches``: a DROP ... CASCADE (anything that depends on something may go),
# and a column drop (the indexes, triggers and policies of that table may go).
CASCADE = "cascade"
DEPENDENTS = "dependents"
TEMP_SCHEMA = "pg_temp"  # temporary objects: remembered for lookups, never effects
# A change to a Namespace: ("+" or "-", family, schema, name) for an object, ("+" or "-", name) for a schema.
NamespaceChange = tuple[str, ...]


@dataclass(frozen=True, order=True)
class ObjectRef:
    """A catalog object. ``parent`` is the table of a column, trigger, policy or index;
    ``args`` are a routine's argument type names (pg_type.typname, ``_`` for arrays)."""

    kind: str
    schema: str | None
    name: str
    parent: str | None = None
    args: tuple[str, ...] | None = None

    @cached_property  # asked for thousands of times when a long history is analysed
    def family(self) -> str:
        """Objects of one family share a namespace: a table and an index cannot share a name."""
        if self.kind in RELATION_KINDS:
            return "relation"
        if self.kind in TYPE_KINDS:
            return "type"
        if self.kind in ROUTINE_KINDS:
            return "routine"
        return self.kind

    @cached_property
    def key(self) -> tuple[Any, ...]:
        # An index is named on its own (DROP INDEX names no table); ``parent`` only links it
        # to the table whose drop takes it away.
        parent = None if self.family == "relation" else self.parent
        return (self.family, self.schema, parent, self.name, self.args)

    def display(self) -> str:
        kind = self.kind.replace("_", " ")
        if self.kind in ("schema", "extension"):
            return f"{kind} {self.name}"
        if self.kind == "column":
            return f"{kind} {self.schema}.{self.parent}.{self.name}"
        if self.kind in CHILD_KINDS:
            return f"{kind} {self.name} on {self.schema}.{self.parent}"
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
    creates: tuple[ObjectRef, ...] = ()  # made by this statement, and proof of it
    weak: tuple[ObjectRef, ...] = ()  # made (or kept) by it, but their existence proves nothing
    touches: tuple[ObjectRef, ...] = ()  # dropped, renamed away, moved away, replaced
    unattributed: Unattributed | None = None


@dataclass(frozen=True)
class OwnTables:
    """poststack's own tables, in the tracking schema: no migration may drop, rename,
    truncate or move them, or poststack loses its record half-way through a run."""

    schema: str
    # (table name, what it is to poststack, what poststack would lose with it)
    tables: tuple[tuple[str, str, str], ...]

    def find(self, name: str) -> tuple[str, str] | None:
        """(what it is, what would be lost) of a table of that name, or None."""
        return next(((role, loss) for table, role, loss in self.tables if table == name), None)


@dataclass(frozen=True)
class OwnTableConflict:
    line: int
    what: str  # e.g. "drops poststack's tracking table public.schema_migrations; poststack would lose ..."

    @property
    def whole_schema(self) -> bool:
        """It drops or renames the tracking schema itself: other table names would not help."""
        return self.what.startswith(("drops schema ", "renames schema ", "drops everything "))


# Statement kinds that may change rows.
ROW_CHANGING = frozenset(
    {
        "InsertStmt",
        "UpdateStmt",
        "DeleteStmt",
        "MergeStmt",
        "CopyStmt",
        "TruncateStmt",
        "SelectStmt",
        "CallStmt",
        "ExecuteStmt",
        "DoStmt",
    }
)


@dataclass(frozen=True)
class MigrationEffects:
    version: str
    statements: tuple[StatementEffects, ...] = ()
    error: str | None = None  # the file does not parse: nothing is attributable
    conflicts: tuple[OwnTableConflict, ...] = ()  # statements that would break poststack's own tables

    @property
    def creates(self) -> tuple[ObjectRef, ...]:
        return tuple(o for s in self.statements for o in s.creates)

    @property
    def touches(self) -> tuple[ObjectRef, ...]:
        return tuple(o for s in self.statements for o in s.touches)

    @property
    def unattributed(self) -> tuple[Unattributed, ...]:
        return tuple(s.unattributed for s in self.statements if s.unattributed)

    @property
    def may_change_rows(self) -> bool:
        """A statement whose work on rows no catalog state shows (DML, a function called, a DO
        block): the schema can show the rest of the migration ran, never this."""
        return any(u.statement in ROW_CHANGING for u in self.unattributed)


@dataclass
class Namespace:
    """What the history has created so far, for resolving unqualified names. Shared by
    the files of one history, read in order."""

    default_path: tuple[str, ...] = DEFAULT_PATH
    objects: set[tuple[str, str, str]] = field(default_factory=set)  # (family, schema, name)
    schemas: set[str] = field(default_factory=lambda: {DEFAULT_SCHEMA})  # that exist (so far)
    user: str | None = None  # the role migrations run as (CREATE SCHEMA AUTHORIZATION CURRENT_USER)
    # When a list: every change, in order, so that a file's reading can be replayed without
    # parsing it again (desired.effects_cache).
    journal: list[NamespaceChange] | None = None

    def apply(self, effects: StatementEffects) -> None:
        for ref in effects.touches:
            if ref.kind == "schema":
                self.drop_schema(ref.name)
            elif (ref.schema is not None and ref.parent is None) or ref.family == "relation":
                self.drop_object((ref.family, ref.schema or "", ref.name))
        for ref in (*effects.creates, *effects.weak):
            if ref.kind == "schema":
                self.add_schema(ref.name)
            elif ref.schema is not None and (ref.parent is None or ref.family == "relation"):
                self.add_object((ref.family, ref.schema, ref.name))

    def add_object(self, key: tuple[str, str, str]) -> None:
        self.objects.add(key)
        if self.journal is not None:
            self.journal.append(("+", *key))

    def drop_object(self, key: tuple[str, str, str]) -> None:
        self.objects.discard(key)
        if self.journal is not None:
            self.journal.append(("-", *key))

    def add_schema(self, name: str) -> None:
        self.schemas.add(name)
        if self.journal is not None:
            self.journal.append(("+", name))

    def drop_schema(self, name: str) -> None:
        self.schemas.discard(name)
        if self.journal is not None:
            self.journal.append(("-", name))

    def replay(self, changes: Iterable[NamespaceChange]) -> None:
        """Make the changes a journal recorded, in order."""
        for sign, *rest in changes:
            if len(rest) == 3:
                (self.add_object if sign == "+" else self.drop_object)((rest[0], rest[1], rest[2]))
            else:
                (self.add_schema if sign == "+" else self.drop_schema)(rest[0])


@dataclass
class _Scope:
    """Name resolution while reading one file."""

    namespace: Namespace
    path: tuple[str, ...]

    def creation_schema(self) -> str:
        """PostgreSQL creates in the first schema of the path that exists."""
        for schema in self.path:
            if schema in self.namespace.schemas:
                return schema
        return self.path[0] if self.path else DEFAULT_SCHEMA

    def lookup(self, family: str, name: str) -> str:
        """An unqualified reference: the first schema on the path that holds the name
        (a temporary table first, as PostgreSQL searches pg_temp before the path)."""
        if (family, TEMP_SCHEMA, name) in self.namespace.objects:
            return TEMP_SCHEMA
        for schema in self.path:
            if (family, schema, name) in self.namespace.objects:
                return schema
        return self.creation_schema()


def parse(text: str) -> tuple[Any, str | None]:
    """The parse tree of a file, or why there is none."""
    from pglast import parser  # on first parse: commands that parse nothing never import it

    try:
        return parser.parse_sql(text), None
    except parser.ParseError as e:
        return (), f"does not parse: {e.args[0] if e.args else e}"


def schemas_created(tree: Any, user: str | None = None) -> set[str]:
    """Names of the schemas a parsed file creates (for a first pass over a history)."""
    names = set()
    for raw_stmt in tree:
        node = raw_stmt.stmt
        if type(node).__name__ == "CreateSchemaStmt":
            name = node.schemaname or _role_name(node.authrole, user)
            if name:
                names.add(name)
    return names


def _role_name(role: Any, user: str | None) -> str | None:
    if role is None:
        return None
    if getattr(role, "rolename", None):
        return role.rolename
    if any(k in _kind_name(role.roletype) for k in ("CURRENT_USER", "SESSION_USER", "CURRENT_ROLE")):
        return user
    return None


def read_effects(
    version: str,
    text: str,
    namespace: Namespace | None = None,
    tree: Any = None,
    error: str | None = None,
    own: OwnTables | None = None,
) -> MigrationEffects:
    """Effects of one migration's SQL. Pass the history's ``namespace`` (files in order)
    so that unqualified names resolve against what earlier migrations created; pass
    ``tree`` when the file was parsed already; pass ``own`` to find the statements that
    would break poststack's own tables (``conflicts``)."""
    if tree is None and error is None:
        tree, error = parse(text)
    if error is not None:
        return MigrationEffects(version, (), error)
    raw = tree
    namespace = namespace if namespace is not None else Namespace()
    scope = _Scope(namespace, namespace.default_path)
    results = []
    conflicts: list[OwnTableConflict] = []
    lines = LineIndex(text)
    for raw_stmt in raw:
        start = raw_stmt.stmt_location or 0
        line = lines.line(start) + _leading_newlines(text, start, raw_stmt.stmt_len or 0)
        if own is not None:  # before its effects: its names resolve as the statement sees them
            conflicts += [OwnTableConflict(line, what) for what in _own_table_conflicts(raw_stmt.stmt, scope, own)]
        effects = _statement_effects(raw_stmt.stmt, line, scope)
        namespace.apply(effects)
        results.append(effects)
    return MigrationEffects(version, tuple(results), conflicts=tuple(conflicts))


def own_table_conflicts(
    text: str, own: OwnTables, namespace: Namespace | None = None, tree: Any = None
) -> tuple[OwnTableConflict, ...]:
    """The statements of one migration that would drop, rename, truncate, move or write poststack's
    own tables (``own``), or whose names collide with them, with their lines. Pure. Pass the
    history's ``namespace`` (as state.read_history builds it) so that unqualified names
    resolve through the search_path as the migration will see them."""
    return read_effects("", text, namespace, tree, own=own).conflicts


def _leading_newlines(text: str, start: int, length: int) -> int:
    """Newlines between a statement's span start and its first token (blank and comment lines)."""
    chunk = text[start : start + length] if length else text[start:]
    count, i, n = 0, 0, len(chunk)
    while i < n:
        if chunk[i] == "\n":
            count, i = count + 1, i + 1
        elif chunk[i].isspace():
            i += 1
        elif chunk.startswith("--", i):
            end = chunk.find("\n", i)
            if end < 0:
                break
            i = end
        elif chunk.startswith("/*", i):
            end = chunk.find("*/", i)
            if end < 0:
                break
            count += chunk.count("\n", i, end)
            i = end + 2
        else:
            break
    return count


# --- helpers over pglast nodes -----------------------------------------------------------


def _strings(items: Any) -> list[str]:
    return [getattr(i, "sval", str(i)) for i in (items or ())]


def _kind_name(value: Any) -> str:
    return str(getattr(value, "name", value))


def _is_temp(rangevar: Any) -> bool:
    return getattr(rangevar, "relpersistence", "p") == "t" or getattr(rangevar, "schemaname", None) == TEMP_SCHEMA


def _remember_temp(scope: _Scope, rangevar: Any) -> _Found:
    scope.namespace.add_object(("relation", TEMP_SCHEMA, rangevar.relname))
    return [], [], []


def _relation(scope: _Scope, rangevar: Any, *, creating: bool = False, family: str = "relation") -> tuple[str, str]:
    if rangevar.schemaname:
        return rangevar.schemaname, rangevar.relname
    schema = scope.creation_schema() if creating else scope.lookup(family, rangevar.relname)
    return schema, rangevar.relname


def _qualified(scope: _Scope, names: list[str], family: str, *, creating: bool = False) -> tuple[str, str]:
    if len(names) >= 2:
        return names[-2], names[-1]
    return (scope.creation_schema() if creating else scope.lookup(family, names[-1])), names[-1]


def _type_key(type_name: Any) -> str:
    """pg_type.typname of an argument type: schema dropped, ``_`` prefix for arrays."""
    names = _strings(getattr(type_name, "names", None))
    name = names[-1] if names else "?"
    if getattr(type_name, "pct_type", False):
        return "%TYPE"
    if getattr(type_name, "arrayBounds", None):
        name = "_" + name
    return name


def _routine_args(parameters: Any) -> tuple[str, ...]:
    """The call signature, as pg_proc.proargtypes holds it: IN, INOUT and VARIADIC."""
    args = []
    for p in parameters or ():
        mode = _kind_name(getattr(p, "mode", "")).upper()
        if "TABLE" in mode or ("OUT" in mode and "INOUT" not in mode):
            continue
        args.append(_type_key(p.argType))
    return tuple(args)


def _object_with_args(scope: _Scope, obj: Any, kind: str) -> ObjectRef | None:
    names = _strings(getattr(obj, "objname", None))
    if not names:
        return None
    schema, name = _qualified(scope, names, "routine")
    if getattr(obj, "args_unspecified", False):
        return ObjectRef(kind, schema, name, None, None)  # DROP FUNCTION f: every overload
    params = getattr(obj, "objfuncargs", None)
    if params:
        return ObjectRef(kind, schema, name, None, _routine_args(params))
    return ObjectRef(kind, schema, name, None, tuple(_type_key(t) for t in (obj.objargs or ())))


# What a handler found: strong creations, weak creations, touches; or a reason it could not tell.
_Found = tuple[list[ObjectRef], list[ObjectRef], list[ObjectRef]]


class _CannotTell(Exception):
    pass


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
    "OBJECT_AGGREGATE": "function",
    "OBJECT_TRIGGER": "trigger",
    "OBJECT_POLICY": "policy",
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
    "ConstraintsSetStmt",
    "NotifyStmt",
    "AlterRoleSetStmt",
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
        try:
            creates, weak, touches = handler(node, scope)
        except _CannotTell as e:
            return StatementEffects(line, unattributed=Unattributed(line, kind, str(e)))
        keep = lambda refs: tuple(r for r in refs if r.schema != TEMP_SCHEMA)  # noqa: E731
        return StatementEffects(line, keep(creates), keep(weak), keep(touches))
    if kind == "VariableSetStmt":
        _apply_set(node, scope)
        return StatementEffects(line)
    if kind == "DiscardStmt":
        scope.path = scope.namespace.default_path
        return StatementEffects(line)
    if kind == "SelectStmt" and _set_config_search_path(node, scope):
        return StatementEffects(line)
    if kind in _NEUTRAL:
        return StatementEffects(line)
    reason = _UNATTRIBUTED.get(kind, f"{kind}: not read by poststack")
    return StatementEffects(line, unattributed=Unattributed(line, kind, reason))


def _parse_path(value: str, user: str | None = None) -> tuple[str, ...]:
    parts = [v.strip().strip('"') for v in value.split(",")]
    parts = [user if p == "$user" else p for p in parts]
    return tuple(p for p in parts if p and p not in ("$user", "pg_catalog", "pg_temp"))


def _apply_set(node: Any, scope: _Scope) -> None:
    kind = _kind_name(node.kind)
    if kind == "VAR_RESET_ALL" or (
        (node.name or "").lower() == "search_path" and kind in ("VAR_RESET", "VAR_SET_DEFAULT")
    ):
        scope.path = scope.namespace.default_path
        return
    if (node.name or "").lower() != "search_path":
        return
    values: list[str] = []
    for arg in node.args or ():
        value = getattr(getattr(arg, "val", None), "sval", None)
        if value:
            values.extend(_parse_path(value, scope.namespace.user))
    scope.path = tuple(values) or scope.namespace.default_path


def _set_config_search_path(node: Any, scope: _Scope) -> bool:
    """SELECT set_config('search_path', '<constant>', ...) alone: follow it."""
    targets = node.targetList or ()
    if len(targets) != 1 or node.fromClause:
        return False
    call = getattr(targets[0], "val", None)
    if type(call).__name__ != "FuncCall" or _strings(call.funcname)[-1:] != ["set_config"]:
        return False
    args = call.args or ()
    constants = [getattr(getattr(a, "val", None), "sval", None) for a in args[:2]]
    if len(constants) < 2 or constants[0] != "search_path" or constants[1] is None:
        return False
    scope.path = _parse_path(constants[1], scope.namespace.user) or scope.namespace.default_path
    return True


def _implicit_indexes(schema: str, table: str, constraints: Any, column: str | None = None) -> list[ObjectRef]:
    """Indexes PostgreSQL makes for PRIMARY KEY, UNIQUE and EXCLUDE constraints. Their
    names may differ (truncation, collisions), so they are weak: proof of nothing, but
    another migration creating the same name proves nothing either."""
    found = []
    for c in constraints or ():
        contype = _kind_name(getattr(c, "contype", ""))
        if contype not in ("CONSTR_PRIMARY", "CONSTR_UNIQUE", "CONSTR_EXCLUSION"):
            continue
        if c.conname:
            name = c.conname
        elif contype == "CONSTR_PRIMARY":
            name = f"{table}_pkey"
        else:
            keys = [column] if column else _strings(getattr(c, "keys", None)) or ["expr"]
            name = f"{table}_{'_'.join(keys)}_{'key' if contype == 'CONSTR_UNIQUE' else 'excl'}"
        found.append(ObjectRef("index", schema, name[:63], table))
    return found


def _implicit_sequences(schema: str, table: str, column: Any) -> list[ObjectRef]:
    type_name = (_strings(getattr(column.typeName, "names", None)) or [""])[-1].lower()
    identity = any(_kind_name(getattr(c, "contype", "")) == "CONSTR_IDENTITY" for c in column.constraints or ())
    if type_name in ("serial", "bigserial", "smallserial", "serial4", "serial8", "serial2") or identity:
        return [ObjectRef("sequence", schema, f"{table}_{column.colname}_seq"[:63])]
    return []


def _create_schema(node: Any, scope: _Scope) -> _Found:
    name = node.schemaname or _role_name(node.authrole, scope.namespace.user)
    if not name:
        raise _CannotTell("CREATE SCHEMA AUTHORIZATION of a role poststack cannot name")
    ref = ObjectRef("schema", None, name)
    creates, weak = ([], [ref]) if node.if_not_exists else ([ref], [])
    inner = _Scope(scope.namespace, (name,))
    scope.namespace.add_schema(name)
    for element in node.schemaElts or ():
        handler = _HANDLERS.get(type(element).__name__)
        if handler:
            c, w, _ = handler(element, inner)
            creates += c
            weak += w
    return creates, weak, []


def _create_table(node: Any, scope: _Scope) -> _Found:
    if _is_temp(node.relation):
        return _remember_temp(scope, node.relation)  # gone at the end of the session
    schema, name = _relation(scope, node.relation, creating=True)
    # A partition or an inheriting table goes with its parent (DROP TABLE parent, CASCADE).
    parents = [p for p in node.inhRelations or () if type(p).__name__ == "RangeVar"]
    parent = parents[0].relname if parents else None
    columns = [e for e in node.tableElts or () if type(e).__name__ == "ColumnDef" and e.colname]
    made = [ObjectRef("table", schema, name, parent), *(ObjectRef("column", schema, c.colname, name) for c in columns)]
    implicit = [r for c in columns for r in _implicit_indexes(schema, name, c.constraints, c.colname)]
    implicit += [r for c in columns for r in _implicit_sequences(schema, name, c)]
    implicit += _implicit_indexes(schema, name, [e for e in node.tableElts or () if type(e).__name__ == "Constraint"])
    if node.if_not_exists:
        return [], made + implicit, []
    return made, implicit, []


def _create_table_as(node: Any, scope: _Scope) -> _Found:
    if _is_temp(node.into.rel):
        return _remember_temp(scope, node.into.rel)
    schema, name = _relation(scope, node.into.rel, creating=True)
    kind = "materialized_view" if "MATVIEW" in _kind_name(node.objtype) else "table"
    ref = ObjectRef(kind, schema, name)
    return ([], [ref], []) if node.if_not_exists else ([ref], [], [])


def _create_view(node: Any, scope: _Scope) -> _Found:
    if _is_temp(node.view):
        return _remember_temp(scope, node.view)
    schema, name = _relation(scope, node.view, creating=True)
    ref = ObjectRef("view", schema, name)
    return ([], [ref], [ref]) if node.replace else ([ref], [], [])


def _create_index(node: Any, scope: _Scope) -> _Found:
    if not node.idxname or _is_temp(node.relation):
        return [], [], []  # PostgreSQL picks the name, or it is temporary: nothing to look for
    schema, table = _relation(scope, node.relation)
    ref = ObjectRef("index", schema, node.idxname, table)
    return ([], [ref], []) if node.if_not_exists else ([ref], [], [])


def _create_sequence(node: Any, scope: _Scope) -> _Found:
    if _is_temp(node.sequence):
        return _remember_temp(scope, node.sequence)
    schema, name = _relation(scope, node.sequence, creating=True)
    owner = None  # OWNED BY table.column: it goes when that column or table does
    for option in node.options or ():
        if getattr(option, "defname", "") == "owned_by":
            names = _strings(option.arg)
            owner = names[-2] if len(names) >= 2 else None
    ref = ObjectRef("sequence", schema, name, owner)
    return ([], [ref], []) if node.if_not_exists else ([ref], [], [])


def _create_function(node: Any, scope: _Scope) -> _Found:
    names = _strings(node.funcname)
    schema, name = (names[-2], names[-1]) if len(names) >= 2 else (scope.creation_schema(), names[-1])
    kind = "procedure" if node.is_procedure else "function"
    ref = ObjectRef(kind, schema, name, None, _routine_args(node.parameters))
    if "%TYPE" in (ref.args or ()):
        return [], [ref], []  # its signature depends on a column's type: cannot be matched
    return ([], [ref], [ref]) if node.replace else ([ref], [], [])


def _create_type(kind: str) -> Any:
    def handler(node: Any, scope: _Scope) -> _Found:
        if kind == "composite":
            schema, name = _relation(scope, node.typevar, creating=True)
        else:
            names = _strings(node.domainname if kind == "domain" else node.typeName)
            schema, name = _qualified(scope, names, "type", creating=True)
        return [ObjectRef(kind, schema, name)], [], []

    return handler


def _create_extension(node: Any, scope: _Scope) -> _Found:
    ref = ObjectRef("extension", None, node.extname)
    return ([], [ref], []) if node.if_not_exists else ([ref], [], [])


def _create_trigger(node: Any, scope: _Scope) -> _Found:
    schema, table = _relation(scope, node.relation)
    ref = ObjectRef("trigger", schema, node.trigname, table)
    return ([], [ref], [ref]) if node.replace else ([ref], [], [])


def _create_policy(node: Any, scope: _Scope) -> _Found:
    schema, table = _relation(scope, node.table)
    return [ObjectRef("policy", schema, node.policy_name, table)], [], []


def _alter_table(node: Any, scope: _Scope) -> _Found:
    if node.relation is None or _is_temp(node.relation):
        return [], [], []
    on_type = "OBJECT_TYPE" in _kind_name(node.objtype)
    schema, table = _relation(scope, node.relation, family="type" if on_type else "relation")
    if schema == TEMP_SCHEMA:
        return [], [], []
    creates: list[ObjectRef] = []
    weak: list[ObjectRef] = []
    touches: list[ObjectRef] = []
    for cmd in node.cmds or ():
        subtype = _kind_name(cmd.subtype)
        if subtype == "AT_AddColumn" and cmd.def_ is not None:
            column = ObjectRef("column", schema, cmd.def_.colname, table)
            (weak if cmd.missing_ok else creates).append(column)
            if not on_type:
                weak += _implicit_indexes(schema, table, cmd.def_.constraints, cmd.def_.colname)
                weak += _implicit_sequences(schema, table, cmd.def_)
        elif subtype == "AT_DropColumn" and cmd.name:
            touches += [ObjectRef("column", schema, cmd.name, table), ObjectRef(DEPENDENTS, schema, table)]
            if _kind_name(cmd.behavior) == "DROP_CASCADE":
                touches.append(ObjectRef(CASCADE, None, "*"))
        elif subtype == "AT_AddConstraint" and cmd.def_ is not None:
            used = getattr(cmd.def_, "indexname", None)
            if used:  # ADD CONSTRAINT ... USING INDEX renames that index to the constraint's name
                touches.append(ObjectRef("index", schema, used, table))
            weak += _implicit_indexes(schema, table, [cmd.def_])
        elif subtype == "AT_DropConstraint":
            touches.append(ObjectRef(DEPENDENTS, schema, table))
            if cmd.name:  # a constraint backed by an index takes the index with it
                touches.append(ObjectRef("index", schema, cmd.name, table))
        elif subtype == "AT_AlterColumnType":
            touches.append(ObjectRef(DEPENDENTS, schema, table))
    if node.missing_ok:  # ALTER TABLE IF EXISTS: the table may not have been there at all
        return [], creates + weak, touches
    return creates, weak, touches


def _drop(node: Any, scope: _Scope) -> _Found:
    kind = _DROP_KINDS.get(_kind_name(node.removeType))
    if kind is None:
        return [], [], []
    touches = []
    for obj in node.objects or ():
        if kind in ROUTINE_KINDS:
            ref = _object_with_args(scope, obj, kind)
        elif kind in ("schema", "extension"):
            ref = ObjectRef(kind, None, getattr(obj, "sval", str(obj)))
        elif kind in ("enum", "domain"):
            schema, name = _qualified(scope, _strings(getattr(obj, "names", None)), "type")
            ref = ObjectRef(kind, schema, name)
        elif kind in ("trigger", "policy"):
            names = _strings(obj)
            schema, table = _qualified(scope, names[:-1], "relation")
            ref = ObjectRef(kind, schema, names[-1], table)
        else:
            schema, name = _qualified(scope, _strings(obj), "relation")
            ref = ObjectRef(kind, schema, name)
        if ref is not None:
            touches.append(ref)
    if _kind_name(node.behavior) == "DROP_CASCADE":
        touches.append(ObjectRef(CASCADE, None, "*"))
    return [], [], touches


def _rename(node: Any, scope: _Scope) -> _Found:
    creates, weak, touches = _rename_plain(node, scope)
    if node.missing_ok or any(r.family == "routine" and r.args is None for r in creates):
        # IF EXISTS: it may not have been there; no argument list: the signature is unknown.
        return [], creates + weak, touches
    return creates, weak, touches


def _rename_plain(node: Any, scope: _Scope) -> _Found:
    rename = _kind_name(node.renameType)
    new = node.newname
    if rename in _RELATION_KINDS and node.relation is not None:
        schema, name = _relation(scope, node.relation)
        kind = _RELATION_KINDS[rename]
        return [ObjectRef(kind, schema, new)], [], [ObjectRef(kind, schema, name)]
    if rename in ("OBJECT_COLUMN", "OBJECT_ATTRIBUTE") and node.relation is not None:
        schema, table = _relation(scope, node.relation)
        return [ObjectRef("column", schema, new, table)], [], [ObjectRef("column", schema, node.subname, table)]
    if rename == "OBJECT_TABCONSTRAINT" and node.relation is not None:
        # A constraint backed by an index renames the index too.
        schema, table = _relation(scope, node.relation)
        return [], [ObjectRef("index", schema, new, table)], [ObjectRef("index", schema, node.subname, table)]
    if rename == "OBJECT_SCHEMA":
        return [ObjectRef("schema", None, new)], [], [ObjectRef("schema", None, node.subname)]
    if rename in ("OBJECT_TRIGGER", "OBJECT_POLICY") and node.relation is not None:
        kind = "trigger" if rename == "OBJECT_TRIGGER" else "policy"
        schema, table = _relation(scope, node.relation)
        return [ObjectRef(kind, schema, new, table)], [], [ObjectRef(kind, schema, node.subname, table)]
    if rename in ("OBJECT_FUNCTION", "OBJECT_PROCEDURE", "OBJECT_ROUTINE"):
        kind = "procedure" if rename == "OBJECT_PROCEDURE" else "function"
        old = _object_with_args(scope, node.object, kind)
        if old is None:
            return [], [], []
        return [ObjectRef(kind, old.schema, new, None, old.args)], [], [old]
    if rename in ("OBJECT_TYPE", "OBJECT_DOMAIN"):
        kind = "domain" if rename == "OBJECT_DOMAIN" else "enum"
        schema, name = _qualified(scope, _strings(node.object), "type")
        return [ObjectRef(kind, schema, new)], [], [ObjectRef(kind, schema, name)]
    return [], [], []


def _set_schema(node: Any, scope: _Scope) -> _Found:
    creates, weak, touches = _set_schema_plain(node, scope)
    if node.missing_ok or any(r.family == "routine" and r.args is None for r in creates):
        return [], creates + weak, touches
    return creates, weak, touches


def _set_schema_plain(node: Any, scope: _Scope) -> _Found:
    object_type = _kind_name(node.objectType)
    kind = _RELATION_KINDS.get(object_type)
    if kind is not None and node.relation is not None:
        schema, name = _relation(scope, node.relation)
        # Its owned sequences, indexes and triggers move with it.
        moved = [ObjectRef(kind, schema, name), ObjectRef(DEPENDENTS, schema, name)]
        return [ObjectRef(kind, node.newschema, name)], [], moved
    if object_type in ("OBJECT_FUNCTION", "OBJECT_PROCEDURE", "OBJECT_ROUTINE"):
        kind = "procedure" if object_type == "OBJECT_PROCEDURE" else "function"
        old = _object_with_args(scope, node.object, kind)
        if old is None:
            raise _CannotTell("ALTER ... SET SCHEMA of a routine poststack cannot name")
        return [ObjectRef(kind, node.newschema, old.name, None, old.args)], [], [old]
    if object_type in ("OBJECT_TYPE", "OBJECT_DOMAIN"):
        kind = "domain" if object_type == "OBJECT_DOMAIN" else "enum"
        schema, name = _qualified(scope, _strings(node.object), "type")
        return [ObjectRef(kind, node.newschema, name)], [], [ObjectRef(kind, schema, name)]
    if object_type == "OBJECT_EXTENSION":
        return [], [], []  # extension members are not checked
    raise _CannotTell(f"ALTER ... SET SCHEMA of {object_type.removeprefix('OBJECT_').lower()}: not read by poststack")


# --- poststack's own tables ------------------------------------------------------------

_REFUSED_MID_RUN = "PostgreSQL would refuse it mid-run"


def _own_table(scope: _Scope, own: OwnTables, schema: str | None, name: str) -> str | None:
    """``name`` when ``schema.name`` (or ``name`` found through the search_path) is one of
    poststack's tables, else None. Names come folded as PostgreSQL folds unquoted ones."""
    if own.find(name) is None or schema == TEMP_SCHEMA:
        return None
    if schema is not None:
        return name if schema == own.schema else None
    if ("relation", TEMP_SCHEMA, name) in scope.namespace.objects:
        return None
    # poststack's tables exist before any migration runs: the first schema on the path that
    # holds the name wins, theirs counted.
    for candidate in scope.path:
        if candidate == own.schema:
            return name
        if ("relation", candidate, name) in scope.namespace.objects:
            return None
    return None


def _own_relation(scope: _Scope, own: OwnTables, rangevar: Any) -> str | None:
    if _is_temp(rangevar):
        return None
    return _own_table(scope, own, rangevar.schemaname, rangevar.relname)


def _own_display(own: OwnTables, name: str) -> tuple[str, str]:
    """("poststack's tracking table public.schema_migrations", "poststack would lose its record mid-run")"""
    role, loss = own.find(name) or ("table", "its record")
    return f"poststack's {role} {own.schema}.{name}", f"poststack would lose {loss} mid-run"


def _own_table_conflicts(node: Any, scope: _Scope, own: OwnTables) -> list[str]:
    """What ``node`` would do to poststack's tables, one phrase per table, or nothing."""
    kind = type(node).__name__
    found: list[str] = []
    if kind == "DropStmt":
        remove = _kind_name(node.removeType)
        if remove == "OBJECT_TABLE":  # DROP VIEW/INDEX of a table fails without harm
            for obj in node.objects or ():
                names = _strings(obj)
                name = _own_table(scope, own, names[-2] if len(names) >= 2 else None, names[-1])
                if name is not None:
                    table, loss = _own_display(own, name)
                    found.append(f"drops {table}; {loss}")
        elif remove == "OBJECT_SCHEMA":
            for obj in node.objects or ():
                if getattr(obj, "sval", None) != own.schema:
                    continue
                if _kind_name(node.behavior) == "DROP_CASCADE":
                    found.append(
                        f"drops schema {own.schema} with CASCADE, and poststack's tables in it; "
                        "poststack would lose its record mid-run"
                    )
                else:  # poststack's tables are always in it by then
                    found.append(f"drops schema {own.schema}, which holds poststack's tables; {_REFUSED_MID_RUN}")
    elif kind == "DoStmt":
        # Dynamic SQL is beyond the parser: a DO block that names poststack's tables may do
        # anything to them (the on-call probe's EXECUTE 'DELETE FROM schema_migrations').
        body = " ".join(getattr(a.arg, "sval", "") for a in node.args or () if getattr(a, "defname", "") == "as")
        for name, _role, _loss in own.tables:
            if re.search(rf"\b{re.escape(name)}\b", body, re.IGNORECASE):
                table, loss = _own_display(own, name)
                found.append(
                    f"runs a DO block that names {table}, and what dynamic SQL does to it cannot be read; {loss}"
                )
    elif kind == "DropOwnedStmt":
        # Whatever the role owns goes: poststack's tables too, when that role made them (the
        # usual case for an application's role). Which role owns them is not known here.
        roles = ", ".join(getattr(r, "rolename", None) or "CURRENT_USER" for r in node.roles or ())
        found.append(
            f"drops everything {roles} owns, poststack's tables in {own.schema} too when {roles} owns them; "
            "poststack would lose its record mid-run"
        )
    elif kind in ("DeleteStmt", "UpdateStmt", "InsertStmt", "MergeStmt") and node.relation is not None:
        name = _own_relation(scope, own, node.relation)
        if name is not None:
            table, _ = _own_display(own, name)
            verb = {"DeleteStmt": "deletes rows of", "UpdateStmt": "updates", "InsertStmt": "inserts into"}.get(
                kind, "merges into"
            )
            found.append(f"{verb} {table}; its rows are poststack's record, kept by poststack's own commands")
    elif kind == "TruncateStmt":
        for rangevar in node.relations or ():
            name = _own_relation(scope, own, rangevar)
            if name is not None:
                table, loss = _own_display(own, name)
                found.append(f"truncates {table}; {loss}")
    elif kind == "RenameStmt":
        rename = _kind_name(node.renameType)
        if rename in _RELATION_KINDS and node.relation is not None:
            name = _own_relation(scope, own, node.relation)
            if name is not None:
                table, loss = _own_display(own, name)
                found.append(f"renames {table} to {node.newname}; {loss}")
            elif own.find(node.newname) is not None and not _is_temp(node.relation):
                schema, old = _relation(scope, node.relation)
                if schema == own.schema:  # a rename stays in its schema: the name is taken
                    table, _ = _own_display(own, node.newname)
                    found.append(f"renames {schema}.{old} to the name of {table}; {_REFUSED_MID_RUN}")
        elif rename == "OBJECT_SCHEMA" and node.subname == own.schema:
            found.append(
                f"renames schema {own.schema}, and poststack's tables with it; poststack would lose its record mid-run"
            )
    elif kind == "AlterObjectSchemaStmt" and _kind_name(node.objectType) in _RELATION_KINDS and node.relation:
        name = _own_relation(scope, own, node.relation)
        if name is not None:
            table, loss = _own_display(own, name)
            found.append(f"moves {table} to schema {node.newschema}; {loss}")
        elif node.newschema == own.schema and own.find(node.relation.relname) and not _is_temp(node.relation):
            schema, moved = _relation(scope, node.relation)
            table, _ = _own_display(own, moved)
            found.append(f"moves {schema}.{moved} into schema {own.schema}, where {table} is; {_REFUSED_MID_RUN}")
    return found


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
