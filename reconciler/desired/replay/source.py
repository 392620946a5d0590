"""Where a command's history is replayed, and the replay itself.

The shadow is, in this order: the server a shadow URL names (``--shadow-url``,
POSTSTACK_SHADOW_DATABASE_URL, ``shadow_database_url`` in the project file); a scratch
database beside the target, when its role may create one; the embedded server, with a
warning when its major version differs from the target's. A named shadow that cannot be
reached is an error; otherwise a shadow that cannot be had, or a replay that cannot run,
leaves diagnosis to the parsed evidence, and says why. A named database is never replayed
into: only a scratch database made beside it.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg2

from reconciler import embedded
from reconciler.config import DEFAULT_SCHEMA, Settings, TrackingLocation, masked_url
from reconciler.db import Session, open_raw, server_error_text
from reconciler.desired.files import Migration
from reconciler.desired.replay.cache import ReplayCache
from reconciler.desired.replay.measure import Measurement, measure
from reconciler.desired.replay.replay import Replay, replay
from reconciler.desired.replay.roundtrip import RoundTrip, round_trip_history
from reconciler.desired.replay.shadow import can_create_databases, scratch_session
from reconciler.errors import DatabaseUnavailable, PoststackError
from reconciler.kept import beside
from reconciler.observed.catalog import session_search_path
from reconciler.statements import quote_ident

Opener = Callable[[], AbstractContextManager[Session]]
T = TypeVar("T")


@dataclass(frozen=True)
class ShadowSettings:
    """How a command may replay: from the settings, resolved by the interface."""

    url: str | None = None  # a configured shadow server (libpq URL)
    cache_dir: Path | None = None  # <project>/.poststack/replay
    embedded_dir: Path | None = None  # the embedded server's data, the last resort


def shadow_for(settings: Settings) -> ShadowSettings | None:
    """How ``settings`` replay; None when the command does not (it took no replay options)."""
    if not settings.replay:
        return None
    project = beside(settings.migrations_dir)
    return ShadowSettings(settings.shadow_url, project / "replay", settings.embedded_data_dir)


@dataclass(frozen=True)
class ReplayOutcome:
    replay: Replay | None  # None: replay was unavailable (``unavailable`` says why)
    shadow: str  # where it ran (or would have), for the report
    unavailable: str | None = None
    warnings: tuple[str, ...] = ()
    same_major: bool = True  # the shadow runs the target's major: definitions print alike

    @property
    def used(self) -> bool:
        return self.replay is not None

    @property
    def notices(self) -> tuple[str, ...]:
        """What a person should know about the evidence: said once, on stderr."""
        if self.unavailable is not None:
            return (f"ℹ️  No replay ({self.unavailable}): untracked migrations are judged from the parsed SQL alone.",)
        said = tuple(f"⚠️  {w}" for w in self.warnings)
        stop = self.replay.stopped if self.replay is not None else None
        if stop is not None:
            said += (
                f"⚠️  The replay stopped at migration {stop.version} ({stop.reason}): it and the migrations after "
                "it are judged from the parsed SQL alone.",
            )
        return said

    def to_json(self) -> dict[str, object]:
        result = self.replay
        return {
            "used": result is not None,
            "shadow": self.shadow,
            "replayed": len(result.steps) if result is not None else 0,
            "from_cache": bool(result and result.from_cache),
            "reused_states": result.reused if result is not None else 0,
            "catalog_reads": result.catalog_reads if result is not None else "none",
            "stopped_at": None
            if result is None or result.stopped is None
            else {"version": result.stopped.version, "reason": result.stopped.reason},
            "unavailable": self.unavailable,
            "warnings": list(self.warnings),
        }


def replay_history(
    target: Session,
    migrations: Sequence[Migration],
    location: TrackingLocation,
    settings: ShadowSettings,
) -> ReplayOutcome:
    try:
        shadow, opener, major, warnings, guarded = choose_shadow(target, settings)
        same = major == target.server_info().major
    except DatabaseUnavailable as e:
        if settings.url is not None:
            raise  # the shadow the person named cannot be reached: say so, exit 3
        return ReplayOutcome(None, "none", f"no shadow database could be had: {e.summary}")
    except (psycopg2.Error, PoststackError) as e:
        return ReplayOutcome(None, "none", f"no shadow database could be had: {_why(e)}")
    cache = ReplayCache(settings.cache_dir, major) if settings.cache_dir is not None else None
    try:
        result = replay(opener, migrations, location, cache, migrations_search_path(target), guarded)
    except (psycopg2.Error, PoststackError) as e:
        why = f"the replay in {shadow} failed: {_why(e)}{_beside_hint(e, settings)}"
        return ReplayOutcome(None, shadow, why, warnings, same)
    return ReplayOutcome(result, shadow, None, warnings, same)


def migrations_search_path(target: Session) -> str:
    """The search_path migrations run with on the target (its database's or role's default),
    "$user" spelled as the target's role: in a shadow, the shadow's role would take its place."""
    return ", ".join(quote_ident(schema) for schema in session_search_path(target)[0])


def _beside_hint(error: Exception, settings: ShadowSettings) -> str:
    """A scratch database made beside the target is reached by the target's URL: through a
    pooler, only if the pooler serves that database too (PgBouncer's ``*`` entry)."""
    if settings.url is None and isinstance(error, DatabaseUnavailable) and error.summary.startswith("cannot connect"):
        return (
            "; if a pooler sits between poststack and the server, set shadow_database_url "
            "(POSTSTACK_SHADOW_DATABASE_URL) to a direct connection (docs/poolers.md)"
        )
    return ""


def _why(error: Exception) -> str:
    if isinstance(error, psycopg2.Error):
        return server_error_text(error)
    if isinstance(error, PoststackError):
        return error.summary
    return str(error)


def choose_shadow(target: Session, settings: ShadowSettings) -> tuple[str, Opener, int, tuple[str, ...], bool]:
    """Where a history is run for ``target``: (where, how to open it, its server's major
    version, warnings, whether the server is shared: a migration must not change its roles,
    databases or settings). Raises psycopg2.Error or PoststackError when no shadow can be had."""
    target_major = target.server_info().major
    if settings.url is not None:
        try:
            probe = Session(open_raw(settings.url), settings.url)
        except (psycopg2.Error, DatabaseUnavailable) as e:
            # Named on purpose: not a reason to judge on less evidence without a word.
            why = e.summary if isinstance(e, DatabaseUnavailable) else server_error_text(e)
            raise DatabaseUnavailable(
                f"the shadow database: {why}",
                "Fix --shadow-url (or POSTSTACK_SHADOW_DATABASE_URL, shadow_database_url), or leave it out to "
                "replay beside the target.",
            ) from e
        try:
            major = probe.server_info().major
            creates = can_create_databases(probe)
            shared = _server_identity(probe) == _server_identity(target)
        finally:
            probe.close()
        where = f"the shadow server {masked_url(settings.url)}"
        if not creates:
            # The named database itself is never used: emptying it afterwards could take what is
            # in it (it may even be the target).
            raise DatabaseUnavailable(
                f"the role of {where} may not create databases (CREATEDB): the replay runs in a scratch database "
                "made there",
                "Grant it CREATEDB, or name another shadow (--shadow-url), or leave it out to replay beside the target.",
            )
        url = settings.url
        warnings = _version_warning(where, major, target_major)
        # A server named for shadows is taken as one the replay may change (roles, settings),
        # unless it is the target's own.
        return f"a scratch database on {where}", lambda: scratch_session(url), major, warnings, shared
    if can_create_databases(target):
        url = target.url
        return "a scratch database on the target's server", lambda: scratch_session(url), target_major, (), True
    if settings.embedded_dir is None or target.embedded_dir is not None:
        raise PoststackError("the target's role may not create databases, and no shadow is configured (--shadow-url)")
    data_dir = settings.embedded_dir
    try:
        major = embedded.bundled_major()
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        raise DatabaseUnavailable(f"the embedded server's PostgreSQL cannot be run: {e}") from e
    where = "a scratch database on the embedded server"
    warnings = _version_warning("the embedded server", major, target_major)
    warnings = (
        "the target's role may not create databases and no shadow is configured (--shadow-url): "
        "replaying on the embedded server",
        *warnings,
    )
    return where, lambda: _on_embedded(data_dir), major, warnings, False


def _server_identity(session: Session) -> tuple[object, ...] | None:
    """What tells one running server from another: when it started, and on which port."""
    return session.query_one("SELECT pg_postmaster_start_time(), current_setting('port')")


@contextmanager
def _on_embedded(data_dir: Path) -> Iterator[Session]:
    """A scratch database on the embedded server, started for this if it was not running and
    stopped again afterwards: a replay leaves no server behind (nor starts one for a cache)."""
    was_running = embedded.status(data_dir).running
    url = embedded.ensure_running(data_dir)
    try:
        with scratch_session(url) as session:
            yield session
    finally:
        if not was_running:
            with contextlib.suppress(PoststackError):
                embedded.stop(data_dir)


def _version_warning(where: str, major: int, target_major: int) -> tuple[str, ...]:
    if major == target_major:
        return ()
    return (
        f"{where} runs PostgreSQL {major}, the target {target_major}: it prints definitions differently, "
        "so untracked migrations are judged from the parsed SQL alone",
    )


@dataclass(frozen=True)
class RoundTripCheck:
    """validate --round-trip: every rollback run after its migration in a shadow."""

    shadow: str  # where it ran (or would have)
    result: RoundTrip | None  # None: it could not run (``unavailable`` says why)
    unavailable: str | None = None
    warnings: tuple[str, ...] = ()  # about the shadow: another major version, the embedded server


def _in_shadow(
    target: Session, settings: ShadowSettings, run: Callable[[Opener, str, bool], T]
) -> tuple[str, T | None, str | None, tuple[str, ...]]:
    """``run`` (given the shadow's opener, the migrations' search_path and whether the server
    is shared) in a shadow chosen as replay chooses one: where it ran, its result, why it
    could not (the result None), the shadow's warnings. Only catalog reads reach the target."""
    try:
        where, opener, _major, warnings, guarded = choose_shadow(target, settings)
    except (psycopg2.Error, PoststackError) as e:
        if isinstance(e, DatabaseUnavailable) and settings.url is not None:
            raise  # the shadow the person named cannot be reached: say so, exit 3
        return "none", None, f"no shadow database could be had: {_why(e)}", ()
    try:
        return where, run(opener, migrations_search_path(target), guarded), None, warnings
    except (psycopg2.Error, PoststackError) as e:
        return where, None, f"it failed in {where}: {_why(e)}{_beside_hint(e, settings)}", warnings


def round_trip_in_shadow(
    target: Session, migrations: Sequence[Migration], location: TrackingLocation, settings: ShadowSettings
) -> RoundTripCheck:
    """The history walked in a shadow chosen as replay chooses one, each rollback tried on the
    way. Only catalog reads reach the target; the shadow is a database of its own."""
    return RoundTripCheck(
        *_in_shadow(
            target,
            settings,
            lambda opener, path, guarded: round_trip_history(opener, migrations, location, path, guarded),
        )
    )


@dataclass(frozen=True)
class MeasuredRun:
    """lint: the history run in a shadow, the wanted migrations watched statement by statement."""

    shadow: str  # where it ran (or would have)
    measurement: Measurement | None  # None: it could not run (``unavailable`` says why)
    unavailable: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def notices(self) -> tuple[str, ...]:
        if self.measurement is None:
            return (f"ℹ️  Nothing measured ({self.unavailable}): findings come from the SQL alone.",)
        said = tuple(f"⚠️  {w}" for w in self.warnings)
        stop = self.measurement.stopped
        if stop is not None:
            said += (
                f"⚠️  The shadow run stopped at migration {stop.version} ({stop.reason}): it and the migrations "
                "after it are linted from the SQL alone.",
            )
        return said


def measure_in_shadow(
    target: Session,
    history: Sequence[Migration],
    wanted: frozenset[str],
    settings: ShadowSettings,
    tracking_schema: str = DEFAULT_SCHEMA,
) -> MeasuredRun:
    """The history run in a shadow chosen as replay chooses one, ``wanted`` watched. Only
    catalog reads reach the target."""

    def run(opener: Any, path: str, guarded: bool) -> Any:
        return measure(opener, history, wanted, path, guarded, tracking_schema)

    return MeasuredRun(*_in_shadow(target, settings, run))
