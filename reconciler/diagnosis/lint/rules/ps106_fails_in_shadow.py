"""A statement fails when the history is run in the shadow: it will fail here too.

**Measured.** The shadow runs the history as ``db migrate`` would, and PostgreSQL refused
this statement there: a table or column that is not there, a type change a view depends on,
a constraint the existing rows break. The same history on this database meets the same
refusal, and the deploy stops at this migration (its transaction rolled back: nothing half
done, but nothing after it runs either). Measuring stops here too: the migrations after it
are linted from the SQL alone.

The shadow is a copy of the history, not of this database: where the shadow lacks what the
target has (an extension's files on another server, a role, a privilege), the refusal may be
the shadow's alone. Those (PostgreSQL's system and privilege errors) are MEDIUM; every other
refusal is HIGH.

**Safer:** fix the statement so it runs on the history as it is (``poststack db lint
VERSION`` again says whether it does); if only the shadow lacks something, name a shadow
server like the target with ``--shadow-url``.

**squawk:** none: squawk reads each file alone and cannot know what the history before it made.
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.diagnosis.lint.base import Hit, LintSeverity, StatementContext, rule

# What a shadow can lack that the target has: files of the server (58xxx: an extension not
# installed there), a privilege (42501), an object of the server's (42704 for a role).
_THE_SHADOWS_OWN = ("58", "42501")
_FIX = "fix the statement so it runs on the history as it is, then run poststack db lint for it again"
_SHADOW = "if the target has what the shadow lacks, name a shadow server like it (--shadow-url) and lint again"


@rule("PS106", "fails-in-shadow")
def fails_in_shadow(context: StatementContext) -> Iterator[Hit]:
    failure = context.failure
    if failure is None:
        return
    the_shadows = any((failure.sqlstate or "").startswith(code) for code in _THE_SHADOWS_OWN)
    yield Hit(
        message=f"fails when the history is run in the shadow: {failure.error}",
        alternative=_SHADOW if the_shadows else _FIX,
        severity=LintSeverity.MEDIUM if the_shadows else LintSeverity.HIGH,
        basis="measured",
    )
