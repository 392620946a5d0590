"""Settings: where the database is, where the migrations are, where tracking lives.

Resolution order for the database URL: ``--database-url``, ``POSTSTACK_DATABASE_URL``,
``DATABASE_URL``, ``poststack.toml``, ``[tool.poststack]`` in ``pyproject.toml``;
with none, an embedded PostgreSQL. An empty value counts as unset.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from reconciler.errors import UsageError

DEFAULT_MIGRATIONS_DIR = "migrations"
DEFAULT_SCHEMA = "public"
DEFAULT_LOCK_TIMEOUT = 30.0
MAX_LOCK_TIMEOUT = 2_147_483  # PostgreSQL's lock_timeout ceiling, in seconds
EMBEDDED = "embedded"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@/\n]*)(?P<tail>@)")
# A configured URL, read whole: its password runs to the last "@", so one written carelessly
# (an unencoded "/", "@" or "%") is hidden too. Only for text known to be that URL: in free
# text the same pattern would swallow "host:443/@scope" and the like.
_CARELESS_URL = re.compile(r"^(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>.*)(?P<tail>@[^@]*)$", re.DOTALL)
_PASSWORD_IN_DSN = re.compile(r"(?P<head>(?<![?&])\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_PASSWORD_IN_QUERY = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&\s]*)", re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know about where things are. ``database_url`` is
    ``None`` when the embedded server is to be used."""

    database_url: str | None
    url_source: str
    migrations_dir: Path
    tracking_schema: str
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    debug: bool = False

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def embedded_data_dir(self) -> Path:
        """The embedded server lives beside the migrations directory, under .poststack/."""
        return self.migrations_dir.resolve().parent / ".poststack" / "pgdata"

    @property
    def display_url(self) -> str:
        return masked_url(self.database_url) if self.database_url else f"embedded PostgreSQL ({self.embedded_data_dir})"


def mask_url(text: str) -> str:
    """Replace every password in ``text`` (URL userinfo, ``?password=``, ``password=`` DSN) with ***."""
    text = _PASSWORD_IN_URL.sub(lambda m: m["head"] + ("***" if m["pw"] else "") + m["tail"], text)
    text = _PASSWORD_IN_QUERY.sub(lambda m: m["head"] + "***", text)
    return _PASSWORD_IN_DSN.sub(lambda m: m["head"] + "***", text)


def masked_url(url: str) -> str:
    """The configured database URL for display, its password hidden however it is written."""
    match = _CARELESS_URL.match(url)
    if match and match["pw"]:
        url = match["head"] + "***" + match["tail"]
    return mask_url(url)


def mask_url_secrets(text: str, url: str) -> str:
    """``text``, a message about ``url``, with ``url``'s password hidden wherever it appears:
    libpq quotes the part of a URL it cannot read, and that part may be the password."""
    careless = _CARELESS_URL.match(url)
    found = [m["pw"] for m in _PASSWORD_IN_QUERY.finditer(url)] + ([careless["pw"]] if careless else [])
    secrets = {s for s in found if s} | {unquote(s) for s in found if s}
    secrets |= {s.strip("\"'") for s in secrets if s.strip("\"'")}
    # libpq ends the password at its first "@": the rest is read as the host, and quoted as one.
    secrets |= {s.split("@", 1)[1] for s in secrets if "@" in s and s.split("@", 1)[1]}
    for quoted in set(re.findall(r'"([^"]*)"', text)):
        # Any overlap hides the token: a short password may hide a harmless one too.
        if quoted and any(quoted in s or s in quoted for s in secrets):
            text = text.replace(f'"{quoted}"', '"***"')
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")  # unquoted, or inside quotes of its own
    return mask_url(text)


def _nonempty(value: str | None) -> str | None:
    return value if value is not None and value.strip() else None


def _read_project_file(cwd: Path) -> tuple[dict[str, object], Path | None, str]:
    """The [tool.poststack] table (or poststack.toml's top level) and the file it came from."""
    own = cwd / "poststack.toml"
    if own.is_file():
        return _load_toml(own), own, "poststack.toml"
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file():
        tool = _load_toml(pyproject).get("tool", {})
        table = tool.get("poststack") if isinstance(tool, dict) else None
        if isinstance(table, dict):
            return table, pyproject, "pyproject.toml [tool.poststack]"
    return {}, None, ""


def _load_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from e
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror}") from e


def _string_option(table: Mapping[str, object], key: str, path: Path | None) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError(f"{path}: '{key}' must be a string")
    return _nonempty(value)


def resolve_settings(
    *,
    database_url: str | None = None,
    migrations_dir: str | Path | None = None,
    tracking_schema: str | None = None,
    lock_timeout: float | None = None,
    debug: bool = False,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve flags, environment and project file into Settings. Flags win."""
    env = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    table, project_file, project_label = _read_project_file(cwd)
    base = project_file.parent if project_file else cwd

    url, source = _nonempty(database_url), "--database-url"
    for variable in ("POSTSTACK_DATABASE_URL", "DATABASE_URL"):
        if url is None:
            url, source = _nonempty(env.get(variable)), variable
    if url is None:
        url, source = _string_option(table, "database_url", project_file), project_label
    if url is None:
        source = EMBEDDED
    elif not re.match(r"^postgres(ql)?(\+psycopg2)?://", url):
        raise UsageError(
            f"database URL from {source} is not a postgresql:// URL: {masked_url(url)}",
            "Write it as postgresql://USER@HOST:5432/DBNAME, with the password after USER: or in PGPASSWORD.",
        )

    directory = _nonempty(str(migrations_dir) if migrations_dir is not None else None)
    dir_base = cwd
    if directory is None:
        directory = _nonempty(env.get("POSTSTACK_MIGRATIONS_DIR"))
    if directory is None:
        directory, dir_base = _string_option(table, "migrations_dir", project_file), base
    directory = directory or DEFAULT_MIGRATIONS_DIR
    path = Path(directory)
    if not path.is_absolute():
        path = dir_base / path

    schema = (
        _nonempty(tracking_schema)
        or _nonempty(env.get("POSTSTACK_SCHEMA"))
        or _string_option(table, "tracking_schema", project_file)
        or DEFAULT_SCHEMA
    )
    if not _IDENTIFIER.match(schema):
        raise UsageError(f"tracking schema {schema!r} is not a plain PostgreSQL identifier")
    schema = schema.lower()  # as PostgreSQL folds an unquoted name: --schema Ops means ops

    timeout = DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout
    if not math.isfinite(timeout) or not 0 <= timeout <= MAX_LOCK_TIMEOUT:
        raise UsageError(f"--lock-timeout must be between 0 and {MAX_LOCK_TIMEOUT} seconds")

    return Settings(
        database_url=url,
        url_source=source,
        migrations_dir=path,
        tracking_schema=schema,
        lock_timeout=timeout,
        debug=debug,
    )
