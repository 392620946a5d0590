"""What each statement creates and touches, read with pglast. Pure."""

import pytest

from reconciler.effects import read_effects
from reconciler.history import analyze


def creates(sql: str) -> list[str]:
    return [o.display() for o in read_effects("1", sql).creates]


def touches(sql: str) -> list[str]:
    return [o.display() for o in read_effects("1", sql).touches]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("CREATE SCHEMA billing", ["schema billing"]),
        ("CREATE SCHEMA s CREATE TABLE t (a int)", ["schema s", "table s.t", "column s.t.a"]),
        ("CREATE TABLE IF NOT EXISTS app.t (id int, CONSTRAINT c UNIQUE (id))", ["table app.t", "column app.t.id"]),
        ("CREATE MATERIALIZED VIEW mv AS SELECT 1", ["materialized view public.mv"]),
        ("CREATE TABLE t2 AS SELECT 1 AS a", ["table public.t2"]),
        ("CREATE VIEW v AS SELECT 1", ["view public.v"]),
        ("CREATE UNIQUE INDEX CONCURRENTLY ix ON s.t (a)", ["index s.ix"]),
        ("CREATE INDEX ON t (a)", []),  # PostgreSQL picks the name
        ("CREATE SEQUENCE s.seq", ["sequence s.seq"]),
        (
            "CREATE FUNCTION f(a int, OUT b text, VARIADIC c int[]) RETURNS text LANGUAGE sql AS 'select 1'",
            ["function public.f(int4, _int4)"],
        ),
        (
            "CREATE PROCEDURE p(IN a integer, INOUT b varchar(20)) LANGUAGE sql AS 'select 1'",
            ["procedure public.p(int4, varchar)"],
        ),
        ("CREATE TYPE mood AS ENUM ('a')", ["enum public.mood"]),
        ("CREATE TYPE comp AS (x int)", ["composite public.comp"]),
        ("CREATE DOMAIN posint AS int", ["domain public.posint"]),
        ("CREATE TYPE r AS RANGE (subtype = int4)", ["range public.r"]),
        ("CREATE EXTENSION IF NOT EXISTS pgcrypto", ["extension pgcrypto"]),
        ("CREATE TRIGGER tr BEFORE UPDATE ON s.t FOR EACH ROW EXECUTE FUNCTION f()", ["trigger tr on s.t"]),
        ("CREATE POLICY pol ON t USING (true)", ["policy pol on public.t"]),
        ("ALTER TABLE t ADD COLUMN c int, DROP COLUMN d", ["column public.t.c"]),
        ("ALTER TABLE t RENAME COLUMN a TO b", ["column public.t.b"]),
        ("ALTER TABLE s.t RENAME TO u", ["table s.u"]),
        ("ALTER TABLE t SET SCHEMA s2", ["table s2.t"]),
        ("SET search_path TO app, public; CREATE TABLE t (a int)", ["table app.t", "column app.t.a"]),
        ("SET search_path = app; RESET search_path; CREATE TABLE t (a int)", ["table public.t", "column public.t.a"]),
    ],
)
def test_creates(sql, expected):
    assert creates(sql) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("DROP TABLE IF EXISTS a, s.b CASCADE", ["table public.a", "table s.b"]),
        ("DROP FUNCTION f(int, text[])", ["function public.f(int4, _text)"]),
        ("DROP FUNCTION f", ["function public.f"]),
        ("DROP TYPE mood", ["enum public.mood"]),
        ("DROP INDEX s.ix", ["index s.ix"]),
        ("DROP TRIGGER tr ON s.t", ["trigger tr on s.t"]),
        ("DROP POLICY pol ON t", ["policy pol on public.t"]),
        ("DROP SCHEMA x CASCADE", ["schema x"]),
        ("ALTER TABLE t DROP COLUMN d", ["column public.t.d"]),
        ("ALTER TABLE t RENAME TO u", ["table public.t"]),
        ("CREATE OR REPLACE VIEW v AS SELECT 1", ["view public.v"]),
    ],
)
def test_touches(sql, expected):
    assert touches(sql) == expected


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("DO $$ BEGIN EXECUTE 'CREATE TABLE x (a int)'; END $$", "DO block"),
        ("INSERT INTO t VALUES (1)", "data change (INSERT)"),
        ("UPDATE t SET a = 1", "data change (UPDATE)"),
        ("SELECT create_things()", "query or function call"),
        ("COPY t FROM '/tmp/x'", "data load (COPY)"),
    ],
)
def test_unattributed_statements_are_recorded_not_guessed(sql, reason):
    effects = read_effects("1", "CREATE TABLE keep (a int);\n" + sql)
    (unattributed,) = effects.unattributed
    assert unattributed.line == 2 and reason in unattributed.reason


def test_neutral_statements_are_neither_effects_nor_unattributed():
    effects = read_effects(
        "1", "COMMENT ON TABLE t IS 'x'; GRANT SELECT ON t TO PUBLIC; ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)"
    )
    assert effects.creates == () and effects.touches == () and effects.unattributed == ()


def test_parse_error_is_recorded():
    assert read_effects("1", "CREATE TABLE (;").error.startswith("does not parse")


@pytest.mark.parametrize(
    ("history", "evidence"),
    [
        # created by 1, dropped by 3: says nothing about 1
        (
            ["CREATE TABLE a (x int); CREATE TABLE b (y int)", "SELECT 1", "DROP TABLE a"],
            {"1": ["table public.b", "column public.b.y"]},
        ),
        # created twice: says nothing about either
        (["CREATE TABLE IF NOT EXISTS k (y int)", "CREATE TABLE IF NOT EXISTS k (y int)"], {}),
        # replaced later
        (
            [
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
                "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 2'",
            ],
            {},
        ),
        # renamed later: the new name is evidence of the renaming migration; the old table (and
        # its columns, keyed by the old name) of neither
        (["CREATE TABLE t (a int)", "ALTER TABLE t RENAME TO u"], {"2": ["table public.u"]}),
        # a dropped schema takes what is in it
        (
            ["CREATE SCHEMA s; CREATE TABLE s.t (a int)", "CREATE TABLE keep (a int)", "DROP SCHEMA s CASCADE"],
            {"2": ["table public.keep", "column public.keep.a"]},
        ),
        # a dropped table takes its columns, indexes and triggers
        (["CREATE TABLE t (a int); CREATE INDEX t_a ON t (a)", "ALTER TABLE t ADD COLUMN b int", "DROP TABLE t"], {}),
        # dropping every overload of f
        (["CREATE FUNCTION f(int) RETURNS int LANGUAGE sql AS 'select 1'", "DROP FUNCTION f"], {}),
        # created and dropped in the same file
        (["CREATE TABLE tmp (a int); DROP TABLE tmp"], {}),
    ],
)
def test_history_evidence(history, evidence):
    result = analyze(read_effects(str(i), sql) for i, sql in enumerate(history, start=1))
    shown = {v: [o.display() for o in refs] for v, refs in result.evidence.items() if refs}
    assert shown == evidence
