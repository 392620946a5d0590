"""What a fleet run shows: passwords masked in every text and JSON output and in a saved
fleet plan; targets from a query or a TOML file; an unreachable target among reachable ones;
200 tenants of one database that do not see each other."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from tests.conftest import run_process
from tests.fleet.conftest import (
    FLEET_PASSWORD,
    TENANTS,
    Fleet,
    assert_masked,
    by_target,
    fleet_json,
    write_targets,
)


def _masked(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True).replace("postgresql+psycopg2://", "postgresql://")


def test_passwords_are_masked_in_text_json_errors_and_saved_plans(shared_db_fleet: Fleet, tmp_path: Path):
    fleet = shared_db_fleet
    chosen = fleet.targets[:3]
    gone = make_url(chosen[0].url).set(database="poststack_fleet_no_such_db")
    gone_url = gone.render_as_string(hide_password=False).replace("postgresql+psycopg2://", "postgresql://")
    file = tmp_path / "bare.yaml"  # bare URLs: the name shown is the URL, password masked
    file.write_text("targets:\n" + "".join(f"  - {u}\n" for u in [*(t.url for t in chosen), gone_url]))
    assert FLEET_PASSWORD in file.read_text()

    for command in (("db", "migration-status"), ("db", "diagnose")):
        text = fleet.run(*command, targets=file)  # Fleet.run fails on any password in the output
        assert text.exit_code == 1, text.output  # the unreachable one
        assert "***" in text.output
        report = fleet_json(fleet.run(*command, "--format", "json", targets=file))
        entries = by_target(report)
        assert list(entries) == [_masked(t.url) for t in chosen] + [_masked(gone_url)]
        for entry in report["targets"]:
            assert entry["database"] == entry["target"] and ":***@" in entry["database"], entry
            assert "***" not in entry["key"] and FLEET_PASSWORD not in entry["key"], entry
        assert [e["outcome"] for e in report["targets"]] == ["ok", "ok", "ok", "unreachable"]
        assert "poststack_fleet_no_such_db" in (report["targets"][-1]["error"] or "")

    plan = tmp_path / "plan.json"
    planned = fleet.run("plan", "--out", str(plan), targets=file)
    assert planned.exit_code == 1, planned.output
    assert FLEET_PASSWORD not in plan.read_text()


def test_targets_from_a_query_and_from_toml(shared_tenant_fleet: Fleet, shared_db_fleet: Fleet, tmp_path: Path):
    control = shared_tenant_fleet.targets[0].url
    common = ("--database-url", control, "--migrations-dir", str(shared_tenant_fleet.migrations), "--format", "json")
    schemas = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\\_%' ORDER BY nspname"
    result = run_process("db", "migration-status", "--targets-query", schemas, *common)
    assert_masked(result)
    report = fleet_json(result)
    assert [e["target"] for e in report["targets"]] == [t.schema for t in shared_tenant_fleet.targets]
    assert {(e["outcome"], e["current_version"]) for e in report["targets"]} == {("ok", "010")}

    urls = ", ".join(f"'{t.url}'" for t in shared_db_fleet.targets[:2])
    result = run_process("db", "migration-status", "--targets-query", f"SELECT unnest(ARRAY[{urls}])", *common)
    assert_masked(result)
    assert [e["schema"] for e in fleet_json(result)["targets"]] == [None, None]

    mixed = f"SELECT unnest(ARRAY[{urls}, 'tenant_001'])"
    result = run_process("db", "migration-status", "--targets-query", mixed, *common)
    assert result.exit_code == 2, result.output
    assert_masked(result)

    gone = make_url(control).set(database="poststack_fleet_no_control")
    unreachable = gone.render_as_string(hide_password=False).replace("postgresql+psycopg2://", "postgresql://")
    result = run_process(
        "db", "migration-status", "--targets-query", schemas, "--database-url", unreachable,
        "--migrations-dir", str(shared_tenant_fleet.migrations),
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert_masked(result)

    toml = tmp_path / "databases.toml"
    chosen = shared_db_fleet.targets[:2]
    toml.write_text(
        "targets = [\n" + f'  "{chosen[0].url}",\n' + f'  {{ url = "{chosen[1].url}", name = "second" }},\n' + "]\n"
    )
    report = shared_db_fleet.report("db", "migration-status", targets=toml, expect_exit=0)
    assert [e["target"] for e in report["targets"]] == [_masked(chosen[0].url), "second"]


def test_two_hundred_tenants_of_one_database_do_not_see_each_other(shared_tenant_fleet: Fleet, tmp_path: Path):
    """A shard of the 200 (a first diagnose replays the history once per tenant, so not all 200):
    no tenant reports a sibling's schema as orphaned, nor a sibling's objects as its own."""
    fleet = shared_tenant_fleet
    assert len(fleet.targets) == TENANTS
    report = fleet.report("db", "diagnose", "--shard", "1/5", "--parallel", "2")
    assert report["targets"], "an empty shard"
    problems = {e["target"]: e["issue_list"] for e in report["targets"] if e["outcome"] != "ok"}
    assert problems == {}
    assert report["ok"] is True

    status = fleet.report("db", "migration-status", "--parallel", "2", expect_exit=0)
    assert len(status["targets"]) == TENANTS
    assert {(e["current_version"], e["pending"], e["failed"]) for e in status["targets"]} == {("010", 0, 0)}
    text = fleet.run("db", "migration-status")
    assert text.exit_code == 0
    assert f"{TENANTS} target" in text.stdout and "tenant_137" in text.stdout


def test_validate_over_some_tenants(shared_tenant_fleet: Fleet, tmp_path: Path):
    file = write_targets(tmp_path / "some.yaml", shared_tenant_fleet.targets[:5])
    report = shared_tenant_fleet.report("db", "validate", targets=file, expect_exit=0)
    assert [e["target"] for e in report["targets"]] == [t.schema for t in shared_tenant_fleet.targets[:5]]
    assert {e["outcome"] for e in report["targets"]} == {"ok"}
