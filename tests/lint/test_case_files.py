"""The rule cases themselves, without a database: every rule has a case file, with at least
one case where it fires and one where it must not, and a file speaks only of its own rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.diagnosis.lint.base import load_rules
from tests.lint.cases import CASES, CaseError, load_file


def test_every_rule_has_a_case_file_with_a_fail_and_a_pass_case() -> None:
    rules = load_rules()
    files = {path.stem: path for path in CASES.glob("*.yaml")}
    assert set(files) == set(rules), "a case file per rule, named by its code, and none for a rule that is not"
    for code, path in files.items():
        rule, cases = load_file(path)
        assert rule == code, f"{path.name} says it is for {rule}"
        assert any(any(e.code == code for e in case.fail) for case in cases), f"{path.name}: no case where it fires"
        assert any(code in case.passes for case in cases), f"{path.name}: no case where it must not fire"


def test_a_case_file_names_only_its_own_rule() -> None:
    for path in sorted(CASES.glob("*.yaml")):
        rule, cases = load_file(path)
        for case in cases:
            assert case.codes() == {rule}, f"{path.name} {case.name}: names {sorted(case.codes())}"


def test_the_issue_s_acceptance_cases_are_there() -> None:
    """Measured, each both ways: a rewrite or not, a blocking index build or a concurrent one
    (in its own file), a validated constraint or NOT VALID, SET NOT NULL with or without a
    validated CHECK; severity scaling; and both ways of switching a rule off."""
    names = {(case.rule, case.name) for path in CASES.glob("*.yaml") for case in load_file(path)[1]}
    for wanted in [
        ("PS101", "int-to-bigint-rewrites-a-table-with-rows"),
        ("PS101", "varchar-to-text-does-not-rewrite"),
        ("PS101", "volatile-default-rewrites"),
        ("PS101", "constant-default-does-not-rewrite"),
        ("PS101", "an-empty-table-is-info"),
        ("PS101", "a-table-over-10-mb-is-medium"),
        ("PS101", "switched-off-in-the-file-with-a-reason"),
        ("PS101", "switched-off-for-the-project-by-name"),
        ("PS102", "create-index-blocks-writes-on-a-table-with-rows"),
        ("PS102", "create-index-concurrently-in-its-own-file"),
        ("PS103", "a-foreign-key-is-checked-under-share-row-exclusive"),
        ("PS103", "a-foreign-key-not-valid-checks-nothing"),
        ("PS104", "set-not-null-reads-the-whole-table"),
        ("PS104", "set-not-null-with-a-validated-check-reads-nothing"),
    ]:
        assert wanted in names, wanted


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rule: PS101\n", "exactly the keys rule and cases"),
        ("rule: PS101\ncases: []\n", "empty"),
        ("rule: PS101\ncases:\n  - {name: a, migration: x}\n", "needs name, migration and expect"),
        ("rule: PS101\ncases:\n  - {name: a, migration: x, expect: {fail: [PS101]}, sql: y}\n", "unknown keys"),
        ("rule: PS101\ncases:\n  - {name: a, migration: x, expect: {found: [PS101]}}\n", "expect takes"),
        ("rule: PS101\ncases:\n  - {name: a, migration: x, expect: {fail: [{severity: low}]}}\n", "a fail entry"),
        (
            "rule: PS101\ncases:\n  - {name: a, migration: x, settings: {shadow: 0}, expect: {pass: [PS101]}}\n",
            "settings",
        ),
        (
            "rule: PS101\ncases:\n  - {name: a, migration: x, expect: {pass: [PS101]}}\n"
            "  - {name: a, migration: y, expect: {pass: [PS101]}}\n",
            "same name",
        ),
    ],
)
def test_a_malformed_case_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "PS101.yaml"
    path.write_text(text)
    with pytest.raises(CaseError, match=message):
        load_file(path)
