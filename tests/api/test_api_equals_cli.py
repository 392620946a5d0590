"""reconciler.api does what the CLI does: each verb run both ways from the same state, and the
two results' JSON compared.

The CLI runs in-process (typer's CliRunner) with ``--format json``; the API's result is
rendered by the JSON view the CLI's command hands to ``_emit`` (reconciler/interface/cli.py).
Both start from one state: the database is copied to a snapshot database (``CREATE DATABASE
... TEMPLATE``) and the project directory (the migrations and the ``.poststack`` caches beside
them) to a saved directory; the CLI runs; both are put back exactly as they were, under the
same names; then the API runs. So tracking rows, their timestamps, the lock row and the replay
cache are the same for both, and only what a run itself makes up differs: ``volatile`` below
says what, and why.

Each side's end state is compared as well (the catalog and the rows of every table), so that
an API that reported the CLI's result while doing something else would not pass.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from reconciler import api
from reconciler.config import mask_url
from reconciler.errors import LockTimeout, PoststackError
from reconciler.interface import report
from tests.conftest import _CLEAN_ENV, Result, Server, catalog_snapshot, run_cli, scratch_database, sql, write
from tests.integration.test_json_output import BAD_MIGRATION
from tests.integration.test_remediation import apply_by_hand, dead_lock_row

Json = dict[str, Any]
EndState = tuple[list[tuple[str, str, str]], list[tuple[Any, ...]]]

# Kept beside the migrations (config.py, observed/state.py, desired/replay/source.py): the
# effects and replay caches. A warm cache is reported ("from_cache", "reused_states"), so each
# side starts with the cache as it was, not with the one the other side just filled.
PROJECT_ENTRIES = ("migrations", ".poststack")


@pytest.fixture(autouse=True)
def _no_configured_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # run_cli clears these for the CLI; the API reads the same environment and project files,
    # so it gets the same empty environment and the same working directory.
    for name in _CLEAN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


# --- one state, run twice -----------------------------------------------------------------------


@dataclass
class Twin:
    """The test database and its project, saved before the CLI runs and put back for the API."""

    server: Server
    url: str
    migrations_dir: Path
    saved_dir: Path
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    snapshot: str | None = None

    @property
    def name(self) -> str:
        name = make_url(self.url).database
        assert name
        return name

    def _admin(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.server.admin_url)
        conn.autocommit = True
        return conn

    def _close_sessions(self, admin: psycopg2.extensions.connection, database: str) -> None:
        # CREATE DATABASE ... TEMPLATE needs its template without sessions; the tests' own are
        # closed before saving, and poststack closes its own, but the server may not have seen
        # every disconnection yet.
        sql(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))

    def save(self) -> None:
        self.stack.close()
        self.stack = contextlib.ExitStack()
        admin = self._admin()
        try:
            self._close_sessions(admin, self.name)
        finally:
            admin.close()
        self.snapshot = make_url(self.stack.enter_context(scratch_database(self.server, "apicli", self.name))).database
        shutil.rmtree(self.saved_dir, ignore_errors=True)
        self.saved_dir.mkdir(parents=True)
        for entry in PROJECT_ENTRIES:
            if (self.migrations_dir.parent / entry).exists():
                shutil.copytree(self.migrations_dir.parent / entry, self.saved_dir / entry, symlinks=True)

    def restore(self) -> None:
        assert self.snapshot is not None, "save() first"
        admin = self._admin()
        try:
            sql(admin, f'DROP DATABASE "{self.name}" WITH (FORCE)')
            self._close_sessions(admin, self.snapshot)
            sql(admin, f'CREATE DATABASE "{self.name}" TEMPLATE "{self.snapshot}"')
        finally:
            admin.close()
        for entry in PROJECT_ENTRIES:
            shutil.rmtree(self.migrations_dir.parent / entry, ignore_errors=True)
            if (self.saved_dir / entry).exists():
                shutil.copytree(self.saved_dir / entry, self.migrations_dir.parent / entry, symlinks=True)

    def end_state(self) -> EndState:
        """The catalog, the number of rows of every table, and the tracking rows themselves."""
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        try:
            rows: list[tuple[Any, ...]] = []
            if sql(conn, "SELECT to_regclass('public.schema_migrations') IS NOT NULL") == [(True,)]:
                rows = sql(
                    conn,
                    "SELECT version, description, checksum, success, error FROM public.schema_migrations "
                    "ORDER BY version, success, id",
                )
                rows += sql(conn, "SELECT locked, locked_by, backend_pid FROM public.schema_migrations_lock")
            return catalog_snapshot(conn), rows
        finally:
            conn.close()


@pytest.fixture
def twin(
    pg_server: Server, database_url: str, migrations_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Twin]:
    saved = tmp_path_factory.mktemp("saved-project")
    state = Twin(pg_server, database_url, migrations_dir, saved)
    yield state
    state.stack.close()


@pytest.fixture
def arrange(twin: Twin) -> Callable[..., Result]:
    """poststack on the test database, to arrange a state (not compared)."""

    def invoke(*args: str) -> Result:
        return run_cli(*args, "--database-url", twin.url, "--migrations-dir", str(twin.migrations_dir))

    return invoke


def cli_run(twin: Twin, *args: str) -> Result:
    return run_cli(*args, "--database-url", twin.url, "--migrations-dir", str(twin.migrations_dir), "--format", "json")


@dataclass(frozen=True)
class Runs:
    """One verb run both ways from one state: each side's JSON, and the database it left."""

    from_cli: Json
    from_api: Json
    cli_left: EndState
    api_left: EndState

    def assert_same_end_state(self) -> None:
        assert self.api_left == self.cli_left, "the API left the database otherwise than the CLI"


def both(twin: Twin, cli_args: tuple[str, ...], call: Callable[[], Any], render: Callable[[Any], str]) -> Runs:
    """The CLI's JSON and the API's, each from the state the test arranged."""
    twin.save()
    result = cli_run(twin, *cli_args)
    # 0, or 1 (EXIT_PROBLEMS) when the result is not ok: either way the result was printed.
    assert result.exit_code in (0, 1) and result.stdout, result.output
    cli_left = twin.end_state()
    twin.restore()
    from_api = json.loads(render(call()))
    return Runs(json.loads(result.stdout), from_api, cli_left, twin.end_state())


# --- what is volatile ---------------------------------------------------------------------------

VOLATILE = "<volatile>"
# A held lock's age, in a stuck lock's message ("... application poststack, age 3s, not alive)").
LOCK_AGE = re.compile(r"\bage \d+s\b")


def volatile(data: Any, *, aged_lock: bool = False) -> Any:
    """The JSON with what differs from one run to the next, whoever runs it, replaced.
    ``aged_lock``: the plan behind the result diagnosed a held lock (see ``hash`` below)."""
    if isinstance(data, list):
        return [volatile(item, aged_lock=aged_lock) for item in data]
    if isinstance(data, str):
        return LOCK_AGE.sub(f"age {VOLATILE}", data)
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        if key in ("elapsed_ms", "elapsed_s") and value is not None:
            # How long a step (elapsed_ms, per outcome) or the run (elapsed_s) took: wall-clock time.
            out[key] = VOLATILE
        elif key == "age_seconds" and value is not None:
            # A held lock's age: now() - locked_at when the run reads the lock row. The row is the
            # same for both sides (the restored database keeps its locked_at); the reading time is not.
            out[key] = VOLATILE
        elif key in ("hash", "plan_hash") and aged_lock:
            # A plan's hash covers its issues (plan.py, Plan.hash), and with a held lock they carry
            # its age (above). Only where the plan diagnosed a held lock; everywhere else the hash
            # is compared as it is.
            out[key] = VOLATILE
        else:
            out[key] = volatile(value, aged_lock=aged_lock)
    return out


def assert_same(from_cli: Json, from_api: Json, *, aged_lock: bool = False) -> None:
    cli_text = json.dumps(volatile(from_cli, aged_lock=aged_lock), indent=2, sort_keys=True)
    api_text = json.dumps(volatile(from_api, aged_lock=aged_lock), indent=2, sort_keys=True)
    diff = "\n".join(difflib.unified_diff(cli_text.splitlines(), api_text.splitlines(), "cli", "api", lineterm=""))
    assert cli_text == api_text, f"the API's result differs from the CLI's:\n{diff}"


def same(
    twin: Twin,
    cli_args: tuple[str, ...],
    call: Callable[[], Any],
    render: Callable[[Any], str],
    *,
    aged_lock: bool = False,
) -> Json:
    """Run both ways; assert the JSON and the end state are the same; the CLI's JSON, for the
    test's own checks."""
    runs = both(twin, cli_args, call, render)
    assert_same(runs.from_cli, runs.from_api, aged_lock=aged_lock)
    runs.assert_same_end_state()
    return runs.from_cli


def same_error(twin: Twin, cli_args: tuple[str, ...], call: Callable[[], Any]) -> PoststackError:
    """A refusal is no result: the CLI prints no JSON, the error on stderr, and exits with its
    code; the API raises that error."""
    twin.save()
    result = cli_run(twin, *cli_args)
    after_cli = twin.end_state()
    twin.restore()
    with pytest.raises(PoststackError) as caught:
        call()
    error = caught.value
    assert result.stdout == "" and result.exit_code == error.exit_code, result.output
    # As cli._guard prints it.
    said = [f"❌ {mask_url(error.summary)}", *([f"   {mask_url(error.detail)}"] if error.detail else [])]
    assert volatile("\n".join(said)) in volatile(result.stderr), f"{said} not in:\n{result.stderr}"
    assert twin.end_state() == after_cli, "the API left the database otherwise than the CLI"
    return error


def plan_json(reviewed: Any) -> str:
    """poststack plan --format json renders the reviewed plan so (cli.py, plan_command)."""
    return report.remediation_plan_json(reviewed.plan, reviewed.lint)


# --- the verbs ------------------------------------------------------------------------------------


def status_same(twin: Twin) -> Json:
    return same(
        twin,
        ("db", "migration-status"),
        lambda: api.status(twin.url, migrations_dir=twin.migrations_dir),
        report.status_json,
    )


def test_status_fresh_partly_and_fully_migrated(twin: Twin, arrange: Callable[..., Result]) -> None:
    fresh = status_same(twin)
    assert fresh["tracking_exists"] is False and fresh["pending_count"] == 5
    assert arrange("db", "migrate", "--target", "002").exit_code == 0
    partly = status_same(twin)
    assert partly["current_version"] == "002" and partly["pending_count"] == 3
    assert arrange("db", "migrate").exit_code == 0
    full = status_same(twin)
    assert full["up_to_date"] is True and full["applied_count"] == 5


def test_migrate_dry_run_on_a_fresh_database(twin: Twin) -> None:
    data = same(
        twin,
        ("db", "migrate", "--dry-run"),
        lambda: api.migrate(twin.url, migrations_dir=twin.migrations_dir, dry_run=True),
        report.run_json,
    )
    versions = [step["version"] for step in data["plan"]["steps"] if step["action"] == "apply_migration"]
    assert data["dry_run"] is True and versions == ["001", "002", "003", "004", "005"] and data["outcomes"] == []


def test_migrate_a_fresh_database(twin: Twin) -> None:
    data = same(
        twin,
        ("db", "migrate"),
        lambda: api.migrate(twin.url, migrations_dir=twin.migrations_dir),
        report.run_json,
    )
    assert data["ok"] is True and [o["version"] for o in data["outcomes"]] == ["001", "002", "003", "004", "005"]
    # And once everything is applied: nothing to do, said the same way.
    again = same(
        twin,
        ("db", "migrate"),
        lambda: api.migrate(twin.url, migrations_dir=twin.migrations_dir),
        report.run_json,
    )
    assert again["outcomes"] == [] and again["plan"]["nothing_to_do"]


def test_migrate_to_a_target_then_the_rest(twin: Twin) -> None:
    data = same(
        twin,
        ("db", "migrate", "--target", "003"),
        lambda: api.migrate(twin.url, migrations_dir=twin.migrations_dir, target="003"),
        report.run_json,
    )
    assert [o["version"] for o in data["outcomes"]] == ["001", "002", "003"]
    rest = same(
        twin,
        ("db", "migrate"),
        lambda: api.migrate(twin.url, migrations_dir=twin.migrations_dir),
        report.run_json,
    )
    assert [o["version"] for o in rest["outcomes"]] == ["004", "005"]


def test_rollback_dry_run_and_for_real(twin: Twin, arrange: Callable[..., Result]) -> None:
    assert arrange("db", "migrate").exit_code == 0
    planned = same(
        twin,
        ("db", "rollback", "002", "--dry-run"),
        lambda: api.rollback(twin.url, "002", migrations_dir=twin.migrations_dir, dry_run=True),
        report.run_json,
    )
    assert planned["dry_run"] is True and [s["version"] for s in planned["plan"]["steps"]] == ["005", "004", "003"]
    done = same(
        twin,
        ("db", "rollback", "002"),
        lambda: api.rollback(twin.url, "002", migrations_dir=twin.migrations_dir),
        report.run_json,
    )
    assert done["ok"] is True and [o["version"] for o in done["outcomes"]] == ["005", "004", "003"]
    assert status_same(twin)["current_version"] == "002"


def test_a_failing_migration(twin: Twin, arrange: Callable[..., Result]) -> None:
    assert arrange("db", "migrate", "--target", "004").exit_code == 0
    write(twin.migrations_dir, "006_widgets.sql", BAD_MIGRATION)
    failed = same(
        twin,
        ("db", "migrate"),
        lambda: api.migrate(twin.url, migrations_dir=twin.migrations_dir),
        report.run_json,
    )
    assert failed["ok"] is False and failed["failure"]["version"] == "006" and failed["failure"]["sqlstate"] == "42P01"
    assert [o["outcome"] for o in failed["outcomes"]] == ["ok", "failed"]
    status = status_same(twin)
    assert status["failed_count"] == 1 and status["failed"][0]["version"] == "006"


# --- the guide's broken databases: diagnose, plan, apply -----------------------------------------


def diagnose_plan_apply(twin: Twin, *, aged_lock: bool = False) -> tuple[Json, Json, Json]:
    """The guide's way out, both ways at each step: diagnose, plan, then apply (approved in
    advance, as the API's call is)."""
    diagnosed = same(
        twin,
        ("db", "diagnose"),
        lambda: api.diagnose(twin.url, migrations_dir=twin.migrations_dir),
        report.diagnosis_json,
    )
    planned = same(
        twin,
        ("plan",),
        lambda: api.plan(twin.url, migrations_dir=twin.migrations_dir),
        plan_json,
        aged_lock=aged_lock,
    )
    assert planned["destructive"] is False  # else apply needs --confirm / confirm=True
    applied = same(
        twin,
        ("apply", "--auto-approve"),
        lambda: api.apply(twin.url, migrations_dir=twin.migrations_dir),
        report.apply_json,
        aged_lock=aged_lock,
    )
    return diagnosed, planned, applied


def issue_types(diagnosed: Json) -> set[str]:
    return {issue["type"] for issue in diagnosed["issues"]}


def test_applied_by_hand_and_never_tracked(
    twin: Twin, arrange: Callable[..., Result], db: psycopg2.extensions.connection
) -> None:
    assert arrange("db", "migrate", "--target", "001").exit_code == 0
    apply_by_hand(db, twin.migrations_dir, "002", "003", "004")
    db.close()
    diagnosed, planned, applied = diagnose_plan_apply(twin)
    assert "missing_tracking" in issue_types(diagnosed)
    assert planned["steps"] and applied["ok"] is True and applied["remaining_issues"] == []


def test_lost_tracking_is_held_by_migrate_then_recovered(
    twin: Twin, arrange: Callable[..., Result], db: psycopg2.extensions.connection
) -> None:
    assert arrange("db", "migrate").exit_code == 0
    sql(db, "DELETE FROM schema_migrations WHERE version >= '003'")  # the tracking is lost
    db.close()
    held = same_error(twin, ("db", "migrate"), lambda: api.migrate(twin.url, migrations_dir=twin.migrations_dir))
    assert isinstance(held, api.MigrationsHeld) and held.versions == ("003", "004", "005")
    data = same(
        twin,
        ("db", "recover"),
        lambda: api.recover(twin.url, migrations_dir=twin.migrations_dir),
        report.fix_result_json,
    )
    tracked = [step["version"] for step in data["plan"]["steps"] if step["action"] == "track_migration"]
    assert data["ok"] is True and tracked == ["003", "004", "005"]


def test_an_edited_file(twin: Twin, arrange: Callable[..., Result]) -> None:
    assert arrange("db", "migrate").exit_code == 0
    path = twin.migrations_dir / "002_add_user_table.sql"
    path.write_text(path.read_text() + "\n-- a comment added after deploy\n")
    diagnosed, _, applied = diagnose_plan_apply(twin)
    assert "checksum_mismatch" in issue_types(diagnosed)
    assert applied["ok"] is True and applied["remaining_issues"] == []


def test_a_stale_lock_left_by_a_crashed_deploy(
    twin: Twin, arrange: Callable[..., Result], db: psycopg2.extensions.connection
) -> None:
    assert arrange("db", "migrate", "--target", "004").exit_code == 0
    dead_lock_row(db)
    db.close()
    # migrate refuses the dead run's lock: an error both ways, not a result.
    refused = same_error(twin, ("db", "migrate"), lambda: api.migrate(twin.url, migrations_dir=twin.migrations_dir))
    assert isinstance(refused, LockTimeout) and "migration system is locked" in refused.summary
    diagnosed, _, applied = diagnose_plan_apply(twin, aged_lock=True)
    assert "stuck_lock" in issue_types(diagnosed)
    assert applied["ok"] is True and applied["remaining_issues"] == []


def test_duplicate_tracking_rows(
    twin: Twin, arrange: Callable[..., Result], db: psycopg2.extensions.connection
) -> None:
    assert arrange("db", "migrate").exit_code == 0
    sql(
        db,
        "INSERT INTO schema_migrations (version, description, checksum, success) "
        "SELECT version, description, checksum, true FROM schema_migrations WHERE version = '002'",
    )
    db.close()
    diagnosed, _, applied = diagnose_plan_apply(twin)
    assert "duplicate_version" in issue_types(diagnosed)
    assert applied["ok"] is True and applied["remaining_issues"] == []


def test_failed_rows(twin: Twin, arrange: Callable[..., Result]) -> None:
    assert arrange("db", "migrate", "--target", "001").exit_code == 0
    path = twin.migrations_dir / "002_add_user_table.sql"
    good = path.read_text()
    path.write_text(good + "\nINSERT INTO nosuch VALUES (1);\n")
    assert arrange("db", "migrate").exit_code == 1
    path.write_text(good)
    diagnosed, _, applied = diagnose_plan_apply(twin)
    assert "partial_migration" in issue_types(diagnosed)
    assert applied["ok"] is True and applied["remaining_issues"] == []


def test_everything_broken_at_once_then_a_saved_plan(
    twin: Twin, arrange: Callable[..., Result], db: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    """The demo's breakages together (tests/integration/test_remediation.py, break_it), and a
    plan saved with plan --out applied both ways."""
    assert arrange("db", "migrate", "--target", "001").exit_code == 0
    apply_by_hand(db, twin.migrations_dir, "002", "003")
    path = twin.migrations_dir / "001_create_accounts.sql"
    path.write_text(path.read_text() + "\n-- edited after deploy\n")
    sql(
        db,
        "INSERT INTO schema_migrations (version, description, checksum, success) "
        "SELECT version, description, checksum, true FROM schema_migrations",
    )
    dead_lock_row(db)
    db.close()
    diagnosed = same(
        twin,
        ("db", "diagnose"),
        lambda: api.diagnose(twin.url, migrations_dir=twin.migrations_dir),
        report.diagnosis_json,
    )
    assert {"missing_tracking", "checksum_mismatch", "duplicate_version", "stuck_lock"} <= issue_types(diagnosed)
    plan_file = tmp_path / "fix.plan.json"
    assert arrange("plan", "--out", str(plan_file)).exit_code == 0
    applied = same(
        twin,
        ("apply", str(plan_file)),
        lambda: api.apply(twin.url, plan_file, migrations_dir=twin.migrations_dir),
        report.apply_json,
    )  # one saved plan for both: its hash too is the same, whatever age of the lock it shows
    assert applied["ok"] is True and applied["remaining_issues"] == []


# --- every kind of handle -------------------------------------------------------------------------


def engine_for(url: str) -> sqlalchemy.engine.Engine:
    return sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))


@contextlib.contextmanager
def handle_of(kind: str, url: str) -> Iterator[Any]:
    """The database as a caller hands it over, opened after the state is put back (restoring
    it ends every session on the database) and closed before the next save."""
    if kind == "url":
        yield url
    elif kind == "engine":
        engine = engine_for(url)
        try:
            yield engine
        finally:
            engine.dispose()
    elif kind == "connection":
        engine = engine_for(url)
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            engine.dispose()
    else:
        assert kind == "psycopg2"
        conn = psycopg2.connect(url)
        try:
            yield conn
        finally:
            conn.close()


def names_the_same_database(cli_url: str, api_url: str) -> None:
    """A URL is shown as given; a handle, as the parameters it connected with (say, port=5432
    spelled out): the two may be spelled differently, but must name one database."""

    def parts(url: str) -> dict[str, str]:
        found = psycopg2.extensions.parse_dsn(url)
        return {key: found.get(key, "") for key in ("dbname", "host", "user")} | {"port": found.get("port", "5432")}

    assert parts(cli_url) == parts(api_url), f"{cli_url} and {api_url} name different databases"


def spelled_as(from_cli: Any, from_api: Any) -> Any:
    """The API's JSON with each ``database`` URL spelled as the CLI's, once it names the same
    database (``run_json``, ``status_json``, ``apply_json`` at the top; ``diagnosis_json`` in
    ``database_state``)."""
    if isinstance(from_cli, dict) and isinstance(from_api, dict):
        out = {}
        for key, value in from_api.items():
            theirs = from_cli.get(key)
            if key == "database" and isinstance(value, str) and isinstance(theirs, str) and value != theirs:
                names_the_same_database(theirs, value)
                out[key] = theirs
            else:
                out[key] = spelled_as(theirs, value)
        return out
    if isinstance(from_cli, list) and isinstance(from_api, list) and len(from_cli) == len(from_api):
        return [spelled_as(c, a) for c, a in zip(from_cli, from_api, strict=True)]
    return from_api


@pytest.mark.parametrize("kind", ["url", "engine", "connection", "psycopg2"])
def test_each_kind_of_handle(twin: Twin, arrange: Callable[..., Result], kind: str) -> None:
    """Reading (status, diagnose) and writing (migrate: the API checks the handle has no
    transaction open) through each kind of handle."""
    assert arrange("db", "migrate", "--target", "001").exit_code == 0
    verbs: list[tuple[tuple[str, ...], Callable[[Any], Any], Callable[[Any], str]]] = [
        (("db", "migration-status"), lambda h: api.status(h, migrations_dir=twin.migrations_dir), report.status_json),
        # --no-replay is replay=False (and keeps this test quick: the guide's scenarios replay).
        (
            ("db", "diagnose", "--no-replay"),
            lambda h: api.diagnose(h, migrations_dir=twin.migrations_dir, replay=False),
            report.diagnosis_json,
        ),
        (
            ("db", "migrate", "--target", "003"),
            lambda h: api.migrate(h, migrations_dir=twin.migrations_dir, target="003"),
            report.run_json,
        ),
    ]
    for cli_args, verb, render in verbs:

        def call(verb: Callable[[Any], Any] = verb) -> Any:
            with handle_of(kind, twin.url) as handle:
                return verb(handle)

        runs = both(twin, cli_args, call, render)
        assert_same(runs.from_cli, spelled_as(runs.from_cli, runs.from_api))
        runs.assert_same_end_state()
