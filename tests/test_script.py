import pytest

from reconciler.desired.script import ScriptSyntaxError, parse_script


def test_statements_carry_their_first_line():
    script = parse_script("-- header\nCREATE TABLE a (id int); -- note\n\n/* block */\nSELECT 'é%';\nSELECT\n  2;")
    assert [(s.line, s.sql) for s in script.statements] == [
        (2, "CREATE TABLE a (id int)"),
        (5, "SELECT 'é%'"),
        (6, "SELECT\n  2"),
    ]
    assert script.transactional


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE INDEX CONCURRENTLY i ON t (c)",
        "DROP INDEX CONCURRENTLY i",
        "REINDEX TABLE CONCURRENTLY t",
        "REINDEX DATABASE d",
        "VACUUM t",
        "ALTER SYSTEM SET work_mem = '8MB'",
        "CREATE DATABASE d",
        "DROP DATABASE d",
        "BEGIN; SELECT 1; COMMIT",
    ],
)
def test_statements_postgres_refuses_in_a_transaction(sql):
    script = parse_script("SELECT 1;\n" + sql + ";")
    assert not script.transactional
    assert script.reason.startswith("line 2:")


@pytest.mark.parametrize(
    "sql",
    ["CREATE INDEX i ON t (c)", "ANALYZE t", "REINDEX TABLE t", "ALTER TYPE e ADD VALUE 'x'", "CLUSTER t USING i"],
)
def test_statements_that_can_run_in_a_transaction(sql):
    assert parse_script(sql).transactional


def test_directive_forces_no_transaction():
    script = parse_script("-- poststack:no-transaction\nCREATE TABLE a (id int);")
    assert not script.transactional
    assert "directive" in script.reason


def test_syntax_error_line_counts_characters_not_bytes():
    with pytest.raises(ScriptSyntaxError) as caught:
        parse_script("SELECT 'ééé';\nSELECT 1;\nCREATE TABLE (;")
    assert caught.value.line == 3
