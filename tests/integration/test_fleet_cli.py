"""Fleets on a real server, small: tenant schemas, usage errors, stopping a parallel run.
The 200-schema / 50-database acceptance runs are in tests/fleet."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import _CLEAN_ENV, holding_advisory_lock, run_cli, run_process, sql, wait_for, write

HISTORY = {
    "001_accounts.sql": "CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL);",
    "002_seed.sql": "INSERT INTO accounts (name) VALUES ('owner');",
    "003_notes.sql": "-- kept for the record: nothing to run\n",
    "004_view.sql": "CREATE VIEW account_names AS SELECT name FROM accounts;",
}


@pytest.fixture
def tenants(tmp_path: Path, database_url: str, db) -> tuple[Path, Path]:
    """Three tenant schemas (one not created yet) in the test database, and their history."""
    directory = tmp_path / "tenant_migrations"
    directory.mkdir()
    for name, text in HISTORY.items():
        write(directory, name, text)
    sql(db, "CREATE SCHEMA acme; CREATE SCHEMA globex")
    targets = write(tmp_path, "tenants.yaml", f"url: {database_url}\nschemas: [acme, globex, initech]\n")
    return directory, targets


def fleet(directory: Path, *args: str) -> tuple[int, dict, str]:
    result = run_cli(*args, "--migrations-dir", str(directory), "--format", "json")
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def test_each_tenant_gets_the_history_in_its_own_schema(tenants, db):
    directory, targets = tenants
    code, report, _ = fleet(directory, "db", "migrate", "--targets", str(targets))
    assert code == 0, report
    assert [(t["target"], t["outcome"], t["current_version"]) for t in report["targets"]] == [
        ("acme", "applied", "004"),
        ("globex", "applied", "004"),
        ("initech", "applied", "004"),  # its schema was made with its tracking tables
    ]
    for tenant in ("acme", "globex", "initech"):
        assert sql(db, f"SELECT name FROM {tenant}.accounts") == [("owner",)]
        assert sql(db, f"SELECT count(*) FROM {tenant}.schema_migrations WHERE success") == [(4,)]
    assert sql(db, "SELECT to_regclass('public.accounts'), to_regclass('public.schema_migrations')") == [(None, None)]
    # Again: nothing to do anywhere, and nothing ran twice.
    code, report, _ = fleet(directory, "db", "migrate", "--targets", str(targets))
    assert code == 0 and {t["outcome"] for t in report["targets"]} == {"ok"}
    assert sql(db, "SELECT count(*) FROM globex.accounts") == [(1,)]


def test_a_tenant_fleet_asks_once_whether_a_pooler_sits_in_front(tenants, monkeypatch: pytest.MonkeyPatch):
    """Tenant schemas in one database all reach it one way: the pooler probe (a second
    connection) is made once for the fleet, not once per tenant, and each row still says
    where its tenant stands, read on the run's own connection."""
    from reconciler import db as connections

    probes = []
    probe = connections.detect_pooling
    monkeypatch.setattr(connections, "detect_pooling", lambda session: probes.append(session.url) or probe(session))
    directory, targets = tenants
    code, report, _ = fleet(directory, "db", "migrate", "--targets", str(targets))
    assert code == 0, report
    assert len(probes) == 1 and "search_path" not in probes[0]  # the database's, not a tenant's
    assert [(t["current_version"], t["pending"], t["failed"]) for t in report["targets"]] == [("004", 0, 0)] * 3


def test_a_tenants_diagnosis_is_its_own(tenants, db):
    """Its neighbours' schemas are not its orphans, its history replays in a shadow (which
    needs the tenant's schema there first), and one broken tenant is the only one reported."""
    directory, targets = tenants
    assert fleet(directory, "db", "migrate", "--targets", str(targets))[0] == 0
    sql(db, "DELETE FROM globex.schema_migrations WHERE version = '004'")
    code, report, stderr = fleet(directory, "db", "diagnose", "--targets", str(targets), "--severity", "medium")
    assert code == 1
    assert "replay stopped" not in stderr
    rows = {t["target"]: t for t in report["targets"]}
    assert (rows["acme"]["outcome"], rows["initech"]["outcome"]) == ("ok", "ok")
    assert [(i["type"], i["version"]) for i in rows["globex"]["issue_list"]] == [("missing_tracking", "004")]
    assert report["totals"]["issues"] == {"high": 1, "medium": 0, "low": 0}


def test_status_over_a_targets_query(tenants, database_url: str):
    directory, _ = tenants
    query = "SELECT nspname FROM pg_namespace WHERE nspname IN ('acme', 'globex') ORDER BY 1"
    code, report, _ = fleet(
        directory, "db", "migration-status", "--database-url", database_url, "--targets-query", query
    )
    assert code == 0
    assert [(t["target"], t["pending"]) for t in report["targets"]] == [("acme", 4), ("globex", 4)]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("db", "migrate", "--parallel", "4"), "run over a fleet: pass --targets"),
        (("db", "migrate", "--targets", "{t}", "--dry-run"), "plan --targets shows"),
        (("db", "diagnose", "--targets", "{t}", "--canary", "2"), "--canary changes a few targets first"),
        (("db", "migrate", "--targets", "{t}", "--shard", "3/2"), "--shard 3/2"),
        (("db", "migrate", "--targets", "{t}", "--targets-query", "SELECT 1"), "pass one of them"),
        (("db", "validate", "--targets", "{t}", "--offline"), "--offline reads no database"),
        (("apply", "--targets", "{t}"), "--auto-approve"),
        (("db", "migrate", "--targets", "{t}", "--format", "sql"), "--format sql"),
    ],
)
def test_fleet_usage_errors_change_nothing(tenants, db, args: tuple[str, ...], says: str):
    directory, targets = tenants
    result = run_cli(*(a.format(t=targets) for a in args), "--migrations-dir", str(directory))
    assert result.exit_code == 2, result.output
    assert says in result.stderr
    assert sql(db, "SELECT count(*) FROM pg_tables WHERE schemaname IN ('acme', 'globex')") == [(0,)]


def test_a_bad_targets_file_names_the_file_and_line(tenants, tmp_path: Path):
    directory, _ = tenants
    bad = write(tmp_path, "bad.yaml", "schemas:\n  - acme\n  - Not-A-Schema\n")
    result = run_cli("db", "migration-status", "--targets", str(bad), "--migrations-dir", str(directory))
    assert result.exit_code == 2
    assert f"{bad}: schemas[1]: 'Not-A-Schema' is not a tenant schema name" in result.stderr


def test_passwords_are_masked_in_the_fleet_report(tenants, tmp_path: Path, database_url: str):
    directory, _ = tenants
    # The test server's own password when it has one (CI's PostgreSQL 15), else one that the
    # embedded server's trust authentication ignores.
    password = make_url(database_url).password
    secret = str(password) if password else "hunter2-secret"
    secret_url = database_url if password else database_url.replace("postgres:@", f"postgres:{secret}@", 1)
    assert secret in secret_url
    targets = write(tmp_path, "secret.yaml", f"url: '{secret_url}'\nschemas: [acme]\n")
    for fmt in ("text", "json"):
        result = run_cli(
            "db", "migrate", "--targets", str(targets), "--migrations-dir", str(directory), "--format", fmt
        )
        assert result.exit_code == 0 and secret not in result.output
    assert ":***@" in json.loads(result.stdout)["targets"][0]["database"]
    # A target that fails shows its database in the text report too, masked.
    write(directory, "005_broken.sql", "SELECT * FROM no_such_table;")
    result = run_cli("db", "migrate", "--targets", str(targets), "--migrations-dir", str(directory))
    assert result.exit_code == 1 and "no_such_table" in result.stdout
    assert secret not in result.output and ":***@" in result.stdout


def _fleet_process(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}
    argv = [sys.executable, "-m", "reconciler.interface.cli", *args]
    # A session of its own: the test signals the fleet process alone, as a terminal's
    # Ctrl-C reaches it (workers have process groups of their own).
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def test_ctrl_c_stops_a_parallel_fleet_cleanly_and_a_rerun_finishes(tenants, db, database_url: str):
    """Two tenants migrating in workers, the third not started: SIGINT to the fleet reaches
    each worker once; each rolls back and releases its lock, the report says who stopped
    and who never started, exit 130; the re-run applies everything once."""
    directory, targets = tenants
    write(
        directory,
        "005_wait.sql",
        "SELECT pg_advisory_xact_lock_shared(4242);\nINSERT INTO accounts (name) VALUES ('late');",
    )
    with holding_advisory_lock(database_url, 4242):
        proc = _fleet_process(
            "db", "migrate", "--targets", str(targets), "--migrations-dir", str(directory), "--parallel", "2"
        )
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted"
        wait_for(db, waiting, [(2,)])
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout and "not started: the run was stopped by SIGINT" in stdout
    # A stopped target says where it stands: 001-004 applied before the signal, 005 pending
    # and recorded as an interrupted (failed) attempt.
    stopped = [line.split() for line in stdout.splitlines() if line.split()[-2:-1] == ["interrupted"]]
    assert len(stopped) == 2 and all(row[1:4] == ["004", "1", "1"] for row in stopped), stdout
    assert "interrupted by SIGINT during migration 005: rolled back" in stdout
    locked = sql(db, "SELECT count(*) FROM acme.schema_migrations_lock WHERE locked")
    assert locked == [(0,)] and sql(db, "SELECT count(*) FROM globex.schema_migrations_lock WHERE locked") == [(0,)]
    assert sql(db, "SELECT count(*) FROM acme.accounts WHERE name = 'late'") == [(0,)]
    result = run_process(
        "db", "migrate", "--targets", str(targets), "--migrations-dir", str(directory), "--parallel", "2"
    )
    assert result.exit_code == 0, result.output
    for tenant in ("acme", "globex", "initech"):
        assert sql(db, f"SELECT count(*) FROM {tenant}.accounts") == [(2,)]
        assert sql(db, f"SELECT count(*) FROM {tenant}.schema_migrations WHERE version = '005' AND success") == [(1,)]


def test_a_killed_fleet_is_finished_by_the_next_run(tenants, db, database_url: str):
    """The fleet process and its workers die by SIGKILL mid-migration; their lock rows stay.
    The re-run takes over those locks (every pending migration is transactional, the dead
    run's process and backend are gone), says so, and applies each migration once."""
    directory, targets = tenants
    write(
        directory,
        "005_wait.sql",
        "SELECT pg_advisory_xact_lock_shared(4243);\nINSERT INTO accounts (name) VALUES ('late');",
    )
    with holding_advisory_lock(database_url, 4243):
        proc = _fleet_process(
            "db", "migrate", "--targets", str(targets), "--migrations-dir", str(directory), "--parallel", "3"
        )
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4243 AND NOT granted"
        wait_for(db, waiting, [(3,)])
        os.kill(proc.pid, signal.SIGKILL)  # the workers follow (they die with the fleet process)
        proc.communicate(timeout=30)
        # Their backends end once the lock they wait for is free and they find the client gone.
    wait_for(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'poststack'", [(0,)])
    assert sql(db, "SELECT count(*) FROM acme.schema_migrations_lock WHERE locked") == [(1,)]
    result = run_process(
        "db", "migrate", "--targets", str(targets), "--migrations-dir", str(directory), "--parallel", "3"
    )
    assert result.exit_code == 0, result.output
    assert "Released the migration lock of a db migrate that ended without releasing it" in result.stdout
    for tenant in ("acme", "globex", "initech"):
        assert sql(db, f"SELECT count(*) FROM {tenant}.accounts WHERE name = 'late'") == [(1,)]
        assert sql(db, f"SELECT count(*) FROM {tenant}.schema_migrations WHERE version = '005'") == [(1,)]
        assert sql(db, f"SELECT count(*) FROM {tenant}.schema_migrations_lock WHERE locked") == [(0,)]


@contextlib.contextmanager
def _waiting_in_005(
    directory: Path, db, database_url: str, key: int, args: tuple[str, ...], running: int
) -> Iterator[dict]:
    """A fleet migrate whose ``running`` workers wait in 005 (on advisory lock ``key``, held
    here) while the block acts; then the lock is let go, and the run (which must exit 1, one
    target failing) reports: its JSON rows by target, in the yielded dict's "rows"."""
    write(
        directory,
        "005_wait.sql",
        f"SELECT pg_advisory_xact_lock_shared({key});\nINSERT INTO accounts (name) VALUES ('late');",
    )
    report: dict = {}
    with holding_advisory_lock(database_url, key):
        proc = _fleet_process(*args, "--keep-going", "--format", "json")
        waiting = f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = {key} AND NOT granted"
        wait_for(db, waiting, [(running,)])
        yield report
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    report["rows"] = {t["target"]: t for t in json.loads(stdout)["targets"]}


def test_workers_run_target_after_target_and_a_killed_one_costs_only_its_target(tenants, db, database_url: str):
    """Five tenants, two workers: each worker runs one target after another (a fork per
    worker, not per target). A worker killed mid-migration costs only the target it ran:
    that row says so, another worker takes the rest, and the re-run finishes that target."""
    directory, targets = tenants
    sql(db, "CREATE SCHEMA hooli; CREATE SCHEMA umbrella")
    five = write(
        targets.parent, "five.yaml", f"url: {database_url}\nschemas: [acme, globex, initech, hooli, umbrella]\n"
    )
    args = ("db", "migrate", "--targets", str(five), "--migrations-dir", str(directory), "--parallel", "2")
    with _waiting_in_005(directory, db, database_url, 4246, args, running=2) as report:
        # acme and globex were handed out first; acme's lock row names its worker.
        (holder,) = sql(db, "SELECT locked_by FROM acme.schema_migrations_lock")[0]
        os.kill(int(holder.rsplit(":", 1)[1]), signal.SIGKILL)
    rows = report["rows"]
    assert (rows["acme"]["outcome"], rows["acme"]["error"]) == ("failed", "its worker process ended without a report")
    # Where it stands is read by the fleet itself: 001-004 committed before it died.
    assert (rows["acme"]["current_version"], rows["acme"]["pending"]) == ("004", 1)
    others = ("globex", "initech", "hooli", "umbrella")
    assert [rows[t]["outcome"] for t in others] == ["applied"] * 4
    # globex's worker and the one started after acme's died ran the other four between them.
    workers = {pid for t in others for (pid,) in sql(db, f"SELECT DISTINCT host_pid FROM {t}.schema_migrations_audit")}
    assert len(workers) <= 2, workers
    wait_for(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'poststack'", [(0,)])
    result = run_process(*args)
    assert result.exit_code == 0, result.output
    assert "Released the migration lock of a db migrate that ended without releasing it" in result.stdout
    for tenant in ("acme", *others):
        assert sql(db, f"SELECT count(*) FROM {tenant}.accounts WHERE name = 'late'") == [(1,)]
        assert sql(db, f"SELECT count(*) FROM {tenant}.schema_migrations WHERE version = '005'") == [(1,)]


def test_a_target_whose_connection_is_lost_mid_run_says_what_it_applied(tenants, db, database_url: str):
    """Reached, migrating, then its backend ended: not "unreachable", and not "applied
    nothing": what it committed, and where it stands, read again on a new connection."""
    directory, targets = tenants
    args = ("db", "migrate", "--targets", str(targets), "--migrations-dir", str(directory), "--parallel", "3")
    with _waiting_in_005(directory, db, database_url, 4247, args, running=3) as report:
        sql(db, "SELECT pg_terminate_backend(backend_pid) FROM acme.schema_migrations_lock")
    rows = report["rows"]
    acme = rows["acme"]
    assert acme["outcome"] == "failed" and acme["error"].startswith("the connection was lost during the run")
    assert (acme["applied"], acme["current_version"], acme["pending"]) == (["001", "002", "003", "004"], "004", 1)
    assert [rows[t]["outcome"] for t in ("globex", "initech")] == ["applied", "applied"]
    assert sql(db, "SELECT count(*) FROM acme.schema_migrations WHERE version = '005' AND success") == [(0,)]


def test_report_merge_of_shards_is_the_unsharded_report(tenants, tmp_path: Path):
    directory, targets = tenants
    assert fleet(directory, "db", "migrate", "--targets", str(targets))[0] == 0
    files = []
    for index in (1, 2, 3):
        code, report, _ = fleet(directory, "db", "migration-status", "--targets", str(targets), "--shard", f"{index}/3")
        assert code == 0
        files.append(write(tmp_path, f"shard-{index}.json", json.dumps(report)))
    whole = fleet(directory, "db", "migration-status", "--targets", str(targets))[1]
    merged = run_cli("report", "merge", *map(str, files), "--format", "json")
    assert merged.exit_code == 0, merged.output
    data = json.loads(merged.stdout)

    def rows(report: dict) -> list[tuple]:
        return sorted((t["key"], t["outcome"], t["current_version"], t["pending"]) for t in report["targets"])

    assert rows(data) == rows(whole) and len(data["targets"]) == 3
    assert data["fleet"]["shards"] == ["1/3", "2/3", "3/3"]
    assert run_cli("report", "merge", str(files[0]), str(files[0])).exit_code == 2  # the same shard twice


def test_a_fleet_no_target_of_which_can_be_reached_exits_3(tenants, tmp_path: Path):
    directory, _ = tenants
    nowhere = write(
        tmp_path, "nowhere.yaml", "targets:\n  - postgresql://x:pw@127.0.0.1:9/a\n  - postgresql://x@127.0.0.1:9/b\n"
    )
    result = run_cli("db", "migration-status", "--targets", str(nowhere), "--migrations-dir", str(directory))
    assert result.exit_code == 3, result.output
    assert result.stdout.count("unreachable") >= 2 and "pw" not in result.output


@pytest.mark.parametrize(("command", "taken_over"), [("db migrate", True), ("db rollback", False), (None, False)])
def test_only_a_dead_migrates_lock_is_taken_over(tenants, db, command: str | None, taken_over: bool):
    """A rollback, or a remediation plan, may run steps outside a transaction: the lock such
    a run leaves is a person's to look at, even when every pending migration is transactional."""
    directory, targets = tenants
    assert fleet(directory, "db", "migrate", "--targets", str(targets))[0] == 0
    write(directory, "005_more.sql", "INSERT INTO accounts (name) VALUES ('more');")
    application = "poststack" if command is None else f"poststack {command}"
    sql(
        db,
        "UPDATE acme.schema_migrations_lock SET locked = true, locked_at = now(), locked_by = %s, "
        "backend_pid = 999999, application_name = %s",
        (f"{socket.gethostname()}:999999", application),
    )
    code, report, _ = fleet(directory, "db", "migrate", "--targets", str(targets), "--keep-going")
    acme = next(t for t in report["targets"] if t["target"] == "acme")
    assert (acme["outcome"] == "applied") is taken_over, acme
    assert code == (0 if taken_over else 1)
    assert sql(db, "SELECT count(*) FROM acme.accounts WHERE name = 'more'") == [(1 if taken_over else 0,)]
    if not taken_over:
        assert "migration system is locked" in acme["error"]
        assert sql(db, "SELECT locked FROM acme.schema_migrations_lock") == [(True,)]


def test_a_new_tenant_beside_a_populated_shared_schema_gets_its_own_tables(tenants, db, tmp_path: Path, database_url):
    """Unqualified names land in the tenant's schema (poststack makes it first), so public's
    tables of the same names are not taken for the tenant's migrations having run."""
    directory, _ = tenants
    sql(db, "CREATE TABLE public.accounts (id serial PRIMARY KEY, name text NOT NULL)")
    targets = write(tmp_path, "newco.yaml", f"url: {database_url}\nschemas: [newco]\nshared_schemas: [public]\n")
    code, report, _ = fleet(directory, "db", "migrate", "--targets", str(targets))
    assert code == 0, report
    assert sql(db, "SELECT name FROM newco.accounts") == [("owner",)]
    assert sql(db, "SELECT count(*) FROM public.accounts") == [(0,)]
    code, report, _ = fleet(directory, "db", "diagnose", "--targets", str(targets), "--severity", "medium")
    assert code == 0, report  # public is newco's by the targets file's word: not an orphan
