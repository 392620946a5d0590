from pathlib import Path

import pytest

from reconciler.config import EMBEDDED, OTHER_VARIABLES, SETTING_VARIABLES, mask_url, resolve_settings
from reconciler.errors import EXIT_DATABASE, DatabaseUnavailable, UsageError

URL_A = "postgresql://a:pw@host/a"
URL_B = "postgresql://b:pw@host/b"


@pytest.mark.parametrize(
    ("flag", "env", "expected", "source"),
    [
        (URL_A, {"POSTSTACK_DATABASE_URL": URL_B, "DATABASE_URL": URL_B}, URL_A, "--database-url"),
        (None, {"POSTSTACK_DATABASE_URL": URL_A, "DATABASE_URL": URL_B}, URL_A, "POSTSTACK_DATABASE_URL"),
        (None, {"DATABASE_URL": URL_B}, URL_B, "DATABASE_URL"),
        (None, {"DATABASE_URL": ""}, None, EMBEDDED),  # another tool's variable: empty is unset
        (None, {}, None, EMBEDDED),
    ],
)
def test_url_resolution_order(tmp_path, flag, env, expected, source):
    settings = resolve_settings(database_url=flag, environ=env, cwd=tmp_path, embedded_by_default=True)
    assert settings.database_url == expected
    assert settings.url_source == source
    assert settings.embedded is (expected is None)


def test_poststack_toml_then_pyproject(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.poststack]\ndatabase_url = "postgresql://p@h/p"\nmigrations_dir = "db/migrations"\ntracking_schema = "ops"\n'
    )
    settings = resolve_settings(environ={}, cwd=tmp_path)
    assert settings.database_url == "postgresql://p@h/p"
    assert settings.migrations_dir == tmp_path / "db" / "migrations"
    assert settings.tracking_schema == "ops"
    (tmp_path / "poststack.toml").write_text('database_url = "postgresql://t@h/t"\n')
    settings = resolve_settings(environ={}, cwd=tmp_path)
    assert settings.database_url == "postgresql://t@h/t"
    assert settings.url_source == "poststack.toml"
    assert settings.migrations_dir == tmp_path / "migrations"
    assert settings.tracking_schema == "public"


def test_environment_beats_project_file(tmp_path: Path):
    (tmp_path / "poststack.toml").write_text('database_url = "postgresql://t@h/t"\n')
    settings = resolve_settings(environ={"DATABASE_URL": URL_B}, cwd=tmp_path)
    assert settings.database_url == URL_B


def test_embedded_data_lives_beside_migrations(tmp_path: Path):
    settings = resolve_settings(environ={}, cwd=tmp_path, migrations_dir="sql/migrations", embedded=True)
    assert settings.embedded_data_dir == tmp_path / "sql" / ".poststack" / "pgdata"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"database_url": "mysql://x@y/z"}, "not a postgresql:// URL"),
        ({"tracking_schema": "bad schema; drop"}, "not a plain PostgreSQL identifier"),
        ({"lock_timeout": -1}, "--lock-timeout"),
        ({"ddl_lock_timeout": -1}, "--ddl-lock-timeout"),
        ({"ddl_lock_timeout": 0.0004}, "must be 0 \\(no timeout\\) or between 0.001"),
        ({"ddl_lock_retries": -1}, "--ddl-lock-retries"),
    ],
)
def test_bad_settings_are_usage_errors(tmp_path, bad, message):
    with pytest.raises(UsageError, match=message):
        resolve_settings(environ={}, cwd=tmp_path, **bad)


def test_bad_toml_names_the_file(tmp_path: Path):
    (tmp_path / "poststack.toml").write_text("database_url = \n")
    with pytest.raises(UsageError, match=r"poststack\.toml: not valid TOML"):
        resolve_settings(environ={}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql://u:s3cret@h:5432/d", "postgresql://u:***@h:5432/d"),
        ("postgresql://u@h/d", "postgresql://u@h/d"),
        ("postgresql://u:@h/d", "postgresql://u:@h/d"),
        ("postgresql://h/d?password=s3cret&x=1", "postgresql://h/d?password=***&x=1"),
        ("host=h password=s3cret dbname=d", "host=h password=*** dbname=d"),
        ("error at postgresql://u:p%40ss@h/d: refused", "error at postgresql://u:***@h/d: refused"),
    ],
)
def test_mask_url(text, masked):
    assert mask_url(text) == masked


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("postgresql://app:100%secure@db.example.com/prod", "100%secure"),  # an unencoded %
        ("postgresql://app@db.example.com/prod?password=100%secure", "100%secure"),
        ("postgresql://app:Pa%00word@db.example.com/prod", "Pa%00word"),
        ("postgresql://app:se/cret@db.example.com/prod", "se/cret"),  # an unencoded /
        ("postgresql://app:my 100%secure@db.example.com/prod", "my 100%secure"),  # and a space
        ('postgresql://app@db.example.com/prod?password="100%secure"', "100%secure"),  # quoted
    ],
)
def test_a_url_libpq_cannot_read_never_shows_its_password(url: str, password: str):
    from reconciler import dsn

    with pytest.raises(UsageError) as raised:
        dsn.parse(url)
    message = raised.value.summary
    assert message.startswith("cannot parse database URL ")
    assert password not in message
    assert '"se"' not in message  # libpq reads "app:se" as host and port: the port it quotes is half the password


def test_mask_url_leaves_free_text_alone_and_still_hides_passwords():
    # A port then, further on, an "@": not a password (it used to be mangled in stored errors).
    text = "Key (u)=(https://registry.npmjs.org:443/@babel/core) already exists."
    assert mask_url(text) == text
    assert mask_url("postgresql://app:my secret@db:5432/prod") == "postgresql://app:***@db:5432/prod"


@pytest.mark.parametrize(
    "url",
    ["postgresql://app:se/cret@db/prod", "postgresql://app:p@ss@db/prod", "postgresql://app:my secret@db/prod"],
)
def test_a_configured_url_is_shown_without_its_password_however_written(url: str):
    from reconciler.config import masked_url

    shown = masked_url(url)
    assert (
        shown.startswith("postgresql://app:***@")
        and "secret" not in shown
        and "cret" not in shown
        and "p@ss" not in shown
    )


# --- no database named: the embedded server only where the caller allows it ---------------


def test_no_database_named_is_refused_unless_allowed(tmp_path: Path):
    with pytest.raises(DatabaseUnavailable) as raised:
        resolve_settings(environ={}, cwd=tmp_path)
    message = raised.value.summary
    assert raised.value.exit_code == EXIT_DATABASE == 3
    for place in (
        "--database-url",
        "POSTSTACK_DATABASE_URL",
        "DATABASE_URL",
        f"{tmp_path}/poststack.toml",
        f"{tmp_path}/pyproject.toml [tool.poststack]",
    ):
        assert place in message
    assert "--embedded for a throwaway local server" in message and "postgresql://" in message
    assert resolve_settings(environ={}, cwd=tmp_path, embedded_by_default=True).embedded
    # A usage error (a typo, say) is reported as one, not hidden behind the missing database.
    with pytest.raises(UsageError, match="not a plain PostgreSQL identifier"):
        resolve_settings(environ={}, cwd=tmp_path, tracking_schema="bad schema")


@pytest.mark.parametrize(
    ("flag", "env", "toml", "source"),
    [
        ("embedded", {}, None, "--database-url"),
        (None, {"POSTSTACK_DATABASE_URL": "embedded"}, None, "POSTSTACK_DATABASE_URL"),
        (None, {"DATABASE_URL": " Embedded "}, None, "DATABASE_URL"),
        (None, {}, 'database_url = "embedded"\n', "poststack.toml"),
        ("embedded", {"POSTSTACK_DATABASE_URL": URL_A}, None, "--database-url"),  # the flag wins
    ],
)
def test_embedded_chosen_by_value_in_any_source(tmp_path: Path, flag, env, toml, source):
    if toml:
        (tmp_path / "poststack.toml").write_text(toml)
    settings = resolve_settings(database_url=flag, environ=env, cwd=tmp_path)
    assert settings.embedded and settings.database_url is None and settings.url_source == source


def test_embedded_in_pyproject(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[tool.poststack]\ndatabase_url = "embedded"\n')
    assert resolve_settings(environ={}, cwd=tmp_path).embedded


def test_embedded_flag_wins_over_the_environment_but_not_with_a_url_flag(tmp_path: Path):
    settings = resolve_settings(embedded=True, environ={"DATABASE_URL": URL_B}, cwd=tmp_path)
    assert settings.embedded and settings.url_source == "--embedded"
    assert resolve_settings(embedded=True, database_url="embedded", environ={}, cwd=tmp_path).embedded
    with pytest.raises(UsageError, match=r"--embedded and --database-url postgresql://a:\*\*\*@host/a") as raised:
        resolve_settings(embedded=True, database_url=URL_A, environ={}, cwd=tmp_path)
    assert raised.value.exit_code == 2


# --- unknown keys and variables ------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "text", "where"),
    [
        ("poststack.toml", 'database-url = "postgresql://t@h/t"\n', "poststack.toml"),
        (
            "pyproject.toml",
            '[tool.poststack]\nDATABASE_URL = "postgresql://t@h/t"\n',
            "pyproject.toml [tool.poststack]",
        ),
    ],
)
def test_an_unknown_key_is_named_with_a_suggestion(tmp_path: Path, file: str, text: str, where: str):
    (tmp_path / file).write_text(text)
    with pytest.raises(UsageError) as raised:
        resolve_settings(environ={}, cwd=tmp_path, embedded_by_default=True)
    assert raised.value.exit_code == 2
    assert raised.value.summary.startswith(f"{tmp_path}/{where}: unknown key ")
    assert raised.value.summary.endswith("did you mean 'database_url'?")
    assert "database_url, migrations_dir, tracking_schema" in (raised.value.detail or "")


def test_an_unknown_key_without_a_near_one(tmp_path: Path):
    (tmp_path / "poststack.toml").write_text('colour = "blue"\n')
    with pytest.raises(UsageError, match=r"unknown key 'colour'$"):
        resolve_settings(environ={}, cwd=tmp_path, embedded_by_default=True)


def test_every_documented_key_is_read(tmp_path: Path):
    numbers = {"lock_timeout": 5, "ddl_lock_timeout": 5, "ddl_lock_retries": 3}
    text = "".join(f'{key} = "x"\n' for key in SETTING_VARIABLES if key not in numbers)
    text += "".join(f"{key} = {value}\n" for key, value in numbers.items())
    text = text.replace('lint_ignore = "x"', 'lint_ignore = ["PS204"]')
    (tmp_path / "poststack.toml").write_text(text)
    with pytest.raises(UsageError, match="not a postgresql:// URL"):  # read, not refused as unknown
        resolve_settings(environ={}, cwd=tmp_path)


def test_a_mistyped_variable_is_named_with_a_suggestion(tmp_path: Path):
    with pytest.raises(UsageError) as raised:
        resolve_settings(environ={"POSTSTACK_DATABSE_URL": URL_A}, cwd=tmp_path)
    assert raised.value.exit_code == 2
    assert raised.value.summary == (
        "environment variable POSTSTACK_DATABSE_URL is not one poststack reads; did you mean 'POSTSTACK_DATABASE_URL'?"
    )
    # Those poststack reads, and those its own tests and benchmarks read, are not typos.
    env = dict.fromkeys(OTHER_VARIABLES, "x") | dict.fromkeys(SETTING_VARIABLES.values(), "ops")
    env["POSTSTACK_SHADOW_DATABASE_URL"] = URL_A  # a URL, not a name
    env["POSTSTACK_LOCK_TIMEOUT"] = "5"  # seconds
    env["POSTSTACK_DDL_LOCK_TIMEOUT"] = "5"  # seconds
    env["POSTSTACK_DDL_LOCK_RETRIES"] = "3"
    env["POSTSTACK_NUMBERING"] = "timestamp"  # how poststack new numbers
    env["POSTSTACK_POOLER"] = "transaction"  # what sits between poststack and the server
    assert {"POSTSTACK_TEST_DATABASE_URL", "POSTSTACK_BENCH_DATABASE_URL", "POSTSTACK_RELIABILITY"} <= set(env)
    assert resolve_settings(database_url=URL_A, environ=env, cwd=tmp_path).database_url == URL_A
    # Not only near misses: POSTSTACK_DB_URL ignored would let DATABASE_URL choose the database.
    with pytest.raises(UsageError, match="POSTSTACK_DB_URL is not one poststack reads"):
        resolve_settings(environ={"POSTSTACK_DB_URL": URL_A, "DATABASE_URL": URL_B}, cwd=tmp_path)


def test_an_empty_database_url_flag_is_refused_not_passed_over(tmp_path: Path):
    with pytest.raises(UsageError, match="--database-url is empty"):
        resolve_settings(database_url="", environ={"DATABASE_URL": URL_B}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        ({}, {"POSTSTACK_DATABASE_URL": "", "DATABASE_URL": URL_B}, "POSTSTACK_DATABASE_URL is set but empty"),
        ({}, {"POSTSTACK_SCHEMA": " "}, "POSTSTACK_SCHEMA is set but empty"),
        ({"tracking_schema": ""}, {}, "--schema is empty"),
        ({"migrations_dir": ""}, {}, "--migrations-dir is empty"),
    ],
)
def test_an_empty_setting_is_refused_not_passed_over(tmp_path: Path, flags, env, named):
    """An empty POSTSTACK_DATABASE_URL (a secret not mounted) would fall back to DATABASE_URL;
    an empty --schema to public, where the data migrations look never run."""
    with pytest.raises(UsageError, match=named):
        resolve_settings(database_url=URL_A, environ=env, cwd=tmp_path, **flags)


# --- where the tracking tables live: schema and table prefix ------------------------------


@pytest.mark.parametrize(
    ("flag", "env", "project", "expected"),
    [
        ("flag_", {"POSTSTACK_TABLE_PREFIX": "env_"}, 'table_prefix = "toml_"', "flag_"),
        (None, {"POSTSTACK_TABLE_PREFIX": "env_"}, 'table_prefix = "toml_"', "env_"),
        (None, {}, 'table_prefix = "toml_"', "toml_"),
        (None, {}, "", "schema_"),
        ("PostStack_", {}, "", "poststack_"),  # folded, as PostgreSQL folds the unquoted names it makes
    ],
)
def test_table_prefix_resolution_order(tmp_path: Path, flag, env, project, expected):
    (tmp_path / "poststack.toml").write_text(f'database_url = "{URL_A}"\n{project}\n')
    settings = resolve_settings(table_prefix=flag, environ=env, cwd=tmp_path)
    assert settings.table_prefix == expected
    assert settings.tracking.tables == (
        f"{expected}migrations",
        f"{expected}migrations_lock",
        f"{expected}migrations_audit",
    )


def test_table_prefix_in_pyproject(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.poststack]\ndatabase_url = "{URL_A}"\ntracking_schema = "ops"\ntable_prefix = "poststack_"\n'
    )
    location = resolve_settings(environ={}, cwd=tmp_path).tracking
    assert (location.schema, location.prefix) == ("ops", "poststack_")
    assert location.migrations_sql == '"ops"."poststack_migrations"'
    assert location.lock_sql == '"ops"."poststack_migrations_lock"'
    assert location.audit_sql == '"ops"."poststack_migrations_audit"'


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("bad prefix", "not the start of a plain PostgreSQL identifier"),
        ("1st_", "not the start of a plain PostgreSQL identifier"),
        ('x"; drop table y; --', "not the start of a plain PostgreSQL identifier"),
        # <prefix>migrations_audit_id_seq, which PostgreSQL names, would pass 63 bytes and be cut
        ("p" * 41, "at most 40 characters"),
    ],
)
def test_a_bad_table_prefix_is_a_usage_error(tmp_path: Path, prefix: str, message: str):
    with pytest.raises(UsageError) as raised:
        resolve_settings(database_url=URL_A, table_prefix=prefix, environ={}, cwd=tmp_path)
    assert message in f"{raised.value.summary} {raised.value.detail}"
    longest = resolve_settings(database_url=URL_A, table_prefix="p" * 40, environ={}, cwd=tmp_path).tracking
    assert len(f"{longest.audit_table}_id_seq") == 63


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [({"table_prefix": ""}, {}, "--table-prefix is empty"), ({}, {"POSTSTACK_TABLE_PREFIX": ""}, "is set but empty")],
)
def test_an_empty_table_prefix_is_refused_not_passed_over(tmp_path: Path, flags, env, named):
    with pytest.raises(UsageError, match=named):
        resolve_settings(database_url=URL_A, environ=env, cwd=tmp_path, **flags)


def test_the_pooler_setting(tmp_path: Path):
    assert resolve_settings(database_url=URL_A, environ={}, cwd=tmp_path).pooler == "auto"
    env = {"POSTSTACK_POOLER": "Transaction"}
    settings = resolve_settings(database_url=URL_A, environ=env, cwd=tmp_path)
    assert (settings.pooler, settings.origins.of("pooler")) == ("transaction", "POSTSTACK_POOLER")
    (tmp_path / "poststack.toml").write_text('pooler = "pgbouncer"\n')
    with pytest.raises(UsageError, match=r"pooler from poststack\.toml is 'pgbouncer', not one of auto, none"):
        resolve_settings(database_url=URL_A, environ={}, cwd=tmp_path)
