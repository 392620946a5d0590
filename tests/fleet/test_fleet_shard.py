"""--shard I/N partitions a fleet (every target in exactly one shard, the same one whatever the
run or the order of the targets file), and `poststack report merge` of the shards' JSON
reports is the unsharded report."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_process
from tests.fleet.conftest import Fleet, assert_masked, fleet_json, write_targets

SHARDS = 4


def without_times(value):
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def keys(report: dict) -> list[str]:
    return [entry["key"] for entry in report["targets"]]


@pytest.mark.parametrize("kind", ["schemas", "databases"])
def test_shards_partition_the_fleet_stably_and_merge_into_the_unsharded_report(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
):
    fleet: Fleet = request.getfixturevalue("shared_tenant_fleet" if kind == "schemas" else "shared_db_fleet")
    whole = fleet.report("db", "migration-status", "--parallel", "2", expect_exit=0)
    assert whole["fleet"]["shards"] == []
    everything = keys(whole)
    assert len(set(everything)) == len(fleet.targets)

    files, shards = [], []
    for i in range(1, SHARDS + 1):
        result = fleet.run("db", "migration-status", "--shard", f"{i}/{SHARDS}", "--parallel", "2", "--format", "json")
        assert result.exit_code == 0, result.output
        report = fleet_json(result)
        assert report["fleet"]["shards"] == [f"{i}/{SHARDS}"]
        files.append(tmp_path / f"shard-{i}.json")
        files[-1].write_text(result.stdout)
        shards.append(keys(report))
    assert all(shards), f"an empty shard of {len(everything)} targets: {[len(s) for s in shards]}"
    assert sorted(k for shard in shards for k in shard) == sorted(everything), "not a partition"

    # The same shards from a file listing the targets in reverse, and on another run.
    reverse = write_targets(tmp_path / "reversed.yaml", list(reversed(fleet.targets)))
    for i in (1, SHARDS):
        again = fleet.report("db", "migration-status", "--shard", f"{i}/{SHARDS}", targets=reverse, expect_exit=0)
        assert sorted(keys(again)) == sorted(shards[i - 1]), f"shard {i}/{SHARDS} depends on the file's order"

    merged_run = run_process("report", "merge", *map(str, files), "--format", "json")
    assert merged_run.exit_code == 0, merged_run.output
    assert_masked(merged_run)
    merged = fleet_json(merged_run)
    assert merged["command"] == whole["command"]
    assert sorted(without_times(merged["targets"]), key=lambda e: e["key"]) == sorted(
        without_times(whole["targets"]), key=lambda e: e["key"]
    )
    assert without_times(merged["totals"]) == without_times(whole["totals"])
    assert merged["ok"] is whole["ok"] is True

    text = run_process("report", "merge", *map(str, files))
    assert text.exit_code == 0, text.output
    assert_masked(text)
    assert all(t.name in text.stdout for t in fleet.targets[:3])


def test_merge_refuses_reports_of_different_commands(shared_db_fleet: Fleet, tmp_path: Path):
    status = fleet_json(shared_db_fleet.run("db", "migration-status", "--shard", "1/2", "--format", "json"))
    diagnose = shared_db_fleet.run("db", "diagnose", "--shard", "2/2", "--format", "json")
    (tmp_path / "a.json").write_text(__import__("json").dumps(status))
    (tmp_path / "b.json").write_text(diagnose.stdout)
    result = run_process("report", "merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert result.exit_code == 2, result.output
