"""desired/psql: what psql would act on in a statement, found as psql's lexer finds it."""

from __future__ import annotations

import pytest

from reconciler.desired.psql import hazards

PASSED_THROUGH = [
    "SELECT ':foo', ':''foo''' -- :foo \\echo\n",
    "SELECT x::int, y::text[] FROM t",
    "/* :x /* nested :y */ \\z */ SELECT 1",
    "SELECT $$ :foo\n\\echo $$, $tag$ :bar $tag$",
    "SELECT E'\\' :x' AS escaped_quote",
    'SELECT 1 AS ":quoted"',
    "SELECT 'line one\n\\copy is data here'",
    "SELECT a$b FROM t",
    "SELECT 1",
]
CAUGHT = [
    ("SELECT a[1:n] FROM t", [":n"]),
    ("SELECT $a$ :x $a$, :y", [":y"]),
    ("SELECT :'v', :\"w\", :{?q}", [":'v'", ':"w"', ":{?q}"]),
    ("\\echo hi", ["\\echo"]),
    ("SELECT 1 \\gexec", ["\\gexec"]),
    ("SELECT 'unterminated :x", []),
]


@pytest.mark.parametrize("sql", PASSED_THROUGH)
def test_what_psql_passes_through(sql: str):
    assert hazards(sql) == []


@pytest.mark.parametrize("sql, found", CAUGHT)
def test_what_psql_would_act_on(sql: str, found: list[str]):
    assert [h.text for h in hazards(sql)] == found


def test_a_hazard_says_where_and_what():
    (hazard,) = hazards("SELECT a[1:n]")
    assert hazard.offset == 10 and hazard.kind == "variable" and "psql variable" in hazard.describe()
