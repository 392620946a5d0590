"""A statement fails when the history is run in the shadow: it will fail here too.

**Measured.** The shadow runs the history as ``db migrate`` would, and PostgreSQL refused
this statement there: a table or column that is not there, a type change a view depends on,
a constraint that rows the history itself inserts break. The same history on this database
meets the same refusal, and the deploy stops at this migration (its transaction rolled back:
nothing half done, but nothing after it runs either). Measuring stops here too: the
migrations after it are linted from the SQL alone.

The shadow is a copy of the history, not of this database: where the shadow lacks what the
target has (an extension's files on another server, a role, a privilege), the refusal may be
the shadow's alone. Those (a privilege error; a system error or an extension that is not
available, unless the shadow is on the target's own server) are MEDIUM; every other refusal
is HIGH. Nor does the shadow have this database's rows: a statement only they would break (a
unique index over duplicates, ``SET NOT NULL`` over NULLs) passes there, and this rule cannot
say it (PS207 says it of a required column added to a table with rows).

**Safer:** fix the statement so it runs on the history as it is (``poststack db lint
VERSION`` again says whether it does); if only the shadow lacks something, name a shadow
server like the target with ``--shadow-url``.

**squawk:** none: squawk reads each file alone and cannot know what the history before it made.
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.diagnosis.lint.base import Hit, LintSeverity, StatementContext, rule

# What a shadow can lack that the target has: files of its server (58xxx: an extension not
# installed there), unless it is the target's own server; a privilege (42501).
_SERVER_FILES = "58"
_PRIVILEGE = "42501"
# CREATE EXTENSION of one whose files the server lacks: 58P01 before PostgreSQL 15, then
# 0A000 ('extension "x" is not available'), a code other refusals share (a type change under
# a view): counted only for CREATE EXTENSION.
_UNAVAILABLE_EXTENSION = "0A000"
_FIX = "fix the statement so it runs on the history as it is"
_SHADOW = "if the target has what the shadow lacks, name a shadow server like it (--shadow-url)"


@rule("PS106", "fails-in-shadow")
def fails_in_shadow(context: StatementContext) -> Iterator[Hit]:
    failure = context.failure
    if failure is None:
        return
    sqlstate = failure.sqlstate or ""
    server_files = sqlstate.startswith(_SERVER_FILES) or (
        context.kind == "CreateExtensionStmt" and sqlstate == _UNAVAILABLE_EXTENSION
    )
    the_shadows = sqlstate == _PRIVILEGE or (server_files and not failure.on_targets_server)
    yield Hit(
        message=f"fails when the history is run in the shadow: {failure.error}",
        alternative=_SHADOW if the_shadows else _FIX,
        severity=LintSeverity.MEDIUM if the_shadows else LintSeverity.HIGH,
        basis="measured",
    )
