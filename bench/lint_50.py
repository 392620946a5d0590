"""Benchmark: db lint of 50 pending migrations, shadow replay included, against replaying them once.

Target (issue 15): "Lint of 50 pending migrations, shadow replay included, stays within 2× of
replaying them once." A benchmark, not a timed test.

    python -m bench.lint_50 [--runs 5] [--count 350] [--pending 50] [--seed 13] [--phases] [--profile]

The history is bench/replay_350.py's churny one (tables that grow and churn, views made
again around column changes, functions revised, enums grown, indexes, some built
CONCURRENTLY, seeds and backfills that give the tables rows): its first ``count - pending``
migrations are applied with ``poststack db migrate --target``, the last ``pending`` are
pending. The target is set up once: lint only reads it.

What is timed, each as a whole process, medians over ``--runs``:

(a) ``poststack db lint --format json`` over the pending migrations. It replays the applied
    prefix into a scratch database on the target's server and runs the pending ones there
    statement by statement, reading each one's locks, relfilenodes and scan counts before
    it commits; then it sizes the relations on the target and runs the rules.
(b) "Replaying them once", the floor: psql running the same history, prefix and pending
    migrations alike, once into a fresh database: one session, each file in its own
    transaction (``BEGIN; \\i file; COMMIT;``; files marked ``-- poststack:no-transaction``
    outside one), ``psql -X -q -v ON_ERROR_STOP=1 -f script``. To measure the pending
    migrations, lint must first bring its shadow to the state before them, so the whole
    history is what "replaying them" costs. Two ways, both shown:
    (b1) the database made beforehand, untimed (as bench/replay_350.py's floor): the least
         PostgreSQL needs for the history; the target is judged against this one;
    (b2) into a scratch database made and dropped in the timing, as lint makes its own:
         ``CREATE DATABASE ... TEMPLATE template0`` with ``synchronous_commit = off``, the
         history, ``DROP DATABASE``: three psql processes.
(c) A second reference: poststack's own cold replay of the same history,
    ``poststack db diagnose --type missing_tracking --format json`` on the target with its
    replay cache removed (it replays every migration into a scratch database and reads the
    catalog after each; with only that type asked, it does not lint the pending ones too).

Also shown, to say where lint's time goes: psql running only the pending migrations on a
database where psql ran the prefix (their own cost: the part lint watches statement by
statement), and ``poststack db lint --no-replay`` (the same command without a shadow: start-up,
files, the target's reads, rules). --phases times lint's parts with wrapped functions (no
profiler); --profile runs one lint under cProfile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    compile_package,
    fresh_database,
    machine,
    median,
    poststack_argv,
    run_psql_script,
    server_url,
)
from bench.replay_350 import apply_with_psql, psql_script, server_settings, write_churny_history
from bench.replay_350 import psql_bin as psql_path

TARGET = 2.0  # × replaying the history once


def _env() -> dict[str, str]:
    """The bench's environment, without a database or shadow of the caller's: each command names its own."""
    return {k: v for k, v in os.environ.items() if k not in ("POSTSTACK_DATABASE_URL", "POSTSTACK_SHADOW_DATABASE_URL")}


def _run(argv: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall time of one whole process; exit 0 or 1 (findings) expected."""
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(), cwd=cwd)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv[1:3])} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return elapsed, proc


def lint(url: str, directory: Path, *extra: str) -> tuple[float, dict]:
    argv = poststack_argv("db", "lint", "--format", "json", "--database-url", url, "--migrations-dir", str(directory))
    elapsed, proc = _run([*argv, *extra], directory.parent)
    return elapsed, json.loads(proc.stdout)


def diagnose_cold(url: str, directory: Path) -> tuple[float, dict]:
    shutil.rmtree(directory.resolve().parent / ".poststack" / "replay", ignore_errors=True)
    argv = poststack_argv(
        "db",
        "diagnose",
        "--type",
        "missing_tracking",
        "--format",
        "json",
        "--database-url",
        url,
        "--migrations-dir",
        str(directory),
    )
    elapsed, proc = _run(argv, directory.parent)
    return elapsed, json.loads(proc.stdout)


def psql_into_scratch(admin: str, name: str, script: Path, work: Path) -> float:
    """(b2): seconds for three psql processes: make a scratch database as lint makes its own,
    run ``script`` in it, drop it."""
    from sqlalchemy.engine import make_url

    create, drop = work / f"{name}.create.psql", work / f"{name}.drop.psql"
    create.write_text(
        f'DROP DATABASE IF EXISTS "{name}";\nCREATE DATABASE "{name}" TEMPLATE template0;\n'
        f'ALTER DATABASE "{name}" SET synchronous_commit = off;\n'
    )
    drop.write_text(f'DROP DATABASE "{name}";\n')
    url = make_url(admin).set(database=name).render_as_string(hide_password=False).replace("+psycopg2", "")
    psql = psql_path()
    return (
        run_psql_script(psql, admin, create) + run_psql_script(psql, url, script) + run_psql_script(psql, admin, drop)
    )


@dataclass
class Result:
    lint: list[float]
    psql_history: list[float]  # (b1): the whole history once, into a fresh database made beforehand
    psql_scratch: list[float]  # (b2): the same, the scratch database made and dropped in the timing
    diagnose: list[float]  # (c): poststack's cold replay
    psql_pending: list[float]  # only the pending migrations, on the prefix
    no_replay: list[float]  # lint without a shadow
    report: dict  # the last lint's JSON
    replay: dict  # the last diagnose's replay summary
    server: str

    @property
    def ratio(self) -> float:
        return median(self.lint) / median(self.psql_history)

    @property
    def ratio_scratch(self) -> float:
        return median(self.lint) / median(self.psql_scratch)

    @property
    def ratio_diagnose(self) -> float:
        return median(self.lint) / median(self.diagnose)

    @property
    def paired(self) -> list[float]:
        """lint / psql within each run (measured back to back: steadier on a busy machine)."""
        return [a / b for a, b in zip(self.lint, self.psql_history, strict=True)]

    @property
    def passed(self) -> bool:
        return self.ratio <= TARGET


def measure(admin: str, work: Path, runs: int, count: int, pending: int, seed: int) -> tuple[Result, str, Path]:
    project = work / "project"
    directory = project / "migrations"
    history = write_churny_history(directory, count, seed)
    prefix, rest = history[: count - pending], history[count - pending :]
    last_applied = prefix[-1][0].name.split("_", 1)[0]
    whole = psql_script(history, work / "history.psql")
    prefix_script = psql_script(prefix, work / "prefix.psql")
    pending_script = psql_script(rest, work / "pending.psql")

    target = fresh_database(admin, "poststack_bench_lint50_target")
    _run(
        poststack_argv(
            "db", "migrate", "--target", last_applied, "--database-url", target, "--migrations-dir", str(directory)
        ),
        project,
    )
    lint(target, directory)  # once, unmeasured: the server's caches warm as for the floor's first run

    times: dict[str, list[float]] = {k: [] for k in ("lint", "psql", "scratch", "diagnose", "pending", "no_replay")}
    report: dict = {}
    diagnosed: dict = {}
    for i in range(runs):  # alternating, so that a busy moment falls on all of them alike
        times["psql"].append(apply_with_psql(fresh_database(admin, f"poststack_bench_lint50_psql_{i}"), whole))
        elapsed, report = lint(target, directory)
        times["lint"].append(elapsed)
        times["scratch"].append(psql_into_scratch(admin, f"poststack_bench_lint50_scratch_{i}", whole, work))
        elapsed, diagnosed = diagnose_cold(target, directory)
        times["diagnose"].append(elapsed)
        scratch = fresh_database(admin, f"poststack_bench_lint50_pending_{i}")
        apply_with_psql(scratch, prefix_script)
        times["pending"].append(apply_with_psql(scratch, pending_script))
        times["no_replay"].append(lint(target, directory, "--no-replay")[0])
    replay = diagnosed.get("database_state", {}).get("replay") or diagnosed.get("replay") or {}
    result = Result(
        times["lint"],
        times["psql"],
        times["scratch"],
        times["diagnose"],
        times["pending"],
        times["no_replay"],
        report,
        replay,
        server_settings(admin),
    )
    return result, target, directory


PHASES = """
import contextlib, json, sys, time
from reconciler.desired.replay import measure, replay, source
from reconciler.diagnosis import linting
from reconciler.diagnosis.lint import engine
from reconciler.observed import sizes, tracking
from reconciler.desired import layouts
from reconciler.interface.cli import main

out, sys.argv = sys.argv[1], ["poststack", *sys.argv[2:]]
phases = {}

def add(name, started):
    count, total = phases.get(name, (0, 0.0))
    phases[name] = (count + 1, total + time.perf_counter() - started)

def timed(name, fn):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            add(name, started)
    return wrapper

def wrap(owner, attribute, name, *also):
    if hasattr(owner, attribute):  # the tree moves on: time what is there
        wrapped = timed(name, getattr(owner, attribute))
        for module in (owner, *also):
            if hasattr(module, attribute):
                setattr(module, attribute, wrapped)

wrap(layouts, "load_migrations", "load_migrations (read the files)", linting)
wrap(tracking, "observe_tracking", "observe_tracking (the target's tracking rows)", linting)
wrap(source, "choose_shadow", "choose_shadow (can the role make a scratch database?)")
wrap(source, "measure", "measure (the whole shadow run, scratch database included)")
scratch = source.scratch_session

@contextlib.contextmanager
def scratch_session(url):
    started = time.perf_counter()
    manager = scratch(url)
    session = manager.__enter__()
    add("  scratch database: create and connect", started)
    try:
        yield session
    finally:
        started = time.perf_counter()
        manager.__exit__(None, None, None)
        add("  scratch database: drop", started)

source.scratch_session = scratch_session
wrap(replay, "run_batched", "  prefix: run_batched (one round trip per migration)", measure)
wrap(replay, "run_migration", "  prefix: run_migration (statement by statement)", measure)
wrap(measure._Watched, "run", "  pending: _Watched.run (a migration, watched)")
wrap(measure._Watched, "_state", "    of which _Watched._state (statement + read, a round trip)")
wrap(measure, "_documented_relation", "    of which _documented_relation (pglast)")
wrap(engine, "contexts", "contexts (pglast JSON parse, per statement)", linting)
wrap(sizes, "relation_sizes", "relation_sizes (the target)", linting)
wrap(engine, "lint", "lint (the rules)", linting)
wrap(engine, "file_ignores", "file_ignores", linting)
wrap(linting, "session_search_path", "session_search_path (the target)")
started = time.perf_counter()
try:
    main()
except SystemExit:
    pass
finally:
    phases["lint in-process (no interpreter start-up)"] = (1, time.perf_counter() - started)
    with open(out, "w") as f:
        json.dump(phases, f)
"""


def lint_phases(url: str, directory: Path, out: Path) -> tuple[float, dict]:
    """One lint with its parts timed: the whole process's time, and {name: (calls, seconds)}."""
    compile_package()
    argv = [sys.executable, "-c", PHASES, str(out), "db", "lint", "--format", "json"]
    argv += ["--database-url", url, "--migrations-dir", str(directory)]
    elapsed, _ = _run(argv, directory.parent)
    return elapsed, json.loads(out.read_text())


def print_phases(elapsed: float, phases: dict) -> None:
    print(f"\nwhere one lint goes ({elapsed:.2f} s as a process):")
    for name, (calls, seconds) in phases.items():
        print(f"  {name:62} {seconds:7.3f} s  {calls:5d} calls  {seconds / calls * 1000:8.2f} ms each")
    inside = phases.get("lint in-process (no interpreter start-up)", (1, 0.0))[1]
    print(f"  {'interpreter start-up and imports (the rest)':62} {elapsed - inside:7.3f} s")


def profile(url: str, directory: Path, out: Path) -> None:
    """One lint in-process under cProfile (-m cProfile -m breaks typer's hints); the top 35 by cumulative time."""
    import pstats

    wrapper = (
        "import cProfile, sys\nfrom reconciler.interface.cli import main\n"
        "out = sys.argv[1]\nsys.argv = ['poststack', *sys.argv[2:]]\nprofiler = cProfile.Profile()\n"
        "try:\n    profiler.runcall(main)\nexcept SystemExit:\n    pass\nfinally:\n    profiler.dump_stats(out)\n"
    )
    argv = [sys.executable, "-c", wrapper, str(out), "db", "lint", "--format", "json"]
    _run([*argv, "--database-url", url, "--migrations-dir", str(directory)], directory.parent)
    print(f"\ncProfile of one lint ({out}), by cumulative time:")
    pstats.Stats(str(out)).sort_stats("cumulative").print_stats(35)
    print("by own time:")
    pstats.Stats(str(out)).sort_stats("tottime").print_stats(15)


def _s(values: list[float]) -> str:
    return f"median {median(values):.2f} s, min {min(values):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=350, help="migrations in the history")
    parser.add_argument("--pending", type=int, default=50, help="of them, the last ones left pending")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--phases", action="store_true", help="also time lint's parts (wrapped functions)")
    parser.add_argument("--profile", action="store_true", help="also profile one lint (cProfile)")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    admin, stop = server_url()
    work = Path(tempfile.mkdtemp(prefix="poststack-bench-"))
    try:
        r, target, directory = measure(admin, work, args.runs, args.count, args.pending, args.seed)
        if args.phases:
            print_phases(*lint_phases(target, directory, work / "phases.json"))
        if args.profile:
            profile(target, directory, work / "lint.prof")
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)

    report = r.report
    measured = report["measured"]
    stopped = measured["stopped_at"]
    by_code: dict[str, int] = {}
    for finding in report["findings"]:
        by_code[finding["code"]] = by_code.get(finding["code"], 0) + 1
    print(f"machine: {machine()}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"server: {r.server}")
    print(
        f"history: {args.count} migrations (seed {args.seed}), the first {args.count - args.pending} applied with "
        f"poststack db migrate --target, the last {args.pending} pending; {args.runs} runs, whole processes"
    )
    print(
        f"lint: {len(report['versions'])} migrations, {report['statements']} statements linted, "
        f"{len(measured['statements'])} measured in {measured['shadow']}"
        + (f"; STOPPED at {stopped['version']}: {stopped['reason']}" if stopped else "")
        + (f"; unavailable: {measured['unavailable']}" if measured["unavailable"] else "")
        + "; findings: "
        + (", ".join(f"{code} {n}" for code, n in sorted(by_code.items())) or "none")
    )
    print(
        '"replaying them once": psql running the whole history (prefix and pending) once, one session, each\n'
        "  file in its own transaction: lint must bring its shadow to the state before the pending migrations\n"
        "  before it can watch them. (b1) into a database made beforehand, untimed (the target is judged\n"
        "  against this); (b2) the scratch database made (TEMPLATE template0, synchronous_commit off, as\n"
        "  lint's) and dropped within the timing."
    )
    verdict = {True: "pass", False: "FAIL"}
    print(f"(b1) psql, whole history once:                 {_s(r.psql_history)}")
    print(f"(b2) the same, scratch database made and dropped: {_s(r.psql_scratch)}")
    print(f"(c)  poststack db diagnose, cold replay:        {_s(r.diagnose)}  ({_replayed(r.replay)})")
    print(f"(a)  poststack db lint, {args.pending} pending:             {_s(r.lint)}")
    print(
        f"     = {r.ratio:.2f}× (b1) (target ≤ {TARGET:g}×: {verdict[r.passed]}); "
        f"{r.ratio_scratch:.2f}× (b2) ({verdict[r.ratio_scratch <= TARGET]}); {r.ratio_diagnose:.2f}× (c)"
    )
    print(f"     lint / (b1) within each run: {', '.join(f'{x:.2f}×' for x in r.paired)}")
    print(f"where it goes: psql, only the {args.pending} pending on the prefix: {_s(r.psql_pending)}")
    print(f"               poststack db lint --no-replay:        {_s(r.no_replay)}")


def _replayed(replay: dict) -> str:
    if not replay:
        return "no replay in the report"
    return f"replayed {replay.get('replayed')}, from cache {replay.get('from_cache')}"


if __name__ == "__main__":
    main()
