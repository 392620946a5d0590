"""The text and JSON views of ``poststack new``'s result (schemas/new-result.schema.json)."""

from __future__ import annotations

from typing import Any

from reconciler.desired.layouts import layout_named
from reconciler.desired.scaffold import NewMigration
from reconciler.interface.report import to_json

ROLES = {
    "migration": "the migration",
    "rollback": "its rollback",
    "verify": "its verify script",
    "migration_and_rollback": "the migration and its rollback",
}


def new_text(result: NewMigration) -> str:
    tool = layout_named(result.layout).tool
    lines = [f"Created the migrations directory {result.directory}"] if result.created_directory else []
    lines.append(
        f"✅ Wrote migration {result.version} ({result.name}) in {tool}'s layout, numbered by {result.numbering}:"
    )
    width = max(len(ROLES[f.role]) for f in result.files)
    lines += [f"  {ROLES[f.role]:<{width}}  {f.path}" for f in result.files]
    lines += [f"⚠️  {note}" for note in result.notes]
    return "\n".join(lines)


def new_json(result: NewMigration) -> str:
    data: dict[str, Any] = {
        "operation": "new",
        "layout": result.layout,
        "version": result.version,
        "name": result.name,
        "numbering": result.numbering,
        "directory": str(result.directory),
        "created_directory": result.created_directory,
        "files": [{"role": f.role, "path": str(f.path)} for f in result.files],
        "notes": list(result.notes),
    }
    return to_json(data)
