"""The breakage helpers, each on one database alone: poststack diagnoses exactly the way's
issue, and one apply fixes it exactly when the way says a plan can. The fleet tests rely on
this baseline: a fleet must say and do per target what poststack says and does alone."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.fleet.conftest import FleetFactory
from tests.fleet.ways import WAYS


@pytest.fixture(scope="module")
def one_per_way(pristine, tmp_path_factory):
    factory = FleetFactory(pristine, tmp_path_factory.mktemp("ways"))
    yield factory.databases(len(WAYS))
    factory.drop()


@pytest.mark.parametrize("name", list(WAYS))
def test_each_way_alone(one_per_way, name: str):
    fleet = one_per_way
    target = fleet.targets[list(WAYS).index(name)]
    breaker, way = WAYS[name]
    breaker(target, fleet.migrations)
    args = target.alone(fleet.migrations)

    (issue,) = json.loads(run_cli("db", "diagnose", "--format", "json", *args).stdout)["issues"]
    assert (issue["type"], issue["severity"], issue["version"]) == (way.issue, way.severity, way.version)
    assert issue["auto_fixable"] is way.auto_fixable

    run_cli("apply", "--auto-approve", *args)
    left = [i["type"] for i in json.loads(run_cli("db", "diagnose", "--format", "json", *args).stdout)["issues"]]
    assert left == ([] if way.fixed else [way.issue])
