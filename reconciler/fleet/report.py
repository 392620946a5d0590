"""A fleet run's report as plain data: one row per target, the totals, and the JSON both are
written as (schemas/fleet-report.schema.json). Shards' reports merge into one."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

FORMAT = "poststack-fleet-report/1"
SEVERITIES = ("high", "medium", "low")
# What happened on a target. The first three are success; the rest make the fleet exit 1.
SUCCESS = ("ok", "applied", "planned")
OUTCOMES = (*SUCCESS, "problems", "failed", "refused", "unreachable", "interrupted", "skipped")


def outcome_of_error(exit_code: int) -> str:
    """A target's outcome when its command raised: a usage error (a stale plan, say) is a
    refusal, an unreachable database is that, the rest failed."""
    return {2: "refused", 3: "unreachable"}.get(exit_code, "failed")


@dataclass(frozen=True)
class TargetReport:
    target: str  # its name
    key: str  # URL without password (+ #schema): what shards and fleet plans go by
    database: str  # the URL, password masked
    schema: str | None
    outcome: str
    exit_code: int
    seconds: float = 0.0
    current_version: str | None = None
    pending: int | None = None  # None: not read (the target was not reached)
    failed: int | None = None
    issues: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEVERITIES, 0))
    issue_list: tuple[dict[str, Any], ...] = ()  # type, severity, version, summary, fix
    error: str | None = None  # one line: why it failed, was refused or skipped
    detail: str | None = None  # what to do about it
    applied: tuple[str, ...] = ()  # versions (or steps) this run applied
    notes: tuple[str, ...] = ()
    plan: dict[str, Any] | None = None  # plan: the target's plan, as plan --format json shows it

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCESS

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["issue_list"] = list(self.issue_list)
        data["applied"] = list(self.applied)
        data["notes"] = list(self.notes)
        data["seconds"] = round(self.seconds, 3)
        if self.plan is None:
            del data["plan"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TargetReport:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("issue_list", "applied", "notes"):
            values[name] = tuple(values.get(name) or ())
        return cls(**values)


@dataclass(frozen=True)
class FleetReport:
    command: str  # "db migrate", "plan", ...
    targets: tuple[TargetReport, ...]
    parallel: int = 1
    canary: int = 0
    keep_going: bool = False
    shards: tuple[str, ...] = ()  # "1/4", ...: the shards this report covers (empty: the whole fleet)
    seconds: float = 0.0
    interrupted: str | None = None  # the signal that stopped the run
    missing_shards: tuple[str, ...] = ()  # report merge: the shards of the split no report covers

    @property
    def ok(self) -> bool:
        return all(t.succeeded for t in self.targets) and self.interrupted is None and not self.missing_shards

    @property
    def totals(self) -> dict[str, Any]:
        outcomes = Counter(t.outcome for t in self.targets)
        return {
            "targets": len(self.targets),
            "outcomes": {o: outcomes[o] for o in OUTCOMES if outcomes[o]},
            "pending": sum(t.pending or 0 for t in self.targets),
            "failed": sum(t.failed or 0 for t in self.targets),
            "issues": {s: sum(t.issues.get(s, 0) for t in self.targets) for s in SEVERITIES},
            "seconds": round(self.seconds, 3),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "command": self.command,
            "fleet": {
                "targets": len(self.targets),
                "shards": list(self.shards),
                "parallel": self.parallel,
                "canary": self.canary,
                "keep_going": self.keep_going,
                "interrupted": self.interrupted,
                "missing_shards": list(self.missing_shards),
            },
            "targets": [t.to_json() for t in self.targets],
            "totals": self.totals,
            "ok": self.ok,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FleetReport:
        fleet = data["fleet"]
        return cls(
            command=data["command"],
            targets=tuple(TargetReport.from_json(t) for t in data["targets"]),
            parallel=fleet.get("parallel", 1),
            canary=fleet.get("canary", 0),
            keep_going=fleet.get("keep_going", False),
            shards=tuple(fleet.get("shards") or ()),
            seconds=data.get("totals", {}).get("seconds", 0.0),
            interrupted=fleet.get("interrupted"),
            missing_shards=tuple(fleet.get("missing_shards") or ()),
        )
