"""db formalize: write the migration that creates the objects no migration creates (the
troubleshooting guide's Scenario 5, option 1), and its rollback.

An orphan is an object of the live catalog that appears in no replayed state of the
history: no migration ever makes it. Without a replay, the orphans are the schemas no
migration creates (as the orphaned_schema check sees them) and everything in them.

The SQL is written from the definitions PostgreSQL prints (desired/replay/snapshot.py),
plus a few facts a snapshot does not keep (column order, sequence options and owners,
policies' roles, row security), read here. Writing the SQL is pure. The migration is then
checked where the history is replayed: run after it in the shadow, it must make exactly
the orphans, as they are here, and its rollback must remove them. The target is only read.
"""

from __future__ import annotations

import contextlib
import heapq
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from reconciler.config import Settings, TrackingLocation
from reconciler.db import Session, connect
from reconciler.desired.files import Migration, SqlFile
from reconciler.desired.layouts import LAYOUTS, scan_migrations
from reconciler.desired.replay.replay import Replay
from reconciler.desired.replay.snapshot import Snapshot
from reconciler.desired.replay.source import ShadowSettings, replay_history, shadow_for
from reconciler.desired.versions import VersionKey
from reconciler.errors import UsageError, did_you_mean
from reconciler.observed.state import DesiredState, read_state

Key = tuple[str, str]  # (kind, identity), as in a Snapshot
Notify = Callable[[str], None]

# Kinds a snapshot does not hold enough of to write them.
_NOT_WRITTEN = {
    "aggregate": "an aggregate's definition is not read from the catalog",
    "composite type": "a composite type's attributes are not read from the catalog",
    "range type": "a range type's definition is not read from the catalog",
    "foreign table": "a foreign table needs its server and options, which are not read from the catalog",
}
LIMITS = (
    "Not carried over: privileges, owners, comments, column collations, storage parameters, "
    "tablespaces, view options, sequences' current values, and data."
)
_RELATION_OR_TYPE = (
    "table",
    "view",
    "materialized view",
    "sequence",
    "foreign table",
    "enum",
    "domain",
    "composite type",
    "range type",
)
_MEMBERS = ("column", "constraint", "trigger", "policy")  # identities: owner.name
_CONSTRAINT_BACKED = ("PRIMARY KEY", "UNIQUE", "EXCLUDE")
_STEPS = ("owned by", "row security")  # statements about an object another one creates


# --- names ----------------------------------------------------------------------------------


def ident(name: str) -> str:
    """``name`` as PostgreSQL's quote_ident prints it: quoted only when it must be, so it
    reads as the definitions PostgreSQL prints (and as a person writes it)."""
    from pglast.keywords import COL_NAME_KEYWORDS, RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS

    keyword = name in RESERVED_KEYWORDS or name in TYPE_FUNC_NAME_KEYWORDS or name in COL_NAME_KEYWORDS
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name) and not keyword:
        return name
    return '"' + name.replace('"', '""') + '"'


def _read_ident(text: str) -> tuple[str, str]:
    """The identifier ``text`` starts with, as PostgreSQL prints one, unquoted; and the rest."""
    if text.startswith('"'):
        match = re.match(r'"((?:[^"]|"")*)"', text)
        if match:
            return match[1].replace('""', '"'), text[match.end() :]
    match = re.match(r'[^\s."(),]*', text)
    name = match[0] if match else ""
    return name, text[len(name) :]


@dataclass(frozen=True)
class Names:
    """Identities split back into names. An identity joins names with dots; the schemas,
    relations and types the database has say where one name ends."""

    schemas: tuple[str, ...]  # longest first
    owners: tuple[str, ...]  # relations and types, longest first

    @classmethod
    def of(cls, live: Snapshot) -> Names:
        schemas = {i for k, i in live.objects if k == "schema"}
        owners = {i for k, i in live.objects if k in _RELATION_OR_TYPE}
        return cls(tuple(sorted(schemas, key=len, reverse=True)), tuple(sorted(owners, key=len, reverse=True)))

    def schema_of(self, identity: str) -> str:
        return next((s for s in self.schemas if identity.startswith(s + ".")), identity.partition(".")[0])

    def split(self, identity: str) -> tuple[str, str]:
        """A relation's, type's or index's (schema, name)."""
        schema = self.schema_of(identity)
        return schema, identity[len(schema) + 1 :]

    def member(self, identity: str) -> tuple[str, str]:
        """A column's, constraint's, trigger's or policy's (owner's identity, name)."""
        owner = next((o for o in self.owners if identity.startswith(o + ".")), identity.rpartition(".")[0])
        return owner, identity[len(owner) + 1 :]

    def qualified(self, identity: str) -> str:
        schema, name = self.split(identity)
        return f"{ident(schema)}.{ident(name)}"

    def function(self, identity: str) -> tuple[str, str, str]:
        """``schema.name(args)``: (schema, name, args)."""
        schema = self.schema_of(identity)
        name, _, args = identity[len(schema) + 1 :].partition("(")
        return schema, name, args.removesuffix(")")


# --- what a snapshot does not say, read beside it -------------------------------------------


@dataclass(frozen=True)
class SequenceFacts:
    type: str
    start: int
    increment: int
    minimum: int
    maximum: int
    cache: int
    cycle: bool
    owner: str | None = None  # the owning column's identity
    identity: bool = False  # an identity column's: the column makes it


@dataclass(frozen=True)
class PolicyFacts:
    permissive: bool
    command: str  # r, a, w, d or *
    roles: tuple[str, ...]  # quoted; PUBLIC for everyone
    using: str | None
    check: str | None


@dataclass(frozen=True)
class Facts:
    positions: Mapping[str, int] = field(default_factory=dict)  # a table column's identity -> attnum
    generated: Mapping[str, str] = field(default_factory=dict)  # a generated column -> s (stored) or v
    sequences: Mapping[str, SequenceFacts] = field(default_factory=dict)
    policies: Mapping[str, PolicyFacts] = field(default_factory=dict)
    row_security: Mapping[str, tuple[bool, bool]] = field(default_factory=dict)  # table -> (enabled, forced)
    parents: Mapping[str, str] = field(default_factory=dict)  # a partition or inheriting table -> a parent
    extensions: Mapping[str, str] = field(default_factory=dict)  # extension -> its schema


_USER = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'"
_FACTS = {
    "columns": f"""SELECT n.nspname || '.' || c.relname || '.' || a.attname, a.attnum, a.attgenerated::text
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND {_USER}""",
    "sequences": f"""SELECT n.nspname || '.' || c.relname, format_type(s.seqtypid, NULL), s.seqstart,
            s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
            tn.nspname || '.' || t.relname || '.' || ta.attname, d.deptype::text
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
             AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
        LEFT JOIN pg_class t ON t.oid = d.refobjid LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
        LEFT JOIN pg_attribute ta ON ta.attrelid = t.oid AND ta.attnum = d.refobjsubid
        WHERE {_USER}""",
    "policies": f"""SELECT n.nspname || '.' || c.relname || '.' || p.polname, p.polpermissive, p.polcmd::text,
            ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END
                  FROM unnest(p.polroles) AS r ORDER BY 1),
            pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER}""",
    "row_security": f"""SELECT n.nspname || '.' || c.relname, c.relrowsecurity, c.relforcerowsecurity
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE (c.relrowsecurity OR c.relforcerowsecurity) AND {_USER}""",
    "parents": f"""SELECT n.nspname || '.' || c.relname, min(pn.nspname || '.' || p.relname)
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
        WHERE c.relkind IN ('r', 'p', 'f') AND {_USER} GROUP BY 1""",
    "extensions": "SELECT e.extname, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace",
}


def read_facts(session: Session) -> Facts:
    """What writing the SQL needs beside the snapshot. Read-only, and printed as the
    snapshot prints (only pg_catalog on the search_path: every name qualified)."""
    with session.snapshot():
        (previous,) = session.query_one("SELECT current_setting('search_path')") or ("",)
        session.query("SELECT set_config('search_path', 'pg_catalog', true)")
        rows = {name: session.query(query) for name, query in _FACTS.items()}
        session.query("SELECT set_config('search_path', %s, true)", (previous,))
    return Facts(
        positions={column: int(position) for column, position, _ in rows["columns"]},
        generated={column: kind for column, _, kind in rows["columns"] if kind},
        sequences={
            name: SequenceFacts(
                kind, int(start), int(step), int(low), int(high), int(cache), bool(cycle), owner, dep == "i"
            )
            for name, kind, start, step, low, high, cache, cycle, owner, dep in rows["sequences"]
        },
        policies={
            name: PolicyFacts(bool(permissive), command, tuple(roles or ()), using, check)
            for name, permissive, command, roles, using, check in rows["policies"]
        },
        row_security={table: (bool(on), bool(forced)) for table, on, forced in rows["row_security"]},
        parents=dict(rows["parents"]),
        extensions=dict(rows["extensions"]),
    )


# --- which objects are orphans ----------------------------------------------------------------


@dataclass(frozen=True)
class Orphans:
    keys: frozenset[Key]  # every orphaned object, columns, constraints and indexes included
    evidence: str  # "replay": in no replayed state; "schemas": in a schema no migration creates
    unavailable: str | None = None  # why there is no replay to judge by

    @property
    def limitation(self) -> str | None:
        """What could not be known, said once."""
        if self.unavailable is None:
            return None
        return (
            f"{self.unavailable[:1].upper()}{self.unavailable[1:]}: only schemas no migration creates are formalized, with everything in them; "
            "objects added by hand to other schemas cannot be told from the migrations' without a replay"
        )


def replayed_orphans(live: Snapshot, replay: Replay, location: TrackingLocation) -> frozenset[Key]:
    """The live objects no state of the replayed history has: no migration makes them."""
    # Every object some state has, with every definition it had: the start's, and each change's.
    written = [
        *replay.start.objects.items(),
        *((k, d) for _, changes in replay.steps for k, d in changes if d is not None),
    ]
    made = {k for k, _ in written}
    # Columns some migration makes NOT NULL: their named NOT NULL constraint (PostgreSQL 18)
    # is that migration's, whatever the shadow's version calls it.
    not_null = {k[1] for k, d in written if k[0] == "column" and " NOT NULL" in d}
    names = Names.of(live)
    orphans = set()
    for kind, identity in set(live.objects) - made:
        if kind == "schema" and identity == location.schema:
            continue  # poststack's own
        definition = live.objects[(kind, identity)]
        if kind == "constraint" and definition.startswith("NOT NULL "):
            column, _ = _read_ident(definition.removeprefix("NOT NULL "))
            if f"{names.member(identity)[0]}.{column}" in not_null:
                continue
        orphans.add((kind, identity))
    return frozenset(orphans)


def schema_orphans(live: Snapshot, created: Collection[str], location: TrackingLocation) -> frozenset[Key]:
    """Without a replay: the schemas no migration creates (the orphaned_schema check's
    notion), and everything in them."""
    expected = set(created) | {"public", location.schema}
    schemas = {i for k, i in live.objects if k == "schema" and i not in expected}
    names = Names.of(live)
    return frozenset(
        (kind, identity)
        for kind, identity in live.objects
        if (identity in schemas if kind == "schema" else kind != "extension" and names.schema_of(identity) in schemas)
    )


def find_orphans(desired: DesiredState, live: Snapshot, location: TrackingLocation) -> Orphans:
    outcome = desired.replay
    replay = outcome.replay if outcome is not None else None
    if replay is not None and replay.stopped is None:
        return Orphans(replayed_orphans(live, replay, location), "replay")
    if replay is not None and replay.stopped is not None:
        why = f"the replay stopped at migration {replay.stopped.version}"
    elif outcome is not None and outcome.unavailable:
        why = f"no replay ({outcome.unavailable})"
    else:
        why = "no replay (--no-replay)"
    return Orphans(schema_orphans(live, desired.history.schemas, location), "schemas", why)


def schema_of(key: Key, names: Names, facts: Facts) -> str | None:
    kind, identity = key
    if kind == "schema":
        return identity
    if kind == "extension":
        return facts.extensions.get(identity)
    return names.schema_of(identity)


# --- the SQL ------------------------------------------------------------------------------------

# The order of kinds: a unit goes after the units its definitions name, else in this order.
_RANK = {
    "schema": 0,
    "extension": 1,
    "enum": 2,
    "domain": 3,
    "sequence": 4,
    "table": 5,
    "column": 6,
    "owned by": 7,
    "row security": 7,
    "constraint": 8,
    "foreign key": 9,
    "index": 10,
    "view": 11,
    "materialized view": 11,
    "function": 12,
    "procedure": 12,
    "trigger": 13,
    "policy": 14,
}


@dataclass(frozen=True)
class Unit:
    """One statement of the migration, and the one of the rollback that undoes it (None for
    a sequence's owner and row security: they go with their table, or stay as they were).
    Every drop is there, even of what dropping a table would take along: in reverse order of
    creation, what depends on an object goes before it."""

    kind: str  # a snapshot kind, or "foreign key", "owned by", "row security"
    identity: str
    create: str
    drop: str | None
    covers: frozenset[Key]  # the orphans it makes
    provides: frozenset[str] = frozenset()  # how definitions name what it makes
    refers: str = ""  # its definitions: the names in them are what it needs first


@dataclass(frozen=True)
class Skipped:
    kind: str
    identity: str
    reason: str


@dataclass(frozen=True)
class Generated:
    sql: str
    rollback_sql: str
    units: tuple[Unit, ...]  # in the order they are created
    skipped: tuple[Skipped, ...]

    @property
    def covered(self) -> frozenset[Key]:
        return frozenset(k for u in self.units for k in u.covers)

    @property
    def objects(self) -> tuple[Key, ...]:
        """What a person is told it creates, in order: a table stands for its columns."""
        shown = {"foreign key": "constraint"}
        return tuple(
            (shown.get(u.kind, u.kind), u.identity) for u in self.units if u.kind in _RANK and u.kind not in _STEPS
        )


def generate(orphans: Iterable[Key], live: Snapshot, facts: Facts) -> Generated:
    """The migration that creates ``orphans`` (keys of ``live``), and its rollback. Pure."""
    return _Writer(frozenset(orphans), live, facts).write()


class _Writer:
    def __init__(self, orphans: frozenset[Key], live: Snapshot, facts: Facts) -> None:
        self.orphans = orphans
        self.live = live.objects
        self.facts = facts
        self.names = Names.of(live)
        self.units: list[Unit] = []
        self.skipped: list[Skipped] = []
        self.done: set[Key] = set()
        self.members: dict[str, list[Key]] = {}  # owner -> its columns, constraints, triggers, policies
        for kind, identity in sorted(self.live):
            if kind in _MEMBERS:
                self.members.setdefault(self.names.member(identity)[0], []).append((kind, identity))
        self.not_null: dict[tuple[str, str], str] = {}  # (table, column) -> its NOT NULL constraint's name
        for kind, identity in self.live:
            definition = self.live[(kind, identity)]
            if kind == "constraint" and definition.startswith("NOT NULL "):
                owner, name = self.names.member(identity)
                self.not_null[(owner, _read_ident(definition.removeprefix("NOT NULL "))[0])] = name

    def of(self, kind: str) -> list[str]:
        return sorted(i for k, i in self.orphans if k == kind)

    def write(self) -> Generated:
        unwritable = self._skip_unwritable()
        for schema in self.of("schema"):
            q = ident(schema)
            self._add("schema", schema, f"CREATE SCHEMA IF NOT EXISTS {q};", f"DROP SCHEMA IF EXISTS {q};")
        for extension in self.of("extension"):
            where = self.facts.extensions.get(extension)
            q = ident(extension)
            create = f"CREATE EXTENSION IF NOT EXISTS {q}" + (f" WITH SCHEMA {ident(where)};" if where else ";")
            self._add("extension", extension, create, f"DROP EXTENSION IF EXISTS {q};")
        for enum in self.of("enum"):
            q = self.names.qualified(enum)
            create = _unless(
                f"to_regtype({_literal(q)}) IS NULL", f"CREATE TYPE {q} AS ENUM ({self.live[('enum', enum)]});"
            )
            self._add("enum", enum, create, f"DROP TYPE IF EXISTS {q};", provides={q})
        for domain in self.of("domain"):
            self._domain(domain)
        for sequence in self.of("sequence"):
            self._sequence(sequence)
        for table in self.of("table"):
            if table not in unwritable:
                self._table(table)
        for column in self.of("column"):
            self._added_column(column, unwritable)
        self._owned_sequences()
        self._row_security()
        for constraint in self.of("constraint"):
            if ("constraint", constraint) not in self.done and self.names.member(constraint)[0] not in unwritable:
                self._constraint(constraint)
        for index in self.of("index"):
            if ("index", index) not in self.done and _index_table(self.live[("index", index)]) not in unwritable:
                self._index(index)
        for kind in ("view", "materialized view"):
            for view in self.of(kind):
                self._view(kind, view)
        for kind in ("function", "procedure"):
            for function in self.of(kind):
                self._function(kind, function)
        for trigger in self.of("trigger"):
            if self.names.member(trigger)[0] not in unwritable:
                self._trigger(trigger)
        for policy in self.of("policy"):
            if self.names.member(policy)[0] not in unwritable:
                self._policy(policy)
        accounted = self.done | {(s.kind, s.identity) for s in self.skipped}
        for kind, identity in sorted(self.orphans - accounted):
            self._skip(kind, identity, "poststack does not write this kind of object")
        units = _ordered(self.units)
        skipped = tuple(sorted(self.skipped, key=lambda s: (s.kind, s.identity)))
        return Generated(_up(units, skipped), _down(units), tuple(units), skipped)

    # -- bookkeeping

    def _add(
        self,
        kind: str,
        identity: str,
        create: str,
        drop: str | None,
        *,
        covers: Iterable[Key] = (),
        provides: Iterable[str] = (),
        refers: str = "",
    ) -> None:
        own: set[Key] = set()
        if kind not in _STEPS:
            own.add(("constraint" if kind == "foreign key" else kind, identity))
        covered = frozenset((own | set(covers)) & self.orphans)
        self.done |= covered
        self.units.append(Unit(kind, identity, create, drop, covered, frozenset(provides), refers))

    def _skip(self, kind: str, identity: str, reason: str) -> None:
        self.skipped.append(Skipped(kind, identity, reason))

    def _created(self, table: str) -> bool:
        return ("table", table) in self.done

    def _skip_unwritable(self) -> set[str]:
        """Skip what poststack cannot write. The relations and types among them (returned)
        take their columns, constraints, indexes, triggers and policies with them."""
        owners = set()
        for kind, identity in sorted(self.orphans):
            reason = _NOT_WRITTEN.get(kind)
            if kind == "table" and identity in self.facts.parents:
                parent = self.facts.parents[identity]
                reason = f"a partition or child of {parent}: its bounds and parents are not read from the catalog"
            if reason is not None:
                self._skip(kind, identity, reason)
                owners.add(identity)
        for kind, identity in sorted(self.orphans):
            owner = (
                _index_table(self.live[(kind, identity)])
                if kind == "index"
                else self.names.member(identity)[0]
                if kind in _MEMBERS
                else None
            )
            if owner in owners:
                self._skip(kind, identity, f"belongs to {owner}, which is not written")
        return owners

    # -- kinds

    def _column(self, column: str) -> tuple[str, set[Key]]:
        """``name type [DEFAULT ...|GENERATED ...] [NOT NULL]``, from the column's definition;
        and what it makes: the column, its NOT NULL constraint, an identity's sequence."""
        owner, name = self.names.member(column)
        made: set[Key] = {("column", column)}
        spec = _ColumnSpec.parse(self.live[("column", column)])
        parts = [ident(name), spec.type]
        if spec.generated:
            stored = "VIRTUAL" if self.facts.generated.get(column) == "v" else "STORED"
            parts.append(f"GENERATED ALWAYS AS ({spec.default}) {stored}")
        elif spec.default is not None:
            parts.append(f"DEFAULT {spec.default}")
        if spec.identity:
            sequence = next((s for s, f in self.facts.sequences.items() if f.owner == column and f.identity), None)
            options = _sequence_options(self.facts.sequences[sequence], with_type=False) if sequence else ""
            how = "ALWAYS" if spec.identity == "a" else "BY DEFAULT"
            parts.append(f"GENERATED {how} AS IDENTITY" + (f" ({options})" if options else ""))
            if sequence is not None:
                made.add(("sequence", sequence))
        if spec.not_null:
            constraint = self.not_null.get((owner, name))
            if constraint is not None:
                made.add(("constraint", f"{owner}.{constraint}"))
            if constraint is not None and constraint != _not_null_name(self.names.split(owner)[1], name):
                parts.append(f"CONSTRAINT {ident(constraint)} NOT NULL")
            else:
                parts.append("NOT NULL")
        return " ".join(parts), made

    def _domain(self, domain: str) -> None:
        q = self.names.qualified(domain)
        definition = self.live[("domain", domain)]
        constraints = [
            (self.names.member(identity)[1], self.live[(kind, identity)])
            for kind, identity in self.members.get(domain, [])
            if kind == "constraint"
        ]
        base, _, default = definition.partition(" DEFAULT ")
        parts = [f"CREATE DOMAIN {q} AS {base.removesuffix(' NOT NULL')}"]
        if default:
            parts.append(f"DEFAULT {default}")
        if base.endswith(" NOT NULL") and not any(d == "NOT NULL" for _, d in constraints):
            parts.append("NOT NULL")
        parts += [f"CONSTRAINT {ident(name)} {d}" for name, d in constraints]
        covers = {("constraint", f"{domain}.{name}") for name, _ in constraints}
        refers = " ".join([definition, *(d for _, d in constraints)])
        self._add(
            "domain",
            domain,
            _unless(f"to_regtype({_literal(q)}) IS NULL", " ".join(parts) + ";"),
            f"DROP DOMAIN IF EXISTS {q};",
            covers=covers,
            provides={q},
            refers=refers,
        )

    def _sequence(self, sequence: str) -> None:
        facts = self.facts.sequences.get(sequence)
        if ("sequence", sequence) in self.done or (facts is not None and facts.identity):
            return  # an identity column's: the column makes it
        q = self.names.qualified(sequence)
        options = _sequence_options(facts) if facts is not None else ""
        create = f"CREATE SEQUENCE IF NOT EXISTS {q}" + (f" {options};" if options else ";")
        self._add("sequence", sequence, create, f"DROP SEQUENCE IF EXISTS {q};", provides={q})

    def _table(self, table: str) -> None:
        q = self.names.qualified(table)
        columns = [i for k, i in self.members.get(table, []) if k == "column"]
        columns.sort(key=lambda c: self.facts.positions.get(c, 1 << 30))
        written = [self._column(c) for c in columns]
        body = ",".join(f"\n    {text}" for text, _ in written)
        definition = self.live[("table", table)]
        tail = (
            f" PARTITION BY {definition.removeprefix('partitioned by ')}"
            if definition.startswith("partitioned by ")
            else ""
        )
        refers = " ".join(self.live[("column", c)] for c in columns)
        covers = set().union(*(made for _, made in written))
        create = f"CREATE TABLE IF NOT EXISTS {q} ({body}\n){tail};"
        self._add("table", table, create, f"DROP TABLE IF EXISTS {q};", covers=covers, provides={q}, refers=refers)

    def _added_column(self, column: str, unwritable: set[str]) -> None:
        """A column no migration adds, to a table that is not new."""
        owner, name = self.names.member(column)
        if ("column", column) in self.done or owner in unwritable:
            return
        if ("view", owner) in self.orphans or ("materialized view", owner) in self.orphans:
            return  # its view makes it
        if ("table", owner) not in self.live:
            self._skip("column", column, f"belongs to {owner}, whose definition differs from the migrations'")
            return
        q = self.names.qualified(owner)
        text, made = self._column(column)
        self._add(
            "column",
            column,
            f"ALTER TABLE {q} ADD COLUMN IF NOT EXISTS {text};",
            f"ALTER TABLE IF EXISTS {q} DROP COLUMN IF EXISTS {ident(name)};",
            covers=made,
            refers=f"{q} {self.live[('column', column)]}",
        )

    def _owned_sequences(self) -> None:
        made = {u.identity for u in self.units if u.kind == "sequence"}
        for sequence, facts in sorted(self.facts.sequences.items()):
            if sequence in made and facts.owner is not None and not facts.identity:
                owner, column = self.names.member(facts.owner)
                target = f"{self.names.qualified(owner)}.{ident(column)}"
                create = f"ALTER SEQUENCE {self.names.qualified(sequence)} OWNED BY {target};"
                self._add("owned by", sequence, create, None, refers=self.names.qualified(owner))

    def _row_security(self) -> None:
        tables = {t for t in self.of("table") if self._created(t)}
        tables |= {self.names.member(p)[0] for p in self.of("policy")}
        for table in sorted(tables):
            enabled, forced = self.facts.row_security.get(table, (False, False))
            q = self.names.qualified(table)
            for on, what in ((enabled, "ENABLE"), (forced, "FORCE")):
                if on:
                    self._add("row security", table, f"ALTER TABLE {q} {what} ROW LEVEL SECURITY;", None, refers=q)

    def _constraint(self, constraint: str) -> None:
        owner, name = self.names.member(constraint)
        definition = self.live[("constraint", constraint)]
        q = self.names.qualified(owner)
        if ("domain", owner) in self.live:
            create = _unless(
                _no_row("pg_constraint", f"contypid = {_literal(q)}::regtype AND conname = {_literal(name)}"),
                f"ALTER DOMAIN {q} ADD CONSTRAINT {ident(name)} {definition};",
            )
            drop = f"ALTER DOMAIN {q} DROP CONSTRAINT IF EXISTS {ident(name)};"
            self._add("constraint", constraint, create, drop, refers=f"{q} {definition}")
            return
        if ("table", owner) not in self.live:
            self._skip("constraint", constraint, f"belongs to {owner}, which is not a table")
            return
        absent = _no_row("pg_constraint", f"conrelid = {_literal(q)}::regclass AND conname = {_literal(name)}")
        if definition.startswith("NOT NULL "):
            column, _ = _read_ident(definition.removeprefix("NOT NULL "))
            create = (
                f"ALTER TABLE {q} ALTER COLUMN {ident(column)} SET NOT NULL;"
                if name == _not_null_name(self.names.split(owner)[1], column)
                else _unless(absent, f"ALTER TABLE {q} ADD CONSTRAINT {ident(name)} {definition};")
            )
            drop = f"ALTER TABLE IF EXISTS {q} ALTER COLUMN {ident(column)} DROP NOT NULL;"
            self._add("constraint", constraint, create, drop, refers=q)
            return
        index = ("index", f"{self.names.schema_of(owner)}.{name}")
        backing = {index} if definition.startswith(_CONSTRAINT_BACKED) and index in self.live else set()
        foreign = definition.startswith("FOREIGN KEY")
        drop = f"ALTER TABLE IF EXISTS {q} DROP CONSTRAINT IF EXISTS {ident(name)};"
        self._add(
            "foreign key" if foreign else "constraint",
            constraint,
            _unless(absent, f"ALTER TABLE {q} ADD CONSTRAINT {ident(name)} {definition};"),
            drop,
            covers=backing,
            refers=f"{q} {definition}",
        )

    def _index(self, index: str) -> None:
        definition = self.live[("index", index)]
        schema, name = self.names.split(index)
        table = _index_table(definition)
        constraint = self.live.get(("constraint", f"{table}.{name}"), "")
        if constraint.startswith(_CONSTRAINT_BACKED):
            self._skip("index", index, f"backs the constraint {table}.{name}, which a migration makes")
            return
        create = re.sub(r"^CREATE (UNIQUE )?INDEX ", r"CREATE \1INDEX IF NOT EXISTS ", definition) + ";"
        drop = f"DROP INDEX IF EXISTS {ident(schema)}.{ident(name)};"
        self._add("index", index, create, drop, refers=definition)

    def _view(self, kind: str, view: str) -> None:
        q = self.names.qualified(view)
        body = self.live[(kind, view)].rstrip().removesuffix(";")
        columns = {key for key in self.members.get(view, []) if key[0] == "column"}
        if kind == "view":
            create, drop = f"CREATE OR REPLACE VIEW {q} AS\n{body};", f"DROP VIEW IF EXISTS {q};"
        else:
            create = f"CREATE MATERIALIZED VIEW IF NOT EXISTS {q} AS\n{body};"
            drop = f"DROP MATERIALIZED VIEW IF EXISTS {q};"
        self._add(kind, view, create, drop, covers=columns, provides={q}, refers=body)

    def _function(self, kind: str, function: str) -> None:
        schema, name, args = self.names.function(function)
        definition = self.live[(kind, function)].rstrip().removesuffix(";")
        q = f"{ident(schema)}.{ident(name)}"
        drop = f"DROP {'PROCEDURE' if kind == 'procedure' else 'FUNCTION'} IF EXISTS {q}({args});"
        self._add(kind, function, definition + ";", drop, provides={q}, refers=definition)

    def _trigger(self, trigger: str) -> None:
        owner, name = self.names.member(trigger)
        definition = self.live[("trigger", trigger)].rstrip().removesuffix(";")
        q = self.names.qualified(owner)
        create = _unless(
            _no_row("pg_trigger", f"tgrelid = {_literal(q)}::regclass AND tgname = {_literal(name)}"), definition + ";"
        )
        drop = f"DROP TRIGGER IF EXISTS {ident(name)} ON {q};"
        self._add("trigger", trigger, create, drop, refers=definition)

    def _policy(self, policy: str) -> None:
        owner, name = self.names.member(policy)
        facts = self.facts.policies.get(policy)
        if facts is None:
            self._skip("policy", policy, "its details could not be read")
            return
        q = self.names.qualified(owner)
        commands = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}
        parts = [f"CREATE POLICY {ident(name)} ON {q}"]
        if not facts.permissive:
            parts.append("AS RESTRICTIVE")
        if facts.command in commands:
            parts.append(f"FOR {commands[facts.command]}")
        if facts.roles and facts.roles != ("PUBLIC",):
            parts.append(f"TO {', '.join(facts.roles)}")
        if facts.using is not None:
            parts.append(f"USING ({facts.using})")
        if facts.check is not None:
            parts.append(f"WITH CHECK ({facts.check})")
        drop = f"DROP POLICY IF EXISTS {ident(name)} ON {q};"
        absent = _no_row("pg_policy", f"polrelid = {_literal(q)}::regclass AND polname = {_literal(name)}")
        self._add(
            "policy",
            policy,
            _unless(absent, " ".join(parts) + ";"),
            drop,
            refers=f"{q} {facts.using or ''} {facts.check or ''}",
        )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _no_row(catalog: str, condition: str) -> str:
    return f"NOT EXISTS (SELECT FROM pg_catalog.{catalog} WHERE {condition})"


def _unless(missing: str, statement: str) -> str:
    """``statement`` only where ``missing`` holds: for what PostgreSQL has no IF NOT EXISTS
    for, so the migration changes nothing where the objects exist (db migrate may run it
    there, as a no-op)."""
    tag = "$formalize$"
    while tag in statement:
        tag = tag[:-1] + "_$"
    body = statement.replace("\n", "\n        ")
    return f"DO {tag}\nBEGIN\n    IF {missing} THEN\n        {body}\n    END IF;\nEND\n{tag};"


def _not_null_name(table: str, column: str) -> str:
    """The name PostgreSQL 18 gives a column's NOT NULL constraint, when it fits in 63 bytes."""
    return f"{table}_{column}_not_null"


@dataclass(frozen=True)
class _ColumnSpec:
    type: str
    not_null: bool
    default: str | None  # or the generation expression
    identity: str  # "a" (always), "d" (by default) or ""
    generated: bool

    @classmethod
    def parse(cls, definition: str) -> _ColumnSpec:
        """A snapshot's ``type[ NOT NULL][ DEFAULT expr][ IDENTITY a|d][ GENERATED]``."""
        generated = definition.endswith(" GENERATED")
        text = definition.removesuffix(" GENERATED")
        identity = ""
        if match := re.search(r" IDENTITY ([ad])$", text):
            identity, text = match[1], text[: match.start()]
        text, found, default = text.partition(" DEFAULT ")
        not_null = text.endswith(" NOT NULL")
        return cls(text.removesuffix(" NOT NULL"), not_null, default if found else None, identity, generated)


def _index_table(definition: str) -> str:
    """The identity of the table an index definition is ON ("" if it cannot be told)."""
    match = re.search(r" ON (?:ONLY )?", definition)
    if match is None:
        return ""
    schema, rest = _read_ident(definition[match.end() :])
    table, _ = _read_ident(rest.removeprefix("."))
    return f"{schema}.{table}"


_TYPE_RANGE = {"smallint": (-(1 << 15), (1 << 15) - 1), "integer": (-(1 << 31), (1 << 31) - 1)}


def _sequence_options(facts: SequenceFacts, *, with_type: bool = True) -> str:
    """The options that differ from PostgreSQL's defaults: "" for a plain sequence."""
    low, high = _TYPE_RANGE.get(facts.type, (-(1 << 63), (1 << 63) - 1))
    ascending = facts.increment > 0
    options = []
    if with_type and facts.type != "bigint":
        options.append(f"AS {facts.type}")
    if facts.increment != 1:
        options.append(f"INCREMENT BY {facts.increment}")
    if facts.minimum != (1 if ascending else low):
        options.append(f"MINVALUE {facts.minimum}")
    if facts.maximum != (high if ascending else -1):
        options.append(f"MAXVALUE {facts.maximum}")
    if facts.start != (facts.minimum if ascending else facts.maximum):
        options.append(f"START WITH {facts.start}")
    if facts.cache != 1:
        options.append(f"CACHE {facts.cache}")
    if facts.cycle:
        options.append("CYCLE")
    return " ".join(options)


def _ordered(units: Sequence[Unit]) -> list[Unit]:
    """Each unit after the units whose names its definitions mention (a view after the
    function it calls, a table after its column types and sequences), else by kind; where
    mentions go round in a circle, by kind."""
    providers: dict[str, set[int]] = {}
    for index, unit in enumerate(units):
        for name in unit.provides:
            providers.setdefault(name, set()).add(index)
    needs: list[set[int]] = [set() for _ in units]
    if providers:
        alternatives = "|".join(re.escape(n) for n in sorted(providers, key=len, reverse=True))
        mention = re.compile(rf'(?<![\w$."])(?:{alternatives})(?![\w$"])')
        for index, unit in enumerate(units):
            for found in mention.findall(unit.refers):
                needs[index] |= providers[found] - {index}
    order = [(_RANK[u.kind], index) for index, u in enumerate(units)]
    waiting = [len(n) for n in needs]
    needed_by: list[list[int]] = [[] for _ in units]
    for index, wanted in enumerate(needs):
        for other in wanted:
            needed_by[other].append(index)
    ready = [order[i] for i in range(len(units)) if not waiting[i]]
    heapq.heapify(ready)
    placed: list[int] = []
    done: set[int] = set()
    while len(placed) < len(units):
        if not ready:  # what is left names itself round a circle: the earliest kind goes first
            heapq.heappush(ready, min(order[i] for i in range(len(units)) if i not in done))
        _, chosen = heapq.heappop(ready)
        if chosen in done:
            continue
        placed.append(chosen)
        done.add(chosen)
        for other in needed_by[chosen]:
            waiting[other] -= 1
            if not waiting[other] and other not in done:
                heapq.heappush(ready, order[other])
    return [units[i] for i in placed]


def _up(units: Sequence[Unit], skipped: Sequence[Skipped]) -> str:
    lines = [
        "-- Formalizes objects that exist in the database but that no migration creates.",
        "-- Written by `poststack db formalize` from the catalog; review it as any migration.",
        "-- Where the objects exist, it changes nothing: track it there with poststack db recover.",
        "-- Elsewhere, poststack db migrate creates them.",
        f"-- {LIMITS}",
    ]
    if skipped:
        lines.append("-- Not written (add them by hand if they belong here):")
        lines += [f"--   {s.kind} {s.identity}: {s.reason}" for s in skipped]
    return "\n".join(lines) + "\n\n" + _statements([u.create for u in units])


def _down(units: Sequence[Unit]) -> str:
    header = "-- Drops what the migration beside it creates, in reverse order.\n"
    return header + _statements([u.drop for u in reversed(units) if u.drop])


def _statements(statements: Sequence[str]) -> str:
    """One a line; one of several lines apart from its neighbours, to be read."""
    text = ""
    for previous, statement in zip(["", *statements], statements, strict=False):
        apart = previous and ("\n" in previous or "\n" in statement)
        text += ("\n" if apart else "") + statement + "\n"
    return text


# --- the file's name --------------------------------------------------------------------------


def next_version(directory: Path, versions: Iterable[str]) -> str:
    """After the highest version among the directory's file names and ``versions`` (tracked
    ones whose file is gone count too), with its zero-padding width; 001 in an empty one."""
    written = [v for v in versions if v.isdigit()]
    with contextlib.suppress(OSError):  # a missing directory was refused already
        written += [m[1] for p in directory.iterdir() if (m := re.match(r"(\d+)_", p.name))]
    if not written:
        return "001"
    highest = max(written, key=lambda v: (int(v), len(v)))
    return str(int(highest) + 1).zfill(len(highest))


def description_from(text: str) -> str:
    """A file-name-safe description: ``temp schema`` reads as temp_schema."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", text.strip()).strip("_-").removeprefix("formalize_")
    if not cleaned:
        raise UsageError(f"--name {text!r} has no letter or digit to name the migration with")
    return cleaned


# --- the verb -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """The migration and its rollback, run after the history where it was replayed."""

    shadow: str
    ran: bool
    reason: str | None = None  # why it did not run, or where it failed
    differences: tuple[str, ...] = ()  # where the migration does not make the orphans as they are
    rollback_differences: tuple[str, ...] = ()  # where its rollback does not undo it
    definitions: bool = True  # definitions compared too (the shadow runs the target's major)

    @property
    def ok(self) -> bool:
        return self.ran and self.reason is None and not self.differences and not self.rollback_differences


@dataclass(frozen=True)
class NewMigration:
    version: str
    path: Path
    rollback_path: Path


@dataclass(frozen=True)
class Formalization:
    database: str
    dry_run: bool
    only: tuple[str, ...]
    orphans: Orphans
    generated: Generated | None  # None: nothing to formalize
    migration: NewMigration | None  # None: nothing to write (nothing, or only what is skipped)
    check: Check | None
    written: bool
    history: tuple[str, ...] = ()  # the versions the migration comes after
    untracked: tuple[str, ...] = ()  # those this database's tracking does not record as applied

    @property
    def ok(self) -> bool:
        """False when the check ran and the migration does not reproduce the orphans."""
        return self.check is None or not self.check.ran or self.check.ok


def formalize(
    settings: Settings,
    *,
    only: Sequence[str] = (),
    name: str | None = None,
    dry_run: bool = False,
    notify: Notify | None = None,
) -> Formalization:
    """Find the orphans, write the migration that creates them and its rollback (unless
    ``dry_run``), checked in the shadow. The target database is only read."""
    layout = scan_migrations(settings.migrations_dir, settings.layout).migrations.layout
    if layout != "poststack":
        raise UsageError(
            f"db formalize writes migrations in poststack's layout (NNN_name.sql); {settings.migrations_dir} "
            f"is in {LAYOUTS[layout].tool}'s layout"
        )
    description = description_from(name) if name is not None else None
    shadow = shadow_for(settings)
    location = settings.tracking
    with connect(settings, notify) as session:
        desired, observed = read_state(session, settings.migrations_dir, location, settings.layout, shadow, notify)
        facts = read_facts(session)
        live = observed.live or Snapshot({})
        names = Names.of(live)
        schemas = {i for k, i in live.objects if k == "schema"}
        for schema in only:
            if schema not in schemas:
                raise UsageError(
                    f"--only {schema}: the database has no schema {schema!r}{did_you_mean(schema, schemas)}"
                )
        orphans = find_orphans(desired, live, location)
        keys = {k for k in orphans.keys if not only or schema_of(k, names, facts) in only}
        migrations = desired.migrations.migrations
        history = tuple(m.version for m in migrations)
        applied = observed.tracking.applied
        untracked = tuple(m.version for m in migrations if m.key not in applied)
        nothing = Formalization(
            session.display_url, dry_run, tuple(only), orphans, None, None, None, False, history, untracked
        )
        if not keys:
            return nothing
        generated = generate(keys, live, facts)
        if not generated.units:  # only what poststack cannot write: no file to write
            return replace(nothing, generated=generated)
        if description is None:
            owning = sorted({schema_of(k, names, facts) or "" for k in generated.covered} - {""})
            description = description_from(owning[0]) if len(owning) == 1 else "orphans"
        version = next_version(settings.migrations_dir, [*history, *(r.version for r in observed.tracking.rows)])
        label = f"{version}_formalize_{description}"
        directory = settings.migrations_dir
        new = NewMigration(version, directory / f"{label}.sql", directory / f"{label}.rollback.sql")
        refuse_existing(new)
        if shadow is None:
            check = Check("none", False, "--no-replay")
        elif orphans.evidence != "replay":
            check = Check("none", False, orphans.unavailable)
        else:
            expected = {k: live.objects[k] for k in generated.covered}
            check = check_in_shadow(session, migrations, location, shadow, new, generated, expected)
    if not dry_run:
        write_files(new, generated)
    return replace(nothing, generated=generated, migration=new, check=check, written=not dry_run)


def refuse_existing(new: NewMigration) -> None:
    for path in (new.path, new.rollback_path):
        if path.exists() or path.is_symlink():
            raise UsageError(
                f"{path} already exists: poststack never overwrites a migration",
                "Choose another name with --name, or move that file away.",
            )


def write_files(new: NewMigration, generated: Generated) -> None:
    """Both files, each created afresh: an existing file is never overwritten."""
    refuse_existing(new)
    written: list[Path] = []
    try:
        for path, text in ((new.path, generated.sql), (new.rollback_path, generated.rollback_sql)):
            with path.open("x", encoding="utf-8", newline="\n") as out:
                written.append(path)
                out.write(text)
    except FileExistsError as e:
        for path in written:
            path.unlink(missing_ok=True)
        raise UsageError(f"{e.filename} already exists: poststack never overwrites a migration") from e
    except OSError as e:
        for path in written:
            path.unlink(missing_ok=True)
        raise UsageError(f"cannot write {e.filename}: {e.strerror}") from e


def check_in_shadow(
    session: Session,
    migrations: Sequence[Migration],
    location: TrackingLocation,
    shadow: ShadowSettings,
    new: NewMigration,
    generated: Generated,
    expected: Mapping[Key, str],
) -> Check:
    """Replay the history, then the new migration, then its rollback: the migration must
    make exactly ``expected`` (as the target has them), and the rollback undo it."""
    last = VersionKey((1 << 62,))  # after every version; the replay runs them in the order given
    up = Migration(new.version, last, "formalize", SqlFile(new.path, generated.sql), None, None)
    down_version = f"{new.version} rollback"
    down = Migration(
        down_version, last, "formalize rollback", SqlFile(new.rollback_path, generated.rollback_sql), None, None
    )
    outcome = replay_history(session, [*migrations, up, down], location, shadow)
    replay = outcome.replay
    if replay is None:
        return Check(outcome.shadow, False, outcome.unavailable)
    stop = replay.stopped
    if stop is not None and stop.version not in (new.version, down_version):
        return Check(outcome.shadow, False, f"the replay stopped at migration {stop.version}")
    reason = None
    if stop is not None:
        reason = f"{'its rollback' if stop.version == down_version else 'it'} fails: {stop.reason}"
    # Only the three states around the new migration, not every state of a long history.
    at = {0: replay.start} | {i: state for i, (_, state) in enumerate(replay.states(), start=1) if i >= len(migrations)}
    before = at[len(migrations)]
    after = at.get(len(migrations) + 1)
    undone = at.get(len(migrations) + 2)
    differences = []
    if after is not None:
        for key, definition in sorted(expected.items()):
            made = after.objects.get(key)
            if made is None:
                differences.append(f"does not make {key[0]} {key[1]}")
            elif outcome.same_major and made != definition:
                differences.append(f"makes {key[0]} {key[1]} as {made!r}, not {definition!r}")
        change = before.diff(after)
        differences += [
            f"also makes {o.kind} {o.identity}" for o in change.added if (o.kind, o.identity) not in expected
        ]
        differences += [f"drops {o.kind} {o.identity}" for o in change.removed]
        differences += [f"changes {old.kind} {old.identity}" for old, _ in change.changed]
    rollback = []
    if undone is not None:
        back = before.diff(undone)
        rollback += [f"leaves {o.kind} {o.identity}" for o in back.added]
        rollback += [f"drops {o.kind} {o.identity}, which the history makes" for o in back.removed]
        rollback += [f"changes {old.kind} {old.identity}" for old, _ in back.changed]
    return Check(outcome.shadow, True, reason, tuple(differences), tuple(rollback), outcome.same_major)
