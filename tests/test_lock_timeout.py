"""A migration's lock_timeout, without a database: the statement that sets it, where it goes
in a step, what a failing statement names, the backoff, and saved plans that carry it. The
behaviour against a real blocking session is in tests/integration/test_lock_timeout.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config import DEFAULT_TRACKING
from reconciler.desired.layouts import load_migrations
from reconciler.desired.script import relations_named, sets_setting
from reconciler.remediation.actions import BuildContext, get_action
from reconciler.remediation.actions.migrations import lock_timeout_statement
from reconciler.remediation.executor import MAX_LOCK_BACKOFF_S, lock_backoff
from reconciler.remediation.plan import Plan
from tests.conftest import write


@pytest.mark.parametrize(
    ("seconds", "value"),
    [(5, "5s"), (5.0, "5s"), (0.2, "200ms"), (2.5, "2500ms"), (0.001, "1ms"), (0.0015, "2ms"), (120, "120s")],
)
def test_the_value_is_whole_milliseconds(seconds: float, value: str) -> None:
    statement = lock_timeout_statement(seconds, transactional=True)
    assert (statement.sql, statement.params) == ("SET LOCAL lock_timeout = %(lock_timeout)s", {"lock_timeout": value})


def test_outside_a_transaction_it_is_set_for_the_session() -> None:
    assert lock_timeout_statement(5, transactional=False).sql == "SET lock_timeout = %(lock_timeout)s"


def test_backoff_doubles_from_the_timeout_up_to_a_minute() -> None:
    assert [lock_backoff(5, attempt) for attempt in range(1, 6)] == [5, 10, 20, 40, MAX_LOCK_BACKOFF_S]
    assert [lock_backoff(0.2, attempt) for attempt in (1, 2, 3)] == pytest.approx([0.2, 0.4, 0.8])


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("ALTER TABLE orders ADD COLUMN note text", [(None, "orders")]),
        ("ALTER TABLE shop.orders ADD COLUMN note text", [("shop", "orders")]),
        ('ALTER TABLE "Shop"."Orders" RENAME TO o2', [("Shop", "Orders")]),
        ("DROP TABLE a, s.b", [(None, "a"), ("s", "b")]),
        ("DROP INDEX CONCURRENTLY s.orders_idx", [("s", "orders_idx")]),
        ("CREATE INDEX CONCURRENTLY i ON public.orders (id)", [("public", "orders")]),
        ("ALTER TABLE a ADD FOREIGN KEY (b) REFERENCES c (d)", [(None, "a"), (None, "c")]),
        ("UPDATE orders SET note = '' FROM customers WHERE true", [(None, "orders"), (None, "customers")]),
        ("TRUNCATE orders, orders", [(None, "orders")]),
        ("DROP FUNCTION f()", []),
        ("SELECT pg_sleep(1)", []),
        ("not sql at all (", []),
    ],
)
def test_what_a_statement_names(sql: str, named: list[tuple[str | None, str]]) -> None:
    assert list(relations_named(sql)) == named


@pytest.mark.parametrize(
    ("sql", "sets"),
    [
        ("SET lock_timeout = '1ms'", True),
        ("SET LOCAL lock_timeout TO 0", True),
        ("RESET lock_timeout", True),
        ("SET statement_timeout = '1s'", False),
        ("SELECT 'lock_timeout'", False),
    ],
)
def test_a_file_that_sets_its_own(sql: str, sets: bool) -> None:
    assert sets_setting(sql, "lock_timeout") is sets


def _step(tmp_path: Path, text: str, timeout: float):
    write(tmp_path, "001_first.sql", text)
    ctx = BuildContext(DEFAULT_TRACKING, load_migrations(tmp_path, None), ddl_lock_timeout=timeout)
    return get_action("apply_migration").step(ctx, {"version": "001"})


def test_the_step_begins_with_it_and_says_so(tmp_path: Path) -> None:
    step = _step(tmp_path, "SET lock_timeout = '1ms';\nALTER TABLE t ADD COLUMN c int;\n", 5)
    assert step.lock_timeout == 5
    first, *rest = step.statements
    assert (first.sql, first.params, first.source) == (
        "SET LOCAL lock_timeout = %(lock_timeout)s",
        {"lock_timeout": "5s"},
        None,
    )
    assert [s.sql for s in rest] == ["SET lock_timeout = '1ms'", "ALTER TABLE t ADD COLUMN c int"]  # the file's after


def test_none_with_a_timeout_of_0(tmp_path: Path) -> None:
    step = _step(tmp_path, "ALTER TABLE t ADD COLUMN c int;\n", 0)
    assert step.lock_timeout is None and [s.sql for s in step.statements] == ["ALTER TABLE t ADD COLUMN c int"]
    assert "lock_timeout" not in step.to_json()


def test_a_saved_plan_keeps_it(tmp_path: Path) -> None:
    step = _step(tmp_path, "-- poststack:no-transaction\nALTER TABLE t ADD COLUMN d int;\n", 0.25)
    plan = Plan("remediate", DEFAULT_TRACKING, "0" * 64, (step,), grouping="batch")
    again = Plan.from_json(plan.to_json())
    assert again == plan and again.hash == plan.hash
    assert again.steps[0].lock_timeout == 0.25 and not again.steps[0].transactional
    assert again.steps[0].statements[0].sql == "SET lock_timeout = %(lock_timeout)s"


def test_a_concurrent_index_build_gets_none(tmp_path: Path) -> None:
    """It waits for older transactions once its index is made: a timeout leaves it INVALID."""
    step = _step(tmp_path, "CREATE INDEX CONCURRENTLY i ON t (c);\n", 0.25)
    assert step.lock_timeout is None and all("lock_timeout" not in s.sql for s in step.statements)


def test_a_concurrent_detach_runs_outside_a_transaction_and_gets_none(tmp_path: Path) -> None:
    """ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY: PostgreSQL refuses it in a transaction,
    and its second transaction waits for every one using the table: a timeout there leaves the
    partition half detached (DETACH ... FINALIZE to finish)."""
    step = _step(tmp_path, "ALTER TABLE readings DETACH PARTITION readings_2024 CONCURRENTLY;\n", 0.25)
    assert not step.transactional
    assert "DETACH CONCURRENTLY cannot run inside a transaction block" in (step.no_transaction_reason or "")
    assert step.lock_timeout is None and all("lock_timeout" not in s.sql for s in step.statements)
    # Without CONCURRENTLY it runs in the migration's transaction, with its lock_timeout.
    (tmp_path / "plain").mkdir()
    plain = _step(tmp_path / "plain", "ALTER TABLE readings DETACH PARTITION readings_2024;\n", 0.25)
    assert plain.transactional and plain.lock_timeout == 0.25
