"""Fleet plans: each target's plan, with its fingerprint and hash, saved by target key.

Only keys are saved, never URLs: the file can be reviewed and passed around without a
secret in it, and apply reaches the targets through the same --targets as plan did."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import UsageError
from reconciler.fleet.report import TargetReport
from reconciler.remediation.plan import Plan

FORMAT = "poststack-fleet-plan/1"


def is_fleet_plan(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False  # load_plan says what is wrong with it
    return isinstance(data, dict) and data.get("format") == FORMAT


def save_fleet_plan(reports: list[TargetReport], path: Path) -> None:
    """The plans of the targets that were planned; a target whose planning failed is named,
    so apply does not take its absence for "nothing to do"."""
    data: dict[str, Any] = {
        "format": FORMAT,
        "targets": [{"key": r.key, "target": r.target, "plan": r.plan} for r in reports if r.plan is not None],
        "not_planned": [{"key": r.key, "target": r.target, "error": r.error} for r in reports if r.plan is None],
    }
    try:
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    except OSError as e:
        raise UsageError(f"cannot write plan file {path}: {e.strerror}") from e


@dataclass(frozen=True)
class FleetPlan:
    plans: dict[str, Plan]  # by target key
    not_planned: dict[str, str]  # by target key: why its planning failed


def load_fleet_plan(path: Path) -> FleetPlan:
    """Each target's plan by key, each checked against its hash as a single plan is, and the
    targets whose planning failed, with why."""
    import jsonschema

    from reconciler.remediation.playbook import json_schema

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read fleet plan {path}: {e}") from e
    entries = data.get("targets") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise UsageError(f"{path}: not a poststack fleet plan (no targets list)")
    validator = jsonschema.Draft202012Validator(json_schema("plan.schema.json"))
    plans: dict[str, Plan] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: targets[{index}]"
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("key"), str)
            or not isinstance(entry.get("plan"), dict)
        ):
            raise UsageError(f"{where}: needs key and plan")
        errors = list(validator.iter_errors(entry["plan"]))
        if errors:
            raise UsageError(f"{where} ({entry.get('target')}): not a poststack plan: {errors[0].message}")
        plan = Plan.from_json(entry["plan"])
        if entry["plan"].get("hash") != plan.hash:
            raise UsageError(
                f"{where} ({entry.get('target')}): the plan was edited after it was made (its hash does not match)",
                "Make a new one with poststack plan --targets ... --out FILE.",
            )
        if entry["key"] in plans:
            raise UsageError(f"{where} ({entry.get('target')}): the plan holds this target twice")
        plans[entry["key"]] = plan
    failed = data.get("not_planned") or []
    not_planned = {
        str(e["key"]): str(e.get("error") or "its planning failed")
        for e in failed
        if isinstance(e, dict) and isinstance(e.get("key"), str)
    }
    return FleetPlan(plans, not_planned)
