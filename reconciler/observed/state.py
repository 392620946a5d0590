"""Desired and observed state, each read once; the observed side read-only, with a fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from reconciler.db import ServerInfo, Session
from reconciler.desired.effects import DEFAULT_PATH, Namespace, OwnTables, parse, read_effects, schemas_created
from reconciler.desired.files import FileProblem, Migration, MigrationSet, scan_migrations
from reconciler.desired.history import History, analyze
from reconciler.observed import tracking
from reconciler.observed.catalog import CatalogSnapshot, read_catalog, run_verify_scripts, session_search_path
from reconciler.observed.tracking import ObservedTracking

# --- the full picture, for diagnosis ----------------------------------------------------


@dataclass(frozen=True)
class DesiredState:
    """What the files say: the usable migrations, the problems with the rest, and what the
    whole history leaves in the catalog."""

    migrations: MigrationSet
    problems: tuple[FileProblem, ...]
    history: History

    @cached_property
    def by_number(self) -> dict[int, Migration]:
        return self.migrations.by_number()


# The path, which of its schemas exist now, and the role migrations run as.
SearchPath = tuple[tuple[str, ...], frozenset[str], str | None]
DEFAULT_SEARCH_PATH: SearchPath = (DEFAULT_PATH, frozenset(DEFAULT_PATH), None)


def read_desired(
    directory: Path, search_path: SearchPath = DEFAULT_SEARCH_PATH, tracking_schema: str = "public"
) -> DesiredState:
    """``search_path`` is the one migrations run with (the role's or database's default)."""
    scan = scan_migrations(directory)
    history = read_history(scan.migrations, search_path, tracking_schema)
    return DesiredState(scan.migrations, scan.problems, history)


def read_history(
    migrations: MigrationSet, search_path: SearchPath = DEFAULT_SEARCH_PATH, tracking_schema: str = "public"
) -> History:
    path, existing, user = search_path
    parsed = [(m, *parse(m.file.text)) for m in migrations.migrations]
    # A schema the history creates did not exist before the migration that creates it,
    # whatever exists now: only the others were there from the start.
    later = set().union(*(schemas_created(tree, user) for _, tree, _ in parsed)) if parsed else set()
    start = (set(existing) - later) if existing else set(path[:1])
    namespace = Namespace(path, schemas=start, user=user)
    own = own_tables(tracking_schema)
    effects = (read_effects(m.version, m.file.text, namespace, tree, error, own) for m, tree, error in parsed)
    return analyze(effects, tracking_schema)


def own_tables(tracking_schema: str) -> OwnTables:
    """poststack's tables in ``tracking_schema``: what a migration must leave alone."""
    roles = {
        tracking.MIGRATIONS_TABLE: ("tracking table", "its record"),
        tracking.LOCK_TABLE: ("lock table", "its lock"),
        tracking.AUDIT_TABLE: ("audit table", "its audit trail"),
    }
    tables = []
    for table in tracking.TABLES:  # every table poststack keeps counts, named above or not
        role, loss = roles.get(table, ("table", "its record"))
        tables.append((table, role, loss))
    return OwnTables(tracking_schema, tuple(tables))


@dataclass(frozen=True)
class ObservedState:
    """What the database says, read once in one read-only transaction."""

    tracking: ObservedTracking
    catalog: CatalogSnapshot
    verify: dict[str, bool | str]  # version -> verify script's answer, or its error
    server: ServerInfo
    audited: dict[int, tracking.AuditedApplication] = field(default_factory=dict)  # applied, says the audit

    @cached_property
    def fingerprint(self) -> str:
        payload = {
            "tracking": self.tracking.fingerprint,
            "catalog": [list(o.key) for o in self.catalog.objects],
            "invalid": [list(o.key) for o in self.catalog.invalid_indexes],
            "verify": self.verify,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def observe(session: Session, schema: str, desired: DesiredState) -> ObservedState:
    """One consistent, read-only snapshot, in a constant number of queries. Verify scripts
    run for the migrations that tracking does not record as applied."""
    server = session.server_info()
    with session.snapshot():
        tables = frozenset(tracking.existing_tables(session, schema))
        rows = tuple(tracking.read_rows(session, schema)) if tracking.MIGRATIONS_TABLE in tables else ()
        lock = tracking.read_lock(session, schema) if tracking.LOCK_TABLE in tables else None
        observed_tracking = ObservedTracking(schema=schema, tables=tables, rows=rows, lock=lock)
        catalog = read_catalog(session, schema)
        scripts = {
            m.version: m.verify.text
            for m in desired.migrations.migrations
            if m.verify is not None and m.number not in observed_tracking.applied
        }
        verify = run_verify_scripts(session, scripts)
        audited = tracking.read_audited_applications(session, schema) if tracking.AUDIT_TABLE in tables else {}
    return ObservedState(observed_tracking, catalog, verify, server, audited)


def read_state_of(session: Session, migrations: MigrationSet, schema: str) -> tuple[DesiredState, ObservedState]:
    """Both sides for migrations already loaded (migrate has refused unusable files already)."""
    desired = DesiredState(migrations, (), read_history(migrations, session_search_path(session), schema))
    return desired, observe(session, schema, desired)


def read_state(session: Session, directory: Path, schema: str) -> tuple[DesiredState, ObservedState]:
    """Both sides: the files read with the search_path this database gives migrations, and
    one read-only snapshot of the database."""
    desired = read_desired(directory, session_search_path(session), schema)
    return desired, observe(session, schema, desired)
