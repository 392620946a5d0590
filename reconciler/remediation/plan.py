"""Plan: plain, serializable data. No connection inside; what a step shows is what it runs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from reconciler.config import DEFAULT_TABLE_PREFIX, TrackingLocation
from reconciler.statements import Statement

PLAN_FORMAT = 1


@dataclass(frozen=True)
class PlannedStep:
    """One unit of work. ``statements`` are the step's body; ``bookkeeping`` records it
    (tracking rows) and always runs in a transaction, together with the body when
    ``transactional``; ``on_failure`` records a failure after the body was rolled back."""

    action: str
    reason: str
    args: dict[str, Any]
    statements: tuple[Statement, ...] = ()
    bookkeeping: tuple[Statement, ...] = ()
    on_failure: tuple[Statement, ...] = ()
    transactional: bool = True
    no_transaction_reason: str | None = None
    version: str | None = None
    command: tuple[str, ...] = ()  # for steps that run a program (pg_dump), its argv as shown
    playbook: str | None = None  # the playbook that planned it
    title: str | None = None  # the playbook step's name, rendered
    # Its transaction commits before the next step starts: PostgreSQL lets no later statement
    # of the same transaction use an enum value ALTER TYPE ... ADD VALUE added.
    commit_after: bool = False
    # Seconds of PostgreSQL's lock_timeout the step sets for its statements (a migration's
    # --ddl-lock-timeout): its first statement sets it. None: it sets none. When it fires in
    # a transaction, the executor rolls the transaction back and may try the step again.
    lock_timeout: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "args": self.args,
            "version": self.version,
            "playbook": self.playbook,
            "title": self.title,
            "command": list(self.command),
            "transactional": self.transactional,
            "no_transaction_reason": self.no_transaction_reason,
            "statements": [s.to_json() for s in self.statements],
            "bookkeeping": [s.to_json() for s in self.bookkeeping],
            "on_failure": [s.to_json() for s in self.on_failure],
            **({"commit_after": True} if self.commit_after else {}),
            **({"lock_timeout": self.lock_timeout} if self.lock_timeout is not None else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlannedStep:
        return cls(
            action=data["action"],
            reason=data["reason"],
            args=data["args"],
            version=data.get("version"),
            playbook=data.get("playbook"),
            title=data.get("title"),
            command=tuple(data.get("command") or ()),
            transactional=data["transactional"],
            no_transaction_reason=data.get("no_transaction_reason"),
            statements=tuple(Statement.from_json(s) for s in data["statements"]),
            bookkeeping=tuple(Statement.from_json(s) for s in data["bookkeeping"]),
            on_failure=tuple(Statement.from_json(s) for s in data["on_failure"]),
            commit_after=bool(data.get("commit_after", False)),
            lock_timeout=data.get("lock_timeout"),
        )


@dataclass(frozen=True)
class PlaybookRef:
    """Which playbook (and exactly which file content) a plan was rendered from."""

    name: str
    version: int
    sha256: str
    builtin: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "builtin": self.builtin}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlaybookRef:
        return cls(data["name"], data["version"], data["sha256"], data["builtin"])


@dataclass(frozen=True)
class Plan:
    operation: str  # migrate, rollback, create-schema, remediate, ...
    tracking: TrackingLocation  # where the tables its statements name are
    fingerprint: str  # of the observed state the plan was computed from
    steps: tuple[PlannedStep, ...]
    nothing_to_do: str | None = None  # the reason, when there are no steps
    notes: tuple[str, ...] = field(default=())
    # Remediation plans run consecutive transactional steps in one transaction ("batch");
    # migrate and rollback give each step its own ("step").
    grouping: str = "step"
    playbooks: tuple[PlaybookRef, ...] = ()
    issues: tuple[dict[str, Any], ...] = ()  # what was diagnosed, as diagnose --format json shows it
    database: str | None = None  # current_database() it was made for
    destructive: bool = False

    @property
    def tracking_schema(self) -> str:
        return self.tracking.schema

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "operation": self.operation,
            "database": self.database,
            "tracking_schema": self.tracking.schema,
            "table_prefix": self.tracking.prefix,
            "fingerprint": self.fingerprint,
            "grouping": self.grouping,
            "destructive": self.destructive,
            "playbooks": [p.to_json() for p in self.playbooks],
            "issues": list(self.issues),
            "nothing_to_do": self.nothing_to_do,
            "notes": list(self.notes),
            "steps": [s.to_json() for s in self.steps],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            operation=data["operation"],
            tracking=TrackingLocation(data["tracking_schema"], data.get("table_prefix", DEFAULT_TABLE_PREFIX)),
            fingerprint=data["fingerprint"],
            nothing_to_do=data.get("nothing_to_do"),
            notes=tuple(data.get("notes") or ()),
            steps=tuple(PlannedStep.from_json(s) for s in data["steps"]),
            grouping=data.get("grouping", "step"),
            playbooks=tuple(PlaybookRef.from_json(p) for p in data.get("playbooks") or ()),
            issues=tuple(data.get("issues") or ()),
            database=data.get("database"),
            destructive=data.get("destructive", False),
        )

    def transactions(self) -> list[list[int]]:
        """Step indexes (0-based) grouped as they will run: one group, one transaction;
        a non-transactional step is a group of its own."""
        groups: list[list[int]] = []
        for index, step in enumerate(self.steps):
            joinable = self.grouping == "batch" and step.transactional and groups
            before = self.steps[groups[-1][-1]] if groups else None
            if joinable and before is not None and before.transactional and not before.commit_after:
                groups[-1].append(index)
            else:
                groups.append([index])
        return groups

    @cached_property
    def hash(self) -> str:
        """Identifies this exact plan in audit rows (computed once: it serializes the plan)."""
        canonical = json.dumps(self.to_json(), sort_keys=True, default=str).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]
