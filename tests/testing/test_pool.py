"""The clone pool: each test's database made ahead of it, each dropped behind it."""

from __future__ import annotations

import psycopg2
import psycopg2.errors
import pytest

from reconciler.errors import PoststackError
from reconciler.testing import server as servers
from reconciler.testing.pool import ClonePool
from reconciler.testing.server import TestServer
from tests.conftest import scratch_database


def _mine(server: TestServer) -> set[str]:
    conn = server.admin()
    with conn.cursor() as cur:
        cur.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
            (servers.clone_name().rsplit("_", 1)[0] + "_",),  # this session's
        )
        names = {row[0] for row in cur.fetchall()}
    conn.close()
    return names


def test_each_take_is_a_fresh_clone_and_what_is_left_is_dropped(pg_server, template_db):
    server = TestServer(pg_server.admin_url)
    with scratch_database(pg_server, "pool_template", template_db) as url:
        seed = psycopg2.connect(url)
        seed.autocommit = True
        with seed.cursor() as cur:
            cur.execute("CREATE TABLE marks (n int)")
            cur.execute("INSERT INTO marks VALUES (1)")
        seed.close()
        template = psycopg2.extensions.parse_dsn(url)["dbname"]
        before = _mine(server)
        pool = ClonePool(server, template, ahead=2)
        taken = []
        try:
            for n in range(4):
                name = pool.take()
                taken.append(name)
                conn = psycopg2.connect(server.url_for(name))
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM marks")
                    assert cur.fetchone() == (1,)  # the template's rows, and no earlier test's
                    cur.execute("INSERT INTO marks VALUES (%s)", (n,))
                conn.commit()  # left open: the drop behind the test ends it
                pool.give_back(name)
        finally:
            pool.close()
        assert len(set(taken)) == 4
        assert _mine(server) == before  # the taken ones and the two made ahead: all dropped


def test_a_clone_that_fails_fails_the_take(pg_server):
    pool = ClonePool(TestServer(pg_server.admin_url), "no_such_template_here")
    try:
        with pytest.raises(PoststackError, match="the template database no_such_template_here is gone"):
            pool.take()
    finally:
        pool.close()
