"""Database URLs, read by libpq itself (PostgreSQL's own parser), not by a second one of ours.

libpq accepts everything a user's other tools accept (host lists, Unix-socket paths in
``?host=``, service files, every ``sslmode`` option), and parsing with it costs no import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import quote

import psycopg2
import psycopg2.extensions

from reconciler.config import mask_url_secrets, masked_url
from reconciler.errors import UsageError

# SQLAlchemy-style URLs name a driver; libpq wants the bare scheme.
_DRIVER = re.compile(r"^postgres(?:ql)?\+[a-z0-9_]+://", re.IGNORECASE)

# libpq's connection keywords and the environment variables that carry them (libpq docs,
# "Environment Variables"); pg_dump and psql read these, so no password is on a command line.
_ENV_FOR_KEYWORD = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "sslmode": "PGSSLMODE",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "requiressl": "PGREQUIRESSL",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
    "channel_binding": "PGCHANNELBINDING",
    "require_auth": "PGREQUIREAUTH",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "sslsni": "PGSSLSNI",
    "sslcrldir": "PGSSLCRLDIR",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcertmode": "PGSSLCERTMODE",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "client_encoding": "PGCLIENTENCODING",
}


def libpq_url(url: str) -> str:
    """``url`` with any ``+driver`` dropped from its scheme."""
    return _DRIVER.sub("postgresql://", url, count=1)


def with_search_path(url: str, search_path: tuple[str, ...]) -> str:
    """``url`` asking the server to start the session with ``search_path`` (libpq's
    ``options``, kept beside any the URL already gives): a reset or a rolled-back SET goes
    back to it, as to a role's default. Names are plain identifiers (a tenant's schema)."""
    wanted = f"-c search_path={','.join(search_path)}"
    # libpq reads PGOPTIONS only when the URL gives no options: kept here, as it would be.
    existing = parse(url).get("options") or os.environ.get("PGOPTIONS", "")
    base, _, query = libpq_url(url).partition("?")
    kept = [p for p in query.split("&") if p and not p.lower().startswith("options=")]
    kept.append("options=" + quote(f"{existing} {wanted}".strip(), safe=""))
    return f"{base}?{'&'.join(kept)}"


def parse(url: str) -> dict[str, str]:
    """libpq's keywords for ``url``, or UsageError naming what is wrong (password masked)."""
    try:
        keywords = psycopg2.extensions.parse_dsn(libpq_url(url))
    except psycopg2.ProgrammingError as e:
        reason = str(e).strip().splitlines()[0].removeprefix("invalid dsn: ")
        raise UsageError(f"cannot parse database URL {masked_url(url)}: {mask_url_secrets(reason, url)}") from e
    for port in filter(None, keywords.get("port", "").split(",")):
        if not port.isdigit():
            reason = mask_url_secrets(f'port "{port}" is not a number', url)
            raise UsageError(f"cannot parse database URL {masked_url(url)}: {reason}")
    return keywords


def libpq_env(url: str) -> dict[str, str]:
    """This process's environment with ``url``'s settings as libpq variables, so a child
    (pg_dump, psql) connects exactly as poststack does: what the URL says wins, and what it
    leaves out (a password in PGPASSWORD, a port in PGPORT) comes from the environment, as
    libpq does for poststack's own connection."""
    env = dict(os.environ)
    env.update({_ENV_FOR_KEYWORD[k]: v for k, v in parse(url).items() if k in _ENV_FOR_KEYWORD and v})
    env["PGAPPNAME"] = "poststack"
    return env


# What says which server, database and role: kept. A libpq default is left out (it is the
# default again for poststack's connection); so are what poststack sets for itself.
_IDENTITY = ("host", "hostaddr", "port", "dbname", "user")
_LIBPQ_DEFAULTS = {
    "channel_binding": "prefer",
    "sslmode": "prefer",
    "sslnegotiation": "postgres",
    "sslcompression": "0",
    "sslcertmode": "allow",
    "sslsni": "1",
    "ssl_min_protocol_version": "TLSv1.2",
    "gssencmode": "prefer",
    "krbsrvname": "postgres",
    "gssdelegation": "0",
    "target_session_attrs": "any",
    "load_balance_hosts": "disable",
}
_POSTSTACK_SETS = frozenset(
    {"application_name", "connect_timeout", "passfile", "password", "fallback_application_name"}
)


def url_from_parameters(parameters: Mapping[str, str]) -> str:
    """A postgresql:// URL libpq reads back to ``parameters`` (every value in the query, so
    socket directories, host lists and IPv6 addresses need no URL syntax of their own)."""
    user = parameters.get("user") or ""
    password = parameters.get("password") or ""
    userinfo = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    database = quote(parameters.get("dbname") or "", safe="")
    kept = {k: v for k, v in parameters.items() if k in _IDENTITY[:3] and v}
    kept.update(
        (k, v)
        for k, v in sorted(parameters.items())
        if k not in _IDENTITY and k not in _POSTSTACK_SETS and v and _LIBPQ_DEFAULTS.get(k) != v
    )
    query = "&".join(f"{k}={quote(v, safe='/')}" for k, v in kept.items())
    return f"postgresql://{userinfo + '@' if userinfo else ''}/{database}" + (f"?{query}" if query else "")
