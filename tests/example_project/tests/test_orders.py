"""The application's tests: each gets a migrated database of its own from poststack's plugin."""

import psycopg2.errors
import pytest
from sqlalchemy import text

from reconciler import api
from shop import orders


def test_sign_up_and_order(poststack_engine):
    user = orders.sign_up(poststack_engine, "Ada")
    orders.place_order(poststack_engine, user, 1250)
    orders.place_order(poststack_engine, user, 300)
    assert orders.order_count(poststack_engine, user) == 2
    with poststack_engine.connect() as conn:
        rows = conn.execute(text("SELECT handle FROM users")).all()
    assert rows == [("ada",)]


@pytest.mark.parametrize("handle", ["first", "second", "third"])
def test_every_test_starts_from_the_migrated_template(poststack_engine, handle):
    # No test sees another's rows: each database is cloned from the template.
    orders.sign_up(poststack_engine, handle)
    with poststack_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM users")).scalar_one() == 1


def test_constraints_from_the_migrations_hold(poststack_connection):
    with poststack_connection.cursor() as cur:
        cur.execute("INSERT INTO users (handle) VALUES ('bob')")
        with pytest.raises(psycopg2.errors.CheckViolation):
            cur.execute("INSERT INTO users (handle) VALUES ('Shouting')")
    poststack_connection.rollback()


def test_the_database_is_up_to_date(poststack_url):
    status = api.status(poststack_url, migrations_dir=orders.MIGRATIONS)
    assert status.up_to_date
    assert status.current_version == "008"


def test_start_up_migrate_finds_nothing_to_do(poststack_engine):
    orders.start(poststack_engine)
    assert api.status(poststack_engine, migrations_dir=orders.MIGRATIONS).up_to_date
