"""Render playbook arguments with a sandboxed Jinja2 (StrictUndefined).

Only argument *values* are rendered, never SQL text: actions put values into SQL as bound
parameters or quoted identifiers. An argument that is exactly one ``{{ expression }}``
keeps the expression's type (a list stays a list, a number a number).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


class RenderError(Exception):
    pass


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def render_value(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return _render_string(value, context)
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    return value


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    try:
        result = environment().compile_expression(expression, undefined_to_none=False)(**context)
    except TemplateError as e:
        raise RenderError(f"{type(e).__name__}: {e}") from e
    return _plain(result)


def _render_string(template: str, context: dict[str, Any]) -> Any:
    if "{{" not in template and "{%" not in template:
        return template
    whole = _WHOLE_EXPRESSION.match(template)
    if whole and "}}" not in whole["expr"]:
        return evaluate(whole["expr"], context)
    try:
        return environment().from_string(template).render(**context)
    except TemplateError as e:
        raise RenderError(f"{type(e).__name__}: {e}") from e


def _plain(value: Any) -> Any:
    if isinstance(value, StrictUndefined):
        raise RenderError(f"undefined value: {value._undefined_message}")
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
