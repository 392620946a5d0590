"""Who holds the locks a migration waited for: read once its lock_timeout fired.

By then the migration's transaction is rolled back and it waits for nothing, so
pg_blocking_pids() has nothing to say. What is left is what the statement that timed out
names: its relations, resolved on the target through the session's search path, and the
other sessions holding granted locks on them (pg_locks), with what pg_stat_activity says
about each. Read-only; one query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from reconciler.db import LOCK_MODES, Session

# One row per (relation, holder, mode); a relation nobody else holds has one row of NULLs.
_HOLDERS_SQL = """
WITH named AS (
    SELECT DISTINCT to_regclass(CASE WHEN n.schema IS NULL THEN quote_ident(n.name)
                                     ELSE quote_ident(n.schema) || '.' || quote_ident(n.name) END) AS oid
    FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS n(schema, name)
), wanted AS (
    SELECT c.oid, format('%%I.%%I', ns.nspname, c.relname) AS relation
    FROM named JOIN pg_class c ON c.oid = named.oid JOIN pg_namespace ns ON ns.oid = c.relnamespace
)
SELECT w.relation, l.pid, l.mode, a.application_name, a.state, a.query_start, a.xact_start,
       l.virtualtransaction IS NOT NULL AND l.pid IS NULL AS prepared
FROM wanted w
LEFT JOIN pg_locks l
       ON l.locktype = 'relation' AND l.relation = w.oid AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.pid IS DISTINCT FROM pg_backend_pid()
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
ORDER BY w.relation, l.pid NULLS LAST, l.mode
"""


# Which held modes each requested mode waits for (PostgreSQL's table of conflicting lock modes).
_ALL = LOCK_MODES  # weakest first
CONFLICTS: dict[str, frozenset[str]] = {
    "AccessShareLock": frozenset(_ALL[7:]),
    "RowShareLock": frozenset(_ALL[6:]),
    "RowExclusiveLock": frozenset(_ALL[4:]),
    "ShareUpdateExclusiveLock": frozenset(_ALL[3:]),
    "ShareLock": frozenset({_ALL[2], _ALL[3], *_ALL[5:]}),
    "ShareRowExclusiveLock": frozenset({_ALL[2], _ALL[3], *_ALL[4:]}),
    "ExclusiveLock": frozenset(_ALL[1:]),
    "AccessExclusiveLock": frozenset(_ALL),
}


@dataclass(frozen=True)
class LockHolder:
    """A session holding locks on a relation a migration waited for. ``pid`` None: a
    prepared transaction (pg_prepared_xacts), which no session runs. What another role's
    session is doing may be hidden (None) from a role without pg_read_all_stats."""

    pid: int | None
    application_name: str | None
    state: str | None  # active, idle in transaction, ...
    query_start: datetime | None
    transaction_start: datetime | None
    relations: tuple[str, ...]  # schema-qualified, of those the statement names
    modes: tuple[str, ...]  # AccessShareLock, RowExclusiveLock, ...


@dataclass(frozen=True)
class LockHolders:
    relations: tuple[str, ...]  # what the statement names that exists, schema-qualified
    holders: tuple[LockHolder, ...]  # in order of pid


def lock_holders(
    session: Session, names: Sequence[tuple[str | None, str]], requested: str | None = None
) -> LockHolders:
    """The sessions other than this one holding granted locks on the relations ``names``
    (schema or None, name) resolve to here. Names that resolve to nothing are left out.
    ``requested``: the mode the statement asked for; then only the holders of a mode it
    conflicts with (a reader does not stop CREATE INDEX), unless none does (it may wait in
    the queue behind another waiter): then every holder, for a person to judge."""
    if not names:
        return LockHolders((), ())
    rows = session.query(
        _HOLDERS_SQL, {"schemas": [schema for schema, _ in names], "names": [name for _, name in names]}
    )
    relations = tuple(dict.fromkeys(str(row[0]) for row in rows))
    found: dict[object, LockHolder] = {}
    for relation, pid, mode, application, state, query_start, xact_start, prepared in rows:
        if pid is None and not prepared:
            continue  # no other session holds a lock on it
        key = pid if pid is not None else ("prepared", relation, mode)
        held = found.get(key)
        if held is None:
            found[key] = LockHolder(pid, application, state, query_start, xact_start, (relation,), (mode,))
        else:
            found[key] = replace(
                held,
                relations=tuple(dict.fromkeys((*held.relations, relation))),
                modes=tuple(dict.fromkeys((*held.modes, mode))),
            )
    holders = sorted(found.values(), key=lambda h: (h.pid is None, h.pid or 0))
    if requested in CONFLICTS:
        conflicting = [h for h in holders if CONFLICTS[requested] & set(h.modes)]
        holders = conflicting or holders
    return LockHolders(relations, tuple(holders))
