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
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class ServerGuard:
    """How a migration's transaction is checked in a shadow on a shared server: ``begin``
    opens it and returns the shared catalogs' fingerprint (its rows are the baseline);
    ``check(baseline)``, run last before COMMIT, fails it where they changed. Nothing is
    written for it in the shadow: no DDL of ours for a migration's event trigger to see."""

    fingerprint: str

    @property
    def begin(self) -> str:
        return f"BEGIN ISOLATION LEVEL REPEATABLE READ;\n{self.fingerprint}"

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
    SELECT string_agg(DISTINCT what, ', ' ORDER BY what) INTO v_changed FROM (
        (SELECT what, f FROM ({self.fingerprint}) AS now EXCEPT SELECT * FROM (VALUES {kept}) AS kept(what, f))
        UNION (SELECT * FROM (VALUES {kept}) AS kept(what, f) EXCEPT SELECT what, f FROM ({self.fingerprint}) AS now)
    ) AS differ;
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
    return ServerGuard(f"SELECT what, f FROM ({parts}) AS shared")


def server_level_statement(statements: Sequence[ScriptStatement]) -> ScriptStatement | None:
    """The first statement that acts on the server rather than on its database, if any."""
    return next((statement for statement in statements if statement.server_level is not None), None)
