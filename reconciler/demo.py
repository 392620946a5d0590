"""poststack demo: a scratch database broken the ways the troubleshooting guide describes,
then diagnosed, planned and fixed by the real commands, and removed.

The breakage is done the way it happens in life (SQL run by hand, a file edited after it
shipped, a deploy killed while holding the lock, a retried script that recorded a
migration twice); the commands that find and fix it run as child processes, exactly as a
user would type them. Never prints: each step reaches the CLI as a DemoEvent.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg2

from reconciler import dsn
from reconciler.bundled import EXAMPLE_MIGRATIONS
from reconciler.config import Settings, TrackingLocation, masked_url
from reconciler.db import Session, open_raw, resolve_url
from reconciler.desired.layouts import load_migrations
from reconciler.errors import DatabaseUnavailable, OperationFailed
from reconciler.statements import Statement, quote_ident

DATABASE_PREFIX = "poststack_demo_"
EDIT = "-- Reviewed after release: email should become citext one day.\n"
# A later migration that replaces a function an earlier one made, as real histories do again
# and again: read as SQL alone, nothing shows whether it ran; replayed, PostgreSQL shows it.
_TOUCH = (
    "CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger\n"
    "LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "    NEW.updated_at := {};\n"
    "    RETURN NEW;\n"
    "END;\n"
    "$$;\n"
)
REPLACED_FUNCTION = {
    "006_touch_updated_at_clock.sql": "-- now() is the transaction's start: a long batch stamped every row alike.\n"
    + _TOUCH.format("clock_timestamp()"),
    "006_touch_updated_at_clock.rollback.sql": _TOUCH.format("now()"),
}
LOCK_WAIT_S = 30.0

# A deploy that takes the migration lock and is then killed: run as its own process, so the
# server sees its connection die exactly as it does when a CI runner is cancelled.
_LOCK_HOLDER = """
import sys, time
from reconciler.config import TrackingLocation
from reconciler.observed import locking
from reconciler.db import Session, open_raw
session = Session(open_raw(sys.argv[1]), sys.argv[1])
with locking.migration_lock(session, TrackingLocation(sys.argv[2], sys.argv[3]), 10):
    print(session.server_info().backend_pid, flush=True)
    time.sleep(600)
"""


@dataclass(frozen=True)
class CommandRun:
    argv: tuple[str, ...]  # as typed, starting with "poststack"
    output: str  # stdout and stderr as printed (a repeat of earlier output elided)
    exit_code: int


@dataclass(frozen=True)
class DemoEvent:
    kind: str  # "section": a heading; "note": what the demo did; "command": a poststack run
    text: str
    run: CommandRun | None = None


@dataclass(frozen=True)
class DemoResult:
    healthy: bool  # the last diagnose found nothing
    database: str  # the scratch database's URL, password masked
    kept: Path | None  # the workspace left behind with --keep


OnEvent = Callable[[DemoEvent], None]


def run_demo(
    settings: Settings, on_event: OnEvent, *, keep: bool = False, notify: Callable[[str], None] | None = None
) -> DemoResult:
    server_url = resolve_url(settings, notify)
    name = DATABASE_PREFIX + secrets.token_hex(4)
    url = scratch_url(server_url, name)  # built before anything is created
    _create_database(server_url, name)
    workspace: Path | None = None
    started = False  # --keep keeps a demo that ran, not a database it never got into
    try:
        _check_is_scratch(url, name)
        workspace = Path(tempfile.mkdtemp(prefix="poststack-demo-"))
        shutil.copytree(EXAMPLE_MIGRATIONS, workspace / "migrations")
        for file_name, text in REPLACED_FUNCTION.items():
            (workspace / "migrations" / file_name).write_text(text)
        started = True
        healthy = _Demo(url, workspace, on_event, settings.tracking).play()
    finally:
        if not (keep and started):
            _drop_database(server_url, name)
            if workspace is not None:
                shutil.rmtree(workspace, ignore_errors=True)
    return DemoResult(healthy, masked_url(url), workspace if keep else None)


class _Demo:
    def __init__(self, url: str, workspace: Path, on_event: OnEvent, location: TrackingLocation) -> None:
        self.url = url
        self.workspace = workspace
        self.on_event = on_event
        self.location = location  # where the tracking tables are: the commands are told too
        self.migrations = load_migrations(workspace / "migrations")

    def play(self) -> bool:
        self.section(
            f"A scratch database ({masked_url(self.url)}) and the example migrations in {self.workspace}/migrations"
        )
        self.poststack("db", "migrate", "--target", "001")

        self.section("Breaking it the ways the troubleshooting guide describes")
        by_hand = ("002", "003", "004", "005", "006")
        for version in by_hand:
            self.run_by_hand(version)
        self.note(
            f"Migrations {', '.join(by_hand)} were run by hand (psql -f), and never recorded (guide: Scenario 1). "
            "006 replaces a function 004 made."
        )
        path = self.workspace / "migrations" / self.migrations.find("001").path.name  # type: ignore[union-attr]
        path.write_text(path.read_text() + EDIT)
        self.note(f"migrations/{path.name} was edited after it was applied (guide: checksum mismatch).")
        self.record_twice("001")
        self.note("A retried deploy script recorded migration 001 twice (guide: duplicate versions).")
        pid = self.kill_lock_holder()
        self.note(
            f"A deploy holding the migration lock was killed with SIGKILL (its backend {pid} is gone; the lock row stays)."
        )
        self.poststack("db", "migration-status")
        self.poststack("db", "migrate", expect=(1,))

        self.section("Finding out what is wrong, planning the fix, applying it")
        self.note(
            "Read as SQL alone, 006 only replaces a function 004 made: nothing in the catalog's names shows "
            "whether it ran."
        )
        self.poststack("db", "diagnose", "--no-replay", "--type", "undetermined", expect=(1,))
        self.note(
            "Replayed in a scratch shadow database, PostgreSQL itself prints each migration's effect: the live "
            "function body is 006's, so 006 ran."
        )
        self.poststack("db", "diagnose", expect=(1,))
        plan = self.poststack("plan", "--out", "fix.plan.json")
        shown_plan = plan.output.rsplit("\nSaved to", 1)[0]
        self.poststack("apply", "fix.plan.json", "--auto-approve", "--confirm", repeats=shown_plan)

        self.section("Checking")
        self.poststack("db", "migrate")
        final = self.poststack("db", "diagnose", expect=(0, 1))
        self.poststack("db", "migration-status")
        return final.exit_code == 0

    # --- narration ------------------------------------------------------------------------

    def section(self, text: str) -> None:
        self.on_event(DemoEvent("section", text))

    def note(self, text: str) -> None:
        self.on_event(DemoEvent("note", text))

    def poststack(self, *args: str, expect: tuple[int, ...] = (0,), repeats: str = "") -> CommandRun:
        """Run ``poststack args`` as the user would. Output that begins by repeating ``repeats``
        (apply printing the plan it runs) is shown once, not twice."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTSTACK_") and k != "DATABASE_URL"}
        env |= {
            "POSTSTACK_DATABASE_URL": self.url,
            "POSTSTACK_SCHEMA": self.location.schema,
            "POSTSTACK_TABLE_PREFIX": self.location.prefix,
            "NO_COLOR": "1",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "reconciler.interface.cli", *args],
            cwd=self.workspace,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        output = (proc.stdout + proc.stderr).rstrip("\n")
        if repeats and output.startswith(repeats):
            output = "(prints the plan shown above, then runs it)\n" + output[len(repeats) :].lstrip("\n")
        run = CommandRun(("poststack", *args), output, proc.returncode)
        self.on_event(DemoEvent("command", " ".join(run.argv), run))
        if proc.returncode not in expect:
            raise OperationFailed(
                f"demo: poststack {' '.join(args)} exited {proc.returncode}, expected {' or '.join(map(str, expect))}",
                "Its output is above; please report this with it.",
            )
        return run

    # --- the breakage ---------------------------------------------------------------------

    def session(self) -> Session:
        return Session(open_raw(self.url), self.url)

    def run_by_hand(self, version: str) -> None:
        migration = self.migrations.find(version)
        assert migration is not None
        session = self.session()
        try:
            script = migration.file.script
            if script.transactional:
                with session.transaction():
                    for statement in script.statements:
                        session.run(Statement(statement.sql))
            else:  # CREATE INDEX CONCURRENTLY and the like: psql runs them one by one too
                for statement in script.statements:
                    session.run(Statement(statement.sql))
        finally:
            session.close()

    def record_twice(self, version: str) -> None:
        table = self.location.migrations_sql
        columns = "version, description, checksum, checksum_algorithm, execution_ms, success, error, transactional"
        session = self.session()
        try:
            session.query(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table} WHERE version = %s AND success",
                (version,),
            )
        finally:
            session.close()

    def kill_lock_holder(self) -> int:
        holder = subprocess.Popen(
            [sys.executable, "-c", _LOCK_HOLDER, self.url, self.location.schema, self.location.prefix],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        try:
            line = holder.stdout.readline() if holder.stdout else ""
            if not line.strip().isdigit():
                raise OperationFailed(
                    f"demo: the process meant to hold the lock did not take it: {holder.stderr.read() if holder.stderr else ''}".strip()
                )
            backend = int(line)
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        self._wait_for_backend_to_end(backend)
        return backend

    def _wait_for_backend_to_end(self, backend: int) -> None:
        """The server notices a killed client when its socket closes; wait for that, so the
        lock row's holder is really gone when diagnose looks."""
        session = self.session()
        try:
            deadline = time.monotonic() + LOCK_WAIT_S
            while session.query_one("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)):
                if time.monotonic() > deadline:
                    raise OperationFailed(
                        f"demo: backend {backend} was still alive {LOCK_WAIT_S:.0f}s after its client was killed"
                    )
                time.sleep(0.05)
        finally:
            session.close()


# --- the scratch database -------------------------------------------------------------------


def scratch_url(server_url: str, name: str) -> str:
    """The server's URL with the database ``name``, rebuilt from libpq's own reading of it,
    so nothing in the original (a ``?dbname=``, a host list) can point elsewhere."""
    keywords = {k: v for k, v in dsn.parse(server_url).items() if k != "dbname"}
    return f"postgresql:///{quote(name)}" + (f"?{urlencode(keywords, safe='/', quote_via=quote)}" if keywords else "")


def _check_is_scratch(url: str, name: str) -> None:
    session = Session(open_raw(url), url)
    try:
        database = session.server_info().database
    finally:
        session.close()
    if database != name:
        raise OperationFailed(f"demo: {masked_url(url)} reaches database {database}, not the scratch database {name}")


def _create_database(server_url: str, name: str) -> None:
    session = Session(open_raw(server_url), server_url)
    try:
        session.query(f"CREATE DATABASE {quote_ident(name)}")
    except psycopg2.errors.InsufficientPrivilege as e:
        raise DatabaseUnavailable(
            f"the demo cannot create its scratch database on {masked_url(server_url)}: permission denied",
            "Run it on the embedded server (no --database-url), or as a role with CREATEDB.",
        ) from e
    finally:
        session.close()


def _drop_database(server_url: str, name: str) -> None:
    session = Session(open_raw(server_url), server_url)
    try:
        if session.server_info().major >= 13:
            session.query(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        else:
            session.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            session.query(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
    finally:
        session.close()
