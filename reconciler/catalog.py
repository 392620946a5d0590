"""Observed state, part two: the live catalog, in one read-only query.

System schemas, objects that belong to extensions, and poststack's own tables are left
out. Verify scripts (``NNN_name.verify.sql``) run here too, all in one query.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import psycopg2

from reconciler.effects import ObjectRef

_CATALOG_SQL = r"""
WITH ns AS (
    SELECT n.oid, n.nspname FROM pg_namespace n
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\_toast%%' AND n.nspname NOT LIKE 'pg\_temp\_%%'
),
ext AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e'),
rel AS (
    SELECT c.oid, c.relname, c.relkind, ns.nspname FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'i', 'I', 'f')
      AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_class'::regclass AND ext.objid = c.oid)
      AND NOT (ns.nspname = %(schema)s AND c.relname LIKE 'schema\_migrations%%')
)
SELECT 'schema'::text, NULL::text, ns.nspname::text, NULL::text, NULL::text[], true FROM ns
    WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_namespace'::regclass AND ext.objid = ns.oid)
UNION ALL
SELECT CASE rel.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized_view' WHEN 'S' THEN 'sequence'
                        WHEN 'i' THEN 'index' WHEN 'I' THEN 'index' ELSE 'table' END,
       rel.nspname, rel.relname, t.relname, NULL, coalesce(i.indisvalid, true)
    FROM rel LEFT JOIN pg_index i ON i.indexrelid = rel.oid LEFT JOIN pg_class t ON t.oid = i.indrelid
UNION ALL
SELECT 'column', rel.nspname, a.attname, rel.relname, NULL, true
    FROM pg_attribute a JOIN rel ON rel.oid = a.attrelid
    WHERE a.attnum > 0 AND NOT a.attisdropped AND rel.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END, ns.nspname, p.proname, NULL,
       ARRAY(SELECT t.typname::text FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS u(typ, n)
             JOIN pg_type t ON t.oid = u.typ ORDER BY u.n), true
    FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
    WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_proc'::regclass AND ext.objid = p.oid)
UNION ALL
SELECT CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'd' THEN 'domain' WHEN 'r' THEN 'range' ELSE 'composite' END,
       ns.nspname, t.typname, NULL, NULL, true
    FROM pg_type t JOIN ns ON ns.oid = t.typnamespace LEFT JOIN pg_class c ON c.oid = t.typrelid
    WHERE (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND c.relkind = 'c'))
      AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_type'::regclass AND ext.objid = t.oid)
UNION ALL
SELECT 'extension', NULL, e.extname, NULL, NULL, true FROM pg_extension e
UNION ALL
SELECT 'trigger', rel.nspname, tg.tgname, rel.relname, NULL, true
    FROM pg_trigger tg JOIN rel ON rel.oid = tg.tgrelid WHERE NOT tg.tgisinternal
UNION ALL
SELECT 'policy', rel.nspname, pol.polname, rel.relname, NULL, true
    FROM pg_policy pol JOIN rel ON rel.oid = pol.polrelid
"""


@dataclass(frozen=True)
class CatalogSnapshot:
    objects: tuple[ObjectRef, ...]
    invalid_indexes: tuple[ObjectRef, ...] = field(default=())

    @cached_property
    def keys(self) -> frozenset[tuple[Any, ...]]:
        return frozenset(o.key for o in self.objects)

    def has(self, ref: ObjectRef) -> bool:
        return ref.key in self.keys

    @cached_property
    def schemas(self) -> tuple[str, ...]:
        return tuple(sorted(o.name for o in self.objects if o.kind == "schema"))

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(o.kind for o in self.objects).items()))


def read_catalog(session: Any, tracking_schema: str) -> CatalogSnapshot:
    rows = session.query(_CATALOG_SQL, {"schema": tracking_schema})
    objects = []
    invalid = []
    for kind, schema, name, parent, args, valid in rows:
        ref = ObjectRef(kind, schema, name, parent, tuple(args) if args is not None else None)
        objects.append(ref)
        if not valid:
            invalid.append(ref)
    return CatalogSnapshot(tuple(sorted(objects)), tuple(sorted(invalid)))


def run_verify_scripts(session: Any, scripts: dict[str, str]) -> dict[str, bool | str]:
    """Run each verify query (one boolean: "is this migration applied?"). All in one query
    when they all work; one by one, each in a savepoint, to say which one failed."""
    if not scripts:
        return {}
    versions = sorted(scripts)
    bodies = [scripts[v].strip().rstrip(";").strip() for v in versions]
    combined = "SELECT " + ", ".join(f"(({body}))::boolean" for body in bodies)
    session.query("SAVEPOINT poststack_verify")
    try:
        row = session.query_one(combined)
        session.query("RELEASE SAVEPOINT poststack_verify")
        return {v: bool(value) for v, value in zip(versions, row or (), strict=True)}
    except psycopg2.Error:
        session.query("ROLLBACK TO SAVEPOINT poststack_verify")
    results: dict[str, bool | str] = {}
    for version, body in zip(versions, bodies, strict=True):
        try:
            value = session.query_one(f"SELECT (({body}))::boolean")
            session.query("RELEASE SAVEPOINT poststack_verify")
            results[version] = bool(value and value[0])
        except psycopg2.Error as e:
            session.query("ROLLBACK TO SAVEPOINT poststack_verify")
            results[version] = (getattr(e.diag, "message_primary", None) or str(e)).strip()
        session.query("SAVEPOINT poststack_verify")
    session.query("RELEASE SAVEPOINT poststack_verify")
    return results
