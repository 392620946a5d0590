"""poststack from Python: the CLI's verbs as functions, for an app's start-up, a deploy hook
or a test suite.

    from reconciler import api

    result = api.migrate(engine, migrations_dir="migrations")
    assert result.ok, result.failure

Every function takes the database first: a URL (``postgresql://…``, or ``"embedded"`` for
poststack's embedded server), a SQLAlchemy ``Engine`` or ``Connection``, or a psycopg2
connection; ``None`` uses the one the configuration names (``POSTSTACK_DATABASE_URL``,
``.env``, ``poststack.toml``), as the CLI does. poststack works on a connection of its own
with the parameters yours connected with (``reconciler/api/handles.py`` says why), and leaves yours, and any
transaction on it, alone; it refuses a connection whose session has another search_path or
role than a fresh one would have (``SET search_path``: put it in the connection's options
instead), and ``migrate``, ``rollback`` and ``apply`` refuse a connection with a transaction
open (its locks could hold up the migrations).

The settings are the CLI's, read the same way (flags become keyword arguments: ``Options``),
and so are the results: the dataclasses the CLI renders, never printed. Messages the CLI
prints on stderr (which server is used, notices) go to ``notify``, or else to the
``poststack`` logger at INFO. Errors are poststack's: ``PoststackError`` and its kinds, each
with a one-line ``summary``, a ``detail`` saying what to do, and the CLI's ``exit_code``.

Several processes may call ``migrate`` at once on one database (replicas starting together):
one takes the migration lock and applies; the others wait for it (``lock_timeout``, 30 s by
default), then find nothing left to apply. Signals are the application's: poststack installs
no handler and no psycopg2 wait callback when it is a library. A Ctrl-C reaches Python only
once the statement on its way returns (libpq waits for it); then poststack stops cleanly (the
step rolled back and recorded, the lock released) and raises KeyboardInterrupt, its
``interruption`` saying where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypedDict, Unpack

# Imported, not only named for type checkers: typing.get_type_hints (and what reads it:
# typer, pydantic, a docs generator) resolves the signatures at run time.
import psycopg2.extensions
from sqlalchemy.engine import Connection, Engine

from reconciler import commands
from reconciler.commands import StatusResult
from reconciler.config import Settings, resolve_settings
from reconciler.diagnosis.diagnose import Diagnosis
from reconciler.diagnosis.issues import IssueType, Severity
from reconciler.errors import (
    DatabaseUnavailable,
    LockTimeout,
    MigrationFileError,
    OperationFailed,
    PoststackError,
    UsageError,
    stopping_as_keyboard_interrupt,
)
from reconciler.remediation.fixes import ApplyResult, ReviewedPlan
from reconciler.remediation.plan import Plan
from reconciler.remediation.runner import MigrationsHeld, RunResult

__all__ = [
    "ApplyResult",
    "Database",
    "DatabaseUnavailable",
    "Diagnosis",
    "LockTimeout",
    "MigrationFileError",
    "MigrationsHeld",
    "OperationFailed",
    "Options",
    "Plan",
    "PoststackError",
    "ReviewedPlan",
    "RunResult",
    "StatusResult",
    "UsageError",
    "apply",
    "diagnose",
    "migrate",
    "plan",
    "recover",
    "rollback",
    "status",
]

Database = str | Engine | Connection | psycopg2.extensions.connection | None
Notify = Callable[[str], None]
logger = logging.getLogger("poststack")


class Options(TypedDict, total=False):
    """Where things are and how long to wait: the CLI's shared flags, by the same names.
    Unset, each comes from the environment, ``.env`` and ``poststack.toml`` as for the CLI."""

    migrations_dir: str | Path  # --migrations-dir
    schema: str  # --schema: the tracking tables' schema
    table_prefix: str  # --table-prefix
    layout: str  # --layout: poststack, flyway, dbmate, ... (detected when unset)
    shadow_url: str  # --shadow-url: where to replay the history
    replay: bool  # False: --no-replay
    lock_timeout: float  # --lock-timeout, seconds: how long to wait for the migration lock
    ddl_lock_timeout: float  # --ddl-lock-timeout
    ddl_lock_retries: int  # --ddl-lock-retries
    environment: str  # --env: an [environments.NAME] of poststack.toml
    project: str | Path  # the directory poststack.toml and .env are read from; default: the current one
    notify: Notify  # what the CLI says on stderr; default: the poststack logger, at INFO


# --- the verbs --------------------------------------------------------------------------------


def migrate(
    database: Database = None,
    *,
    target: str | None = None,
    dry_run: bool = False,
    allow_out_of_order: bool = False,
    allow_undetermined: bool = False,
    retry_failed: bool = False,
    **options: Unpack[Options],
) -> RunResult:
    """``poststack db migrate``: apply the pending migrations (up to ``target``), each in its own
    transaction, under the migration lock. ``result.ok`` says whether all of them applied;
    ``result.failure`` says which did not, where, and the server's error. A migration that may
    have run already (applied by hand, tracking lost) is held for a person, as in the CLI:
    nothing runs, and ``MigrationsHeld`` says which (``versions``) and why. ``recover`` tracks
    them without running them; ``allow_undetermined`` runs them anyway: only for migrations
    you know did not run."""
    from reconciler.diagnosis.pending import Allowances

    settings, notify = _settings(database, options, writes=not dry_run)
    allow = Allowances(out_of_order=allow_out_of_order, undetermined=allow_undetermined, retry_failed=retry_failed)
    with stopping_as_keyboard_interrupt():
        result = commands.migrate(settings, target=target, dry_run=dry_run, allow=allow, notify=notify)
    for note in result.plan.notes:  # what the CLI warns of on stderr (an edited applied migration, ...)
        notify(note)
    return result


def rollback(database: Database, version: str, *, dry_run: bool = False, **options: Unpack[Options]) -> RunResult:
    """``poststack db rollback VERSION``: undo every applied migration above ``version``, newest
    first, each with its rollback file."""
    if not isinstance(version, str):
        raise UsageError(f"rollback takes the version to roll back to, such as '003' ('0': all), not {version!r}")
    settings, notify = _settings(database, options, writes=not dry_run)
    with stopping_as_keyboard_interrupt():
        return commands.rollback(settings, version, dry_run=dry_run, notify=notify)


def recover(
    database: Database = None,
    versions: Iterable[str] = (),
    *,
    force: bool = False,
    trust_order: bool = False,
    **options: Unpack[Options],
) -> ApplyResult:
    """``poststack db recover``: track, without running them, the migrations the catalog shows
    applied but tracking does not (tracking lost, or applied by hand). ``force``: also the
    undetermined ones ``migrate`` holds, or the ``versions`` named even without evidence (your
    word that they ran); ``trust_order``: also data-only migrations shown applied only by
    their place between two applied ones. ``versions``: only these are tracked, and the result
    fails unless each of them is. ``result.plan.steps``: what was tracked; ``result.remaining``:
    what a fresh diagnosis still finds (``ok`` answers for what recover fixes: a migration left
    untracked for want of evidence is there, and ``migrate`` still holds it)."""
    from reconciler.remediation import fixes

    chosen = _strings("versions", versions)
    settings, notify = _settings(database, options, writes=True)
    planned = fixes.recover(settings, force=force, versions=chosen, trust_order=trust_order, notify=notify)
    with stopping_as_keyboard_interrupt():
        return fixes.checked_apply(settings, planned, notify=notify)


def status(database: Database = None, **options: Unpack[Options]) -> StatusResult:
    """``poststack db migration-status``: the current version; applied, pending and failed
    migrations (``up_to_date`` when nothing is pending or failed)."""
    settings, notify = _settings(database, options, writes=False)
    return commands.migration_status(settings, notify=notify)


def diagnose(
    database: Database = None,
    *,
    types: Iterable[str | IssueType] = (),
    severity: str | Severity = Severity.LOW,
    **options: Unpack[Options],
) -> Diagnosis:
    """``poststack db diagnose``: compare files, tracking and the live catalog (and the history
    replayed in a shadow); every disagreement is an ``Issue``. ``result.ok`` when none was found."""
    from reconciler.diagnosis import diagnose as diagnosis

    settings, notify = _settings(database, options, writes=False)
    chosen = [t if isinstance(t, IssueType) else IssueType.parse(t) for t in _strings("types", types, IssueType)]
    minimum = severity if isinstance(severity, Severity) else Severity.parse(severity)
    return diagnosis.diagnose(settings, chosen, minimum, notify=notify)


def plan(
    database: Database = None,
    *,
    playbooks: Iterable[str] = (),
    issue_types: Iterable[str] = (),
    force: bool = False,
    allow_out_of_order: bool = False,
    allow_undetermined: bool = False,
    **options: Unpack[Options],
) -> ReviewedPlan:
    """``poststack plan``: diagnose, choose playbooks, and say exactly what ``apply`` would run
    (``result.plan.steps``); ``result.lint``: what the migrations it runs lock and rewrite.
    Hand it to ``apply`` to run it as reviewed (refused if the database changed since), or
    save ``result.plan`` with ``reconciler.remediation.fixes.save_plan`` to apply it later."""
    from reconciler.remediation import fixes
    from reconciler.remediation.planner import remediation_request

    settings, notify = _settings(database, options, writes=False)
    request = remediation_request(
        _strings("playbooks", playbooks),
        _strings("issue_types", issue_types),
        force=force,
        allow_out_of_order=allow_out_of_order,
        allow_undetermined=allow_undetermined,
    )
    return fixes.plan_for_review(settings, request, notify)


def apply(
    database: Database = None,
    plan: ReviewedPlan | Plan | str | Path | None = None,
    *,
    confirm: bool = False,
    playbooks: Iterable[str] = (),
    issue_types: Iterable[str] = (),
    force: bool = False,
    allow_out_of_order: bool = False,
    allow_undetermined: bool = False,
    **options: Unpack[Options],
) -> ApplyResult:
    """``poststack apply --auto-approve``: run ``plan`` (what ``plan()`` returned, or a file saved
    with ``poststack plan --out``), or plan afresh and run that. Calling it is the approval; a
    destructive plan also needs ``confirm=True`` (it backs up first), as ``--confirm``. A plan
    made before the database changed is refused (stale), and nothing runs."""
    from reconciler.remediation import fixes
    from reconciler.remediation.planner import remediation_request

    settings, notify = _settings(database, options, writes=True)
    playbooks, issue_types = _strings("playbooks", playbooks), _strings("issue_types", issue_types)
    chose = bool(playbooks or issue_types or force or allow_out_of_order or allow_undetermined)
    request = None
    if plan is None:
        request = remediation_request(
            playbooks,
            issue_types,
            force=force,
            allow_out_of_order=allow_out_of_order,
            allow_undetermined=allow_undetermined,
        )
        chosen = fixes.plan_for_review(settings, request, notify).plan
    elif chose:
        raise UsageError(
            "playbooks, issue_types, force and allow_* choose a new plan; a plan handed to apply runs as it is"
        )
    elif isinstance(plan, ReviewedPlan):
        chosen = plan.plan
    elif isinstance(plan, Plan):
        chosen = plan
    elif isinstance(plan, str | Path):
        chosen = fixes.load_plan(Path(plan))
    else:
        raise UsageError(f"apply runs a plan (plan()'s result, or a saved plan's path), not {type(plan).__name__}")
    whole = not (playbooks or issue_types)
    if chosen.destructive and not confirm:
        raise UsageError("this plan is destructive: pass confirm=True to apply it (it takes a backup first)")
    if not any(s.action != "manual" for s in chosen.steps):
        return fixes.apply_plan(settings, chosen, notify=notify, whole=whole)  # nothing runs; re-diagnoses
    # Planned here and approved by the call: if another run changed the database while this
    # one waited for the lock, plan again from what is there (as apply --auto-approve does).
    replan = request if (request is not None and not chosen.destructive) else None
    with stopping_as_keyboard_interrupt():
        return fixes.apply_plan(settings, chosen, notify=notify, replan=replan, whole=whole)


# --- settings, as the CLI resolves them ------------------------------------------------------


# What each option accepts, checked before anything connects: a wrong type would otherwise
# surface deep inside as a TypeError, or (a string where a list goes) as one name per letter.
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "migrations_dir": (str, Path),
    "schema": (str,),
    "table_prefix": (str,),
    "layout": (str,),
    "shadow_url": (str,),
    "replay": (bool,),
    "lock_timeout": (int, float),
    "ddl_lock_timeout": (int, float),
    "ddl_lock_retries": (int,),
    "environment": (str,),
    "project": (str, Path),
}


def _settings(database: Database, options: Options, *, writes: bool) -> tuple[Settings, Notify]:
    unknown = set(options) - set(Options.__annotations__)
    if unknown:
        raise UsageError(
            f"unknown option {sorted(unknown)[0]!r}; the options are: {', '.join(Options.__annotations__)}"
        )
    for name, value in options.items():
        accepted = _OPTION_TYPES.get(name)
        if accepted is None:
            continue
        # bool is an int to isinstance: True is no lock timeout.
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
            raise UsageError(
                f"option {name} takes {' or '.join(t.__name__ for t in accepted)}, not {type(value).__name__}"
            )
    if "notify" in options and not callable(options["notify"]):
        raise UsageError(f"option notify takes a function of one string, not {type(options['notify']).__name__}")
    if "project" in options and not Path(options["project"]).is_dir():
        raise UsageError(f"option project: no directory {options['project']}")
    notify = options.get("notify") or logger.info
    url = None
    if database is not None:
        from reconciler.api.handles import target_of

        target = target_of(database)
        _check_target(target, writes=writes)
        url = target.url
    replay = options.get("replay", True)
    settings = resolve_settings(
        database_url=url,
        migrations_dir=options.get("migrations_dir"),
        tracking_schema=options.get("schema"),
        table_prefix=options.get("table_prefix"),
        layout=options.get("layout"),
        shadow_url=options.get("shadow_url"),
        no_replay=not replay,
        lock_timeout=options.get("lock_timeout"),
        ddl_lock_timeout=options.get("ddl_lock_timeout"),
        ddl_lock_retries=options.get("ddl_lock_retries"),
        environment=options.get("environment"),
        cwd=Path(options["project"]) if "project" in options else None,
    )
    if settings.layout is not None:
        from reconciler.desired.layouts import with_canonical_layout

        settings = with_canonical_layout(settings)
    return settings, notify


def _strings(name: str, values: Iterable[object], *also: type) -> tuple[str, ...]:
    """A list of names, refused as a bare string (which would read as one name per letter)."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise UsageError(f"{name} takes a list of names, not {values!r}: write [{values!r}]")
    chosen = tuple(values)
    for value in chosen:
        if not isinstance(value, (str, *also)):
            raise UsageError(f"{name} takes names, not {value!r}")
    return chosen  # type: ignore[return-value]  # an IssueType is a str


def _check_target(target: object, *, writes: bool) -> None:
    """A live connection handed over: poststack's session must be the one it has."""
    from reconciler.api.handles import Target, read_session, session_difference
    from reconciler.config import masked_url
    from reconciler.db import open_raw

    assert isinstance(target, Target)
    if target.caller is None:
        return
    if writes and target.in_transaction:
        raise UsageError(
            f"the connection to {masked_url(target.url)} has a transaction open: commit or roll it back first",
            "poststack migrates on a connection of its own, and the locks your transaction holds could hold up "
            "its migrations until they time out.",
        )
    own = open_raw(target.url)
    try:
        difference = session_difference(target.caller, read_session(own))
    finally:
        own.close()
    if difference is not None:
        raise UsageError(
            f"poststack would not work where your connection does: {difference}",
            "poststack opens a connection of its own with your connection's parameters; put the setting in them "
            "(the URL's ?options=-csearch_path%3D..., or the engine's connect_args) so every connection has it.",
        )
