"""The console script. `poststack version` and `poststack --version` are answered before the
CLI (typer, click, every command's definition) is imported: a version check in a deploy
script or a CI step should cost little more than the interpreter's start. Everything else
goes to the typer app, which builds only the command it is asked for (cli.main)."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] in (["version"], ["--version"]):
        from reconciler.about import version_text

        print(version_text())
        return
    from reconciler.interface.cli import main as cli_main

    cli_main()
