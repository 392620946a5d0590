"""Property: in any layout, any walk of migrate --target and rollback over a churning history
ends, after a final migrate, in the catalog a straight migrate gives, with every data
migration's rows there once."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import catalog_snapshot, run_cli, scratch_database, sql
from tests.layouts.histories import long_history, write_long_history

LAYOUTS = ["poststack", "golang-migrate", "dbmate", "flyway", "diesel"]  # Prisma has no downs
_names = itertools.count()


def _schema_and_data(conn):  # type: ignore[no-untyped-def]
    """The history's objects and row counts; poststack's own tables (their rows record the
    walk) left out."""
    return [row for row in catalog_snapshot(conn) if not any("schema_migrations" in part for part in row)]


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    layout=st.sampled_from(LAYOUTS),
    walk=st.lists(st.tuples(st.booleans(), st.integers(0, 9)), min_size=1, max_size=4),
)
def test_any_walk_converges(layout: str, walk: list[tuple[bool, int]], pg_server, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("walk") / "migrations"
    versions = write_long_history(layout, directory, 1)
    assert len(versions) == len(long_history(1)) == 10
    with (
        scratch_database(pg_server, f"poststack_walk_{next(_names)}") as walked,
        scratch_database(pg_server, f"poststack_straight_{next(_names)}") as straight,
    ):

        def poststack(url: str, *args: str):  # type: ignore[no-untyped-def]
            return run_cli(*args, "--database-url", url, "--migrations-dir", str(directory))

        for forward, index in walk:
            if forward:
                result = poststack(walked, "db", "migrate", "--target", versions[index])
            else:
                result = poststack(walked, "db", "rollback", versions[index])
            assert result.exit_code == 0, result.output
        assert poststack(walked, "db", "migrate").exit_code == 0
        assert poststack(straight, "db", "migrate").exit_code == 0

        import psycopg2

        a, b = psycopg2.connect(walked), psycopg2.connect(straight)
        try:
            assert _schema_and_data(a) == _schema_and_data(b)
            assert sql(a, "SELECT count(*) FROM t0") == [(3,)]  # the seed ran once, however often it was undone
        finally:
            a.close()
            b.close()
