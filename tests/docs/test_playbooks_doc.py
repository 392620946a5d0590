"""docs/playbooks.md stays true: its tables match the schema, the action registry and the
built-in playbooks; its YAML blocks are playbooks the real loader accepts; its worked
examples plan and apply against a real database, and the outputs it shows are the real ones.

Conventions the doc follows (and this file parses):

- a ```yaml block is a complete playbook unless the line before its fence is
  ``<!-- fragment -->``;
- a ```text block after ``<!-- plan-output: NAME -->`` is what ``poststack plan --playbook
  NAME`` prints in the worked examples' state; after ``<!-- apply-output: NAME -->``, how
  ``poststack apply --playbook NAME --auto-approve`` ends;
- the tables under "## Top-level keys", "## Step keys", "## Actions", "## Variables" and
  "## Built-in playbooks" have the columns these tests name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from reconciler.bundled import PLAYBOOKS, SCHEMAS
from reconciler.remediation.actions import registered
from reconciler.remediation.fixes import DEFAULT_VARIABLES
from reconciler.remediation.playbook import load_all, load_playbook, project_dir
from tests.conftest import REPO, run_cli, sql, write

DOC = REPO / "docs" / "playbooks.md"
FRAGMENT = "<!-- fragment -->"
NONE = "—"

# The worked examples' state: migration 006 fails in a transaction (a typo in a table name).
FAILING_006 = (
    "ALTER TABLE billing.invoices ADD COLUMN status text NOT NULL DEFAULT 'open';\n"
    "ALTER TABLE billing.invoice ADD CONSTRAINT invoices_status_check CHECK (status IN ('open', 'paid', 'void'));\n"
)
FIXED_006 = FAILING_006.replace("billing.invoice ADD", "billing.invoices ADD")
ROLLBACK_006 = "ALTER TABLE billing.invoices DROP COLUMN IF EXISTS status;\n"


# --- reading the doc ----------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # of the opening fence, 1-based
    marker: str  # the line before the fence, stripped


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def blocks(text: str | None = None) -> list[Block]:
    lines = (text if text is not None else doc_text()).splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = re.match(r"^```(\w*)\s*$", lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        assert end < len(lines), f"docs/playbooks.md:{index + 1}: code block never closed"
        marker = lines[index - 1].strip() if index > 0 else ""
        found.append(Block(opening[1], "\n".join(lines[index + 1 : end]) + "\n", index + 1, marker))
        index = end + 1
    return found


def playbook_blocks() -> list[Block]:
    return [b for b in blocks() if b.lang == "yaml" and b.marker != FRAGMENT]


def fragment_blocks() -> list[Block]:
    return [b for b in blocks() if b.lang == "yaml" and b.marker == FRAGMENT]


def marked_output(kind: str, name: str) -> str:
    found = [b for b in blocks() if b.marker == f"<!-- {kind}: {name} -->"]
    assert len(found) == 1, f"docs/playbooks.md has {len(found)} blocks marked <!-- {kind}: {name} -->"
    assert found[0].lang == "text"
    return found[0].text


def table_under(heading: str, text: str | None = None) -> list[dict[str, str]]:
    """The first markdown table after ``heading``, as rows keyed by column name."""
    lines = (text if text is not None else doc_text()).splitlines()
    assert heading in lines, f"docs/playbooks.md has no heading {heading!r}"
    index = lines.index(heading) + 1
    while index < len(lines) and not lines[index].startswith("|"):
        assert not lines[index].startswith("#"), f"no table under {heading!r}"
        index += 1
    rows: list[list[str]] = []
    while index < len(lines) and lines[index].startswith("|"):
        rows.append([cell.strip() for cell in lines[index].strip().strip("|").split("|")])
        index += 1
    assert len(rows) >= 2 and set("".join(rows[1])) <= set("-: "), f"malformed table under {heading!r}"
    header = rows[0]
    for row in rows[2:]:
        assert len(row) == len(header), f"a row under {heading!r} has {len(row)} cells, not {len(header)}: {row}"
    return [dict(zip(header, row, strict=True)) for row in rows[2:]]


def codes(cell: str) -> list[str]:
    """The inline-code names in a table cell; ``—`` means none."""
    names = re.findall(r"`([^`]+)`", cell)
    assert names or cell == NONE, f"expected `names` or {NONE}, got {cell!r}"
    return names


def one_code(cell: str) -> str:
    names = codes(cell)
    assert len(names) == 1, f"expected one `name` in {cell!r}"
    return names[0]


def yes_no(cell: str) -> bool:
    assert cell in ("yes", "no"), f"expected yes or no, got {cell!r}"
    return cell == "yes"


def schema() -> dict[str, Any]:
    return json.loads((SCHEMAS / "playbook.schema.json").read_text())


def property_names(node: Any) -> set[str]:
    """Every key of every ``properties`` mapping anywhere in the schema."""
    names: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                names |= set(value)
            names |= property_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= property_names(value)
    return names


def normalize(output: str) -> str:
    output = re.sub(r"fingerprint [0-9a-f]{12}", "fingerprint <fingerprint>", output)
    output = re.sub(r"run in \d+\.\d+s", "run in <seconds>s", output)
    output = re.sub(r"(?m)^Database: .*$", "Database: <the database>", output)  # the doc shows a real-looking URL
    return "\n".join(line.rstrip() for line in output.strip().splitlines())


# --- the schema ---------------------------------------------------------------------------


def test_every_schema_property_is_documented_as_inline_code() -> None:
    text = doc_text()
    names = property_names(schema())
    assert {"name", "version", "handles", "steps", "action", "for_each", "when"} <= names  # the walk works
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"docs/playbooks.md does not mention schema properties {missing}"


@pytest.mark.parametrize(
    ("heading", "path"),
    [("## Top-level keys", ()), ("## Step keys", ("$defs", "step"))],
    ids=["top-level", "step"],
)
def test_key_tables_match_the_schema(heading: str, path: tuple[str, ...]) -> None:
    node: dict[str, Any] = schema()
    for part in path:
        node = node[part]
    rows = table_under(heading)
    documented = [one_code(row["key"]) for row in rows]
    assert sorted(documented) == sorted(node["properties"]), f"the keys under {heading!r} differ from the schema"
    for row in rows:
        key = one_code(row["key"])
        spec = node["properties"][key]
        assert yes_no(row["required"]) == (key in node.get("required", [])), f"{key}: required"
        if "default" in spec:
            assert json.loads(one_code(row["default"])) == spec["default"], f"{key}: default"
        else:
            assert row["default"] == NONE, f"{key}: the schema gives no default"


def test_every_issue_type_a_playbook_may_handle_is_listed() -> None:
    text = doc_text()
    allowed = schema()["properties"]["handles"]["items"]["enum"]
    missing = [t for t in allowed if f"`{t}`" not in text]
    assert not missing, f"docs/playbooks.md does not list issue types {missing}"


# --- the action registry ------------------------------------------------------------------


def test_action_table_matches_the_registry() -> None:
    rows = {one_code(row["action"]): row for row in table_under("## Actions")}
    actions = registered()
    assert sorted(rows) == sorted(actions), "the action table lists other actions than the registry"
    for name, cls in actions.items():
        row = rows[name]
        assert row["summary"] == cls.summary, f"{name}: summary"
        assert codes(row["required args"]) == list(cls.required), f"{name}: required args"
        assert codes(row["optional args"]) == list(cls.optional), f"{name}: optional args"
        assert codes(row["static SQL args"]) == list(cls.static_args), f"{name}: static SQL args"
        assert yes_no(row["destructive"]) == cls.destructive, f"{name}: destructive"
        assert yes_no(row["audited"]) == cls.audited, f"{name}: audited"


def test_every_action_has_a_section_naming_its_arguments() -> None:
    text = doc_text()
    sections = re.split(r"^### ", text, flags=re.MULTILINE)
    for name, cls in registered().items():
        found = [s for s in sections if s.startswith(f"`{name}`\n")]
        assert len(found) == 1, f"docs/playbooks.md needs one '### `{name}`' section"
        for arg in (*cls.required, *cls.optional):
            assert f"`{arg}`" in found[0], f"the {name} section does not describe `{arg}`"


def test_variables_table_matches_the_defaults() -> None:
    rows = table_under("## Variables")
    documented = {one_code(row["variable"]): json.loads(one_code(row["default"])) for row in rows}
    assert documented == {f"vars.{k}": v for k, v in DEFAULT_VARIABLES.items()}


def test_built_in_playbook_table_matches_the_files() -> None:
    rows = {one_code(row["playbook"]): row for row in table_under("## Built-in playbooks")}
    builtins = {}
    for path in sorted(PLAYBOOKS.glob("*.yaml")):
        book = load_playbook(path, builtin=True)
        builtins[book.name] = book
    assert sorted(rows) == sorted(builtins)
    for name, book in builtins.items():
        row = rows[name]
        assert codes(row["handles"]) == list(book.handles), f"{name}: handles"
        assert yes_no(row["auto"]) == book.auto, f"{name}: auto"
        assert int(row["order"]) == book.order, f"{name}: order"
        assert yes_no(row["destructive"]) == book.destructive, f"{name}: destructive"


# --- the YAML blocks ----------------------------------------------------------------------


def test_the_doc_has_complete_playbooks_and_few_fragments() -> None:
    complete, fragments = playbook_blocks(), fragment_blocks()
    assert len(complete) >= 3, "the worked examples are complete playbooks"
    assert len(fragments) <= 4, "fragments are for short illustrations only; prefer complete playbooks"
    for block in fragments:
        assert yaml.safe_load(block.text) is not None, f"docs/playbooks.md:{block.line}: fragment is not YAML"


def test_the_block_parser_honours_fragment_markers() -> None:
    sample = "text\n<!-- fragment -->\n```yaml\na: 1\n```\n\n```yaml\nb: 2\n```\n"
    found = blocks(sample)
    assert [(b.marker, b.text) for b in found] == [(FRAGMENT, "a: 1\n"), ("", "b: 2\n")]


@pytest.mark.parametrize("block", playbook_blocks(), ids=lambda b: f"line{b.line}")
def test_yaml_block_is_a_playbook_the_loader_accepts(block: Block, tmp_path: Path) -> None:
    data = yaml.safe_load(block.text)
    jsonschema.Draft202012Validator(schema()).validate(data)

    migrations = tmp_path / "migrations"
    migrations.mkdir()
    own = project_dir(migrations)
    own.mkdir()
    path = write(own, f"{data['name']}.yaml", block.text)

    books = load_all(migrations)
    assert books[data["name"]].path == path, "the project's playbook is the one in use (overriding any built-in)"
    assert not books[data["name"]].builtin

    result = run_cli("playbooks", "validate", "--migrations-dir", str(migrations))
    assert result.exit_code == 0, result.output
    assert f"{path}: valid ({data['name']} v{data['version']}" in result.stdout


def test_doc_playbooks_load_together(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    names = install_doc_playbooks(migrations)
    assert len(names) == len(set(names)), f"two playbooks in the doc share a name: {names}"
    books = load_all(migrations)
    assert all(not books[n].builtin for n in names)


# --- the worked examples, on a real database ----------------------------------------------


def install_doc_playbooks(migrations: Path) -> list[str]:
    own = project_dir(migrations)
    own.mkdir(exist_ok=True)
    names = []
    for block in playbook_blocks():
        data = yaml.safe_load(block.text)
        name = data.get("name") if isinstance(data, dict) else None
        name = name if isinstance(name, str) else f"docs-line-{block.line}"  # the loader will say what is wrong
        write(own, f"{name}.yaml", block.text)
        names.append(name)
    return names


@pytest.fixture
def failed_006(cli: Any, db: Any, migrations_dir: Path) -> None:
    """The examples' state: 001-005 applied, 006 recorded as a failed attempt."""
    install_doc_playbooks(migrations_dir)
    write(migrations_dir, "006_add_invoice_status.sql", FAILING_006)
    write(migrations_dir, "006_add_invoice_status.rollback.sql", ROLLBACK_006)
    result = cli("db", "migrate")
    assert result.exit_code == 1, result.output
    assert 'relation "billing.invoice" does not exist' in result.output
    assert sql(db, "SELECT version, success FROM schema_migrations WHERE version = '006'") == [("006", False)]


def test_the_doc_shows_the_failing_migration_the_tests_use() -> None:
    shown = [b.text for b in blocks() if b.lang == "sql"]
    assert FAILING_006 in shown


@pytest.mark.usefixtures("failed_006")
def test_clear_failed_plans_and_applies(cli: Any, db: Any, migrations_dir: Path) -> None:
    plan = cli("plan", "--playbook", "clear-failed")
    assert plan.exit_code == 0, plan.output
    assert normalize(plan.stdout) == normalize(marked_output("plan-output", "clear-failed"))
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE NOT success") == [(1,)], "plan changed nothing"

    applied = cli("apply", "--playbook", "clear-failed", "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert normalize(applied.stdout).endswith(normalize(marked_output("apply-output", "clear-failed")))

    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE NOT success") == [(0,)]
    audit = sql(
        db, "SELECT action, version, outcome FROM schema_migrations_audit WHERE operation = 'remediate' ORDER BY id"
    )
    assert audit == [("remove_tracking_row", "006", "ok"), ("assert", None, "ok")]

    # As the doc says: 006 is now simply pending; with the typo fixed, migrate applies it.
    write(migrations_dir, "006_add_invoice_status.sql", FIXED_006)
    migrated = cli("db", "migrate")
    assert migrated.exit_code == 0, migrated.output
    assert sql(db, "SELECT success FROM schema_migrations WHERE version = '006'") == [(True,)]


@pytest.mark.usefixtures("failed_006")
def test_archive_failed_plans_and_applies(cli: Any, db: Any) -> None:
    plan = cli("plan", "--playbook", "archive-failed")
    assert plan.exit_code == 0, plan.output
    assert normalize(plan.stdout) == normalize(marked_output("plan-output", "archive-failed"))

    applied = cli("apply", "--playbook", "archive-failed", "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert "Apply complete: 4 step(s)" in applied.stdout

    archived = sql(db, "SELECT version, error, note FROM failed_migration_attempts")
    assert len(archived) == 1
    version, error, note = archived[0]
    assert (version, note) == ("006", "Migration 006 was not successfully applied")
    assert 'relation "billing.invoice" does not exist' in error
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE NOT success") == [(0,)]


def test_the_repair_override_leaves_edits_to_a_person(cli: Any, db: Any, migrations_dir: Path) -> None:
    install_doc_playbooks(migrations_dir)
    assert cli("db", "migrate").exit_code == 0
    tracked = sql(db, "SELECT checksum FROM schema_migrations WHERE version = '004'")
    edited = migrations_dir / "004_add_audit_function.sql"
    edited.write_text(edited.read_text() + "-- edited after it was applied\n")

    listed = run_cli("playbooks", "list", "--migrations-dir", str(migrations_dir))
    assert listed.exit_code == 0, listed.output
    row = next(line.split() for line in listed.stdout.splitlines() if line.split()[:1] == ["repair"])
    assert row[1] == "2" and row[-1] == str(project_dir(migrations_dir) / "repair.yaml"), listed.stdout

    repaired = cli("db", "repair")
    assert repaired.exit_code == 0, repaired.output
    assert "For a person to do:" in repaired.stdout
    assert f"{edited} changed after it was applied" in repaired.stdout
    assert "poststack apply --playbook accept-edits" in repaired.stdout
    assert sql(db, "SELECT checksum FROM schema_migrations WHERE version = '004'") == tracked, "repair accepted it"

    accepted = cli("apply", "--playbook", "accept-edits", "--auto-approve")
    assert accepted.exit_code == 0, accepted.output
    assert sql(db, "SELECT checksum FROM schema_migrations WHERE version = '004'") != tracked
    diagnosed = cli("db", "diagnose", "--format", "json")
    assert diagnosed.exit_code == 0, diagnosed.output
    assert json.loads(diagnosed.stdout)["total_issues"] == 0
