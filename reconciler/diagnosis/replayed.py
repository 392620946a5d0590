"""Is an untracked migration applied? Decided by state: what each migration changed when the
history was replayed in a shadow, against what the live catalog holds now. Pure.

The model: the live database is some of the history, applied in order, perhaps changed by
hand since. Each object's value (its definition as PostgreSQL prints it, or its absence) is
then the value its last applied writer left. For one object of a migration's changes:

- proof: the live value is one that, of every writer that may have written it last (the
  last writer shown applied, and each writer after it), only this migration produces;
- against: no writer from this migration on produces the live value, but one before it
  (or the empty start) does: had it run, it or a later writer would have left its own;
- superseded: a later migration shown applied produces the live value;
- unexplained: no writer produces it: changed by hand, evidence neither way.

A migration with a proof and nothing against is applied; with both, partly applied; with
only evidence against, absent; one whose every change was superseded by migrations shown
applied is applied too (the basis names them). A migration that changes no schema (data
only) sits between two migrations shown applied: applied by *order*, a weaker basis that
``recover`` trusts only when asked. Anything else stays undetermined, with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from reconciler.desired.replay.replay import Replay
from reconciler.diagnosis.attribution import ORDER, REPLAY, Attribution, Verdict

Key = tuple[str, str]  # (kind, identity)
Value = str | None  # a definition; None: the object does not exist
START = 0  # the position of the empty start, before the first migration


@dataclass(frozen=True)
class ReplayedObject:
    """One object a migration changed in the replay, with what it left and what is live."""

    kind: str
    identity: str
    expected: Value  # what the migration left (None: it dropped the object)
    found: Value  # what the live database holds (None: absent)

    @property
    def name(self) -> str:
        return f"{self.kind} {self.identity}"

    def display(self) -> str:
        """As a found or missing object is listed: a drop says so."""
        return f"{self.name} (dropped)" if self.expected is None else self.name

    def described(self) -> str:
        if self.expected is None:
            return f"{self.name} (it drops it) still exists"
        if self.found is None:
            return f"{self.name} is missing"
        expected, found = _where_they_differ(self.expected, self.found)
        return f"{self.name} differs: expected {expected}, found {found}"


def _where_they_differ(expected: str, found: str, limit: int = 100) -> tuple[str, str]:
    """The two definitions from a little before where they part, so that long ones that begin
    alike (a function's header) do not print alike."""
    a, b = " ".join(expected.split()) or "(no definition)", " ".join(found.split()) or "(no definition)"
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    start = max(0, common - 20)

    def cut(text: str) -> str:
        rest = text[start : start + limit] + ("…" if len(text) > start + limit else "")
        return ("…" if start else "") + rest

    return cut(a), cut(b)


# An object's name as the parsed SQL and the catalog both know it: (family, schema, table, name).
Name = tuple[str, str | None, str | None, str]
_RELATIONS = frozenset({"table", "view", "materialized view", "sequence", "foreign table", "index"})
_TYPES = frozenset({"enum", "domain", "range type", "composite type"})
_ROUTINES = frozenset({"function", "procedure", "aggregate"})
_CHILDREN = frozenset({"column", "trigger", "policy", "constraint"})


def name_of(key: Key) -> Name | None:
    """The name a snapshot key has in the parsed SQL's terms; None for kinds it does not name."""
    kind, identity = key
    if kind in ("schema", "extension"):
        return (kind, None, None, identity)
    schema, _, rest = identity.partition(".")
    if kind in _RELATIONS:
        return ("relation", schema, None, rest)
    if kind in _TYPES:
        return ("type", schema, None, rest)
    if kind in _ROUTINES:
        return ("routine", schema, None, rest.partition("(")[0])
    if kind in _CHILDREN:
        table, _, name = rest.partition(".")
        return (kind, schema, table, name)
    return None


class _Seen(Enum):
    PROOF = "proof"
    AGAINST = "against"
    SUPERSEDED = "superseded"  # a later writer shown applied produces the live value
    LATER = "later"  # a later writer not (yet) shown applied produces it
    AMBIGUOUS = "ambiguous"  # its own value is live, but another writer may have left it
    UNEXPLAINED = "unexplained"


@dataclass(frozen=True)
class _Writes:
    """The replayed history, as writers of each object."""

    stopped_at: str | None  # the migration the replay could not run: nothing after it is known
    positions: dict[str, int]  # version -> 1-based position in the replay
    changes: dict[int, tuple[Key, ...]]  # position -> the objects it changed
    writers: dict[Key, tuple[tuple[int, Value], ...]]  # object -> (position, value left), START first
    values: dict[tuple[Key, int], Value]  # (object, position) -> the value that writer left
    named: dict[Name, frozenset[str]]  # a name -> the versions whose parsed SQL names it
    at: dict[int, str]  # position -> version

    def unseen_writers(self, key: Key, version: str) -> bool:
        """Whether a migration other than ``version`` names ``key`` but did not change it in the
        replay (or was not replayed): a writer the states cannot show."""
        name = name_of(key)
        if name is None:
            return False
        family, _, table, object_name = name
        naming = self.named.get(name, frozenset()) | self.named.get((family, None, table, object_name), frozenset())
        for other in naming - {version}:
            position = self.positions.get(other)
            if position is None or key not in self.changes[position]:
                return True
        return False

    @classmethod
    def of(
        cls,
        replay: Replay,
        ignored: frozenset[Key] = frozenset(),
        mentions: Mapping[str, frozenset[Name]] | None = None,
    ) -> _Writes:
        """``ignored``: objects that prove nothing (the tracking schema, which poststack makes)."""
        positions: dict[str, int] = {}
        changes: dict[int, tuple[Key, ...]] = {}
        writers: dict[Key, list[tuple[int, Value]]] = {}
        for key, value in replay.start.objects.items():
            if key not in ignored:
                writers[key] = [(START, value)]
        for position, (version, step) in enumerate(replay.steps, start=1):
            positions[version] = position
            changed = []
            for key, value in step:
                if key not in ignored:
                    writers.setdefault(key, [(START, None)]).append((position, value))
                    changed.append(key)
            changes[position] = tuple(changed)
        stopped = replay.stopped.version if replay.stopped is not None else None
        values = {(key, p): v for key, written in writers.items() for p, v in written}
        named: dict[Name, set[str]] = {}
        for version, names in (mentions or {}).items():
            for name in names:
                named.setdefault(name, set()).add(version)
        frozen = {name: frozenset(versions) for name, versions in named.items()}
        at = {p: v for v, p in positions.items()}
        return cls(stopped, positions, changes, {k: tuple(w) for k, w in writers.items()}, values, frozen, at)

    def value_of(self, key: Key, position: int) -> Value:
        return self.values[(key, position)]


def attribute_by_replay(
    replay: Replay,
    live: Mapping[Key, str],
    shown: frozenset[str],
    untracked: Sequence[str],
    ignored: frozenset[Key] = frozenset(),
    changes_data: frozenset[str] = frozenset(),
    mentions: Mapping[str, frozenset[Name]] | None = None,
    distrusted: Mapping[str, str] | None = None,
) -> dict[str, Attribution]:
    """Verdicts for the ``untracked`` versions the replay ran, by state. ``shown``: versions
    tracked as applied (a tracking row vouches for them); ``ignored``: objects that prove
    nothing; ``changes_data``: versions with statements that change rows, not schema;
    ``mentions``: the objects each migration's parsed SQL creates, replaces or drops (those
    past where the replay stopped included). A migration that names an object but left it
    unchanged in the replay (CREATE ... IF NOT EXISTS, a view made again alike) could have
    made it, had the history run otherwise: that object proves nothing either way.
    ``distrusted``: versions whose claims rest on order whatever the states show, and why."""
    writes = _Writes.of(replay, ignored, mentions or {})
    distrusted = distrusted or {}
    wanted = [v for v in untracked if v in writes.positions and v not in shown]
    tracked = {writes.positions[v] for v in shown if v in writes.positions}
    applied, absent, matched = set(tracked), set[int](), 0
    verdicts: dict[str, Attribution] = {}
    # Each migration shown applied narrows what may have written last, and each shown absent
    # (a branch merged late, skipped) is left out of the states the live schema is matched
    # against: repeat until settled.
    proven = set(tracked)  # tracked, or a change only it makes is live
    for _ in range(len(wanted) + 2):
        # The live schema is the replayed state (the absent left out) after ``matched``: what
        # comes before the last proven migration up to there ran. Past the last proven one,
        # changes that undo each other would match as well as changes never made.
        prefix = _matching_prefix(writes, live, absent)
        matched = max((p for p in proven if p <= prefix), default=0)
        in_prefix = {p for p in range(1, matched + 1) if writes.changes[p] and p not in absent}
        judged = {v: _judge(v, writes, live, proven, applied | in_prefix, matched) for v in wanted}
        verdicts = {v: a for v, (a, _) in judged.items()}
        shown_now = {writes.positions[v] for v, a in verdicts.items() if a.verdict is Verdict.APPLIED}
        absent_now = {writes.positions[v] for v, a in verdicts.items() if a.verdict is Verdict.ABSENT}
        proven_now = tracked | {writes.positions[v] for v, (_, own) in judged.items() if own}
        if tracked | shown_now == applied and absent_now == absent and proven_now == proven:
            break
        applied, absent, proven = tracked | shown_now, absent_now, proven_now
    # Superseded, or inside the matching prefix, is what the schema shows, not proof that it
    # ran: a migration merged late and never run looks the same once later ones overwrote its
    # changes. For schema changes that is harmless (running it now would undo the later ones);
    # for data changes it is not: those rest on order alone, tracked only when asked.
    for version, found in verdicts.items():
        own = writes.positions[version] in proven
        if found.verdict is not Verdict.APPLIED:
            continue
        if version in distrusted:
            why = distrusted[version]
        elif not own and version in changes_data:
            why = "it also changes data, which no state shows"
        else:
            continue
        verdicts[version] = Attribution(version, Verdict.APPLIED, found.found, (), ORDER, f"{found.reason}; {why}")
    applied = tracked | {
        writes.positions[v] for v, a in verdicts.items() if a.verdict is Verdict.APPLIED and a.basis != ORDER
    }
    for version, found in verdicts.items():
        if found.basis == ORDER and found.verdict is Verdict.UNDETERMINED:
            verdicts[version] = _by_order(version, writes, applied)
    return verdicts


def _matching_prefix(writes: _Writes, live: Mapping[Key, str], absent: set[int]) -> int:
    """The last migration after which the replayed state is the live schema, on every object
    the history touches whose live value the history explains (one changed by hand is drift,
    not evidence). It must show a change of its own: a migration whose changes are all
    invisible, or all changed by hand since, cannot be told from one that never ran."""
    explained = {k for k, w in writes.writers.items() if any(v == live.get(k) for _, v in w)}
    state = {k: w[0][1] for k, w in writes.writers.items()}  # the start
    off = {k for k in explained if state[k] != live.get(k)}
    matched = 0
    for position in range(1, len(writes.changes) + 1):
        keys = writes.changes[position] if position not in absent else ()
        for key in keys:
            state[key] = writes.value_of(key, position)
            if key in explained:
                if state[key] == live.get(key):
                    off.discard(key)
                else:
                    off.add(key)
        if not off and any(k in explained and state[k] == live.get(k) for k in keys):
            matched = position
    return matched


def _judge(
    version: str, writes: _Writes, live: Mapping[Key, str], proven: set[int], applied: set[int], matched: int = 0
) -> tuple[Attribution, bool]:
    """The verdict, and whether a change only it makes is live (a proof of its own)."""
    position = writes.positions[version]
    keys = writes.changes[position]
    if not keys:
        return Attribution(version, Verdict.UNDETERMINED, basis=ORDER, reason="it changes no schema"), False
    seen: dict[_Seen, list[ReplayedObject]] = {s: [] for s in _Seen}
    superseding: set[int] = set()
    for key in keys:
        found = live.get(key)
        how, by = _see(key, position, writes, found, proven, applied)
        seen[how].append(ReplayedObject(key[0], key[1], writes.value_of(key, position), found))
        superseding |= by
    proofs, against = seen[_Seen.PROOF], seen[_Seen.AGAINST]
    superseded = seen[_Seen.SUPERSEDED]
    total = len(keys)
    if proofs:
        reason = f"{len(proofs)} of its {total} replayed changes are present with their definitions"
        if superseded:
            reason += f", {len(superseded)} superseded by later migrations shown applied"
        if against:
            reason += "; " + "; ".join(o.described() for o in against[:3])
            return Attribution(version, Verdict.PARTIAL, tuple(proofs), tuple(against), REPLAY, reason), False
        return Attribution(version, Verdict.APPLIED, tuple(proofs + superseded), (), REPLAY, reason), True
    # Objects it makes that exist, but not as it makes them: made or changed by hand. With
    # evidence against the rest, someone did part of it: running it would collide.
    differing = [o for o in seen[_Seen.UNEXPLAINED] if o.expected is not None and o.found is not None]
    if against and differing:
        reason = (
            f"{len(differing)} of its objects exist with other definitions ({differing[0].described()}); "
            + "; ".join(o.described() for o in against[:3])
        )
        return Attribution(version, Verdict.PARTIAL, tuple(differing), tuple(against), REPLAY, reason), False
    if against:
        reason = "its changes are not there: " + "; ".join(o.described() for o in against[:3])
        return Attribution(version, Verdict.ABSENT, (), tuple(against), REPLAY, reason), False
    if len(superseded) == total:
        later = ", ".join(version_at(writes, p) for p in sorted(superseding))
        reason = f"every change it made was superseded by later migrations shown applied ({later})"
        return Attribution(version, Verdict.APPLIED, tuple(superseded), (), REPLAY, reason), False
    if position <= matched:
        return _in_matching_prefix(version, position, matched, writes, live), False
    return Attribution(version, Verdict.UNDETERMINED, basis=REPLAY, reason=_unsure(seen, writes)), False


def _in_matching_prefix(
    version: str, position: int, matched: int, writes: _Writes, live: Mapping[Key, str]
) -> Attribution:
    keys = writes.changes[position]
    found = tuple(
        ReplayedObject(k[0], k[1], writes.value_of(k, position), live.get(k))
        for k in keys
        if live.get(k) == writes.value_of(k, position)
    )
    reason = f"the live schema is the replayed state after migration {version_at(writes, matched)}, which it precedes"
    if position == matched:
        reason = "the live schema is the replayed state after it"
    return Attribution(version, Verdict.APPLIED, found, (), REPLAY, reason)


def _see(
    key: Key, position: int, writes: _Writes, found: Value, proven: set[int], applied: set[int]
) -> tuple[_Seen, set[int]]:
    """``proven``: migrations known to have run (tracked, or a proof of their own): only they
    narrow who may have written last. ``applied``: those and the ones shown applied otherwise."""
    writers = writes.writers[key]
    own = writes.value_of(key, position)
    if writes.unseen_writers(key, version_at(writes, position)):
        return (_Seen.AMBIGUOUS if own == found else _Seen.LATER), set()
    last_shown = max((p for p, _ in writers if p in proven and p != position), default=START)
    candidates = [(p, v) for p, v in writers if p >= last_shown]
    producers = {p for p, v in candidates if v == found}
    if own == found and producers == {position}:
        return _Seen.PROOF, set()
    everyone = {p for p, v in writers if v == found}
    later = {p for p in everyone if p > position}
    if later & applied:
        return _Seen.SUPERSEDED, later & applied
    if later:
        return _Seen.LATER, set()
    if own == found:
        return _Seen.AMBIGUOUS, set()
    if everyone:
        return _Seen.AGAINST, set()
    return _Seen.UNEXPLAINED, set()


def _unsure(seen: dict[_Seen, list[ReplayedObject]], writes: _Writes) -> str:
    parts = []
    if seen[_Seen.UNEXPLAINED]:
        changed = seen[_Seen.UNEXPLAINED]
        outside = (
            f"by a migration from {writes.stopped_at} on (where the replay stopped) or by hand"
            if writes.stopped_at is not None
            else "by something outside the history"
        )
        parts.append(f"{len(changed)} of its objects were changed since {outside} ({changed[0].described()})")
    if seen[_Seen.LATER]:
        parts.append(
            f"{len(seen[_Seen.LATER])} of its changes were overwritten by later migrations that are not shown applied"
        )
    if seen[_Seen.AMBIGUOUS]:
        parts.append(f"what it leaves in {seen[_Seen.AMBIGUOUS][0].name} other migrations leave too, identically")
    return "; ".join(parts) or "the replay shows nothing that only it did"


def _by_order(version: str, writes: _Writes, applied: set[int]) -> Attribution:
    """A migration that changes no schema: applied if it sits between two shown applied."""
    position = writes.positions[version]
    before = max((p for p in applied if p < position), default=None)
    after = min((p for p in applied if p > position), default=None)
    if before is not None and after is not None:
        reason = (
            f"it changes no schema; it sits between {version_at(writes, before)} and "
            f"{version_at(writes, after)}, both shown applied (by order only)"
        )
        return Attribution(version, Verdict.APPLIED, basis=ORDER, reason=reason)
    where = "nothing after it" if before is not None else "nothing before it"
    reason = f"it changes no schema (data only), and {where} is shown applied"
    return Attribution(version, Verdict.UNDETERMINED, basis=ORDER, reason=reason)


def version_at(writes: _Writes, position: int) -> str:
    return writes.at[position]


def drift_by_replay(
    replay: Replay,
    live: Mapping[Key, str],
    applied: frozenset[str],
    tracked: Sequence[str],
    ignored: frozenset[Key] = frozenset(),
) -> dict[str, tuple[ReplayedObject, ...]]:
    """For each ``tracked`` version, the objects it was the last applied migration to change
    (``applied``: tracked and shown applied) that are not as it left them: gone, or with
    another definition (a column type changed by hand, an index rebuilt, a function body
    edited). A live value some writer of the history produces is not drift: it is history."""
    writes = _Writes.of(replay, ignored)
    positions = {writes.positions[v] for v in applied if v in writes.positions}
    drift: dict[str, tuple[ReplayedObject, ...]] = {}
    for version in tracked:
        position = writes.positions.get(version)
        if position is None:
            continue
        off = []
        for key in writes.changes[position]:
            writers = writes.writers[key]
            if any(p > position and p in positions for p, _ in writers):
                continue  # a later applied migration changed it again
            expected, found = writes.value_of(key, position), live.get(key)
            if found == expected or any(v == found for p, v in writers if p > position):
                continue
            off.append(ReplayedObject(key[0], key[1], expected, found))
        if off:
            drift[version] = tuple(off)
    return drift
