"""`poststack config`, --env and .env end to end; the global --version, -q, -v; shell
completion. Bad configuration is one line and exit 2 with the database untouched."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from reconciler import __version__
from reconciler.interface import cli
from tests.conftest import catalog_snapshot, run_cli, run_process, sql
from tests.integration.test_json_output import conforming

UNREACHABLE = "postgresql://nobody:hunter2@127.0.0.1:9/nowhere"  # never reached


@pytest.fixture
def project(tmp_path: Path, migrations_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory (the example migrations in it), the current directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_error(result, expected: str) -> None:
    """Exit 2, nothing on stdout, and one ❌ line (with at most a line saying what to do)."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"❌ {expected}", result.stderr
    assert len(lines) <= 2 and "Traceback" not in result.stderr


def tracking_tables(db: psycopg2.extensions.connection) -> list[tuple]:
    return sql(db, "SELECT tablename FROM pg_tables WHERE tablename LIKE '%migrations%'")


# --- poststack config ----------------------------------------------------------------------


def test_config_shows_each_setting_with_its_source(project: Path):
    (project / "poststack.toml").write_text(
        'migrations_dir = "migrations"\n\n[environments.prod]\n'
        'database_url = "postgresql://app:s3cret@db.internal/shop"\nlock_timeout = 120\n'
    )
    (project / ".env").write_text("SECRET_KEY=abc\nDATABASE_URL=postgresql://dev@localhost/dev\n")
    result = run_cli("config", "--env", "prod", env={"POSTSTACK_SCHEMA": "ops"})
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "environment:  prod (from --env)"
    assert lines[1] == f"project file: {project / 'poststack.toml'}"
    assert lines[2] == f".env:         {project / '.env'}"
    rows = {line.split()[0]: line for line in lines[4:]}
    assert rows["database_url"].split() == [
        "database_url",
        "postgresql://app:***@db.internal/shop",
        "from",
        "poststack.toml",
        "[environments.prod]",
    ]
    assert rows["tracking_schema"].endswith("from POSTSTACK_SCHEMA")
    assert rows["lock_timeout"].split()[1:3] == ["120", "from"]
    assert rows["migrations_dir"].split()[1] == str(project / "migrations")
    assert rows["table_prefix"].endswith("from default")


def test_config_json_matches_its_schema(project: Path):
    (project / "pyproject.toml").write_text(
        '[tool.poststack]\ntable_prefix = "poststack_"\n\n'
        '[tool.poststack.environments.staging]\ndatabase_url = "postgresql://app:s3cret@stage/shop"\n'
    )
    (project / ".env").write_text("POSTSTACK_ENV=staging\nexport POSTSTACK_LOCK_TIMEOUT=5\n")
    data = conforming(run_cli("config", "--format", "json", "--layout", "dbmate"), "config")
    assert data["environment"] == "staging"
    assert data["environment_source"] == f"POSTSTACK_ENV in {project / '.env'}"
    assert (data["project_file"], data["dotenv_file"]) == (str(project / "pyproject.toml"), str(project / ".env"))
    settings = data["settings"]
    assert settings["database_url"] == {
        "value": "postgresql://app:***@stage/shop",
        "source": "pyproject.toml [tool.poststack.environments.staging]",
        "variable": "POSTSTACK_DATABASE_URL",
    }
    assert settings["table_prefix"] == {
        "value": "poststack_",
        "source": "pyproject.toml [tool.poststack]",
        "variable": "POSTSTACK_TABLE_PREFIX",
    }
    assert settings["lock_timeout"]["value"] == 5 and settings["lock_timeout"]["source"].startswith("POSTSTACK_LOCK")
    assert settings["layout"] == {"value": "dbmate", "source": "--layout", "variable": "POSTSTACK_LAYOUT"}
    assert settings["shadow_database_url"]["value"] is None


def test_config_of_the_embedded_server(project: Path):
    data = conforming(run_cli("config", "--embedded", "--format", "json"), "config")
    assert data["settings"]["database_url"]["value"] == "embedded"
    assert data["settings"]["database_url"]["source"] == "--embedded"
    assert data["environment"] is None and data["project_file"] is None and data["dotenv_file"] is None


def test_config_with_no_database_named_says_so_as_a_command_would(project: Path):
    result = run_cli("config")  # no terminal here: no embedded server by default
    assert result.exit_code == 3 and result.stderr.startswith("❌ no database named: poststack looked at")


# --- the database a chosen environment or .env names is the one used ----------------------


def test_env_chooses_the_database_over_an_ambient_database_url(project: Path, database_url: str, db):
    (project / "poststack.toml").write_text(f'[environments.test]\ndatabase_url = "{database_url}"\n')
    result = run_cli("db", "migrate", "--env", "test", env={"DATABASE_URL": UNREACHABLE})
    assert result.exit_code == 0, result.output
    assert sql(db, "SELECT count(*) FROM schema_migrations WHERE success")[0][0] == 5
    # POSTSTACK_ENV chooses it too.
    result = run_cli("db", "migration-status", env={"POSTSTACK_ENV": "test", "DATABASE_URL": UNREACHABLE})
    assert result.exit_code == 0, result.output


def test_dotenv_names_the_database(project: Path, database_url: str, db):
    (project / ".env").write_text(f"# local development\nexport DATABASE_URL='{database_url}'\nOTHER_APP_KEY=1\n")
    result = run_cli("db", "migrate")
    assert result.exit_code == 0, result.output
    assert tracking_tables(db)
    # A real variable wins over .env: the unreachable one is tried, and fails.
    assert run_cli("db", "migration-status", env={"DATABASE_URL": UNREACHABLE}).exit_code == 3


# --- bad configuration: one line, exit 2, no database touched ------------------------------


@pytest.mark.parametrize(
    ("toml", "args", "expected"),
    [
        ('lock_timeout = "abc"\n', (), "{file}: lock_timeout must be a number of seconds, not a string ('abc')"),
        ("migrations_dir = 3\n", (), "{file}: migrations_dir must be a string, not a number (3)"),
        (
            '[environments.prod]\ntracking_schema = "ops"\n',
            ("--env", "prdo"),
            "unknown environment 'prdo' (from --env); did you mean 'prod'?",
        ),
        (
            "[environments.prod]\nlock_timeout = false\n",
            (),
            "{file} [environments.prod]: lock_timeout must be a number of seconds, not a boolean (False)",
        ),
    ],
)
def test_bad_configuration_touches_no_database(project: Path, database_url: str, db, toml, args, expected):
    # The project's database is a real one: had poststack gone ahead, migrate would have changed it.
    (project / "poststack.toml").write_text(f'database_url = "{database_url}"\n{toml}')
    before = catalog_snapshot(db)
    one_error(run_cli("db", "migrate", *args), expected.format(file=project / "poststack.toml"))
    assert catalog_snapshot(db) == before and not tracking_tables(db)


def test_a_bad_dotenv_line_touches_no_database(project: Path, database_url: str, db):
    (project / ".env").write_text(f"DATABASE_URL={database_url}\nPOSTSTACK_SCEHMA=ops\n")
    result = run_cli("db", "migrate")
    one_error(
        result,
        f"{project / '.env'}:2: POSTSTACK_SCEHMA is not a variable poststack reads; did you mean 'POSTSTACK_SCHEMA'?",
    )
    (project / ".env").write_text(f"DATABASE_URL={database_url}\nthis line is not an assignment\n")
    one_error(run_cli("db", "migrate"), f"{project / '.env'}:2: not a KEY=value line")
    assert not tracking_tables(db)


def test_a_bad_lock_timeout_variable_touches_no_database(project: Path, database_url: str, db):
    result = run_cli("db", "migrate", "--database-url", database_url, env={"POSTSTACK_LOCK_TIMEOUT": "abc"})
    one_error(result, "lock timeout from POSTSTACK_LOCK_TIMEOUT is not a number of seconds: 'abc'")
    assert not tracking_tables(db)


def test_an_environment_without_a_url_is_an_error_not_the_embedded_server(project: Path):
    (project / "poststack.toml").write_text('[environments.prod]\ntracking_schema = "ops"\n')
    result = run_process("db", "migration-status", "--env", "prod", cwd=project)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("❌ environment 'prod' has no database URL: poststack looked at --database-url, ")
    assert "Using embedded PostgreSQL" not in result.output
    assert not (project / ".poststack").exists()  # no embedded server was started


# --- --version, -q, -v -----------------------------------------------------------------------


def test_version_flag_is_the_version_command():
    flag, command = run_cli("--version"), run_cli("version")
    assert flag.exit_code == command.exit_code == 0
    assert flag.stdout == command.stdout == f"poststack {__version__} (python {sys.version.split()[0]})\n"


def test_verbose_shows_settings_and_the_sql_it_runs(project: Path, database_url: str):
    result = run_cli("-v", "db", "migrate", "--database-url", database_url)
    assert result.exit_code == 0, result.output
    assert "database_url" in result.stderr and "from --database-url" in result.stderr
    assert "tracking_schema      public" in result.stderr
    assert "-- step 1:" in result.stderr
    (last,) = [p for p in (project / "migrations").glob("005_*.sql") if ".rollback" not in p.name]
    statement = next(line for line in last.read_text().splitlines() if line and not line.startswith("--"))
    assert statement in result.stderr  # the migration's own SQL, as it runs
    assert "-- step" not in result.stdout  # the result is unchanged
    quiet_run = run_cli("db", "migration-status", "--database-url", database_url)
    assert "from --database-url" not in quiet_run.stderr  # not without -v


def test_quiet_keeps_the_result_and_errors(project: Path, database_url: str):
    result = run_cli("-q", "db", "migrate", "--database-url", database_url)
    assert result.exit_code == 0 and "Applied" in result.stdout
    result = run_cli("-q", "db", "migrate", "--database-url", database_url, "--schema", "bad schema")
    assert result.exit_code == 2 and "not a plain PostgreSQL identifier" in result.stderr
    assert run_cli("-q", "-v", "version").exit_code == 2  # they contradict each other


def test_quiet_drops_notes_and_keeps_warnings(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cli, "_output", cli.Output(quiet=True))
    cli._notify("Using embedded PostgreSQL in /x (set POSTSTACK_DATABASE_URL to use another server)")
    cli._notify("ℹ️  No replay (no shadow): untracked migrations are judged from the parsed SQL alone.")
    cli._notify("⚠️  The replay stopped at migration 003 (x)")
    assert capsys.readouterr().err == "⚠️  The replay stopped at migration 003 (x)\n"
    monkeypatch.setattr(cli, "_output", cli.Output())
    cli._notify("Using embedded PostgreSQL in /x")
    assert capsys.readouterr().err == "Using embedded PostgreSQL in /x\n"


# --- shell completion --------------------------------------------------------------------------


def poststack_argv() -> list[str]:
    script = Path(sys.executable).parent / "poststack"
    return [str(script)] if script.exists() else [sys.executable, "-m", "reconciler.interface.cli"]


def isolated_env(home: Path) -> dict[str, str]:
    """The environment with a throwaway HOME, and the console script on PATH."""
    path = f"{Path(poststack_argv()[0]).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "HOME": str(home), "PATH": path}


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_script_completes_commands_and_options(tmp_path: Path):
    if not (Path(sys.executable).parent / "poststack").exists():
        pytest.skip("the console script is not installed beside this interpreter")
    script = (
        'eval "$(poststack --show-completion bash)"\n'
        "complete -p poststack\n"
        "COMP_WORDS=(poststack db mi); COMP_CWORD=2; _poststack_completion poststack\n"
        'echo "db: ${COMPREPLY[*]}"\n'
        "COMP_WORDS=(poststack db migrate --e); COMP_CWORD=3; _poststack_completion poststack\n"
        'echo "options: ${COMPREPLY[*]}"\n'
    )
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=isolated_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "complete -o default -F _poststack_completion poststack"
    assert lines[1].split(": ")[1].split() == ["migrate", "migration-status", "migration-info"]
    assert {"--env", "--embedded"} <= set(lines[2].split(": ")[1].split())
    assert list(tmp_path.iterdir()) == []  # nothing written into the home directory


@pytest.mark.parametrize(
    ("shell", "marker", "request_env", "answer"),
    [
        ("zsh", "#compdef poststack", {"_POSTSTACK_COMPLETE": "complete_zsh"}, '"migration-status":'),
        (
            "fish",
            "complete --command poststack",
            {"_POSTSTACK_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args"},
            "migration-status\t",
        ),
    ],
)
def test_zsh_and_fish_scripts_and_the_answers_they_ask_for(tmp_path: Path, shell, marker, request_env, answer):
    env = isolated_env(tmp_path)
    shown = subprocess.run([*poststack_argv(), "--show-completion", shell], capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and shown.stdout.startswith(marker) and "_POSTSTACK_COMPLETE" in shown.stdout
    # What the script runs at a TAB: poststack answers with the completions.
    request = {**env, **request_env, "_TYPER_COMPLETE_ARGS": "poststack db mi"}
    proc = subprocess.run(poststack_argv(), capture_output=True, text=True, env=request)
    assert proc.returncode == 0 and answer in proc.stdout, proc.stdout + proc.stderr
    if shutil.which(shell):  # and, where the shell is installed, the script loads in it
        loaded = subprocess.run([shell, "-c", shown.stdout], capture_output=True, text=True, env=env)
        assert loaded.returncode == 0, loaded.stderr


def test_an_unknown_shell_is_a_usage_error():
    result = run_cli("--show-completion", "tcsh")
    assert result.exit_code == 2 and "'tcsh' is not one of 'bash', 'zsh', 'fish'" in result.output


def test_install_completion_writes_only_into_the_given_home(tmp_path: Path):
    proc = subprocess.run(
        [*poststack_argv(), "--install-completion", "bash"], capture_output=True, text=True, env=isolated_env(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    installed = tmp_path / ".bash_completions" / "poststack.sh"
    assert f"installed in {installed}" in proc.stdout
    assert "complete -o default -F _poststack_completion poststack" in installed.read_text()
    assert str(installed) in (tmp_path / ".bashrc").read_text()


def test_config_json_is_one_object(project: Path):
    result = run_cli("config", "--database-url", UNREACHABLE, "--format", "json")
    assert result.exit_code == 0 and "hunter2" not in result.stdout
    assert (
        json.loads(result.stdout)["settings"]["database_url"]["value"] == "postgresql://nobody:***@127.0.0.1:9/nowhere"
    )


def test_a_command_that_opens_no_connection_takes_the_environment_without_its_url(project: Path):
    (project / "poststack.toml").write_text('[environments.prod]\nmigrations_dir = "db/prod"\n')
    playbooks = project / "db" / "playbooks"
    playbooks.mkdir(parents=True)
    builtin = (Path(__file__).parents[2] / "playbooks" / "recover.yaml").read_text()
    (playbooks / "mine.yaml").write_text(re.sub(r"(?m)^name: .*$", "name: mine", builtin))
    # The environment's migrations directory (db/prod) puts the project's playbooks in db/playbooks.
    result = run_cli("playbooks", "list", "--env", "prod")
    assert result.exit_code == 0, result.output
    assert str(playbooks / "mine.yaml") in result.stdout
    assert str(playbooks / "mine.yaml") not in run_cli("playbooks", "list").stdout
    one_error(run_cli("playbooks", "list", "--env", "qa"), "unknown environment 'qa' (from --env)")
