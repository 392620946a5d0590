"""The options commands share are declared once (cli.Shared) and reach every command that
opens a connection: each takes them, passes them to resolve_settings, and turns what
resolve_settings refuses into one line and exit 2."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from reconciler.config import DEFAULT_TABLE_PREFIX
from reconciler.desired.layouts import LAYOUTS
from reconciler.interface import cli
from reconciler.interface.cli import DB_OPTIONS, Shared, app, db_command
from tests.conftest import run_cli
from tests.docs.cli_reference import command_paths

# The flags of Shared's fields, as every database command shows them.
DB_FLAGS = {
    "--database-url",
    "--embedded",
    "--migrations-dir",
    "--schema",
    "--table-prefix",
    "--layout",
    "--debug",
}
LOCAL = {"playbooks list", "playbooks show", "playbooks validate", "db server status", "db server stop"}
OWN = {"version", "demo", "new", "report merge"}  # their own options: no settings (version, report merge:
# it reads report files), a scratch database (demo)
# new writes files only: the migrations directory and its layout (tests/layouts/test_new.py).
# The arguments a command needs before its options are even read.
ARGUMENTS = {
    "db rollback": ["001"],
    "db baseline": ["001"],
    "db import": ["--from", "flyway"],
    "playbooks show": ["recover"],
}
UNREACHABLE = "postgresql://nobody@127.0.0.1:9/nowhere"  # never reached: settings fail first


def leaf_commands() -> dict[str, Any]:
    """Every command of the app, its groups walked, by its path (``db server status``)."""
    root = typer.main.get_command(app)

    def at(path: tuple[str, ...]) -> Any:
        return functools.reduce(lambda group, name: group.commands[name], path, root)

    return {" ".join(path): at(path) for path in command_paths() if not hasattr(at(path), "commands")}


def flags(command: Any) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", ())}


COMMANDS = leaf_commands()
DB_COMMANDS = sorted(set(COMMANDS) - LOCAL - OWN)


def test_every_command_is_classified():
    """A new command fails here until it is placed: does it open a connection?"""
    assert DB_COMMANDS == [
        "apply",
        "config",  # connects to nothing, but takes every setting, to show them resolved
        "db backup",
        "db baseline",
        "db clean",
        "db create-schema",
        "db diagnose",
        "db formalize",
        "db import",
        "db lint",
        "db migrate",
        "db migration-info",
        "db migration-status",
        "db recover",
        "db repair",
        "db rollback",
        "db shell",
        "db unlock-migrations",
        "db validate",
        "db verify-migrations",
        "plan",
    ]
    assert set(COMMANDS) >= LOCAL | OWN


@pytest.mark.parametrize("path", DB_COMMANDS)
def test_a_database_command_takes_every_setting(path: str):
    assert flags(COMMANDS[path]) >= DB_FLAGS


@pytest.mark.parametrize("path", sorted(LOCAL))
def test_a_command_that_opens_no_connection_takes_only_the_migrations_dir(path: str):
    shared = flags(COMMANDS[path]) & (DB_FLAGS | {"--env"})
    assert shared == {"--migrations-dir", "--env", "--debug"}  # an environment may set the directory


def test_the_shared_options_keep_their_defaults_and_help():
    migrate = {p.name: p for p in COMMANDS["db migrate"].params}
    # None: the variable, the project file or the default (30 seconds) decides.
    assert migrate["lock_timeout"].default is None and migrate["fmt"].default == "text"
    assert migrate["tracking_schema"].opts == ["--schema"] and migrate["tracking_schema"].default is None
    assert migrate["table_prefix"].default is None and migrate["layout"].default is None
    assert "schema_" in migrate["table_prefix"].help and "detected" in migrate["layout"].help
    assert migrate["debug"].default is False and migrate["embedded"].is_flag
    # The demo's --database-url is its own: a server to make a scratch database on.
    demo = {p.name: p for p in COMMANDS["demo"].params}
    assert set(demo) == {"keep", "database_url", "embedded", "debug"}
    assert "scratch database" in demo["database_url"].help


def test_each_shared_option_is_declared_once():
    source = inspect.getsource(cli)
    for flag in (*DB_FLAGS, "--format", "--lock-timeout", "--env"):
        # The demo names its own --database-url (another help text); everything else, once.
        assert source.count(f'"{flag}"') == (2 if flag == "--database-url" else 1), flag
    assert DB_OPTIONS == (
        "environment",
        "database_url",
        "embedded",
        "migrations_dir",
        "tracking_schema",
        "table_prefix",
        "layout",
        "debug",
    )


@pytest.mark.parametrize("path", DB_COMMANDS)
def test_every_database_command_passes_the_table_prefix_on(path: str):
    """A prefix resolve_settings refuses is refused by every command, before it connects."""
    args = [*path.split(), *ARGUMENTS.get(path, []), "--database-url", UNREACHABLE]
    result = run_cli(*args, "--table-prefix", "no such-prefix")
    assert result.exit_code == 2, result.output
    assert "tracking table prefix 'no such-prefix' is not the start of a plain PostgreSQL identifier" in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""


@pytest.mark.parametrize("path", DB_COMMANDS)
def test_every_database_command_checks_the_layout(path: str):
    args = [*path.split(), *ARGUMENTS.get(path, []), "--database-url", UNREACHABLE]
    result = run_cli(*args, "--layout", "no-such-layout")
    assert result.exit_code == 2, result.output
    assert "unknown layout 'no-such-layout'" in result.stderr and result.stdout == ""


@pytest.mark.skipif(not LAYOUTS, reason="no layouts registered yet")
def test_a_misspelt_layout_gets_a_suggestion():
    result = run_cli("db", "migration-status", "--database-url", UNREACHABLE, "--layout", "flywya")
    assert result.exit_code == 2
    assert "unknown layout 'flywya'; did you mean 'flyway'?" in result.stderr


@pytest.mark.skipif(not LAYOUTS, reason="no layouts registered yet")
def test_the_layout_from_the_environment_is_checked_too():
    result = run_cli("db", "diagnose", "--database-url", UNREACHABLE, env={"POSTSTACK_LAYOUT": "flywya"})
    assert result.exit_code == 2 and "unknown layout 'flywya'" in result.stderr


def test_shared_options_become_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    for name in ("POSTSTACK_TABLE_PREFIX", "POSTSTACK_LAYOUT", "POSTSTACK_SCHEMA", "POSTSTACK_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Shared(
        database_url=UNREACHABLE, tracking_schema="Ops", table_prefix="Deploy_", lock_timeout=5
    ).settings()
    assert (settings.tracking_schema, settings.table_prefix, settings.lock_timeout) == ("ops", "deploy_", 5)
    assert settings.layout is None and settings.database_url == UNREACHABLE
    monkeypatch.setenv("POSTSTACK_TABLE_PREFIX", "env_")
    assert Shared(database_url=UNREACHABLE).settings().table_prefix == "env_"
    monkeypatch.delenv("POSTSTACK_TABLE_PREFIX")
    assert Shared(database_url=UNREACHABLE).settings().table_prefix == DEFAULT_TABLE_PREFIX
    (tmp_path / "poststack.toml").write_text('table_prefix = "toml_"\n')
    assert Shared(database_url=UNREACHABLE).settings().table_prefix == "toml_"


@pytest.mark.skipif("poststack" not in LAYOUTS, reason="the poststack layout is not registered yet")
def test_a_layout_is_made_canonical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POSTSTACK_LAYOUT", raising=False)
    assert Shared(database_url=UNREACHABLE, layout=" PostStack ").settings().layout == "poststack"


def test_local_settings_never_refuse_an_unnamed_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    for name in ("POSTSTACK_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Shared(migrations_dir=tmp_path / "m").local_settings()
    assert settings.embedded and settings.migrations_dir == tmp_path / "m"


def test_the_decorator_refuses_an_unknown_or_redeclared_option():
    group = typer.Typer()
    with pytest.raises(ValueError, match="no shared option"):
        db_command(group, also=("colour",))
    with pytest.raises(ValueError, match=r"\['layout'\] are shared options"):

        @db_command(group)
        def odd(options: Shared, layout: str = "x") -> None:
            pass


def test_a_command_gets_one_object_and_runs_guarded():
    """The body sees Shared; a domain error it raises is one line and its exit code."""
    group = typer.Typer()
    seen: list[Shared] = []

    @db_command(group, "probe", also=("fmt",))
    def probe(options: Shared, loud: bool = False) -> None:
        seen.append(options)
        if loud:
            raise cli.UsageError("too loud")

    @group.command("other")
    def other() -> None:
        pass

    runner = CliRunner()
    result = runner.invoke(group, ["probe", "--table-prefix", "p_", "--layout", "flyway", "--format", "json"])
    assert result.exit_code == 0, result.output
    (options,) = seen
    assert (options.table_prefix, options.layout, options.fmt, options.lock_timeout) == ("p_", "flyway", "json", None)
    result = runner.invoke(group, ["probe", "--loud"])
    assert result.exit_code == 2 and "❌ too loud" in result.output
