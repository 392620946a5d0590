"""db migrate over a fleet: killed mid-way (SIGKILL to the process group of a --parallel run)
it completes on the re-run, which releases the dead run's locks, with every migration
applied exactly once everywhere; a failing canary stops it before any other target; tenant
schemas each get the migrations and their own tracking tables."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from psycopg2 import sql as pgsql

from bench.tenant_history import VERSIONS
from tests.conftest import _CLEAN_ENV, sql, wait_for, write
from tests.fleet.conftest import Fleet, FleetFactory, _admin, applied_versions, by_target, target_state

ADVISORY_KEY = 4716  # held by the test in the targets whose migration 011 must block


def add_migration(fleet: Fleet, name: str, up: str, rollback: str) -> str:
    write(fleet.migrations, f"{name}.sql", up)
    write(fleet.migrations, f"{name}.rollback.sql", rollback)
    return name.split("_", 1)[0]


def launch(fleet: Fleet, *args: str) -> subprocess.Popen[str]:
    """A fleet command in the background, in its own process group (it forks workers)."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}
    argv = [sys.executable, "-m", "reconciler.interface.cli", *args]
    argv += ["--targets", str(fleet.file), "--migrations-dir", str(fleet.migrations)]
    return subprocess.Popen(
        argv,
        env=env,
        cwd=fleet.migrations.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def events(target) -> dict[str, int]:
    return dict(
        target.query(
            pgsql.SQL("SELECT kind, count(*) FROM {}.app_events GROUP BY kind").format(
                pgsql.Identifier(target.tracking)
            )
        )
    )


def test_killed_midway_the_rerun_completes_the_fleet_and_applies_each_migration_once(fleets: FleetFactory, pg_server):
    fleet = fleets.databases(8)
    add_migration(
        fleet,
        "011_create_shipments",
        "INSERT INTO app_events (kind) VALUES ('011');\n"
        f"SELECT pg_advisory_xact_lock({ADVISORY_KEY});\n"
        "CREATE TABLE shipments (id bigserial PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders (id));\n",
        "DROP TABLE IF EXISTS shipments;\nDELETE FROM app_events WHERE kind = '011';\n",
    )
    add_migration(
        fleet,
        "012_seed_second_event",
        "INSERT INTO app_events (kind) VALUES ('012');\n",
        "DELETE FROM app_events WHERE kind = '012';\n",
    )
    versions = (*VERSIONS, "011", "012")
    blocked = [fleet.targets[2], fleet.targets[5]]
    finished = [t for t in fleet.targets if t not in blocked]
    databases = ", ".join(f"'{name}'" for name in fleet.databases)
    admin = _admin(pg_server.admin_url)
    with contextlib.ExitStack() as stack:
        holders = [stack.enter_context(t.connect()) for t in blocked]
        for holder in holders:
            sql(holder, "SELECT pg_advisory_lock(%s)", (ADVISORY_KEY,))
        # No lock_timeout for the migrations: 011 waits exactly as long as the test holds the lock.
        proc = launch(fleet, "db", "migrate", "--parallel", "4", "--ddl-lock-timeout", "0")
        waiting = (
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted "
            f"AND l.locktype = 'advisory' AND a.datname IN ({databases})"
        )
        wait_for(admin, waiting, [(2,)], timeout=60)
        deadline = time.monotonic() + 60
        while not all(("012", True) in applied_versions(t) for t in finished):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the unblocked targets did not finish"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # The killed workers' backends wait on for the lock; end them, as an operator would.
        own = ", ".join(str(sql(h, "SELECT pg_backend_pid()")[0][0]) for h in holders)
        others = f"SELECT count(*) FROM pg_stat_activity WHERE datname IN ({databases}) AND pid NOT IN ({own})"
        sql(admin, others.replace("count(*)", "pg_terminate_backend(pid)"))
        wait_for(admin, others, [(0,)])

    # Killed mid-way: six targets done, two stopped before 011 with their lock row left.
    for target in finished:
        assert applied_versions(target) == [(v, True) for v in versions], target.name
    for target in blocked:
        assert applied_versions(target) == [(v, True) for v in VERSIONS], target.name
        assert "011" not in events(target)
        assert target.query("SELECT locked FROM schema_migrations_lock") == [(True,)], target.name

    # The re-run: the dead run's process and backend are both gone and 011 runs in a
    # transaction, so nothing it did is in doubt: migrate releases those locks and goes on.
    rerun = fleet.report("db", "migrate", "--parallel", "4")
    entries = by_target(rerun)
    for target in blocked:
        entry = entries[target.name]
        assert (entry["outcome"], entry["applied"]) == ("applied", ["011", "012"]), entry
        assert any(
            "Released the migration lock of a db migrate that ended without releasing it" in n for n in entry["notes"]
        ), entry
        released = target.query("SELECT count(*) FROM schema_migrations_audit WHERE action = 'release_lock'")
        assert released == [(1,)], f"{target.name}: the release is not audited"
    assert {entries[t.name]["outcome"] for t in finished} == {"ok"}
    assert rerun["ok"] is True
    status = fleet.report("db", "migration-status", expect_exit=0)
    assert {(e["current_version"], e["pending"], e["failed"]) for e in status["targets"]} == {("012", 0, 0)}

    for target in fleet.targets:  # every migration exactly once, everywhere
        assert applied_versions(target) == [(v, True) for v in versions], target.name
        assert events(target) == {"seeded": 1, "011": 1, "012": 1}, target.name
        assert target.query("SELECT locked FROM schema_migrations_lock") == [(False,)], target.name


def test_a_failing_canary_leaves_every_other_target_untouched(fleets: FleetFactory):
    fleet = fleets.databases(6)
    version = add_migration(
        fleet,
        "011_lowercase_emails",
        "INSERT INTO app_events (kind) VALUES ('011');\n"
        "ALTER TABLE customers ADD CONSTRAINT customers_email_lower CHECK (email = lower(email));\n",
        "ALTER TABLE customers DROP CONSTRAINT IF EXISTS customers_email_lower;\n"
        "DELETE FROM app_events WHERE kind = '011';\n",
    )
    first, second, *rest = fleet.targets
    second.execute("INSERT INTO customers (full_name, email) VALUES ('Ann', 'Ann@Example.com')")  # 011 fails here
    before = fleet.state()

    report = fleet.report("db", "migrate", "--canary", "2", "--parallel", "2", expect_exit=1)
    assert report["fleet"]["canary"] == 2
    entries = by_target(report)
    outcomes = {name: entry["outcome"] for name, entry in entries.items()}
    assert outcomes == {first.name: "applied", second.name: "failed", **{t.name: "skipped" for t in rest}}
    assert "customers_email_lower" in (entries[second.name]["error"] or ""), entries[second.name]
    assert report["totals"]["outcomes"]["skipped"] == len(rest)

    after = fleet.state()
    for target in rest:
        assert after[target.name] == before[target.name], f"{target.name} was touched after the canary failed"
    assert (version, True) in applied_versions(first) and events(first)["011"] == 1
    assert (version, True) not in applied_versions(second) and "011" not in events(second)
    assert after[second.name]["catalog"] == before[second.name]["catalog"]


def test_tenant_schemas_get_the_migrations_and_their_own_tracking_tables(fleets: FleetFactory):
    schemas = [f"tenant_{c}" for c in "abcdefghijklmnop"]
    fleet = fleets.empty_tenants(schemas)
    # In parallel: one tenant's migrations run (views dropped and made again) while its
    # siblings read the catalog.
    report = fleet.report("db", "migrate", "--parallel", "4", "--keep-going")
    failed = {e["target"]: e["error"] for e in report["targets"] if e["outcome"] != "applied"}
    assert failed == {}, failed
    assert [(e["target"], e["schema"], e["outcome"]) for e in report["targets"]] == [(s, s, "applied") for s in schemas]
    control = fleet.targets[0]
    tables = control.query(
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    )
    expected = {
        "customers",
        "orders",
        "app_events",
        "schema_migrations",
        "schema_migrations_lock",
        "schema_migrations_audit",
    }
    assert {t for s, t in tables if s == "public"} == set(), "a tenant's migration or tracking table landed in public"
    for schema in schemas:
        assert {t for s, t in tables if s == schema} == expected, schema
    for target in fleet.targets:
        assert applied_versions(target) == [(v, True) for v in VERSIONS], target.name
        assert events(target) == {"seeded": 1}
        audit = target.query(
            pgsql.SQL("SELECT DISTINCT operation FROM {}.schema_migrations_audit").format(
                pgsql.Identifier(target.schema)
            )
        )
        assert {"migrate"} <= {a for (a,) in audit} <= {"migrate", "create-schema"}, (target.name, audit)
    # Each tenant's view reads its own tenant's tables.
    fleet["tenant_b"].execute("INSERT INTO customers (full_name, email) VALUES ('Bo', 'bo@b.example')")
    assert fleet["tenant_b"].query("SELECT count(*) FROM customer_totals") == [(1,)]
    assert fleet["tenant_c"].query("SELECT count(*) FROM customer_totals") == [(0,)]

    before = fleet.state()
    again = fleet.report("db", "migrate", expect_exit=0)
    assert {e["outcome"] for e in again["targets"]} == {"ok"}
    for target in fleet.targets:
        after = target_state(target)
        assert (after["rows"], after["catalog"]) == (before[target.name]["rows"], before[target.name]["catalog"])
    status = fleet.report("db", "migration-status", expect_exit=0)
    assert {(e["current_version"], e["pending"]) for e in status["targets"]} == {("010", 0)}
