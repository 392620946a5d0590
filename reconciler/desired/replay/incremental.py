"""Read a shadow's catalog after each migration by re-reading only what the migration touched.

A full snapshot costs the same after a one-line migration as after a big one, and grows with
the schema: on a long history it is most of a replay. PostgreSQL says what each command
touched through event triggers (ddl_command_end, sql_drop); from those objects, everything
that depends on them (pg_depend, so a renamed column reaches the views, indexes and
constraints that print its name) is read again, and nothing else.

Event triggers need a superuser; elsewhere the full read is used (``open_reader``). The
triggers live in the shadow only, with their functions and log in this session's temporary
schema, and fire even under ``session_replication_role = replica``. What no event reports
(DETACH PARTITION dropping cloned triggers, REINDEX before PostgreSQL 17) is found by the
transaction that wrote the catalog rows (xmin). A migration touching a schema or an
extension, or one that ran DISCARD and took the log with it, is followed by a full read.
``agrees`` compares the state kept so with a full read: along a replay and at its end.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import psycopg2.errors

from reconciler.config import TrackingLocation
from reconciler.desired.replay.snapshot import Key, Snapshot, SnapshotReader, snapshot_function_body

_LOG = "pg_temp.poststack_replay_log"
_READ = "pg_temp.poststack_replay_read"

# What a command touched, and (for a dropped default, constraint, trigger, rule or policy
# whose relation lives on) that relation: the dropped row no longer says which it was.
# The functions run as their owner (a migration may SET ROLE), so they act only in the
# replay's own session ({pid}): another session's DDL (dblink, or anyone who connects to the
# scratch database) fires them too, and must not run its own code as the owner through a
# temporary table of the same name. A failure never fails the migration: it logs "read
# everything".


def _log_function(name: str, logging: str) -> str:
    """An event trigger function that runs ``logging`` in the replay's session only."""
    return f"""
CREATE OR REPLACE FUNCTION pg_temp.{name}() RETURNS event_trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog AS $poststack$ BEGIN
    IF pg_backend_pid() <> {{pid}} THEN
        RETURN;
    END IF;
{logging}
EXCEPTION WHEN OTHERS THEN
    IF to_regclass('{_LOG}') IS NOT NULL THEN
        INSERT INTO {_LOG} VALUES ('pg_namespace'::regclass, 0);  -- not known: read everything
    END IF;
END $poststack$;"""


_SETUP = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS poststack_replay_log (classid oid, objid oid);"
    + _log_function(
        "poststack_log_ddl", f"    INSERT INTO {_LOG} SELECT classid, objid FROM pg_event_trigger_ddl_commands();"
    )
    + _log_function(
        "poststack_log_drop",
        f"""    INSERT INTO {_LOG} SELECT classid, objid FROM pg_event_trigger_dropped_objects();
    INSERT INTO {_LOG}
        SELECT 'pg_class'::regclass::oid, r.oid FROM pg_event_trigger_dropped_objects() o
        JOIN pg_class r
          ON r.oid = to_regclass(quote_ident(o.address_names[1]) || '.' || quote_ident(o.address_names[2]))
        WHERE o.object_type IN ('default value', 'table constraint', 'trigger', 'rule', 'policy')
          AND cardinality(o.address_names) = 3;""",
    )
    + """
DROP EVENT TRIGGER IF EXISTS poststack_replay_ddl;
DROP EVENT TRIGGER IF EXISTS poststack_replay_drop;
CREATE EVENT TRIGGER poststack_replay_ddl ON ddl_command_end EXECUTE FUNCTION pg_temp.poststack_log_ddl();
CREATE EVENT TRIGGER poststack_replay_drop ON sql_drop EXECUTE FUNCTION pg_temp.poststack_log_drop();
ALTER EVENT TRIGGER poststack_replay_ddl ENABLE ALWAYS;
ALTER EVENT TRIGGER poststack_replay_drop ENABLE ALWAYS;
"""
)

# Event triggers do not see everything: DETACH PARTITION drops the triggers it had cloned
# onto the partition, REINDEX CONCURRENTLY swaps an index for a new one (no event before
# PostgreSQL 17). Every catalog row a migration inserts or updates carries its transaction
# in xmin: the rows of user objects (OIDs from 16384) newer than the previous read
# (p_since, that read's transaction) are touched too, whatever fired or did not.
_WRITTEN_SINCE = """
    SELECT c.oid FROM pg_class c WHERE c.oid >= 16384 AND age(c.xmin) < v_age
    UNION SELECT a.attrelid FROM pg_attribute a WHERE a.attrelid >= 16384 AND age(a.xmin) < v_age
    UNION SELECT d.adrelid FROM pg_attrdef d WHERE d.oid >= 16384 AND age(d.xmin) < v_age
    UNION SELECT unnest(ARRAY[k.oid, k.conrelid, k.contypid]) FROM pg_constraint k
          WHERE k.oid >= 16384 AND age(k.xmin) < v_age
    UNION SELECT unnest(ARRAY[x.indexrelid, x.indrelid]) FROM pg_index x
          WHERE x.indexrelid >= 16384 AND age(x.xmin) < v_age
    UNION SELECT p.oid FROM pg_proc p WHERE p.oid >= 16384 AND age(p.xmin) < v_age
    UNION SELECT t.tgrelid FROM pg_trigger t WHERE t.oid >= 16384 AND age(t.xmin) < v_age
    UNION SELECT unnest(ARRAY[y.oid, y.typrelid]) FROM pg_type y WHERE y.oid >= 16384 AND age(y.xmin) < v_age
    UNION SELECT e.enumtypid FROM pg_enum e WHERE e.oid >= 16384 AND age(e.xmin) < v_age
    UNION SELECT o.polrelid FROM pg_policy o WHERE o.oid >= 16384 AND age(o.xmin) < v_age
    UNION SELECT r.ev_class FROM pg_rewrite r WHERE r.oid >= 16384 AND age(r.xmin) < v_age
    UNION SELECT unnest(ARRAY[i.inhrelid, i.inhparent]) FROM pg_inherits i
          WHERE i.inhrelid >= 16384 AND age(i.xmin) < v_age"""

# One round trip a migration. Marker rows have kind '*': ('*', 'all') says the rows are the
# whole catalog; ('*', 'touched', own) names an object whose rows are replaced by those read;
# ('*', 'since', xid) is this read's transaction, the next read's p_since. The plan of the
# big query is made once (a generic plan): made again for each call's OIDs, it costs as
# much as running it.
_READER = rf"""
CREATE OR REPLACE FUNCTION {_READ}(p_whole boolean, p_since xid, p_own_schema text, p_own_tables text[])
RETURNS TABLE (o_kind text, o_identity text, o_definition text, o_own oid, o_parent oid)
LANGUAGE plpgsql SET search_path = pg_catalog {{generic}}
AS $poststack$
DECLARE
    v_touched oid[];
    v_new oid[];
    v_age integer := CASE WHEN p_since IS NULL THEN NULL ELSE age(p_since) END;
    -- The catalogs whose objects others' definitions can print (pg_depend's indexes lead
    -- with the class): walking from an OID, each is looked up in these.
    v_classes oid[] := ARRAY['pg_class', 'pg_type', 'pg_proc', 'pg_constraint', 'pg_rewrite', 'pg_attrdef',
        'pg_trigger', 'pg_policy', 'pg_collation', 'pg_opclass', 'pg_opfamily', 'pg_operator', 'pg_am',
        'pg_ts_config', 'pg_ts_dict', 'pg_language', 'pg_foreign_server', 'pg_foreign_data_wrapper',
        'pg_namespace', 'pg_extension', 'pg_cast', 'pg_conversion', 'pg_statistic_ext']::regclass[]::oid[];
BEGIN
    RETURN QUERY SELECT '*'::text, 'since'::text, (txid_current() % 4294967296)::text, NULL::oid, NULL::oid;
    IF p_whole OR v_age IS NULL
        OR EXISTS (SELECT 1 FROM {_LOG} WHERE classid IN ('pg_namespace'::regclass, 'pg_extension'::regclass))
        OR EXISTS (SELECT 1 FROM pg_namespace n WHERE n.oid >= 16384 AND age(n.xmin) < v_age
                   AND n.nspname NOT LIKE 'pg\_%')
        OR EXISTS (SELECT 1 FROM pg_extension e WHERE e.oid >= 16384 AND age(e.xmin) < v_age) THEN
        DELETE FROM {_LOG};
        RETURN QUERY SELECT '*'::text, 'all'::text, NULL::text, NULL::oid, NULL::oid;
        RETURN QUERY SELECT q.k::text, q.i::text, q.d::text, q.o::oid, q.p::oid
            FROM ({snapshot_function_body(owned=True)}) AS q(k, i, d, o, p);
        RETURN;
    END IF;
    -- Everything that depends on what was touched prints its name: a renamed column reaches
    -- the views, indexes and constraints over it. Some of what prints a name has no
    -- pg_depend row leading to it: a view hangs on its rule, a default on pg_attrdef, a
    -- key constraint on its index (renamed together) and a type on its relation (internal
    -- dependencies, walked both ways), a child table on its parent (inherited columns and
    -- constraints are renamed with the parent's), so a constraint leads to its table.
    -- OIDs alone (not class and OID): one too many may be read again, none is missed.
    v_new := ARRAY(SELECT DISTINCT l.objid FROM {_LOG} l WHERE l.objid IS NOT NULL AND l.objid <> 0
                   UNION SELECT c.conrelid FROM pg_constraint c, {_LOG} l WHERE c.oid = l.objid AND c.conrelid <> 0
                   UNION SELECT w.oid FROM ({_WRITTEN_SINCE}) AS w(oid) WHERE w.oid <> 0);
    v_touched := v_new;
    WHILE cardinality(v_new) > 0 LOOP
        v_new := ARRAY(
            SELECT d.objid FROM pg_depend d WHERE d.refclassid = ANY(v_classes) AND d.refobjid = ANY(v_new)
            UNION SELECT d.refobjid FROM pg_depend d
                  WHERE d.classid = ANY(v_classes) AND d.objid = ANY(v_new) AND d.deptype = 'i'
            UNION SELECT r.ev_class FROM pg_rewrite r WHERE r.oid = ANY(v_new)
            UNION SELECT a.adrelid FROM pg_attrdef a WHERE a.oid = ANY(v_new)
            UNION SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = ANY(v_new)
            EXCEPT SELECT unnest(v_touched));
        v_touched := v_touched || v_new;
    END LOOP;
    IF cardinality(v_touched) = 0 THEN
        v_touched := NULL;
    END IF;
    DELETE FROM {_LOG};
    IF v_touched IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT '*'::text, 'touched'::text, NULL::text, t, t FROM unnest(v_touched) AS t;
    RETURN QUERY SELECT q.k::text, q.i::text, q.d::text, q.o::oid, q.p::oid
        FROM ({snapshot_function_body(owned=True, only="v_touched")}) AS q(k, i, d, o, p);
END $poststack$
"""

# A full read every so many migrations checks the kept state along the way, not only at
# the end: a later migration touching the same object would otherwise hide a miss.
CHECK_EVERY = 25


# What changes the catalog behind the event triggers' back: their own switch, another
# session (dblink), and writes to the catalog itself. A migration that says any of these is
# followed by a full read: slower, never wrong.
_UNSEEN = re.compile(
    r"event[\s_]+trigger|dblink|\b(update(\s+only)?|insert\s+into|delete\s+from(\s+only)?)\s+(pg_catalog\s*\.\s*)?\"?pg_",
    re.IGNORECASE,
)


def hides_from_event_triggers(sql: str) -> bool:
    return _UNSEEN.search(sql) is not None


class CatalogReader(Protocol):
    kind: str  # "incremental" or "full"

    def read(self, whole: bool = False) -> Snapshot: ...

    def agrees(self) -> bool: ...


class _FullReader:
    """The whole catalog each time: nothing kept between reads, nothing to check."""

    kind = "full"

    def __init__(self, session: Any, location: TrackingLocation) -> None:
        self._reader = SnapshotReader(session, location)

    def read(self, whole: bool = False) -> Snapshot:
        return self._reader.read()

    def agrees(self) -> bool:
        return True


class IncrementalReader:
    """The catalog as the migrations left it, read again only where they touched it."""

    kind = "incremental"

    def __init__(self, session: Any, location: TrackingLocation) -> None:
        self.session = session
        self.location = location
        self._objects: dict[Key, str] = {}
        self._owners: dict[Key, tuple[int, int]] = {}  # key -> (own oid, parent oid)
        self._whole = True  # the next read is of everything (the first, or after DISCARD)
        self._since: str | None = None  # the previous read's transaction
        self._discarded = False  # a migration ran DISCARD: whole reads from then on
        self._full = SnapshotReader(session, location)
        self._make()

    def _make(self) -> None:
        # The server's own pid: behind a pooler, the one libpq was told at connection is the pooler's.
        (pid,) = self.session.query_one("SELECT pg_backend_pid()") or (0,)
        self.session.query(_SETUP.replace("{pid}", str(int(pid))))
        generic = "SET plan_cache_mode = force_generic_plan" if self.session.server_info().major >= 12 else ""
        self.session.query(_READER.replace("{generic}", generic))
        self._whole = True

    def read(self, whole: bool = False) -> Snapshot:
        """The state now; ``whole``: read all of it (the last migration hid what it did)."""
        params = (self._whole or whole, self._since, self.location.schema, list(self.location.tables))
        query = f"SELECT * FROM {_READ}(%s, %s::xid, %s, %s)"
        if self._discarded:
            self._objects = dict(self._full.read().objects)
            return Snapshot(dict(self._objects))
        try:
            rows = self.session.query(query, params)
        except (psycopg2.errors.UndefinedFunction, psycopg2.errors.UndefinedTable, psycopg2.errors.InvalidSchemaName):
            # A migration ran DISCARD: the log and the triggers went with the temporary
            # schema, and with them what the migration touched. From here on everything is
            # read each time: made again, our DDL would fire the migrations' own event
            # triggers, outside any check of what they do (server_guard).
            self.session.rollback()
            self._discarded = True
            return self.read()
        self._whole = False
        self._apply(rows)
        return Snapshot(dict(self._objects))

    def _apply(self, rows: list[tuple[Any, ...]]) -> None:
        markers = [row for row in rows if row[0] == "*"]
        self._since = next(definition for _, identity, definition, *_ in markers if identity == "since")
        if any(identity == "all" for _, identity, *_ in markers):
            self._objects.clear()
            self._owners.clear()
        else:
            touched = {int(own) for _, identity, _, own, _ in markers if identity == "touched"}
            for key in [k for k, (own, parent) in self._owners.items() if own in touched or parent in touched]:
                del self._objects[key]
                del self._owners[key]
        for kind, identity, definition, own, parent in rows:
            if kind != "*":
                key = (kind, identity)
                self._objects[key] = definition or ""
                self._owners[key] = (int(own), int(parent))

    def agrees(self) -> bool:
        """Whether the state kept equals the whole catalog read now."""
        return self._full.read().objects == self._objects


def open_reader(session: Any, location: TrackingLocation, incremental: bool = True) -> CatalogReader:
    """The incremental reader where the shadow's role may make event triggers and they fire
    (PostgreSQL 17 can turn them off: event_triggers = off), else the full one."""
    if incremental:
        row = session.query_one(
            "SELECT rolsuper, current_setting('event_triggers', true) FROM pg_roles WHERE rolname = current_user"
        )
        if row is not None and row[0] and row[1] != "off":
            try:
                return IncrementalReader(session, location)
            except psycopg2.Error:
                session.rollback()
    return _FullReader(session, location)
