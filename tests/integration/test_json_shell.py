"""db shell -c SQL --format json: the last statement's result, as its schema says."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from tests.conftest import catalog_snapshot, sql
from tests.integration.test_json_output import conforming


def test_a_query(cli, database_url):
    query = (
        "SELECT 1 AS one, 'x' AS two, NULL AS nothing, true AS yes, 1.50::numeric AS price, "
        "ARRAY[1, 2] AS pair, '{\"a\": 1}'::jsonb AS doc, 0.5::float8 AS half, "
        "timestamptz '2026-11-24 12:06:43+00' AS at FROM generate_series(1, 2)"
    )
    data = conforming(cli("db", "shell", "-c", query, "--format", "json"), "db shell")
    assert data["status"] == "SELECT 2" and data["notices"] == []
    assert data["columns"] == ["one", "two", "nothing", "yes", "price", "pair", "doc", "half", "at"]
    assert data["rows"][0] == [1, "x", None, True, "1.50", [1, 2], {"a": 1}, 0.5, "2026-11-24T12:06:43+00:00"]
    assert len(data["rows"]) == 2 and data["database"].startswith("postgresql://")
    password = make_url(database_url).password  # the server may be one with passwords (CI's PostgreSQL 15)
    assert not password or (password not in data["database"] and "***" in data["database"])


def test_a_statement_without_rows_and_its_notices(cli, db):
    script = "CREATE TABLE shelled (id int); DO $$ BEGIN RAISE NOTICE 'made it'; END $$"
    result = cli("db", "shell", "-c", script, "--format", "json")
    data = conforming(result, "db shell")
    assert (data["status"], data["columns"], data["rows"]) == ("DO", [], [])
    assert any("made it" in n for n in data["notices"]) and "made it" in result.stderr
    assert sql(db, "SELECT to_regclass('shelled') IS NOT NULL") == [(True,)]


def test_an_error_is_not_a_result(cli, db):
    before = catalog_snapshot(db)
    result = cli("db", "shell", "-c", "SELECT * FROM nosuch", "--format", "json")
    assert result.exit_code == 1 and result.stdout == "" and "nosuch" in result.stderr
    assert catalog_snapshot(db) == before


def test_several_c_run_each_in_order_as_psql_does(cli, db):
    ran = cli(
        "db", "shell", "-c", "CREATE TABLE shell_two (id int)", "-c", "SELECT to_regclass('shell_two') IS NULL AS gone"
    )
    assert ran.exit_code == 0, ran.output
    assert "CREATE TABLE" in ran.stdout and " False\n" in ran.stdout  # the first ran before the second looked
    assert sql(db, "SELECT to_regclass('shell_two') IS NOT NULL") == [(True,)]
    half = cli("db", "shell", "-c", "SELECT 'first' AS said", "-c", "SELECT 1 / 0", "-c", "SELECT 'third'")
    assert half.exit_code == 1 and "first" in half.stdout and "third" not in half.stdout
    assert "-c 2 of 3 failed; the 1 before it ran" in half.stderr
    refused = cli("db", "shell", "-c", "SELECT 1", "-c", "SELECT 2", "--format", "json")
    assert refused.exit_code == 2 and "pass one -c" in refused.stderr
