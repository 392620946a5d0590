"""Pieces the rules share: what a statement is, and the words for sizes and locks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from reconciler.diagnosis.lint.base import StatementContext, walk
from reconciler.observed.sizes import RelationSize

# Column types that fill every row from a sequence (nextval) when added.
SERIAL_TYPES = frozenset({"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"})


def alter_commands(context: StatementContext) -> Iterator[dict[str, Any]]:
    """The subcommands of an ALTER TABLE (AlterTableCmd nodes); nothing for other statements."""
    if context.kind != "AlterTableStmt":
        return
    for command in context.node.get("cmds") or []:
        if "AlterTableCmd" in command:
            yield command["AlterTableCmd"]


def altered(context: StatementContext) -> str | None:
    """The table an ALTER TABLE or CREATE INDEX acts on, as schema.name."""
    relation = context.node.get("relation")
    return context.resolve(relation) if isinstance(relation, dict) and relation.get("relname") else None


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} bytes"


def sized(relation: str, size: RelationSize | None) -> str:
    """'public.orders (1,204,331 rows, 2.1 GB)', or 'public.orders (made by a pending migration)'."""
    if size is None:
        return relation
    if not size.exists:
        return f"{relation} (made by a pending migration: nobody uses it yet)"
    return f"{relation} ({size.rows:,} rows, {human_bytes(size.bytes)})"


def what_the_lock_stops(mode_label: str) -> str:
    if mode_label == "ACCESS EXCLUSIVE":
        return "nobody reads or writes it"
    if mode_label in ("EXCLUSIVE", "SHARE ROW EXCLUSIVE", "SHARE"):
        return "nobody writes it"
    return "other schema changes wait"


def added_columns(context: StatementContext) -> Iterator[dict[str, Any]]:
    """The ColumnDef of each ADD COLUMN of an ALTER TABLE."""
    for command in alter_commands(context):
        if command.get("subtype") == "AT_AddColumn":
            column = (command.get("def") or {}).get("ColumnDef")
            if column is not None:
                yield column


def constraints(column: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A ColumnDef's constraints by kind (CONSTR_DEFAULT, CONSTR_NOTNULL, ...)."""
    found: dict[str, dict[str, Any]] = {}
    for item in column.get("constraints") or []:
        constraint = item.get("Constraint")
        if constraint is not None:
            found.setdefault(constraint.get("contype", ""), constraint)
    return found


def type_name(column: dict[str, Any]) -> str:
    """The last part of a ColumnDef's type name, lowercase: 'bigserial', 'int4'."""
    names = (column.get("typeName") or {}).get("names") or []
    return str(names[-1].get("String", {}).get("sval", "")).lower() if names else ""


def called_functions(node: Any) -> set[str]:
    """The names (last part, lowercase) of every function an expression calls."""
    return {
        str(call["funcname"][-1].get("String", {}).get("sval", "")).lower()
        for kind, call in walk(node)
        if kind == "FuncCall" and call.get("funcname")
    }


def names_a_column(node: Any) -> bool:
    """The expression refers to a column somewhere (a subquery's included)."""
    return any(kind == "ColumnRef" for kind, _ in walk(node))


def dropped_range_vars(context: StatementContext, kinds: tuple[str, ...] = ("OBJECT_TABLE",)) -> list[dict[str, Any]]:
    """Each relation a DROP of one of ``kinds`` names, as a RangeVar ({"schemaname", "relname"})."""
    if context.kind != "DropStmt" or context.node.get("removeType") not in kinds:
        return []
    found = []
    for item in context.node.get("objects") or []:
        parts = [part.get("String", {}).get("sval", "") for part in item.get("List", {}).get("items") or []]
        if parts:
            found.append({"relname": parts[-1], **({"schemaname": parts[-2]} if len(parts) > 1 else {})})
    return found


def dropped_relations(context: StatementContext, kinds: tuple[str, ...] = ("OBJECT_TABLE",)) -> list[str]:
    """The schema.name of each relation a DROP of one of ``kinds`` names."""
    return [context.resolve(range_var) for range_var in dropped_range_vars(context, kinds)]


def a_lock(mode_label: str) -> str:
    """'an ACCESS EXCLUSIVE lock', 'a SHARE lock'."""
    article = "an" if mode_label[:1] in "AEIOU" else "a"
    return f"{article} {mode_label} lock"
