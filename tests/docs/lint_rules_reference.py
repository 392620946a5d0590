"""docs/lint-rules.md: every lint rule's documentation, from its module's docstring.

    python -m tests.docs.lint_rules_reference        # rewrite docs/lint-rules.md from the rules

tests/docs/test_lint_rules_reference.py fails when the file and the rules disagree, so the
reference cannot drift from the code: a rule's docstring is its only documentation.
"""

from __future__ import annotations

import re
from pathlib import Path

from reconciler.diagnosis.lint.base import (
    BLOCKS_READS_BYTES,
    BLOCKS_WRITES_BYTES,
    EMPTY_BYTES,
    GB,
    MB,
    Rule,
    load_rules,
)
from reconciler.diagnosis.lint.engine import IGNORE_DIRECTIVE

DOC = Path(__file__).resolve().parents[2] / "docs" / "lint-rules.md"

INTRO = f"""# Lint rules

`poststack db lint` runs every rule below over each statement of the pending migrations
(`--all`: the whole history; `VERSION…`: the migrations named). Generated from the rules'
docstrings by `python -m tests.docs.lint_rules_reference`;
`tests/docs/test_lint_rules_reference.py` fails when this page and the rules disagree. Each
rule's pass/fail cases are in `tests/lint/cases/<CODE>.yaml`, run on a real PostgreSQL.

Each finding gives the rule's code and name, the file and line, the statement, the lock it
takes and on which relation, whether it rewrites, the relation's live size on the database
linted, and a safer way to do the same. **Measured** rules (PS1xx) read what the statement
did in a shadow database: the history runs there and each pending statement is watched
before it commits (the locks its backend holds, a relation given a new file, a relation it
read through). **Static** rules (PS2xx) cover what a shadow cannot show: what depends on the
run's settings, on the target's rows (the shadow's copies are empty) or on the code deployed
beside the migration. With `--no-replay`, or when no shadow can be had, only the SQL and the
live sizes are read.

## Switching a rule off

For the whole project, list codes or names in `lint_ignore` in the project file (or
`POSTSTACK_LINT_IGNORE`, comma-separated; see [configuration](configuration.md)):

```toml
# poststack.toml
lint_ignore = ["PS205", "drop-table"]
```

For one file, a comment anywhere in it names the rules (codes or names, comma-separated)
and says why, for the next person who reads it:

```sql
-- {IGNORE_DIRECTIVE} PS204 no code has read legacy_flag since release 4.2
ALTER TABLE users DROP COLUMN legacy_flag;
```

A comment that names no rule, gives no reason or names a rule that does not exist is an
error naming its file and line, and so is an unknown rule in `lint_ignore` (with the closest
name). A finding switched off is still reported as such (`ignored` in `--format json`, with
who switched it off and why); it does not fail the command.

## Severity

`--severity` (default `low`) sets the lowest severity that makes `db lint` exit 1. A rule
whose harm grows with the time a lock is held while a whole table is rewritten or read
sizes it by the table's live size on the database linted (table, indexes and TOAST):

"""

RULE_TABLE_HEAD = """
## The rules

| code | name | kind | what it finds |
|---|---|---|---|
"""


def _bytes(count: int) -> str:
    return f"{count // GB} GB" if count >= GB else f"{count // MB} MB"


def severity_table() -> str:
    rows = [
        "| the lock held | info | low | medium | high |",
        "|---|---|---|---|---|",
    ]
    for label, (low, medium) in (
        ("ACCESS EXCLUSIVE (nobody reads or writes)", BLOCKS_READS_BYTES),
        ("SHARE and stronger (reads go on, nobody writes)", BLOCKS_WRITES_BYTES),
    ):
        rows.append(
            f"| {label} | no rows (and under {_bytes(EMPTY_BYTES)}) | under {_bytes(low)} | under {_bytes(medium)} "
            f"| {_bytes(medium)} or more |"
        )
    rows.append("")
    rows.append(
        "A table a pending migration makes is empty when the lock is taken: info. Rules whose harm does\n"
        "not grow with the size (code that breaks, a migration that fails) say below what their\n"
        "severity is."
    )
    return "\n".join(rows) + "\n"


def markdown(docstring: str) -> str:
    """A rule docstring (reStructuredText-ish: ``code``) as Markdown (`code`)."""
    return re.sub(r"``(.+?)``", r"`\1`", docstring, flags=re.DOTALL)


def _anchor(found: Rule) -> str:
    return f"{found.code}-{found.name}".lower()


def rule_section(found: Rule) -> str:
    body = found.doc.strip().split("\n", 1)[1].strip() if "\n" in found.doc.strip() else ""
    kind = "measured" if found.measured else "static"
    return f"## {found.code} {found.name}\n\n*{kind}* · **{markdown(found.summary)}**\n\n{markdown(body)}\n"


def squawk_section() -> str:
    """The rules package's docstring past its first line: the squawk rules poststack does not
    have, and why (tests/lint/test_squawk_side_by_side.py reads the same list)."""
    from reconciler.diagnosis.lint import rules

    doc = (rules.__doc__ or "").strip()
    body = doc.split("\n", 1)[1].strip() if "\n" in doc else ""
    return f"## Side by side with squawk\n\n{markdown(body)}\n" if body else ""


def render() -> str:
    rules = load_rules()
    table = "".join(
        f"| [{r.code}](#{_anchor(r)}) | `{r.name}` | {'measured' if r.measured else 'static'} | "
        f"{markdown(r.summary)} |\n"
        for r in rules.values()
    )
    sections = "\n".join(rule_section(r) for r in rules.values())
    return f"{INTRO}{severity_table()}{RULE_TABLE_HEAD}{table}\n{sections}\n{squawk_section()}"


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC}")
