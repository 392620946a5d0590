"""The project file: ``poststack.toml`` (its top level), else ``[tool.poststack]`` in
``pyproject.toml``, with its named environments (``[environments.NAME]``).

Everything in it is checked when it is read, every environment included, not only the one
chosen: a key poststack does not read is a typo, and a value of the wrong type is an error,
so a mistake in ``[environments.prod]`` is found on a developer's laptop, not in the deploy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import UsageError, did_you_mean

ENVIRONMENTS = "environments"
# Each key the project file may set, and the type it must have there.
STRING_KEYS = (
    "database_url",
    "migrations_dir",
    "tracking_schema",
    "table_prefix",
    "layout",
    "shadow_database_url",
    "numbering",
    "pooler",
)
NUMBER_KEYS = ("lock_timeout", "ddl_lock_timeout")  # seconds
COUNT_KEYS = ("ddl_lock_retries",)  # whole numbers
LIST_KEYS = ("lint_ignore",)  # lists of strings
KEYS = (*STRING_KEYS, *NUMBER_KEYS, *COUNT_KEYS, *LIST_KEYS)


@dataclass(frozen=True)
class ProjectFile:
    """What the project file says. ``label`` names it in sources (``poststack.toml``);
    ``path`` is None when there is none."""

    path: Path | None = None
    label: str = ""
    settings: Mapping[str, object] = field(default_factory=dict)
    environments: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    @property
    def directory(self) -> Path | None:
        return self.path.parent if self.path else None

    def environment_table(self, name: str) -> str:
        """``environments.prod``; ``tool.poststack.environments.prod`` in pyproject.toml."""
        return f"{ENVIRONMENTS}.{name}" if self.label == "poststack.toml" else f"tool.poststack.{ENVIRONMENTS}.{name}"

    def environment_label(self, name: str) -> str:
        """``poststack.toml [environments.prod]``, ``pyproject.toml [tool.poststack.environments.prod]``."""
        return f"{self.label.split(' ')[0]} [{self.environment_table(name)}]"

    def environment(self, name: str, chosen_by: str) -> Mapping[str, object]:
        """The settings of environment ``name``, or a usage error with the names there are."""
        if name in self.environments:
            return self.environments[name]
        if self.path is None:
            raise UsageError(
                f"unknown environment {name!r} (from {chosen_by}): there is no poststack.toml or "
                "[tool.poststack] in pyproject.toml here to define it",
                f"Define it as [environments.{name}] in poststack.toml, or run poststack from the project's directory.",
            )
        defined = ", ".join(sorted(self.environments)) or "none"
        raise UsageError(
            f"unknown environment {name!r} (from {chosen_by}){did_you_mean(name, self.environments)}",
            f"{self.path} defines: {defined}.",
        )


def _load(path: Path) -> dict[str, object]:
    import tomllib  # here: most projects have no pyproject.toml nor poststack.toml to parse

    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from e
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror}") from e


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}.get(
        type(value), "a table"
    )


def _checked(table: Mapping[str, object], where: str, *, allow_environments: bool) -> dict[str, object]:
    """``table``'s settings, each key known and each value of its type."""
    known = (*KEYS, ENVIRONMENTS) if allow_environments else KEYS
    for key, value in table.items():
        if key not in known:
            raise UsageError(
                f"{where}: unknown key {key!r}{did_you_mean(key, known)}", f"poststack reads {', '.join(KEYS)}."
            )
        if key in STRING_KEYS and not isinstance(value, str):
            raise UsageError(f"{where}: {key} must be a string, not {_type_name(value)} ({value!r})")
        # bool is an int to Python, not a number of seconds to anyone.
        if key in NUMBER_KEYS and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise UsageError(f"{where}: {key} must be a number of seconds, not {_type_name(value)} ({value!r})")
        if key in NUMBER_KEYS and not math.isfinite(float(value)):  # type: ignore[arg-type]
            raise UsageError(f"{where}: {key} must be a finite number of seconds, not {value!r}")
        if key in COUNT_KEYS and (isinstance(value, bool) or not isinstance(value, int)):
            shown = repr(value) if isinstance(value, float) else f"{_type_name(value)} ({value!r})"
            raise UsageError(f"{where}: {key} must be a whole number, not {shown}")
        if key in LIST_KEYS and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise UsageError(f"{where}: {key} must be an array of strings, not {_type_name(value)} ({value!r})")
    return {k: v for k, v in table.items() if k != ENVIRONMENTS}


def _environments(table: Mapping[str, object], path: Path, prefix: str) -> dict[str, dict[str, object]]:
    """The [<prefix>environments.NAME] tables, each checked as the top level is."""
    environments = table.get(ENVIRONMENTS, {})
    if not isinstance(environments, dict):
        raise UsageError(f"{path}: {prefix}{ENVIRONMENTS} must be tables, [{prefix}{ENVIRONMENTS}.NAME]")
    found: dict[str, dict[str, object]] = {}
    for name, settings in environments.items():
        where = f"{path} [{prefix}{ENVIRONMENTS}.{name}]"
        if not isinstance(settings, dict):
            raise UsageError(f"{where}: must be a table of settings, not {_type_name(settings)}")
        found[name] = _checked(settings, where, allow_environments=False)
    return found


def read(directory: Path) -> ProjectFile:
    """The project file in ``directory``: poststack.toml if there is one (then pyproject.toml
    is not read), else pyproject.toml's [tool.poststack]."""
    own = directory / "poststack.toml"
    if own.is_file():
        table = _load(own)
        settings = _checked(table, str(own), allow_environments=True)
        return ProjectFile(own, "poststack.toml", settings, _environments(table, own, ""))
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        tool = _load(pyproject).get("tool", {})
        table = tool.get("poststack") if isinstance(tool, dict) else None
        if isinstance(table, dict):
            settings = _checked(table, f"{pyproject} [tool.poststack]", allow_environments=True)
            environments = _environments(table, pyproject, "tool.poststack.")
            return ProjectFile(pyproject, "pyproject.toml [tool.poststack]", settings, environments)
    return ProjectFile()
