"""Benchmark: diagnose a history of 2,000 migrations (2,000 tables) on a real PostgreSQL.

Target (issue 3): under 2 s, with a number of round trips that does not grow with the
history. Run by hand:  python -m bench.diagnose_2000 [--count 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.common import fresh_database, machine, median, poststack, server_url, timed, write_history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    admin_url, stop = server_url()
    try:
        url = fresh_database(admin_url, "poststack_bench_diagnose")
        directory = write_history(Path(tempfile.mkdtemp(prefix="poststack-bench-")) / "migrations", args.count)
        common = ("--database-url", url, "--migrations-dir", str(directory))
        applied = poststack("db", "migrate", *common)
        if applied.returncode != 0:
            raise SystemExit(f"migrate failed: {applied.stderr or applied.stdout}")

        reports: list[dict] = []

        def run() -> None:
            result = poststack("db", "diagnose", "--format", "json", *common)
            reports.append(json.loads(result.stdout))

        times = timed(run, args.runs)
        small = write_history(Path(tempfile.mkdtemp(prefix="poststack-bench-")) / "migrations", 10)
        small_url = fresh_database(admin_url, "poststack_bench_diagnose_small")
        poststack("db", "migrate", "--database-url", small_url, "--migrations-dir", str(small))
        small_report = json.loads(
            poststack(
                "db", "diagnose", "--format", "json", "--database-url", small_url, "--migrations-dir", str(small)
            ).stdout
        )
        trips = reports[-1]["database_state"]["round_trips"]
        trips_small = small_report["database_state"]["round_trips"]
        print(f"machine: {machine()}")
        print(
            f"diagnose, {args.count} migrations / {args.count} tables: median {median(times):.3f} s "
            f"over {args.runs} runs (min {min(times):.3f}, max {max(times):.3f}); target < 2 s"
        )
        print(
            f"round trips: {trips} for {args.count} migrations, {trips_small} for 10 (constant: {trips == trips_small})"
        )
        print(f"issues found: {reports[-1]['total_issues']}")
    finally:
        stop()


if __name__ == "__main__":
    main()
