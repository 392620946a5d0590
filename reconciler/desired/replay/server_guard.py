"""Keep a replay inside its scratch database: what a migration does to the server itself.

A scratch database beside the target shares the target's server: its roles, databases,
tablespaces and settings. A migration that creates a role, alters the target database or
grants on it would, replayed there, do it to the real server. Such a migration is not
replayed (the replay stops there and says why):

- before it runs, by what its statements are (``ScriptStatement.server_level``: CREATE
  ROLE, ALTER DATABASE, GRANT ... ON DATABASE, a DO block whose text runs one, ...);
- and, for what no parse sees (a function or a DO block building the statement), by what
  it wrote: before its transaction commits, GUARD_SQL looks for rows of the shared
  catalogs written by that transaction, and fails it, so that it rolls back.

A row that is visible and whose transaction is still in progress is this transaction's own:
another's uncommitted rows are invisible. Deleted rows are invisible too: a dynamic DROP
ROLE with no other write is not seen, and neither is a migration that runs outside a
transaction (only its statements are judged). A shadow on a server of its own (the embedded
one) needs none of this.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.desired.script import ScriptStatement

GUARD_SQLSTATE = "PSSRV"

# pg_authid (the roles) is readable by superusers only: where the migration's role may not
# read it, a new role still shows in pg_auth_members or pg_shdepend only if granted or used.
GUARD_SQL = """DO $poststack_guard$
DECLARE
    v_now bigint := txid_current();
    v_query text := '';
    v_changed text;
    v_catalog record;
BEGIN
    FOR v_catalog IN
        SELECT c.name, c.what FROM (VALUES
            ('pg_authid', 'roles'), ('pg_auth_members', 'role memberships'),
            ('pg_database', 'databases'), ('pg_db_role_setting', 'role and database settings'),
            ('pg_tablespace', 'tablespaces'), ('pg_shdescription', 'comments on roles, databases or tablespaces'),
            ('pg_shseclabel', 'security labels'), ('pg_parameter_acl', 'privileges on settings'),
            ('pg_shdepend', 'privileges on databases or tablespaces')) AS c(name, what)
        WHERE to_regclass('pg_catalog.' || c.name) IS NOT NULL
          AND has_table_privilege('pg_catalog.' || c.name, 'SELECT')
    LOOP
        v_query := v_query || CASE WHEN v_query = '' THEN '' ELSE ' UNION ALL ' END
            || format('SELECT %L AS what, xmin::text::bigint AS x FROM pg_catalog.%I', v_catalog.what, v_catalog.name)
            || CASE WHEN v_catalog.name = 'pg_shdepend' THEN ' WHERE dbid = 0' ELSE '' END;
    END LOOP;
    EXECUTE 'SELECT string_agg(DISTINCT what, '', '') FROM (' || v_query || ') AS s WHERE s.x > 2'
        || ' AND txid_status(CASE WHEN s.x <= ($1 & 4294967295) THEN (($1 >> 32) << 32) | s.x'
        || ' ELSE ((($1 >> 32) - 1) << 32) | s.x END) = ''in progress'''
        INTO v_changed USING v_now;
    IF v_changed IS NOT NULL THEN
        RAISE EXCEPTION 'it changed the server''s %, not only its own database', v_changed
            USING ERRCODE = 'PSSRV';
    END IF;
END $poststack_guard$"""


def server_level_statement(statements: Sequence[ScriptStatement]) -> ScriptStatement | None:
    """The first statement that acts on the server rather than on its database, if any."""
    return next((statement for statement in statements if statement.server_level is not None), None)
