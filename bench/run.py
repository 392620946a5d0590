"""poststack's benchmark: each workload and its floor measured in the same run.

    python -m bench.run [--runs 5] [--quick]

W1 apply 500 small migrations (a table and an index each) to an empty database, against
   psql applying the same files in one session, one transaction each (target ≤ 1.2×)
W2 db migration-status on 500 and on 2,000 applied migrations (targets 0.15 s, 0.25 s)
W3 db diagnose and plan on 2,000 migrations that create 2,000 tables (≤ 1 s each; round trips)
W4 start-up: poststack --help, poststack version (≤ 0.15 s)
W5 rollback of the last 50 of 500 migrations, against psql running the same rollback files (≤ 1.2×)
W6 db diagnose with replay on a churny 350-migration history applied by hand (bench/replay_350.py):
   cold ≤ 2× psql applying the history once, warm (cached) ≤ 1 s; missing_tracking found for
   ≥ 98 % of the migrations that change the schema, none for pending ones
Memory: peak RSS of W3 (≤ 120 MB)

Results, with the machine, go to docs/performance.md (generated: do not edit by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import (
    fresh_database,
    machine,
    median,
    poststack_argv,
    psql_path,
    run_psql_script,
    server_url,
    write_doc_section,
)
from bench.common import write_history as history

REPO = Path(__file__).resolve().parent.parent


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str], int]:
    """Wall time, the result, and the child's peak RSS in KiB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})})
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv[:4])} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return elapsed, proc, max(peak, before)


def psql_script(paths: list[Path], out: Path, bookkeeping: bool = False) -> Path:
    """What a careful person would run: one session, each file in its own transaction; with
    ``bookkeeping``, also the tracking row and audit row poststack writes for each."""
    lines = []
    for path in paths:
        lines += ["BEGIN;", f"\\i {path}"]
        if bookkeeping:
            version, description = path.stem.split("_", 1)
            lines += [
                "INSERT INTO schema_migrations (version, description, checksum, checksum_algorithm, execution_ms,"
                f" success, error, transactional) VALUES ('{version}', '{description}', '{'0' * 64}', 'sha256-lf',"
                " 1, true, NULL, true);",
                "INSERT INTO schema_migrations_audit (host_pid, operation, plan_hash, step, action, version, outcome,"
                f" detail) VALUES ('bench:1', 'migrate', '{'0' * 16}', 1, 'apply_migration', '{version}', 'ok',"
                f" 'apply {path.name}');",
            ]
        lines.append("COMMIT;")
    out.write_text("\n".join(lines) + "\n")
    return out


psql = run_psql_script  # the floor: psql running the same history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one run each, for a smoke test")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    admin, stop = server_url()
    work = Path(tempfile.mkdtemp(prefix="poststack-bench-"))
    rows: list[tuple[str, str, str, str, str]] = []  # workload, measured, floor/target, ratio, verdict
    try:
        m500 = history(work / "m500", 500)
        m2000 = history(work / "m2000", 2000)
        psql_bin = psql_path(fresh_database(admin, "poststack_bench_probe"))

        # W1: apply 500 vs psql, both on fresh databases, alternating, medians. Two more
        # measurements say where the difference goes: psql also writing the tracking and
        # audit rows poststack writes, and poststack's fixed cost (migrate, nothing pending).
        ours, floor, booked, fixed = [], [], [], []
        files = sorted(p for p in m500.glob("*.sql") if ".rollback." not in p.name)
        script = psql_script(files, work / "w1.psql")
        booked_script = psql_script(files, work / "w1b.psql", bookkeeping=True)
        for i in range(runs):
            url = fresh_database(admin, f"poststack_bench_w1_{i}")
            floor.append(psql(psql_bin, url, script))
            url = fresh_database(admin, f"poststack_bench_w1p_{i}")
            ours.append(run(poststack_argv("db", "migrate", "--database-url", url, "--migrations-dir", str(m500)))[0])
            fixed.append(run(poststack_argv("db", "migrate", "--database-url", url, "--migrations-dir", str(m500)))[0])
            url = fresh_database(admin, f"poststack_bench_w1b_{i}")
            run(poststack_argv("db", "create-schema", "--database-url", url, "--migrations-dir", str(m500)))
            booked.append(psql(psql_bin, url, booked_script))
        rows.append(
            (
                "W1 apply 500 migrations",
                f"{median(ours):.2f} s",
                f"psql {median(floor):.2f} s; ≤ 1.2×",
                f"{median(ours) / median(floor):.2f}×",
                _v(median(ours) / median(floor) <= 1.2),
            )
        )
        rows.append(
            (
                "W1 (where it goes) psql writing the same tracking and audit rows",
                f"psql {median(booked):.2f} s",
                f"psql {median(floor):.2f} s",
                f"{median(booked) / median(floor):.2f}×",
                "",
            )
        )
        rows.append(
            (
                "W1 (where it goes) poststack's fixed cost: migrate, nothing pending",
                f"{median(fixed):.2f} s",
                "",
                "",
                "",
            )
        )

        # W2: status on 500 and 2,000 applied.
        url500 = fresh_database(admin, "poststack_bench_w2_500")
        run(poststack_argv("db", "migrate", "--database-url", url500, "--migrations-dir", str(m500)))
        url2000 = fresh_database(admin, "poststack_bench_w2_2000")
        run(poststack_argv("db", "migrate", "--database-url", url2000, "--migrations-dir", str(m2000)))
        for label, url, directory, target in (("500", url500, m500, 0.15), ("2,000", url2000, m2000, 0.25)):
            times = [
                run(
                    poststack_argv("db", "migration-status", "--database-url", url, "--migrations-dir", str(directory))
                )[0]
                for _ in range(runs)
            ]
            rows.append(
                (
                    f"W2 migration-status, {label} applied",
                    f"{median(times):.3f} s",
                    f"≤ {target} s",
                    "",
                    _v(median(times) <= target),
                )
            )

        # W3: diagnose and plan on 2,000; round trips; peak memory.
        peak_kib = 0
        for verb in ("diagnose", "plan"):
            times = []
            for _ in range(runs):
                elapsed, proc, peak = run(
                    poststack_argv(
                        "db", "diagnose", "--format", "json", "--database-url", url2000, "--migrations-dir", str(m2000)
                    )
                    if verb == "diagnose"
                    else poststack_argv(
                        "plan", "--format", "json", "--database-url", url2000, "--migrations-dir", str(m2000)
                    )
                )
                times.append(elapsed)
                peak_kib = max(peak_kib, peak)
            note = ""
            if verb == "diagnose":
                note = f"; {json.loads(proc.stdout)['database_state']['round_trips']} round trips"
            rows.append(
                (
                    f"W3 {verb}, 2,000 migrations / tables",
                    f"{median(times):.3f} s",
                    f"≤ 1 s{note}",
                    "",
                    _v(median(times) <= 1.0),
                )
            )
        rows.append(("Memory: peak RSS of W3", f"{peak_kib / 1024:.0f} MB", "≤ 120 MB", "", _v(peak_kib / 1024 <= 120)))

        # W4: start-up.
        for label, argv in (("--help", poststack_argv("--help")), ("version", poststack_argv("version"))):
            times = [run(argv)[0] for _ in range(max(runs, 5))]
            rows.append((f"W4 poststack {label}", f"{median(times):.3f} s", "≤ 0.15 s", "", _v(median(times) <= 0.15)))

        # W5: roll back the last 50 of 500, against psql running the same rollback files.
        ours, floor = [], []
        rollbacks = sorted((p for p in m500.glob("*.rollback.sql")), reverse=True)[:50]
        rb_script = psql_script(rollbacks, work / "w5.psql")
        for i in range(runs):
            url = fresh_database(admin, f"poststack_bench_w5_{i}")
            run(poststack_argv("db", "migrate", "--database-url", url, "--migrations-dir", str(m500)))
            floor.append(psql(psql_bin, url, rb_script))
            url = fresh_database(admin, f"poststack_bench_w5p_{i}")
            run(poststack_argv("db", "migrate", "--database-url", url, "--migrations-dir", str(m500)))
            ours.append(
                run(poststack_argv("db", "rollback", "00450", "--database-url", url, "--migrations-dir", str(m500)))[0]
            )
        rows.append(
            (
                "W5 rollback 50 of 500",
                f"{median(ours):.2f} s",
                f"psql {median(floor):.2f} s; ≤ 1.2×",
                f"{median(ours) / median(floor):.2f}×",
                _v(median(ours) / median(floor) <= 1.2),
            )
        )

        # W6: diagnose with replay, 350 churny migrations applied by hand (bench/replay_350.py).
        from bench import replay_350

        w6 = replay_350.measure(admin, work / "w6", runs)
        rows.append(
            (
                "W6 diagnose with replay, 350 migrations applied by hand, cold",
                f"{median(w6.cold):.2f} s",
                f"psql {median(w6.psql):.2f} s; ≤ {replay_350.COLD_TARGET:g}×",
                f"{w6.ratio:.2f}×",
                _v(w6.passed["cold"]),
            )
        )
        rows.append(
            (
                "W6 the same, warm (replay cached)",
                f"{median(w6.warm):.2f} s",
                f"≤ {replay_350.WARM_TARGET:g} s",
                "",
                _v(w6.passed["warm"]),
            )
        )
        rows.append(
            (
                "W6 missing_tracking: schema-changing migrations found; pending ones claimed",
                f"{w6.found_full}/{w6.schema_versions} all applied, {w6.found_partial}/{w6.applied_schema} "
                f"with a fifth pending; {len(w6.false_claims)}/{w6.pending} pending claimed",
                "≥ 98 %; none",
                "",
                _v(w6.passed["recall"] and w6.passed["false_claims"]),
            )
        )
    finally:
        stop()

    table = ["| workload | poststack | floor / target | ratio | |", "|---|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    print("\n".join(table))
    if not args.quick:
        doc = [
            f"- Run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; {runs} runs each, medians",
            f"- Machine: {machine()}",
            "",
            *table,
        ]
        write_doc_section(REPO / "docs" / "performance.md", "bench.run", "\n".join(doc))


def _v(ok: bool) -> str:
    return "✅" if ok else "❌ misses"


if __name__ == "__main__":
    main()
