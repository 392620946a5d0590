from pathlib import Path

import pytest

from reconciler.config import EMBEDDED, mask_url, resolve_settings
from reconciler.errors import UsageError

URL_A = "postgresql://a:pw@host/a"
URL_B = "postgresql://b:pw@host/b"


@pytest.mark.parametrize(
    ("flag", "env", "expected", "source"),
    [
        (URL_A, {"POSTSTACK_DATABASE_URL": URL_B, "DATABASE_URL": URL_B}, URL_A, "--database-url"),
        (None, {"POSTSTACK_DATABASE_URL": URL_A, "DATABASE_URL": URL_B}, URL_A, "POSTSTACK_DATABASE_URL"),
        (None, {"DATABASE_URL": URL_B}, URL_B, "DATABASE_URL"),
        (None, {"POSTSTACK_DATABASE_URL": "", "DATABASE_URL": URL_B}, URL_B, "DATABASE_URL"),
        ("", {"POSTSTACK_DATABASE_URL": "  "}, None, EMBEDDED),
        (None, {}, None, EMBEDDED),
    ],
)
def test_url_resolution_order_and_empty_means_unset(tmp_path, flag, env, expected, source):
    settings = resolve_settings(database_url=flag, environ=env, cwd=tmp_path)
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
    settings = resolve_settings(environ={}, cwd=tmp_path, migrations_dir="sql/migrations")
    assert settings.embedded_data_dir == tmp_path / "sql" / ".poststack" / "pgdata"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"database_url": "mysql://x@y/z"}, "not a postgresql:// URL"),
        ({"tracking_schema": "bad schema; drop"}, "not a plain PostgreSQL identifier"),
        ({"lock_timeout": -1}, "--lock-timeout"),
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
