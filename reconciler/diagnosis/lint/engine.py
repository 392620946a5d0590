"""Lint: every rule over every statement of the linted migrations. Pure: the measurement and
the live sizes are read before, by the command.

A finding can be switched off for a whole project (``lint_ignore`` in the project file) or
for one file, by a comment anywhere in it that says why:
``-- poststack:lint-ignore PS101 the table is written once a day, at night``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.desired.files import Migration
from reconciler.desired.replay.measure import Measurement
from reconciler.desired.script import builds_concurrently, parse_trees
from reconciler.diagnosis.lint.base import Hit, LintSeverity, Rule, StatementContext, find_rule, load_rules
from reconciler.diagnosis.lint.parts import dropped_range_vars
from reconciler.errors import MigrationFileError, UsageError
from reconciler.observed.sizes import RelationSize

IGNORE_DIRECTIVE = "poststack:lint-ignore"
_IGNORE = re.compile(r"--\s*poststack:lint-ignore\b(?P<rest>.*)$", re.IGNORECASE)
# A lock_timeout of zero, as SET writes it: 0, '0', '0ms', '0s'... (no timeout at all).
_ZERO_DURATION = re.compile(r"^\s*0+(\.0*)?\s*[a-z]*\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    code: str
    name: str
    version: str
    path: str
    line: int
    statement: str  # the statement, as written
    hit: Hit
    size: RelationSize | None  # the live size of hit.relation on the target

    @property
    def severity(self) -> LintSeverity:
        return self.hit.severity

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Ignored:
    finding: Finding
    by: str  # "poststack.toml" or the file:line of the comment
    reason: str


@dataclass(frozen=True)
class LintFindings:
    findings: tuple[Finding, ...]  # by version, line, then severity
    ignored: tuple[Ignored, ...]
    statements: int  # statements linted


@dataclass(frozen=True)
class FileIgnore:
    codes: frozenset[str]
    where: str
    reason: str


def file_ignores(migration: Migration) -> tuple[FileIgnore, ...]:
    """The lint-ignore comments of a migration file; a usage error naming file:line for one
    without a reason or with an unknown rule."""
    found = []
    for number, text in enumerate(migration.file.text.splitlines(), start=1):
        match = _IGNORE.search(text)
        if match is None:
            continue
        where = f"{migration.path}:{number}"
        words = match["rest"].strip()
        codes_text, _, reason = words.partition(" ")
        while codes_text.endswith(",") and reason.strip():  # "PS103, PS105 why": the list goes on
            more, _, reason = reason.strip().partition(" ")
            codes_text += more
        if not codes_text:
            raise UsageError(f"{where}: {IGNORE_DIRECTIVE} names no rule: write -- {IGNORE_DIRECTIVE} CODE reason")
        codes = frozenset(_code(code, where) for code in codes_text.split(",") if code)
        if not reason.strip():
            raise UsageError(
                f"{where}: {IGNORE_DIRECTIVE} {codes_text} says no reason: write why after the code, for the "
                "next person who reads it"
            )
        found.append(FileIgnore(codes, where, reason.strip()))
    return tuple(found)


def _code(text: str, where: str) -> str:
    try:
        return find_rule(text).code
    except UsageError as e:
        raise UsageError(f"{where}: {e.summary}") from None


def project_ignores(codes: Sequence[str], source: str) -> dict[str, str]:
    """lint_ignore from the project file: rule code -> where it was switched off."""
    result = {}
    for text in codes:
        try:
            result[find_rule(text).code] = source
        except UsageError as e:
            raise UsageError(f"{source} lint_ignore: {e.summary}") from None
    return result


def contexts(
    migrations: Sequence[Migration],
    measurement: Measurement | None,
    search_path: tuple[str, ...],
    lock_timeout: float,
    sizes: Mapping[str, RelationSize] | None = None,
) -> list[StatementContext]:
    """A context per statement of ``migrations``. Without ``sizes`` (the first pass), the
    relations named are resolved for the sizes to be read."""
    sizes = dict(sizes or {})
    on_target = frozenset(name for name, size in sizes.items() if size.exists)
    result = []
    for migration in migrations:
        script = migration.file.script
        measured = measurement is not None and measurement.measured(migration.version)
        existing = measurement.existing[migration.version] if measured and measurement else on_target
        created: set[str] = set()
        sets_timeout = False
        # poststack's, until the file turns it off; none for a concurrent index build's file
        in_force = 0.0 if builds_concurrently(script) else lock_timeout
        path = search_path  # the file's own SET search_path changes it for the statements after
        for index, statement in enumerate(script.statements):
            trees = parse_trees(statement.sql)  # it parsed within its file: alone, it parses too
            if not trees:
                raise MigrationFileError(f"{migration.path}:{statement.line}: the statement does not parse alone")
            kind, node = next(iter(trees[0].items()))
            facts = measurement.of(migration.version, index) if measured and measurement else None
            context = StatementContext(
                version=migration.version,
                path=str(migration.path),
                line=statement.line,
                sql=statement.sql,
                kind=kind,
                node=node,
                facts=facts,
                sizes=sizes,
                existing=existing,
                created_here=frozenset(created),
                search_path=path,
                file_sets_lock_timeout=sets_timeout,
                lock_timeout=in_force,
                in_transaction=script.transactional,
                failure=measurement.failure_at(migration.version, index) if measurement else None,
            )
            result.append(context)
            created |= _made(context)
            sets_timeout = _lock_timeout_after(context, sets_timeout)
            if _turns_lock_timeout_off(context):
                in_force = 0.0  # it runs after poststack's SET LOCAL, and wins
            path = _search_path_after(context, path, search_path)
    return result


def _turns_lock_timeout_off(context: StatementContext) -> bool:
    """A SET of lock_timeout to zero, to DEFAULT, RESET or RESET ALL (a pg_dump script starts
    with SET lock_timeout = 0): poststack's ddl_lock_timeout no longer holds after it."""
    if context.kind != "VariableSetStmt":
        return False
    if context.node.get("kind") == "VAR_RESET_ALL":
        return True
    return context.node.get("name") == "lock_timeout" and not _lock_timeout_after(context, False)


def _search_path_after(context: StatementContext, before: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
    """The search_path unqualified names resolve through after this statement: a file that
    SETs it names its tables there (the shadow measured them there too); RESET or DEFAULT
    goes back to the session's. "$user" is left out: a schema named for the role is rare."""
    if context.kind != "VariableSetStmt" or context.node.get("name") != "search_path":
        return before
    if context.node.get("kind") != "VAR_SET_VALUE":
        return default
    names = [str(arg.get("A_Const", {}).get("sval", {}).get("sval", "")) for arg in context.node.get("args") or []]
    return tuple(name for name in names if name and name != "$user") or before


def _lock_timeout_after(context: StatementContext, before: bool) -> bool:
    """Whether the file has a lock_timeout in force after this statement: SET to anything but
    zero. SET to zero, to DEFAULT or RESET leaves none poststack can vouch for."""
    if context.kind != "VariableSetStmt" or context.node.get("name") != "lock_timeout":
        return before
    if context.node.get("kind") != "VAR_SET_VALUE":
        return False
    values = [arg.get("A_Const", {}) for arg in context.node.get("args") or []]
    if not values:
        return False
    value = values[0]
    if "ival" in value:
        return bool(value["ival"].get("ival", 0))
    if "fval" in value:
        return float(value["fval"].get("fval", "0")) != 0
    return not _ZERO_DURATION.match(str(value.get("sval", {}).get("sval", "0")))


def _made(context: StatementContext) -> set[str]:
    """The relations a statement makes: later statements of its migration lock nobody out of them."""
    if context.kind in ("CreateStmt", "CreateTableAsStmt", "ViewStmt"):
        relation = context.node.get("relation") or context.node.get("view") or context.node.get("into", {}).get("rel")
        return {context.resolve(relation)} if relation else set()
    return set()


def named_relations(statement_contexts: Sequence[StatementContext]) -> set[str]:
    """Every relation the statements lock (measured) or name (parsed): whose sizes to read."""
    names: set[str] = set()
    for context in statement_contexts:
        if context.facts is not None:
            names |= {lock.relation for lock in context.facts.locks}
        for node in [*_range_vars(context.node), *dropped_range_vars(context)]:
            names |= _candidates(context, node)
    return names


def _candidates(context: StatementContext, range_var: dict[str, Any]) -> set[str]:
    """Where a name may be: as resolved so far, and, unqualified, in each schema of the
    search_path (the sizes read say which exists, for the next pass to resolve it there)."""
    found = {context.resolve(range_var)}
    if not range_var.get("schemaname"):
        found |= {f"{schema}.{range_var['relname']}" for schema in context.search_path}
    return found


def _range_vars(node: object) -> Iterator[dict[str, Any]]:
    """Every RangeVar of a parse tree, wrapped ({"RangeVar": ...}) or bare (a statement's
    "relation", a foreign key's "pktable")."""
    if isinstance(node, dict):
        if isinstance(node.get("relname"), str):
            yield node
        for value in node.values():
            yield from _range_vars(value)
    elif isinstance(node, list):
        for item in node:
            yield from _range_vars(item)


def lint(
    statement_contexts: Sequence[StatementContext],
    ignores: Mapping[str, tuple[FileIgnore, ...]],
    project: Mapping[str, str],
    rules: Mapping[str, Rule] | None = None,
) -> LintFindings:
    """Run every rule over every statement. ``ignores``: per version, its file's comments;
    ``project``: codes the project switched off, and where."""
    rules = rules if rules is not None else load_rules()
    findings: list[tuple[int, Finding]] = []
    ignored: list[Ignored] = []
    for index, context in enumerate(statement_contexts):
        for code, found_rule in rules.items():
            for hit in found_rule.check(context):
                finding = Finding(
                    code,
                    found_rule.name,
                    context.version,
                    context.path,
                    context.line,
                    context.sql,
                    hit,
                    context.size(hit.relation) if hit.relation else None,
                )
                if code in project:
                    ignored.append(Ignored(finding, project[code], "switched off for the project"))
                    continue
                by_file = next((i for i in ignores.get(context.version, ()) if code in i.codes), None)
                if by_file is not None:
                    ignored.append(Ignored(finding, by_file.where, by_file.reason))
                    continue
                findings.append((index, finding))
    findings.sort(key=lambda pair: (pair[0], -pair[1].severity, pair[1].code))
    return LintFindings(tuple(f for _, f in findings), tuple(ignored), len(statement_contexts))
