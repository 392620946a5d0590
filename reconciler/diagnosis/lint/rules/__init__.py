"""One module per lint rule. PS1xx are measured in the shadow; PS2xx read the SQL alone.

**squawk rules poststack does not have.** Each rule's **squawk:** paragraph names the squawk
rules it answers, and says when poststack stays silent where squawk warns. Each squawk rule
below is not a lock or rewrite rule: poststack does not have it.

- ``prefer-robust-stmts``: ``IF NOT EXISTS`` so a failed file can run again; poststack runs
  each migration in one transaction, and records one that ran outside a transaction and
  failed.
- ``require-statement-timeout``: a cap on how long any statement runs; poststack measures
  what a statement locks, rewrites and reads, and sizes it on the target instead.
- ``prefer-bigint-over-int``, ``prefer-bigint-over-smallint``, ``prefer-identity``,
  ``prefer-text-field``, ``ban-char-field``, ``prefer-timestamp-tz``: which type to choose
  when a column is made; a later change of type is measured (PS101).
- ``require-enum-value-ordering``: where a new enum label sorts.
- ``ban-drop-view``, ``ban-drop-constraint``, ``ban-drop-not-null``, ``ban-drop-default``:
  what existing clients may rely on, not what the statement locks.

tests/lint/test_squawk_side_by_side.py runs squawk and ``db lint`` over the same migrations
and reads both lists from here: a squawk warning must be found by one of the rules that name
its squawk rule, or be one of the differences their paragraphs explain, or be listed above.
"""
