"""Operations beyond tracking rows: back up, run parameterized SQL, assert, tell a person."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.config import TrackingLocation
from reconciler.errors import UsageError
from reconciler.remediation.actions.base import Action, BuildContext, RunContext, StepError, register
from reconciler.remediation.plan import PlannedStep
from reconciler.statements import Statement, quote_ident


@register
class Backup(Action):
    name = "backup"
    summary = "Dump the database with pg_dump (matching the server's major version) before changing it"
    optional = ("output", "schema_only", "exclude_tracking")

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        directory = ctx.backups_dir or Path("backups")
        kind = "schema" if args.get("schema_only") else "full"
        output = Path(args["output"]) if args.get("output") else directory / f"poststack-{kind}-{stamp}.sql"
        extra = dump_args(ctx.location, bool(args.get("schema_only")), bool(args.get("exclude_tracking")))
        return PlannedStep(
            self.name,
            f"back up the database ({'schema only' if args.get('schema_only') else 'schema and data'}) to {output}",
            {
                "output": str(output),
                "schema_only": bool(args.get("schema_only")),
                "exclude_tracking": bool(args.get("exclude_tracking")),
            },
            command=("pg_dump", "--format=plain", *extra, f"--file={output}"),
            transactional=False,
            no_transaction_reason="pg_dump runs in its own session",
        )

    def run_body(self, run: RunContext, step: PlannedStep, before: Callable[[Statement], None]) -> None:
        from reconciler.errors import PoststackError
        from reconciler.remediation import backup as backups

        session = run.session
        try:
            tool = backups.find_client("pg_dump", session.server_info().major)
            extra = dump_args(run.location, step.args["schema_only"], step.args["exclude_tracking"])
            backups.run_pg_dump(session.url, tool, Path(step.args["output"]), extra)
        except PoststackError as e:
            raise StepError(f"backup failed: {e.summary}") from e


def dump_args(location: TrackingLocation, schema_only: bool, exclude_tracking: bool) -> list[str]:
    extra = ["--schema-only"] if schema_only else []
    if exclude_tracking:
        extra += [f"--exclude-table={quote_ident(location.schema)}.{quote_ident(t)}" for t in location.tables]
    return extra


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@register
class Sql(Action):
    name = "sql"
    summary = "Run fixed SQL with values as bound parameters and names as quoted identifiers"
    required = ("sql",)
    optional = ("params", "identifiers", "description", "transactional")
    static_args = ("sql",)

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        text = args["sql"]
        if not isinstance(text, str) or not text.strip():
            raise UsageError("action sql: 'sql' must be SQL text")
        identifiers = args.get("identifiers") or {}
        params = args.get("params") or {}
        if not isinstance(identifiers, dict) or not isinstance(params, dict):
            raise UsageError("action sql: 'params' and 'identifiers' must be mappings")
        names = set(_PLACEHOLDER.findall(text))
        missing = names - set(identifiers)
        if missing:
            raise UsageError(f"action sql: no identifier given for {{{sorted(missing)[0]}}}")
        # Names become quoted identifiers; values stay bound parameters. Nothing is spliced.
        rendered = _PLACEHOLDER.sub(lambda m: quote_ident(str(identifiers[m.group(1)])), text)
        statement = Statement(rendered, dict(params) if params else None)
        # Some statements (DROP INDEX CONCURRENTLY) PostgreSQL refuses in a transaction.
        transactional = args.get("transactional", True) not in (False, "false", "False")
        return PlannedStep(
            self.name,
            args.get("description") or "run SQL",
            dict(args),
            (statement,),
            transactional=transactional,
            no_transaction_reason=None if transactional else "the playbook runs it outside a transaction",
        )


@register
class Assert(Action):
    name = "assert"
    summary = "Re-diagnose and require issue types gone, or require a SQL predicate to be true"
    optional = ("gone", "sql", "params", "description", "except_evidence", "versions")
    static_args = ("sql",)

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        gone = args.get("gone") or []
        if not gone and not args.get("sql"):
            raise UsageError("action assert: give 'gone' (issue types) or 'sql' (a predicate)")
        if isinstance(gone, str):
            gone = [gone]
        from reconciler.diagnosis.issues import IssueType

        gone = [IssueType.parse(t).value for t in gone]
        statements = ()
        if args.get("sql"):
            statements = (Statement(args["sql"], args.get("params") or None),)
        reason = args.get("description") or (
            f"check that no {', '.join(gone)} issue is left" if gone else "check that the predicate holds"
        )
        unless = args.get("except_evidence") or []
        if isinstance(unless, str):
            unless = [unless]
        kept = {"gone": gone, **({"sql": args["sql"]} if args.get("sql") else {})}
        if unless:
            kept["except_evidence"] = list(unless)
        versions = args.get("versions") or []
        if versions:  # only these migrations' issues count (db recover VERSION...)
            kept["versions"] = [str(v) for v in ([versions] if isinstance(versions, str) else versions)]
            reason = args.get("description") or f"{reason} for {', '.join(kept['versions'])}"
        return PlannedStep(self.name, reason, kept, statements)

    def run_body(self, run: RunContext, step: PlannedStep, before: Callable[[Statement], None]) -> None:
        for statement in step.statements:
            before(statement)
            row = run.session.query_one(statement.sql, statement.params)
            if not row or row[0] is not True:
                raise StepError(f"assertion failed: {statement.sql.strip()} returned {row[0] if row else 'no row'}")
        if step.args.get("gone") and run.migrations_dir is not None:
            from reconciler.diagnosis.checks import Facts, run_checks
            from reconciler.diagnosis.issues import IssueType
            from reconciler.observed.state import read_state

            desired, observed = read_state(run.session, run.migrations_dir, run.location, run.layout, run.shadow)
            left = run_checks(Facts(desired, observed), [IssueType(t) for t in step.args["gone"]])
            # Migrations shown applied only by their place in the history are left for a
            # person unless the plan trusts that (recover --trust-order).
            unless = set(step.args.get("except_evidence") or ())
            left = [i for i in left if i.details.get("evidence") not in unless]
            if step.args.get("versions"):
                left = [i for i in left if i.version in step.args["versions"]]
            if left:
                shown = "; ".join(i.message for i in left[:3])
                raise StepError(f"assertion failed: {len(left)} issue(s) left: {shown}")


@register
class Manual(Action):
    name = "manual"
    summary = "Tell a person exactly what to do: poststack cannot do it safely"
    required = ("instructions",)
    optional = ("issue",)

    def build(self, ctx: BuildContext, args: dict[str, Any]) -> PlannedStep:
        version = None
        issue = args.get("issue")
        if isinstance(issue, dict):
            version = issue.get("version")
        return PlannedStep(self.name, f"MANUAL: {args['instructions']}", dict(args), version=version)

    def run_body(self, run: RunContext, step: PlannedStep, before: Callable[[Statement], None]) -> None:
        return None  # a person does it; the recap lists it
