"""`poststack config` (and `-v`): the resolved settings, each with where it came from, in
words and as JSON (schemas/config.schema.json). Passwords are masked."""

from __future__ import annotations

import json
from dataclasses import dataclass

from reconciler.config import SETTING_VARIABLES, Settings, masked_url


@dataclass(frozen=True)
class Row:
    key: str  # the project-file key
    value: str | float | int | None  # as shown: a URL masked; None where the default is "decided later"
    source: str
    variable: str  # the environment variable that sets it


def rows(settings: Settings) -> list[Row]:
    """One row per setting, in SETTING_VARIABLES order."""
    shown: dict[str, str | float | int | None] = {
        "database_url": masked_url(settings.database_url) if settings.database_url else "embedded",
        "migrations_dir": str(settings.migrations_dir),
        "tracking_schema": settings.tracking_schema,
        "table_prefix": settings.table_prefix,
        "layout": settings.layout,
        "shadow_database_url": masked_url(settings.shadow_url) if settings.shadow_url else None,
        "lock_timeout": settings.lock_timeout,
        "ddl_lock_timeout": settings.ddl_lock_timeout,
        "ddl_lock_retries": settings.ddl_lock_retries,
        "numbering": settings.numbering,
        "lint_ignore": ", ".join(settings.lint_ignore) or None,
        "pooler": settings.pooler,
    }
    return [Row(key, shown[key], settings.origins.of(key), variable) for key, variable in SETTING_VARIABLES.items()]


# What a None value means, in words.
_UNSET = {
    "layout": "detected from the migrations directory",
    "shadow_database_url": "a scratch database beside the target",
    "numbering": "as the existing migrations are numbered",
    "lint_ignore": "no rule switched off",
}


def _shown(row: Row) -> str:
    if row.value is None:
        return _UNSET.get(row.key, "")
    if row.key == "ddl_lock_timeout" and row.value == 0:
        return "0 (poststack sets no lock_timeout)"
    return f"{row.value:g}" if isinstance(row.value, float) else str(row.value)  # 30, not 30.0


def config_text(settings: Settings) -> str:
    origins = settings.origins
    environment = (
        f"{settings.environment} (from {origins.environment_source})" if settings.environment else "none chosen"
    )
    lines = [
        f"environment:  {environment}",
        f"project file: {origins.project_file or 'none (no poststack.toml or [tool.poststack] here)'}",
        f".env:         {origins.dotenv_file or 'none'}",
        "",
    ]
    table = [(r.key, _shown(r), r.source) for r in rows(settings)]
    key_width = max(len(k) for k, _, _ in table)
    value_width = max(len(v) for _, v, _ in table)
    lines += [f"{k:<{key_width}}  {v:<{value_width}}  from {s}" for k, v, s in table]
    return "\n".join(lines)


def config_json(settings: Settings) -> str:
    origins = settings.origins
    return json.dumps(
        {
            "environment": settings.environment,
            "environment_source": origins.environment_source,
            "project_file": str(origins.project_file) if origins.project_file else None,
            "dotenv_file": str(origins.dotenv_file) if origins.dotenv_file else None,
            "settings": {r.key: {"value": r.value, "source": r.source, "variable": r.variable} for r in rows(settings)},
        },
        indent=2,
    )
