"""Statement: one SQL text with bound parameters, and where it came from.

Plans carry these; what a step shows is what it runs. Identifiers are quoted here,
never spliced from user values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Statement:
    """``sql`` uses psycopg2 ``%(name)s`` placeholders when ``params`` is not None; with
    ``params`` None it is sent as written (so a ``%`` in a migration is literal)."""

    sql: str
    params: dict[str, Any] | None = None
    source: str | None = None  # file the SQL came from, for error messages
    line: int | None = None  # line in that file where the statement starts
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "sql": self.sql,
            "params": self.params,
            "source": self.source,
            "line": self.line,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Statement:
        return cls(
            sql=data["sql"],
            params=data.get("params"),
            source=data.get("source"),
            line=data.get("line"),
            notes=tuple(data.get("notes") or ()),
        )


def quote_ident(name: str) -> str:
    """Quote a PostgreSQL identifier: always double-quoted, inner quotes doubled."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"
