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

from reconciler.config import TrackingLocation
from reconciler.desired.effects import ObjectRef
from reconciler.errors import UsageError
from reconciler.statements import Statement

_CATALOG_TEMPLATE = r"""
WITH ns AS (
    SELECT n.oid, n.nspname FROM pg_namespace n
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\_toast%%' AND n.nspname NOT LIKE 'pg\_temp\_%%'
      AND (NOT %(scoped)s OR n.nspname = ANY(%(scope)s::text[]))
),
{ext}rel AS (
    SELECT c.oid, c.relname, c.relkind, ns.nspname FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'i', 'I', 'f', 'c')
      AND {not_pg_class}
      AND NOT (ns.nspname = %(schema)s AND c.relname = ANY(%(own)s))
)
SELECT 'schema'::text, NULL::text, ns.nspname::text, NULL::text, NULL::text[], true FROM ns
    WHERE {not_pg_namespace}
UNION ALL
SELECT CASE rel.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized_view' WHEN 'S' THEN 'sequence'
                        WHEN 'i' THEN 'index' WHEN 'I' THEN 'index' ELSE 'table' END,
       rel.nspname, rel.relname, t.relname, NULL, coalesce(i.indisvalid, true)
    FROM rel LEFT JOIN pg_index i ON i.indexrelid = rel.oid LEFT JOIN pg_class t ON t.oid = i.indrelid
    WHERE rel.relkind <> 'c'
UNION ALL
SELECT 'column', rel.nspname, a.attname, rel.relname, NULL, true
    FROM pg_attribute a JOIN rel ON rel.oid = a.attrelid
    WHERE a.attnum > 0 AND NOT a.attisdropped AND rel.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END, ns.nspname, p.proname, NULL,
       ARRAY(SELECT t.typname::text FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS u(typ, n)
             JOIN pg_type t ON t.oid = u.typ ORDER BY u.n), true
    FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
    WHERE {not_pg_proc}
UNION ALL
SELECT CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'd' THEN 'domain' WHEN 'r' THEN 'range' ELSE 'composite' END,
       ns.nspname, t.typname, NULL, NULL, true
    FROM pg_type t JOIN ns ON ns.oid = t.typnamespace LEFT JOIN pg_class c ON c.oid = t.typrelid
    WHERE (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND c.relkind = 'c'))
      AND {not_pg_type}
UNION ALL
SELECT 'extension', NULL, e.extname, NULL, NULL, true FROM pg_extension e
UNION ALL
SELECT 'trigger', rel.nspname, tg.tgname, rel.relname, NULL, true
    FROM pg_trigger tg JOIN rel ON rel.oid = tg.tgrelid WHERE NOT tg.tgisinternal
UNION ALL
SELECT 'policy', rel.nspname, pol.polname, rel.relname, NULL, true
    FROM pg_policy pol JOIN rel ON rel.oid = pol.polrelid
"""


def _not_in_extension(scoped: bool, catalog: str, column: str) -> str:
    """Not an extension's member. Over the whole database, one pass over pg_depend's members
    (the ``ext`` CTE); for a fleet tenant's few schemas, a look-up per object through
    pg_depend's index, so a database of many tenants is not scanned for each one."""
    if scoped:
        return (
            f"NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass "
            f"AND d.objid = {column} AND d.objsubid = 0 AND d.deptype = 'e')"
        )
    return f"NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = '{catalog}'::regclass AND ext.objid = {column})"


def _catalog_sql(scoped: bool) -> str:
    return _CATALOG_TEMPLATE.format(
        ext="" if scoped else "ext AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e'),\n",
        not_pg_class=_not_in_extension(scoped, "pg_class", "c.oid"),
        not_pg_namespace=_not_in_extension(scoped, "pg_namespace", "ns.oid"),
        not_pg_proc=_not_in_extension(scoped, "pg_proc", "p.oid"),
        not_pg_type=_not_in_extension(scoped, "pg_type", "t.oid"),
    )


_CATALOG_SQL = {scoped: _catalog_sql(scoped) for scoped in (False, True)}


@dataclass(frozen=True)
class CatalogSnapshot:
    objects: tuple[ObjectRef, ...]
    invalid_indexes: tuple[ObjectRef, ...] = field(default=())

    @cached_property
    def keys(self) -> frozenset[tuple[Any, ...]]:
        # An INVALID index (a concurrent build that failed or was killed) is not there in
        # any sense that shows a migration ran.
        invalid = {o.key for o in self.invalid_indexes}
        return frozenset(o.key for o in self.objects if o.key not in invalid)

    def has(self, ref: ObjectRef) -> bool:
        return ref.key in self.keys

    @cached_property
    def schemas(self) -> tuple[str, ...]:
        return tuple(sorted(o.name for o in self.objects if o.kind == "schema"))

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(o.kind for o in self.objects).items()))


def own_relations(location: TrackingLocation) -> tuple[str, ...]:
    """poststack's own relations at ``location``: its tables and what PostgreSQL made for them
    (config keeps the prefix short enough that none of these names is cut at 63 bytes)."""
    m, lock, audit = location.tables
    made = (f"{m}_pkey", f"{lock}_pkey", f"{audit}_pkey", f"{m}_id_seq", f"{audit}_id_seq")
    return (*location.tables, *made, location.version_index)


def session_search_path(session: Any) -> tuple[tuple[str, ...], frozenset[str], str]:
    """The search_path migrations run with (the role's or database's default), "$user"
    resolved, which of its schemas exist, and the role: where unqualified names land."""
    row = session.query_one("SELECT current_setting('search_path'), current_user, current_schemas(false)")
    assert row is not None
    path, user, existing = row
    names = []
    for part in path.split(","):
        name = part.strip().strip('"')
        if name == "$user":
            name = user
        if name and name not in ("pg_catalog", "pg_temp"):
            names.append(name)
    return tuple(names) or ("public",), frozenset(existing or ()), user


def read_catalog(session: Any, location: TrackingLocation, scope: frozenset[str] | None = None) -> CatalogSnapshot:
    """The catalog; with ``scope``, only the objects in these schemas (a fleet tenant's)."""
    params = {"schema": location.schema, "own": list(own_relations(location))}
    scoped = scope is not None
    rows = session.query(_CATALOG_SQL[scoped], params | {"scoped": scoped, "scope": sorted(scope or ())})
    objects = []
    invalid = []
    for kind, schema, name, parent, args, valid in rows:
        ref = ObjectRef(kind, schema, name, parent, tuple(args) if args is not None else None)
        objects.append(ref)
        if not valid:
            invalid.append(ref)
    return CatalogSnapshot(tuple(sorted(objects)), tuple(sorted(invalid)))


class VerifyScriptError(ValueError):
    pass


def verify_query(text: str) -> str:
    """A verify script as one SELECT, deparsed by pglast: exactly one statement, a SELECT
    without data-changing parts, with no comment or semicolon left to break out of the
    query it is placed in."""
    from pglast import parser
    from pglast.stream import RawStream

    try:
        statements = parser.parse_sql(text)
    except parser.ParseError as e:
        raise VerifyScriptError(f"does not parse: {e.args[0] if e.args else e}") from e
    if len(statements) != 1 or type(statements[0].stmt).__name__ != "SelectStmt":
        raise VerifyScriptError("must be exactly one SELECT returning one boolean")
    select = statements[0].stmt
    if select.intoClause is not None or select.lockingClause:
        raise VerifyScriptError("must only read (no SELECT INTO, no FOR UPDATE)")
    for cte in getattr(select.withClause, "ctes", None) or ():
        if type(cte.ctequery).__name__ != "SelectStmt":
            raise VerifyScriptError("must only read (no INSERT, UPDATE or DELETE in WITH)")
    return RawStream()(select)


def run_verify_scripts(session: Any, scripts: dict[str, str]) -> dict[str, bool | str]:
    """Each verify script's answer: true or false, or why there is none (an error, NULL, no
    row). They run as one query inside the read-only snapshot; when one fails, halves are
    tried, so a failure costs a few round trips, not one per script."""
    results: dict[str, bool | str] = {}
    queries: dict[str, str] = {}
    for version, text in scripts.items():
        try:
            queries[version] = verify_query(text)
        except VerifyScriptError as e:
            results[version] = f"verify script {e}"
    _answer(session, sorted(queries), queries, results)
    return results


def _answer(session: Any, versions: list[str], queries: dict[str, str], results: dict[str, bool | str]) -> None:
    if not versions:
        return
    # Read-only whatever the surrounding transaction (an assert step inside apply runs in a
    # read-write one): a verify script that tries to write fails, and nothing it did stays.
    session.query("SAVEPOINT poststack_verify")
    session.query("SET LOCAL transaction_read_only = on")
    try:
        _try(session, versions, queries, results)
    finally:
        session.query("ROLLBACK TO SAVEPOINT poststack_verify")
        session.query("RELEASE SAVEPOINT poststack_verify")


def _try(session: Any, versions: list[str], queries: dict[str, str], results: dict[str, bool | str]) -> None:
    combined = "SELECT " + ", ".join(f"({queries[v]})::boolean" for v in versions)
    try:
        row = session.query_one(combined)
    except psycopg2.Error as e:
        session.query("ROLLBACK TO SAVEPOINT poststack_verify")  # the savepoint stays for the next try
        session.query("SET LOCAL transaction_read_only = on")
        if len(versions) == 1:
            results[versions[0]] = " ".join((getattr(e.diag, "message_primary", None) or str(e)).split())
            return
        middle = len(versions) // 2
        _try(session, versions[:middle], queries, results)
        _try(session, versions[middle:], queries, results)
        return
    for version, value in zip(versions, row or (), strict=True):
        results[version] = value if isinstance(value, bool) else "it returned NULL or no row"


def still_unapplied_statement(version: str, verify_text: str, again: str) -> Statement:
    """Stop (an error) if ``version``'s verify script now says it is applied: an offline
    script written while it said not must not run it over work someone did by hand since
    (db migrate holds such a migration)."""
    try:
        query = verify_query(verify_text).replace("%", "%%")  # the statement has parameters
    except VerifyScriptError as e:
        raise UsageError(
            f"migration {version}: its verify script {e}: a script cannot check it before running the migration"
        ) from e
    return Statement(
        "DO $poststack$\n"
        "BEGIN\n"
        f"    IF coalesce(({query})::boolean, false) THEN\n"
        "        RAISE EXCEPTION 'poststack: the verify script of migration %% now says it is applied (run by hand since "
        "this script was written?); nothing was run', %(version)s\n"
        "            USING HINT = %(again)s;\n"
        "    END IF;\n"
        "END\n"
        "$poststack$",
        {"version": version, "again": again},
    )
