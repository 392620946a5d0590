"""One function per CLI verb: Settings and arguments in, a result dataclass out. Never prints."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import __version__, embedded
from reconciler.config import Settings
from reconciler.db import DatabaseRef, Session, connect
from reconciler.desired.files import CHECKSUM_ALGORITHM, MigrationSet
from reconciler.desired.layouts import load_migrations
from reconciler.diagnosis.due import is_pending
from reconciler.errors import DatabaseUnavailable, PoststackError, UsageError
from reconciler.observed.tracking import LockState, ObservedTracking, observe_tracking, reset_tables
from reconciler.remediation.plan import Plan

if TYPE_CHECKING:  # the execution stack is imported by the verbs that run something
    from reconciler.desired.history import History
    from reconciler.diagnosis.linting import Linted
    from reconciler.diagnosis.pending import Allowances
    from reconciler.remediation import executor, runner

Notify = Callable[[str], None]


# --- migrate / rollback ---------------------------------------------------------------


def migrate(
    settings: Settings,
    *,
    target: str | None,
    dry_run: bool,
    allow: Allowances | None = None,
    notify: Notify | None = None,
    on_step: executor.StepCallback | None = None,
    on_lock_wait: executor.LockWaitCallback | None = None,
) -> runner.RunResult:
    migrations = load_migrations(settings.migrations_dir, settings.layout)
    with connect(settings, notify) as session:
        result = _migrate_on(session, settings, migrations, target, dry_run, allow, on_step, on_lock_wait)
        if dry_run:
            result = replace(result, lint=_lint_run(session, settings, migrations, result.plan, notify))
        return result


def migrate_then_status(
    settings: Settings,
    *,
    target: str | None,
    allow: Allowances | None = None,
    notify: Notify | None = None,
    on_step: executor.StepCallback | None = None,
) -> tuple[runner.RunResult, StatusResult]:
    """db migrate, then db migration-status read on the same connection once the run ended
    (its lock released): a fleet target's row, without a second connection to its server."""
    migrations = load_migrations(settings.migrations_dir, settings.layout)
    with connect(settings, notify) as session:
        result = _migrate_on(session, settings, migrations, target, False, allow, on_step)
        return result, _status_on(session, settings, migrations)


def _migrate_on(
    session: Session,
    settings: Settings,
    migrations: MigrationSet,
    target: str | None,
    dry_run: bool,
    allow: Allowances | None,
    on_step: executor.StepCallback | None = None,
    on_lock_wait: executor.LockWaitCallback | None = None,
) -> runner.RunResult:
    from reconciler.diagnosis.pending import Allowances
    from reconciler.remediation import runner

    return runner.migrate(
        session,
        settings,
        migrations,
        target=target,
        dry_run=dry_run,
        allow=allow or Allowances(),
        on_step=on_step,
        on_lock_wait=on_lock_wait,
    )


def _lint_run(
    session: Session, settings: Settings, migrations: MigrationSet, plan: Plan, notify: Notify | None
) -> Linted | None:
    """What the migrations ``plan`` runs lock and rewrite, measured in a shadow and sized
    here: computed when the plan is shown, after it was made, so it changes nothing that runs."""
    from reconciler.diagnosis.linting import lint_alongside

    running = [migrations.find(s.version) for s in plan.steps if s.action == "apply_migration" and s.version]
    linted = lint_alongside(session, settings, migrations, [m for m in running if m is not None], notify)
    for notice in linted.notices if linted is not None and notify is not None else ():
        notify(notice)
    return linted


def rollback(
    settings: Settings,
    version: str,
    *,
    dry_run: bool,
    notify: Notify | None = None,
    on_step: executor.StepCallback | None = None,
) -> runner.RunResult:
    from reconciler.remediation import runner

    migrations = load_migrations(settings.migrations_dir, settings.layout)
    with connect(settings, notify) as session:
        return runner.rollback(session, settings, migrations, version, dry_run=dry_run, on_step=on_step)


def migrate_script(
    settings: Settings, *, target: str | None, allow: Allowances | None = None, notify: Notify | None = None
) -> runner.OfflineScript:
    """db migrate --dry-run --format sql: the run as one psql script. The database is only read."""
    from reconciler.diagnosis.pending import Allowances
    from reconciler.remediation import runner

    migrations = load_migrations(settings.migrations_dir, settings.layout)
    with connect(settings, notify) as session:
        return runner.migrate_script(session, settings, migrations, target=target, allow=allow or Allowances())


def rollback_script(settings: Settings, version: str, *, notify: Notify | None = None) -> runner.OfflineScript:
    """db rollback VERSION --dry-run --format sql: the run as one psql script. Only reads."""
    from reconciler.remediation import runner

    migrations = load_migrations(settings.migrations_dir, settings.layout)
    with connect(settings, notify) as session:
        return runner.rollback_script(session, settings, migrations, version)


def release_killed_run_lock(settings: Settings, notify: Notify | None = None) -> str | None:
    """For a fleet's re-run: release the lock row a killed run left, when nothing that run
    could have been doing is in doubt: it was a db migrate (its row says so: a rollback or a
    remediation plan may run steps outside a transaction), its poststack process and its
    backend are both gone (so PostgreSQL committed or rolled back whatever it was running),
    and every migration it could have been applying runs in a transaction (so each
    committed with its tracking row, or not at all). The release is the one db clean --locks
    makes: planned, checked and audited. What was released, or None when it is not that
    case: then the lock is left to a person (db diagnose, db clean --locks), as on one
    database."""
    from reconciler.db import APPLICATION_NAME
    from reconciler.remediation import fixes
    from reconciler.remediation.runner import MIGRATE_COMMAND

    migrations = load_migrations(settings.migrations_dir, settings.layout)
    with connect(settings, notify) as session:
        observed = observe_tracking(session, settings.tracking)
    lock = observed.lock
    if lock is None or not lock.locked or lock.offline or lock.backend_alive or lock.client_alive is not False:
        return None
    if lock.application_name != f"{APPLICATION_NAME} {MIGRATE_COMMAND}":
        return None
    pending = [m for m in migrations.migrations if m.key not in observed.applied]
    if any(not m.file.script.transactional for m in pending):
        return None
    held = lock.describe()
    try:
        plan = fixes.clean(settings, locks=True, duplicates=False, terminate=False, notify=notify)
        if not any(step.action == "release_lock" for step in plan.steps):
            return None
        fixes.checked_apply(settings, plan, notify)
    except PoststackError:
        return None  # the lock's own message says more (through transaction pooling, say)
    return held


# --- status and info --------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationEntry:
    version: str
    description: str
    applied_at: datetime | None = None
    error: str | None = None
    file_present: bool = True


@dataclass(frozen=True)
class StatusResult:
    """db migration-status: where the database stands against the migration files."""

    database: str
    tracking_schema: str
    tracking_exists: bool
    current_version: str | None
    applied: tuple[MigrationEntry, ...]
    pending: tuple[MigrationEntry, ...]
    failed: tuple[MigrationEntry, ...]
    undetermined: tuple[MigrationEntry, ...] = ()  # pending, but nothing shows whether they ran

    @property
    def up_to_date(self) -> bool:
        """Nothing is pending and nothing failed."""
        return not self.pending and not self.failed


def _status_from(
    migrations: MigrationSet, observed: ObservedTracking, database: str, history: History | None = None
) -> StatusResult:
    files = migrations.by_key()
    applied = tuple(
        MigrationEntry(row.version, row.description, row.applied_at, None, number in files)
        for number, row in sorted(observed.applied.items())
    )
    pending = tuple(
        MigrationEntry(m.version, m.description)
        for m in migrations.migrations
        if is_pending(m, observed)  # a changed repeatable runs again
    )
    failed = tuple(
        MigrationEntry(row.version, row.description, row.applied_at, row.error, number in files)
        for number, row in sorted(observed.failed.items())
    )
    current = observed.current
    undetermined: tuple[MigrationEntry, ...] = ()
    if history is not None:
        # Untracked, without a verify script, and with nothing only it creates: no look at the
        # catalog could tell whether it ran (diagnose reports these as undetermined).
        tracked = set(observed.applied) | set(observed.failed)
        undetermined = tuple(
            MigrationEntry(m.version, m.description)
            for m in migrations.migrations
            if m.key not in tracked
            and m.verify is None
            and not m.key.is_repeatable  # never applied: it runs (attribution.attribute)
            and not history.evidence_of(m.version)
        )
    return StatusResult(
        database=database,
        tracking_schema=observed.schema,
        tracking_exists=observed.exists,
        current_version=current.version if current else None,
        applied=applied,
        pending=pending,
        failed=failed,
        undetermined=undetermined,
    )


def migration_status(settings: Settings, notify: Notify | None = None) -> StatusResult:
    migrations = load_migrations(settings.migrations_dir, settings.layout)
    with connect(settings, notify) as session:
        return _status_on(session, settings, migrations)


def _status_on(session: Session, settings: Settings, migrations: MigrationSet) -> StatusResult:
    observed = observe_tracking(session, settings.tracking)
    # Only untracked files without a verify script can be undetermined; parsing the whole
    # history is for them alone.
    tracked = set(observed.applied) | set(observed.failed)
    history = None
    if any(m.key not in tracked and m.verify is None for m in migrations.migrations):
        from reconciler.observed.catalog import session_search_path
        from reconciler.observed.state import read_history

        history = read_history(
            migrations, session_search_path(session), settings.tracking, cached=session.scope is None
        )
    return _status_from(migrations, observed, session.display_url, history)


@dataclass(frozen=True)
class FileInfo:
    version: str
    description: str
    path: str
    checksum: str
    rollback: str | None
    verify: str | None
    transactional: bool | None  # None when the file does not parse
    status: str  # applied, pending, failed


@dataclass(frozen=True)
class InfoResult:
    database: str
    server_version: str
    tracking_schema: str
    tracking_exists: bool
    migrations_dir: str
    checksum_algorithm: str
    files: tuple[FileInfo, ...]
    lock: LockState | None
    poststack_version: str = __version__


def migration_info(settings: Settings, notify: Notify | None = None) -> InfoResult:
    migrations = load_migrations(settings.migrations_dir, settings.layout)
    with connect(settings, notify) as session:
        observed = observe_tracking(session, settings.tracking)
        server = session.server_info()
        files = []
        for m in migrations.migrations:
            try:
                transactional: bool | None = m.file.script.transactional
            except Exception:
                transactional = None
            # A repeatable's last attempt may have failed after an earlier success; changed, it runs again.
            status = "failed" if m.key in observed.failed else "pending" if is_pending(m, observed) else "applied"
            files.append(
                FileInfo(
                    m.version,
                    m.description,
                    str(m.path),
                    m.checksum,
                    str(m.rollback.path) if m.rollback else None,
                    str(m.verify.path) if m.verify else None,
                    transactional,
                    status,
                )
            )
        return InfoResult(
            database=session.display_url,
            server_version=server.version,
            tracking_schema=settings.tracking_schema,
            tracking_exists=observed.exists,
            migrations_dir=str(settings.migrations_dir),
            checksum_algorithm=CHECKSUM_ALGORITHM,
            files=tuple(files),
            lock=observed.lock,
        )


# --- create-schema ----------------------------------------------------------------------


@dataclass(frozen=True)
class CreateSchemaResult:
    tracking_schema: str
    dropped: tuple[str, ...]
    dropped_rows: int
    created: tuple[str, ...]
    execution: executor.ExecutionResult
    database: DatabaseRef


def create_schema(settings: Settings, *, force: bool, notify: Notify | None = None) -> CreateSchemaResult:
    from reconciler.observed import locking
    from reconciler.remediation import executor, runner
    from reconciler.remediation.actions import BuildContext, get_action

    schema, location = settings.tracking_schema, settings.tracking
    empty = MigrationSet(settings.migrations_dir, ())
    ctx = BuildContext(location, empty)
    with connect(settings, notify) as session:
        observed = observe_tracking(session, location)
        before = observed.tables
        steps = []
        if force and before:
            steps.append(get_action("drop_tracking").step(ctx, {}))
        steps.append(get_action("create_tracking").step(ctx, {}))
        plan = Plan("create-schema", location, observed.fingerprint, tuple(steps))
        with locking.advisory_only(session, location, settings.lock_timeout, "db create-schema"):
            execution = executor.execute(session, plan)
        if execution.failure and execution.failure.sqlstate == runner.INSUFFICIENT_PRIVILEGE:
            raise DatabaseUnavailable(
                f"cannot create the tracking tables in schema {schema}: {execution.failure.message}",
                f"Grant the role CREATE on schema {schema}, or point --schema at a schema it owns.",
            )
        after = observe_tracking(session, location).tables
        database = session.database_ref
    dropped = tuple(sorted(before & set(reset_tables(location)))) if force else ()
    created = tuple(sorted(after - (before - set(dropped))))
    return CreateSchemaResult(schema, dropped, len(observed.rows) if force else 0, created, execution, database)


# --- backup -----------------------------------------------------------------------------


def default_backup_path(settings: Settings, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return settings.migrations_dir.resolve().parent / "backups" / f"poststack-{stamp}.sql"


def backup(
    settings: Settings,
    output: Path | None,
    *,
    notify: Notify | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Any:
    from reconciler.remediation import backup as backups

    path = output or default_backup_path(settings)
    if path.is_dir():  # --output backups/ means a new timestamped file in it
        path = path / default_backup_path(settings).name
    with connect(settings, notify) as session:
        session.require_session("db backup needs the session settings pg_dump makes before it reads")
        major = session.server_info().major
        url = session.url
    tool = backups.find_client("pg_dump", major)
    started = time.monotonic()
    size = backups.run_pg_dump(url, tool, path, on_progress=on_progress)
    return backups.BackupResult(path, size, tool, major, time.monotonic() - started)


# --- shell ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShellResult:
    status: str  # the last command's tag, e.g. "DROP TABLE" or "SELECT 3"
    database: DatabaseRef  # the SQL may have changed it: the report names it
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[Any, ...], ...] = ()
    notices: tuple[str, ...] = field(default=())


# pg_dump 17.6/16.10/15.14 and later frame a plain dump with these psql meta-commands; they
# guard psql against a malicious dump and mean nothing to a server.
_IGNORED_META = ("\\restrict", "\\unrestrict")


def strip_psql_meta(sql: str) -> str:
    """Drop the dump-framing meta-commands; refuse any other psql meta-command by line."""
    lines = []
    for number, line in enumerate(sql.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith(_IGNORED_META):
            continue
        if stripped.startswith("\\"):
            command = stripped.split()[0]
            raise UsageError(
                f"line {number}: psql meta-command {command} is not SQL; db shell -c runs SQL only",
                "Run that script with psql (poststack db shell opens it).",
            )
        lines.append(line)
    return "\n".join(lines)


def shell_command(settings: Settings, sql: str, notify: Notify | None = None) -> ShellResult:
    """Run ``sql`` as one request (several statements run as one transaction, as psql -c does)."""
    return next(shell_commands(settings, [sql], notify))


def shell_commands(settings: Settings, sqls: list[str], notify: Notify | None = None) -> Iterator[ShellResult]:
    """Run each of ``sqls`` as a request of its own, in order, as psql runs several -c: each
    result as it comes; the first that fails stops the rest (its error is raised)."""
    texts = [strip_psql_meta(sql) for sql in sqls]
    if not texts or any(not text.strip() for text in texts):
        raise UsageError("no SQL to run")
    with connect(settings, notify) as session:
        for text in texts:
            yield run_sql(session, text)


def run_sql(session: Session, sql: str) -> ShellResult:
    with session.conn.cursor() as cur:
        cur.execute(sql)
        columns = tuple(d.name for d in cur.description) if cur.description else ()
        rows = tuple(cur.fetchall()) if cur.description else ()
        status = cur.statusmessage or ""
    notices = tuple(n.strip() for n in session.conn.notices)
    del session.conn.notices[:]  # said once: the next request's are its own
    return ShellResult(status, session.database_ref, columns, rows, notices)


@dataclass(frozen=True)
class InteractiveShell:
    argv: tuple[str, ...]
    env: dict[str, str]


def interactive_shell(settings: Settings, notify: Notify | None = None) -> InteractiveShell:
    """The psql invocation for an interactive session (the CLI execs it)."""
    from reconciler.dsn import libpq_env
    from reconciler.remediation import backup as backups

    with connect(settings, notify) as session:
        major = session.server_info().major
        url = session.url
    tool = backups.find_client("psql", major)
    return InteractiveShell((str(tool.path),), libpq_env(url))


# --- embedded server --------------------------------------------------------------------


def server_status(settings: Settings) -> embedded.ServerStatus:
    return embedded.status(settings.embedded_data_dir)


def server_stop(settings: Settings) -> bool:
    return embedded.stop(settings.embedded_data_dir)
