"""A plan's transactions: steps run together in one, except that a step adding an enum value
commits before the next step starts (PostgreSQL refuses a later use of the new value in the
same transaction: "unsafe use of new value")."""

from __future__ import annotations

from reconciler.config import DEFAULT_TRACKING
from reconciler.remediation.plan import Plan, PlannedStep


def plan_of(*steps: PlannedStep) -> Plan:
    return Plan("remediate", DEFAULT_TRACKING, "0" * 64, steps, grouping="batch")


def step(version: str, *, transactional: bool = True, commit_after: bool = False) -> PlannedStep:
    return PlannedStep("apply_migration", f"apply {version}", {"version": version}, version=version,
                       transactional=transactional, commit_after=commit_after)  # fmt: skip


def test_steps_share_a_transaction_until_one_adds_an_enum_value() -> None:
    plan = plan_of(step("1"), step("2", commit_after=True), step("3"), step("4", transactional=False), step("5"))
    assert plan.transactions() == [[0, 1], [2], [3], [4]]


def test_commit_after_survives_a_saved_plan() -> None:
    plan = plan_of(step("1", commit_after=True), step("2"))
    again = Plan.from_json(plan.to_json())
    assert again == plan and again.transactions() == [[0], [1]]
    assert "commit_after" not in plan.to_json()["steps"][1]  # absent when false: older plans read the same
