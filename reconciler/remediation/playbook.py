"""Playbooks: versioned YAML remediation recipes, validated against a JSON Schema before
anything runs. Built-ins ship in ``playbooks/``; a project's own ``playbooks/`` (beside
its migrations directory) adds to them and overrides them by name."""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from reconciler import bundled
from reconciler.diagnosis.issues import IssueType
from reconciler.errors import UsageError

BUILTIN_DIR = bundled.PLAYBOOKS
SCHEMA_DIR = bundled.SCHEMAS
PENDING = "pending"
EVIDENCE_APPLIED = "evidence_applied"
IMPORTED = "imported"  # db import: another tool's history, one item per migration it has a word on
BASELINE = "baseline"  # db baseline VERSION: one item per migration, with what the evidence says of it
# What a step's for_each may range over: the issues of one type, the migrations still to
# apply, or every migration the catalog shows applied (what an emergency reset re-tracks).
FOR_EACH_SOURCES = (*(t.value for t in IssueType), PENDING, EVIDENCE_APPLIED, IMPORTED, BASELINE)


class PlaybookError(UsageError):
    """A playbook that cannot be used: where, and what is wrong."""


@dataclass(frozen=True)
class StepSpec:
    name: str
    action: str
    args: dict[str, Any]
    for_each: str | None
    when: str | None
    line: int  # where the step starts in its file


@dataclass(frozen=True)
class Playbook:
    name: str
    version: int
    description: str
    handles: tuple[str, ...]
    steps: tuple[StepSpec, ...]
    path: Path
    sha256: str
    auto: bool = True
    order: int = 50
    destructive: bool = False
    builtin: bool = field(default=False, compare=False)

    def where(self, step: StepSpec) -> str:
        return f"{self.path}:{step.line}"


class _LineLoader(yaml.SafeLoader):
    """Safe YAML that remembers the line each mapping starts on (as ``__line__``)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    # Each key's own line, so an error in a value points at that value.
    mapping["__lines__"] = {
        key.value: key.start_mark.line + 1 for key, _ in node.value if isinstance(key, yaml.ScalarNode)
    }
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k not in ("__line__", "__lines__")}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


@lru_cache(maxsize=4)
def json_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / name).read_text())


def load_playbook(path: Path, *, builtin: bool = False) -> Playbook:
    """Read, schema-check and type one playbook file. Errors name the file and line."""
    import jsonschema

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PlaybookError(f"{path}: cannot read: {e.strerror}") from e
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_LineLoader)
    except UnicodeDecodeError as e:
        raise PlaybookError(f"{path}: not valid UTF-8") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise PlaybookError(f"{path}{line}: not valid YAML: {problem}") from e
    if not isinstance(data, dict):
        raise PlaybookError(f"{path}: a playbook is a YAML mapping with name, version, description, handles, steps")
    validator = jsonschema.Draft202012Validator(json_schema("playbook.schema.json"))
    errors = sorted(validator.iter_errors(_strip_lines(data)), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        line = _line_at(data, list(error.absolute_path))
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise PlaybookError(f"{path}:{line}: {where}: {error.message}")
    from reconciler.remediation.actions import get_action

    steps = []
    for raw_step in data["steps"]:
        line = raw_step["__line__"]
        try:
            action = get_action(raw_step["action"])
        except UsageError as e:
            raise PlaybookError(f"{path}:{line}: {e.summary}") from None
        args = _strip_lines(raw_step.get("args") or {})
        unknown = sorted(set(args) - set(action.required) - set(action.optional))
        missing = [a for a in action.required if a not in args]
        if unknown or missing:
            problem = (
                f"unknown argument(s) {', '.join(unknown)}" if unknown else f"missing argument(s) {', '.join(missing)}"
            )
            raise PlaybookError(f"{path}:{line}: action {action.name}: {problem}")
        if action.destructive and not data.get("destructive", False):
            raise PlaybookError(
                f"{path}:{line}: action {action.name} destroys data: the playbook must say destructive: true "
                "(then plans take a backup first and apply asks for --confirm)"
            )
        for_each = raw_step.get("for_each")
        if for_each is not None and for_each not in FOR_EACH_SOURCES:
            close = difflib.get_close_matches(str(for_each), FOR_EACH_SOURCES, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise PlaybookError(
                f"{path}:{line}: for_each {for_each!r} is not an issue type, pending, evidence_applied, imported or baseline{hint}"
            )
        for name in action.static_args:
            value = args.get(name)
            if isinstance(value, str) and ("{{" in value or "{%" in value):
                raise PlaybookError(
                    f"{path}:{line}: action {action.name}: '{name}' is SQL text and cannot be templated; "
                    "pass values in params and names in identifiers"
                )
        steps.append(
            StepSpec(raw_step["name"], raw_step["action"], args, raw_step.get("for_each"), raw_step.get("when"), line)
        )
    return Playbook(
        name=data["name"],
        version=data["version"],
        description=data["description"],
        handles=tuple(data["handles"]),
        steps=tuple(steps),
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        auto=data.get("auto", True),
        order=data.get("order", 50),
        destructive=data.get("destructive", False),
        builtin=builtin,
    )


def _line_at(data: Any, path: list[Any]) -> int:
    """The line of the deepest mapping on ``path`` (the schema error's location)."""
    line = data.get("__line__", 1) if isinstance(data, dict) else 1
    node = data
    for part in path:
        if isinstance(node, dict):
            line = node.get("__lines__", {}).get(part, line)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, dict) and "__line__" in node:
            line = node["__line__"]
    return line


def project_dir(migrations_dir: Path) -> Path:
    return migrations_dir.resolve().parent / "playbooks"


def load_all(migrations_dir: Path) -> dict[str, Playbook]:
    """Built-ins, then the project's own playbooks overriding them by name."""
    playbooks: dict[str, Playbook] = {}
    for path in sorted(BUILTIN_DIR.glob("*.yaml")):
        book = load_playbook(path, builtin=True)
        playbooks[book.name] = book
    own = project_dir(migrations_dir)
    if own.is_dir() and own.resolve() != BUILTIN_DIR.resolve():
        for path in sorted(own.glob("*.y*ml")):
            book = load_playbook(path)
            earlier = playbooks.get(book.name)
            if earlier is not None and not earlier.builtin:
                # Which one would run must not depend on how the files happen to sort.
                raise PlaybookError(f"{path}: playbook name {book.name!r} is also used by {earlier.path}")
            playbooks[book.name] = book
    return playbooks


def find(playbooks: dict[str, Playbook], name: str) -> Playbook:
    if name in playbooks:
        return playbooks[name]
    close = difflib.get_close_matches(name, playbooks, n=1)
    hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(sorted(playbooks))}"
    raise UsageError(f"unknown playbook {name!r}{hint}")
