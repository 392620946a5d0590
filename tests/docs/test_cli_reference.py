"""docs/cli.md is every command's real --help: a new command, flag or help text that is not
in it (or one in it that no longer exists) fails here. Fix: python -m tests.docs.cli_reference."""

from __future__ import annotations

import difflib

from tests.docs.cli_reference import DOC, command_paths, render


def test_cli_reference_matches_the_help():
    expected = render()
    actual = DOC.read_text()
    diff = "\n".join(
        difflib.unified_diff(actual.splitlines(), expected.splitlines(), "docs/cli.md", "--help", lineterm="")
    )
    assert actual == expected, f"docs/cli.md differs from the help; run python -m tests.docs.cli_reference\n{diff}"


def test_every_command_is_in_the_reference():
    text = DOC.read_text()
    paths = command_paths()
    assert len(paths) > 20
    for path in paths:
        assert f"## {' '.join(('poststack', *path))}\n" in text
    assert "## poststack demo\n" in text and "--keep" in text


def test_the_configuration_and_global_options_are_in_the_reference():
    text = DOC.read_text()
    root = text.split("## poststack\n", 1)[1].split("\n## ", 1)[0]
    for option in (
        "--version",
        "-q, --quiet",
        "-v, --verbose",
        "--show-completion SHELL",
        "--install-completion SHELL",
    ):
        assert option in root, option
    assert "## poststack config\n" in text
    migrate = text.split("## poststack db migrate\n", 1)[1].split("\n## ", 1)[0]
    assert "--env NAME" in migrate and "POSTSTACK_LOCK_TIMEOUT" in migrate
