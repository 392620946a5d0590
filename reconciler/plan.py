"""Plan: plain, serializable data. No connection inside; what a step shows is what it runs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

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

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "args": self.args,
            "version": self.version,
            "transactional": self.transactional,
            "no_transaction_reason": self.no_transaction_reason,
            "statements": [s.to_json() for s in self.statements],
            "bookkeeping": [s.to_json() for s in self.bookkeeping],
            "on_failure": [s.to_json() for s in self.on_failure],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlannedStep:
        return cls(
            action=data["action"],
            reason=data["reason"],
            args=data["args"],
            version=data.get("version"),
            transactional=data["transactional"],
            no_transaction_reason=data.get("no_transaction_reason"),
            statements=tuple(Statement.from_json(s) for s in data["statements"]),
            bookkeeping=tuple(Statement.from_json(s) for s in data["bookkeeping"]),
            on_failure=tuple(Statement.from_json(s) for s in data["on_failure"]),
        )


@dataclass(frozen=True)
class Plan:
    operation: str  # migrate, rollback, create-schema, ...
    tracking_schema: str
    fingerprint: str  # of the observed state the plan was computed from
    steps: tuple[PlannedStep, ...]
    nothing_to_do: str | None = None  # the reason, when there are no steps
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "operation": self.operation,
            "tracking_schema": self.tracking_schema,
            "fingerprint": self.fingerprint,
            "nothing_to_do": self.nothing_to_do,
            "notes": list(self.notes),
            "steps": [s.to_json() for s in self.steps],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            operation=data["operation"],
            tracking_schema=data["tracking_schema"],
            fingerprint=data["fingerprint"],
            nothing_to_do=data.get("nothing_to_do"),
            notes=tuple(data.get("notes") or ()),
            steps=tuple(PlannedStep.from_json(s) for s in data["steps"]),
        )

    @property
    def hash(self) -> str:
        """Identifies this exact plan in audit rows."""
        canonical = json.dumps(self.to_json(), sort_keys=True, default=str).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]
