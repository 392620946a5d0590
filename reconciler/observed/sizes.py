"""How big the target's relations are, and who is using them now: what makes a lock matter.

Read-only, from the target: rows (the statistics collector's live tuples, else the planner's
estimate), bytes (table, indexes and TOAST), and the other sessions that hold a lock on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.db import Session


@dataclass(frozen=True)
class RelationSize:
    relation: str  # schema.name
    exists: bool  # False: a pending migration makes it, so it is empty when the lock is taken
    rows: int = 0
    bytes: int = 0
    sessions: int = 0  # other sessions holding a lock on it as it was read

    @property
    def empty(self) -> bool:
        return self.rows == 0

    def to_json(self) -> dict[str, object]:
        return {
            "relation": self.relation,
            "exists": self.exists,
            "rows": self.rows,
            "bytes": self.bytes,
            "sessions": self.sessions,
        }


# Per relation asked for: whether it exists, rows, bytes, and the other sessions locking it.
# A partitioned table holds nothing itself: its rows and bytes are its partitions' (the
# leaves of its tree, from PostgreSQL 12: {tree}), and so are the sessions using it.
# pg_locks shows every database's locks, and a relation's oid is only unique in its own:
# a database made from a template has the template's tables under the same oids.
_SIZES = """WITH q AS (
  SELECT q.schema, q.name, c.oid FROM unnest(%s::text[], %s::text[]) AS q(schema, name)
  LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = q.schema
  LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = q.name AND c.relkind IN ('r', 'p', 'm')
), parts AS (
  SELECT q.oid AS top, t.relid FROM q, LATERAL {tree} AS t(relid) WHERE q.oid IS NOT NULL
)
SELECT q.schema, q.name, q.oid IS NOT NULL,
  COALESCE((SELECT sum(GREATEST(COALESCE(s.n_live_tup, 0), COALESCE(c.reltuples, 0)::bigint))
    FROM parts p JOIN pg_catalog.pg_class c ON c.oid = p.relid
    LEFT JOIN pg_catalog.pg_stat_all_tables s ON s.relid = c.oid
    WHERE p.top = q.oid AND c.relkind IN ('r', 'm')), 0),
  COALESCE((SELECT sum(pg_catalog.pg_total_relation_size(p.relid)) FROM parts p WHERE p.top = q.oid), 0),
  (SELECT count(DISTINCT l.pid) FROM pg_catalog.pg_locks l JOIN parts p ON l.relation = p.relid
    WHERE p.top = q.oid AND l.pid <> pg_catalog.pg_backend_pid()
      AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))
FROM q"""
# pg_partition_tree of a table that is not partitioned is empty: then the table itself.
_TREE = "(SELECT relid FROM pg_catalog.pg_partition_tree(q.oid) UNION SELECT q.oid)"
_ONLY_ITSELF = "(SELECT q.oid)"


def relation_sizes(session: Session, relations: Iterable[str]) -> dict[str, RelationSize]:
    """The live size of each ``schema.name`` in ``relations`` (names as the shadow spells them)."""
    wanted = sorted(set(relations))
    if not wanted:
        return {}
    schemas, names = zip(*(relation.split(".", 1) for relation in wanted), strict=True)
    tree = _TREE if session.server_info().version_num >= 120000 else _ONLY_ITSELF
    with session.snapshot():
        rows = session.query(_SIZES.format(tree=tree), (list(schemas), list(names)))
    sizes = {}
    for schema, name, exists, count, size, sessions in rows:
        relation = f"{schema}.{name}"
        sizes[relation] = RelationSize(relation, bool(exists), int(count or 0), int(size or 0), int(sessions or 0))
    return sizes
