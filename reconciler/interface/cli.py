"""The typer app: flags → commands → report. Errors become one line and an exit code."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from reconciler import interrupts
from reconciler.config import Settings, mask_url, resolve_settings
from reconciler.errors import EXIT_PROBLEMS, EXIT_USAGE, Interrupted, PoststackError, UsageError


class _Lazy:
    """A module imported on first use: `poststack --help` and `version` need neither the
    database driver nor PostgreSQL's parser, and start faster without them."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attribute)


commands: Any = _Lazy("reconciler.commands")
report: Any = _Lazy("reconciler.interface.report")

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
    help="Manage the embedded PostgreSQL (--embedded, or no database named at a terminal).", no_args_is_help=True
)
playbooks_app = typer.Typer(help="List, show and validate remediation playbooks.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(playbooks_app, name="playbooks")
db_app.add_typer(server_app, name="server")


class Format(StrEnum):
    text = "text"
    json = "json"


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="PostgreSQL URL, or 'embedded'; else POSTSTACK_DATABASE_URL, DATABASE_URL, poststack.toml "
        "(with none: the embedded server on a terminal, else an error).",
    ),
]
EmbeddedOpt = Annotated[
    bool,
    typer.Option("--embedded", help="Use the embedded PostgreSQL under .poststack/ (a throwaway local server)."),
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


AllowOutOfOrder = Annotated[
    bool,
    typer.Option(
        "--allow-out-of-order",
        help="Also run pending migrations older than the newest applied one (refused by default: "
        "such a migration was usually applied by hand or skipped on purpose).",
    ),
]
AllowUndetermined = Annotated[
    bool,
    typer.Option(
        "--allow-undetermined",
        help="Also run migrations that may have run outside poststack (after db recover) and leave "
        "nothing in the catalog to tell.",
    ),
]


def _allowances(out_of_order: bool, undetermined: bool, retry_failed: bool = False) -> Any:
    from reconciler.diagnosis.pending import Allowances

    return Allowances(out_of_order=out_of_order, undetermined=undetermined, retry_failed=retry_failed)


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _notify(message: str) -> None:
    _err(message)


@contextmanager
def _guard(debug: bool) -> Iterator[None]:
    """The boundary: domain errors print one line (plus what to do) and exit with their code."""
    try:
        yield
    except Interrupted as e:
        # Not an error: what a stop signal cut short and what it kept, and the signal's exit code.
        _err(mask_url(report.interrupted_text(e.interruption)))
        raise typer.Exit(e.exit_code) from None
    except PoststackError as e:
        if debug:
            raise
        _err(f"❌ {mask_url(e.summary)}")
        if e.detail:
            _err(f"   {mask_url(e.detail)}")
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt as e:
        # Stopped outside a run that changes the database (reading, planning, waiting for the lock).
        signum = e.signum if isinstance(e, interrupts.Signalled) else signal.SIGINT
        _err(f"❌ Interrupted ({interrupts.signal_name(signum)})")
        raise typer.Exit(interrupts.exit_code(signum)) from None
    except BrokenPipeError:
        # The reader went away (poststack ... | head): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(141) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as e:  # an unexpected error is still one line unless --debug
        if debug:
            raise
        _err(f"❌ internal error: {mask_url(f'{type(e).__name__}: {e}')} (rerun with --debug for a traceback)")
        raise typer.Exit(EXIT_PROBLEMS) from None


def _interactive() -> bool:
    """A person at a terminal rather than a deploy or CI job: only there may a database
    nobody named mean the embedded server. CI systems set CI (true, 1, or their name)."""
    in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")
    return sys.stdin.isatty() and sys.stderr.isatty() and not in_ci


def _settings(
    database_url: str | None,
    embedded: bool,
    migrations_dir: Path | None,
    schema: str | None,
    debug: bool,
    lock_timeout: float | None = None,
    *,
    embedded_by_default: bool | None = None,
) -> Settings:
    return resolve_settings(
        database_url=database_url,
        embedded=embedded,
        embedded_by_default=_interactive() if embedded_by_default is None else embedded_by_default,
        migrations_dir=migrations_dir,
        tracking_schema=schema,
        lock_timeout=lock_timeout,
        debug=debug,
    )


def _local_settings(migrations_dir: Path | None, debug: bool) -> Settings:
    """For the commands that open no connection (playbooks, db server): which database
    would be used does not concern them, so an unnamed one is not refused."""
    return _settings(None, False, migrations_dir, None, debug, embedded_by_default=True)


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
    from dataclasses import asdict

    from reconciler.about import version as version_info

    result = version_info()
    text = f"poststack {result.poststack} (python {result.python})"
    typer.echo(text if fmt is Format.text else json.dumps(asdict(result), indent=2))


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the scratch database and project behind to explore.")
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="Server to create the scratch database on [default: embedded]."),
    ] = None,
    embedded: EmbeddedOpt = False,
    debug: Debug = False,
) -> None:
    """Break a scratch database the ways the troubleshooting guide describes, then diagnose,
    plan and fix it with the real commands, and remove it."""
    from reconciler.demo import run_demo

    with _guard(debug):
        # A scratch database is the demo's purpose (the README's first command, run in CI
        # too): the embedded server is its default everywhere.
        settings = _settings(database_url, embedded, None, None, debug, embedded_by_default=True)
        result = run_demo(settings, lambda event: typer.echo(report.demo_event_text(event)), keep=keep, notify=_notify)
        typer.echo(report.demo_result_text(result))
        if not result.healthy:
            raise typer.Exit(EXIT_PROBLEMS)


# --- db -------------------------------------------------------------------------------------


@db_app.command()
def migrate(
    dry_run: DryRun = False,
    target: Annotated[str | None, typer.Option("--target", help="Apply pending migrations up to this version.")] = None,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Also retry migrations that failed outside a transaction (after cleanup)."),
    ] = False,
    allow_out_of_order: AllowOutOfOrder = False,
    allow_undetermined: AllowUndetermined = False,
    lock_timeout: LockTimeoutOpt = 30.0,
    fmt: FormatOpt = Format.text,
    database_url: DatabaseUrl = None,
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Apply pending migrations in numeric order, each in its own transaction."""
    with _guard(debug):
        settings = _settings(database_url, embedded, migrations_dir, schema, debug, lock_timeout)
        with _StepProgress("migrating") as progress:
            result = commands.migrate(
                settings,
                target=target,
                dry_run=dry_run,
                allow=_allowances(allow_out_of_order, allow_undetermined, retry_failed),
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
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Undo every applied migration above VERSION, newest first, with its .rollback.sql."""
    with _guard(debug):
        settings = _settings(database_url, embedded, migrations_dir, schema, debug, lock_timeout)
        with _StepProgress("rolling back") as progress:
            result = commands.rollback(settings, version, dry_run=dry_run, notify=_notify, on_step=progress.on_step)
        _emit(fmt, result, report.run_text, report.run_json)
        if not result.ok:
            raise typer.Exit(EXIT_PROBLEMS)


@db_app.command("migration-status")
def migration_status(
    fmt: FormatOpt = Format.text,
    database_url: DatabaseUrl = None,
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Current version, applied, pending and failed migrations."""
    with _guard(debug):
        result = commands.migration_status(
            _settings(database_url, embedded, migrations_dir, schema, debug), notify=_notify
        )
        _emit(fmt, result, report.status_text, report.status_json)
        if result.failed:
            raise typer.Exit(EXIT_PROBLEMS)


@db_app.command("migration-info")
def migration_info(
    fmt: FormatOpt = Format.text,
    database_url: DatabaseUrl = None,
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Migration files with checksums and companions, server version, lock state."""
    with _guard(debug):
        result = commands.migration_info(
            _settings(database_url, embedded, migrations_dir, schema, debug), notify=_notify
        )
        _emit(fmt, result, report.info_text, report.info_json)


@db_app.command("create-schema")
def create_schema(
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Drop and recreate the tracking and lock tables (their rows are lost; the audit table stays).",
        ),
    ] = False,
    lock_timeout: LockTimeoutOpt = 30.0,
    database_url: DatabaseUrl = None,
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Create the tracking, lock and audit tables."""
    with _guard(debug):
        settings = _settings(database_url, embedded, migrations_dir, schema, debug, lock_timeout)
        result = commands.create_schema(settings, force=force, notify=_notify)
        if result.execution.failure:
            _err(f"❌ create-schema failed: {result.execution.failure.message}")
            raise typer.Exit(EXIT_PROBLEMS)
        typer.echo(report.create_schema_text(result))


@db_app.command()
def backup(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write [default: backups/poststack-<UTC time>.sql].")
    ] = None,
    database_url: DatabaseUrl = None,
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Dump the database with a pg_dump matching the server's major version."""
    with _guard(debug):
        settings = _settings(database_url, embedded, migrations_dir, schema, debug)
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
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Open psql on the database, or run SQL with -c (or from standard input)."""
    with _guard(debug):
        settings = _settings(database_url, embedded, migrations_dir, schema, debug)
        if command is None and not sys.stdin.isatty():
            command = sys.stdin.read()
        if command is None:
            target = commands.interactive_shell(settings, notify=_notify)
            os.execve(target.argv[0], list(target.argv), target.env)
        result = commands.shell_command(settings, command, notify=_notify)
        for notice in result.notices:
            _err(notice)
        typer.echo(report.shell_text(result))
        # Last, on stderr: stdout stays the query's result alone, as psql -c prints it.
        _err(report.database_line(result.database))


@db_app.command()
def diagnose(
    issue_type: Annotated[list[str] | None, typer.Option("--type", help="Only this issue type (repeatable).")] = None,
    severity: Annotated[str, typer.Option("--severity", help="Only issues at or above: low, medium, high.")] = "low",
    fmt: FormatOpt = Format.text,
    database_url: DatabaseUrl = None,
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Compare files, tracking and the live catalog; report every disagreement."""
    from reconciler.diagnosis import diagnose as diagnosis
    from reconciler.diagnosis.issues import IssueType, Severity

    with _guard(debug):
        types = [IssueType.parse(t) for value in issue_type or () for t in value.split(",") if t.strip()]
        minimum = Severity.parse(severity)
        result = diagnosis.diagnose(
            _settings(database_url, embedded, migrations_dir, schema, debug), types, minimum, notify=_notify
        )
        _emit(fmt, result, report.diagnosis_text, report.diagnosis_json)
        if not result.ok:
            raise typer.Exit(EXIT_PROBLEMS)


@db_app.command()
def validate(
    check_rollbacks: Annotated[
        bool, typer.Option("--check-rollbacks", help="Warn about migrations without a rollback file.")
    ] = False,
    fmt: FormatOpt = Format.text,
    database_url: DatabaseUrl = None,
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Every file parses, versions are unique, tracking agrees with the files."""
    from reconciler.diagnosis import diagnose as diagnosis

    with _guard(debug):
        settings = _settings(database_url, embedded, migrations_dir, schema, debug)
        result = diagnosis.validate(settings, check_rollbacks=check_rollbacks, notify=_notify)
        _emit(fmt, result, report.validation_text, report.checks_json)
        if not result.ok:
            raise typer.Exit(EXIT_PROBLEMS)


@db_app.command("verify-migrations")
def verify_migrations(
    fmt: FormatOpt = Format.text,
    database_url: DatabaseUrl = None,
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Every applied migration's file still exists and matches its recorded checksum."""
    from reconciler.diagnosis import diagnose as diagnosis

    with _guard(debug):
        result = diagnosis.verify_migrations(
            _settings(database_url, embedded, migrations_dir, schema, debug), notify=_notify
        )
        _emit(fmt, result, report.verification_text, report.checks_json)
        if not result.ok:
            raise typer.Exit(EXIT_PROBLEMS)


# --- remediation: plan, apply, and the guide's fix commands -----------------------------

PlaybookOpt = Annotated[list[str] | None, typer.Option("--playbook", help="Use this playbook (repeatable).")]
IssueTypeOpt = Annotated[list[str] | None, typer.Option("--issue-type", help="Only this issue type (repeatable).")]


def _issue_types(values: list[str] | None) -> tuple[str, ...]:
    from reconciler.diagnosis.issues import IssueType
    from reconciler.remediation.planner import PENDING

    parts = [t.strip() for value in values or () for t in value.split(",") if t.strip()]
    return tuple(t if t == PENDING else IssueType.parse(t).value for t in parts)


def _plan_variables(force: bool, allow_out_of_order: bool, allow_undetermined: bool) -> dict[str, bool]:
    return {"force": force, "allow_out_of_order": allow_out_of_order, "allow_undetermined": allow_undetermined}


def _run_plan(settings: Settings, plan: Any) -> Any:
    from reconciler.remediation import fixes as remediation

    with _StepProgress("applying") as progress:
        return remediation.checked_apply(settings, plan, notify=_notify, on_step=progress.on_step)


@app.command("plan")
def plan_command(
    playbook: PlaybookOpt = None,
    issue_type: IssueTypeOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Save the plan to apply it later.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Let playbooks include what they skip without evidence.")
    ] = False,
    allow_out_of_order: AllowOutOfOrder = False,
    allow_undetermined: AllowUndetermined = False,
    detailed_exitcode: Annotated[
        bool,
        typer.Option(
            "--detailed-exitcode",
            help="Exit 0: nothing to do; 2: changes planned, or migrations held for a person; 1: error.",
        ),
    ] = False,
    fmt: FormatOpt = Format.text,
    database_url: DatabaseUrl = None,
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Diagnose, choose playbooks, and show exactly what apply would run."""
    from reconciler.remediation import fixes as remediation
    from reconciler.remediation.planner import HELD, PlanRequest

    with _guard(debug):
        settings = _settings(database_url, embedded, migrations_dir, schema, debug)
        request = PlanRequest(
            tuple(playbook or ()),
            _issue_types(issue_type),
            _plan_variables(force, allow_out_of_order, allow_undetermined),
        )
        plan = remediation.make_plan(settings, request, notify=_notify)
        if out is not None:
            remediation.save_plan(plan, out)
        _emit(fmt, plan, report.remediation_plan_text, report.remediation_plan_json)
        if out is not None and fmt is Format.text:
            typer.echo(f"Saved to {out}; run it with: poststack apply {out}")
        # Held migrations are changes the database still needs, though a person must decide them.
        if detailed_exitcode and any(s.action != "manual" or s.playbook == HELD for s in plan.steps):
            raise typer.Exit(2)


@app.command("apply")
def apply_command(
    plan_file: Annotated[Path | None, typer.Argument(help="A plan saved with poststack plan --out.")] = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask before applying.")] = False,
    confirm: Annotated[bool, typer.Option("--confirm", help="Allow a destructive plan (it backs up first).")] = False,
    playbook: PlaybookOpt = None,
    issue_type: IssueTypeOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Let playbooks include what they skip without evidence (as plan --force).")
    ] = False,
    allow_out_of_order: AllowOutOfOrder = False,
    allow_undetermined: AllowUndetermined = False,
    fmt: FormatOpt = Format.text,
    lock_timeout: LockTimeoutOpt = 30.0,
    database_url: DatabaseUrl = None,
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Run a saved plan, or plan afresh and run it after you approve."""
    from reconciler.remediation import fixes as remediation
    from reconciler.remediation.planner import PlanRequest

    with _guard(debug):
        settings = _settings(database_url, embedded, migrations_dir, schema, debug, lock_timeout)
        request = None
        if plan_file is not None:
            if playbook or issue_type or force or allow_out_of_order or allow_undetermined:
                raise UsageError(
                    "--playbook, --issue-type, --force and --allow-* choose a new plan; a saved plan is applied as it is"
                )
            plan = remediation.load_plan(plan_file)
        else:
            request = PlanRequest(
                tuple(playbook or ()),
                _issue_types(issue_type),
                _plan_variables(force, allow_out_of_order, allow_undetermined),
            )
            plan = remediation.make_plan(settings, request, _notify)
        runnable = [s for s in plan.steps if s.action != "manual"]
        # A plan of the whole database answers for its health; one playbook or issue type,
        # only for what it fixes.
        whole = not (playbook or issue_type)
        if fmt is Format.text:
            typer.echo(report.remediation_plan_text(plan))
        if runnable:
            _approve(plan, saved=plan_file is not None, auto_approve=auto_approve, confirm=confirm)
            # Approved in advance (--auto-approve, no plan file): if another run changed the
            # database while this one waited for the lock, plan again from what is there.
            replan = request if (auto_approve and plan_file is None and not plan.destructive) else None
            with _StepProgress("applying") as progress:
                result = remediation.apply_plan(
                    settings, plan, notify=_notify, on_step=progress.on_step, replan=replan, whole=whole
                )
            if result.plan is not plan:
                _err("⚠️  The database changed while waiting for the migration lock; planned again and applied that.")
        else:
            result = remediation.apply_plan(settings, plan, notify=_notify, whole=whole)  # nothing runs; re-diagnoses
        if fmt is Format.text:
            typer.echo("")
        _emit(fmt, result, report.apply_text, report.apply_json)
        if not result.ok:
            raise typer.Exit(EXIT_PROBLEMS)


def _approve(plan: Any, *, saved: bool, auto_approve: bool, confirm: bool) -> None:
    """A destructive plan needs --confirm (or the database name typed on a TTY); a fresh
    plan needs a yes on a TTY, or --auto-approve. Without a TTY nothing is assumed."""
    interactive = sys.stdin.isatty()
    if plan.destructive and not confirm:
        if not interactive:
            raise UsageError("this plan is destructive: pass --confirm to apply it (it takes a backup first)")
        typed = typer.prompt(f"This plan is DESTRUCTIVE. Type the database name ({plan.database}) to apply it")
        if typed.strip() != plan.database:
            raise UsageError("not confirmed: nothing was applied")
        return
    if saved or auto_approve or plan.destructive:
        return
    if not interactive:
        raise UsageError("refusing to apply without approval: no terminal to ask on; pass --auto-approve")
    if not typer.confirm("Apply this plan?", default=False):
        raise UsageError("not approved: nothing was applied")


@db_app.command()
def recover(
    versions: Annotated[
        list[str] | None,
        typer.Argument(help="Only these versions; with --force, track them even without evidence (your word)."),
    ] = None,
    dry_run: DryRun = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Also track undetermined migrations that migrate holds (or the VERSIONS named)."),
    ] = False,
    lock_timeout: LockTimeoutOpt = 30.0,
    database_url: DatabaseUrl = None,
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Track migrations the catalog shows applied but tracking does not (missing_tracking)."""
    from reconciler.remediation import fixes as remediation

    with _guard(debug):
        settings = _settings(database_url, embedded, migrations_dir, schema, debug, lock_timeout)
        plan = remediation.recover(settings, force=force, versions=tuple(versions or ()), notify=_notify)
        if dry_run:
            typer.echo(report.recover_dry_run_text(plan))
            return
        if not any(s.action == "track_migration" for s in plan.steps):
            typer.echo("✅ Nothing to recover: every migration the catalog shows applied is tracked.")
            return
        for issue in plan.issues:
            if issue["type"] == "undetermined" and any(s.version == issue["version"] for s in plan.steps):
                typer.echo(
                    f"⚠️  Including migration {issue['version']} without evidence (--force): {issue['details']['reason']}"
                )
        result = _run_plan(settings, plan)
        typer.echo(report.recover_text(result))
        if not result.ok:
            raise typer.Exit(EXIT_PROBLEMS)


@db_app.command()
def repair(
    issue_type: Annotated[
        list[str] | None,
        typer.Option("--issue-type", help="checksum_mismatch, duplicate_version or partial_migration."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Also clear failed attempts that ran outside a transaction.")
    ] = False,
    dry_run: DryRun = False,
    lock_timeout: LockTimeoutOpt = 30.0,
    database_url: DatabaseUrl = None,
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Repair tracking rows: accept edited files, drop duplicate rows, clear failed attempts."""
    from reconciler.remediation import fixes as remediation

    with _guard(debug):
        settings = _settings(database_url, embedded, migrations_dir, schema, debug, lock_timeout)
        plan = remediation.repair(settings, issue_types=_issue_types(issue_type), force=force, notify=_notify)
        if dry_run:
            typer.echo(report.remediation_plan_text(plan))
            return
        result = _run_plan(settings, plan)
        typer.echo(report.front_end_text("repair", result))
        if not result.ok:
            raise typer.Exit(EXIT_PROBLEMS)


ConfirmOpt = Annotated[bool, typer.Option("--confirm", help="Really do it (without: show what would run).")]
TerminateOpt = Annotated[
    bool,
    typer.Option(
        "--terminate", help="If the lock's backend is still running (a live holder, or a killed run's), end it."
    ),
]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="If the lock's backend is still running (a killed run's last statement), wait up to "
        "--lock-timeout for it to end, then release the lock.",
    ),
]


def _clean(
    settings: Settings, *, locks: bool, duplicates: bool, confirm: bool, terminate: bool, legacy: bool, wait: bool
) -> None:
    from reconciler.remediation import fixes as remediation

    operation = "unlock" if legacy else "clean"
    plan = remediation.clean(
        settings,
        locks=locks,
        duplicates=duplicates,
        terminate=terminate,
        wait=wait,
        operation=operation,
        notify=_notify,
    )
    runnable = [s for s in plan.steps if s.action != "manual"]
    manual = [s for s in plan.steps if s.action == "manual"]
    if not runnable:
        if manual:
            for step in manual:
                _err(f"❌ {step.reason.removeprefix('MANUAL: ')}")
            raise typer.Exit(EXIT_PROBLEMS)
        typer.echo("✅ The migration lock is not held; nothing to release." if legacy else "✅ Nothing to clean.")
        return
    if not confirm:
        typer.echo(report.remediation_plan_text(plan))
        typer.echo("Nothing changed: add --confirm to do it.")
        raise typer.Exit(EXIT_USAGE)
    result = _run_plan(settings, plan)
    if legacy and result.ok:
        typer.echo(report.unlock_text(result))
    else:
        typer.echo(report.front_end_text("clean", result))
    if not result.ok:
        raise typer.Exit(EXIT_PROBLEMS)


@db_app.command()
def clean(
    locks: Annotated[bool, typer.Option("--locks", help="Release a lock left by a crashed or killed run.")] = False,
    duplicates: Annotated[
        bool, typer.Option("--duplicates", help="Delete duplicate tracking rows (the oldest stays).")
    ] = False,
    confirm: ConfirmOpt = False,
    terminate: TerminateOpt = False,
    wait: WaitOpt = False,
    lock_timeout: LockTimeoutOpt = 30.0,
    database_url: DatabaseUrl = None,
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Clean up stuck locks and duplicate tracking rows."""
    with _guard(debug):
        settings = _settings(database_url, embedded, migrations_dir, schema, debug, lock_timeout)
        _clean(
            settings, locks=locks, duplicates=duplicates, confirm=confirm, terminate=terminate, legacy=False, wait=wait
        )


@db_app.command("unlock-migrations")
def unlock_migrations(
    confirm: ConfirmOpt = False,
    terminate: TerminateOpt = False,
    wait: WaitOpt = False,
    lock_timeout: LockTimeoutOpt = 30.0,
    database_url: DatabaseUrl = None,
    embedded: EmbeddedOpt = False,
    migrations_dir: MigrationsDir = None,
    schema: Schema = None,
    debug: Debug = False,
) -> None:
    """Release a migration lock left by a crashed or killed run (same as db clean --locks)."""
    with _guard(debug):
        settings = _settings(database_url, embedded, migrations_dir, schema, debug, lock_timeout)
        _clean(settings, locks=True, duplicates=False, confirm=confirm, terminate=terminate, legacy=True, wait=wait)


@playbooks_app.command("list")
def playbooks_list(migrations_dir: MigrationsDir = None, debug: Debug = False) -> None:
    """Built-in playbooks and the project's own (playbooks/ beside the migrations)."""
    from reconciler.remediation.playbook import load_all

    with _guard(debug):
        settings = _local_settings(migrations_dir, debug)
        typer.echo(report.playbooks_text(load_all(settings.migrations_dir)))


@playbooks_app.command("show")
def playbooks_show(
    name: Annotated[str, typer.Argument(help="Playbook name.")],
    migrations_dir: MigrationsDir = None,
    debug: Debug = False,
) -> None:
    """Show a playbook's steps."""
    from reconciler.remediation.playbook import find, load_all

    with _guard(debug):
        settings = _local_settings(migrations_dir, debug)
        typer.echo(report.playbook_show_text(find(load_all(settings.migrations_dir), name)))


@playbooks_app.command("validate")
def playbooks_validate(
    file: Annotated[Path | None, typer.Argument(help="A playbook file; without it, every playbook in use.")] = None,
    migrations_dir: MigrationsDir = None,
    debug: Debug = False,
) -> None:
    """Check playbooks against the schema and the action registry."""
    from reconciler.remediation.playbook import load_all, load_playbook

    with _guard(debug):
        settings = _local_settings(migrations_dir, debug)
        books = [load_playbook(file)] if file is not None else list(load_all(settings.migrations_dir).values())
        for book in books:
            typer.echo(f"✅ {book.path}: valid ({book.name} v{book.version}, {len(book.steps)} steps)")


# --- db server --------------------------------------------------------------------------------


@server_app.command("status")
def server_status(migrations_dir: MigrationsDir = None, fmt: FormatOpt = Format.text, debug: Debug = False) -> None:
    """Is the embedded PostgreSQL initialized and running?"""
    with _guard(debug):
        result = commands.server_status(_local_settings(migrations_dir, debug))
        _emit(fmt, result, report.server_status_text, report.to_json)


@server_app.command("stop")
def server_stop(migrations_dir: MigrationsDir = None, debug: Debug = False) -> None:
    """Stop the embedded PostgreSQL (the next command starts it again)."""
    with _guard(debug):
        settings = _local_settings(migrations_dir, debug)
        stopped = commands.server_stop(settings)
        typer.echo(
            f"✅ Stopped the embedded PostgreSQL in {settings.embedded_data_dir}"
            if stopped
            else f"The embedded PostgreSQL in {settings.embedded_data_dir} is not running"
        )


def main() -> None:
    # SIGINT (Ctrl-C) and SIGTERM (a deploy system stopping us) cancel the running statement;
    # the open step is rolled back and recorded, the migration lock released (interrupts.py).
    interrupts.install()
    try:
        app()
    except SystemExit as e:
        # click reports usage errors with exit code 2, which is ours too.
        code = e.code if isinstance(e.code, int) else (EXIT_USAGE if e.code else 0)
        sys.exit(code)


if __name__ == "__main__":
    main()
