""".env and named environments, read from real files on disk: what wins over what, where
each setting came from, and the mistakes that must be one usage error (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config import DEFAULT_LOCK_TIMEOUT, SETTING_VARIABLES, resolve_settings
from reconciler.errors import DatabaseUnavailable, UsageError
from reconciler.project_file import KEYS

URL_TOP = "postgresql://top@h/top"
URL_PROD = "postgresql://prod:s3cret@h/prod"
URL_SHELL = "postgresql://shell@h/shell"
URL_DOTENV = "postgresql://dotenv@h/dotenv"
URL_OWN = "postgresql://own@h/own"

PROJECT = f"""
database_url = "{URL_TOP}"
migrations_dir = "db/migrations"
tracking_schema = "top"
lock_timeout = 10

[environments.prod]
database_url = "{URL_PROD}"
tracking_schema = "prod"
table_prefix = "prod_"
layout = "dbmate"
shadow_database_url = "postgresql://shadow@h/s"
migrations_dir = "db/prod"
lock_timeout = 120
ddl_lock_timeout = 2.5
ddl_lock_retries = 0
numbering = "timestamp"
lint_ignore = ["PS204", "rename"]
pooler = "transaction"

[environments.dev]
tracking_schema = "dev"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "poststack.toml").write_text(PROJECT)
    return tmp_path


def test_the_keys_poststack_reads_are_one_list():
    assert set(KEYS) == set(SETTING_VARIABLES)


def test_an_environment_sets_every_setting(project: Path):
    settings = resolve_settings(environment="prod", environ={}, cwd=project)
    assert settings.environment == "prod"
    assert settings.database_url == URL_PROD
    assert (settings.tracking_schema, settings.table_prefix, settings.layout) == ("prod", "prod_", "dbmate")
    assert settings.shadow_url == "postgresql://shadow@h/s"
    assert settings.migrations_dir == project / "db" / "prod"  # relative to the file
    assert settings.lock_timeout == 120
    assert (settings.ddl_lock_timeout, settings.ddl_lock_retries) == (2.5, 0)
    assert settings.numbering == "timestamp"
    assert settings.lint_ignore == ("PS204", "rename")
    assert settings.pooler == "transaction"
    label = "poststack.toml [environments.prod]"
    assert dict(settings.origins.sources) == dict.fromkeys(SETTING_VARIABLES, label)
    assert settings.url_source == label
    assert settings.origins.environment_source == "--env"
    assert settings.origins.project_file == project / "poststack.toml"


def test_an_environment_inherits_the_top_level_but_not_its_database(project: Path):
    env = {"POSTSTACK_DATABASE_URL": URL_OWN}  # a deploy's secret names dev's database
    settings = resolve_settings(environment="dev", environ=env, cwd=project)
    assert (settings.database_url, settings.tracking_schema, settings.lock_timeout) == (URL_OWN, "dev", 10)
    assert settings.origins.of("tracking_schema") == "poststack.toml [environments.dev]"
    assert settings.origins.of("database_url") == "POSTSTACK_DATABASE_URL"
    assert settings.origins.of("table_prefix") == "default"
    # The top level's URL is the default environment's database, not dev's: never inherited.
    with pytest.raises(UsageError, match="environment 'dev' has no database URL"):
        resolve_settings(environment="dev", environ={}, cwd=project)


def test_an_environment_never_inherits_an_embedded_top_level(tmp_path: Path):
    (tmp_path / "poststack.toml").write_text('database_url = "embedded"\n[environments.prod]\nlock_timeout = 5\n')
    with pytest.raises(UsageError, match="environment 'prod' has no database URL"):
        resolve_settings(environment="prod", environ={}, cwd=tmp_path, embedded_by_default=True)


@pytest.mark.parametrize(
    ("env", "dotenv", "chosen"),
    [
        ({"DATABASE_URL": URL_SHELL}, "", "dev"),  # the shell's (development) database
        ({}, f"DATABASE_URL={URL_DOTENV}\n", "dev"),
    ],
)
def test_an_environment_without_its_own_url_ignores_the_ambient_ones(project: Path, env, dotenv, chosen):
    if dotenv:
        (project / ".env").write_text(dotenv)
    with pytest.raises(UsageError, match=f"environment '{chosen}' has no database URL"):
        resolve_settings(environment=chosen, environ=env, cwd=project)


def test_poststack_database_url_and_an_environments_url_must_agree(project: Path):
    with pytest.raises(UsageError) as raised:
        resolve_settings(environment="prod", environ={"POSTSTACK_DATABASE_URL": URL_OWN}, cwd=project)
    assert raised.value.exit_code == 2
    assert "name two databases" in raised.value.summary and "s3cret" not in raised.value.summary
    # The same database, its password given by the secret: one database, however written.
    for same in (
        "postgresql://prod:other@h/prod",
        "postgresql://prod@h/prod",
        "postgres://prod:s3cret@h/prod ",
        "postgresql://prod@h/prod?password=other",
    ):
        settings = resolve_settings(environment="prod", environ={"POSTSTACK_DATABASE_URL": same}, cwd=project)
        assert settings.database_url == same and settings.url_source == "POSTSTACK_DATABASE_URL"
    # From .env, as from the shell: a break-glass URL there is never silently ignored.
    (project / ".env").write_text(f"POSTSTACK_DATABASE_URL={URL_DOTENV}\n")
    with pytest.raises(UsageError, match=r"POSTSTACK_DATABASE_URL in .*\.env .* name two databases"):
        resolve_settings(environment="prod", environ={}, cwd=project)


def test_no_environment_is_the_top_level(project: Path):
    settings = resolve_settings(environ={}, cwd=project)
    assert settings.environment is None and settings.database_url == URL_TOP and settings.tracking_schema == "top"


def test_poststack_env_chooses_too_and_the_flag_wins(project: Path):
    own = {"POSTSTACK_DATABASE_URL": URL_OWN}  # dev names no database of its own
    assert resolve_settings(environ={"POSTSTACK_ENV": "dev", **own}, cwd=project).environment == "dev"
    settings = resolve_settings(environment="prod", environ={"POSTSTACK_ENV": "dev"}, cwd=project)
    assert settings.environment == "prod" and settings.origins.environment_source == "--env"
    (project / ".env").write_text("POSTSTACK_ENV=dev\n")
    settings = resolve_settings(environ=own, cwd=project)
    assert settings.environment == "dev"
    assert settings.origins.environment_source == f"POSTSTACK_ENV in {project / '.env'}"


def test_pyproject_environments(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.poststack]\ntracking_schema = "top"\n\n'
        f'[tool.poststack.environments.staging]\ndatabase_url = "{URL_PROD}"\nlock_timeout = 2.5\n'
    )
    settings = resolve_settings(environment="staging", environ={}, cwd=tmp_path)
    assert (settings.database_url, settings.tracking_schema, settings.lock_timeout) == (URL_PROD, "top", 2.5)
    assert settings.url_source == "pyproject.toml [tool.poststack.environments.staging]"


# --- precedence ----------------------------------------------------------------------------


def test_flags_then_variables_then_dotenv_then_environment_then_top_level(project: Path):
    (project / ".env").write_text("POSTSTACK_SCHEMA=dotenv\nPOSTSTACK_LOCK_TIMEOUT=7\n")
    env = {"POSTSTACK_SCHEMA": "shell"}
    settings = resolve_settings(environment="prod", tracking_schema="flag", environ=env, cwd=project)
    assert settings.tracking_schema == "flag" and settings.origins.of("tracking_schema") == "--schema"
    settings = resolve_settings(environment="prod", environ=env, cwd=project)
    assert settings.tracking_schema == "shell" and settings.origins.of("tracking_schema") == "POSTSTACK_SCHEMA"
    settings = resolve_settings(environment="prod", environ={}, cwd=project)
    assert settings.tracking_schema == "dotenv"
    assert settings.origins.of("tracking_schema") == f"POSTSTACK_SCHEMA in {project / '.env'}"
    assert settings.lock_timeout == 7  # .env beats the environment's 120
    (project / ".env").unlink()
    assert resolve_settings(environment="prod", environ={}, cwd=project).tracking_schema == "prod"
    assert resolve_settings(environ={}, cwd=project).tracking_schema == "top"


@pytest.mark.parametrize(
    ("flag", "env", "dotenv", "chosen", "expected", "source"),
    [
        # DATABASE_URL is everyone's (often the development database): a chosen environment wins.
        (None, {"DATABASE_URL": URL_SHELL}, "", "prod", URL_PROD, "poststack.toml [environments.prod]"),
        (None, {}, f"DATABASE_URL={URL_DOTENV}\n", "prod", URL_PROD, "poststack.toml [environments.prod]"),
        # ... but DATABASE_URL still beats the top level, as it always has.
        (None, {"DATABASE_URL": URL_SHELL}, "", None, URL_SHELL, "DATABASE_URL"),
        # The real environment beats .env.
        (None, {"DATABASE_URL": URL_SHELL}, f"DATABASE_URL={URL_DOTENV}\n", None, URL_SHELL, "DATABASE_URL"),
        # An empty DATABASE_URL is unset, in the shell as ever: .env's is used.
        (None, {"DATABASE_URL": ""}, f"DATABASE_URL={URL_DOTENV}\n", None, URL_DOTENV, "DATABASE_URL in .env"),
        (None, {}, f"POSTSTACK_DATABASE_URL={URL_DOTENV}\n", None, URL_DOTENV, "POSTSTACK_DATABASE_URL in .env"),
        # POSTSTACK_DATABASE_URL in .env is poststack's own too: it names dev's database.
        (None, {}, f"POSTSTACK_DATABASE_URL={URL_DOTENV}\n", "dev", URL_DOTENV, "POSTSTACK_DATABASE_URL in .env"),
        (URL_OWN, {"POSTSTACK_DATABASE_URL": URL_SHELL}, "", "prod", URL_OWN, "--database-url"),
    ],
)
def test_database_url_precedence(project: Path, flag, env, dotenv, chosen, expected, source):
    if dotenv:
        (project / ".env").write_text(dotenv)
    settings = resolve_settings(database_url=flag, environment=chosen, environ=env, cwd=project)
    assert settings.database_url == expected
    assert settings.url_source == source.replace(".env", str(project / ".env"))


def test_dotenv_values_and_other_apps_keys(tmp_path: Path):
    (tmp_path / ".env").write_text(
        "# the app's settings too\nSECRET_KEY='x'\nREDIS_URL=redis://h\nexport POSTSTACK_MIGRATIONS_DIR=sql\n"
        f'DATABASE_URL="{URL_DOTENV}"  # local\n'
    )
    settings = resolve_settings(environ={}, cwd=tmp_path)
    assert settings.database_url == URL_DOTENV
    assert settings.migrations_dir == tmp_path / "sql"
    assert settings.origins.dotenv_file == tmp_path / ".env"


# --- mistakes: one usage error each, before anything connects ------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('lock_timeout = "abc"\n', "poststack.toml: lock_timeout must be a number of seconds, not a string ('abc')"),
        ("lock_timeout = true\n", "poststack.toml: lock_timeout must be a number of seconds, not a boolean (True)"),
        ("lock_timeout = nan\n", "poststack.toml: lock_timeout must be a finite number of seconds, not nan"),
        ("migrations_dir = 3\n", "poststack.toml: migrations_dir must be a string, not a number (3)"),
        (
            "[environments.prod]\ntracking_schema = [1]\n",
            "poststack.toml [environments.prod]: tracking_schema must be a string, not an array ([1])",
        ),
        (
            "[environments.prod]\ndatabse_url = 'x'\n",
            "poststack.toml [environments.prod]: unknown key 'databse_url'; did you mean 'database_url'?",
        ),
        ("environments = 3\n", "poststack.toml: environments must be tables, [environments.NAME]"),
        (
            "[environments]\nprod = 'x'\n",
            "poststack.toml [environments.prod]: must be a table of settings, not a string",
        ),
        ("[environments.prod.environments.x]\n", "poststack.toml [environments.prod]: unknown key 'environments'"),
    ],
)
def test_a_wrong_value_in_the_project_file(tmp_path: Path, text: str, message: str):
    (tmp_path / "poststack.toml").write_text(f'database_url = "{URL_TOP}"\n' + text)
    with pytest.raises(UsageError) as raised:
        resolve_settings(environ={}, cwd=tmp_path)  # a mistake in any environment, chosen or not
    assert raised.value.summary == f"{tmp_path}/{message}"
    assert raised.value.exit_code == 2


@pytest.mark.parametrize(
    ("env", "dotenv", "message"),
    [
        (
            {"POSTSTACK_LOCK_TIMEOUT": "abc"},
            "",
            "lock timeout from POSTSTACK_LOCK_TIMEOUT is not a number of seconds: 'abc'",
        ),
        (
            {},
            "POSTSTACK_LOCK_TIMEOUT=soon\n",
            "lock timeout from POSTSTACK_LOCK_TIMEOUT in {env} is not a number of seconds: 'soon'",
        ),
        ({"POSTSTACK_LOCK_TIMEOUT": "-1"}, "", "lock timeout from POSTSTACK_LOCK_TIMEOUT must be between 0 and"),
        ({"POSTSTACK_LOCK_TIMEOUT": ""}, "", "environment variable POSTSTACK_LOCK_TIMEOUT is set but empty"),
        ({"POSTSTACK_ENV": ""}, "", "environment variable POSTSTACK_ENV is set but empty"),
        ({}, "A=1\nPOSTSTACK_SCHEMA=\n", "{env}:2: POSTSTACK_SCHEMA is set but empty"),
        (
            {},
            "OTHER_APP=1\nPOSTSTACK_DATABSE_URL=x\n",
            "{env}:2: POSTSTACK_DATABSE_URL is not a variable poststack reads; did you mean 'POSTSTACK_DATABASE_URL'?",
        ),
        ({}, "GOOD=1\nthis is not an assignment\n", "{env}:2: not a KEY=value line"),
    ],
)
def test_a_wrong_variable_or_dotenv_line(tmp_path: Path, env, dotenv, message):
    if dotenv:
        (tmp_path / ".env").write_text(dotenv)
    with pytest.raises(UsageError) as raised:
        resolve_settings(database_url=URL_OWN, environ=env, cwd=tmp_path)
    assert message.format(env=tmp_path / ".env") in raised.value.summary
    assert raised.value.exit_code == 2


def test_a_flag_lock_timeout_out_of_range_names_the_flag(tmp_path: Path):
    with pytest.raises(UsageError, match="lock timeout from --lock-timeout must be between 0 and"):
        resolve_settings(database_url=URL_OWN, lock_timeout=-1, environ={}, cwd=tmp_path)
    assert resolve_settings(database_url=URL_OWN, environ={}, cwd=tmp_path).lock_timeout == DEFAULT_LOCK_TIMEOUT


def test_an_unknown_environment_gets_a_suggestion(project: Path):
    with pytest.raises(UsageError) as raised:
        resolve_settings(environment="prdo", environ={}, cwd=project, embedded_by_default=True)
    assert raised.value.summary == "unknown environment 'prdo' (from --env); did you mean 'prod'?"
    assert raised.value.detail == f"{project / 'poststack.toml'} defines: dev, prod."
    with pytest.raises(UsageError, match=r"unknown environment 'qa' \(from POSTSTACK_ENV\)$"):
        resolve_settings(environ={"POSTSTACK_ENV": "qa"}, cwd=project)


def test_an_environment_without_a_project_file(tmp_path: Path):
    with pytest.raises(UsageError, match=r"unknown environment 'prod' .*there is no poststack\.toml"):
        resolve_settings(environment="prod", environ={"DATABASE_URL": URL_SHELL}, cwd=tmp_path)


def test_an_environment_without_a_url_never_falls_back_to_the_embedded_server(tmp_path: Path):
    (tmp_path / "poststack.toml").write_text('[environments.prod]\ntracking_schema = "ops"\n')
    (tmp_path / ".env").write_text("OTHER=1\n")
    with pytest.raises(UsageError) as raised:
        # Even at a terminal, where an unnamed database may otherwise be the embedded one.
        resolve_settings(environment="prod", environ={}, cwd=tmp_path, embedded_by_default=True)
    assert raised.value.exit_code == 2
    assert raised.value.summary == (
        "environment 'prod' has no database URL: poststack looked at --database-url, POSTSTACK_DATABASE_URL, "
        f"POSTSTACK_DATABASE_URL in {tmp_path / '.env'}, database_url in {tmp_path / 'poststack.toml'} [environments.prod]"
    )
    assert "never falls back to the embedded server" in (raised.value.detail or "")
    # A command that opens no connection does not need one; without an environment, as before.
    local = resolve_settings(
        environment="prod", environ={}, cwd=tmp_path, needs_database=False, embedded_by_default=True
    )
    assert local.embedded and local.tracking_schema == "ops"
    assert resolve_settings(environ={}, cwd=tmp_path, embedded_by_default=True).embedded
    with pytest.raises(DatabaseUnavailable):
        resolve_settings(environ={}, cwd=tmp_path)


def test_a_dotenv_value_poststack_reads_may_not_refer_to_another_variable(tmp_path: Path):
    (tmp_path / ".env").write_text("HOST=db\nOTHER=${HOST}/x\nDATABASE_URL=postgresql://app@${HOST}/app\n")
    with pytest.raises(UsageError) as raised:
        resolve_settings(environ={}, cwd=tmp_path)
    assert raised.value.summary.startswith(f"{tmp_path / '.env'}:3: DATABASE_URL refers to another variable")
