"""Issue model and catalogue: every way tracking can disagree with the files or the catalog."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from reconciler.desired.versions import VersionKey, version_key
from reconciler.errors import UsageError


class Severity(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def emoji(self) -> str:
        return {Severity.LOW: "🟢", Severity.MEDIUM: "🟡", Severity.HIGH: "🟠"}[self]

    @classmethod
    def parse(cls, value: str) -> Severity:
        try:
            return cls[value.upper()]
        except KeyError:
            raise UsageError(f"unknown severity {value!r}; use low, medium or high") from None


class IssueType(StrEnum):
    MISSING_TRACKING = "missing_tracking"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    STUCK_LOCK = "stuck_lock"
    DUPLICATE_VERSION = "duplicate_version"
    PARTIAL_MIGRATION = "partial_migration"
    ROLLBACK_MISSING = "rollback_missing"
    ORPHANED_SCHEMA = "orphaned_schema"
    MISSING_FILE = "missing_file"
    OUT_OF_ORDER = "out_of_order"
    MISSING_OBJECTS = "missing_objects"
    INVALID_INDEX = "invalid_index"
    UNDETERMINED = "undetermined"
    INVALID_FILE = "invalid_file"
    UNSAFE_MIGRATION = "unsafe_migration"

    @classmethod
    def parse(cls, value: str) -> IssueType:
        try:
            return cls(value.lower())
        except ValueError:
            import difflib

            close = difflib.get_close_matches(value.lower(), [t.value for t in cls], n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known types: {', '.join(t.value for t in cls)}"
            raise UsageError(f"unknown issue type {value!r}{hint}") from None


@dataclass(frozen=True)
class IssueKind:
    """What every issue of one type has in common."""

    severity: Severity
    suggested_fix: str
    auto_fixable: bool


CATALOGUE: dict[IssueType, IssueKind] = {
    IssueType.MISSING_TRACKING: IssueKind(Severity.HIGH, "Use recovery mode to track this migration", True),
    IssueType.CHECKSUM_MISMATCH: IssueKind(Severity.HIGH, "Update checksum in database or restore original file", True),
    IssueType.STUCK_LOCK: IssueKind(Severity.HIGH, "Release the lock: poststack db clean --locks --confirm", True),
    IssueType.DUPLICATE_VERSION: IssueKind(Severity.HIGH, "Remove the duplicate tracking rows", True),
    IssueType.PARTIAL_MIGRATION: IssueKind(Severity.HIGH, "Retry migration or clean up partial state", True),
    IssueType.ROLLBACK_MISSING: IssueKind(Severity.LOW, "Create rollback file for this migration", False),
    IssueType.ORPHANED_SCHEMA: IssueKind(Severity.MEDIUM, "Create migration for existing schema or remove it", False),
    IssueType.MISSING_FILE: IssueKind(Severity.HIGH, "Restore the migration file from version control", False),
    IssueType.OUT_OF_ORDER: IssueKind(
        Severity.MEDIUM,
        "If it ran, track it with poststack db recover --force; to run it now, poststack db migrate "
        "--allow-out-of-order; or renumber it",
        False,
    ),
    IssueType.MISSING_OBJECTS: IssueKind(
        Severity.HIGH, "Recreate the missing objects or restore them from a backup", False
    ),
    IssueType.INVALID_INDEX: IssueKind(
        Severity.HIGH, "Drop the invalid index (DROP INDEX CONCURRENTLY) and build it again", False
    ),
    IssueType.UNDETERMINED: IssueKind(
        Severity.LOW, "Add a verify script (NNN_name.verify.sql) returning true once it is applied", False
    ),
    IssueType.INVALID_FILE: IssueKind(
        Severity.HIGH, "Fix the file (name, encoding or duplicate version); poststack db validate lists them", False
    ),
    IssueType.UNSAFE_MIGRATION: IssueKind(
        Severity.HIGH,
        "Rewrite it as its lint findings say, then check it with poststack db lint VERSION",
        False,
    ),
}

SHORT_CHECKSUM = 8  # how many hex digits of a checksum text output shows


@dataclass(frozen=True)
class Issue:
    type: IssueType
    message: str
    version: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    severity: Severity | None = None  # defaults to the catalogue's
    suggested_fix: str | None = None  # defaults to the catalogue's
    auto_fixable: bool | None = None  # defaults to the catalogue's
    shown: tuple[str, ...] | None = None  # the detail keys text output shows (None: all; JSON has all)

    def __post_init__(self) -> None:
        kind = CATALOGUE[self.type]
        if self.severity is None:
            object.__setattr__(self, "severity", kind.severity)
        if self.suggested_fix is None:
            object.__setattr__(self, "suggested_fix", kind.suggested_fix)
        if self.auto_fixable is None:
            object.__setattr__(self, "auto_fixable", kind.auto_fixable)

    @property
    def sort_key(self) -> tuple[int, str, VersionKey, str]:
        assert self.severity is not None
        number = (version_key(self.version) if self.version else None) or VersionKey((-1,))
        return (-self.severity, self.type.value, number, self.message)

    def to_json(self) -> dict[str, Any]:
        assert self.severity is not None
        return {
            "type": self.type.value,
            "severity": self.severity.label,
            "version": self.version,
            "message": self.message,
            "details": self.details,
            "suggested_fix": self.suggested_fix,
            "auto_fixable": self.auto_fixable,
        }
