"""docs/json-output.md names every schema, maps every --format json command to the schema
the tests check it against, and its marked examples match their schemas; every schema in
schemas/ is itself a valid draft 2020-12 schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from tests.conftest import REPO
from tests.integration.test_json_output import SCHEMA_FOR, json_commands

DOC = REPO / "docs" / "json-output.md"
SCHEMA_FILES = sorted((REPO / "schemas").glob("*.schema.json"))
# A ```json block right after <!-- example: NAME.schema.json --> is a whole output of that shape.
EXAMPLE = re.compile(r"<!--\s*example:\s*([\w.-]+\.schema\.json)\s*-->\s*\n```json\n(.*?)\n```", re.DOTALL)
TABLE_ROW = re.compile(r"^\| `poststack ([a-z -]+)` \| `schemas/([\w.-]+\.schema\.json)` \|$", re.MULTILINE)


def test_there_are_schemas_to_check():
    assert len(SCHEMA_FILES) >= len(set(SCHEMA_FOR.values())) + 1  # the outputs, and the playbook schema


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_is_named_in_the_doc(path: Path):
    assert f"schemas/{path.name}" in DOC.read_text(), f"docs/json-output.md does not mention schemas/{path.name}"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_is_a_valid_draft_2020_12_schema(path: Path):
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://poststack.dev/schemas/{path.name}"
    assert schema.get("title"), f"{path.name} has no title"


def test_the_doc_maps_every_json_command_to_its_schema():
    documented = {command: schema for command, schema in TABLE_ROW.findall(DOC.read_text())}
    assert documented == SCHEMA_FOR
    assert set(documented) == set(json_commands())
    headings = re.findall(r"^## .*$", DOC.read_text(), re.MULTILINE)
    for command in SCHEMA_FOR:
        assert any(f"`poststack {command}`" in h for h in headings), f"no section for poststack {command}"


def test_the_examples_match_their_schemas():
    examples = EXAMPLE.findall(DOC.read_text())
    shown = {name for name, _ in examples}
    assert shown == set(SCHEMA_FOR.values()), "every output schema needs an example, and only those"
    for name, text in examples:
        data = json.loads(text)
        validator = Draft202012Validator(json.loads((REPO / "schemas" / name).read_text()))
        errors = [
            f"{'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in validator.iter_errors(data)
        ]
        assert not errors, f"an example for {name} does not match it:\n" + "\n".join(errors)


def test_an_example_that_does_not_match_is_caught():
    wrong = '<!-- example: version.schema.json -->\n```json\n{"poststack": "0.1.0"}\n```'
    ((name, text),) = EXAMPLE.findall(wrong)
    validator = Draft202012Validator(json.loads((REPO / "schemas" / name).read_text()))
    assert list(validator.iter_errors(json.loads(text)))
