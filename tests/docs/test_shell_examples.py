"""Every shell example in the user docs runs as shown against a real database, and prints
what the docs say it prints (tests/docs/shell_examples.py says how examples are read)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg2
import pytest

from reconciler.remediation import backup as backups
from tests.conftest import EXAMPLE_MIGRATIONS, REPO
from tests.docs.shell_examples import (
    Scenario,
    prepare_project,
    run_command,
    run_script,
    scenarios,
    shape_mismatch,
)

DOCUMENTS = ("troubleshooting.md", "getting-started.md")


def _cases() -> list[object]:
    return [
        pytest.param(name, scenario, id=f"{name}:{scenario.name}")
        for name in DOCUMENTS
        for scenario in scenarios(REPO / "docs" / name)
    ]


def _reader_env(database_url: str, home: Path) -> dict[str, str]:
    """A reader's shell: poststack and the server's psql/pg_dump on PATH, the database in
    POSTSTACK_DATABASE_URL, and nothing else of ours configured."""
    conn = psycopg2.connect(database_url)
    major = conn.server_version // 10000
    conn.close()
    client_bin = backups.find_client("psql", major).path.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTSTACK_", "PG")) and k != "DATABASE_URL"}
    env.update(
        {
            "POSTSTACK_DATABASE_URL": database_url,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), str(client_bin), env.get("PATH", "")]),
            "HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Reader",
            "GIT_AUTHOR_EMAIL": "reader@example.com",
            "GIT_COMMITTER_NAME": "Reader",
            "GIT_COMMITTER_EMAIL": "reader@example.com",
            "NO_COLOR": "1",
        }
    )
    return env


@pytest.mark.parametrize(("document", "scenario"), _cases())
def test_shell_examples_run_as_shown(document: str, scenario: Scenario, database_url: str, tmp_path: Path):
    env = _reader_env(database_url, tmp_path)
    assert (Path(sys.executable).parent / "poststack").exists(), (
        "the console script must be installed (pip install -e .)"
    )
    project = tmp_path / "project"
    project.mkdir()
    prepare_project(project, EXAMPLE_MIGRATIONS, env)
    for block in scenario.blocks:
        if not block.is_transcript:
            failures, output = run_script(block, project, env)
            broken = [f"line {line} exited {code}" for code, line in failures if code >= 2]
            assert not broken, f"{document}:{block.line}: {', '.join(broken)}:\n{output}"
            continue
        for command in block.commands():
            code, output = run_command(command, project, env)
            where = f"{document}:{command.line}: `{command.text}`"
            assert code in (0, 1), f"{where} exited {code}:\n{output}"
            missing = shape_mismatch(command.expected, output)
            assert missing is None, f"{where} printed nothing like {missing!r}; it printed:\n{output}"


def test_every_document_has_examples_to_run():
    """Guards the reader above: a parsing slip must not leave a document with nothing run."""
    for name in DOCUMENTS:
        found = scenarios(REPO / "docs" / name)
        assert found, name
        for scenario in found:
            assert scenario.blocks, f"{name}: scenario {scenario.name} has no shell example"
    transcripts = [b for s in scenarios(REPO / "docs" / "troubleshooting.md") for b in s.blocks if b.is_transcript]
    assert sum(len(b.commands()) for b in transcripts) >= 40
    assert all(c.expected for b in transcripts for c in b.commands() if c.text.startswith("poststack db diagnose"))


def test_shape_matching_can_fail():
    assert shape_mismatch(["Overall Status: ✅ PASS"], "Overall Status: ❌ FAIL\n") == "Overall Status: ✅ PASS"
    assert shape_mismatch(["b", "a"], "a\nb\n") == "a"  # order matters
    assert shape_mismatch(["Applied … migration(s)"], "✅ Applied 3 migration(s)") is not None  # whole line
    assert shape_mismatch(["✅ Applied … migration(s): 003 (…)"], "✅ Applied 1 migration(s): 003 (0.01s)") is None
