"""docs/lint-rules.md is the rules' docstrings: a new rule, or a docstring changed without
the page (or the page edited by hand), fails here. Fix: python -m tests.docs.lint_rules_reference."""

from __future__ import annotations

import difflib

from reconciler.diagnosis.lint.base import load_rules
from tests.docs.lint_rules_reference import DOC, render


def test_lint_rules_reference_matches_the_rules() -> None:
    expected = render()
    actual = DOC.read_text()
    diff = "\n".join(
        difflib.unified_diff(actual.splitlines(), expected.splitlines(), "docs/lint-rules.md", "rules", lineterm="")
    )
    assert actual == expected, (
        f"docs/lint-rules.md differs from the rules; run python -m tests.docs.lint_rules_reference\n{diff}"
    )


def test_every_rule_is_documented_in_the_shape_of_the_others() -> None:
    """A summary line, what it reads (Measured or Static), a safer way, and squawk's rule."""
    text = DOC.read_text()
    for found in load_rules().values():
        assert f"\n## {found.code} {found.name}\n" in text
        doc = found.doc
        assert doc.strip() and not doc.strip().splitlines()[1].strip(), (
            f"{found.code}: a one-line summary, then a blank"
        )
        assert ("**Measured.**" in doc) == found.measured and ("**Static.**" in doc) != found.measured, found.code
        assert "**Safer:**" in doc and "**squawk:**" in doc, found.code


def test_the_reference_says_how_to_switch_a_rule_off_and_how_severity_scales() -> None:
    text = DOC.read_text()
    assert "lint_ignore" in text and "-- poststack:lint-ignore PS204 " in text
    assert "under 10 MB" in text and "under 1 GB" in text and "10 GB or more" in text
