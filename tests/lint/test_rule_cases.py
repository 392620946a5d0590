"""Every lint rule's YAML cases (tests/lint/cases/*.yaml), run on a real PostgreSQL.

Per case: the setup history is migrated onto an emptied database, the data (if any) is
written there and analyzed (so the live size is what the rules see), then the pending
migration is linted in-process the way ``db lint`` does it, shadow measurement included, and
the findings are held to the case's expectations (and its JSON to the schema). One database serves every case, emptied
(every schema dropped) before each: making one per case would double the time.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from reconciler import commands
from reconciler.config import resolve_settings
from reconciler.diagnosis import linting
from reconciler.diagnosis.lint.base import LintSeverity
from reconciler.diagnosis.lint.engine import Finding
from reconciler.interface.lint_view import lint_json, lint_text
from tests.conftest import Server, scratch_database, write
from tests.integration.test_json_output import SCHEMA_FOR, problems
from tests.lint.cases import Case, Expected, all_cases

_CASES = all_cases()
_EMPTY = """DO $$ DECLARE s name; BEGIN
  FOR s IN SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', s);
  END LOOP;
END $$;
CREATE SCHEMA public"""


@pytest.fixture(scope="module")
def cases_database(pg_server: Server, template_db: str) -> Iterator[str]:
    with scratch_database(pg_server, f"poststack_lint_cases_{os.getpid()}", template_db) as url:
        yield url


@pytest.fixture
def database_url(cases_database: str) -> str:
    """The cases' database, emptied: no schema but an empty public."""
    _run(cases_database, _EMPTY)
    return cases_database


@pytest.mark.parametrize("case", _CASES, ids=[case.id for case in _CASES])
def test_rule_case(case: Case, database_url: str, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for number, sql in enumerate(case.setup, start=1):
        write(migrations, f"{number:03d}_setup.sql", sql)
    if case.lint_ignore is not None:
        (tmp_path / "poststack.toml").write_text(f"lint_ignore = {json.dumps(list(case.lint_ignore))}\n")
    settings = resolve_settings(
        database_url=database_url, migrations_dir=migrations, no_replay=not case.replay, environ={}, cwd=tmp_path
    )
    if case.setup:
        assert commands.migrate(settings, target=None, dry_run=False).ok, f"{case.source}: the setup did not migrate"
    if case.data:
        _run(database_url, case.data)
        _run(database_url, "ANALYZE")
    for number, sql in enumerate(case.migration, start=101):
        write(migrations, f"{number:03d}_pending.sql", sql)
    if case.ddl_lock_timeout is not None:  # what db migrate would set for each migration
        settings = dataclasses.replace(settings, ddl_lock_timeout=case.ddl_lock_timeout)

    result = linting.lint_migrations(settings, (), False, LintSeverity.INFO)

    linted = result.linted
    assert len(linted.versions) == len(case.migration), f"{case.source}: linted {linted.versions}"
    if case.replay:
        assert linted.run is not None and linted.run.measurement is not None, f"{case.source}: {linted.notices}"
        refused = any(getattr(expected, "code", expected) == "PS106" for expected in case.fail)
        stopped = linted.run.measurement.stopped
        assert (stopped is not None) == refused, f"{case.source}: {stopped}"  # PS106: the shadow refused it
    found, ignored = linted.findings.findings, [i.finding for i in linted.findings.ignored]
    said = _said(found, ignored)
    for expected in case.fail:
        assert any(_matches(f, expected) for f in found), f"{case.source}: no finding like {expected}\n{said}"
    for code in case.passes:
        assert all(f.code != code for f in found), f"{case.source}: {code} was found\n{said}"
    for code in case.ignored:
        assert any(f.code == code for f in ignored), f"{case.source}: {code} was not switched off\n{said}"
        assert all(f.code != code for f in found), f"{case.source}: {code} was found, not switched off\n{said}"
    # Both views of every case: the JSON matches its schema, and the text names each finding.
    errors = problems(json.loads(lint_json(result)), SCHEMA_FOR["db lint"])
    assert not errors, f"{case.source}: db lint --format json does not match its schema:\n" + "\n".join(errors)
    text = lint_text(result)
    assert all(f"{f.code} {f.name}  {f.where}" in text for f in found), text


def _matches(finding: Finding, expected: Expected) -> bool:
    hit = finding.hit
    wanted = {
        "code": (finding.code, expected.code),
        "severity": (finding.severity.label, expected.severity),
        "lock": (hit.lock, expected.lock),
        "rewrites": (hit.rewrites, expected.rewrites),
        "relation": (hit.relation, expected.relation),
        "basis": (hit.basis, expected.basis),
        "file": (finding.version, None if expected.file is None else f"{100 + expected.file:03d}"),
        "line": (finding.line, expected.line),
    }
    return all(want is None or have == want for have, want in wanted.values())


def _said(found: tuple[Finding, ...], ignored: list[Finding]) -> str:
    lines = [
        f"  {f.code} {f.severity.label} {f.version}:{f.line} {f.hit.relation} lock={f.hit.lock} "
        f"rewrites={f.hit.rewrites} basis={f.hit.basis}: {f.hit.message}"
        for f in found
    ]
    lines += [f"  (switched off) {f.code} {f.version}:{f.line}" for f in ignored]
    return "findings:\n" + ("\n".join(lines) or "  none")


def _run(url: str, sql: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()
