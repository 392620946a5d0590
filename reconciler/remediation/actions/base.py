"""The action registry. An action declares its arguments, builds a PlannedStep whose
statements are exactly what it will run, and (rarely) overrides how it runs."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from reconciler.config import DEFAULT_DDL_LOCK_TIMEOUT, TrackingLocation
from reconciler.desired.files import Migration, MigrationSet
from reconciler.desired.versions import version_key
from reconciler.errors import UsageError
from reconciler.remediation.plan import PlannedStep
from reconciler.statements import Statement

_REGISTRY: dict[str, type[Action]] = {}


@dataclass(frozen=True)
class BuildContext:
    """What an action may consult while building its step: pure data, no connection."""

    location: TrackingLocation  # where poststack's tables are
    migrations: MigrationSet
    backups_dir: Path | None = None  # where backup steps write
    recorded: tuple[str, ...] = ()  # every version as the tracking table spells it
    ddl_lock_timeout: float = DEFAULT_DDL_LOCK_TIMEOUT  # each migration's lock_timeout, seconds; 0: none

    def spellings(self, version: str) -> list[str]:
        """``version`` and every spelling of it in the tracking table ("2" and "002"; "1.0" and
        "1"), for statements on its rows: they must reach every row of that version."""
        key = version_key(version)
        same = self._recorded_by_key.get(key, set()) if key is not None else set()
        return sorted(same | {version})

    @cached_property
    def _recorded_by_key(self) -> dict[Any, set[str]]:
        # built once: asked for every step, a search of every row each time made rollback quadratic
        found: dict[Any, set[str]] = {}
        for v in self.recorded:
            key = version_key(v)
            if key is not None:
                found.setdefault(key, set()).add(v)
        return found


@dataclass(frozen=True)
class RunContext:
    """What an action may use while it runs, beyond its statements."""

    session: Any
    location: TrackingLocation
    migrations_dir: Path | None
    layout: str | None = None  # the migrations directory's, as the command was given it
    shadow: Any = None  # ShadowSettings: how a step that re-diagnoses replays (None: it does not)


class StepError(Exception):
    """A step that did not do what it must (an assertion, a failed program): its
    transaction is rolled back and the run stops there, like a failed statement."""


def migration_for(ctx: BuildContext, version: Any) -> Migration:
    """The migration file of ``version``, or a usage error naming the directory."""
    migration = ctx.migrations.find(str(version))
    if migration is None:
        raise UsageError(f"no migration {version} in {ctx.migrations.directory}")
    return migration


class Action:
    name: ClassVar[str]
    summary: ClassVar[str]
    required: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()
    destructive: ClassVar[bool] = False
    audited: ClassVar[bool] = True  # False only where the audit table itself is gone afterwards
    static_args: ClassVar[tuple[str, ...]] = ()  # SQL text: never templated, values go in params

    def step(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        self.check_args(args)
        return self.build(ctx, args)

    def check_args(self, args: dict[str, Any]) -> None:
        unknown = sorted(set(args) - set(self.required) - set(self.optional))
        missing = [a for a in self.required if a not in args]
        if unknown:
            raise UsageError(f"action {self.name}: unknown argument(s) {', '.join(unknown)}")
        if missing:
            raise UsageError(f"action {self.name}: missing argument(s) {', '.join(missing)}")

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        raise NotImplementedError

    def run_body(self, run: RunContext, step: PlannedStep, before: Callable[[Statement], None]) -> None:
        """Run the step's body; ``before`` is told each statement first (for error locations).
        The executor owns transactions, bookkeeping and audit."""
        for statement in step.statements:
            before(statement)
            run.session.run(statement)


def register(cls: type[Action]) -> type[Action]:
    if cls.name in _REGISTRY:
        raise RuntimeError(f"action {cls.name} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def get_action(name: str) -> Action:
    try:
        return _REGISTRY[name]()
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown action {name!r}{hint}") from None


def registered() -> dict[str, type[Action]]:
    return dict(_REGISTRY)
