"""A fleet run from start to end: choose the targets (file or query, then the shard), read
the migrations once, run the command's job on each target, and gather one report."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reconciler.config import POOLER_AUTO, Settings
from reconciler.desired.files import Scan
from reconciler.desired.layouts import pinned
from reconciler.errors import MigrationFileError, PoststackError, UsageError
from reconciler.fleet import jobs
from reconciler.fleet.plans import load_fleet_plan
from reconciler.fleet.report import FleetReport, TargetReport
from reconciler.fleet.run import WORKER_DIED, FleetPolicy, Job, Notify, OnDone, run_fleet, skipped
from reconciler.fleet.shard import Shard, select
from reconciler.fleet.targets import Target, query_targets, read_targets_file


@dataclass(frozen=True)
class Selection:
    """Which targets: a file or a query, and the shard of them this machine runs."""

    file: Path | None = None
    query: str | None = None
    shard: Shard | None = None

    def __post_init__(self) -> None:
        if self.file is not None and self.query is not None:
            raise UsageError("--targets and --targets-query both name the targets; pass one of them")
        if self.file is None and self.query is None:
            raise UsageError("no targets: pass --targets FILE or --targets-query SQL")

    @property
    def shards(self) -> tuple[str, ...]:
        """The shards a report of this selection covers: none named is the whole fleet."""
        return (str(self.shard),) if self.shard is not None else ()


def choose_targets(
    selection: Selection, settings_for: Callable[[bool], Settings], notify: Notify | None = None
) -> tuple[Settings, list[Target]]:
    """The settings, and this shard's targets. ``settings_for(needs_database)`` resolves the
    settings: a fleet of databases its file names by URL needs no database of its own, so an
    unnamed one is not an error then (tenant schemas and a query do need one)."""
    if selection.file is not None:
        targets = read_targets_file(selection.file)
        settings = settings_for(any(t.url is None for t in targets))
    else:
        assert selection.query is not None
        settings = settings_for(True)
        targets = query_targets(settings, selection.query, notify)
    return settings, select(targets, selection.shard)


@contextmanager
def _prepared(
    settings: Settings, targets: list[Target], policy: FleetPolicy, notify: Notify | None
) -> Iterator[Settings]:
    """Around a fleet run: the migration files read once for every target; the embedded
    server started once; whether a pooler sits in front of a tenant fleet's one database,
    found out once; and, before workers fork, what each would import and parse. Yields the
    settings the targets start from."""
    with pinned(settings.migrations_dir, settings.layout) as scan:
        if settings.embedded and any(t.url is None for t in targets):
            from reconciler.db import resolve_url

            resolve_url(settings, notify)
        settings = _pooling_found(settings, targets, notify)
        if policy.parallel > 1:
            _warm(scan)
        yield settings


def _pooling_found(settings: Settings, targets: list[Target], notify: Notify | None) -> Settings:
    """Tenant schemas in one database all reach it the same way: when the settings leave the
    pooler to be found out (pooler = "auto"), it is found out here, once, instead of by each
    target with a second connection of its own; each target's run then takes it as said
    (and says it was detected). Anything that stops the probe is left to each target's run
    to report as its own."""
    from reconciler.db import DETECTED, connect

    if settings.pooler != POOLER_AUTO or len(targets) < 2 or len({t.url for t in targets}) != 1:
        return settings
    database = replace(targets[0], schema=None, shared_schemas=()).settings(settings)
    try:
        with connect(database, notify) as session:
            pooling = session.pooling
    except PoststackError:
        return settings
    sources = tuple((key, DETECTED if key == "pooler" else source) for key, source in settings.origins.sources)
    if "pooler" not in dict(sources):
        sources = (*sources, ("pooler", DETECTED))
    return replace(settings, pooler=pooling.mode, origins=replace(settings.origins, sources=sources))


def run(
    command: str,
    settings: Settings,
    targets: list[Target],
    policy: FleetPolicy,
    job: Job,
    *,
    shards: tuple[str, ...] = (),
    notify: Notify | None = None,
    on_done: OnDone | None = None,
) -> FleetReport:
    started = time.monotonic()
    with _prepared(settings, targets, policy, notify) as base:
        reports, stopped = run_fleet(targets, base, job, policy, on_done)
        by_key = {t.key: t for t in targets}
        reports = [_lost_worker_standing(r, by_key[r.key], base, notify) for r in reports]
    return _report(command, reports, policy, shards, started, stopped)


def _lost_worker_standing(report: TargetReport, target: Target, base: Settings, notify: Notify | None) -> TargetReport:
    """A target whose worker died (killed, out of memory) left no word of where it stands:
    read here, in the fleet process, so its row does not read as if nothing was done."""
    if report.error != WORKER_DIED:
        return report
    try:
        values = jobs.standing(target.settings(base), notify or (lambda _: None))
    except PoststackError:
        return report
    detail = (
        "What it committed before it died is in the version above: each migration commits with its tracking row or "
        "not at all. A lock it held is taken over by the next run when that is safe; db diagnose says what to do."
    )
    return replace(report, **values, detail=detail)


def _warm(scan: Scan) -> None:
    """Before the workers fork: what every target's run would import and parse, done once
    here, so each worker inherits it instead of doing it again."""
    import reconciler.diagnosis.diagnose
    import reconciler.remediation.fixes
    import reconciler.remediation.runner  # noqa: F401

    for migration in scan.migrations.migrations:
        for file in (migration.file, migration.rollback, migration.verify):
            if file is None:
                continue
            _ = file.tree
            with contextlib.suppress(MigrationFileError):  # said by the target's own run
                _ = file.script


def _report(
    command: str,
    reports: list[TargetReport],
    policy: FleetPolicy,
    shards: tuple[str, ...],
    started: float,
    stopped: int | None,
) -> FleetReport:
    from reconciler import interrupts

    return FleetReport(
        command,
        tuple(reports),
        policy.parallel,
        policy.canary,
        policy.keep_going,
        shards,
        time.monotonic() - started,
        interrupts.signal_name(stopped) if stopped is not None else None,
    )


def apply_saved(
    settings: Settings,
    chosen: list[Target],
    plan_file: Path,
    policy: FleetPolicy,
    *,
    partial: bool,
    confirm: bool,
    shards: tuple[str, ...] = (),
    notify: Notify | None = None,
    on_done: OnDone | None = None,
) -> FleetReport:
    """Apply a fleet plan: first check every target's fingerprint (read only); when any has
    changed, nothing runs anywhere unless ``partial``, which runs the unchanged ones."""
    started = time.monotonic()
    fleet_plan = load_fleet_plan(plan_file)
    plans = fleet_plan.plans
    planned = [t for t in chosen if t.key in plans]
    absent = [t for t in chosen if t.key not in plans]
    if not planned:
        raise UsageError(
            f"{plan_file}: none of these targets is in the plan", "Pass the --targets the plan was made with."
        )
    destructive = [t.name for t in planned if plans[t.key].destructive]
    if destructive and not confirm:
        raise UsageError(
            f"the plan is destructive for {', '.join(destructive[:5])}{' ...' if len(destructive) > 5 else ''}",
            "Review it, then pass --confirm (each target is backed up before anything is dropped).",
        )
    with _prepared(settings, planned, policy, notify) as base:
        checked, stopped = run_fleet(planned, base, jobs.fresh_job(plans), replace(policy, canary=0, keep_going=True))
        changed = {r.key: r for r in checked if r.outcome != "ok"}
        if stopped is not None or (changed and not partial):
            why = (
                "not run: the run was stopped"
                if stopped is not None
                else f"not run: {len(changed)} target(s) changed since the plan was made (pass --partial to run the rest)"
            )
            reports = [changed.get(t.key) or skipped(t, why) for t in planned]
        else:
            fresh = [t for t in planned if t.key not in changed]
            ran, stopped = run_fleet(fresh, base, jobs.apply_job(plans, None, confirm=confirm), policy, on_done)
            by_key = {r.key: r for r in ran} | changed
            reports = [by_key[t.key] for t in planned]
    reports += [
        skipped(
            t,
            f"not planned: {fleet_plan.not_planned[t.key]}"
            if t.key in fleet_plan.not_planned
            else f"not in the plan {plan_file}",
        )
        for t in absent
    ]
    order = {t.key: i for i, t in enumerate(chosen)}
    reports.sort(key=lambda r: order[r.key])
    return _report("apply", reports, policy, shards, started, stopped)


def merge(reports: list[FleetReport], sources: list[str]) -> FleetReport:
    """Shards' reports as one: the same command, each target once."""
    commands = {r.command for r in reports}
    if len(commands) > 1:
        raise UsageError(
            f"these reports are of different commands ({', '.join(sorted(commands))}); merge one command's"
        )
    shards: dict[str, str] = {}
    for report, source in zip(reports, sources, strict=True):
        for shard in report.shards:
            if shard in shards:
                raise UsageError(f"shard {shard} is in both {shards[shard]} and {source}")
            shards[shard] = source
    if len({shard.split("/")[1] for shard in shards}) > 1:
        raise UsageError(
            f"these reports split the fleet differently ({', '.join(shards)}); merge the shards of one split"
        )
    seen: dict[str, str] = {}
    targets: list[TargetReport] = []
    for report, source in zip(reports, sources, strict=True):
        for target in report.targets:
            if target.key in seen:
                raise UsageError(
                    f"{target.target} is in both {seen[target.key]} and {source}: were the shards overlapping?"
                )
            seen[target.key] = source
            targets.append(target)
    first = reports[0]
    interrupted = next((r.interrupted for r in reports if r.interrupted), None)
    # A shard whose job died before it wrote its report must not pass for a fleet that succeeded.
    count = int(next(iter(shards)).split("/")[1]) if shards else 0
    missing = tuple(f"{i}/{count}" for i in range(1, count + 1) if f"{i}/{count}" not in shards)
    return FleetReport(
        first.command,
        tuple(targets),
        max(r.parallel for r in reports),
        first.canary,
        first.keep_going,
        tuple(s for r in reports for s in r.shards),
        max(r.seconds for r in reports),
        interrupted,
        missing,
    )


def load_report(path: Path) -> FleetReport:
    import json

    import jsonschema

    from reconciler.remediation.playbook import json_schema

    try:
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read fleet report {path}: {e}") from e
    errors = list(jsonschema.Draft202012Validator(json_schema("fleet-report.schema.json")).iter_errors(data))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise UsageError(f"{path}: not a poststack fleet report: {where}: {errors[0].message}")
    return FleetReport.from_json(data)
