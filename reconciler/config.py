"""Settings: where the database is, where the migrations are, where tracking lives.

Each setting comes from the first of: its flag, its POSTSTACK_ variable (the real
environment, then ``.env``), the chosen ``[environments.NAME]``, the project file's top
level, the default. The database URL has one more place, ``DATABASE_URL``, which every
tool reads: it ranks below a chosen environment (``--env prod`` must not reach the
development database DATABASE_URL names) and above the top level. An empty DATABASE_URL
counts as unset, an empty poststack setting is an error; the value ``embedded`` (or
``--embedded``) chooses the embedded PostgreSQL. With none named, the embedded server is
used only where the caller says it may be (an interactive terminal, the demo), and never
for a chosen environment: elsewhere a missing secret must not become a successful run on
a throwaway server.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from reconciler.errors import DatabaseUnavailable, UsageError, did_you_mean
from reconciler.numbering import NUMBERINGS  # how poststack new numbers a migration
from reconciler.statements import qualified

if TYPE_CHECKING:  # read when settings are resolved: `poststack --help` parses no .env nor TOML
    from reconciler import dotenv
    from reconciler.project_file import ProjectFile

DEFAULT_MIGRATIONS_DIR = "migrations"
DEFAULT_SCHEMA = "public"
# The tracking tables are <prefix>migrations, <prefix>migrations_lock, <prefix>migrations_audit.
DEFAULT_TABLE_PREFIX = "schema_"
DEFAULT_LOCK_TIMEOUT = 30.0
MAX_LOCK_TIMEOUT = 2_147_483  # PostgreSQL's lock_timeout ceiling, in seconds
# PostgreSQL's lock_timeout for each migration (0: poststack sets none), and how many times a
# migration whose transaction it rolled back is tried again.
DEFAULT_DDL_LOCK_TIMEOUT = 5.0
DEFAULT_DDL_LOCK_RETRIES = 3
MAX_DDL_LOCK_RETRIES = 100
EMBEDDED = "embedded"
# What sits between poststack and the server (docs/poolers.md): "auto" finds out when a command
# needs to know; "none" and "session" keep a server session per connection; "transaction"
# (PgBouncer's pool_mode = transaction) hands the server connection on after each transaction.
POOLER_AUTO = "auto"
POOLERS = (POOLER_AUTO, "none", "session", "transaction")

# The one list of what poststack reads: each project-file key, and its environment variable.
SETTING_VARIABLES: dict[str, str] = {
    "database_url": "POSTSTACK_DATABASE_URL",
    "migrations_dir": "POSTSTACK_MIGRATIONS_DIR",
    "tracking_schema": "POSTSTACK_SCHEMA",
    "table_prefix": "POSTSTACK_TABLE_PREFIX",
    "layout": "POSTSTACK_LAYOUT",
    "shadow_database_url": "POSTSTACK_SHADOW_DATABASE_URL",
    "lock_timeout": "POSTSTACK_LOCK_TIMEOUT",
    "ddl_lock_timeout": "POSTSTACK_DDL_LOCK_TIMEOUT",  # PostgreSQL's lock_timeout for each migration
    "ddl_lock_retries": "POSTSTACK_DDL_LOCK_RETRIES",  # tries after the first when it fires
    "numbering": "POSTSTACK_NUMBERING",  # how poststack new numbers: sequence or timestamp
    "lint_ignore": "POSTSTACK_LINT_IGNORE",  # lint rules switched off: codes or names, comma-separated
    "pooler": "POSTSTACK_POOLER",  # auto, none, session or transaction (docs/poolers.md)
}
# Chooses an [environments.NAME] table, as --env does; not a setting of the project file.
ENVIRONMENT_VARIABLE = "POSTSTACK_ENV"
# The URL variable every tool reads (dbmate, Rails, Heroku): below a chosen environment.
SHARED_URL_VARIABLE = "DATABASE_URL"
DEFAULT = "default"
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
_PASSWORD_IN_DSN = re.compile(
    r"(?P<head>(?<![?&])\b(?:ssl)?password\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE
)
_PASSWORD_IN_QUERY = re.compile(r"(?P<head>[?&](?:ssl)?password=)(?P<pw>[^&\s]*)", re.IGNORECASE)


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
class Origins:
    """Where each setting came from, for ``poststack config`` and ``--verbose``: a flag, a
    variable, ``VARIABLE in /path/.env``, ``poststack.toml [environments.prod]``, default."""

    sources: tuple[tuple[str, str], ...] = ()  # (project-file key, source), in SETTING_VARIABLES order
    environment_source: str | None = None  # --env, POSTSTACK_ENV, or POSTSTACK_ENV in .env
    project_file: Path | None = None
    dotenv_file: Path | None = None

    def of(self, key: str) -> str:
        return dict(self.sources).get(key, DEFAULT)


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
    environment: str | None = None  # the [environments.NAME] chosen, if any
    origins: Origins = Origins()
    numbering: str | None = None  # poststack new: sequence or timestamp; None: as the files are numbered
    ddl_lock_timeout: float = DEFAULT_DDL_LOCK_TIMEOUT  # seconds; 0: poststack sets no lock_timeout
    ddl_lock_retries: int = DEFAULT_DDL_LOCK_RETRIES
    lint_ignore: tuple[str, ...] = ()  # lint rules switched off for the project (checked by lint)
    # A fleet's tenant schema: connections start with this search_path (libpq options), so
    # the tenant's migrations, and its tracking tables, land in its schema.
    search_path: tuple[str, ...] = ()
    pooler: str = POOLER_AUTO  # one of POOLERS: what sits between poststack and the server

    @property
    def tracking(self) -> TrackingLocation:
        return TrackingLocation(self.tracking_schema, self.table_prefix)

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def embedded_data_dir(self) -> Path:
        """The embedded server lives beside the migrations directory, under .poststack/."""
        from reconciler.kept import beside

        return beside(self.migrations_dir) / "pgdata"

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


def _known_variables() -> tuple[str, ...]:
    return (*SETTING_VARIABLES.values(), ENVIRONMENT_VARIABLE, *OTHER_VARIABLES)


def _check_environment(env: Mapping[str, str]) -> None:
    """A POSTSTACK_ variable poststack does not read is a typo (POSTSTACK_DATABSE_URL,
    POSTSTACK_DB_URL), for the same reason as an unknown key: ignored, it would let
    DATABASE_URL or the default choose the database instead."""
    known = _known_variables()
    for name in sorted(env):
        if name.startswith("POSTSTACK_") and name not in known:
            raise UsageError(
                f"environment variable {name} is not one poststack reads{did_you_mean(name, known)}",
                f"poststack reads {', '.join(SETTING_VARIABLES.values())}, {ENVIRONMENT_VARIABLE} (and DATABASE_URL); "
                f"rename or unset {name}.",
            )


def _dotenv_variables(path: Path | None, entries: list[dotenv.Entry]) -> dict[str, dotenv.Entry]:
    """The assignments in .env that poststack reads (the last of each), checked as the real
    environment is. Other applications' keys share the file and are left alone; a POSTSTACK_
    key poststack does not read is a typo, named by file and line."""
    known = _known_variables()
    found: dict[str, dotenv.Entry] = {}
    for entry in entries:
        if entry.key.startswith("POSTSTACK_") and entry.key not in known:
            raise UsageError(
                f"{path}:{entry.line}: {entry.key} is not a variable poststack reads{did_you_mean(entry.key, known)}",
                f"poststack reads {', '.join(SETTING_VARIABLES.values())}, {ENVIRONMENT_VARIABLE} (and DATABASE_URL).",
            )
        if entry.key.startswith("POSTSTACK_") or entry.key == SHARED_URL_VARIABLE:
            found[entry.key] = entry
    for name, entry in found.items():
        if name.startswith("POSTSTACK_") and not entry.value.strip():
            raise UsageError(f"{path}:{entry.line}: {name} is set but empty; give it a value or remove the line")
        if "${" in entry.value:
            # dbmate and compose expand it; taken as written it would name a database nobody meant.
            raise UsageError(
                f"{path}:{entry.line}: {name} refers to another variable (${{...}}), which poststack does not expand",
                "Write the value out in .env, or set the variable in the environment, where the shell expands it.",
            )
    return found


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
    for name in (*SETTING_VARIABLES.values(), ENVIRONMENT_VARIABLE):
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
    from reconciler import dotenv

    places = ["--database-url", "POSTSTACK_DATABASE_URL", "DATABASE_URL", str(cwd / dotenv.FILENAME)]
    places.append(str(cwd / "poststack.toml"))
    if not (cwd / "poststack.toml").is_file():  # when it exists, pyproject.toml is not read
        places.append(f"{cwd / 'pyproject.toml'} [tool.poststack]")
    return DatabaseUnavailable(
        f"no database named: poststack looked at {', '.join(places[:-1])} and {places[-1]}; "
        "set one of them to a postgresql:// URL, or pass --embedded for a throwaway local server "
        "(the default only on an interactive terminal)"
    )


@dataclass(frozen=True)
class _Sources:
    """The places a setting is read from below its flag, in order: the real environment,
    .env, the chosen environment's table, the project file's top level."""

    env: Mapping[str, str]
    dotenv_path: Path | None
    dotenv: Mapping[str, dotenv.Entry]
    project: ProjectFile
    environment: Mapping[str, object] | None
    environment_label: str

    def variable(self, name: str) -> tuple[str | None, str]:
        """``name``'s value and where it was set: the real environment wins over .env."""
        value = _nonempty(self.env.get(name))
        if value is not None:
            return value, name
        entry = self.dotenv.get(name)
        if entry is not None and _nonempty(entry.value) is not None:
            return entry.value, f"{name} in {self.dotenv_path}"
        return None, name

    def chosen_environment(self, key: str) -> tuple[object | None, str]:
        value = None if self.environment is None else self.environment.get(key)
        return (None, "") if value is None or value == "" else (value, self.environment_label)

    def top_level(self, key: str) -> tuple[object | None, str]:
        value = self.project.settings.get(key)  # an empty string counts as unset, as it always has
        return (None, "") if value is None or value == "" else (value, self.project.label)

    def first(self, flag: str, given: object | None, key: str) -> tuple[object | None, str]:
        """The first place that sets ``key``: its flag (``given``), variable, environment, top level."""
        for value, source in (
            (given, flag),
            self.variable(SETTING_VARIABLES[key]),
            self.chosen_environment(key),
            self.top_level(key),
        ):
            if value is not None:
                return value, source
        return None, DEFAULT

    def from_project(self, source: str) -> bool:
        return source in (self.project.label, self.environment_label) and bool(source)


def _environment_url(name: str, sources: _Sources) -> tuple[str | None, str]:
    """The URL of a chosen environment: its own table's, or POSTSTACK_DATABASE_URL (set for
    poststack on purpose: a deploy's secret, or .env). Never DATABASE_URL or the top level:
    those are the ambient, usually the development database, and --env prod must not land
    there because prod left its URL to a secret that was not mounted. Both set, and
    different, is two databases named."""
    variable = SETTING_VARIABLES["database_url"]
    given, given_by = sources.variable(variable)
    table, label = sources.chosen_environment("database_url")
    if given is not None and table is not None and not _same_database(given, str(table)):
        raise UsageError(
            f"{given_by} ({masked_url(given)}) and {label} ({masked_url(str(table))}) name two databases",
            f"Unset {variable}, or leave database_url out of [{sources.project.environment_table(name)}].",
        )
    if given is not None:
        return given, given_by
    return (None, "") if table is None else (str(table), label)


def url_without_password(url: str) -> str:
    """``url`` with its password left out (from the userinfo and ``?password=``) and the
    scheme spelled one way: what names a database, whatever secret reaches it."""
    url = re.sub(r"^postgres(ql)?(\+psycopg2)?://", "postgresql://", url.strip())
    base, _, query = url.partition("?")
    kept = [p for p in query.split("&") if p and not p.lower().startswith(("password=", "sslpassword="))]
    match = _CARELESS_URL.match(base)
    base = match["head"][:-1] + match["tail"] if match else base  # user:password@ -> user@
    return base + ("?" + "&".join(kept) if kept else "")


def _same_database(a: str, b: str) -> bool:
    """Whether two URLs name one database, passwords aside: the project file names the
    database, the deploy's secret often the same one with its password."""
    return url_without_password(a) == url_without_password(b)


def _no_url_for_environment(name: str, sources: _Sources) -> UsageError:
    """A chosen environment must name its database: falling back to the embedded server, to
    DATABASE_URL or to the top level would make --env prod with a missing URL a run on a
    database nobody chose."""
    project = sources.project
    places = ["--database-url", "POSTSTACK_DATABASE_URL"]
    if sources.dotenv_path:
        places.append(f"POSTSTACK_DATABASE_URL in {sources.dotenv_path}")
    places.append(f"database_url in {project.path} [{project.environment_table(name)}]")
    ignored = "DATABASE_URL and the project file's top level are not read for an environment's database"
    return UsageError(
        f"environment {name!r} has no database URL: poststack looked at {', '.join(places)}",
        f"Set database_url in [{project.environment_table(name)}] or POSTSTACK_DATABASE_URL; {ignored}, "
        "and an environment never falls back to the embedded server.",
    )


def _seconds(value: object, what: str, source: str) -> float:
    """A number of seconds: text from a variable, a number from a flag or the project file."""
    if isinstance(value, str):  # from a variable
        try:
            value = float(value.strip())
        except ValueError:
            raise UsageError(f"{what} from {source} is not a number of seconds: {value.strip()!r}") from None
    return float(value)  # type: ignore[arg-type]  # a number: flags and the project file are typed


def _lock_timeout(value: object | None, source: str) -> float:
    if value is None:
        return DEFAULT_LOCK_TIMEOUT
    timeout = _seconds(value, "lock timeout", source)
    if not math.isfinite(timeout) or not 0 <= timeout <= MAX_LOCK_TIMEOUT:
        raise UsageError(f"lock timeout from {source} must be between 0 and {MAX_LOCK_TIMEOUT} seconds")
    return timeout


def _ddl_lock_timeout(value: object | None, source: str) -> float:
    """PostgreSQL counts lock_timeout in whole milliseconds, and 0 turns it off: a value that
    would round to 0 is refused rather than quietly meaning "wait forever"."""
    if value is None:
        return DEFAULT_DDL_LOCK_TIMEOUT
    timeout = _seconds(value, "DDL lock timeout", source)
    if not math.isfinite(timeout) or not (timeout == 0 or 0.001 <= timeout <= MAX_LOCK_TIMEOUT):
        raise UsageError(
            f"DDL lock timeout from {source} must be 0 (no timeout) or between 0.001 and {MAX_LOCK_TIMEOUT} seconds"
        )
    return timeout


def _ddl_lock_retries(value: object | None, source: str) -> int:
    if value is None:
        return DEFAULT_DDL_LOCK_RETRIES
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str):  # from a variable
        if not re.fullmatch(r"[0-9]+", text):
            raise UsageError(f"DDL lock retries from {source} is not a whole number: {text!r}")
        text = int(text)
    if isinstance(text, bool) or not isinstance(text, int) or not 0 <= text <= MAX_DDL_LOCK_RETRIES:
        raise UsageError(f"DDL lock retries from {source} must be a whole number between 0 and {MAX_DDL_LOCK_RETRIES}")
    return text


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
    ddl_lock_timeout: float | None = None,
    ddl_lock_retries: int | None = None,
    environment: str | None = None,
    needs_database: bool = True,
    debug: bool = False,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve flags, environment, .env and project file into Settings. Flags win.

    ``embedded`` is the --embedded flag, ``environment`` the --env flag. ``embedded_by_default``
    says whether, with no database named anywhere, the embedded server may be used: the
    interface decides (an interactive terminal, the demo); otherwise that is
    DatabaseUnavailable, raised after every usage error so a typo is reported as one.
    ``needs_database`` False (a command that opens no connection) lets a chosen environment
    leave its URL out."""
    from reconciler import dotenv, project_file

    env = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    _check_environment(env)
    dotenv_path, entries = dotenv.read(cwd)
    dot = _dotenv_variables(dotenv_path, entries)
    project = project_file.read(cwd)
    base = project.directory or cwd

    _refuse_empty(
        {
            "--database-url": database_url,
            "--migrations-dir": None if migrations_dir is None else str(migrations_dir),
            "--schema": tracking_schema,
            "--table-prefix": table_prefix,
            "--layout": layout,
            "--shadow-url": shadow_url,
            "--env": environment,
        },
        env,
    )
    lookup = _Sources(env, dotenv_path, dot, project, None, "")
    chosen, chosen_by = _nonempty(environment), "--env"
    if chosen is None:
        chosen, chosen_by = lookup.variable(ENVIRONMENT_VARIABLE)
    if chosen is not None:
        chosen = chosen.strip()
        lookup = _Sources(
            env, dotenv_path, dot, project, project.environment(chosen, chosen_by), project.environment_label(chosen)
        )
    origins: dict[str, str] = {}

    url: str | None = _nonempty(database_url)
    source = "--database-url"
    if embedded:
        if url is not None and not _names_embedded(url):
            raise UsageError(f"--embedded and --database-url {masked_url(url)} name two databases; pass one of them")
        url, source = EMBEDDED, "--embedded"  # a flag: it wins over the environment, as --database-url does
    if url is None and chosen is not None:
        url, source = _environment_url(chosen, lookup)
    elif url is None:
        for found, where in (
            lookup.variable(SETTING_VARIABLES["database_url"]),
            lookup.variable(SHARED_URL_VARIABLE),
            lookup.top_level("database_url"),
        ):
            if found is not None:
                url, source = str(found), where
                break
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
    origins["database_url"] = f"{DEFAULT} (no database named)" if nothing_named else source

    flag_dir = None if migrations_dir is None else _nonempty(str(migrations_dir))
    directory, origins["migrations_dir"] = lookup.first("--migrations-dir", flag_dir, "migrations_dir")
    path = Path(str(directory or DEFAULT_MIGRATIONS_DIR))
    if not path.is_absolute():
        path = (base if lookup.from_project(origins["migrations_dir"]) else cwd) / path

    found, origins["tracking_schema"] = lookup.first("--schema", _nonempty(tracking_schema), "tracking_schema")
    schema = str(found or DEFAULT_SCHEMA)
    if not _IDENTIFIER.match(schema):
        raise UsageError(f"tracking schema {schema!r} is not a plain PostgreSQL identifier")
    schema = schema.lower()  # as PostgreSQL folds an unquoted name: --schema Ops means ops

    found, origins["table_prefix"] = lookup.first("--table-prefix", _nonempty(table_prefix), "table_prefix")
    prefix = str(found or DEFAULT_TABLE_PREFIX)
    # The longest name, the sequence PostgreSQL makes for <prefix>migrations_audit
    # (<prefix>migrations_audit_id_seq), must stay within its 63 bytes, or it is cut short.
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_$]{0,39}$", prefix):
        raise UsageError(
            f"tracking table prefix {prefix!r} is not the start of a plain PostgreSQL identifier",
            "Use letters, digits and underscores, at most 40 characters (e.g. poststack_).",
        )
    prefix = prefix.lower()

    found, origins["layout"] = lookup.first("--layout", _nonempty(layout), "layout")
    chosen_layout = None if found is None else str(found)
    # Its name is checked against the layouts by the interface (config sits below desired/).

    found, shadow_source = lookup.first("--shadow-url", _nonempty(shadow_url), "shadow_database_url")
    shadow = None if found is None else str(found)
    if shadow is not None and not re.match(r"^postgres(ql)?://", shadow):
        raise UsageError(
            f"shadow database URL from {shadow_source} is not a postgresql:// URL: {masked_url(shadow)}",
            "The history is replayed there: write it as postgresql://USER@HOST:5432/DBNAME.",
        )
    origins["shadow_database_url"] = shadow_source

    found, origins["lock_timeout"] = lookup.first("--lock-timeout", lock_timeout, "lock_timeout")
    timeout = _lock_timeout(found, origins["lock_timeout"])

    found, origins["ddl_lock_timeout"] = lookup.first("--ddl-lock-timeout", ddl_lock_timeout, "ddl_lock_timeout")
    ddl_timeout = _ddl_lock_timeout(found, origins["ddl_lock_timeout"])
    found, origins["ddl_lock_retries"] = lookup.first("--ddl-lock-retries", ddl_lock_retries, "ddl_lock_retries")
    ddl_retries = _ddl_lock_retries(found, origins["ddl_lock_retries"])

    # Checked by poststack new, the one command that numbers (desired/scaffold.py); its
    # --numbering flag wins there.
    found, origins["numbering"] = lookup.first("--numbering", None, "numbering")
    numbering = None if found is None else str(found).strip().lower()
    if numbering is not None and numbering not in NUMBERINGS:
        raise UsageError(
            f"numbering from {origins['numbering']} is {found!r}, not sequence or timestamp",
            "poststack new numbers migrations by sequence (003 -> 004) or by UTC timestamp.",
        )

    found, origins["lint_ignore"] = lookup.first("--lint-ignore", None, "lint_ignore")
    if isinstance(found, str):  # from the environment: comma-separated
        found = [part for part in found.replace(" ", ",").split(",") if part]
    lint_ignore = tuple(str(code) for code in found) if isinstance(found, list) else ()

    found, origins["pooler"] = lookup.first("--pooler", None, "pooler")
    pooler = POOLER_AUTO if found is None else str(found).strip().lower()
    if pooler not in POOLERS:
        raise UsageError(
            f"pooler from {origins['pooler']} is {found!r}, not one of {', '.join(POOLERS)}",
            "Say what sits between poststack and PostgreSQL (docs/poolers.md); auto finds out.",
        )

    if nothing_named and chosen is not None and needs_database:
        raise _no_url_for_environment(chosen, lookup)
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
        environment=chosen,
        origins=Origins(
            sources=tuple((key, origins[key]) for key in SETTING_VARIABLES),
            environment_source=chosen_by if chosen is not None else None,
            project_file=project.path,
            dotenv_file=dotenv_path,
        ),
        numbering=numbering,
        ddl_lock_timeout=ddl_timeout,
        ddl_lock_retries=ddl_retries,
        lint_ignore=lint_ignore,
        pooler=pooler,
    )
