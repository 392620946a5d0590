"""The typer app: flags → commands → report. Errors become one line and an exit code."""

from __future__ import annotations

import functools
import inspect
import json
import os
import signal
import sys
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reconciler import interrupts
from reconciler.errors import EXIT_DATABASE, EXIT_PROBLEMS, EXIT_USAGE, Interrupted, PoststackError, UsageError
from reconciler.numbering import NUMBERINGS

if TYPE_CHECKING:  # the execution stack is imported on first use
    from reconciler.config import Settings
    from reconciler.remediation.executor import LockWait


class _Lazy:
    """A module imported on first use: `poststack --help` and `version` need neither the
    database driver nor PostgreSQL's parser, and start faster without them."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attribute)


commands: Any = _Lazy("reconciler.commands")
config: Any = _Lazy("reconciler.config")  # settings are resolved when a command runs, not for --help
report: Any = _Lazy("reconciler.interface.report")

app = typer.Typer(
    name="poststack",
    help="Keep a PostgreSQL database's migration history honest.",
    no_args_is_help=True,
    add_completion=False,  # ours (root, below) take the shell by name: typer's guess it from the parent process
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Migrate, inspect and repair a database's migration history.", no_args_is_help=True)
server_app = typer.Typer(
    help="Manage the embedded PostgreSQL (--embedded, or no database named at a terminal).", no_args_is_help=True
)
playbooks_app = typer.Typer(help="List, show and validate remediation playbooks.", no_args_is_help=True)
app.add_typer(db_app, name="db")
report_app = typer.Typer(help="Work with fleet reports: join the shards' JSON into one.", no_args_is_help=True)
app.add_typer(playbooks_app, name="playbooks")
app.add_typer(report_app, name="report")
db_app.add_typer(server_app, name="server")


class Format(StrEnum):
    text = "text"
    json = "json"
    sql = "sql"  # db migrate/rollback --dry-run only (registered with sql=True): the run as one psql script


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="PostgreSQL URL, or 'embedded'; else POSTSTACK_DATABASE_URL, DATABASE_URL (both also from .env), "
        "poststack.toml (with none: the embedded server on a terminal, else an error). With --env: only "
        "POSTSTACK_DATABASE_URL and the environment's own database_url.",
    ),
]
EmbeddedOpt = Annotated[
    bool,
    typer.Option("--embedded", help="Use the embedded PostgreSQL under .poststack/ (a throwaway local server)."),
]
MigrationsDir = Annotated[
    Path | None,
    typer.Option(
        "--migrations-dir", help="Directory of migrations, in any layout poststack reads [default: ./migrations]."
    ),
]
Schema = Annotated[str | None, typer.Option("--schema", help="Schema of the tracking tables [default: public].")]
TablePrefix = Annotated[
    str | None,
    typer.Option(
        "--table-prefix",
        help="Prefix of the tracking tables (<prefix>migrations, <prefix>migrations_lock, "
        "<prefix>migrations_audit) [default: schema_].",
    ),
]
LayoutOpt = Annotated[
    str | None,
    typer.Option(
        "--layout",
        help="Layout of the migrations directory: poststack, golang-migrate, dbmate, flyway, diesel or prisma "
        "[default: detected].",
    ),
]
ShadowUrl = Annotated[
    str | None,
    typer.Option(
        "--shadow-url",
        help="PostgreSQL server to replay the history on, for evidence (a scratch database is made there); "
        "else POSTSTACK_SHADOW_DATABASE_URL, poststack.toml [default: a scratch database beside the target].",
    ),
]
NoReplay = Annotated[
    bool,
    typer.Option("--no-replay", help="Do not replay the history in a shadow: judge from the parsed SQL only."),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks for unexpected errors.")]
FormatOpt = Annotated[
    Format,
    typer.Option(
        "--format",
        metavar="<format>",
        help="Output format: text, json, or sql (db migrate and db rollback with --dry-run only).",
    ),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the SQL that would run; change nothing.")]
LockTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--lock-timeout",
        help="Seconds to wait for another run's migration lock; else POSTSTACK_LOCK_TIMEOUT, lock_timeout "
        "in poststack.toml [default: 30].",
    ),
]
DdlLockTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--ddl-lock-timeout",
        metavar="SECONDS",
        help="PostgreSQL's lock_timeout for each migration (a file's own SET lock_timeout wins); 0: none, "
        "wait as long as the server's lock_timeout says; else POSTSTACK_DDL_LOCK_TIMEOUT, ddl_lock_timeout "
        "in poststack.toml [default: 5].",
    ),
]
DdlLockRetriesOpt = Annotated[
    int | None,
    typer.Option(
        "--ddl-lock-retries",
        metavar="N",
        help="When that lock_timeout fires in a migration's transaction (rolled back), try it again up to N "
        "times, waiting the timeout x 2^(try-1) (at most 60s) and naming the session that holds the lock; "
        "else POSTSTACK_DDL_LOCK_RETRIES, ddl_lock_retries in poststack.toml [default: 3].",
    ),
]
EnvOpt = Annotated[
    str | None,
    typer.Option(
        "--env",
        metavar="NAME",
        help="Use the settings of [environments.NAME] in poststack.toml (or pyproject.toml); else POSTSTACK_ENV.",
    ),
]


TargetsOpt = Annotated[
    Path | None,
    typer.Option(
        "--targets",
        metavar="FILE",
        help="Run over a fleet: a YAML or TOML file listing database URLs, or one url and its tenant schemas "
        "(docs/fleet.md).",
    ),
]
TargetsQueryOpt = Annotated[
    str | None,
    typer.Option(
        "--targets-query",
        metavar="SQL",
        help="Run over a fleet: a query on the database the settings name, returning URLs or tenant schema names.",
    ),
]
ParallelOpt = Annotated[
    int, typer.Option("--parallel", metavar="N", min=1, help="With a fleet: up to N targets at once [default: 1].")
]
CanaryOpt = Annotated[
    int,
    typer.Option(
        "--canary",
        metavar="K",
        min=0,
        help="With a fleet: change K targets first, one at a time, and stop if any of them fails.",
    ),
]
KeepGoingOpt = Annotated[
    bool,
    typer.Option(
        "--keep-going",
        help="With a fleet: go on after a target fails (changes stop at the first failure by default).",
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="I/N",
        help="With a fleet: only shard I of N (from 1), split by a stable hash of each target, for CI matrices "
        "and Kubernetes Indexed Jobs; join the reports with poststack report merge.",
    ),
]


@dataclass(frozen=True)
class Shared:
    """The options commands share, declared once: each field is an option (its flag, help and
    default), named as resolve_settings' keyword for it. A new setting is one field here.

    A command takes the ones its decorator names (db_command: DB_OPTIONS, local_command:
    LOCAL_OPTIONS, plus ``also``); the rest keep their defaults."""

    lock_timeout: LockTimeoutOpt = None
    ddl_lock_timeout: DdlLockTimeoutOpt = None
    ddl_lock_retries: DdlLockRetriesOpt = None
    fmt: FormatOpt = Format.text
    environment: EnvOpt = None
    database_url: DatabaseUrl = None
    embedded: EmbeddedOpt = False
    migrations_dir: MigrationsDir = None
    tracking_schema: Schema = None
    table_prefix: TablePrefix = None
    layout: LayoutOpt = None
    shadow_url: ShadowUrl = None
    no_replay: NoReplay = False
    debug: Debug = False
    targets: TargetsOpt = None
    targets_query: TargetsQueryOpt = None
    parallel: ParallelOpt = 1
    canary: CanaryOpt = 0
    keep_going: KeepGoingOpt = False
    shard: ShardOpt = None

    @property
    def fleet(self) -> bool:
        return self.targets is not None or self.targets_query is not None

    def selection(self) -> Any:
        from reconciler.fleet.command import Selection
        from reconciler.fleet.shard import Shard

        return Selection(self.targets, self.targets_query, Shard.parse(self.shard) if self.shard is not None else None)

    def policy(self, *, changes: bool) -> Any:
        """How the fleet runs: a command that changes targets stops at the first failure
        unless told to keep going, and may start with canaries; a read visits every target.
        None without a fleet (whose options are then refused), and the fleet's engine is not
        imported."""
        if not self.fleet and (self.shard or self.canary or self.keep_going or self.parallel != 1):
            raise UsageError(
                "--parallel, --canary, --keep-going and --shard run over a fleet: pass --targets FILE or --targets-query SQL"
            )
        if self.canary and not changes:
            raise UsageError("--canary changes a few targets first: it goes with db migrate and apply")
        if not self.fleet:
            return None
        from reconciler.fleet.run import FleetPolicy

        return FleetPolicy(self.parallel, self.canary, self.keep_going or not changes)

    def settings(self, *, embedded_by_default: bool | None = None, needs_database: bool = True) -> Settings:
        """Settings from these options, the environment, .env and the project file. With no
        database named, the embedded server only for a person at a terminal (unless told
        otherwise). With --verbose, each setting and its source on stderr."""
        given = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_SETTINGS}
        settings = config.resolve_settings(
            **given,
            embedded_by_default=_interactive() if embedded_by_default is None else embedded_by_default,
            needs_database=needs_database,
        )
        if settings.layout is not None:
            from reconciler.desired.layouts import with_canonical_layout

            settings = with_canonical_layout(settings)
        if _output.verbose:
            from reconciler.interface.config_view import config_text

            _err(config_text(settings))
        return settings

    def local_settings(self) -> Settings:
        """For the commands that open no connection (playbooks, db server): which database
        would be used does not concern them, so an unnamed one is not refused."""
        return self.settings(embedded_by_default=True, needs_database=False)


# The fleet's options say which targets and how to run over them, not where things are.
FLEET_OPTIONS = ("targets", "targets_query", "parallel", "canary", "keep_going", "shard")
_NOT_SETTINGS = frozenset({"fmt", *FLEET_OPTIONS})
# Only the commands that judge untracked migrations, or show what pending ones lock, replay the history.
REPLAY_OPTIONS = ("shadow_url", "no_replay")  # how to print, not where things are
# The commands that run migrations (plan, which writes the statements they run, takes the timeout).
DDL_LOCK_OPTIONS = ("ddl_lock_timeout", "ddl_lock_retries")
# Taken only by the commands that ask for them (``also``): not every command waits for the
# lock, runs migrations or prints JSON.
_ON_REQUEST = frozenset({"lock_timeout", "fmt", *REPLAY_OPTIONS, *DDL_LOCK_OPTIONS, *FLEET_OPTIONS})
# Every command that opens a connection takes the rest; the commands that open none, these.
DB_OPTIONS = tuple(f.name for f in fields(Shared) if f.name not in _ON_REQUEST)
LOCAL_OPTIONS = ("migrations_dir", "environment", "debug")


@functools.cache
def _shared_parameters() -> dict[str, inspect.Parameter]:
    """Shared's fields as keyword parameters, with their real (Annotated) types: once."""
    hints = typing.get_type_hints(Shared, include_extras=True)
    return {
        f.name: inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
        for f in fields(Shared)
    }


def _command(
    group: typer.Typer, name: str | None, takes: tuple[str, ...], *, sql: bool = False
) -> Callable[[Callable[..., None]], Any]:
    """Register ``body(options: Shared, ...)`` as a command that also takes the shared options
    named in ``takes``: they are appended to its signature (so typer shows them), gathered
    into one Shared, and the body runs inside _guard, which turns errors into one line.
    Only a command registered with ``sql`` prints --format sql; the others refuse it."""
    known = _shared_parameters()
    if unknown := set(takes) - set(known):
        raise ValueError(f"no shared option {sorted(unknown)}")
    shared = [parameter for name, parameter in known.items() if name in takes]  # in one order everywhere

    def register(body: Callable[..., None]) -> Any:
        signature = inspect.signature(body, eval_str=True)
        _options, *own = signature.parameters.values()
        if clash := {p.name for p in own} & set(takes):
            raise ValueError(f"{body.__name__}: {sorted(clash)} are shared options, declared in Shared")

        @functools.wraps(body)
        def command(**kwargs: Any) -> None:
            # A command that does not take the replay options does not replay (unlock must be quick).
            quiet = {} if "no_replay" in takes else {"no_replay": True}
            options = Shared(**{p.name: kwargs.pop(p.name) for p in shared}, **quiet)
            with _guard(options.debug):
                if options.fmt is Format.sql and not sql:
                    raise UsageError(_NO_SQL)
                body(options, **kwargs)

        parameters = [*own, *shared]
        # typer reads the signature, and the annotations for their types (the module's own
        # are strings under `from __future__ import annotations`: these are the real ones).
        command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
        return group.command(name)(command)

    return register


def db_command(group: typer.Typer, name: str | None = None, *, also: tuple[str, ...] = (), sql: bool = False) -> Any:
    """A command that opens a connection: it takes every setting (DB_OPTIONS), and ``also``."""
    return _command(group, name, (*also, *DB_OPTIONS), sql=sql)


_NO_SQL = "--format sql: only db migrate --dry-run and db rollback --dry-run print a SQL script"


def local_command(group: typer.Typer, name: str | None = None, *, also: tuple[str, ...] = ()) -> Any:
    """A command that opens no connection: only the migrations directory and --debug, and ``also``."""
    return _command(group, name, (*also, *LOCAL_OPTIONS))


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


@dataclass(frozen=True)
class Output:
    """How much poststack says on stderr beside results and errors (-q / -v)."""

    quiet: bool = False  # no informational notes, no progress bars
    verbose: bool = False  # the resolved settings and their sources; each step's SQL as it starts


# Chosen once per run by the root callback, which runs before any command; a module value
# because _notify is handed to commands as a plain callback.
_output = Output()


def _notify(message: str) -> None:
    """A note from a command (the embedded server starting, what limited replay's evidence).
    -q drops the informational ones and keeps the warnings, which say ⚠️ (report.py's mark)."""
    if not _output.quiet or message.lstrip().startswith("⚠️"):
        _err(message)


@contextmanager
def _guard(debug: bool) -> Iterator[None]:
    """The boundary: domain errors print one line (plus what to do) and exit with their code."""
    try:
        yield
    except Interrupted as e:
        # Not an error: what a stop signal cut short and what it kept, and the signal's exit code.
        _err(config.mask_url(report.interrupted_text(e.interruption)))
        raise typer.Exit(e.exit_code) from None
    except PoststackError as e:
        if debug:
            raise
        _err(f"❌ {config.mask_url(e.summary)}")
        if e.detail:
            _err(f"   {config.mask_url(e.detail)}")
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
        _err(f"❌ internal error: {config.mask_url(f'{type(e).__name__}: {e}')} (rerun with --debug for a traceback)")
        raise typer.Exit(EXIT_PROBLEMS) from None


def _interactive() -> bool:
    """A person at a terminal rather than a deploy or CI job: only there may a database
    nobody named mean the embedded server. CI systems set CI (true, 1, or their name)."""
    in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")
    return sys.stdin.isatty() and sys.stderr.isatty() and not in_ci


def _emit(
    fmt: Format, result: Any, text: Callable[[Any], str], json_view: Callable[[Any], str], *, ok: bool = True
) -> None:
    """The result in words or JSON; then, unless it is ``ok``, exit 1 (in either format)."""
    typer.echo(json_view(result) if fmt is Format.json else text(result))
    if not ok:
        raise typer.Exit(EXIT_PROBLEMS)


def _notes(notes: tuple[str, ...]) -> None:
    for note in notes:
        _err(f"⚠️  {note}")


class _StepProgress:
    """A progress bar on a TTY; silent otherwise."""

    def __init__(self, label: str) -> None:
        # -v prints each step's SQL instead: a live bar would garble it.
        self.enabled = sys.stderr.isatty() and not _output.quiet and not _output.verbose
        self.label = label
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> _StepProgress:
        return self

    def on_step(self, index: int, step: Any) -> None:
        if _output.verbose:
            _err(f"-- step {index}: {step.reason}")
            for statement in step.statements:
                _err(report.render_statement(statement))
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

    def on_lock_wait(self, wait: LockWait) -> None:
        """A migration's lock_timeout fired and it will be tried again: who holds the lock. A
        warning, not a note: shown with -q too (the run waits on another session)."""
        text = report.lock_wait_text(wait)
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            _err(text)

    def set_total(self, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


# --- top level ----------------------------------------------------------------------------


def _print_version(value: bool) -> None:
    from reconciler.about import version_text

    if value:
        typer.echo(version_text())
        raise typer.Exit()


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def _completion_names(ctx: typer.Context) -> tuple[str, str]:
    """The program's name, and the variable its completion script sets (_POSTSTACK_COMPLETE)."""
    name = ctx.find_root().info_name or "poststack"
    return name, f"_{name.replace('-', '_').upper()}_COMPLETE"


def _show_completion(ctx: typer.Context, shell: Shell | None) -> None:
    if shell is None or ctx.resilient_parsing:
        return
    from typer.completion import get_completion_script

    name, variable = _completion_names(ctx)
    typer.echo(get_completion_script(prog_name=name, complete_var=variable, shell=shell.value))
    raise typer.Exit()


def _install_completion(ctx: typer.Context, shell: Shell | None) -> None:
    if shell is None or ctx.resilient_parsing:
        return
    from typer.completion import install

    name, variable = _completion_names(ctx)
    _, path = install(shell=shell.value, prog_name=name, complete_var=variable)
    typer.echo(f"{shell.value} completion for {name} installed in {path}; it takes effect in a new shell.")
    raise typer.Exit()


@app.callback()
def root(
    show_version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print poststack's version and exit."),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Print only results, warnings and errors: no notes or progress bars on stderr."
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Also print, on stderr, the resolved settings with their sources and the SQL of each step as it runs.",
        ),
    ] = False,
    show_completion: Annotated[
        Shell | None,
        typer.Option(
            "--show-completion",
            metavar="SHELL",
            is_eager=True,
            callback=_show_completion,
            help='Print the completion script for bash, zsh or fish (eval "$(poststack --show-completion bash)").',
        ),
    ] = None,
    install_completion: Annotated[
        Shell | None,
        typer.Option(
            "--install-completion",
            metavar="SHELL",
            is_eager=True,
            callback=_install_completion,
            help="Install completion for bash, zsh or fish in your home directory's shell startup files.",
        ),
    ] = None,
) -> None:
    """Keep a PostgreSQL database's migration history honest."""
    global _output
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose contradict each other; pass one", param_hint="-q/-v")
    _output = Output(quiet=quiet, verbose=verbose)


@app.command()
def version(fmt: FormatOpt = Format.text) -> None:
    """Print poststack's version."""
    from dataclasses import asdict

    from reconciler.about import version as version_info
    from reconciler.about import version_text

    if fmt is Format.sql:
        _err(f"❌ {_NO_SQL}")
        raise typer.Exit(EXIT_USAGE)
    typer.echo(version_text() if fmt is Format.text else json.dumps(asdict(version_info()), indent=2))


@_command(app, "config", (*DB_OPTIONS, "lock_timeout", *DDL_LOCK_OPTIONS, "shadow_url", "fmt"))
def config_command(options: Shared) -> None:
    """Show the settings a command run here would use, each with where it came from
    (flag, variable, .env, project file, environment, default). Connects to nothing."""
    from reconciler.interface.config_view import config_json, config_text

    _emit(options.fmt, options.settings(), config_text, config_json)


@_command(app, None, ("embedded", "debug"))
def demo(
    options: Shared,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the scratch database and project behind to explore.")
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="Server to create the scratch database on [default: embedded]."),
    ] = None,
) -> None:
    """Break a scratch database the ways the troubleshooting guide describes, then diagnose,
    plan and fix it with the real commands, and remove it."""
    from reconciler.demo import run_demo

    # A scratch database is the demo's purpose (the README's first command, run in CI
    # too): the embedded server unless --database-url names a server, whatever DATABASE_URL,
    # .env or an environment say (the demo must not create databases on a server nobody named).
    chosen = replace(options, database_url=database_url, embedded=options.embedded or database_url is None)
    settings = chosen.settings(embedded_by_default=True)
    result = run_demo(settings, lambda event: typer.echo(report.demo_event_text(event)), keep=keep, notify=_notify)
    typer.echo(report.demo_result_text(result))
    if not result.healthy:
        raise typer.Exit(EXIT_PROBLEMS)


Numbering = StrEnum("Numbering", {name: name for name in NUMBERINGS})  # typer's choices, from config's list


@local_command(app, "new", also=("layout", "fmt"))
def new(
    options: Shared,
    name: Annotated[str, typer.Argument(help="What the migration does, as part of its file name: add_users_table.")],
    numbering: Annotated[
        Numbering | None,
        typer.Option(
            "--numbering",
            help="sequence (after the newest, as zero-padded: 003 -> 004) or timestamp (UTC YYYYMMDDHHMMSS) "
            "[default: as the existing migrations are numbered; with none, as the layout's tool does].",
        ),
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Also write the verify script (poststack's layout: NNN_name.verify.sql).")
    ] = False,
) -> None:
    """Write a new migration and its rollback in the migrations directory's layout (detected,
    or --layout; poststack's for a new project), numbered after the existing ones."""
    from reconciler.desired import scaffold
    from reconciler.interface import new_view

    settings = options.local_settings()
    result = scaffold.new_migration(
        settings.migrations_dir,
        name,
        layout=settings.layout,
        numbering=settings.numbering if numbering is None else numbering.value,
        verify=verify,
        now=scaffold.utc_now(),
    )
    _emit(options.fmt, result, new_view.new_text, new_view.new_json)


# --- fleets ---------------------------------------------------------------------------------


def _fleet_targets(options: Shared) -> tuple[Settings, list[Any], tuple[str, ...]]:
    """The settings, this shard's targets, and the shards a report of them covers."""
    from reconciler.fleet.command import choose_targets

    selection = options.selection()

    def settings_for(needs_database: bool) -> Settings:
        return options.settings() if needs_database else options.settings(embedded_by_default=True)

    settings, targets = choose_targets(selection, settings_for, _notify)
    return settings, targets, selection.shards


def _fleet_progress(target_report: Any, done: int, total: int) -> None:
    from reconciler.interface import fleet_view

    _notify(fleet_view.progress_line(target_report, done, total))


def _fleet_emit(options: Shared, fleet_report: Any, *, planned_exit: bool = False, merged: bool = False) -> None:
    """The report; then the stop signal's exit code, 1 unless every target succeeded, or (plan
    --detailed-exitcode) 2 when changes were planned."""
    from reconciler.interface import fleet_view

    if options.fmt is Format.json:
        typer.echo(fleet_view.fleet_json(fleet_report))
    else:
        typer.echo(fleet_view.fleet_text(fleet_report))
    if fleet_report.interrupted and not merged:
        raise typer.Exit(interrupts.exit_code(signal.Signals[fleet_report.interrupted]))
    if fleet_report.targets and all(t.outcome == "unreachable" for t in fleet_report.targets):
        raise typer.Exit(EXIT_DATABASE)  # not one target could be reached: as for one database
    if not fleet_report.ok:
        raise typer.Exit(EXIT_PROBLEMS)
    if planned_exit and any(t.outcome == "planned" for t in fleet_report.targets):
        raise typer.Exit(2)


def _fleet(options: Shared, command: str, job: Any, *, changes: bool) -> Any:
    from reconciler.fleet import command as fleet_command

    if options.fmt is Format.sql:
        raise UsageError(_NO_SQL)
    policy = options.policy(changes=changes)
    settings, targets, shards = _fleet_targets(options)
    return fleet_command.run(
        command, settings, targets, policy, job, shards=shards, notify=_notify, on_done=_fleet_progress
    )


# --- db -------------------------------------------------------------------------------------


@db_command(db_app, also=("lock_timeout", *DDL_LOCK_OPTIONS, "fmt", *REPLAY_OPTIONS, *FLEET_OPTIONS), sql=True)
def migrate(
    options: Shared,
    dry_run: DryRun = False,
    target: Annotated[str | None, typer.Option("--target", help="Apply pending migrations up to this version.")] = None,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Also retry migrations that failed outside a transaction (after cleanup)."),
    ] = False,
    allow_out_of_order: AllowOutOfOrder = False,
    allow_undetermined: AllowUndetermined = False,
) -> None:
    """Apply pending migrations in numeric order, each in its own transaction.

    Flyway repeatables (R__name.sql) run after them, when new or changed. Flyway SQL callbacks
    run too: beforeMigrate.sql and afterMigrate.sql on every run, each in its own transaction;
    beforeEachMigrate.sql and afterEachMigrate.sql inside each migration's transaction.
    --dry-run shows them all, in order, with what each migration locks and rewrites (measured
    in a shadow, as db lint measures it; --no-replay: from the SQL alone); with --format sql,
    the run as one script for psql (migrations, tracking and audit rows)."""
    if options.fleet:
        if dry_run:
            raise UsageError("--dry-run with a fleet: poststack plan --targets shows what would run on each target")
        from reconciler.fleet import jobs

        allow = _allowances(allow_out_of_order, allow_undetermined, retry_failed)
        _fleet_emit(options, _fleet(options, "db migrate", jobs.migrate_job(up_to=target, allow=allow), changes=True))
        return
    options.policy(changes=True)  # fleet options without a fleet are refused
    settings = options.settings()
    if options.fmt is Format.sql:
        _needs_dry_run(dry_run)
        allow = _allowances(allow_out_of_order, allow_undetermined, retry_failed)
        script = commands.migrate_script(settings, target=target, allow=allow, notify=_notify)
        _notes(script.plan.notes)
        typer.echo(_offline().script_sql(script), nl=False)
        return
    with _StepProgress("migrating") as progress:
        result = commands.migrate(
            settings,
            target=target,
            dry_run=dry_run,
            allow=_allowances(allow_out_of_order, allow_undetermined, retry_failed),
            notify=_notify,
            on_step=progress.on_step,
            on_lock_wait=progress.on_lock_wait,
        )
    _notes(result.plan.notes)
    _emit(options.fmt, result, report.run_text, report.run_json, ok=result.ok)


@db_command(db_app, also=("lock_timeout", "fmt"), sql=True)
def rollback(
    options: Shared,
    version: Annotated[
        str, typer.Argument(help="Roll back to this version: every applied migration above it is undone.")
    ],
    dry_run: DryRun = False,
) -> None:
    """Undo every applied migration above VERSION, newest first, with its .rollback.sql. With
    --dry-run --format sql: print the run as one script for psql."""
    settings = options.settings()
    if options.fmt is Format.sql:
        _needs_dry_run(dry_run)
        typer.echo(_offline().script_sql(commands.rollback_script(settings, version, notify=_notify)), nl=False)
        return
    with _StepProgress("rolling back") as progress:
        result = commands.rollback(settings, version, dry_run=dry_run, notify=_notify, on_step=progress.on_step)
    _emit(options.fmt, result, report.run_text, report.run_json, ok=result.ok)


def _needs_dry_run(dry_run: bool) -> None:
    if not dry_run:
        raise UsageError("--format sql prints what would run: pass it with --dry-run (then run the script with psql)")


def _offline() -> Any:
    from reconciler.interface import offline

    return offline


@db_command(db_app, "migration-status", also=("fmt", *FLEET_OPTIONS))
def migration_status(
    options: Shared,
    exit_code: Annotated[
        bool,
        typer.Option(
            "--exit-code",
            help="Exit 1 while any migration is pending or failed, 0 when up to date (as dbmate's status "
            "--exit-code); without it, only a failed migration exits 1.",
        ),
    ] = False,
) -> None:
    """Current version, applied, pending and failed migrations."""
    if options.fleet:
        from reconciler.fleet import jobs

        job = jobs.status_job(exit_code=exit_code)
        _fleet_emit(options, _fleet(options, "db migration-status", job, changes=False))
        return
    options.policy(changes=False)
    result = commands.migration_status(options.settings(), notify=_notify)
    ok = result.up_to_date if exit_code else not result.failed
    _emit(options.fmt, result, report.status_text, report.status_json, ok=ok)


@db_command(db_app, "migration-info", also=("fmt",))
def migration_info(options: Shared) -> None:
    """Migration files with checksums and companions, server version, lock state."""
    result = commands.migration_info(options.settings(), notify=_notify)
    _emit(options.fmt, result, report.info_text, report.info_json)


@db_command(db_app, "create-schema", also=("lock_timeout", "fmt"))
def create_schema(
    options: Shared,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Drop and recreate the tracking and lock tables (their rows are lost; the audit table stays).",
        ),
    ] = False,
) -> None:
    """Create the tracking, lock and audit tables."""
    result = commands.create_schema(options.settings(), force=force, notify=_notify)
    failure = result.execution.failure
    if options.fmt is Format.json:
        typer.echo(report.create_schema_json(result))
    elif failure:
        _err(f"❌ create-schema failed: {failure.message}")
    else:
        typer.echo(report.create_schema_text(result))
    if failure:
        raise typer.Exit(EXIT_PROBLEMS)


@db_command(db_app, also=("fmt",))
def backup(
    options: Shared,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write [default: backups/poststack-<UTC time>.sql].")
    ] = None,
) -> None:
    """Dump the database with a pg_dump matching the server's major version."""
    settings = options.settings()
    on_progress = None
    progress: Any = None
    if sys.stderr.isatty() and not _output.quiet:
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
    if options.fmt is Format.json:
        typer.echo(report.backup_json(result, settings.display_url))
    else:
        typer.echo(report.backup_text(result))


@db_command(db_app, also=("fmt",))
def shell(
    options: Shared,
    command: Annotated[
        list[str] | None,
        typer.Option("-c", "--command", help="Run this SQL and print the result (repeatable: each in order, as psql)."),
    ] = None,
) -> None:
    """Open psql on the database, or run SQL with -c (or from standard input)."""
    settings = options.settings()
    commands_given = list(command or [])
    if not commands_given and not sys.stdin.isatty():
        commands_given = [sys.stdin.read()]
    if len(commands_given) > 1 and options.fmt is Format.json:
        raise UsageError("--format json prints the result of one request: pass one -c (statements may be several)")
    if len(commands_given) > 1:
        done = 0
        try:
            for each in commands.shell_commands(settings, commands_given, notify=_notify):
                for notice in each.notices:
                    _err(notice)
                typer.echo(report.shell_text(each))
                done += 1
        except Exception:
            if done:  # what ran before is committed: say so before the error
                _err(f"⚠️  -c {done + 1} of {len(commands_given)} failed; the {done} before it ran, each on its own")
            raise
        _err(report.database_line(each.database))
        return
    command = commands_given[0] if commands_given else None
    if command is None:
        if options.fmt is Format.json:
            raise UsageError("--format json prints the result of SQL: pass the SQL with -c or on standard input")
        target = commands.interactive_shell(settings, notify=_notify)
        os.execve(target.argv[0], list(target.argv), target.env)
    result = commands.shell_command(settings, command, notify=_notify)
    for notice in result.notices:
        _err(notice)
    if options.fmt is Format.json:  # the database is in the JSON
        typer.echo(report.shell_json(result))
        return
    typer.echo(report.shell_text(result))
    # Last, on stderr: stdout stays the query's result alone, as psql -c prints it.
    _err(report.database_line(result.database))


@db_command(db_app, also=("fmt", *REPLAY_OPTIONS, *FLEET_OPTIONS))
def diagnose(
    options: Shared,
    issue_type: Annotated[list[str] | None, typer.Option("--type", help="Only this issue type (repeatable).")] = None,
    severity: Annotated[str, typer.Option("--severity", help="Only issues at or above: low, medium, high.")] = "low",
) -> None:
    """Compare files, tracking and the live catalog; report every disagreement."""
    from reconciler.diagnosis import diagnose as diagnosis
    from reconciler.diagnosis.issues import IssueType, Severity

    types = [IssueType.parse(t) for value in issue_type or () for t in value.split(",") if t.strip()]
    minimum = Severity.parse(severity)
    if options.fleet:
        from reconciler.fleet import jobs

        job = jobs.diagnose_job(tuple(types) or tuple(IssueType), minimum)
        _fleet_emit(options, _fleet(options, "db diagnose", job, changes=False))
        return
    options.policy(changes=False)
    result = diagnosis.diagnose(options.settings(), types, minimum, notify=_notify)
    _emit(options.fmt, result, report.diagnosis_text, report.diagnosis_json, ok=result.ok)


@db_command(db_app, also=("fmt", *REPLAY_OPTIONS))
def lint(
    options: Shared,
    versions: Annotated[
        list[str] | None, typer.Argument(help="Only these migrations [default: the pending ones].")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Lint the whole history, applied migrations too.")] = False,
    severity: Annotated[
        str, typer.Option("--severity", help="Exit 1 on findings at or above: info, low, medium, high.")
    ] = "low",
) -> None:
    """What the migrations will lock and rewrite: measured in a shadow, sized on this database."""
    from reconciler.diagnosis.lint.base import LintSeverity
    from reconciler.diagnosis.linting import lint_migrations
    from reconciler.interface import lint_view

    minimum = LintSeverity.parse(severity)
    result = lint_migrations(options.settings(), tuple(versions or ()), every, minimum, notify=_notify)
    _emit(options.fmt, result, lint_view.lint_text, lint_view.lint_json, ok=result.ok)


@db_command(db_app, also=("fmt", *REPLAY_OPTIONS, *FLEET_OPTIONS))
def validate(
    options: Shared,
    check_rollbacks: Annotated[
        bool, typer.Option("--check-rollbacks", help="Warn about migrations without a rollback file.")
    ] = False,
    round_trip: Annotated[
        bool,
        typer.Option(
            "--round-trip",
            help="With --check-rollbacks: run every migration, its rollback and the migration again in a "
            "shadow database; fail when a rollback fails, does not restore the schema, or the migration "
            "does not re-apply.",
        ),
    ] = False,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Check the files only (they parse, versions are unique, one layout); read no database. "
            "What the pre-commit hook runs.",
        ),
    ] = False,
) -> None:
    """Every file parses, versions are unique, tracking agrees with the files."""
    from reconciler.diagnosis import diagnose as diagnosis

    if offline and round_trip:
        raise UsageError("--round-trip runs the history in a shadow database: it cannot be used with --offline")
    if round_trip and not check_rollbacks:
        raise UsageError("--round-trip checks rollbacks: pass it with --check-rollbacks")
    if round_trip and options.no_replay:
        raise UsageError("--round-trip runs the history in a shadow database: it cannot be used with --no-replay")
    if options.fleet:
        if offline:
            raise UsageError("--offline reads no database: it checks the files once, not per target")
        from reconciler.fleet import jobs

        job = jobs.validate_job(check_rollbacks=check_rollbacks, round_trip=round_trip)
        _fleet_emit(options, _fleet(options, "db validate", job, changes=False))
        return
    options.policy(changes=False)
    # Offline no database is read, so none need be named (a commit, in a pre-commit hook).
    settings = options.local_settings() if offline else options.settings()
    result = diagnosis.validate(
        settings, check_rollbacks=check_rollbacks, round_trip=round_trip, offline=offline, notify=_notify
    )
    _emit(options.fmt, result, report.validation_text, report.checks_json, ok=result.ok)


@db_command(db_app, "verify-migrations", also=("fmt",))
def verify_migrations(options: Shared) -> None:
    """Every applied migration's file still exists and matches its recorded checksum."""
    from reconciler.diagnosis import diagnose as diagnosis

    result = diagnosis.verify_migrations(options.settings(), notify=_notify)
    _emit(options.fmt, result, report.verification_text, report.checks_json, ok=result.ok)


# --- remediation: plan, apply, and the guide's fix commands -----------------------------

PlaybookOpt = Annotated[list[str] | None, typer.Option("--playbook", help="Use this playbook (repeatable).")]
IssueTypeOpt = Annotated[list[str] | None, typer.Option("--issue-type", help="Only this issue type (repeatable).")]


def _issue_types(values: list[str] | None) -> tuple[str, ...]:
    from reconciler.remediation.planner import issue_type_values

    return issue_type_values(values or ())


def _request(
    playbook: list[str] | None, issue_type: list[str] | None, force: bool, ooo: bool, undetermined: bool
) -> Any:
    from reconciler.remediation.planner import remediation_request

    return remediation_request(
        playbook or (), issue_type or (), force=force, allow_out_of_order=ooo, allow_undetermined=undetermined
    )


def _run_plan(settings: Settings, plan: Any) -> Any:
    from reconciler.remediation import fixes as remediation

    with _StepProgress("applying") as progress:
        return remediation.checked_apply(
            settings, plan, notify=_notify, on_step=progress.on_step, on_lock_wait=progress.on_lock_wait
        )


@db_command(app, "plan", also=("fmt", "ddl_lock_timeout", *REPLAY_OPTIONS, *FLEET_OPTIONS))
def plan_command(
    options: Shared,
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
) -> None:
    """Diagnose, choose playbooks, and show exactly what apply would run."""
    from reconciler.remediation import fixes as remediation
    from reconciler.remediation.planner import HELD

    request = _request(playbook, issue_type, force, allow_out_of_order, allow_undetermined)
    if options.fleet:
        from reconciler.fleet import jobs
        from reconciler.fleet.plans import save_fleet_plan

        fleet_report = _fleet(options, "plan", jobs.plan_job(request), changes=False)
        if out is not None:
            save_fleet_plan(list(fleet_report.targets), out)
            given = f"--targets {options.targets}" if options.targets is not None else "--targets-query ..."
            _err(f"Saved to {out}; run it with: poststack apply {out} {given}")
        _fleet_emit(options, fleet_report, planned_exit=detailed_exitcode)
        return
    options.policy(changes=False)
    settings = options.settings()
    reviewed = remediation.plan_for_review(settings, request, notify=_notify)
    plan = reviewed.plan
    if out is not None:
        remediation.save_plan(plan, out, {"lint": report.step_lint_json(plan, reviewed.lint)})  # as --format json
    _emit(
        options.fmt,
        reviewed,
        lambda r: report.remediation_plan_text(r.plan, r.lint),
        lambda r: report.remediation_plan_json(r.plan, r.lint),
    )
    if out is not None and options.fmt is Format.text:
        typer.echo(f"Saved to {out}; run it with: poststack apply {out}")
    # Held migrations are changes the database still needs, though a person must decide them.
    if detailed_exitcode and any(s.action != "manual" or s.playbook == HELD for s in plan.steps):
        raise typer.Exit(2)


@db_command(app, "apply", also=("fmt", "lock_timeout", *DDL_LOCK_OPTIONS, *REPLAY_OPTIONS, *FLEET_OPTIONS))
def apply_command(
    options: Shared,
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
    partial: Annotated[
        bool,
        typer.Option(
            "--partial",
            help="With a saved fleet plan: run the targets that are as planned, and refuse only those that changed "
            "(without it, one changed target refuses the whole plan).",
        ),
    ] = False,
) -> None:
    """Run a saved plan, or plan afresh and run it after you approve."""
    from reconciler.remediation import fixes as remediation

    fleet_plan = plan_file is not None and _is_fleet_plan(plan_file)
    if options.fleet or fleet_plan:
        _apply_fleet(
            options,
            plan_file,
            fleet_plan=fleet_plan,
            partial=partial,
            auto_approve=auto_approve,
            confirm=confirm,
            request=_request(playbook, issue_type, force, allow_out_of_order, allow_undetermined),
            chose=bool(playbook or issue_type or force or allow_out_of_order or allow_undetermined),
        )
        return
    options.policy(changes=True)
    if partial:
        raise UsageError("--partial applies part of a saved fleet plan: pass the plan file and --targets")
    settings = options.settings()
    request = None
    linted = None  # a saved plan is shown as it was saved
    if plan_file is not None:
        if playbook or issue_type or force or allow_out_of_order or allow_undetermined:
            raise UsageError(
                "--playbook, --issue-type, --force and --allow-* choose a new plan; a saved plan is applied as it is"
            )
        plan = remediation.load_plan(plan_file)
    else:
        request = _request(playbook, issue_type, force, allow_out_of_order, allow_undetermined)
        reviewed = remediation.plan_for_review(settings, request, _notify)
        plan, linted = reviewed.plan, reviewed.lint
    runnable = [s for s in plan.steps if s.action != "manual"]
    # A plan of the whole database answers for its health; one playbook or issue type,
    # only for what it fixes.
    whole = not (playbook or issue_type)
    if options.fmt is Format.text:
        typer.echo(report.remediation_plan_text(plan, linted))
    if runnable:
        _approve(plan, saved=plan_file is not None, auto_approve=auto_approve, confirm=confirm)
        # Approved in advance (--auto-approve, no plan file): if another run changed the
        # database while this one waited for the lock, plan again from what is there.
        replan = request if (auto_approve and plan_file is None and not plan.destructive) else None
        with _StepProgress("applying") as progress:
            result = remediation.apply_plan(
                settings,
                plan,
                notify=_notify,
                on_step=progress.on_step,
                replan=replan,
                whole=whole,
                on_lock_wait=progress.on_lock_wait,
            )
        if result.plan is not plan:
            _err("⚠️  The database changed while waiting for the migration lock; planned again and applied that.")
    else:
        result = remediation.apply_plan(settings, plan, notify=_notify, whole=whole)  # nothing runs; re-diagnoses
    if options.fmt is Format.text:
        typer.echo("")
    _emit(options.fmt, result, report.apply_text, report.apply_json, ok=result.ok)


def _is_fleet_plan(path: Path) -> bool:
    from reconciler.fleet.plans import is_fleet_plan

    return is_fleet_plan(path)


def _apply_fleet(
    options: Shared,
    plan_file: Path | None,
    *,
    fleet_plan: bool,
    partial: bool,
    auto_approve: bool,
    confirm: bool,
    request: Any,
    chose: bool,
) -> None:
    """apply over a fleet: a saved fleet plan, each target's fingerprint checked first; or,
    approved in advance, each target planned and applied in one go."""
    from reconciler.fleet import command as fleet_command
    from reconciler.fleet import jobs

    if not options.fleet:
        raise UsageError(f"{plan_file} is a fleet plan: pass the --targets (or --targets-query) it was made with")
    if plan_file is not None and not fleet_plan:
        raise UsageError(
            f"{plan_file} is one database's plan, not a fleet's: make one with poststack plan --targets ... --out FILE"
        )
    if options.fmt is Format.sql:
        raise UsageError(_NO_SQL)
    policy = options.policy(changes=True)
    settings, targets, shards = _fleet_targets(options)
    if plan_file is not None:
        if chose:
            raise UsageError(
                "--playbook, --issue-type, --force and --allow-* choose a new plan; a saved plan is applied as it is"
            )
        fleet_report = fleet_command.apply_saved(
            settings,
            targets,
            plan_file,
            policy,
            partial=partial,
            confirm=confirm,
            shards=shards,
            notify=_notify,
            on_done=_fleet_progress,
        )
    else:
        if partial:
            raise UsageError("--partial applies part of a saved fleet plan: pass the plan file")
        if not auto_approve:
            raise UsageError(
                "a fleet is not approved target by target: review poststack plan --targets ... --out FILE, then "
                "apply FILE; or pass --auto-approve to plan and apply each target in one go"
            )
        job = jobs.apply_job(None, request, confirm=confirm)
        fleet_report = fleet_command.run(
            "apply", settings, targets, policy, job, shards=shards, notify=_notify, on_done=_fleet_progress
        )
    _fleet_emit(options, fleet_report)


def _approve(plan: Any, *, saved: bool, auto_approve: bool, confirm: bool) -> None:
    """A destructive plan needs --confirm (or the database name typed on a TTY); a fresh
    plan needs a yes on a TTY, or --auto-approve. Without a TTY nothing is assumed."""
    interactive = sys.stdin.isatty()
    if plan.destructive and not confirm:
        if not interactive:
            raise UsageError("this plan is destructive: pass --confirm to apply it (it takes a backup first)")
        typed = typer.prompt(
            f"This plan is DESTRUCTIVE. Type the database name ({plan.database}) to apply it", err=True
        )
        if typed.strip() != plan.database:
            raise UsageError("not confirmed: nothing was applied")
        return
    if saved or auto_approve or plan.destructive:
        return
    if not interactive:
        raise UsageError("refusing to apply without approval: no terminal to ask on; pass --auto-approve")
    if not typer.confirm("Apply this plan?", default=False, err=True):  # stdout is the result (JSON)
        raise UsageError("not approved: nothing was applied")


def _unrun(
    options: Shared, settings: Settings, plan: Any, text: str, *, dry_run: bool = False, ok: bool = True
) -> None:
    """A fix command's plan that was not run (a dry run, or nothing to run): ``text``, or the
    plan as the JSON result of a run that ran nothing."""
    if options.fmt is Format.json:
        typer.echo(report.fix_plan_json(plan, settings.display_url, dry_run=dry_run, ok=ok))
    elif text:
        typer.echo(text)


def _fixed(options: Shared, result: Any, text: Callable[[Any], str]) -> None:
    """A fix command's run: its result in words or JSON; exit 1 unless it went well."""
    _emit(options.fmt, result, text, report.fix_result_json, ok=result.ok)


@db_command(db_app, also=("lock_timeout", "fmt", *REPLAY_OPTIONS))
def recover(
    options: Shared,
    versions: Annotated[
        list[str] | None,
        typer.Argument(help="Only these versions; with --force, track them even without evidence (your word)."),
    ] = None,
    dry_run: DryRun = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Also track undetermined migrations that migrate holds (or the VERSIONS named)."),
    ] = False,
    trust_order: Annotated[
        bool,
        typer.Option(
            "--trust-order",
            help="Also track data-only migrations shown applied only by their place between two applied ones.",
        ),
    ] = False,
) -> None:
    """Track migrations the catalog shows applied but tracking does not (missing_tracking)."""
    from reconciler.remediation import fixes as remediation

    settings = options.settings()
    plan = remediation.recover(
        settings, force=force, versions=tuple(versions or ()), trust_order=trust_order, notify=_notify
    )
    if dry_run:
        _unrun(options, settings, plan, report.recover_dry_run_text(plan), dry_run=True)
        return
    # Versions named are checked afterwards even when none can be tracked: "nothing to
    # recover" would say they are, or need not be.
    if not versions and not any(s.action == "track_migration" for s in plan.steps):
        _unrun(options, settings, plan, report.nothing_to_recover_text(plan))
        return
    # A warning before the result: on stdout beside the text, on stderr beside JSON.
    warn = typer.echo if options.fmt is Format.text else _err
    for issue in plan.issues:
        if issue["type"] == "undetermined" and any(s.version == issue["version"] for s in plan.steps):
            warn(f"⚠️  Including migration {issue['version']} without evidence (--force): {issue['details']['reason']}")
    _fixed(options, _run_plan(settings, plan), report.recover_text)


@db_command(db_app, also=("lock_timeout", "fmt", *REPLAY_OPTIONS))
def baseline(
    options: Shared,
    version: Annotated[str, typer.Argument(help="Record every migration up to and including this version as applied.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the evidence and exactly what would be recorded; change nothing.")
    ] = False,
    confirm: Annotated[
        bool,
        typer.Option(
            "--confirm", help="Record them even where the evidence says they are not applied (and do not ask)."
        ),
    ] = False,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask before recording.")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Save the plan instead of running it (poststack apply FILE runs it).")
    ] = None,
) -> None:
    """Declare a database applied up to VERSION: record every untracked migration up to it as
    applied without running it, after showing what the evidence says of each. Tracked ones
    are left as they are; later ones stay pending for db migrate."""
    from reconciler.interface import baseline_report as view
    from reconciler.remediation import baseline as baselining
    from reconciler.remediation import fixes as remediation

    settings = options.settings()
    planned = baselining.plan_baseline(settings, version, notify=_notify)
    if options.fmt is Format.text:
        typer.echo(view.baseline_plan_text(planned))
    elif not (dry_run or confirm or auto_approve or planned.nothing_to_do):
        _err(view.baseline_plan_text(planned))  # the evidence, before any question (stdout is the JSON)
    if not dry_run:
        baselining.refuse_contradicted(planned, confirm=confirm)
    if out is not None and not (dry_run or planned.nothing_to_do):
        remediation.save_plan(planned.plan, out)
        _err(f"Saved to {out}; run it with: poststack apply {out}")
        dry_run = True
    if dry_run or planned.nothing_to_do:
        if options.fmt is Format.json:
            typer.echo(view.baseline_json(planned, None, settings.display_url, dry_run=dry_run))
        else:
            typer.echo("\n" + view.baseline_text(planned, None))
        return
    if not confirm:
        _approve(planned.plan, saved=False, auto_approve=auto_approve, confirm=False)
    result = _run_plan(settings, planned.plan)
    if options.fmt is Format.text:
        typer.echo("")
    _emit(
        options.fmt,
        result,
        functools.partial(view.baseline_text, planned),
        lambda r: view.baseline_json(planned, r, settings.display_url, dry_run=False),
        ok=result.ok,
    )


@db_command(db_app, "import", also=("lock_timeout", "fmt"))
def import_command(
    options: Shared,
    from_tool: Annotated[
        str,
        typer.Option(
            "--from", help="The tool whose history to take over: flyway, dbmate, golang-migrate, sqlx, diesel, prisma."
        ),
    ],
    from_schema: Annotated[
        str | None, typer.Option("--from-schema", help="Schema of its history table [default: the current schema].")
    ] = None,
    from_table: Annotated[
        str | None, typer.Option("--from-table", help="Its history table, if not the tool's default name.")
    ] = None,
    dry_run: DryRun = False,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask before importing.")] = False,
) -> None:
    """Record another tool's migration history in poststack's tracking, cross-checked
    against the catalog; the other tool's table is left as it is."""
    from reconciler.remediation import fixes as remediation

    settings = options.settings()
    imported = remediation.import_history(
        settings, from_tool, from_schema=from_schema, from_table=from_table, notify=_notify
    )
    if options.fmt is Format.text:
        typer.echo(report.import_plan_text(imported))
    runnable = any(s.action != "manual" for s in imported.plan.steps)
    result = None
    if runnable and not dry_run:
        _approve(imported.plan, saved=False, auto_approve=auto_approve, confirm=False)
        result = _run_plan(settings, imported.plan)
    if options.fmt is Format.json:
        typer.echo(report.import_json(imported, result, settings.display_url, dry_run=dry_run))
    elif dry_run:
        typer.echo("Dry run: nothing was imported.")
    else:
        typer.echo("\n" + report.import_text(imported, result))
    if imported.refused or (result is not None and not result.ok):
        raise typer.Exit(EXIT_PROBLEMS)


@db_command(db_app, also=("fmt", *REPLAY_OPTIONS))
def formalize(
    options: Shared,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", metavar="SCHEMA", help="Only the objects in this schema (repeatable)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Describe the migration: NNN_formalize_<name>.sql [default: the objects' schema, or orphans].",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the migration and its rollback; write nothing.")
    ] = False,
) -> None:
    """Write the migration (and its rollback) that creates the objects no migration creates
    (orphaned_schema), checked in a shadow database. The database is only read."""
    from reconciler.remediation import formalize as formalizing

    result = formalizing.formalize(
        options.settings(), only=tuple(only or ()), name=name, dry_run=dry_run, notify=_notify
    )
    _emit(options.fmt, result, report.formalize_text, report.formalize_json, ok=result.ok)


@db_command(db_app, also=("lock_timeout", "fmt"))
def repair(
    options: Shared,
    issue_type: Annotated[
        list[str] | None,
        typer.Option("--issue-type", help="checksum_mismatch, duplicate_version or partial_migration."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Also clear failed attempts that ran outside a transaction.")
    ] = False,
    dry_run: DryRun = False,
) -> None:
    """Repair tracking rows: accept edited files, drop duplicate rows, clear failed attempts."""
    from reconciler.remediation import fixes as remediation

    settings = options.settings()
    plan = remediation.repair(settings, issue_types=_issue_types(issue_type), force=force, notify=_notify)
    if dry_run:
        _unrun(options, settings, plan, report.remediation_plan_text(plan), dry_run=True)
        return
    _fixed(options, _run_plan(settings, plan), functools.partial(report.front_end_text, "repair"))


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
    options: Shared, *, locks: bool, duplicates: bool, confirm: bool, terminate: bool, legacy: bool, wait: bool
) -> None:
    from reconciler.remediation import fixes as remediation

    settings = options.settings()
    plan = remediation.clean(
        settings,
        locks=locks,
        duplicates=duplicates,
        terminate=terminate,
        wait=wait,
        operation="unlock" if legacy else "clean",
        notify=_notify,
    )
    runnable = [s for s in plan.steps if s.action != "manual"]
    manual = [s for s in plan.steps if s.action == "manual"]
    if not runnable:
        for step in manual:
            _err(f"❌ {step.reason.removeprefix('MANUAL: ')}")
        nothing = "✅ The migration lock is not held; nothing to release." if legacy else "✅ Nothing to clean."
        _unrun(options, settings, plan, "" if manual else nothing, ok=not manual)
        if manual:
            raise typer.Exit(EXIT_PROBLEMS)
        return
    if not confirm:
        preview = f"{report.remediation_plan_text(plan)}\nNothing changed: add --confirm to do it."
        _unrun(options, settings, plan, preview, dry_run=True)
        if options.fmt is Format.json:
            _err("Nothing changed: add --confirm to do it.")
        raise typer.Exit(EXIT_USAGE)
    result = _run_plan(settings, plan)
    # unlock-migrations says what it has always said: the lock released, and whose it was.
    _fixed(
        options,
        result,
        report.unlock_text if legacy and result.ok else functools.partial(report.front_end_text, "clean"),
    )


@db_command(db_app, also=("lock_timeout", "fmt"))
def clean(
    options: Shared,
    locks: Annotated[bool, typer.Option("--locks", help="Release a lock left by a crashed or killed run.")] = False,
    duplicates: Annotated[
        bool, typer.Option("--duplicates", help="Delete duplicate tracking rows (the oldest stays).")
    ] = False,
    confirm: ConfirmOpt = False,
    terminate: TerminateOpt = False,
    wait: WaitOpt = False,
) -> None:
    """Clean up stuck locks and duplicate tracking rows."""
    _clean(options, locks=locks, duplicates=duplicates, confirm=confirm, terminate=terminate, legacy=False, wait=wait)


@db_command(db_app, "unlock-migrations", also=("lock_timeout", "fmt"))
def unlock_migrations(
    options: Shared, confirm: ConfirmOpt = False, terminate: TerminateOpt = False, wait: WaitOpt = False
) -> None:
    """Release a migration lock left by a crashed or killed run (same as db clean --locks)."""
    _clean(options, locks=True, duplicates=False, confirm=confirm, terminate=terminate, legacy=True, wait=wait)


@local_command(playbooks_app, "list", also=("fmt",))
def playbooks_list(options: Shared) -> None:
    """Built-in playbooks and the project's own (playbooks/ beside the migrations)."""
    from reconciler.remediation.playbook import load_all

    books = load_all(options.local_settings().migrations_dir)
    _emit(options.fmt, books, report.playbooks_text, lambda b: report.playbooks_json(b.values()))


@local_command(playbooks_app, "show", also=("fmt",))
def playbooks_show(options: Shared, name: Annotated[str, typer.Argument(help="Playbook name.")]) -> None:
    """Show a playbook's steps."""
    from reconciler.remediation.playbook import find, load_all

    book = find(load_all(options.local_settings().migrations_dir), name)
    _emit(options.fmt, book, report.playbook_show_text, report.playbook_show_json)


@local_command(playbooks_app, "validate", also=("fmt",))
def playbooks_validate(
    options: Shared,
    file: Annotated[Path | None, typer.Argument(help="A playbook file; without it, every playbook in use.")] = None,
) -> None:
    """Check playbooks against the schema and the action registry."""
    from reconciler.remediation.playbook import load_all, load_playbook

    settings = options.local_settings()
    books = [load_playbook(file)] if file is not None else list(load_all(settings.migrations_dir).values())
    if options.fmt is Format.json:  # an invalid playbook is an error above, as in text
        typer.echo(report.playbooks_json(books))
        return
    for book in books:
        typer.echo(f"✅ {book.path}: valid ({book.name} v{book.version}, {len(book.steps)} steps)")


# --- report ---------------------------------------------------------------------------------


@_command(report_app, "merge", ("fmt", "debug"))
def report_merge(
    options: Shared,
    files: Annotated[list[Path], typer.Argument(help="Fleet reports (--format json), one per shard.")],
) -> None:
    """Join the shards' fleet reports into one, as one unsharded run would have reported it."""
    from reconciler.fleet.command import load_report, merge

    merged = merge([load_report(path) for path in files], [str(path) for path in files])
    _fleet_emit(options, merged, merged=True)  # a stopped shard is a failed report here, not a signal


# --- db server --------------------------------------------------------------------------------


@local_command(server_app, "status", also=("fmt",))
def server_status(options: Shared) -> None:
    """Is the embedded PostgreSQL initialized and running?"""
    result = commands.server_status(options.local_settings())
    _emit(options.fmt, result, report.server_status_text, report.to_json)


@local_command(server_app, "stop", also=("fmt",))
def server_stop(options: Shared) -> None:
    """Stop the embedded PostgreSQL (the next command starts it again)."""
    settings = options.local_settings()
    stopped = commands.server_stop(settings)
    if options.fmt is Format.json:
        typer.echo(report.server_stop_json(settings.embedded_data_dir, stopped))
        return
    typer.echo(
        f"✅ Stopped the embedded PostgreSQL in {settings.embedded_data_dir}"
        if stopped
        else f"The embedded PostgreSQL in {settings.embedded_data_dir} is not running"
    )


def _only_the_command_named(argv: list[str]) -> None:
    """Typer builds every command's parameters before it runs one: when the arguments name a
    command, only that command (and the groups on its path) is kept, and only it is built.
    Anything else (no command, an unknown name, completion) leaves the whole app, so help
    listings and "No such command" read as ever."""
    if os.environ.get("_POSTSTACK_COMPLETE") or {"--show-completion", "--install-completion"} & set(argv):
        return
    words = [word for word in argv if not word.startswith("-")]  # no group takes an option with a value
    group, path = app, []
    for word in words:
        groups = [g for g in group.registered_groups if g.name == word]
        if groups:
            path.append((group, groups[0]))
            group = groups[0].typer_instance
            continue
        named = [c for c in group.registered_commands if (c.name or _command_name(c)) == word]
        if not named:
            return
        group.registered_commands, group.registered_groups = named, []
        break
    else:
        # A group's help (asked for, or its name alone): its listing names its subgroups but
        # shows none of their commands, so those are not built; its own commands show only
        # their names and first lines, so they are built without their options.
        for sub in group.registered_groups:
            sub.typer_instance = _emptied(sub.typer_instance)
        group.registered_commands = [_listed_only(info) for info in group.registered_commands]
    for parent, kept in path:
        parent.registered_commands, parent.registered_groups = [], [kept]


def _emptied(group: typer.Typer) -> typer.Typer:
    """``group`` without its commands and subgroups: a copy, its help and settings kept."""
    import copy

    empty = copy.copy(group)
    empty.registered_commands, empty.registered_groups = [], []
    return empty


def _listed_only(info: Any) -> Any:
    """``info`` as a help listing shows it (its name and help) with no parameters to build:
    a listing never runs the command, so its options are never read."""
    import copy

    callback = info.callback

    def listed() -> None:
        raise AssertionError(f"{callback.__name__} was built for a listing only")

    listed.__name__, listed.__doc__ = callback.__name__, callback.__doc__
    listed.__module__, listed.__qualname__ = callback.__module__, callback.__qualname__
    shown = copy.copy(info)
    shown.callback = listed
    return shown


def _command_name(info: Any) -> str:
    return typer.main.get_command_name(info.callback.__name__)


def main() -> None:
    # SIGINT (Ctrl-C) and SIGTERM (a deploy system stopping us) cancel the running statement;
    # the open step is rolled back and recorded, the migration lock released (interrupts.py).
    interrupts.install()
    # Typer's completion classes answer the script's requests (_POSTSTACK_COMPLETE=complete_bash).
    from typer.completion import completion_init

    completion_init()
    _only_the_command_named(sys.argv[1:])
    try:
        app()
    except SystemExit as e:
        # click reports usage errors with exit code 2, which is ours too.
        code = e.code if isinstance(e.code, int) else (EXIT_USAGE if e.code else 0)
        sys.exit(code)


if __name__ == "__main__":
    main()
