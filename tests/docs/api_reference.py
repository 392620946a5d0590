"""docs/api.md: the Python API and the pytest plugin, from their signatures and docstrings.

    python -m tests.docs.api_reference        # rewrite docs/api.md from the code

tests/docs/test_api_reference.py fails when the file and the code disagree, so the reference
cannot drift from it.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
VERBS = ("migrate", "rollback", "recover", "status", "diagnose", "plan", "apply")

INTRO = """# Python API reference

`reconciler.api` runs poststack's verbs from Python; `reconciler.testing` is the pytest
plugin and its helpers ([testing your app](testing.md) shows them in use). Generated from
the code by `python -m tests.docs.api_reference`; `tests/docs/test_api_reference.py` fails
when this page and the code disagree. The package is typed (`py.typed`).
"""


def _default(value: Any) -> str:
    return f"{type(value).__name__}.{value.name}" if isinstance(value, enum.Enum) else repr(value)


def _annotation(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return ""
    return value if isinstance(value, str) else getattr(value, "__name__", repr(value))


def signature(function: Callable[..., Any], name: str) -> str:
    """The signature as written in the source (annotations unevaluated), one parameter a line."""
    sig = inspect.signature(function, eval_str=False)
    parts: list[str] = []
    star_done = False
    for param in sig.parameters.values():
        if param.name == "self":
            continue
        if param.kind is param.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if param.kind is param.VAR_KEYWORD:
            star_done = True
            text = f"**{param.name}"
        else:
            text = param.name
        annotation = _annotation(param.annotation)
        if annotation:
            text += f": {annotation}"
        if param.default is not inspect.Parameter.empty:
            text += f" = {_default(param.default)}" if annotation else f"={_default(param.default)}"
        parts.append(text)
    returns = _annotation(sig.return_annotation)
    body = ",\n".join(f"    {p}" for p in parts)
    return f"{name}(\n{body},\n)" + (f" -> {returns}" if returns else "") if parts else f"{name}() -> {returns}"


def _doc(thing: Any) -> str:
    text = inspect.cleandoc(thing.__doc__ or "").strip()
    if isinstance(thing, type) and text.startswith(f"{thing.__name__}("):
        raise AssertionError(f"{thing.__qualname__} has no docstring of its own (dataclass boilerplate)")
    return text


def _dataclass(cls: type) -> str:
    lines = [f"### `{cls.__module__}.{cls.__qualname__}`", "", _doc(cls), "", "| field | type |", "|---|---|"]
    for field in dataclasses.fields(cls):
        lines.append(f"| `{field.name}` | `{_annotation(field.type)}` |".replace("|`", "| `"))
    properties = [(name, m) for name, m in inspect.getmembers(cls) if isinstance(m, property) and m.__doc__]
    if properties:
        lines += ["", "Properties:", ""]
        for name, member in properties:
            summary = " ".join(_doc(member).split())
            lines.append(f"- `{name}`: {summary}")
    return "\n".join(lines) + "\n"


def render() -> str:
    from reconciler import api, errors
    from reconciler.testing import migrations, plugin

    out = [INTRO]
    out += ["## `reconciler.api`", "", _doc(api), ""]
    out += ["### Options", "", "Every verb takes these keyword arguments:", "", "```python"]
    out += [inspect.getsource(api.Options).rstrip(), "```", ""]
    for verb in VERBS:
        function = getattr(api, verb)
        out += [f"### `api.{verb}`", "", "```python", signature(function, f"api.{verb}"), "```", "", _doc(function), ""]
    out += ["## Results", "", "The dataclasses the CLI renders (its JSON is `reconciler.interface.report`'s).", ""]
    from reconciler.commands import StatusResult
    from reconciler.diagnosis.diagnose import Diagnosis
    from reconciler.remediation.fixes import ApplyResult, ReviewedPlan
    from reconciler.remediation.runner import RunResult

    for cls in (RunResult, StatusResult, Diagnosis, ReviewedPlan, ApplyResult):
        out.append(_dataclass(cls))
    out += ["## Errors", "", _doc(errors).split("\n\n")[0], ""]
    for cls in (
        errors.PoststackError,
        errors.UsageError,
        errors.MigrationFileError,
        errors.DatabaseUnavailable,
        errors.LockTimeout,
        errors.OperationFailed,
        api.MigrationsHeld,
    ):
        base = cls.__mro__[1].__name__
        out.append(f"- `{cls.__name__}` ({base}; exit code {cls.exit_code}): {' '.join(_doc(cls).split())}")
    out.append(f"- `KeyboardInterrupt`: {' '.join(_doc(errors.stopping_as_keyboard_interrupt).split())}")
    out += ["", "## The pytest plugin: `reconciler.testing`", "", _doc(plugin), "", "### Options", ""]
    out += [
        "- `--poststack-migrations-dir DIR` (relative to where pytest runs; ini: `poststack_migrations_dir`, "
        "relative to its file): the migrations the test databases are built from; default: as poststack reads "
        "them (POSTSTACK_MIGRATIONS_DIR, poststack.toml, else ./migrations).",
        "- `--poststack-keep`: keep a failing test's database (renamed `poststack_kept_<test>_<digest>`) and "
        "print its URL; the embedded server is left running for it.",
        "- `POSTSTACK_TEST_DATABASE_URL`: a server to use instead of the embedded one (its role must be allowed "
        "to create databases).",
        "",
        "### Fixtures",
        "",
        "| fixture | scope | what it gives |",
        "|---|---|---|",
    ]
    for name, scope in _fixtures(plugin):
        function = getattr(plugin, name)
        summary = " ".join(_doc(getattr(function, "__wrapped__", function)).split())
        out.append(f"| `{name}` | {scope} | {summary} |")
    steps = migrations.MigrationSteps
    out += ["", f"### `{steps.__module__}.{steps.__qualname__}`", "", _doc(steps), "", _doc(migrations), ""]
    for name, member in inspect.getmembers(steps):
        if name.startswith("_") or not (callable(member) or isinstance(member, property)):
            continue
        if isinstance(member, property):
            out += [f"#### `{name}` (property)", "", _doc(member), ""]
            continue
        out += [f"#### `{name}`", "", "```python", signature(member, name), "```", "", _doc(member), ""]
    return "\n".join(out).rstrip() + "\n"


def _fixtures(plugin: Any) -> list[tuple[str, str]]:
    """The plugin's public fixtures and their scopes, in the order the module defines them."""
    found = []
    for name, value in vars(plugin).items():
        marker = getattr(value, "_fixture_function_marker", None) or getattr(value, "_pytestfixturefunction", None)
        if marker is None or name.startswith("_"):
            continue
        found.append((name, str(marker.scope)))
    return found


def main() -> None:
    DOC.write_text(render())
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
