"""A fleet's targets: databases, or tenant schemas in one database, from a file or a query.

A targets file (YAML or TOML) is either a list of databases::

    targets:
      - postgresql://app@db1:5432/shop
      - {url: postgresql://app@db2:5432/shop, name: eu-2}

or one database and its tenant schemas::

    url: postgresql://app@db1:5432/saas     # optional: else the database the settings name
    schemas: [tenant_001, tenant_002]
    shared_schemas: [public]                # optional: after the tenant's, on its search_path

A query runs on the database the settings name (the control database) and returns, in its
first column, URLs or schema names. Passwords come from the URL, PGPASSWORD or .pgpass, as
libpq reads them; none is ever shown or kept in a key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reconciler.config import Settings, masked_url, url_without_password
from reconciler.errors import UsageError

# A tenant's schema is named as PostgreSQL folds an unquoted name: it goes on a search_path
# and into the tracking tables' names unquoted.
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_$]{0,62}$")
_URL = re.compile(r"^postgres(ql)?(\+psycopg2)?://", re.IGNORECASE)
FILE_KEYS = frozenset({"targets", "url", "schemas", "shared_schemas"})


@dataclass(frozen=True)
class Target:
    """One database, or one tenant schema in a database. ``url`` None: the database the
    settings name (the embedded server, say, in a demo)."""

    url: str | None
    schema: str | None = None
    label: str | None = None  # the name the targets file gives it
    shared_schemas: tuple[str, ...] = ()

    @property
    def database(self) -> str:
        """Where it is, for people: the URL with its password masked."""
        return masked_url(self.url) if self.url else "(the configured database)"

    @property
    def key(self) -> str:
        """What identifies it whatever secret reaches it: sharding hashes it, and a fleet
        plan's targets are matched by it."""
        base = url_without_password(self.url) if self.url else "configured"
        return f"{base}#{self.schema}" if self.schema else base

    @property
    def name(self) -> str:
        return self.label or self.schema or self.database

    def settings(self, base: Settings) -> Settings:
        """``base`` pointed at this target: its database, and for a tenant its schema, both
        for the tracking tables and first on the search_path the migrations run with."""
        settings = base if self.url is None else replace(base, database_url=self.url, url_source="targets")
        if self.schema is None:
            return settings
        return replace(
            settings,
            tracking_schema=self.schema,
            search_path=(self.schema, *self.shared_schemas),
        )


def _unique_keys_loader() -> type:
    """PyYAML's safe loader, refusing a key given twice: the second ``schemas:`` of a file
    would otherwise replace the first, and the fleet run only what the second lists."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (the second would replace the first)", key_node.start_mark
                )
            seen.add(key)
        return loader.construct_mapping(node, deep=True)

    UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return UniqueKeys


def _schema(value: object, where: str) -> str:
    text = str(value).strip() if isinstance(value, str | int) else ""
    if text == "information_schema" or text.startswith("pg_"):
        raise UsageError(f"{where}: {text} is PostgreSQL's own schema, not a tenant's")
    if not _SCHEMA.match(text):
        raise UsageError(
            f"{where}: {value!r} is not a tenant schema name poststack can use",
            "Use a plain lower-case PostgreSQL identifier (letters, digits, _ and $, at most 63).",
        )
    return text


def _url(value: object, where: str) -> str:
    if not isinstance(value, str) or not _URL.match(value.strip()):
        shown = masked_url(value) if isinstance(value, str) else repr(value)
        raise UsageError(f"{where}: {shown} is not a postgresql:// URL")
    return value.strip()


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise UsageError(f"cannot read targets file {path}: {reason}") from e
    if path.suffix.lower() == ".toml":
        try:
            data: object = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"{path}: not valid TOML: {e}") from e
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.load(text, Loader=_unique_keys_loader())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise UsageError(f"{path}{line}: not valid YAML: {getattr(e, 'problem', None) or e}") from e
    else:
        raise UsageError(f"targets file {path}: name it .yaml, .yml or .toml, so poststack knows how to read it")
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a targets file is a mapping with 'targets', or with 'schemas' (and 'url')")
    return data


def read_targets_file(path: Path) -> list[Target]:
    data = _read(path)
    if unknown := sorted(set(data) - FILE_KEYS):
        raise UsageError(
            f"{path}: unknown key {unknown[0]!r}; a targets file has targets, or url, schemas, shared_schemas"
        )
    if "targets" in data and ("schemas" in data or "url" in data):
        raise UsageError(f"{path}: give either a list of databases (targets) or one url with its schemas, not both")
    if "targets" in data:
        entries = data["targets"]
        if not isinstance(entries, list) or not entries:
            raise UsageError(f"{path}: targets must be a non-empty list of URLs")
        return _unique([_database_entry(entry, f"{path}: targets[{i}]") for i, entry in enumerate(entries)], path)
    schemas = data.get("schemas")
    if not isinstance(schemas, list) or not schemas:
        raise UsageError(f"{path}: schemas must be a non-empty list of tenant schema names")
    url = _url(data["url"], f"{path}: url") if data.get("url") is not None else None
    shared = data.get("shared_schemas") or []
    if not isinstance(shared, list):
        raise UsageError(f"{path}: shared_schemas must be a list of schema names")
    common = tuple(_schema(s, f"{path}: shared_schemas") for s in shared)
    names = [_schema(s, f"{path}: schemas[{i}]") for i, s in enumerate(schemas)]
    return _unique([Target(url, name, None, common) for name in names], path)


def _database_entry(entry: object, where: str) -> Target:
    if isinstance(entry, str):
        return Target(_url(entry, where))
    if isinstance(entry, dict):
        if unknown := sorted(set(entry) - {"url", "name"}):
            raise UsageError(f"{where}: unknown key {unknown[0]!r}; an entry has url and, optionally, name")
        name = entry.get("name")
        return Target(_url(entry.get("url"), where), None, str(name) if name is not None else None)
    raise UsageError(f"{where}: give a URL, or a mapping with url (and name)")


def _unique(targets: list[Target], source: object) -> list[Target]:
    """Two entries for one target would run it twice at once, each waiting on the other's lock."""
    seen: dict[str, Target] = {}
    for target in targets:
        if target.key in seen:
            raise UsageError(f"{source}: {target.name} is listed twice")
        seen[target.key] = target
    return targets


def targets_from_rows(rows: Sequence[tuple[Any, ...]], query: str) -> list[Target]:
    """A targets query's answer: URLs (databases), or schema names in the control database."""
    values = [row[0] for row in rows if row and row[0] is not None]
    if not values:
        raise UsageError(f"--targets-query returned no targets: {query}")
    urls = [isinstance(v, str) and bool(_URL.match(v.strip())) for v in values]
    if all(urls):
        return _unique([Target(_url(v, "--targets-query")) for v in values], "--targets-query")
    if any(urls):
        raise UsageError("--targets-query returned both URLs and schema names; return one kind")
    names = [_schema(v, "--targets-query") for v in values]
    return _unique([Target(None, name) for name in names], "--targets-query")


def query_targets(settings: Settings, query: str, notify: Any = None) -> list[Target]:
    """Run ``query`` on the database the settings name, read-only, and read its targets."""
    import psycopg2

    from reconciler.db import connect, server_error_text

    with connect(settings, notify) as session, session.snapshot():
        try:
            rows = session.query(query)
        except psycopg2.Error as e:
            raise UsageError(f"--targets-query failed: {server_error_text(e)}", f"The query: {query}") from e
    return targets_from_rows(rows, query)
