"""Keep a replay inside its scratch database: what a migration does to the server itself.

A scratch database beside the target shares the target's server: its roles, databases,
tablespaces, settings and replication state. A migration that creates a role, alters the
target database or grants on it would, replayed there, do it to the real server. Such a
migration is not replayed (the replay stops there and says why):

- before it runs, by what its statements are (``ScriptStatement.server_level``: CREATE
  ROLE, ALTER DATABASE, GRANT ... ON DATABASE, COPY to a server file, dblink, ...);
- and, for what no parse sees (a function building the statement), by what it did: its
  transaction runs REPEATABLE READ, the shared catalogs are fingerprinted (each row's ctid
  and xmin) at its start and again before COMMIT, and a difference fails the transaction,
  which rolls it back. Under one snapshot, other sessions' changes are invisible: only the
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
_TABLE = "pg_temp.poststack_server_guard"

# (catalog, what a person calls it, which rows): the shared catalogs a statement can write.
_SHARED = (
    ("pg_authid", "roles", ""),
    ("pg_auth_members", "role memberships", ""),
    ("pg_database", "databases", ""),
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
    """The statements that bracket a migration's transaction in a shadow on a shared server."""

    remember: str  # the shared catalogs' fingerprint now (first, in the transaction)
    check: str  # fails the transaction (GUARD_SQLSTATE) when it differs (last, before COMMIT)

    @property
    def begin(self) -> str:
        return f"BEGIN ISOLATION LEVEL REPEATABLE READ;\n{self.remember}"


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
    fingerprint = f"SELECT what, f FROM ({parts}) AS shared"
    remember = (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS poststack_server_guard (what text, f text);\n"
        f"DELETE FROM {_TABLE};\nINSERT INTO {_TABLE} {fingerprint}"
    )
    check = f"""RESET SESSION AUTHORIZATION;
RESET ROLE;
DO $poststack_guard$
DECLARE
    v_changed text;
BEGIN
    SELECT string_agg(DISTINCT what, ', ' ORDER BY what) INTO v_changed FROM (
        (SELECT what, f FROM ({fingerprint}) AS now EXCEPT SELECT what, f FROM {_TABLE})
        UNION (SELECT what, f FROM {_TABLE} EXCEPT SELECT what, f FROM ({fingerprint}) AS now)) AS differ;
    IF v_changed IS NOT NULL THEN
        RAISE EXCEPTION 'it changed the server''s %, not only its own database', v_changed USING ERRCODE = '{GUARD_SQLSTATE}';
    END IF;
END $poststack_guard$"""
    return ServerGuard(remember, check)


def server_level_statement(statements: Sequence[ScriptStatement]) -> ScriptStatement | None:
    """The first statement that acts on the server rather than on its database, if any."""
    return next((statement for statement in statements if statement.server_level is not None), None)
