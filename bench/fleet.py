"""Benchmark: fleets of tenant schemas (issue 16). A benchmark, not a timed test.

    python -m bench.fleet [--runs 5] [--tenants 200] [--parallel 8] [--quick]

The history is bench/tenant_history.py's: ten migrations with unqualified names (tables, an
enum grown outside a transaction, views made again around a rename and a type change, a
function replaced, a data migration, a comment-only file), the same for every tenant.

W-status  ``poststack db migration-status --targets F`` over TENANTS tenant schemas at the
          history, in one database, against one target's status (the same command with a
          targets file naming one tenant of that database). Target: the fleet's time
          ≤ 2 × one target's + 10 ms per target. Also shown: the same with --parallel.
W-migrate ``poststack db migrate --targets F --parallel P --keep-going`` of the ten migrations
          on TENANTS fresh (empty) tenant schemas, against psql applying the same ten files to
          the same schemas with P psql processes at once: ``xargs -P P``, one
          ``psql -X -q -v ON_ERROR_STOP=1 -f script`` per schema with
          ``PGOPTIONS=-csearch_path=<schema>``, the script running each file in its own
          transaction (``BEGIN; \\i file; COMMIT;``) as poststack does. The same work without
          tracking rows, locks or audit rows. Target: ≤ 1.5 ×. Also shown: psql with ``-1``,
          one transaction per schema (fewer commits than poststack makes); and the floor of
          any tool that keeps a history: psql writing what poststack writes, and nothing it
          reads (the tracking tables made, the advisory lock and the lock row taken and
          released, and each file's transaction ending with its tracking row and audit row).

Every time is a whole process (the poststack console script, or xargs with its psql
children), the median of ``--runs``, the runs alternating so that a busy moment falls on all
of them alike. Each W-migrate run gets a new database with TENANTS empty schemas, made untimed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

from bench.common import fresh_database, machine, median, poststack_argv, psql_path, server_url, tracked_script
from bench.tenant_history import clone_tenants, write_tenant_history

STATUS_SLOPE = 0.010  # seconds per target
STATUS_FACTOR = 2.0  # × one target's status
MIGRATE_TARGET = 1.5  # × psql


def _env() -> dict[str, str]:
    """Without a database of the caller's: each command names its own."""
    return {k: v for k, v in os.environ.items() if k not in ("POSTSTACK_DATABASE_URL", "DATABASE_URL")}


def timed_run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None):
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env or _env(), input=stdin)
    return time.perf_counter() - started, proc


def make_schemas(url: str, schemas: list[str]) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("".join(f"CREATE SCHEMA {s};\n" for s in schemas))
    conn.close()


def tenants_file(path: Path, url: str, schemas: list[str]) -> Path:
    path.write_text(json.dumps({"url": url, "schemas": schemas}))  # JSON is YAML
    return path


def applied_everywhere(url: str, schemas: list[str]) -> int:
    """How many of ``schemas`` hold the history's last table and column (the work was done)."""
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = ANY(%s) "
            "AND table_name = 'orders' AND column_name = 'note'",
            (schemas,),
        )
        (count,) = cur.fetchone()
    conn.close()
    return count


@dataclass
class Figures:
    one: list[float] = field(default_factory=list)
    fleet: list[float] = field(default_factory=list)
    fleet_parallel: list[float] = field(default_factory=list)
    migrate: list[float] = field(default_factory=list)
    psql: list[float] = field(default_factory=list)
    psql_one_tx: list[float] = field(default_factory=list)
    psql_tracked: list[float] = field(default_factory=list)
    migrate_failed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def measure_status(admin: str, work: Path, tenants: int, runs: int, parallel: int, figures: Figures) -> None:
    project = work / "status"
    migrations = project / "migrations"
    write_tenant_history(migrations)
    url = fresh_database(admin, "poststack_bench_fleet_status")
    schemas = [f"tenant_{i:03d}" for i in range(1, tenants + 1)]
    single = tenants_file(project / "one.yaml", url, schemas[:1])
    whole = tenants_file(project / "all.yaml", url, schemas)
    migrated = poststack_argv("db", "migrate", "--targets", str(single), "--migrations-dir", str(migrations))
    _, proc = timed_run(migrated, project)
    if proc.returncode != 0:
        raise SystemExit(f"migrate of the first tenant failed: {proc.stdout}{proc.stderr}")
    clone_tenants(url, migrations, schemas[0], schemas[1:])

    def status(file: Path, *extra: str) -> float:
        argv = poststack_argv("db", "migration-status", "--targets", str(file), "--migrations-dir", str(migrations))
        elapsed, proc = timed_run([*argv, "--format", "json", *extra], project)
        report = json.loads(proc.stdout)
        if proc.returncode != 0 or len(report["targets"]) != len(json.loads(file.read_text())["schemas"]):
            raise SystemExit(f"status failed ({proc.returncode}): {proc.stderr or proc.stdout[:2000]}")
        return elapsed

    status(whole)  # once, unmeasured: the server's caches warm
    for _ in range(runs):
        figures.one.append(status(single))
        figures.fleet.append(status(whole))
        figures.fleet_parallel.append(status(whole, "--parallel", str(parallel)))


def measure_migrate(admin: str, work: Path, tenants: int, runs: int, parallel: int, figures: Figures) -> None:
    project = work / "migrate"
    migrations = project / "migrations"
    files = write_tenant_history(migrations)
    schemas = [f"tenant_{i:03d}" for i in range(1, tenants + 1)]
    per_file = project / "per-file.psql"
    per_file.write_text("".join(f"BEGIN;\n\\i {path}\nCOMMIT;\n" for path in files))
    one_tx = project / "one-tx.psql"
    one_tx.write_text("".join(f"\\i {path}\n" for path in files))
    psql = None

    tracked = tracked_scripts(project, migrations, schemas)

    def with_psql(name: str, script: Path, *extra: str) -> float:
        """``script``: one file for every schema, or a directory with one per schema."""
        from reconciler.dsn import libpq_env

        url = fresh_database(admin, name)
        make_schemas(url, schemas)
        nonlocal psql
        psql = psql or psql_path(url)
        argv = ["xargs", "-P", str(parallel), "-I{}", "env", "PGOPTIONS=-csearch_path={}"]
        each = str(script / "{}.psql") if script.is_dir() else str(script)
        argv += [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", *extra, "-f", each]
        elapsed, proc = timed_run(argv, project, env=libpq_env(url), stdin="\n".join(schemas) + "\n")
        if proc.returncode != 0 or applied_everywhere(url, schemas) != len(schemas):
            raise SystemExit(f"psql failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return elapsed

    def with_poststack(name: str) -> float:
        url = fresh_database(admin, name)
        make_schemas(url, schemas)
        file = tenants_file(project / f"{name}.yaml", url, schemas)
        argv = poststack_argv("db", "migrate", "--targets", str(file), "--migrations-dir", str(migrations))
        elapsed, proc = timed_run([*argv, "--parallel", str(parallel), "--keep-going", "--format", "json"], project)
        report = json.loads(proc.stdout) if proc.stdout.startswith("{") else None
        if report is None:
            raise SystemExit(f"migrate failed ({proc.returncode}): {proc.stderr[-2000:]}")
        failed = [e for e in report["targets"] if e["outcome"] != "applied"]
        figures.migrate_failed.append(len(failed))
        figures.errors += [f"{e['target']}: {e['outcome']}: {e['error']}" for e in failed]
        return elapsed

    for i in range(runs):
        figures.psql.append(with_psql(f"poststack_bench_fleet_psql_{i}", per_file))
        figures.migrate.append(with_poststack(f"poststack_bench_fleet_migrate_{i}"))
        figures.psql_one_tx.append(with_psql(f"poststack_bench_fleet_psql1_{i}", one_tx, "-1"))
        figures.psql_tracked.append(with_psql(f"poststack_bench_fleet_psqlt_{i}", tracked))


def tracked_scripts(project: Path, migrations: Path, schemas: list[str]) -> Path:
    """For each schema, the floor's psql script (bench.common.tracked_script): the directory of
    scripts, one per schema, named after it."""
    scripts = project / "tracked"
    scripts.mkdir(exist_ok=True)
    for schema in schemas:
        (scripts / f"{schema}.psql").write_text(tracked_script(migrations, schema))
    return scripts


def drop_databases(admin: str) -> None:
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'poststack\\_bench\\_fleet\\_%'")
        for (name,) in cur.fetchall():
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def _s(values: list[float]) -> str:
    return f"median {median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="one run each, for a smoke test")
    parser.add_argument("--only", choices=("status", "migrate"), help="one workload only")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs

    load_before = os.getloadavg()[0]
    admin, stop = server_url()
    work = Path(tempfile.mkdtemp(prefix="poststack-bench-fleet-"))
    figures = Figures()
    try:
        if args.only in (None, "status"):
            measure_status(admin, work, args.tenants, runs, args.parallel, figures)
        if args.only in (None, "migrate"):
            measure_migrate(admin, work, args.tenants, runs, args.parallel, figures)
    finally:
        drop_databases(admin)
        stop()
        shutil.rmtree(work, ignore_errors=True)

    verdict = {True: "met", False: "NOT MET"}
    n = args.tenants
    print(f"machine: {machine()}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{n} tenant schemas in one database; {runs} run(s) each, whole processes, medians")
    if figures.fleet:
        one, fleet = median(figures.one), median(figures.fleet)
        allowed = STATUS_FACTOR * one + STATUS_SLOPE * n
        print(f"W-status  one target (a targets file naming one tenant): {_s(figures.one)}")
        print(f"          {n} targets:                                    {_s(figures.fleet)}")
        print(f"          {n} targets, --parallel {args.parallel}:                       {_s(figures.fleet_parallel)}")
        print(
            f"          target ≤ {STATUS_FACTOR:g} × {one:.2f} s + {STATUS_SLOPE * 1000:g} ms × {n} = {allowed:.2f} s: "
            f"{fleet:.2f} s = {fleet / allowed:.2f} of it, {(fleet - one) / (n - 1) * 1000:.1f} ms per extra target "
            f"({verdict[fleet <= allowed]})"
        )
    if figures.migrate:
        ours, floor = median(figures.migrate), median(figures.psql)
        print(f"W-migrate psql, xargs -P {args.parallel}, each file in its own transaction: {_s(figures.psql)}")
        print(f"          psql, xargs -P {args.parallel}, -1 (one transaction per schema):  {_s(figures.psql_one_tx)}")
        print(
            f"          psql, xargs -P {args.parallel}, writing poststack's tracking, lock and audit rows: {_s(figures.psql_tracked)}"
        )
        print(f"          poststack db migrate --parallel {args.parallel}:                  {_s(figures.migrate)}")
        print(
            f"          = {ours / floor:.2f} × psql (target ≤ {MIGRATE_TARGET:g} ×: {verdict[ours / floor <= MIGRATE_TARGET]}); "
            f"{ours / median(figures.psql_one_tx):.2f} × psql -1; {ours / median(figures.psql_tracked):.2f} × psql writing "
            f"the same rows, which is itself {median(figures.psql_tracked) / floor:.2f} × psql"
        )
        print(
            f"          poststack runs paired with psql: {', '.join(f'{a / b:.2f}×' for a, b in zip(figures.migrate, figures.psql, strict=True))}"
        )
        if any(figures.migrate_failed):
            print(f"          TARGETS NOT APPLIED per run: {figures.migrate_failed}; first errors:")
            for error in figures.errors[:5]:
                print(f"            {error}")


if __name__ == "__main__":
    main()
