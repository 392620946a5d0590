"""Tests of the migrations themselves, on an empty database walked a step at a time."""


def test_handles_are_lowercased_by_the_data_migration(poststack_migrations):
    poststack_migrations.migrate(to="005")
    poststack_migrations.execute("INSERT INTO users (handle) VALUES ('Grace'), ('linus')")
    poststack_migrations.migrate(to="006")
    rows = poststack_migrations.execute("SELECT handle FROM users ORDER BY id")
    assert rows == [("grace",), ("linus",)]


def test_refunded_orders_are_not_counted(poststack_migrations):
    poststack_migrations.migrate(to="007")
    poststack_migrations.execute("INSERT INTO users (handle) VALUES ('ada')")
    poststack_migrations.execute(
        "INSERT INTO orders (user_id, status, total_cents) VALUES (1, 'paid', 100), (1, 'refunded', 100)"
    )
    assert poststack_migrations.execute("SELECT order_count(1)") == [(2,)]
    poststack_migrations.migrate(to="008")
    assert poststack_migrations.execute("SELECT order_count(1)") == [(1,)]


def test_the_rename_rolls_back_cleanly(poststack_migrations):
    poststack_migrations.assert_rollback_round_trip("005")


def test_every_rollback_restores_the_schema(poststack_migrations):
    poststack_migrations.assert_rollback_round_trip()
