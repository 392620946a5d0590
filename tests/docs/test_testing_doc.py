"""docs/testing.md is one small project: every block marked ``<!-- file: PATH -->`` is written
to PATH, and every ``$ pytest …`` of a block marked ``<!-- run -->`` runs in it, as a reader
would, and must pass. A fenced block with neither mark fails here, so no example escapes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.testing.test_plugin import run_pytest

DOC = REPO / "docs" / "testing.md"
_MARK = re.compile(r"<!--\s*(file:\s*(?P<path>\S+)|run)\s*-->")
_FENCE = re.compile(r"^```(\w*)\s*$")


def blocks(text: str) -> tuple[dict[str, str], list[str]]:
    """The files the page writes, and the commands it runs."""
    files: dict[str, str] = {}
    commands: list[str] = []
    lines = text.splitlines()
    mark: re.Match[str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        found = _MARK.fullmatch(line.strip())
        fence = _FENCE.match(line)
        if found:
            mark = found
        elif fence and fence[1]:
            end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
            body = lines[index + 1 : end]
            if fence[1] != "text":
                assert mark is not None, f"docs/testing.md:{index + 1}: a {fence[1]} block neither written nor run"
                if mark["path"]:
                    files[mark["path"]] = "\n".join(body) + ("\n" if body else "")
                else:
                    commands += [b[2:] for b in body if b.startswith("$ ")]
            mark = None
            index = end
        elif line.strip():
            mark = None
        index += 1
    return files, commands


def test_the_page_marks_every_example():
    files, commands = blocks(DOC.read_text())
    assert "tests/test_users.py" in files and "migrations/001_users.sql" in files
    assert commands == ["pytest", "pytest -n 2"]


@pytest.mark.slow
@pytest.mark.no_server  # run as a reader runs it: on the plugin's own embedded server
def test_the_pages_project_passes_as_written(tmp_path: Path):
    files, commands = blocks(DOC.read_text())
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    tests = sum(len(re.findall(r"^def test_", c, re.M)) for n, c in files.items() if n.startswith("tests/"))
    for command in commands:
        argv = command.split()
        assert argv[0] == "pytest"
        result = run_pytest(tmp_path, *argv[1:])
        assert result.returncode == 0, f"$ {command}\n{result.stdout}{result.stderr}"
        assert re.search(rf"\b{tests} passed\b", result.stdout), result.stdout
