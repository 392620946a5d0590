"""The lint engine without a database: switching rules off (per file, per project) and
refusing what cannot be meant, and the rules run over parsed statements and given sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.desired.files import Migration
from reconciler.desired.layouts import load_migrations
from reconciler.desired.replay.measure import StatementFailure
from reconciler.desired.script import parse_trees
from reconciler.diagnosis.lint.base import StatementContext, load_rules
from reconciler.diagnosis.lint.engine import contexts, file_ignores, lint, project_ignores
from reconciler.errors import UsageError
from reconciler.observed.sizes import RelationSize
from tests.conftest import write


def _migrations(directory: Path, files: dict[str, str]) -> tuple[Migration, ...]:
    for name, sql in files.items():
        write(directory, name, sql)
    return load_migrations(directory).migrations


def _one(directory: Path, sql: str) -> Migration:
    return _migrations(directory, {"002_change.sql": sql})[0]


# --- -- poststack:lint-ignore CODE reason ------------------------------------------------


def test_a_file_ignore_names_its_rules_by_code_or_name_with_its_reason(tmp_path: Path) -> None:
    migration = _one(
        tmp_path,
        "ALTER TABLE t DROP COLUMN c;\n-- poststack:lint-ignore PS204,rename  nobody reads c since 4.2\n",
    )
    (found,) = file_ignores(migration)
    assert found.codes == {"PS204", "PS205"}
    assert found.reason == "nobody reads c since 4.2"
    assert found.where.endswith("002_change.sql:2")


def test_a_file_ignore_list_may_have_a_space_after_each_comma(tmp_path: Path) -> None:
    migration = _one(tmp_path, "-- poststack:lint-ignore PS103, PS105,  rename accounts is tiny\nSELECT 1;\n")
    (found,) = file_ignores(migration)
    assert found.codes == {"PS103", "PS105", "PS205"}
    assert found.reason == "accounts is tiny"
    (tmp_path / "other").mkdir()
    unknown = _one(tmp_path / "other", "-- poststack:lint-ignore PS103, accounts is tiny\nSELECT 1;\n")
    with pytest.raises(UsageError) as error:
        file_ignores(unknown)
    assert "unknown lint rule 'accounts'" in error.value.summary


def test_a_file_ignore_without_a_rule_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    migration = _one(tmp_path, "SELECT 1;\n\n--   poststack:lint-ignore\n")
    with pytest.raises(UsageError) as error:
        file_ignores(migration)
    assert "002_change.sql:3" in error.value.summary
    assert "names no rule" in error.value.summary


def test_a_file_ignore_without_a_reason_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    migration = _one(tmp_path, "-- poststack:lint-ignore PS101\nALTER TABLE t ALTER COLUMN c TYPE bigint;\n")
    with pytest.raises(UsageError) as error:
        file_ignores(migration)
    assert "002_change.sql:1" in error.value.summary
    assert "says no reason" in error.value.summary


def test_a_file_ignore_of_an_unknown_rule_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    migration = _one(tmp_path, "SELECT 1;\n-- poststack:lint-ignore PS2O4 the column is gone from the code\n")
    with pytest.raises(UsageError) as error:
        file_ignores(migration)
    assert "002_change.sql:2" in error.value.summary
    assert "unknown lint rule 'PS2O4'" in error.value.summary
    assert "did you mean 'PS204'?" in error.value.summary


# --- lint_ignore in the project ------------------------------------------------------------


def test_lint_ignore_takes_codes_and_names_in_any_case() -> None:
    assert project_ignores(["ps101", "drop-column", "Rename"], "poststack.toml") == {
        "PS101": "poststack.toml",
        "PS204": "poststack.toml",
        "PS205": "poststack.toml",
    }


@pytest.mark.parametrize(
    ("wrong", "meant"), [("PS2O6", "PS206"), ("drop-colum", "drop-column"), ("vacuum-everything", None)]
)
def test_an_unknown_rule_in_lint_ignore_is_refused_with_a_suggestion(wrong: str, meant: str | None) -> None:
    with pytest.raises(UsageError) as error:
        project_ignores(["PS101", wrong], "poststack.toml")
    summary = error.value.summary
    assert summary.startswith(f"poststack.toml lint_ignore: unknown lint rule {wrong!r}")
    assert (f"did you mean {meant!r}?" in summary) if meant else ("did you mean" not in summary)


# --- the rules over parsed statements, and switching them off ----------------------------

_TABLE = RelationSize("public.users", exists=True, rows=5000, bytes=2 << 20)


def test_a_finding_switched_off_by_the_project_or_its_file_is_kept_aside_with_why(tmp_path: Path) -> None:
    migrations = _migrations(
        tmp_path,
        {
            "002_drop.sql": "-- poststack:lint-ignore PS204 unused since 4.2\nALTER TABLE users DROP COLUMN legacy;\n",
            "003_again.sql": "ALTER TABLE users DROP COLUMN other;\nALTER TABLE users RENAME COLUMN a TO b;\n",
        },
    )
    statements = contexts(migrations, None, ("public",), 5.0, {"public.users": _TABLE})
    ignores = {m.version: file_ignores(m) for m in migrations}
    result = lint(statements, ignores, project_ignores(["rename"], "poststack.toml"))
    assert [(f.code, f.version, f.line) for f in result.findings] == [("PS204", "003", 1)]
    assert sorted((i.finding.code, i.finding.version, i.reason) for i in result.ignored) == [
        ("PS204", "002", "unused since 4.2"),
        ("PS205", "003", "switched off for the project"),
    ]
    assert result.statements == 3


def test_without_a_measurement_the_static_rules_read_the_sql_and_the_sizes(tmp_path: Path) -> None:
    (migration,) = _migrations(
        tmp_path,
        {
            "002_change.sql": "CREATE TABLE teams (id int);\n"
            "ALTER TABLE teams ADD COLUMN token uuid DEFAULT gen_random_uuid();\n"
            "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid(), ADD COLUMN team int NOT NULL;\n"
            "UPDATE users SET team = 1;\n",
        },
    )
    statements = contexts([migration], None, ("public",), 0.0, {"public.users": _TABLE})
    found = [(f.code, f.line, f.severity.label, f.hit.relation) for f in lint(statements, {}, {}).findings]
    assert found == [
        ("PS207", 3, "high", "public.users"),
        ("PS201", 3, "medium", "public.users"),
        ("PS203", 3, "low", "public.users"),
        ("PS202", 4, "low", "public.users"),
    ]


def test_a_lock_timeout_set_in_the_file_counts_until_it_is_set_to_zero_or_reset(tmp_path: Path) -> None:
    (migration,) = _migrations(
        tmp_path,
        {
            "002_change.sql": "ALTER TABLE users ADD COLUMN a int;\n"
            "SET lock_timeout = '2s';\n"
            "ALTER TABLE users ADD COLUMN b int;\n"
            "SET LOCAL lock_timeout TO 0;\n"
            "ALTER TABLE users ADD COLUMN c int;\n"
            "SET lock_timeout = 1500;\n"
            "ALTER TABLE users ADD COLUMN d int;\n"
            "RESET lock_timeout;\n"
            "ALTER TABLE users ADD COLUMN e int;\n"
            "SET lock_timeout = '0ms';\n"
            "ALTER TABLE users ADD COLUMN f int;\n",
        },
    )
    statements = contexts([migration], None, ("public",), 0.0, {"public.users": _TABLE})
    protected = {c.line: c.file_sets_lock_timeout for c in statements if c.kind == "AlterTableStmt"}
    assert protected == {1: False, 3: True, 5: False, 7: True, 9: False, 11: False}
    assert [f.line for f in lint(statements, {}, {}).findings if f.code == "PS201"] == [1, 5, 9, 11]


def test_a_file_that_turns_the_lock_timeout_off_has_none_though_db_migrate_sets_one(tmp_path: Path) -> None:
    """db migrate's SET LOCAL lock_timeout runs first: the file's SET lock_timeout = 0 (as a
    pg_dump script starts) or RESET comes after it and wins, so the statements after wait."""
    (migration,) = _migrations(
        tmp_path,
        {
            "002_change.sql": "SET statement_timeout = 0;\n"
            "SET lock_timeout = 0;\n"
            "ALTER TABLE users ADD COLUMN a int;\n"
            "SET lock_timeout = '2s';\n"
            "ALTER TABLE users ADD COLUMN b int;\n"
            "RESET lock_timeout;\n"
            "ALTER TABLE users ADD COLUMN c int;\n",
        },
    )
    statements = contexts([migration], None, ("public",), 5.0, {"public.users": _TABLE})
    assert [f.line for f in lint(statements, {}, {}).findings if f.code == "PS201"] == [3, 7]
    (tmp_path / "other").mkdir()
    (untouched,) = _migrations(tmp_path / "other", {"002_change.sql": "ALTER TABLE users ADD COLUMN a int;\n"})
    statements = contexts([untouched], None, ("public",), 5.0, {"public.users": _TABLE})
    assert [f for f in lint(statements, {}, {}).findings if f.code == "PS201"] == []


def test_without_a_measurement_ps201_knows_which_statements_stop_readers_or_writers(tmp_path: Path) -> None:
    (migration,) = _migrations(
        tmp_path,
        {
            "002_change.sql": "ALTER TABLE users SET (fillfactor = 70);\n"  # SHARE UPDATE EXCLUSIVE
            "ALTER TABLE users VALIDATE CONSTRAINT users_check;\n"  # SHARE UPDATE EXCLUSIVE
            "ALTER INDEX users_pkey RENAME TO users_key;\n"  # the index, not the table
            "CREATE INDEX CONCURRENTLY users_name ON users (name);\n"
            "LOCK TABLE users IN ACCESS SHARE MODE;\n"
            "ALTER TABLE users RENAME CONSTRAINT users_check TO users_ok;\n"  # ACCESS EXCLUSIVE
            "LOCK TABLE users IN EXCLUSIVE MODE;\n"
            "CREATE TRIGGER t AFTER INSERT ON users FOR EACH ROW EXECUTE FUNCTION f();\n",
        },
    )
    statements = contexts([migration], None, ("public",), 0.0, {"public.users": _TABLE})
    found = [(f.line, f.hit.lock) for f in lint(statements, {}, {}).findings if f.code == "PS201"]
    assert found == [(6, "ACCESS EXCLUSIVE"), (7, "EXCLUSIVE"), (8, "SHARE ROW EXCLUSIVE")]


# --- PS106: whose lack a refusal is ---------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "sqlstate", "on_targets_server", "severity"),
    [
        # PostgreSQL 15 on says 0A000 'extension "x" is not available'; before, 58P01.
        ("CREATE EXTENSION postgis", "0A000", False, "medium"),
        ("CREATE EXTENSION postgis", "58P01", False, "medium"),
        # A scratch database beside the target: its server is the target's, so is what it lacks.
        ("CREATE EXTENSION postgis", "0A000", True, "high"),
        ("CREATE EXTENSION postgis", "58P01", True, "high"),
        # 0A000 is also a type change under a view: a refusal the target meets too.
        ("ALTER TABLE t ALTER COLUMN v TYPE bigint", "0A000", False, "high"),
        ("GRANT SELECT ON t TO reader", "42501", True, "medium"),
    ],
)
def test_ps106_an_extension_the_shadows_server_lacks_is_the_shadows_alone(
    sql: str, sqlstate: str, on_targets_server: bool, severity: str
) -> None:
    kind, node = next(iter(parse_trees(sql)[0].items()))
    failure = StatementFailure("002", 0, 1, "refused", sqlstate, on_targets_server)
    context = StatementContext(
        version="002",
        path="002_change.sql",
        line=1,
        sql=sql,
        kind=kind,
        node=node,
        facts=None,
        sizes={},
        existing=frozenset(),
        created_here=frozenset(),
        search_path=("public",),
        file_sets_lock_timeout=False,
        lock_timeout=5.0,
        in_transaction=True,
        failure=failure,
    )
    [hit] = list(load_rules()["PS106"].check(context))
    assert hit.severity.label == severity
