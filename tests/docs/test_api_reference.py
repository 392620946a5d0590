"""docs/api.md is the API's and the plugin's real signatures and docstrings: a new verb,
argument, fixture or changed docstring that is not in it fails here. Fix: python -m tests.docs.api_reference."""

from __future__ import annotations

import difflib
import inspect
import typing

from reconciler import api
from tests.docs.api_reference import DOC, VERBS, render


def test_api_reference_matches_the_code():
    expected = render()
    actual = DOC.read_text()
    diff = "\n".join(
        difflib.unified_diff(actual.splitlines(), expected.splitlines(), "docs/api.md", "code", lineterm="")
    )
    assert actual == expected, f"docs/api.md differs from the code; run python -m tests.docs.api_reference\n{diff}"


def test_every_verb_the_api_exports_is_documented_and_typed():
    text = DOC.read_text()
    exported = {name for name in api.__all__ if inspect.isfunction(getattr(api, name, None))}
    assert exported == set(VERBS)
    for verb in VERBS:
        assert f"### `api.{verb}`" in text
        hints = typing.get_type_hints(getattr(api, verb), include_extras=True)
        assert "return" in hints and "database" in hints
    for fixture in ("poststack_url", "poststack_engine", "poststack_connection", "poststack_migrations"):
        assert f"| `{fixture}` |" in text


def test_the_package_says_it_is_typed():
    from importlib.resources import files

    assert files("reconciler").joinpath("py.typed").is_file()
