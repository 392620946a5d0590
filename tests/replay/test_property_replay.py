"""Property: with the history replayed, diagnose never claims a pending migration applied,
and finds every applied migration whose schema effect shows (something it made is there as
it made it). Random churny histories
(tests/replay/churn.py), applied by hand in order up to a random point, with some of it
tracked, some stand-alone migrations skipped (merged late), and occasional hand edits;
on a real PostgreSQL."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import psycopg2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.config import DEFAULT_TRACKING, resolve_settings
from reconciler.db import connect
from reconciler.desired.files import CHECKSUM_ALGORITHM
from reconciler.desired.replay.source import ShadowSettings
from reconciler.diagnosis.checks import Facts, run_checks
from reconciler.diagnosis.issues import IssueType
from reconciler.observed.state import read_state
from reconciler.observed.tracking import create_statements
from tests.conftest import scratch_database
from tests.replay.churn import churn_history

_databases = itertools.count()


@settings(
    derandomize=True,  # the same histories on every run: CI is not a lottery
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    length=st.integers(8, 40),
    applied_share=st.floats(0.0, 1.0),
    tracked_share=st.floats(0.0, 1.0),
    hand_edits=st.integers(0, 2),
)
def test_replay_never_claims_pending_and_finds_every_applied(
    seed, length, applied_share, tracked_share, hand_edits, pg_server, template_db, tmp_path_factory
):
    rng = random.Random(seed)
    history = churn_history(rng, length)
    last_applied = round(length * applied_share)
    # Stand-alone migrations inside the applied part may have been skipped (merged late).
    applied = {i for i in range(1, last_applied + 1) if not (history[i - 1].stands_alone and rng.random() < 0.3)}
    tracked = {i for i in applied if rng.random() < tracked_share}

    directory: Path = tmp_path_factory.mktemp("churn") / "migrations"
    directory.mkdir()
    for i, migration in enumerate(history, start=1):
        (directory / f"{i:03d}_m{i}.sql").write_text(migration.sql)

    name = f"poststack_churn_{next(_databases)}_{seed % 100000}"
    with scratch_database(pg_server, name, template_db) as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        edited = []
        with conn.cursor() as cur:
            for statement in create_statements(DEFAULT_TRACKING):
                cur.execute(statement.sql, statement.params)
            for i in sorted(applied):
                if not history[i - 1].sql.startswith("--"):  # comment-only: nothing to send
                    cur.execute(history[i - 1].sql)
            for k in range(hand_edits):  # by hand: an object no migration makes, a column retyped
                cur.execute(f"CREATE TABLE handmade_{k} (x int)")
                alone = [i for i in sorted(applied) if history[i - 1].stands_alone]
                if alone:
                    victim = rng.choice(alone)
                    cur.execute(f"ALTER TABLE alone{victim} ALTER COLUMN note TYPE varchar({10 + k})")
                    edited.append(victim)
        settings_ = resolve_settings(database_url=url, migrations_dir=directory, environ={})
        shadow = ShadowSettings(cache_dir=directory.parent / ".poststack" / "replay")
        with connect(settings_) as session:
            desired = read_state(session, directory, DEFAULT_TRACKING, None, shadow)[0]
            migrations = desired.migrations.migrations
            with session.transaction():
                for i in sorted(tracked):
                    m = migrations[i - 1]
                    session.query(
                        "INSERT INTO schema_migrations (version, description, checksum, checksum_algorithm, success) "
                        "VALUES (%s, %s, %s, %s, true)",
                        (m.version, m.description, m.checksum, CHECKSUM_ALGORITHM),
                    )
            desired, observed = read_state(session, directory, DEFAULT_TRACKING, None, shadow)
        conn.close()

    facts = Facts(desired, observed)
    assert desired.replay is not None and desired.replay.used and desired.replay.replay is not None
    assert desired.replay.replay.stopped is None, desired.replay.replay.stopped
    issues = run_checks(facts, [IssueType.MISSING_TRACKING])
    claimed = {int(i.version): i.details["evidence"] for i in issues}
    show = "\n".join(
        f"{i:03d}{'*' if i in applied else ' '}{'T' if i in tracked else ' '} {m.sql.strip()}"
        for i, m in enumerate(history, start=1)
    )
    for i in range(1, length + 1):
        if i not in applied:
            assert i not in claimed, f"claimed pending migration {i:03d} ({claimed.get(i)})\n{show}"
    start, live = desired.replay.replay.start.objects, observed.live.objects
    for i in sorted(applied - tracked):
        effect = desired.replay.replay.effect(f"{i:03d}")
        assert effect is not None
        # Its schema effect shows: something it made is there as it made it. (A column added,
        # then dropped by a later migration, left nothing: no state can tell that it ran.)
        shows = any(live.get((o.kind, o.identity)) == o.definition for o in effect.added) or any(
            live.get((after.kind, after.identity)) == after.definition != start.get((after.kind, after.identity))
            for _, after in effect.changed
        )
        if shows:
            found = facts.attributions[f"{i:03d}"]
            assert claimed.get(i) == "replay", f"missed applied migration {i:03d}: {found.reason}\n{show}"


@settings(
    derandomize=True,  # the same histories on every run: CI is not a lottery
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(8, 30), skip_share=st.floats(0.05, 0.4))
def test_a_skipped_data_migration_is_never_tracked_on_the_schema_alone(
    seed, length, skip_share, pg_server, template_db, tmp_path_factory
):
    """Any migrations skipped, anywhere (a branch merged late, a file someone forgot): a later
    one may overwrite what a skipped one would have made, so the schema cannot always tell.
    For schema changes that is harmless; a skipped migration that changes data must never be
    claimed on a basis recover trusts by default."""
    rng = random.Random(seed)
    history = churn_history(rng, length)
    directory: Path = tmp_path_factory.mktemp("skips") / "migrations"
    directory.mkdir()
    for i, migration in enumerate(history, start=1):
        (directory / f"{i:03d}_m{i}.sql").write_text(migration.sql)
    applied = set()
    name = f"poststack_skips_{next(_databases)}_{seed % 100000}"
    with scratch_database(pg_server, name, template_db) as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            for i, migration in enumerate(history, start=1):
                if rng.random() < skip_share or migration.sql.startswith("--"):
                    continue
                try:  # one that needs what a skipped one makes fails, as it would by hand
                    cur.execute("BEGIN")
                    cur.execute(migration.sql)
                    cur.execute("COMMIT")
                    applied.add(i)
                except psycopg2.Error:
                    cur.execute("ROLLBACK")
        conn.close()
        settings_ = resolve_settings(database_url=url, migrations_dir=directory, environ={})
        shadow = ShadowSettings(cache_dir=directory.parent / ".poststack" / "replay")
        with connect(settings_) as session:
            desired, observed = read_state(session, directory, DEFAULT_TRACKING, None, shadow)
    facts = Facts(desired, observed)
    for issue in run_checks(facts, [IssueType.MISSING_TRACKING]):
        i = int(issue.version)
        effects = desired.history.effects[issue.version]
        if i not in applied and effects.may_change_rows:
            assert issue.details["evidence"] == "order", f"skipped data migration {i:03d} claimed: {issue.details}"
        if i not in applied and issue.details["evidence"] == "replay":
            # Claimed on the schema alone: only where the schema is as if it had run.
            effect = desired.replay.replay.effect(issue.version)
            assert effect is not None
            live = observed.live.objects
            for before, after in effect.changed:
                assert live.get((after.kind, after.identity)) != before.definition or any(
                    live.get((o.kind, o.identity)) == o.definition for o in effect.added
                ), f"skipped {i:03d} claimed though its change is not there"
