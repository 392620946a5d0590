"""One fleet, one target broken in each way a history breaks: diagnose names each broken
target's issue and no other's, plan plans changes for the broken targets only, and apply
fixes those and leaves every other target's tracking, lock, audit rows and catalog as they
were. Both kinds of fleet: 50 databases, and tenant schemas in one database."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.fleet.conftest import FEW_TENANTS, Fleet, FleetFactory, by_target
from tests.fleet.ways import WAYS, Way, ways_for

SEVERITIES = ("high", "medium", "low")


def break_fleet(fleet: Fleet) -> dict[str, Way]:
    """One distinct target per way, spread over the fleet (not the first or last): name -> way."""
    ways = ways_for(fleet.kind)
    stride = len(fleet.targets) // (len(ways) + 1)
    broken = {}
    for position, name in enumerate(ways, start=1):
        target = fleet.targets[position * stride]
        breaker, way = WAYS[name]
        breaker(target, fleet.migrations)
        broken[target.name] = way
    return broken


def single_target_issues(fleet: Fleet, name: str) -> list[dict]:
    """What db diagnose says of the target on its own (the fleet must say the same). Alone, a
    tenant does not know its siblings: it reports their schemas as orphaned, and their invalid
    indexes as its own; those are left out."""
    result = run_cli("db", "diagnose", "--format", "json", *fleet[name].alone(fleet.migrations))
    return [
        issue
        for issue in json.loads(result.stdout)["issues"]
        if fleet[name].schema is None or issue["details"].get("schema", fleet[name].schema) == fleet[name].schema
    ]


def ageless(message: str) -> str:
    """A lock's age moves on between two diagnoses."""
    return re.sub(r"\bage \d+\w*", "age N", message)


def steps(plans: dict[str, dict], name: str) -> list[dict]:
    return plans[name]["steps"] if name in plans else []


@pytest.mark.parametrize("kind", ["databases", "schemas"])
def test_each_way_is_found_planned_and_fixed_on_its_own_target(fleets: FleetFactory, tmp_path: Path, kind: str):
    fleet = fleets.databases() if kind == "databases" else fleets.tenants(FEW_TENANTS)
    broken = break_fleet(fleet)
    healthy = [t.name for t in fleet.targets if t.name not in broken]
    before = fleet.state()

    # --- diagnose: each broken target's issue, and nothing anywhere else ---
    report = fleet.report("db", "diagnose", "--parallel", "2", expect_exit=1)
    assert report["command"] == "db diagnose" and report["ok"] is False
    entries = by_target(report)
    assert list(entries) == [t.name for t in fleet.targets]  # every target, in the file's order
    for name, way in broken.items():
        entry = entries[name]
        found = [(i["type"], i["severity"]) for i in entry["issue_list"]]
        assert found == [(way.issue, way.severity)], f"{name} ({way.issue}): {entry}"
        alone_issues = single_target_issues(fleet, name)
        assert len(alone_issues) == 1, (name, way.issue, alone_issues)
        (alone,) = alone_issues
        (issue,) = entry["issue_list"]
        assert (ageless(issue["summary"]), issue["fix"]) == (ageless(alone["message"]), alone["suggested_fix"]), name
        assert entry["outcome"] == "problems" and entry["exit_code"] == 1, entry
        assert entry["issues"] == {s: int(s == way.severity) for s in SEVERITIES}, entry
    for name in healthy:
        entry = entries[name]
        assert (entry["outcome"], entry["issue_list"], entry["error"]) == ("ok", [], None), entry
        assert (entry["current_version"], entry["pending"], entry["failed"]) == ("010", 0, 0), entry
    totals = report["totals"]
    assert totals["targets"] == len(fleet.targets)
    assert {k: v for k, v in totals["outcomes"].items() if v} == {"ok": len(healthy), "problems": len(broken)}
    assert totals["issues"] == {s: sum(w.severity == s for w in broken.values()) for s in SEVERITIES}

    text = fleet.run("db", "diagnose", "--parallel", "2")
    assert text.exit_code == 1
    for name, way in broken.items():
        issue = entries[name]["issue_list"][0]
        shown = ageless(text.stdout)
        assert name in shown and ageless(issue["summary"]) in shown and issue["fix"] in shown, name
        assert way.issue in text.stdout.lower(), way.issue
    assert fleet.state() == before, "diagnose changed something"

    # --- plan: changes for the broken targets only ---
    out = tmp_path / "fleet-plan.json"
    planned = fleet.run("plan", "--out", str(out), "--parallel", "2")
    assert planned.exit_code in (0, 1), planned.output
    saved = json.loads(out.read_text())
    assert saved["format"] == "poststack-fleet-plan/1"
    plans = {entry["target"]: entry["plan"] for entry in saved["targets"]}
    assert set(plans) <= {t.name for t in fleet.targets}
    for name in healthy:
        assert steps(plans, name) == [], f"{name} is healthy but has a plan: {plans[name]}"
    for name, way in broken.items():
        actions = [step["action"] for step in steps(plans, name)]
        assert [i["type"] for i in plans[name]["issues"]] == [way.issue], name
        if way.fixed:
            assert actions and "manual" not in actions, f"{name} ({way.issue}): {actions}"
        else:
            assert set(actions) <= {"manual"}, f"{name} ({way.issue}) cannot be fixed by a plan: {actions}"
    assert fleet.state() == before, "plan changed something"

    # --- apply: the broken targets fixed, every other target untouched ---
    applied = fleet.report("apply", str(out), "--auto-approve", "--keep-going", "--parallel", "2")
    assert applied["command"] == "apply"
    entries = by_target(applied)
    after = fleet.state()
    for name in healthy:
        assert entries[name]["outcome"] == "ok", entries[name]
        assert after[name] == before[name], f"{name} was healthy and changed"
    for name, way in broken.items():
        if way.fixed:
            assert entries[name]["outcome"] == "applied", (
                entries[name]["error"],
                {n: e["outcome"] for n, e in entries.items()},
            )
        else:
            assert entries[name]["outcome"] != "applied", entries[name]
            assert after[name] == before[name], f"{name} ({way.issue}) has nothing to apply and changed"

    report = fleet.report("db", "diagnose", "--parallel", "2")
    entries = by_target(report)
    for name in healthy:
        assert entries[name]["outcome"] == "ok", entries[name]
    for name, way in broken.items():
        left = [i["type"] for i in entries[name]["issue_list"]]
        assert left == ([] if way.fixed else [way.issue]), f"{name} ({way.issue}) after apply: {left}"


def test_a_missing_rollback_file_shows_on_every_target_that_shares_it(fleets: FleetFactory):
    """rollback_missing is the files' problem, not one target's: every target reports it, alike."""
    fleet = fleets.databases(3)
    (fleet.migrations / "003_customer_totals.rollback.sql").unlink()
    report = fleet.report("db", "diagnose", expect_exit=1)
    issues = [entry["issue_list"] for entry in report["targets"]]
    assert len(issues) == 3 and all(i == issues[0] for i in issues), issues
    ((issue,),) = {tuple(json.dumps(i, sort_keys=True) for i in found) for found in issues}
    issue = json.loads(issue)
    assert (issue["type"], issue["severity"]) == ("rollback_missing", "low")
    assert issue["fix"] == "Create rollback file for this migration"
    assert report["totals"]["issues"] == {"high": 0, "medium": 0, "low": 3}
    assert {e["outcome"] for e in report["targets"]} == {"problems"}
