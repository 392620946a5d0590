"""Keep a replay inside its scratch database: what a migration does to the server itself.

A scratch database beside the target shares the target's server: its roles, databases,
tablespaces, settings and replication state. A migration that creates a role, alters the
target database or grants on it would, replayed there, do it to the real server. Such a
migration is not replayed (the replay stops there and says why):

- before it runs, by what its statements are (``ScriptStatement.server_level``: CREATE
  ROLE, ALTER DATABASE, GRANT ... ON DATABASE, COPY to a server file, dblink, ...);
- and, for what no parse sees (a function building the statement, a trigger), by what it
  did: its transaction runs REPEATABLE READ, the shared catalogs are fingerprinted (each
  row's ctid and xmin) at its start and again before COMMIT (deferred triggers fired
  first), and a difference fails the transaction, which rolls it back. Under one snapshot, other sessions' changes are invisible: only the
  migration's own inserts, updates and deletes change the fingerprint.

A statement that must run outside a transaction is run bare only when it is one of the
kinds PostgreSQL refuses inside one (CREATE INDEX CONCURRENTLY, VACUUM, ...), which change
nothing of the server's; anything else outside a transaction (a CALL whose procedure
commits) stops the replay. What reaches another session (dblink, postgres_fdw writes) is
not seen by the fingerprint: dblink is refused by its statements. A shadow on a server of
its own (the embedded one) needs none of this.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg2.errors

from reconciler.desired.script import ScriptStatement

GUARD_SQLSTATE = "PSSRV"

# (catalog, what a person calls it, which rows): the shared catalogs a statement can write.
_SHARED = (
    ("pg_authid", "roles", ""),
    ("pg_auth_members", "role memberships", ""),
    # The scratch database's own row is the replay's to change (a login event trigger sets a flag).
    ("pg_database", "databases", " WHERE datname <> current_database()"),
    ("pg_db_role_setting", "role and database settings", ""),
    ("pg_tablespace", "tablespaces", ""),
    ("pg_shdescription", "comments on roles, databases or tablespaces", ""),
    ("pg_shseclabel", "security labels on shared objects", ""),
    ("pg_shdepend", "privileges on databases or tablespaces", " WHERE dbid = 0"),
    ("pg_replication_origin", "replication origins", ""),
    ("pg_subscription", "subscriptions", ""),
    ("pg_parameter_acl", "privileges on settings", ""),
)


_FUNCTION = "pg_temp.poststack_server_fingerprint"


class ServerGuard:
    """How a migration's transaction is checked in a shadow on a shared server: ``open``
    begins it and returns the shared catalogs' fingerprint (the baseline); ``check(baseline)``,
    run last before COMMIT, fails it where they changed. The fingerprint query lives in a
    temporary function made before any migration (its plan kept: planned on every call it
    cost most of the check); after a DISCARD took it, the query is sent whole. Nothing of
    ours is made between migrations, for a migration's event trigger to see."""

    def __init__(self, inline: str) -> None:
        self.inline = inline  # the fingerprint query itself
        self._function = False

    def make(self, session: Any) -> None:
        session.query(
            f"CREATE OR REPLACE FUNCTION {_FUNCTION}() RETURNS TABLE (what text, f text) LANGUAGE plpgsql "
            f"AS $poststack$ #variable_conflict use_column\nBEGIN RETURN QUERY {self.inline}; END $poststack$"
        )
        self._function = True

    @property
    def fingerprint(self) -> str:
        return f"SELECT * FROM {_FUNCTION}()" if self._function else self.inline

    def open(self, session: Any) -> list[tuple[Any, ...]]:
        """BEGIN the migration's transaction (REPEATABLE READ) and return the baseline."""
        try:
            return session.query(f"BEGIN ISOLATION LEVEL REPEATABLE READ;\n{self.fingerprint}")
        except psycopg2.errors.UndefinedFunction:  # a migration ran DISCARD
            session.rollback()
            self._function = False
            return session.query(f"BEGIN ISOLATION LEVEL REPEATABLE READ;\n{self.fingerprint}")

    def check(self, baseline: Sequence[tuple[Any, ...]]) -> str:
        # Literals of our own making: fixed labels and md5 digests.
        kept = ", ".join(f"('{what}', '{digest}')" for what, digest in baseline) or "(NULL, NULL)"
        return f"""SET CONSTRAINTS ALL IMMEDIATE;
DO $poststack_guard$
DECLARE
    v_session text := session_user;
    v_role text := current_user;
    v_changed text;
BEGIN
    -- Read as the replay's own role (pg_authid is for superusers), then give the migration
    -- back the role it had chosen: a file outside a transaction goes on with it.
    RESET SESSION AUTHORIZATION;
    RESET ROLE;
    IF to_regprocedure('{_FUNCTION}()') IS NOT NULL THEN
        SELECT string_agg(what, ', ' ORDER BY what) INTO v_changed
        FROM {_FUNCTION}() AS now FULL JOIN (VALUES {kept}) AS kept(what, f) USING (what)
        WHERE now.f IS DISTINCT FROM kept.f;
    ELSE  -- a DISCARD in the migration took the function
        SELECT string_agg(what, ', ' ORDER BY what) INTO v_changed
        FROM ({self.inline}) AS now FULL JOIN (VALUES {kept}) AS kept(what, f) USING (what)
        WHERE now.f IS DISTINCT FROM kept.f;
    END IF;
    IF v_changed IS NOT NULL THEN
        RAISE EXCEPTION 'it changed the server''s %, not only its own database', v_changed
            USING ERRCODE = '{GUARD_SQLSTATE}';
    END IF;
    IF v_session <> session_user THEN
        EXECUTE format('SET SESSION AUTHORIZATION %I', v_session);
    END IF;
    IF v_role <> current_user THEN
        EXECUTE format('SET ROLE %I', v_role);
    END IF;
END $poststack_guard$"""


def server_guard(session: Any) -> ServerGuard:
    """The guard for ``session``'s role: the catalogs it may read (pg_authid: superusers only),
    read as that role even where the migration has switched to another."""
    readable = [
        (catalog, what, rows)
        for catalog, what, rows in _SHARED
        if (
            found := session.query_one(
                "SELECT to_regclass(%s) IS NOT NULL AND has_table_privilege(%s, 'SELECT')",
                (f"pg_catalog.{catalog}", f"pg_catalog.{catalog}"),
            )
        )
        is not None
        and found[0]
    ]
    parts = " UNION ALL ".join(
        f"SELECT '{what}' AS what, md5(coalesce(string_agg(ctid::text || xmin::text, ',' ORDER BY ctid), '')) AS f"
        f" FROM pg_catalog.{catalog}{rows}"
        for catalog, what, rows in readable
    )
    guard = ServerGuard(f"SELECT what, f FROM ({parts}) AS shared")
    try:
        guard.make(session)
    except psycopg2.Error:  # no temporary objects here: the query is sent whole
        session.rollback()
    return guard


def server_level_statement(statements: Sequence[ScriptStatement]) -> ScriptStatement | None:
    """The first statement that acts on the server rather than on its database, if any."""
    return next((statement for statement in statements if statement.server_level is not None), None)
