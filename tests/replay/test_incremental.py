"""The incremental catalog read (what event triggers say a migration touched, and what depends
on it) keeps exactly the state a full read sees: after every migration of random churny
histories, and of histories written to hit what a dependency walk can miss (renames printed
by other objects, defaults dropped by a cascade, schemas, DISCARD, another role, replica
mode). And a replay whose incremental state went astray is replayed again, reading all."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.config import DEFAULT_TRACKING
from reconciler.db import Session
from reconciler.desired.replay import incremental
from reconciler.desired.replay.incremental import IncrementalReader, hides_from_event_triggers, open_reader
from reconciler.desired.replay.replay import RESET_SESSION_SQL
from reconciler.desired.replay.snapshot import SnapshotReader
from tests.conftest import scratch_database
from tests.replay.churn import churn_history

_databases = itertools.count()


def _session(url: str) -> Session:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return Session(conn, url)


def _states_agree(session: Session, migrations: list[str]) -> Iterator[int]:
    """Run ``migrations`` one by one (each as one query: its own transaction, or none where
    it says so); yield the position of every one after which the two reads differ."""
    reader = IncrementalReader(session, DEFAULT_TRACKING)
    full = SnapshotReader(session, DEFAULT_TRACKING)
    assert reader.read() == full.read()
    for position, sql in enumerate(migrations, start=1):
        session.query(sql if "-- no-transaction" in sql else f"BEGIN;\n{sql}\n;\nCOMMIT;")
        session.query(RESET_SESSION_SQL)
        if reader.read(whole=hides_from_event_triggers(sql)) != full.read():
            yield position


@settings(
    derandomize=True,  # the same histories on every run: CI is not a lottery
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(10, 45))
def test_incremental_reads_equal_full_reads_on_churny_histories(seed, length, pg_server, template_db):
    history = churn_history(random.Random(seed), length)
    with scratch_database(pg_server, f"poststack_incr_{next(_databases)}_{seed % 10000}", template_db) as url:
        session = _session(url)
        try:
            assert list(_states_agree(session, [m.sql for m in history])) == []
        finally:
            session.close()


TRICKY = {
    "renames printed elsewhere": [
        "CREATE TABLE a (id int PRIMARY KEY, x int CHECK (x > 0), y text)",
        "CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a (id))",
        "CREATE INDEX a_x ON a (x) WHERE y IS NOT NULL",
        "CREATE VIEW va AS SELECT id, x FROM a",
        "CREATE VIEW vva AS SELECT x FROM va",
        "ALTER TABLE a RENAME COLUMN x TO x2",
        "ALTER TABLE a RENAME TO a2",
        "ALTER TABLE a2 RENAME COLUMN id TO a_key",
        "ALTER INDEX a_x RENAME TO a_x2",
    ],
    "defaults, sequences and cascades": [
        "CREATE SEQUENCE s",
        "CREATE TABLE t (id int DEFAULT nextval('s'), n int DEFAULT 3)",
        "ALTER SEQUENCE s RENAME TO s2",
        "ALTER TABLE t ALTER COLUMN n DROP DEFAULT",
        "DROP SEQUENCE s2 CASCADE",
        "ALTER TABLE t ALTER COLUMN n SET NOT NULL",
        "ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (n * 2) STORED",
        "ALTER TABLE t ALTER COLUMN id TYPE bigint",
        "ALTER TABLE t ADD CONSTRAINT n_positive CHECK (n > 0)",
        "ALTER TABLE t DROP CONSTRAINT n_positive",
        "ALTER TABLE t DROP COLUMN g",
    ],
    "types, domains and functions": [
        "CREATE TYPE mood AS ENUM ('sad', 'ok')",
        "CREATE DOMAIN positive AS int CHECK (VALUE > 0)",
        "CREATE TABLE p (m mood, q positive)",
        "CREATE FUNCTION f(m mood) RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
        "CREATE TRIGGER p_bump BEFORE INSERT ON p FOR EACH ROW EXECUTE FUNCTION bump()",
        "-- no-transaction\nALTER TYPE mood ADD VALUE 'happy'",
        "ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'",
        "ALTER TYPE mood RENAME TO feeling",
        "ALTER DOMAIN positive RENAME TO strictly_positive",
        "ALTER FUNCTION bump() RENAME TO bump_it",
        "CREATE OR REPLACE FUNCTION bump_it() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'",
        "ALTER TABLE p RENAME TO p2",
        "DROP FUNCTION bump_it() CASCADE",
    ],
    "schemas, dynamic SQL and policies": [
        "CREATE SCHEMA app",
        "CREATE TABLE app.u (id int, owner text)",
        "CREATE VIEW public.vu AS SELECT id FROM app.u",
        "ALTER TABLE app.u ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY own ON app.u USING (owner = current_user)",
        "ALTER SCHEMA app RENAME TO core",
        "DO $$ BEGIN EXECUTE 'CREATE TABLE core.made_' || 'late (id int)'; END $$",
        "ALTER POLICY own ON core.u RENAME TO mine",
        "CREATE TABLE parted (id int, at date) PARTITION BY RANGE (at)",
        "CREATE TABLE parted_2026 PARTITION OF parted FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
        "CREATE INDEX parted_at ON parted (at)",
        "CREATE MATERIALIZED VIEW mu AS SELECT count(*) AS n FROM core.u",
        "CREATE TABLE copied AS SELECT * FROM core.u",
        "DROP SCHEMA core CASCADE",
    ],
    "what no dependency leads to": [
        "CREATE TABLE k (id int PRIMARY KEY, code text UNIQUE)",
        "ALTER INDEX k_pkey RENAME TO k_pk",
        "ALTER TABLE k ENABLE ROW LEVEL SECURITY",
        "ALTER INDEX k_code_key RENAME TO k_code_unique",
        "CREATE TYPE comp AS (a int, b int)",
        "CREATE TABLE typed OF comp",
        "ALTER TYPE comp RENAME ATTRIBUTE a TO a2 CASCADE",
        "ALTER TYPE comp ADD ATTRIBUTE c text CASCADE",
        "ALTER TABLE typed ALTER COLUMN b SET STATISTICS 100",
        "CREATE TABLE parent (id int)",
        "CREATE TABLE child () INHERITS (parent)",
        "ALTER TABLE parent ADD CONSTRAINT id_positive CHECK (id > 0)",
        "ALTER TABLE parent RENAME CONSTRAINT id_positive TO id_above_zero",
        "ALTER TABLE parent ALTER COLUMN id SET STATISTICS 10",
        "CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY, n int GENERATED BY DEFAULT AS IDENTITY)",
        "ALTER TABLE ident ALTER COLUMN id DROP IDENTITY",
        "ALTER TABLE ident DROP COLUMN n",
        "CREATE TABLE hidden (id int)",
        "SET event_triggers = off; CREATE TABLE unseen (id int); ALTER TABLE hidden ADD COLUMN x int",  # 17+
        "ALTER TABLE hidden ADD COLUMN y int",
        "UPDATE pg_catalog.pg_attribute SET attnotnull = true WHERE attrelid = 'hidden'::regclass AND attname = 'x'",
        "ALTER TABLE hidden ADD COLUMN z int",
    ],
    "what no event reports": [
        "CREATE TABLE tp (id int, at date) PARTITION BY RANGE (at)",
        "CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
        "CREATE TRIGGER t_trg BEFORE INSERT ON tp FOR EACH ROW EXECUTE FUNCTION stamp()",
        "CREATE TABLE tp_2 PARTITION OF tp FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
        "ALTER TABLE tp DETACH PARTITION tp_2",
        "ALTER TABLE tp_2 ADD COLUMN w int",
        "CREATE TABLE ri (id int)",
        "CREATE INDEX ri_id ON ri (id)",
        "-- no-transaction\nREINDEX INDEX CONCURRENTLY ri_id",
        "ALTER INDEX ri_id RENAME TO ri_id2",
        "ALTER TABLE ri ADD COLUMN n int",
        "CREATE TABLE em (id int PRIMARY KEY)",
        "CREATE TABLE orders (id int, eid int REFERENCES em (id), m int) PARTITION BY RANGE (m)",
        "CREATE TABLE orders_1 PARTITION OF orders FOR VALUES FROM (1) TO (10)",
        "ALTER TABLE orders DETACH PARTITION orders_1",
        "CREATE TABLE c (id int, k int) PARTITION BY RANGE (k)",
        "CREATE TABLE c1 PARTITION OF c FOR VALUES FROM (1) TO (5)",
        "-- no-transaction\nALTER TABLE c DETACH PARTITION c1 CONCURRENTLY",
        "ALTER TABLE c1 ADD COLUMN z int",
    ],
    "a session a migration changes": [
        "CREATE TABLE r (id int)",
        "SET session_replication_role = replica; ALTER TABLE r ADD COLUMN replica_mode int",
        "-- no-transaction\nDISCARD ALL",
        "ALTER TABLE r ADD COLUMN after_discard int",
        "-- no-transaction\nDISCARD TEMP",
        "CREATE INDEX r_id ON r (id)",
        "CREATE TEMPORARY TABLE poststack_touched (id int); ALTER TABLE r ADD COLUMN beside_temp int",
    ],
}


@contextmanager
def _shadow(pg_server, template_db) -> Iterator[Session]:
    with scratch_database(pg_server, f"poststack_incr_{next(_databases)}", template_db) as url:
        session = _session(url)
        try:
            yield session
        finally:
            session.close()


@contextmanager
def _role(session: Session) -> Iterator[str]:
    """A throwaway role (roles are the server's: the name is this test's alone)."""
    role = f"poststack_incr_role_{next(_databases)}_{random.randrange(10**6)}"
    session.query(f"CREATE ROLE {role} NOLOGIN; GRANT CREATE, USAGE ON SCHEMA public TO {role}")
    try:
        yield role
    finally:
        session.query(f"RESET ROLE; DROP OWNED BY {role}; DROP ROLE {role}")


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_incremental_reads_equal_full_reads_where_dependencies_hide(name, pg_server, template_db):
    with _shadow(pg_server, template_db) as session:
        migrations = TRICKY[name]
        if session.server_info().major < 17:  # no event_triggers setting before 17
            migrations = [m for m in migrations if "event_triggers" not in m]
        assert [migrations[i - 1] for i in _states_agree(session, migrations)] == []


def test_another_session_runs_nothing_as_the_replay_through_its_triggers(pg_server, template_db):
    """The trigger functions run as their owner: someone else connected to the scratch
    database, with a temporary table of the log's name and a trigger on it, must not get
    their own code run as that owner."""
    with _shadow(pg_server, template_db) as session, _role(session) as role:
        IncrementalReader(session, DEFAULT_TRACKING)
        session.query(
            f"ALTER ROLE {role} LOGIN PASSWORD 'replay-probe'; GRANT TEMPORARY ON DATABASE "
            f"{session.query_one('SELECT current_database()')[0]} TO {role}"
        )
        other = psycopg2.connect(psycopg2.extensions.make_dsn(session.url, user=role, password="replay-probe"))
        other.autocommit = True
        try:
            with other.cursor() as cur:
                cur.execute(
                    "CREATE TEMPORARY TABLE poststack_replay_log (classid oid, objid oid);"
                    "CREATE TEMPORARY TABLE who (name text);"
                    "CREATE FUNCTION pg_temp.record() RETURNS trigger LANGUAGE plpgsql AS "
                    "'BEGIN INSERT INTO pg_temp.who VALUES (current_user); RETURN NEW; END';"
                    "CREATE TRIGGER record BEFORE INSERT ON pg_temp.poststack_replay_log "
                    "FOR EACH ROW EXECUTE FUNCTION pg_temp.record();"
                    "CREATE TABLE made_by_another (id int)"
                )
                cur.execute("SELECT name FROM pg_temp.who")
                assert cur.fetchall() == []
        finally:
            other.close()
            session.query("DROP TABLE IF EXISTS made_by_another")


def test_incremental_read_follows_a_migration_run_as_another_role(pg_server, template_db):
    with _shadow(pg_server, template_db) as session, _role(session) as role:
        migrations = [
            f"SET ROLE {role}; CREATE TABLE owned (id int)",
            f"SET ROLE {role}; CREATE INDEX o ON owned (id)",
            f"SET SESSION AUTHORIZATION {role}; CREATE TABLE authorized (id int)",
            "CREATE TABLE after_authorization (id int)",
        ]
        assert list(_states_agree(session, migrations)) == []


def test_a_role_that_may_not_make_event_triggers_reads_everything(pg_server, template_db):
    with _shadow(pg_server, template_db) as session, _role(session) as role:
        assert isinstance(open_reader(session, DEFAULT_TRACKING), IncrementalReader)
        session.query(f"SET ROLE {role}")
        assert not isinstance(open_reader(session, DEFAULT_TRACKING), IncrementalReader)
        session.query("RESET ROLE")
        assert not isinstance(open_reader(session, DEFAULT_TRACKING, incremental=False), IncrementalReader)


def test_a_replay_whose_incremental_state_disagrees_is_replayed_reading_everything(
    pg_server, template_db, tmp_path, monkeypatch
):
    from reconciler.desired.layouts import load_migrations
    from reconciler.desired.replay.replay import replay

    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "001_t.sql").write_text("CREATE TABLE t (id int);\n")
    (directory / "002_v.sql").write_text("CREATE VIEW v AS SELECT id FROM t;\n")
    readers: list[str] = []
    real_open = incremental.open_reader

    def counting_open(session, location, incremental=True):
        reader = real_open(session, location, incremental)
        readers.append(type(reader).__name__)
        return reader

    monkeypatch.setattr(IncrementalReader, "agrees", lambda self: False)
    monkeypatch.setattr("reconciler.desired.replay.replay.open_reader", counting_open)

    result = replay(lambda: _shadow(pg_server, template_db), load_migrations(directory).migrations, DEFAULT_TRACKING)
    assert readers == ["IncrementalReader", "_FullReader"]
    assert result.catalog_reads == "full_after_disagreement"
    assert ("view", "public.v") in result.final.objects and ("table", "public.t") in result.final.objects
