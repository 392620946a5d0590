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
from reconciler.diagnosis.attribution import Attribution, Verdict

Key = tuple[str, str]  # (kind, identity)
Value = str | None  # a definition; None: the object does not exist
START = 0  # the position of the empty start, before the first migration
ORDER = "order"
REPLAY = "replay"


@dataclass(frozen=True)
class ReplayedObject:
    """One object a migration changed in the replay, with what it left and what is live."""

    kind: str
    identity: str
    expected: Value  # what the migration left (None: it dropped the object)
    found: Value  # what the live database holds (None: absent)

    def display(self) -> str:
        return f"{self.kind} {self.identity}"

    def described(self) -> str:
        if self.expected is None:
            return f"{self.display()} (it drops it) still exists"
        if self.found is None:
            return f"{self.display()} is missing"
        return f"{self.display()} differs: expected {_short(self.expected)}, found {_short(self.found)}"


def _short(definition: str, limit: int = 120) -> str:
    text = " ".join(definition.split()) or "(no definition)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


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

    positions: dict[str, int]  # version -> 1-based position in the replay
    changes: dict[int, tuple[Key, ...]]  # position -> the objects it changed
    writers: dict[Key, tuple[tuple[int, Value], ...]]  # object -> (position, value left), START first

    @classmethod
    def of(cls, replay: Replay) -> _Writes:
        positions: dict[str, int] = {}
        changes: dict[int, tuple[Key, ...]] = {}
        writers: dict[Key, list[tuple[int, Value]]] = {}
        previous = dict(replay.start.objects)
        for key, value in previous.items():
            writers[key] = [(START, value)]
        for position, (version, state) in enumerate(replay.states, start=1):
            positions[version] = position
            current = state.objects
            changed = [k for k, v in current.items() if previous.get(k) != v]
            changed += [k for k in previous if k not in current]
            for key in changed:
                writers.setdefault(key, [(START, None)]).append((position, current.get(key)))
            changes[position] = tuple(sorted(changed))
            previous = dict(current)
        return cls(positions, changes, {k: tuple(w) for k, w in writers.items()})

    def value_of(self, key: Key, position: int) -> Value:
        return next(v for p, v in self.writers[key] if p == position)


def attribute_by_replay(
    replay: Replay,
    live: Mapping[Key, str],
    shown: frozenset[str],
    untracked: Sequence[str],
) -> dict[str, Attribution]:
    """Verdicts for the ``untracked`` versions the replay ran, by state. ``shown``: versions
    tracked as applied (a tracking row vouches for them)."""
    writes = _Writes.of(replay)
    wanted = [v for v in untracked if v in writes.positions and v not in shown]
    applied = {writes.positions[v] for v in shown if v in writes.positions}
    verdicts: dict[str, Attribution] = {}
    # Each migration shown applied narrows what may have written last: repeat until settled.
    for _ in range(len(wanted) + 1):
        verdicts = {v: _judge(v, writes, live, applied) for v in wanted}
        grown = applied | {writes.positions[v] for v, a in verdicts.items() if a.verdict is Verdict.APPLIED}
        if grown == applied:
            break
        applied = grown
    for version, found in verdicts.items():
        if found.basis == ORDER and found.verdict is Verdict.UNDETERMINED:
            verdicts[version] = _by_order(version, writes, applied)
    return verdicts


def _judge(version: str, writes: _Writes, live: Mapping[Key, str], applied: set[int]) -> Attribution:
    position = writes.positions[version]
    keys = writes.changes[position]
    if not keys:
        return Attribution(version, Verdict.UNDETERMINED, basis=ORDER, reason="it changes no schema")
    seen: dict[_Seen, list[ReplayedObject]] = {s: [] for s in _Seen}
    superseding: set[int] = set()
    for key in keys:
        found = live.get(key)
        how, by = _see(key, position, writes, found, applied)
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
            return Attribution(version, Verdict.PARTIAL, tuple(proofs), tuple(against), REPLAY, reason)
        return Attribution(version, Verdict.APPLIED, tuple(proofs + superseded), (), REPLAY, reason)
    # Objects it makes that exist, but not as it makes them: made or changed by hand. With
    # evidence against the rest, someone did part of it: running it would collide.
    differing = [o for o in seen[_Seen.UNEXPLAINED] if o.expected is not None and o.found is not None]
    if against and differing:
        reason = (
            f"{len(differing)} of its objects exist with other definitions ({differing[0].described()}); "
            + "; ".join(o.described() for o in against[:3])
        )
        return Attribution(version, Verdict.PARTIAL, tuple(differing), tuple(against), REPLAY, reason)
    if against:
        reason = "its changes are not there: " + "; ".join(o.described() for o in against[:3])
        return Attribution(version, Verdict.ABSENT, (), tuple(against), REPLAY, reason)
    if len(superseded) == total:
        later = ", ".join(_version_at(writes, p) for p in sorted(superseding))
        reason = f"every change it made was superseded by later migrations shown applied ({later})"
        return Attribution(version, Verdict.APPLIED, tuple(superseded), (), REPLAY, reason)
    return Attribution(version, Verdict.UNDETERMINED, basis=REPLAY, reason=_unsure(seen))


def _see(key: Key, position: int, writes: _Writes, found: Value, applied: set[int]) -> tuple[_Seen, set[int]]:
    writers = writes.writers[key]
    own = writes.value_of(key, position)
    last_shown = max((p for p, _ in writers if p in applied and p != position), default=START)
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


def _unsure(seen: dict[_Seen, list[ReplayedObject]]) -> str:
    parts = []
    if seen[_Seen.UNEXPLAINED]:
        changed = seen[_Seen.UNEXPLAINED]
        parts.append(
            f"{len(changed)} of its objects were changed since by something outside the history "
            f"({changed[0].described()})"
        )
    if seen[_Seen.LATER]:
        parts.append(
            f"{len(seen[_Seen.LATER])} of its changes were overwritten by later migrations that are not shown applied"
        )
    if seen[_Seen.AMBIGUOUS]:
        parts.append(f"what it leaves in {seen[_Seen.AMBIGUOUS][0].display()} other migrations leave too, identically")
    return "; ".join(parts) or "the replay shows nothing that only it did"


def _by_order(version: str, writes: _Writes, applied: set[int]) -> Attribution:
    """A migration that changes no schema: applied if it sits between two shown applied."""
    position = writes.positions[version]
    before = max((p for p in applied if p < position), default=None)
    after = min((p for p in applied if p > position), default=None)
    if before is not None and after is not None:
        reason = (
            f"it changes no schema; it sits between {_version_at(writes, before)} and "
            f"{_version_at(writes, after)}, both shown applied (by order only)"
        )
        return Attribution(version, Verdict.APPLIED, basis=ORDER, reason=reason)
    where = "nothing after it" if before is not None else "nothing before it"
    reason = f"it changes no schema (data only), and {where} is shown applied"
    return Attribution(version, Verdict.UNDETERMINED, basis=ORDER, reason=reason)


def _version_at(writes: _Writes, position: int) -> str:
    return next(v for v, p in writes.positions.items() if p == position)


def drift_by_replay(
    replay: Replay, live: Mapping[Key, str], applied: frozenset[str], tracked: Sequence[str]
) -> dict[str, tuple[ReplayedObject, ...]]:
    """For each ``tracked`` version, the objects it was the last applied migration to change
    (``applied``: tracked and shown applied) that are not as it left them: gone, or with
    another definition (a column type changed by hand, an index rebuilt, a function body
    edited). A live value some writer of the history produces is not drift: it is history."""
    writes = _Writes.of(replay)
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
