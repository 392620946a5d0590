"""What each statement creates and touches, read with pglast. Pure."""

import pytest

from reconciler.desired.effects import read_effects
from reconciler.desired.history import analyze


def creates(sql: str) -> list[str]:
    return [o.display() for o in read_effects("1", sql).creates]


def touches(sql: str) -> list[str]:
    return [o.display() for o in read_effects("1", sql).touches]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("CREATE SCHEMA billing", ["schema billing"]),
        ("CREATE SCHEMA s CREATE TABLE t (a int)", ["schema s", "table s.t", "column s.t.a"]),
        ("CREATE TABLE IF NOT EXISTS app.t (id int, CONSTRAINT c UNIQUE (id))", []),  # proves nothing: weak
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
        ("CREATE EXTENSION pgcrypto", ["extension pgcrypto"]),
        ("CREATE EXTENSION IF NOT EXISTS pgcrypto", []),
        ("CREATE TEMP TABLE scratch (a int)", []),
        ("CREATE TRIGGER tr BEFORE UPDATE ON s.t FOR EACH ROW EXECUTE FUNCTION f()", ["trigger tr on s.t"]),
        ("CREATE POLICY pol ON t USING (true)", ["policy pol on public.t"]),
        ("ALTER TABLE t ADD COLUMN c int, DROP COLUMN d", ["column public.t.c"]),
        ("ALTER TABLE t RENAME COLUMN a TO b", ["column public.t.b"]),
        ("ALTER TABLE s.t RENAME TO u", ["table s.u"]),
        ("ALTER TABLE t SET SCHEMA s2", ["table s2.t"]),
        (
            "CREATE SCHEMA app; SET search_path TO app, public; CREATE TABLE t (a int)",
            ["schema app", "table app.t", "column app.t.a"],
        ),
        ("SET search_path TO app, public; CREATE TABLE t (a int)", ["table public.t", "column public.t.a"]),  # no app
        (
            "SELECT set_config('search_path', 'audit', false); CREATE SCHEMA audit; CREATE TABLE t (a int)",
            ["schema audit", "table audit.t", "column audit.t.a"],
        ),
        ("CREATE SCHEMA AUTHORIZATION reporter", ["schema reporter"]),
        ("SET search_path = app; RESET search_path; CREATE TABLE t (a int)", ["table public.t", "column public.t.a"]),
    ],
)
def test_creates(sql, expected):
    assert creates(sql) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("DROP TABLE IF EXISTS a, s.b CASCADE", ["table public.a", "table s.b", "cascade None.*"]),
        ("DROP FUNCTION f(int, text[])", ["function public.f(int4, _text)"]),
        ("DROP FUNCTION f", ["function public.f"]),
        ("DROP TYPE mood", ["enum public.mood"]),
        ("DROP INDEX s.ix", ["index s.ix"]),
        ("DROP TRIGGER tr ON s.t", ["trigger tr on s.t"]),
        ("DROP POLICY pol ON t", ["policy pol on public.t"]),
        ("DROP SCHEMA x CASCADE", ["schema x", "cascade None.*"]),
        ("ALTER TABLE t DROP COLUMN d", ["column public.t.d", "dependents public.t"]),
        ("ALTER FUNCTION f(int) SET SCHEMA s", ["function public.f(int4)"]),
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


def test_search_path_references_find_the_schema_that_holds_the_name():
    from reconciler.desired.effects import Namespace

    namespace = Namespace()
    read_effects("1", "CREATE SCHEMA billing; CREATE TABLE users (id int)", namespace)
    effects = read_effects("2", "SET search_path TO billing, public; ALTER TABLE users ADD COLUMN ref text", namespace)
    assert [o.display() for o in effects.creates] == ["column public.users.ref"]
    effects = read_effects("3", "SET search_path TO billing; RESET ALL; CREATE TABLE t (a int)", namespace)
    assert effects.creates[0].display() == "table public.t"


def test_implicit_and_weak_creations_are_kept_apart():
    effects = read_effects(
        "1", "CREATE TABLE t (id serial PRIMARY KEY, e text UNIQUE); CREATE OR REPLACE VIEW v AS SELECT 1"
    )
    weak = sorted(o.display() for s in effects.statements for o in s.weak)
    assert weak == ["index public.t_e_key", "index public.t_pkey", "sequence public.t_id_seq", "view public.v"]
    assert [o.display() for o in effects.creates] == ["table public.t", "column public.t.id", "column public.t.e"]


def test_unknown_set_schema_is_unattributed_not_ignored():
    (unattributed,) = read_effects("1", "ALTER CONVERSION c SET SCHEMA s").unattributed
    assert "SET SCHEMA of conversion" in unattributed.reason


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
        # a dropped schema takes what is in it (and, conservatively, any column made before
        # it: the column's type may have lived there)
        (
            ["CREATE SCHEMA s; CREATE TABLE s.t (a int)", "CREATE TABLE keep (a int)", "DROP SCHEMA s CASCADE"],
            {"2": ["table public.keep"]},
        ),
        # a dropped table takes its columns, indexes and triggers
        (["CREATE TABLE t (a int); CREATE INDEX t_a ON t (a)", "ALTER TABLE t ADD COLUMN b int", "DROP TABLE t"], {}),
        # dropping every overload of f
        (["CREATE FUNCTION f(int) RETURNS int LANGUAGE sql AS 'select 1'", "DROP FUNCTION f"], {}),
        # created and dropped in the same file
        (["CREATE TABLE tmp (a int); DROP TABLE tmp"], {}),
        # an index named like one PostgreSQL made for a constraint proves nothing
        (
            [
                "CREATE TABLE a (e text UNIQUE)",
                "ALTER TABLE a DROP CONSTRAINT a_e_key; CREATE UNIQUE INDEX a_e_key ON a (lower(e))",
            ],
            {"1": ["table public.a", "column public.a.e"]},
        ),
        # a later CASCADE may take any dependent object (views, columns, indexes) with it
        (
            [
                "CREATE TABLE a (x int); CREATE VIEW v AS SELECT x FROM a",
                "CREATE TYPE mood AS ENUM ('a')",
                "DROP TYPE mood CASCADE",
            ],
            {"1": ["table public.a"]},
        ),
        # a dropped column may take the table's indexes with it
        (
            ["CREATE TABLE a (x int, y int); CREATE INDEX a_x ON a (x)", "ALTER TABLE a DROP COLUMN y"],
            {"1": ["table public.a", "column public.a.x"]},
        ),
    ],
)
def test_history_evidence(history, evidence):
    result = analyze(read_effects(str(i), sql) for i, sql in enumerate(history, start=1))
    shown = {v: [o.display() for o in refs] for v, refs in result.evidence.items() if refs}
    assert shown == evidence
