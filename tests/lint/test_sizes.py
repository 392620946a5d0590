"""The live size of a relation on the target, and the other sessions holding a lock on it."""

from __future__ import annotations

import os

import psycopg2

from reconciler.db import Session, open_raw
from reconciler.observed.sizes import relation_sizes
from tests.conftest import Server, scratch_database


def test_sessions_count_locks_on_this_database_only(pg_server: Server, template_db: str) -> None:
    """Relation oids are per database: a database made from a template (a tenant's, say) has
    its tables under the same oids, and pg_locks shows every database's locks."""
    tag = f"{os.getpid()}"
    with scratch_database(pg_server, f"poststack_sizes_tpl_{tag}", template_db) as template_url:
        conn = psycopg2.connect(template_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 10)")
        conn.close()
        template = template_url.rsplit("/", 1)[-1].split("?")[0]
        with (
            scratch_database(pg_server, f"poststack_sizes_a_{tag}", template) as a_url,
            scratch_database(pg_server, f"poststack_sizes_b_{tag}", template) as b_url,
        ):
            holder = psycopg2.connect(a_url)
            target = Session(open_raw(b_url), b_url)
            try:
                with holder.cursor() as cur:
                    cur.execute("LOCK TABLE orders IN ACCESS SHARE MODE")
                    cur.execute("SELECT 'orders'::regclass::oid")
                    (oid_a,) = cur.fetchone()
                (oid_b,) = target.query_one("SELECT 'orders'::regclass::oid") or (None,)
                assert oid_a == oid_b, "a clone keeps its template's oids"
                assert relation_sizes(target, ["public.orders"])["public.orders"].sessions == 0

                holder.rollback()
                same = psycopg2.connect(b_url)
                try:
                    with same.cursor() as cur:
                        cur.execute("LOCK TABLE orders IN ACCESS SHARE MODE")
                    size = relation_sizes(target, ["public.orders"])["public.orders"]
                    assert (size.exists, size.sessions) == (True, 1)
                finally:
                    same.close()
            finally:
                holder.close()
                target.close()
