"""The fleet fixture's copies are what poststack itself leaves: a tenant schema made by
replaying the files is indistinguishable, to poststack, from the one poststack migrated."""

from __future__ import annotations

from tests.conftest import run_cli
from tests.fleet.conftest import Fleet, applied_versions, target_state


def _structure(state: dict) -> dict:
    return {
        "rows": [(r[1], r[2], r[3], r[9]) for r in state["rows"]],  # version, description, checksum, success
        "catalog": [(name, kind) for name, kind, _ in state["catalog"]],
        "events": state["events"],
        "lock": [(r[0], r[1]) for r in state["lock"]],
    }


def test_copied_tenants_match_the_one_poststack_migrated(shared_tenant_fleet: Fleet):
    fleet = shared_tenant_fleet
    assert len(fleet.targets) == 200
    first, last = fleet["tenant_001"], fleet["tenant_200"]
    assert _structure(target_state(last)) == _structure(target_state(first))
    status = run_cli("db", "migration-status", *last.alone(fleet.migrations))
    assert status.exit_code == 0, status.output
    assert "Current version: 010" in status.stdout and "Pending migrations: 0" in status.stdout


def test_copied_databases_are_at_the_history(shared_db_fleet: Fleet):
    fleet = shared_db_fleet
    assert len(fleet.targets) == 50 and len(set(fleet.databases)) == 50
    for target in (fleet.targets[0], fleet.targets[-1]):
        assert [v for v, ok in applied_versions(target) if ok] == [f"{i:03d}" for i in range(1, 11)]
