"""The typer app: flags → commands → report. Errors become one line and an exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from reconciler import commands, report
from reconciler.config import Settings, mask_url, resolve_settings
from reconciler.errors import EXIT_PROBLEMS, EXIT_USAGE, PoststackError

app = typer.Typer(
    name="poststack",
    help="Keep a PostgreSQL database's migration history honest.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Migrate, inspect and repair a database's migration history.", no_args_is_help=True)
server_app = typer.Typer(
    help="Manage the embedded PostgreSQL used when no database is configured.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
db_app.add_typer(server_app, name="server")


class Format(StrEnum):
    text = "text"
    json = "json"


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", help="PostgreSQL URL; else POSTSTACK_DATABASE_URL, DATABASE_URL, poststack.toml, embedded."
    ),
]
MigrationsDir = Annotated[
    Path | None,
    typer.Option("--migrations-dir", help="Directory of NNN_description.sql files [default: ./migrations]."),
]
Schema = Annotated[str | None, typer.Option("--schema", help="Schema of the tracking tables [default: public].")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks for unexpected errors.")]
FormatOpt = Annotated[Format, typer.Option("--format", help="Output format.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the SQL that would run; change nothing.")]
LockTimeoutOpt = Annotated[
    float, typer.Option("--lock-timeout", help="Seconds to wait for another run's migration lock.")
]


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _notify(message: str) -> None:
    _err(message)


@contextmanager
def _guard(debug: bool) -> Iterator[None]:
    """The boundary: domain errors print one line (plus what to do) and exit with their code."""
    try:
        yield
    except PoststackError as e:
        if debug:
            raise
        _err(f"❌ {mask_url(e.summary)}")
        if e.detail:
            _err(f"   {mask_url(e.detail)}")
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        _err("❌ interrupted")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as e:  # an unexpected error is still one line unless --debug
        if debug:
            raise
        _err(f"❌ internal error: {mask_url(f'{type(e).__name__}: {e}')} (rerun with --debug for a traceback)")
        raise typer.Exit(EXIT_PROBLEMS) from None


def _settings(
    database_url: str | None,
    migrations_dir: Path | None,
    schema: str | None,
    debug: bool,
    lock_timeout: float | None = None,
) -> Settings:
    return resolve_settings(
        database_url=database_url,
        migrations_dir=migrations_dir,
        tracking_schema=schema,
        lock_timeout=lock_timeout,
        debug=debug,
    )


def _emit(fmt: Format, result: Any, text: Callable[[Any], str], json_view: Callable[[Any], str]) -> None:
    typer.echo(json_view(result) if fmt is Format.json else text(result))


def _notes(notes: tuple[str, ...]) -> None:
    for note in notes:
        _err(f"⚠️  {note}")


class _StepProgress:
    """A progress bar on a TTY; silent otherwise."""

    def __init__(self, label: str) -> None:
        self.enabled = sys.stderr.isatty()
        self.label = label
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> _StepProgress:
        return self

    def on_step(self, index: int, step: Any) -> None:
        if not self.enabled:
            return
        if self.progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.progress = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                console=Console(stderr=True),
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("", total=None)
        self.progress.update(self.task, completed=index - 1, description=step.reason)

    def set_total(self, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


# --- top level ----------------------------------------------------------------------------


@app.command()
def version(fmt: FormatOpt = Format.text) -> None:
    """Print poststack's version."""
    result = commands.version()
    _emit(fmt, result, lambda r: f"poststack {r.poststack} (python {r.python})", report.to_json)


# --- db -------------------------------------------------------------------------------------


@db_app.command()
def migrate(
    dry_run: DryRun = False,
    target: Annotated[str | None, typer.Option("--target", help="Apply pending migrations up to this version.")] = None,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Also retry migrations that failed outside a transaction (after cleanup)."),
    ] = False,
    lock_timeout: LockTimeoutOpt = 30.0,
    fmt: FormatOpt = Format.text,
    database_url: DatabaseUrl = None,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Apply pending migrations in numeric order, each in its own transaction."""
    with _guard(debug):
        settings = _settings(database_url, migrations_dir, schema, debug, lock_timeout)
        with _StepProgress("migrating") as progress:
            result = commands.migrate(
                settings,
                target=target,
                dry_run=dry_run,
                retry_failed=retry_failed,
                notify=_notify,
                on_step=progress.on_step,
            )
        _notes(result.plan.notes)
        _emit(fmt, result, report.run_text, report.run_json)
        if not result.ok:
            raise typer.Exit(EXIT_PROBLEMS)


@db_app.command()
def rollback(
    version: Annotated[
        str, typer.Argument(help="Roll back to this version: every applied migration above it is undone.")
    ],
    dry_run: DryRun = False,
    lock_timeout: LockTimeoutOpt = 30.0,
    fmt: FormatOpt = Format.text,
    database_url: DatabaseUrl = None,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Undo every applied migration above VERSION, newest first, with its .rollback.sql."""
    with _guard(debug):
        settings = _settings(database_url, migrations_dir, schema, debug, lock_timeout)
        with _StepProgress("rolling back") as progress:
            result = commands.rollback(settings, version, dry_run=dry_run, notify=_notify, on_step=progress.on_step)
        _emit(fmt, result, report.run_text, report.run_json)
        if not result.ok:
            raise typer.Exit(EXIT_PROBLEMS)


@db_app.command("migration-status")
def migration_status(
    fmt: FormatOpt = Format.text,
    database_url: DatabaseUrl = None,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Current version, applied, pending and failed migrations."""
    with _guard(debug):
        result = commands.migration_status(_settings(database_url, migrations_dir, schema, debug), notify=_notify)
        _emit(fmt, result, report.status_text, report.status_json)
        if result.failed:
            raise typer.Exit(EXIT_PROBLEMS)


@db_app.command("migration-info")
def migration_info(
    fmt: FormatOpt = Format.text,
    database_url: DatabaseUrl = None,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Migration files with checksums and companions, server version, lock state."""
    with _guard(debug):
        result = commands.migration_info(_settings(database_url, migrations_dir, schema, debug), notify=_notify)
        _emit(fmt, result, report.info_text, report.info_json)


@db_app.command("create-schema")
def create_schema(
    force: Annotated[
        bool, typer.Option("--force", help="Drop and recreate the tracking tables (their history is lost).")
    ] = False,
    lock_timeout: LockTimeoutOpt = 30.0,
    database_url: DatabaseUrl = None,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Create the tracking, lock and audit tables."""
    with _guard(debug):
        settings = _settings(database_url, migrations_dir, schema, debug, lock_timeout)
        result = commands.create_schema(settings, force=force, notify=_notify)
        if result.execution.failure:
            _err(f"❌ create-schema failed: {result.execution.failure.message}")
            raise typer.Exit(EXIT_PROBLEMS)
        typer.echo(report.create_schema_text(result))


@db_app.command("unlock-migrations")
def unlock_migrations(
    confirm: Annotated[
        bool, typer.Option("--confirm", help="Really release it (without: show what would run).")
    ] = False,
    terminate: Annotated[
        bool, typer.Option("--terminate", help="If the holder is still alive, end its backend first.")
    ] = False,
    lock_timeout: LockTimeoutOpt = 30.0,
    database_url: DatabaseUrl = None,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Release a migration lock left by a crashed or killed run."""
    with _guard(debug):
        settings = _settings(database_url, migrations_dir, schema, debug, lock_timeout)
        result = commands.unlock_migrations(settings, confirm=confirm, terminate=terminate, notify=_notify)
        typer.echo(report.unlock_text(result))
        if result.holder is not None and not result.confirmed:
            raise typer.Exit(EXIT_USAGE)
        if result.execution is not None and result.execution.failure:
            raise typer.Exit(EXIT_PROBLEMS)


@db_app.command()
def backup(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write [default: backups/poststack-<UTC time>.sql].")
    ] = None,
    database_url: DatabaseUrl = None,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Dump the database with a pg_dump matching the server's major version."""
    with _guard(debug):
        settings = _settings(database_url, migrations_dir, schema, debug)
        on_progress = None
        progress: Any = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn

            progress = Progress(
                SpinnerColumn(),
                TextColumn("backing up: {task.description}"),
                console=Console(stderr=True),
                transient=True,
            )
            progress.start()
            task = progress.add_task("starting", total=None)

            def on_progress(size: int) -> None:
                progress.update(task, description=f"{size / 1048576:.1f} MiB written")

        try:
            result = commands.backup(settings, output, notify=_notify, on_progress=on_progress)
        finally:
            if progress is not None:
                progress.stop()
        typer.echo(report.backup_text(result))


@db_app.command()
def shell(
    command: Annotated[str | None, typer.Option("-c", "--command", help="Run this SQL and print the result.")] = None,
    database_url: DatabaseUrl = None,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Open psql on the database, or run SQL with -c (or from standard input)."""
    with _guard(debug):
        settings = _settings(database_url, migrations_dir, schema, debug)
        if command is None and not sys.stdin.isatty():
            command = sys.stdin.read()
        if command is None:
            target = commands.interactive_shell(settings, notify=_notify)
            os.execve(target.argv[0], list(target.argv), target.env)
        result = commands.shell_command(settings, command, notify=_notify)
        for notice in result.notices:
            _err(notice)
        typer.echo(report.shell_text(result))


@db_app.command()
def diagnose(
    issue_type: Annotated[list[str] | None, typer.Option("--type", help="Only this issue type (repeatable).")] = None,
    severity: Annotated[str, typer.Option("--severity", help="Only issues at or above: low, medium, high.")] = "low",
    fmt: FormatOpt = Format.text,
    database_url: DatabaseUrl = None,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Compare files, tracking and the live catalog; report every disagreement."""
    from reconciler import diagnosis
    from reconciler.issues import IssueType, Severity

    with _guard(debug):
        types = [IssueType.parse(t) for t in issue_type or ()]
        minimum = Severity.parse(severity)
        result = diagnosis.diagnose(
            _settings(database_url, migrations_dir, schema, debug), types, minimum, notify=_notify
        )
        _emit(fmt, result, report.diagnosis_text, report.diagnosis_json)
        if not result.ok:
            raise typer.Exit(EXIT_PROBLEMS)


@db_app.command()
def validate(
    check_rollbacks: Annotated[
        bool, typer.Option("--check-rollbacks", help="Warn about migrations without a rollback file.")
    ] = False,
    database_url: DatabaseUrl = None,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Every file parses, versions are unique, tracking agrees with the files."""
    from reconciler import diagnosis

    with _guard(debug):
        settings = _settings(database_url, migrations_dir, schema, debug)
        result = diagnosis.validate(settings, check_rollbacks=check_rollbacks, notify=_notify)
        typer.echo(report.validation_text(result))
        if not result.ok:
            raise typer.Exit(EXIT_PROBLEMS)


@db_app.command("verify-migrations")
def verify_migrations(
    database_url: DatabaseUrl = None,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Every applied migration's file still exists and matches its recorded checksum."""
    from reconciler import diagnosis

    with _guard(debug):
        result = diagnosis.verify_migrations(_settings(database_url, migrations_dir, schema, debug), notify=_notify)
        typer.echo(report.verification_text(result))
        if not result.ok:
            raise typer.Exit(EXIT_PROBLEMS)


# --- db server --------------------------------------------------------------------------------


@server_app.command("status")
def server_status(migrations_dir: MigrationsDir = None, fmt: FormatOpt = Format.text, debug: Debug = False) -> None:
    """Is the embedded PostgreSQL initialized and running?"""
    with _guard(debug):
        result = commands.server_status(_settings(None, migrations_dir, None, debug))
        _emit(fmt, result, report.server_status_text, report.to_json)


@server_app.command("stop")
def server_stop(migrations_dir: MigrationsDir = None, debug: Debug = False) -> None:
    """Stop the embedded PostgreSQL (the next command starts it again)."""
    with _guard(debug):
        settings = _settings(None, migrations_dir, None, debug)
        stopped = commands.server_stop(settings)
        typer.echo(
            f"✅ Stopped the embedded PostgreSQL in {settings.embedded_data_dir}"
            if stopped
            else f"The embedded PostgreSQL in {settings.embedded_data_dir} is not running"
        )


def _terminate(signum: int, frame: object) -> None:
    # Stopped by a deploy system: unwind like Ctrl-C, so the open step is rolled back,
    # recorded, and the migration lock released.
    raise KeyboardInterrupt


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except SystemExit as e:
        # click reports usage errors with exit code 2, which is ours too.
        code = e.code if isinstance(e.code, int) else (EXIT_USAGE if e.code else 0)
        sys.exit(code)


if __name__ == "__main__":
    main()
