"""The lint rules' pass/fail cases: one YAML file per rule under tests/lint/cases/, as
sqlfluff keeps them (``test/fixtures/rules/std_rule_cases``).

A file::

    rule: PS101
    cases:
      - name: int-to-bigint-rewrites
        setup: |                      # the history already applied on the target (one file,
          CREATE TABLE t (v int);     # or a list: one migration file each)
        data: |                       # optional: run on the target after it, to give it rows
          INSERT INTO t SELECT generate_series(1, 100);
        migration: |                  # the pending migration (or a list: one file each)
          ALTER TABLE t ALTER COLUMN v TYPE bigint;
        settings:                     # optional
          replay: false               # lint without a shadow (--no-replay): nothing measured
          ddl_lock_timeout: 0         # what db migrate would set for each migration
          lint_ignore: [PS101]        # the project file's lint_ignore
        expect:
          fail:                       # found: a code, or a code and what the finding must say
            - code: PS101
              severity: low
              lock: ACCESS EXCLUSIVE
              rewrites: true
          pass: [PS101]               # not found
          ignored: [PS101]            # found, and switched off (by the project or the file)

A file names only its own rule in ``expect``: what another rule says of the same SQL is in
that rule's file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CASES = Path(__file__).resolve().parent / "cases"
_CASE_KEYS = {"name", "setup", "data", "migration", "settings", "expect"}
_SETTINGS = {"replay", "ddl_lock_timeout", "lint_ignore"}
_EXPECT = {"fail", "pass", "ignored"}
_FINDING = {"code", "severity", "lock", "rewrites", "relation", "basis", "file", "line"}


@dataclass(frozen=True)
class Expected:
    """One finding a case must produce; the fields that are not None must match."""

    code: str
    severity: str | None = None
    lock: str | None = None
    rewrites: bool | None = None
    relation: str | None = None
    basis: str | None = None
    file: int | None = None  # which migration file (1: the first of ``migration``)
    line: int | None = None


@dataclass(frozen=True)
class Case:
    rule: str
    name: str
    setup: tuple[str, ...]
    migration: tuple[str, ...]
    data: str | None = None
    replay: bool = True
    ddl_lock_timeout: float | None = None
    lint_ignore: tuple[str, ...] | None = None
    fail: tuple[Expected, ...] = ()
    passes: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    source: str = field(default="", compare=False)

    @property
    def id(self) -> str:
        return f"{self.rule}-{self.name}"

    def codes(self) -> set[str]:
        """Every rule code the case's expectations name."""
        return {e.code for e in self.fail} | set(self.passes) | set(self.ignored)


class CaseError(ValueError):
    pass


def load_file(path: Path) -> tuple[str, list[Case]]:
    """The rule a case file is for, and its cases; CaseError for a file that says anything else."""
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict) or set(document) != {"rule", "cases"}:
        raise CaseError(f"{path.name}: needs exactly the keys rule and cases")
    rule, raw_cases = str(document["rule"]), document["cases"]
    if not isinstance(raw_cases, list) or not raw_cases:
        raise CaseError(f"{path.name}: cases is an empty list")
    cases = [_case(rule, raw, f"{path.name}[{i}]") for i, raw in enumerate(raw_cases)]
    names = [case.name for case in cases]
    if len(set(names)) != len(names):
        raise CaseError(f"{path.name}: two cases have the same name")
    return rule, cases


def all_cases() -> list[Case]:
    return [case for path in sorted(CASES.glob("*.yaml")) for case in load_file(path)[1]]


def _case(rule: str, raw: Any, where: str) -> Case:
    if not isinstance(raw, dict):
        raise CaseError(f"{where}: a case is a mapping")
    unknown = set(raw) - _CASE_KEYS
    if unknown or not {"name", "migration", "expect"} <= set(raw):
        raise CaseError(f"{where}: needs name, migration and expect; unknown keys: {sorted(unknown)}")
    settings = raw.get("settings") or {}
    if set(settings) - _SETTINGS:
        raise CaseError(f"{where}: unknown settings {sorted(set(settings) - _SETTINGS)}")
    expect = raw["expect"] or {}
    if set(expect) - _EXPECT or not expect:
        raise CaseError(f"{where}: expect takes fail, pass and ignored")
    lint_ignore = settings.get("lint_ignore")
    timeout = settings.get("ddl_lock_timeout")
    return Case(
        rule=rule,
        name=str(raw["name"]),
        setup=_files(raw.get("setup")),
        migration=_files(raw["migration"]),
        data=raw.get("data"),
        replay=bool(settings.get("replay", True)),
        ddl_lock_timeout=float(timeout) if timeout is not None else None,
        lint_ignore=tuple(str(c) for c in lint_ignore) if lint_ignore is not None else None,
        fail=tuple(_expected(item, where) for item in expect.get("fail") or ()),
        passes=tuple(str(code) for code in expect.get("pass") or ()),
        ignored=tuple(str(code) for code in expect.get("ignored") or ()),
        source=where,
    )


def _files(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


def _expected(item: Any, where: str) -> Expected:
    if isinstance(item, str):
        return Expected(item)
    if not isinstance(item, dict) or "code" not in item or set(item) - _FINDING:
        raise CaseError(f"{where}: a fail entry is a code, or a mapping of {sorted(_FINDING)} with a code")
    return Expected(**{key: item[key] for key in item})
