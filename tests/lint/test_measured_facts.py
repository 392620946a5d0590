"""Each fact db lint measures in the shadow is what the real server does on a table with rows.

The target holds rows; the shadow holds the replayed (empty) tables. For every case, the
facts lint reports for the pending statement are compared with the same statement run on
the target itself inside a transaction that is rolled back: its new file (rewrite), its scan
count, and the locks its backend holds before commit.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psycopg2
import pytest

from reconciler.desired.replay.measure import LOCK_MODES
from tests.conftest import run_cli, sql, wait_for, write

SETUP = """
CREATE TABLE users (id bigint PRIMARY KEY, name varchar(20));
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint, note varchar(20), total int, flag int);
"""
DATA = """
INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 500) g;
INSERT INTO orders SELECT g, g % 500 + 1, 'n', g, 1 FROM generate_series(1, 5000) g;
ANALYZE users; ANALYZE orders;
"""

# (name, the pending statement, rewrites, scans orders, strongest lock on orders, codes found)
CASES = [
    (
        "type change that rewrites",
        "ALTER TABLE orders ALTER COLUMN total TYPE bigint",
        True,
        True,
        "ACCESS EXCLUSIVE",
        {"PS101"},
    ),
    (
        "type change that does not",
        "ALTER TABLE orders ALTER COLUMN note TYPE text",
        False,
        False,
        "ACCESS EXCLUSIVE",
        {"PS105"},
    ),
    (
        "volatile default",
        "ALTER TABLE orders ADD COLUMN r float8 DEFAULT random()",
        True,
        True,
        "ACCESS EXCLUSIVE",
        {"PS101"},
    ),
    ("constant default", "ALTER TABLE orders ADD COLUMN k int DEFAULT 0", False, False, "ACCESS EXCLUSIVE", {"PS105"}),
    ("index", "CREATE INDEX orders_user ON orders (user_id)", False, True, "SHARE", {"PS102"}),
    (
        "foreign key",
        "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id)",
        False,
        True,
        "SHARE ROW EXCLUSIVE",
        {"PS103"},
    ),
    (
        "foreign key not valid",
        "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID",
        False,
        False,
        "SHARE ROW EXCLUSIVE",
        set(),
    ),
    ("set not null", "ALTER TABLE orders ALTER COLUMN flag SET NOT NULL", False, True, "ACCESS EXCLUSIVE", {"PS104"}),
]

_FACTS = """SELECT c.relfilenode, pg_stat_get_xact_numscans(c.oid),
  (SELECT string_agg(l.mode, ',' ORDER BY l.mode) FROM pg_locks l
    WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.relation = c.oid AND l.granted)
FROM pg_class c WHERE c.oid = 'orders'::regclass"""
_MODES = list(LOCK_MODES)


def _label(modes: str | None) -> str | None:
    if not modes:
        return None
    strongest = max(modes.split(","), key=_MODES.index)
    from reconciler.desired.replay.measure import lock_name

    return lock_name(strongest)


def on_the_server(url: str, statement: str, before: str = "") -> tuple[bool, bool, str | None]:
    """(rewrote orders, scanned orders, strongest lock on orders) for ``statement`` run on the
    real server with its rows, in a transaction rolled back."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            if before:
                cur.execute(before)
            cur.execute(_FACTS)
            node, scans, _ = cur.fetchone()
            cur.execute(statement)
            cur.execute(_FACTS)
            node_after, scans_after, modes = cur.fetchone()
        conn.rollback()
        return node_after != node, scans_after > scans, _label(modes)
    finally:
        conn.close()


def _project(tmp_path: Path, url: str, db, pending: str, setup_extra: str = "") -> Path:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_setup.sql", SETUP + setup_extra)
    assert run_cli("db", "migrate", "--database-url", url, "--migrations-dir", str(migrations)).exit_code == 0
    sql(db, DATA)
    write(migrations, "002_change.sql", pending + ";\n")
    return migrations


def _lint(url: str, migrations: Path) -> dict:
    result = run_cli(
        "db",
        "lint",
        "--format",
        "json",
        "--severity",
        "high",
        "--database-url",
        url,
        "--migrations-dir",
        str(migrations),
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize(("name", "statement", "rewrites", "scans", "lock", "codes"), CASES, ids=[c[0] for c in CASES])
def test_the_shadow_measures_what_the_server_does(
    tmp_path: Path, database_url: str, db, name: str, statement: str, rewrites: bool, scans: bool, lock: str, codes: set
) -> None:
    migrations = _project(tmp_path, database_url, db, statement)
    report = _lint(database_url, migrations)
    [facts] = [f for f in report["measured"]["statements"] if f["version"] == "002"]
    assert facts["basis"] == "measured"
    measured_lock = next(x["mode"] for x in facts["locks"] if x["relation"] == "public.orders")
    shadow = ("public.orders" in facts["rewrites"], "public.orders" in facts["scans"], measured_lock)
    assert shadow == (rewrites, scans, lock), name
    assert on_the_server(database_url, statement) == shadow, "the server with rows does what the shadow measured"
    assert {f["code"] for f in report["findings"]} == codes
    for finding in report["findings"]:
        assert finding["file"].endswith("002_change.sql") and finding["line"] == 1
        assert finding["size"]["rows"] == 5000 and finding["size"]["exists"] is True
        assert finding["severity"] == "low", "a 5000-row table is small: low, not info, not high"
        assert finding["alternative"]


def test_set_not_null_after_a_validated_check_reads_nothing(tmp_path: Path, database_url: str, db) -> None:
    check = "ALTER TABLE orders ADD CONSTRAINT flag_nn CHECK (flag IS NOT NULL);\n"
    migrations = _project(tmp_path, database_url, db, "ALTER TABLE orders ALTER COLUMN flag SET NOT NULL", check)
    report = _lint(database_url, migrations)
    [facts] = [f for f in report["measured"]["statements"] if f["version"] == "002"]
    assert facts["scans"] == [] and facts["rewrites"] == []
    assert on_the_server(database_url, "ALTER TABLE orders ALTER COLUMN flag SET NOT NULL") == (
        False,
        False,
        "ACCESS EXCLUSIVE",
    )
    assert "PS104" not in {f["code"] for f in report["findings"]}


def test_two_statements_on_one_line_each_get_their_own_facts(tmp_path: Path, database_url: str, db) -> None:
    """The second statement of a line is measured as itself, not given the first one's facts."""
    statement = "SET LOCAL lock_timeout = '3s'; ALTER TABLE orders ALTER COLUMN total TYPE bigint"
    migrations = _project(tmp_path, database_url, db, statement)
    report = _lint(database_url, migrations)
    facts = [f for f in report["measured"]["statements"] if f["version"] == "002"]
    assert [(f["line"], f["rewrites"]) for f in facts] == [(1, []), (1, ["public.orders"])]
    assert [(f["code"], f["line"]) for f in report["findings"]] == [("PS101", 1)]


def test_an_empty_table_is_info_and_passes(tmp_path: Path, database_url: str) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_setup.sql", SETUP)
    assert run_cli("db", "migrate", "--database-url", database_url, "--migrations-dir", str(migrations)).exit_code == 0
    write(migrations, "002_change.sql", "ALTER TABLE orders ALTER COLUMN total TYPE bigint;\n")
    report = _lint(database_url, migrations)
    assert [(f["code"], f["severity"]) for f in report["findings"]] == [("PS101", "info")]
    assert report["ok"] is True


def test_create_index_concurrently_holds_what_is_documented(tmp_path: Path, database_url: str, db) -> None:
    """CONCURRENTLY cannot run in a transaction to be watched: lint says what PostgreSQL
    documents, and the server, caught while the build waits for a writer, holds just that."""
    statement = "CREATE INDEX CONCURRENTLY orders_user ON orders (user_id)"
    migrations = _project(tmp_path, database_url, db, statement)
    report = _lint(database_url, migrations)
    [facts] = [f for f in report["measured"]["statements"] if f["version"] == "002"]
    assert facts["basis"] == "documented"
    assert facts["locks"] == [{"relation": "public.orders", "mode": "SHARE UPDATE EXCLUSIVE", "taken_here": True}]
    assert "PS102" not in {f["code"] for f in report["findings"]}

    # On the server: a writer's open transaction makes the build wait, holding its lock.
    writer = psycopg2.connect(database_url)
    builder = psycopg2.connect(database_url)
    builder.autocommit = True
    try:
        with writer.cursor() as cur:
            cur.execute("LOCK TABLE orders IN ROW EXCLUSIVE MODE")
        builder_pid = builder.get_backend_pid()
        failed: list[Exception] = []

        def build() -> None:
            try:
                builder.cursor().execute(statement)
            except psycopg2.Error as e:
                failed.append(e)

        thread = threading.Thread(target=build)
        thread.start()
        wait_for(db, f"SELECT count(*) > 0 FROM pg_locks WHERE pid = {builder_pid} AND NOT granted", [(True,)])
        held = sql(
            db,
            "SELECT mode FROM pg_locks WHERE pid = %s AND relation = 'orders'::regclass AND granted",
            (builder_pid,),
        )
        writer.rollback()
        thread.join(timeout=60)
        assert not failed
        assert [m for (m,) in held] == ["ShareUpdateExclusiveLock"]
    finally:
        writer.close()
        builder.close()


PARTITIONED = """
CREATE TABLE devices (id bigint PRIMARY KEY);
CREATE TABLE readings (id bigint, device_id bigint, value int, taken date) PARTITION BY RANGE (taken);
CREATE TABLE readings_2025 PARTITION OF readings FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE readings_2026 PARTITION OF readings FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
"""


@pytest.mark.parametrize(
    ("statement", "code"),
    [
        ("ALTER TABLE readings ADD CONSTRAINT value_positive CHECK (value >= 0)", "PS103"),
        ("ALTER TABLE readings ALTER COLUMN value SET NOT NULL", "PS104"),
        (
            "ALTER TABLE readings ADD CONSTRAINT readings_device FOREIGN KEY (device_id) REFERENCES devices (id)",
            "PS103",
        ),
        ("ALTER TABLE readings ALTER COLUMN value TYPE bigint", "PS101"),
    ],
)
def test_a_partitioned_table_is_one_table_whose_partitions_do_the_work(
    tmp_path: Path, database_url: str, db, statement: str, code: str
) -> None:
    """What a statement on a partitioned table does, it does to every partition: the table's
    finding is sized as all of them, said once, not one brief lock per partition."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_setup.sql", PARTITIONED)
    assert run_cli("db", "migrate", "--database-url", database_url, "--migrations-dir", str(migrations)).exit_code == 0
    sql(db, "INSERT INTO devices SELECT g FROM generate_series(1, 10) g")
    sql(db, "INSERT INTO readings SELECT g, g % 10 + 1, g, DATE '2025-01-01' + g % 700 FROM generate_series(1, 4000) g")
    sql(db, "ANALYZE readings")
    write(migrations, "002_change.sql", statement + ";\n")
    report = _lint(database_url, migrations)
    findings = [f for f in report["findings"] if f["code"] != "PS201"]
    assert [(f["code"], f["relation"]) for f in findings] == [(code, "public.readings")], findings
    assert findings[0]["size"]["rows"] == 4000 and findings[0]["size"]["bytes"] > 0
    assert findings[0]["severity"] == "low"


SUB_PARTITIONED = """
CREATE TABLE devices (id bigint PRIMARY KEY);
CREATE TABLE readings (
  id bigint, device_id bigint, value int, kind text, taken date, PRIMARY KEY (id, taken, kind)
) PARTITION BY RANGE (taken);
CREATE TABLE readings_2025 PARTITION OF readings FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE readings_2026 PARTITION OF readings FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')
  PARTITION BY LIST (kind);
CREATE TABLE readings_2026_a PARTITION OF readings_2026 FOR VALUES IN ('a');
CREATE TABLE readings_2026_b PARTITION OF readings_2026 FOR VALUES IN ('b');
CREATE TABLE logs (id bigint, reading_id bigint, taken date, kind text);
"""
_READINGS_FK = "ALTER TABLE logs ADD CONSTRAINT logs_reading FOREIGN KEY (reading_id, taken, kind) REFERENCES readings (id, taken, kind)"


@pytest.mark.parametrize(
    ("statement", "code", "relation", "rows", "named"),
    [
        # On the top table: one finding; its partitions (a level down too) are not tables it references.
        ("ALTER TABLE readings ADD CONSTRAINT value_positive CHECK (value >= 0)", "PS103", "readings", 4000, []),
        (
            "ALTER TABLE readings ADD CONSTRAINT readings_device FOREIGN KEY (device_id) REFERENCES devices (id)",
            "PS103",
            "readings",
            4000,
            ["devices"],
        ),
        # A sub-partitioned partition is a partitioned table: its partitions' reads are its own.
        ("ALTER TABLE readings_2026 ADD CONSTRAINT positive CHECK (value >= 0)", "PS103", "readings_2026", 2000, []),
        ("ALTER TABLE readings_2026 ALTER COLUMN value SET NOT NULL", "PS104", "readings_2026", 2000, []),
        # A foreign key to a partitioned table names that table, not its partitions.
        (_READINGS_FK, "PS103", "logs", 1000, ["readings"]),
        # ON ONLY a partitioned table builds nothing; a build on one cannot be CONCURRENTLY.
        ("CREATE INDEX readings_value ON ONLY readings (value)", None, None, 0, []),
        ("CREATE INDEX readings_value ON readings (value)", "PS102", "readings", 4000, []),
    ],
)
def test_sub_partitions_and_referenced_partitions_count_for_their_partitioned_table(
    tmp_path: Path,
    database_url: str,
    db,
    statement: str,
    code: str | None,
    relation: str | None,
    rows: int,
    named: list[str],
) -> None:
    """A partition locked with the partitioned tables above it is theirs: its reads count for
    each of them up to the one the statement is on (a sub-partitioned partition too), and no
    finding names a partition as a table the statement references."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_setup.sql", SUB_PARTITIONED)
    assert run_cli("db", "migrate", "--database-url", database_url, "--migrations-dir", str(migrations)).exit_code == 0
    sql(db, "INSERT INTO devices SELECT g FROM generate_series(1, 10) g")
    sql(
        db,
        "INSERT INTO readings SELECT g, g % 10 + 1, g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, "
        "CASE WHEN g % 4 < 2 THEN DATE '2025-06-01' ELSE DATE '2026-06-01' END FROM generate_series(1, 4000) g",
    )
    sql(db, "INSERT INTO logs SELECT id, id, taken, kind FROM readings WHERE id <= 1000")
    sql(db, "ANALYZE")
    write(migrations, "002_change.sql", statement + ";\n")
    report = _lint(database_url, migrations)
    findings = [f for f in report["findings"] if f["code"] != "PS201"]
    if code is None:
        assert findings == [], findings
        return
    assert [(f["code"], f["relation"]) for f in findings] == [(code, f"public.{relation}")], findings
    [finding] = findings
    assert finding["size"]["rows"] == rows
    if code == "PS102":
        assert "ON ONLY" in finding["alternative"], finding
    tables = ("devices", "readings", "readings_2025", "readings_2026", "readings_2026_a", "readings_2026_b")
    referenced = [t for t in tables if f"public.{t} (" in finding["message"].partition("until the check ends")[2]]
    assert referenced == named, finding["message"]


def test_statements_on_one_line_keep_their_own_facts(tmp_path: Path, database_url: str, db) -> None:
    """Facts are the statement's, not its line's: the second statement of a line is not
    reported as rewriting what the first rewrote."""
    pending = "ALTER TABLE orders ALTER COLUMN total TYPE bigint; ALTER TABLE users ADD COLUMN note text"
    migrations = _project(tmp_path, database_url, db, pending)
    report = _lint(database_url, migrations)
    facts = [f for f in report["measured"]["statements"] if f["version"] == "002"]
    assert [(f["line"], f["rewrites"]) for f in facts] == [(1, ["public.orders"]), (1, [])]
    found = [(f["code"], f["relation"], f["statement"]) for f in report["findings"]]
    assert found == [
        ("PS101", "public.orders", "ALTER TABLE orders ALTER COLUMN total TYPE bigint"),
        ("PS105", "public.users", "ALTER TABLE users ADD COLUMN note text"),
    ]


def test_percent_signs_dollar_quotes_and_a_trailing_comment_reach_the_shadow_as_written(
    tmp_path: Path, database_url: str, db
) -> None:
    """Each statement travels with the read of its facts in one round trip whose parameters
    are bound client-side: the statement's own % signs must not be taken for placeholders."""
    pending = (
        "DO $$ BEGIN IF length('%%(oids)s %s') <> 12 THEN RAISE EXCEPTION 'percent signs changed'; END IF; END $$;\n"
        "ALTER TABLE orders ADD COLUMN pct text DEFAULT '100%'; -- 100% sure\n"
        "ALTER TABLE orders ALTER COLUMN total TYPE bigint -- no semicolon, then a comment"
    )
    migrations = _project(tmp_path, database_url, db, pending)
    report = _lint(database_url, migrations)
    assert report["measured"]["stopped_at"] is None, report["measured"]
    facts = [f for f in report["measured"]["statements"] if f["version"] == "002"]
    assert [(f["line"], f["rewrites"]) for f in facts] == [(1, []), (2, []), (3, ["public.orders"])]
