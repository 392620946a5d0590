"""A normalized catalog snapshot: every object a migration can make, with its definition as
PostgreSQL itself prints it (pg_get_*def, format_type), in one read-only query.

An object is (kind, identity, definition). Identities carry no OIDs, so the same history
replayed in a shadow database and applied to production gives equal snapshots; definitions
let a changed object (a column's type, an index's columns, a function's body) be told from a
missing one. poststack's own tables and objects that belong to extensions are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg2.errors

from reconciler.config import TrackingLocation
from reconciler.statements import Statement

_USER_SCHEMA = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'"
_NOT_EXTENSION = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')"


@dataclass(frozen=True)
class _Part:
    """One kind of object: its rows (kind, identity, definition), where they come from, and
    the OIDs a row belongs to: the object itself and the relation or type it hangs on (the
    object itself where none), by which an incremental read finds what a migration touched."""

    row: str
    source: str
    own: str
    parent: str
    by: tuple[str, ...]  # indexed columns equal to own or parent: ``only`` filters on them

    def select(self, owned: bool = False, only: str | None = None) -> str:
        columns = f"{self.row}, {self.own}, {self.parent}" if owned else self.row
        where = ""
        if only:
            where = "\n          AND (" + " OR ".join(f"{column} = ANY({only})" for column in self.by) + ")"
        return f"SELECT {columns}\n        {self.source}{where}"


# One SELECT per kind, each (kind, identity, definition); UNION ALL keeps it one round trip.
_PARTS = (
    _Part(
        "'schema', n.nspname, ''",
        f"""FROM pg_namespace n WHERE {_USER_SCHEMA} AND {_NOT_EXTENSION.format(oid="n.oid")}""",
        "n.oid",
        "n.oid",
        ("n.oid",),
    ),
    _Part(
        """CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
                WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' END,
            n.nspname || '.' || c.relname,
            CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true)
                 WHEN c.relkind = 'p' THEN 'partitioned by ' || pg_get_partkeydef(c.oid) ELSE '' END""",
        f"""FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_USER_SCHEMA}
          AND NOT (n.nspname = %(own_schema)s AND c.relname = ANY(%(own_tables)s))
          AND NOT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_class o ON o.oid = d.refobjid
                          JOIN pg_namespace onsp ON onsp.oid = o.relnamespace
                          WHERE d.objid = c.oid AND d.deptype IN ('a', 'i') AND onsp.nspname = %(own_schema)s
                            AND o.relname = ANY(%(own_tables)s))
          AND {_NOT_EXTENSION.format(oid="c.oid")}""",
        "c.oid",
        # A sequence hangs on the table whose column owns it (serial, identity): dropping the
        # identity drops it with no event of its own.
        """COALESCE((SELECT d.refobjid FROM pg_depend d WHERE c.relkind = 'S' AND d.classid = 'pg_class'::regclass
                      AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                    LIMIT 1), c.oid)""",
        ("c.oid",),
    ),
    _Part(
        """'column', n.nspname || '.' || c.relname || '.' || a.attname,
            format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
            || COALESCE(' DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid), '')
            || CASE WHEN a.attidentity <> '' THEN ' IDENTITY ' || a.attidentity::text ELSE '' END
            || CASE WHEN a.attgenerated <> '' THEN ' GENERATED' ELSE '' END""",
        f"""FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_USER_SCHEMA}
          AND NOT (n.nspname = %(own_schema)s AND c.relname = ANY(%(own_tables)s))
          AND {_NOT_EXTENSION.format(oid="c.oid")}""",
        "c.oid",
        "c.oid",
        ("a.attrelid",),
    ),
    _Part(
        """'constraint', n.nspname || '.' || COALESCE(c.relname, t.typname) || '.' || con.conname,
            pg_get_constraintdef(con.oid, true)""",
        f"""FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
        LEFT JOIN pg_class c ON c.oid = con.conrelid LEFT JOIN pg_type t ON t.oid = con.contypid
        WHERE {_USER_SCHEMA} AND NOT (n.nspname = %(own_schema)s AND c.relname = ANY(%(own_tables)s))
          AND {_NOT_EXTENSION.format(oid="COALESCE(c.oid, t.oid)")}""",
        "con.oid",
        "COALESCE(c.oid, t.oid)",
        ("con.oid", "con.conrelid", "con.contypid"),
    ),
    _Part(
        "'index', n.nspname || '.' || i.relname, pg_get_indexdef(i.oid)",
        f"""FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = i.relnamespace
        WHERE {_USER_SCHEMA} AND NOT (n.nspname = %(own_schema)s AND c.relname = ANY(%(own_tables)s))
          AND {_NOT_EXTENSION.format(oid="c.oid")}""",
        "i.oid",
        "c.oid",
        ("x.indexrelid", "x.indrelid"),
    ),
    _Part(
        """CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
            n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
            CASE WHEN p.prokind = 'a' THEN '' ELSE pg_get_functiondef(p.oid) END""",
        f"""FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {_USER_SCHEMA} AND {_NOT_EXTENSION.format(oid="p.oid")}""",
        "p.oid",
        "p.oid",
        ("p.oid",),
    ),
    _Part(
        "'trigger', n.nspname || '.' || c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)",
        f"""FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND {_USER_SCHEMA}""",
        "t.oid",
        "c.oid",
        ("t.oid", "t.tgrelid"),
    ),
    _Part(
        """'enum', n.nspname || '.' || t.typname,
            (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
             FROM pg_enum e WHERE e.enumtypid = t.oid)""",
        f"""FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype = 'e' AND {_USER_SCHEMA} AND {_NOT_EXTENSION.format(oid="t.oid")}""",
        "t.oid",
        "t.oid",
        ("t.oid",),
    ),
    _Part(
        """CASE t.typtype WHEN 'd' THEN 'domain' WHEN 'r' THEN 'range type' ELSE 'composite type' END,
            n.nspname || '.' || t.typname,
            CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
                 || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
                 || COALESCE(' DEFAULT ' || t.typdefault, '') ELSE '' END""",
        f"""FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        LEFT JOIN pg_class c ON c.oid = t.typrelid
        WHERE (t.typtype IN ('d', 'r') OR (t.typtype = 'c' AND c.relkind = 'c')) AND {_USER_SCHEMA}
          AND {_NOT_EXTENSION.format(oid="t.oid")}""",
        "t.oid",
        "t.oid",
        ("t.oid",),
    ),
    _Part(
        """'policy', n.nspname || '.' || c.relname || '.' || p.polname,
            p.polcmd::text || ' ' || COALESCE(pg_get_expr(p.polqual, p.polrelid), '') || ' '
            || COALESCE(pg_get_expr(p.polwithcheck, p.polrelid), '')""",
        f"""FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_SCHEMA}""",
        "p.oid",
        "c.oid",
        ("p.oid", "p.polrelid"),
    ),
    _Part(
        "'extension', e.extname, ''", "FROM pg_extension e WHERE e.extname <> 'plpgsql'", "e.oid", "e.oid", ("e.oid",)
    ),
)


def snapshot_query(owned: bool = False, only: str | None = None) -> str:
    """The snapshot query; ``owned`` adds each row's own and parent OIDs, ``only`` (an oid[]
    expression) keeps the rows of those objects and of what hangs on them."""
    return "\nUNION ALL\n".join(f"({part.select(owned, only)})" for part in _PARTS)


SNAPSHOT_QUERY = snapshot_query()
# For a fleet tenant: the same query over its own schemas alone, so each tenant's read
# does not grow with the number of tenants beside it.
SCOPED_SNAPSHOT_QUERY = SNAPSHOT_QUERY.replace(_USER_SCHEMA, f"{_USER_SCHEMA} AND n.nspname = ANY(%(scope)s::text[])")


def snapshot_function_body(owned: bool = False, only: str | None = None) -> str:
    """The snapshot query as the body of a plpgsql function whose parameters are
    ``p_own_schema text`` and ``p_own_tables text[]``."""
    query = snapshot_query(owned, only).replace("%(own_schema)s", "p_own_schema")
    return query.replace("%(own_tables)s", "p_own_tables").replace("%%", "%")


Key = tuple[str, str]  # (kind, identity)
# What one migration changed: each object it touched and the definition it left (None: gone).
Changes = tuple[tuple[Key, str | None], ...]


def changes_between(before: Mapping[Key, str], after: Mapping[Key, str]) -> Changes:
    changed = [(k, v) for k, v in after.items() if before.get(k) != v]
    changed += [(k, None) for k in before if k not in after]
    return tuple(sorted(changed, key=lambda change: change[0]))


@dataclass(frozen=True, order=True)
class CatalogObject:
    kind: str
    identity: str  # schema-qualified, no OIDs: equal in a shadow and in production
    definition: str  # as PostgreSQL prints it; "" where the name is all there is


@dataclass(frozen=True)
class Snapshot:
    """The objects of one database state, by (kind, identity)."""

    objects: Mapping[tuple[str, str], str]

    @classmethod
    def of(cls, rows: Iterable[tuple[str, str, str | None]]) -> Snapshot:
        return cls({(kind, identity): definition or "" for kind, identity, definition in rows})

    def diff(self, after: Snapshot) -> SnapshotDiff:
        """What changed from this state to ``after``."""
        before_keys, after_keys = set(self.objects), set(after.objects)
        changed = {k for k in before_keys & after_keys if self.objects[k] != after.objects[k]}
        return SnapshotDiff(
            added=_objects(after.objects, after_keys - before_keys),
            removed=_objects(self.objects, before_keys - after_keys),
            changed=tuple(
                (CatalogObject(*k, self.objects[k]), CatalogObject(*k, after.objects[k])) for k in sorted(changed)
            ),
        )


@dataclass(frozen=True)
class SnapshotDiff:
    added: tuple[CatalogObject, ...]
    removed: tuple[CatalogObject, ...]
    changed: tuple[tuple[CatalogObject, CatalogObject], ...]  # (before, after)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def _objects(objects: Mapping[tuple[str, str], str], keys: Iterable[tuple[str, str]]) -> tuple[CatalogObject, ...]:
    return tuple(CatalogObject(kind, identity, objects[(kind, identity)]) for kind, identity in sorted(keys))


def read_snapshot(session: Any, location: TrackingLocation, scope: frozenset[str] | None = None) -> Snapshot:
    """The database's objects now, poststack's tables at ``location`` left out; with
    ``scope``, only those in these schemas. Read-only."""
    with session.snapshot():
        # Definitions name objects as the search_path shows them: with only pg_catalog on it,
        # every name is qualified, so a shadow and production print the same text.
        (previous, _) = session.query_one(
            "SELECT current_setting('search_path'), set_config('search_path', 'pg_catalog', true)"
        ) or ("", None)
        params = {"own_schema": location.schema, "own_tables": list(location.tables)}
        if scope is not None:
            rows = session.query(SCOPED_SNAPSHOT_QUERY, params | {"scope": sorted(scope)})
        else:
            rows = session.query(SNAPSHOT_QUERY, params)
        session.query("SELECT set_config('search_path', %s, true)", (previous,))
    return Snapshot.of(rows)


class SnapshotReader:
    """Reads a shadow's catalog again and again, one round trip each: the query lives in a
    temporary function that sets its own search_path (so definitions print qualified, and
    the session's is left alone) and keeps its plan between calls. It is made when the
    reader is, before any migration: made later, it would fire the migrations' own event
    triggers. A migration that ran DISCARD took it with it: the query is sent whole then."""

    _FUNCTION = "pg_temp.poststack_snapshot"

    def __init__(self, session: Any, location: TrackingLocation) -> None:
        self.session = session
        self.location = location
        self._made = False
        try:
            self._make()  # now, before any migration: later, our DDL would fire their event triggers
        except psycopg2.Error:  # another role's function of that name: the query is sent whole
            session.rollback()

    def _make(self) -> None:
        body = snapshot_function_body()
        self.session.query(
            f"CREATE OR REPLACE FUNCTION {self._FUNCTION}(p_own_schema text, p_own_tables text[]) "
            "RETURNS TABLE (o_kind text, o_identity text, o_definition text) LANGUAGE plpgsql "
            "SET search_path = pg_catalog AS $poststack$ BEGIN RETURN QUERY "
            f"SELECT q.k::text, q.i::text, q.d::text FROM ({body}) AS q(k, i, d); END $poststack$"
        )
        self._made = True

    def read(self) -> Snapshot:
        query = f"SELECT * FROM {self._FUNCTION}(%s, %s)"
        params = (self.location.schema, list(self.location.tables))
        if not self._made:
            return read_snapshot(self.session, self.location)
        try:
            rows = self.session.query(query, params)
        except (psycopg2.errors.UndefinedFunction, psycopg2.errors.InvalidSchemaName):
            # A migration ran DISCARD: the query is sent whole from here on (no DDL of ours).
            self.session.rollback()
            self._made = False
            return read_snapshot(self.session, self.location)
        return Snapshot.of(rows)


# The whole snapshot as one digest, computed by the server itself, so that a script written
# from one database can check, where it runs, that the catalog is the one it was written for.
_DIGEST = (
    "SELECT md5(coalesce(string_agg(concat_ws(chr(31), s.k, s.i, s.d), chr(30) ORDER BY s.k, s.i), '')) "
    f"FROM ({SNAPSHOT_QUERY}) AS s(k, i, d)"
)


def _own(location: TrackingLocation) -> dict[str, Any]:
    return {"own_schema": location.schema, "own_tables": list(location.tables)}


def read_catalog_digest(session: Any, location: TrackingLocation) -> str:
    """The digest of the database's objects now (poststack's own tables left out). Read-only."""
    with session.snapshot():
        # Definitions print names qualified with only pg_catalog on the path (read_snapshot).
        (previous, _) = session.query_one(
            "SELECT current_setting('search_path'), set_config('search_path', 'pg_catalog', true)"
        ) or ("", None)
        row = session.query_one(_DIGEST, _own(location))
        session.query("SELECT set_config('search_path', %s, true)", (previous,))
    return str(row[0]) if row else ""


def unchanged_catalog_statement(location: TrackingLocation, digest: str, again: str) -> Statement:
    """Stop (an error) unless the database's objects are still those of ``digest``: a plan made
    from one catalog (which migrations were held as applied by hand) is for that catalog only."""
    return Statement(
        "DO $poststack$\n"
        "DECLARE\n"
        "    seen text;\n"
        "BEGIN\n"
        "    PERFORM set_config('search_path', 'pg_catalog', true);\n"
        f"    {_DIGEST} INTO seen;\n"
        "    IF seen IS DISTINCT FROM %(expected)s THEN\n"
        "        RAISE EXCEPTION 'poststack: the database''s schema is not the one this script was written for "
        "(changed since, or another database); nothing was run'\n"
        "            USING HINT = %(again)s;\n"
        "    END IF;\n"
        "END\n"
        "$poststack$",
        {**_own(location), "expected": digest, "again": again},
    )
