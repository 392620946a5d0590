"""A saved fleet plan whose target changed after planning: apply refuses before anything runs
anywhere; with --partial it runs the unchanged targets and reports the changed one refused."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli, write
from tests.fleet.conftest import FLEET_PASSWORD, FleetFactory, applied_versions, by_target


def test_a_target_changed_after_planning_refuses_the_apply_unless_partial(fleets: FleetFactory, tmp_path: Path):
    fleet = fleets.databases(5)
    write(
        fleet.migrations,
        "011_create_refunds.sql",
        "CREATE TABLE refunds (id bigserial PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders (id));\n"
        "INSERT INTO app_events (kind) VALUES ('011');\n",
    )
    write(fleet.migrations, "011_create_refunds.rollback.sql", "DROP TABLE IF EXISTS refunds;\n")
    plan = tmp_path / "fleet-plan.json"
    assert fleet.run("plan", "--out", str(plan)).exit_code in (0, 1)
    assert FLEET_PASSWORD not in plan.read_text()
    saved = json.loads(plan.read_text())
    assert [entry["target"] for entry in saved["targets"]] == [t.name for t in fleet.targets]
    for entry in saved["targets"]:
        assert [(s["action"], s["version"]) for s in entry["plan"]["steps"]] == [("apply_migration", "011")], entry

    changed = fleet.targets[2]  # someone migrates it on their own after the plan was made
    assert run_cli("db", "migrate", *changed.alone(fleet.migrations)).exit_code == 0
    before = fleet.state()

    refused = fleet.report("apply", str(plan), "--auto-approve", expect_exit=1)
    entries = by_target(refused)
    assert entries[changed.name]["outcome"] == "refused", entries[changed.name]
    assert "changed since the plan was made" in (entries[changed.name]["error"] or ""), entries[changed.name]
    assert all(e["outcome"] in ("refused", "skipped") for e in entries.values()), entries
    assert fleet.state() == before, "apply of a fleet plan with a stale target ran something"

    partial = fleet.report("apply", str(plan), "--auto-approve", "--partial", expect_exit=1)
    entries = by_target(partial)
    assert {name: e["outcome"] for name, e in entries.items()} == {
        t.name: ("refused" if t is changed else "applied") for t in fleet.targets
    }
    after = fleet.state()
    assert after[changed.name] == before[changed.name], "the refused target was touched"
    for target in fleet.targets:
        assert applied_versions(target).count(("011", True)) == 1, target.name
        assert target.query("SELECT count(*) FROM app_events WHERE kind = '011'") == [(1,)], target.name
