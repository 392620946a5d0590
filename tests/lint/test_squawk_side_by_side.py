"""db lint side by side with squawk, over a few hundred migrations (issue 15).

Every squawk warning of a rule poststack also has must be found by ``db lint`` at the same
statement, or be a difference the rules reference explains, derived here from what
``db lint --format json`` measured for that statement (and, for require-lock-timeout, from
the same lint with poststack's own lock_timeout switched off). Which squawk rules poststack
has is read from the rules' own docstrings (their **squawk:** paragraphs), and which it does
not from the rules package's docstring, so the reference and this test cannot drift apart.

Scope: the pending migrations, as ``db lint`` lints by default (what a deploy is about to
run). The first part of the corpus is applied with ``db migrate`` and ANALYZEd, so the
pending part meets tables that exist and have rows: the live sizes, and so the severities,
are real, and each statement's table either existed before its migration or was made in it.
``--all`` would add the applied part, which only makes and fills tables, and would size its
statements on a database those migrations already changed. squawk runs as people run it: its
default rules, over the same files, with ``--pg-version`` set to the server's.

``pytest -s`` prints the comparison both ways, with counts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from pglast import parser

from reconciler.config import SETTING_VARIABLES
from reconciler.desired.script import ScriptStatement, parse_script
from reconciler.diagnosis.lint import rules as rules_package
from reconciler.diagnosis.lint.base import load_rules
from tests.conftest import run_cli
from tests.lint.squawk_corpus import squawk_corpus

SEED = 2  # of the first 40 seeds, one whose pending part has every squawk rule poststack maps, 3+ times each
_SQUAWK_NAME = re.compile(r"``([a-z]+(?:-[a-z]+)+)``")


def squawk_binary() -> str | None:
    """The squawk the test extra installed (found from its package's record of the files it
    installed, wherever the interpreter is and whether or not its venv is activated), else
    one on PATH; None when neither is there."""
    try:
        files = distribution("squawk-cli").files or []
    except PackageNotFoundError:
        files = []
    for file in files:
        installed = Path(str(file.locate())).resolve()
        if file.name == "squawk" and installed.exists():
            return str(installed)
    return shutil.which("squawk")


def _words(text: str) -> str:
    return " ".join(text.split())


def squawk_paragraph(doc: str) -> str:
    """A rule docstring's **squawk:** paragraph, on one line."""
    found = re.search(r"\*\*squawk:\*\*(.*?)(?:\n\s*\n|\Z)", doc, re.DOTALL)
    return _words(found.group(1)) if found else ""


def squawk_mapping() -> dict[str, frozenset[str]]:
    """squawk rule -> the poststack codes whose **squawk:** paragraph names it."""
    mapping: dict[str, set[str]] = defaultdict(set)
    for code, found in load_rules().items():
        for name in _SQUAWK_NAME.findall(squawk_paragraph(found.doc)):
            mapping[name].add(code)
    return {name: frozenset(codes) for name, codes in mapping.items()}


def not_poststack_rules() -> frozenset[str]:
    """The squawk rules the rules package's docstring lists as not a lock or rewrite rule."""
    doc = rules_package.__doc__ or ""
    items = re.findall(r"^- (.*?):", doc, re.MULTILINE | re.DOTALL)
    return frozenset(name for item in items for name in _SQUAWK_NAME.findall(item))


# -- the explained differences: each sentence must be in a mapped rule's **squawk:** paragraph,
# and each is derived from what db lint measured for the statement, never assumed.


@dataclass(frozen=True)
class Measured:
    """What db lint's JSON says one statement did, and the table the statement names."""

    facts: dict[str, Any] | None
    table: str | None
    without_timeout: frozenset[str]  # the codes db lint reports there with ddl_lock_timeout = 0

    @property
    def existed(self) -> bool:
        """The table was there before the migration: measured facts hold a lock on it (they
        cover only the relations that existed before the migration)."""
        return self.facts is not None and any(lock["relation"] == self.table for lock in self.facts["locks"])

    @property
    def watched(self) -> bool:
        """Run in a transaction in the shadow and watched there (not stood in for by the facts
        PostgreSQL documents for a statement that runs outside one)."""
        return self.facts is not None and self.facts["basis"] == "measured"

    def did(self, what: str) -> bool:
        """The table is among the ones the statement ``what`` (rewrites, scans)."""
        return self.facts is not None and self.table in self.facts[what]

    @property
    def held(self) -> set[str]:
        """The lock modes held once it ran, on tables there before (an earlier statement's too)."""
        return {lock["mode"] for lock in self.facts["locks"]} if self.facts else set()

    @property
    def taken(self) -> set[str]:
        """The lock modes the statement took (or made stronger), on tables there before."""
        return {lock["mode"] for lock in self.facts["locks"] if lock["taken_here"]} if self.facts else set()


CREATED_HERE = "table created in the same migration"
NO_REWRITE = "measured: no rewrite on this server"
NO_SCAN = "measured: no scan on this server"
LOCK_TIMEOUT = "poststack sets lock_timeout for every migration"
ONLY_SHARE_UPDATE_EXCLUSIVE = "takes only SHARE UPDATE EXCLUSIVE"
NO_TABLE = "locks no table against readers or writers"
ALREADY_HELD = "the migration already holds that lock"
_WEAKER = {"ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE"}  # than SHARE UPDATE EXCLUSIVE

REASONS: dict[str, Callable[[Measured], bool]] = {
    LOCK_TIMEOUT: lambda m: "PS201" in m.without_timeout,
    CREATED_HERE: lambda m: m.watched and m.table is not None and not m.existed,
    ONLY_SHARE_UPDATE_EXCLUSIVE: lambda m: (
        "SHARE UPDATE EXCLUSIVE" in m.taken and m.taken <= {*_WEAKER, "SHARE UPDATE EXCLUSIVE"}
    ),
    NO_TABLE: lambda m: m.watched and m.table is None and m.taken <= _WEAKER,
    ALREADY_HELD: lambda m: m.watched and not m.taken and "ACCESS EXCLUSIVE" in m.held,
    NO_REWRITE: lambda m: m.watched and m.existed and not m.did("rewrites"),
    NO_SCAN: lambda m: m.watched and m.existed and not m.did("scans"),
}


def statement_table(sql: str) -> str | None:
    """schema.name of the table an ALTER TABLE, CREATE INDEX, rename or DROP TABLE acts on
    (the corpus writes every name unqualified, in public)."""
    kind, node = next(iter(json.loads(parser.parse_sql_json(sql))["stmts"][0]["stmt"].items()))
    relation = node.get("relation")
    if kind in ("AlterTableStmt", "IndexStmt", "RenameStmt") and isinstance(relation, dict):
        return f"{relation.get('schemaname') or 'public'}.{relation['relname']}"
    if kind == "DropStmt" and node.get("removeType") == "OBJECT_TABLE":
        names = [item["String"]["sval"] for item in node["objects"][0]["List"]["items"]]
        return ".".join(names) if len(names) > 1 else f"public.{names[0]}"
    return None


# -- running both --------------------------------------------------------------------------


@dataclass(frozen=True)
class SquawkWarning:
    file: str  # the file's name
    line: int  # 1-based first line of the statement squawk's line falls in
    rule: str
    message: str
    statement: ScriptStatement


def run_squawk(binary: str, paths: Iterable[Path], pg_major: int) -> list[SquawkWarning]:
    paths = list(paths)
    proc = subprocess.run(
        [binary, "--reporter", "json", f"--pg-version={pg_major}.0", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, 1) and proc.stdout.strip(), f"squawk failed ({proc.returncode}): {proc.stderr}"
    statements = {path.name: parse_script(path.read_text()).statements for path in paths}
    warnings = []
    for raw in json.loads(proc.stdout):
        name = Path(raw["file"]).name
        line = raw["line"] + 1  # squawk counts lines from 0
        before = [s for s in statements[name] if s.line <= line]
        statement = before[-1] if before else statements[name][0]
        warnings.append(SquawkWarning(name, statement.line, raw["rule_name"], raw["message"], statement))
    return warnings


@pytest.fixture(scope="module")
def squawk() -> str:
    binary = squawk_binary()
    # The test extra installs it: without it, issue 15's side-by-side check would pass unseen.
    assert binary is not None, "squawk is not installed: pip install -e '.[test]' (or squawk-cli)"
    return binary


# -- the tests -----------------------------------------------------------------------------


def test_the_squawk_rules_the_reference_names_are_squawk_rules(squawk: str, tmp_path: Path) -> None:
    mapped, listed = set(squawk_mapping()), not_poststack_rules()
    assert mapped and listed
    assert not mapped & listed, f"both mapped to a rule and listed as not poststack's: {sorted(mapped & listed)}"
    empty = tmp_path / "empty.sql"
    empty.write_text("SELECT 1;\n")
    # squawk refuses an unknown rule name in --exclude: a typo in a docstring shows here.
    proc = subprocess.run(
        [squawk, f"--exclude={','.join(sorted(mapped | listed))}", str(empty)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_every_explained_difference_is_said_in_the_reference() -> None:
    paragraphs = [squawk_paragraph(found.doc) for found in load_rules().values()]
    for reason in REASONS:
        assert any(reason in paragraph for paragraph in paragraphs), f"no rule's **squawk:** paragraph says {reason!r}"


def test_every_squawk_warning_is_found_by_db_lint_or_explained(squawk: str, database_url: str, tmp_path: Path) -> None:
    corpus = squawk_corpus(SEED)
    directory = tmp_path / "migrations"
    paths = corpus.write(directory)
    where = ("--database-url", database_url, "--migrations-dir", str(directory))
    migrated = run_cli("db", "migrate", "--target", corpus.last_applied, *where)
    assert migrated.exit_code == 0, migrated.output
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("ANALYZE")
        cur.execute("SELECT current_setting('server_version_num')::int / 10000")
        pg_major = cur.fetchone()[0]  # type: ignore[index]
    conn.close()

    linted = run_cli("db", "lint", "--format", "json", "--severity", "info", *where)
    report = json.loads(linted.stdout)
    assert report["versions"] == [f.version for f in corpus.pending]
    assert report["measured"]["unavailable"] is None and report["measured"]["stopped_at"] is None, report["measured"]
    assert {f["severity"] for f in report["findings"]} - {"info"}, "no rows on the target: every finding is info"

    # squawk's require-lock-timeout cannot know that db migrate sets a lock_timeout for each
    # migration; PS201 fires only when the project switches that off (ddl_lock_timeout = 0).
    # The same lint with it off shows what PS201 then finds.
    env: dict[str, str | None] = {SETTING_VARIABLES["ddl_lock_timeout"]: "0"}
    off = run_cli("db", "lint", "--format", "json", "--severity", "info", *where, env=env)
    without_timeout = json.loads(off.stdout)
    assert any(f["code"] == "PS201" for f in without_timeout["findings"]), "ddl_lock_timeout = 0 did not reach db lint"

    pending = paths[corpus.applied :]
    warnings = run_squawk(squawk, pending, pg_major)
    comparison = compare(warnings, report, without_timeout["findings"])
    print(comparison.summary())
    assert not comparison.unknown, (
        "squawk rules neither named in a rule's **squawk:** paragraph nor listed in lint/rules/__init__.py:\n"
        + "\n".join(
            f"  {rule}: {len(found)}, as {found[0].file}:{found[0].line}: {found[0].message}"
            for rule, found in sorted(comparison.unknown.items())
        )
    )
    assert not comparison.unexplained, "squawk warnings db lint neither found nor explains:\n" + "\n".join(
        f"  {w.file}:{w.line} {w.rule}: {w.message}\n    {' '.join(w.statement.sql.split())[:140]}"
        for w in comparison.unexplained
    )
    assert comparison.matched, "no squawk warning matched: the corpus lost its hazards"


@dataclass
class Comparison:
    mapping: dict[str, frozenset[str]]
    matched: list[SquawkWarning]
    explained: dict[str, list[SquawkWarning]]  # reason -> warnings
    unexplained: list[SquawkWarning]
    not_poststack: Counter[str]
    unknown: dict[str, list[SquawkWarning]]  # squawk rule -> its warnings
    poststack_only: dict[str, list[dict[str, Any]]]  # code -> findings
    total: int

    def summary(self) -> str:
        lines = [f"\nsquawk warnings: {self.total}"]
        mapped = len(self.matched) + sum(map(len, self.explained.values())) + len(self.unexplained)
        lines.append(
            f"  of rules poststack has: {mapped}: matched {len(self.matched)}, "
            f"explained {sum(map(len, self.explained.values()))}, unexplained {len(self.unexplained)}"
        )
        by_rule: dict[str, Counter[str]] = defaultdict(Counter)
        for warning in self.matched:
            by_rule[warning.rule]["matched"] += 1
        for reason, found in self.explained.items():
            for warning in found:
                by_rule[warning.rule][reason] += 1
        for warning in self.unexplained:
            by_rule[warning.rule]["UNEXPLAINED"] += 1
        for rule, counts in sorted(by_rule.items()):
            codes = "/".join(sorted(self.mapping[rule]))
            lines.append(f"    {rule} ({codes}): " + ", ".join(f"{k} {n}" for k, n in counts.most_common()))
        for reason, found in sorted(self.explained.items()):
            lines.append(f"  {reason}: {len(found)}, as")
            lines += [f"      {w.file}:{w.line} {w.rule}: {' '.join(w.statement.sql.split())[:90]}" for w in found[:4]]
        unexercised = sorted(set(self.mapping) - set(by_rule))
        lines.append(f"  mapped squawk rules this corpus never triggers: {', '.join(unexercised) or 'none'}")
        lines.append(f"  not a lock or rewrite rule: {sum(self.not_poststack.values())}")
        lines += [f"    {rule}: {n}" for rule, n in self.not_poststack.most_common()]
        if self.unknown:
            lines.append(f"  unknown to the reference: {sum(map(len, self.unknown.values()))}")
            lines += [f"    {rule}: {len(found)}" for rule, found in sorted(self.unknown.items())]
        only = sum(map(len, self.poststack_only.values()))
        lines.append(f"db lint findings squawk has no warning for (its mapped rules, same statement): {only}")
        for code, findings in sorted(self.poststack_only.items()):
            severities = Counter(f["severity"] for f in findings)
            lines.append(f"    {code}: {len(findings)} ({', '.join(f'{n} {s}' for s, n in severities.most_common())})")
            for finding in findings[:3]:
                lines.append(
                    f"      {Path(finding['file']).name}:{finding['line']} {' '.join(finding['statement'].split())[:90]}"
                )
        return "\n".join(lines)


def compare(
    warnings: list[SquawkWarning], report: dict[str, Any], without_timeout_findings: list[dict[str, Any]]
) -> Comparison:
    """Each squawk warning matched to db lint's findings at its statement, or explained."""
    mapping, listed = squawk_mapping(), not_poststack_rules()
    paragraphs = {code: squawk_paragraph(found.doc) for code, found in load_rules().items()}
    findings: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for finding in report["findings"]:
        findings[(Path(finding["file"]).name, finding["line"])].append(finding)
    facts = {(f["version"], f["line"]): f for f in report["measured"]["statements"]}
    without_timeout: dict[tuple[str, int], set[str]] = defaultdict(set)
    for finding in without_timeout_findings:
        without_timeout[(Path(finding["file"]).name, finding["line"])].add(finding["code"])
    comparison = Comparison(
        mapping, [], defaultdict(list), [], Counter(), defaultdict(list), defaultdict(list), len(warnings)
    )
    answered: set[tuple[str, int, str]] = set()  # (file, line, code) squawk also warned of
    for warning in warnings:
        codes = mapping.get(warning.rule)
        if codes is None:
            if warning.rule in listed:
                comparison.not_poststack[warning.rule] += 1
            else:
                comparison.unknown[warning.rule].append(warning)
            continue
        here = {f["code"] for f in findings[(warning.file, warning.line)]}
        answered |= {(warning.file, warning.line, code) for code in codes}
        if here & codes:
            comparison.matched.append(warning)
            continue
        measured = Measured(
            facts.get((warning.file.split("_", 1)[0], warning.line)),
            statement_table(warning.statement.sql),
            frozenset(without_timeout[(warning.file, warning.line)]),
        )
        reason = next(
            (
                reason
                for reason, holds in REASONS.items()
                if any(reason in paragraphs[code] for code in codes) and holds(measured)
            ),
            None,
        )
        if reason is None:
            comparison.unexplained.append(warning)
        else:
            comparison.explained[reason].append(warning)
    for (file, line), found in findings.items():
        for finding in found:
            if (file, line, finding["code"]) not in answered:
                comparison.poststack_only[finding["code"]].append(finding)
    return comparison
