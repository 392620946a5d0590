"""Pieces the rules share: what a statement is, and the words for sizes and locks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from reconciler.diagnosis.lint.base import StatementContext
from reconciler.observed.sizes import RelationSize


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
        return f"{relation} (made by a pending migration: empty then)"
    return f"{relation} ({size.rows:,} rows, {human_bytes(size.bytes)})"


def what_the_lock_stops(mode_label: str) -> str:
    if mode_label == "ACCESS EXCLUSIVE":
        return "nobody reads or writes it"
    if mode_label in ("EXCLUSIVE", "SHARE ROW EXCLUSIVE", "SHARE"):
        return "nobody writes it"
    return "other schema changes wait"
