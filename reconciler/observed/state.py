"""Desired and observed state, each read once; the observed side read-only, with a fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.config import DEFAULT_TRACKING, TrackingLocation
from reconciler.db import ServerInfo, Session
from reconciler.desired.effects import DEFAULT_PATH, OwnTables
from reconciler.desired.effects_cache import history_effects
from reconciler.desired.files import FileProblem, Migration, MigrationSet
from reconciler.desired.history import History, analyze
from reconciler.desired.layouts import scan_migrations
from reconciler.desired.versions import VersionKey
from reconciler.observed import tracking
from reconciler.observed.catalog import CatalogSnapshot, read_catalog, run_verify_scripts, session_search_path
from reconciler.observed.tracking import ObservedTracking

if TYPE_CHECKING:  # replay is loaded when a command replays: migrate and status never do
    from reconciler.desired.replay.snapshot import Snapshot
    from reconciler.desired.replay.source import ReplayOutcome, ShadowSettings

# --- the full picture, for diagnosis ----------------------------------------------------


@dataclass(frozen=True)
class DesiredState:
    """What the files say: the usable migrations, the problems with the rest, and what the
    whole history leaves in the catalog."""

    migrations: MigrationSet
    problems: tuple[FileProblem, ...]
    history: History
    replay: ReplayOutcome | None = None  # the history replayed in a shadow; None: not asked for

    @cached_property
    def by_key(self) -> dict[VersionKey, Migration]:
        return self.migrations.by_key()


# The path, which of its schemas exist now, and the role migrations run as.
SearchPath = tuple[tuple[str, ...], frozenset[str], str | None]
DEFAULT_SEARCH_PATH: SearchPath = (DEFAULT_PATH, frozenset(DEFAULT_PATH), None)


def read_desired(
    directory: Path,
    search_path: SearchPath = DEFAULT_SEARCH_PATH,
    location: TrackingLocation = DEFAULT_TRACKING,
    layout: str | None = None,
    *,
    cached: bool = False,
) -> DesiredState:
    """``search_path`` is the one migrations run with (the role's or database's default);
    ``layout`` the directory's (None: detected); ``cached``: as read_history's."""
    scan = scan_migrations(directory, layout)
    history = read_history(scan.migrations, search_path, location, cached=cached)
    return DesiredState(scan.migrations, scan.problems, history)


def read_history(
    migrations: MigrationSet,
    search_path: SearchPath = DEFAULT_SEARCH_PATH,
    location: TrackingLocation = DEFAULT_TRACKING,
    *,
    cached: bool = False,
) -> History:
    """``cached``: keep each file's effects under .poststack/effects beside the migrations, and
    read them from there while the files before it and where it runs are unchanged
    (desired.effects_cache); a fleet's tenants, each with its own search_path, do not."""
    path, existing, user = search_path
    if location.schema in path and existing:
        # poststack makes its tracking schema before the first migration runs (a new fleet
        # tenant's): unqualified names land there, not in a shared schema further down the path.
        existing = frozenset({*existing, location.schema})
    own = own_tables(location)
    effects = history_effects(migrations, path, existing, user, own, cached=cached)
    return analyze(effects, location.schema)


def own_tables(location: TrackingLocation) -> OwnTables:
    """poststack's tables at ``location``: what a migration must leave alone. Only these
    names count: with another prefix, a migration may drop a table called schema_migrations."""
    roles = {
        location.migrations_table: ("tracking table", "its record"),
        location.lock_table: ("lock table", "its lock"),
        location.audit_table: ("audit table", "its audit trail"),
    }
    tables = []
    for table in location.tables:  # every table poststack keeps counts, named above or not
        role, loss = roles.get(table, ("table", "its record"))
        tables.append((table, role, loss))
    return OwnTables(location.schema, tuple(tables))


@dataclass(frozen=True)
class ObservedState:
    """What the database says, read once in one read-only transaction."""

    tracking: ObservedTracking
    catalog: CatalogSnapshot
    verify: dict[str, bool | str]  # version -> verify script's answer, or its error
    server: ServerInfo
    audited: dict[VersionKey, tracking.AuditedApplication] = field(default_factory=dict)  # applied, says the audit
    live: Snapshot | None = None  # every object with its definition, to compare with replayed states
    # A fleet tenant's schemas (its search_path, its tracking schema) and its history's: all
    # that was read. None: the whole database.
    scope: frozenset[str] | None = None
    audit_seen: int = 0  # the newest audit row's id at the time of this snapshot (0: none)

    @cached_property
    def fingerprint(self) -> str:
        payload = {
            "tracking": self.tracking.fingerprint,
            "catalog": [list(o.key) for o in self.catalog.objects],
            "invalid": [list(o.key) for o in self.catalog.invalid_indexes],
            "verify": self.verify,
            # definitions too: a function body edited since the plan was made makes it stale
            "definitions": hashlib.sha256(
                json.dumps(sorted(self.live.objects.items()) if self.live else None).encode()
            ).hexdigest(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def observe(
    session: Session, location: TrackingLocation, desired: DesiredState, *, definitions: bool = True
) -> ObservedState:
    """One consistent, read-only snapshot, in a constant number of queries. Verify scripts
    run for the migrations that tracking does not record as applied. ``definitions``: every
    object's definition too (``live``), for plans' fingerprints and for comparing with
    replayed states; migrate, which judges by the catalog alone, leaves them out."""
    server = session.server_info()
    with session.snapshot():
        tables = frozenset(tracking.existing_tables(session, location))
        rows = tuple(tracking.read_rows(session, location)) if location.migrations_table in tables else ()
        lock = tracking.read_lock(session, location) if location.lock_table in tables else None
        observed_tracking = ObservedTracking(location=location, tables=tables, rows=rows, lock=lock)
        # A fleet tenant sees its own schemas, and those its history puts objects in.
        scope = None if session.scope is None else session.scope | desired.history.schemas
        catalog = read_catalog(session, location, scope)
        scripts = {
            m.version: m.verify.text
            for m in desired.migrations.migrations
            if m.verify is not None and m.key not in observed_tracking.applied
        }
        verify = run_verify_scripts(session, scripts)
        audited, audit_seen = {}, 0
        if location.audit_table in tables:
            audited = tracking.read_audited_applications(session, location)
            audit_seen = tracking.audit_high_water(session, location)
        live = None
        if definitions:
            from reconciler.desired.replay.snapshot import read_snapshot

            live = read_snapshot(session, location, scope)
    return ObservedState(observed_tracking, catalog, verify, server, audited, live, scope, audit_seen)


def read_state_of(
    session: Session, migrations: MigrationSet, location: TrackingLocation, *, definitions: bool = True
) -> tuple[DesiredState, ObservedState]:
    """Both sides for migrations already loaded (migrate has refused unusable files already)."""
    history = read_history(migrations, session_search_path(session), location, cached=session.scope is None)
    desired = DesiredState(migrations, (), history)
    return desired, observe(session, location, desired, definitions=definitions)


def read_state(
    session: Session,
    directory: Path,
    location: TrackingLocation,
    layout: str | None = None,
    shadow: ShadowSettings | None = None,
    notify: Callable[[str], None] | None = None,
) -> tuple[DesiredState, ObservedState]:
    """Both sides: the files read with the search_path this database gives migrations, and
    one read-only snapshot of the database. With ``shadow``, the history replayed too
    (``notify`` hears what limits that evidence)."""
    desired = read_desired(directory, session_search_path(session), location, layout, cached=session.scope is None)
    if shadow is not None:
        outcome = replay_desired(session, desired, location, shadow)
        for notice in outcome.notices if notify is not None else ():
            notify(notice)
        desired = replace(desired, replay=outcome)
    return desired, observe(session, location, desired)


def replay_desired(
    session: Session, desired: DesiredState, location: TrackingLocation, shadow: ShadowSettings
) -> ReplayOutcome:
    """The history replayed; not while files are unreadable: a gap would shift every state."""
    from reconciler.desired.replay.source import ReplayOutcome, replay_history

    if desired.problems:
        return ReplayOutcome(
            None,
            "none",
            f"the migrations directory has a file poststack cannot read whole: {desired.problems[0].message}",
        )
    if not desired.migrations.migrations:
        return ReplayOutcome(None, "none")  # nothing to replay: no scratch database for it
    return replay_history(session, desired.migrations.migrations, location, shadow)
