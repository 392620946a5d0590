"""Settings: where the database is, where the migrations are, where tracking lives.

Resolution order for the database URL: ``--database-url``, ``POSTSTACK_DATABASE_URL``,
``DATABASE_URL``, ``poststack.toml``, ``[tool.poststack]`` in ``pyproject.toml``. An empty
DATABASE_URL counts as unset, an empty poststack setting is an error; the value
``embedded`` (or ``--embedded``) chooses the embedded PostgreSQL. With none named, the embedded server is used only where the caller says it may
be (an interactive terminal, the demo): elsewhere a missing secret must not become a
successful run on a throwaway server.
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

from reconciler.errors import DatabaseUnavailable, UsageError, did_you_mean
from reconciler.statements import qualified

DEFAULT_MIGRATIONS_DIR = "migrations"
DEFAULT_SCHEMA = "public"
# The tracking tables are <prefix>migrations, <prefix>migrations_lock, <prefix>migrations_audit.
DEFAULT_TABLE_PREFIX = "schema_"
DEFAULT_LOCK_TIMEOUT = 30.0
MAX_LOCK_TIMEOUT = 2_147_483  # PostgreSQL's lock_timeout ceiling, in seconds
EMBEDDED = "embedded"

# The one list of what poststack reads: each project-file key, and its environment variable.
SETTING_VARIABLES: dict[str, str] = {
    "database_url": "POSTSTACK_DATABASE_URL",
    "migrations_dir": "POSTSTACK_MIGRATIONS_DIR",
    "tracking_schema": "POSTSTACK_SCHEMA",
    "table_prefix": "POSTSTACK_TABLE_PREFIX",
    "layout": "POSTSTACK_LAYOUT",
    "shadow_database_url": "POSTSTACK_SHADOW_DATABASE_URL",
    "numbering": "POSTSTACK_NUMBERING",  # how poststack new numbers: sequence or timestamp
}
# POSTSTACK_ variables that poststack's own test suite and benchmarks read, not poststack:
# a developer's shell has them set while running poststack.
OTHER_VARIABLES = (
    "POSTSTACK_TEST_DATABASE_URL",
    "POSTSTACK_BENCH_DATABASE_URL",
    "POSTSTACK_RELIABILITY",
    "POSTSTACK_FOREIGN_TOOLS",  # where the tests find dbmate and sqlx (tests/foreign)
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@/\n]*)(?P<tail>@)")
# A configured URL, read whole: its password runs to the last "@", so one written carelessly
# (an unencoded "/", "@" or "%") is hidden too. Only for text known to be that URL: in free
# text the same pattern would swallow "host:443/@scope" and the like.
_CARELESS_URL = re.compile(r"^(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>.*)(?P<tail>@[^@]*)$", re.DOTALL)
_PASSWORD_IN_DSN = re.compile(r"(?P<head>(?<![?&])\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_PASSWORD_IN_QUERY = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&\s]*)", re.IGNORECASE)


@dataclass(frozen=True)
class TrackingLocation:
    """Where poststack keeps its tables: a schema, and the prefix of their names. Two
    prefixes in one schema are two independent histories, each with its own lock."""

    schema: str = DEFAULT_SCHEMA
    prefix: str = DEFAULT_TABLE_PREFIX

    @property
    def migrations_table(self) -> str:
        return f"{self.prefix}migrations"

    @property
    def lock_table(self) -> str:
        return f"{self.prefix}migrations_lock"

    @property
    def audit_table(self) -> str:
        return f"{self.prefix}migrations_audit"

    @property
    def tables(self) -> tuple[str, str, str]:
        return (self.migrations_table, self.lock_table, self.audit_table)

    @property
    def version_index(self) -> str:
        return f"{self.prefix}migrations_version_idx"

    # The qualified, quoted names, for SQL text.
    @property
    def migrations_sql(self) -> str:
        return qualified(self.schema, self.migrations_table)

    @property
    def lock_sql(self) -> str:
        return qualified(self.schema, self.lock_table)

    @property
    def audit_sql(self) -> str:
        return qualified(self.schema, self.audit_table)


DEFAULT_TRACKING = TrackingLocation()


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know about where things are. ``database_url`` is
    ``None`` when the embedded server is to be used (it was chosen, or allowed by default)."""

    database_url: str | None
    url_source: str
    migrations_dir: Path
    tracking_schema: str
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    debug: bool = False
    table_prefix: str = DEFAULT_TABLE_PREFIX
    layout: str | None = None  # a layout's name; None: detected from the migrations directory
    shadow_url: str | None = None  # where to replay the history; None: a scratch database beside the target
    replay: bool = True  # --no-replay: diagnose from the parsed evidence only
    numbering: str | None = None  # poststack new: sequence or timestamp; None: as the files are numbered

    @property
    def tracking(self) -> TrackingLocation:
        return TrackingLocation(self.tracking_schema, self.table_prefix)

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
        table = _load_toml(own)
        _check_keys(table, str(own))
        return table, own, "poststack.toml"
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file():
        tool = _load_toml(pyproject).get("tool", {})
        table = tool.get("poststack") if isinstance(tool, dict) else None
        if isinstance(table, dict):
            _check_keys(table, f"{pyproject} [tool.poststack]")
            return table, pyproject, "pyproject.toml [tool.poststack]"
    return {}, None, ""


def _check_keys(table: Mapping[str, object], where: str) -> None:
    """A key poststack does not read is a typo until shown otherwise: a misspelt
    ``database-url`` must not quietly leave the database unset."""
    for key in table:
        if key not in SETTING_VARIABLES:
            raise UsageError(
                f"{where}: unknown key {key!r}{did_you_mean(key, SETTING_VARIABLES)}",
                f"poststack reads {', '.join(SETTING_VARIABLES)}.",
            )


def _check_environment(env: Mapping[str, str]) -> None:
    """A POSTSTACK_ variable poststack does not read is a typo (POSTSTACK_DATABSE_URL,
    POSTSTACK_DB_URL), for the same reason as an unknown key: ignored, it would let
    DATABASE_URL or the default choose the database instead."""
    known = (*SETTING_VARIABLES.values(), *OTHER_VARIABLES)
    for name in sorted(env):
        if name.startswith("POSTSTACK_") and name not in known:
            raise UsageError(
                f"environment variable {name} is not one poststack reads{did_you_mean(name, known)}",
                f"poststack reads {', '.join(SETTING_VARIABLES.values())} (and DATABASE_URL); rename or unset {name}.",
            )


def _refuse_empty(flags: Mapping[str, str | None], env: Mapping[str, str]) -> None:
    """A setting given but empty is a variable that was not set (--schema "$SCHEMA", a secret
    that was not mounted): falling back to the next source, or to the default, would run
    on a database, or with a tracking table, nobody chose."""
    for name, value in flags.items():
        if value is not None and not value.strip():
            raise UsageError(
                f"{name} is empty (a variable that was not set?)",
                f"Pass a value, or leave {name} out to use the environment, poststack.toml or the default.",
            )
    for name in SETTING_VARIABLES.values():
        value = env.get(name)
        if value is not None and not value.strip():
            raise UsageError(
                f"environment variable {name} is set but empty (a secret that was not mounted?)",
                f"Give it a value, or unset it to use {'DATABASE_URL, ' if name == SETTING_VARIABLES['database_url'] else ''}"
                "poststack.toml or the default.",
            )


def _names_embedded(url: str) -> bool:
    return url.strip().lower() == EMBEDDED


def _nothing_named(cwd: Path) -> DatabaseUnavailable:
    """Where poststack looked, and how to choose: the one sentence a deploy with a missing
    secret prints instead of migrating a throwaway server."""
    places = ["--database-url", "POSTSTACK_DATABASE_URL", "DATABASE_URL", str(cwd / "poststack.toml")]
    if not (cwd / "poststack.toml").is_file():  # when it exists, pyproject.toml is not read
        places.append(f"{cwd / 'pyproject.toml'} [tool.poststack]")
    return DatabaseUnavailable(
        f"no database named: poststack looked at {', '.join(places[:-1])} and {places[-1]}; "
        "set one of them to a postgresql:// URL, or pass --embedded for a throwaway local server "
        "(the default only on an interactive terminal)"
    )


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
    embedded: bool = False,
    embedded_by_default: bool = False,
    migrations_dir: str | Path | None = None,
    tracking_schema: str | None = None,
    table_prefix: str | None = None,
    layout: str | None = None,
    shadow_url: str | None = None,
    no_replay: bool = False,
    lock_timeout: float | None = None,
    debug: bool = False,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve flags, environment and project file into Settings. Flags win.

    ``embedded`` is the --embedded flag. ``embedded_by_default`` says whether, with no
    database named anywhere, the embedded server may be used: the interface decides (an
    interactive terminal, the demo); otherwise that is DatabaseUnavailable, raised after
    every usage error so a typo is reported as one."""
    env = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    _check_environment(env)
    table, project_file, project_label = _read_project_file(cwd)
    base = project_file.parent if project_file else cwd

    _refuse_empty(
        {
            "--database-url": database_url,
            "--migrations-dir": None if migrations_dir is None else str(migrations_dir),
            "--schema": tracking_schema,
            "--table-prefix": table_prefix,
            "--layout": layout,
            "--shadow-url": shadow_url,
        },
        env,
    )
    url, source = _nonempty(database_url), "--database-url"
    if embedded:
        if url is not None and not _names_embedded(url):
            raise UsageError(f"--embedded and --database-url {masked_url(url)} name two databases; pass one of them")
        url, source = EMBEDDED, "--embedded"  # a flag: it wins over the environment, as --database-url does
    for variable in (SETTING_VARIABLES["database_url"], "DATABASE_URL"):
        if url is None:
            url, source = _nonempty(env.get(variable)), variable
    if url is None:
        url, source = _string_option(table, "database_url", project_file), project_label
    nothing_named = url is None
    if url is None:
        source = EMBEDDED
    elif _names_embedded(url):
        url = None  # the embedded server, chosen by name in ``source``
    elif not re.match(r"^postgres(ql)?(\+psycopg2)?://", url):
        raise UsageError(
            f"database URL from {source} is not a postgresql:// URL: {masked_url(url)}",
            "Write it as postgresql://USER@HOST:5432/DBNAME, with the password after USER: or in PGPASSWORD.",
        )

    directory = _nonempty(str(migrations_dir) if migrations_dir is not None else None)
    dir_base = cwd
    if directory is None:
        directory = _nonempty(env.get(SETTING_VARIABLES["migrations_dir"]))
    if directory is None:
        directory, dir_base = _string_option(table, "migrations_dir", project_file), base
    directory = directory or DEFAULT_MIGRATIONS_DIR
    path = Path(directory)
    if not path.is_absolute():
        path = dir_base / path

    schema = (
        _nonempty(tracking_schema)
        or _nonempty(env.get(SETTING_VARIABLES["tracking_schema"]))
        or _string_option(table, "tracking_schema", project_file)
        or DEFAULT_SCHEMA
    )
    if not _IDENTIFIER.match(schema):
        raise UsageError(f"tracking schema {schema!r} is not a plain PostgreSQL identifier")
    schema = schema.lower()  # as PostgreSQL folds an unquoted name: --schema Ops means ops

    prefix = (
        _nonempty(table_prefix)
        or _nonempty(env.get(SETTING_VARIABLES["table_prefix"]))
        or _string_option(table, "table_prefix", project_file)
        or DEFAULT_TABLE_PREFIX
    )
    # The longest name, the sequence PostgreSQL makes for <prefix>migrations_audit
    # (<prefix>migrations_audit_id_seq), must stay within its 63 bytes, or it is cut short.
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_$]{0,39}$", prefix):
        raise UsageError(
            f"tracking table prefix {prefix!r} is not the start of a plain PostgreSQL identifier",
            "Use letters, digits and underscores, at most 40 characters (e.g. poststack_).",
        )
    prefix = prefix.lower()

    chosen_layout = (
        _nonempty(layout)
        or _nonempty(env.get(SETTING_VARIABLES["layout"]))
        or _string_option(table, "layout", project_file)
    )
    # Its name is checked against the layouts by the interface (config sits below desired/).

    shadow, shadow_source = _nonempty(shadow_url), "--shadow-url"
    if shadow is None:
        variable = SETTING_VARIABLES["shadow_database_url"]
        shadow, shadow_source = _nonempty(env.get(variable)), variable
    if shadow is None:
        shadow, shadow_source = _string_option(table, "shadow_database_url", project_file), project_label
    if shadow is not None and not re.match(r"^postgres(ql)?://", shadow):
        raise UsageError(
            f"shadow database URL from {shadow_source} is not a postgresql:// URL: {masked_url(shadow)}",
            "The history is replayed there: write it as postgresql://USER@HOST:5432/DBNAME.",
        )

    timeout = DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout
    if not math.isfinite(timeout) or not 0 <= timeout <= MAX_LOCK_TIMEOUT:
        raise UsageError(f"--lock-timeout must be between 0 and {MAX_LOCK_TIMEOUT} seconds")

    if nothing_named and not embedded_by_default:
        raise _nothing_named(cwd)
    return Settings(
        database_url=url,
        url_source=source,
        migrations_dir=path,
        tracking_schema=schema,
        lock_timeout=timeout,
        debug=debug,
        table_prefix=prefix,
        layout=chosen_layout,
        shadow_url=shadow,
        replay=not no_replay,
        # Checked by poststack new, the one command that numbers (desired/scaffold.py).
        numbering=_nonempty(env.get(SETTING_VARIABLES["numbering"]))
        or _string_option(table, "numbering", project_file),
    )
