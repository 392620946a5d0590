"""The scratch shadow database: made beside the target on its server, dropped however the run
ends, and one left by a run that was killed dropped by the next run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from reconciler.db import Session, open_raw
from reconciler.desired.replay.shadow import (
    SHADOW_PREFIX,
    Leftover,
    drop_leftovers,
    is_dead,
    parse_comment,
    parse_name,
    scratch_shadow,
    shadow_comment,
    shadow_name,
)
from reconciler.statements import quote_ident


def databases(session: Session) -> set[str]:
    return {r[0] for r in session.query("SELECT datname FROM pg_database WHERE datname LIKE 'poststack\\_shadow\\_%'")}


@pytest.fixture
def target(database_url: str):  # type: ignore[no-untyped-def]
    session = Session(open_raw(database_url), database_url)
    yield session
    session.close()


def test_a_scratch_shadow_is_empty_beside_the_target_and_dropped_after(target: Session) -> None:
    with scratch_shadow(target) as shadow:
        assert shadow.database in databases(target)
        conn = psycopg2.connect(shadow.url)
        with conn.cursor() as cur:
            cur.execute("SELECT current_database(), count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")
            assert cur.fetchone() == (shadow.database, 0)
        conn.close()  # the drop needs no connection to be gone: WITH (FORCE), but be polite
        leftover = parse_name(shadow.database)
        assert leftover is not None and leftover.pid == os.getpid() and not is_dead(leftover)
    assert shadow.database not in databases(target)


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_it_is_dropped_when_the_run_ends_by_an_error_or_ctrl_c(target: Session, error: BaseException) -> None:
    with pytest.raises(type(error)), scratch_shadow(target) as shadow:
        psycopg2.connect(shadow.url)  # left open, as a cancelled replay leaves its connection
        raise error
    assert shadow.database not in databases(target)


def test_a_killed_runs_shadow_is_dropped_by_the_next_run(target: Session) -> None:
    # A run that made its shadow and was killed (SIGKILL: no finally): its comment names a
    # process of this host that is gone.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    name = f"{SHADOW_PREFIX}killedrun0001"
    target.query(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")
    made = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="seconds")
    target.query(
        f"COMMENT ON DATABASE {quote_ident(name)} IS %s",
        (f"poststack shadow of {socket.gethostname()}:{dead_pid} at {made}",),
    )
    live = f"{SHADOW_PREFIX}liverun00001"  # this process's: alive, kept
    target.query(f"CREATE DATABASE {quote_ident(live)} TEMPLATE template0")
    target.query(f"COMMENT ON DATABASE {quote_ident(live)} IS %s", (shadow_comment(),))
    try:
        with scratch_shadow(target):
            assert name not in databases(target)
            assert live in databases(target)
    finally:
        target.query(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
        target.query(f"DROP DATABASE IF EXISTS {quote_ident(live)}")
    assert drop_leftovers(target) == ()


def test_whose_leftover_is_dead() -> None:
    now = datetime.now(UTC)
    mine = Leftover("x", socket.gethostname(), os.getpid(), now)
    assert not is_dead(mine, now)
    elsewhere = Leftover("x", "another-host", 1234, now - timedelta(hours=2))
    assert not is_dead(elsewhere, now)  # another machine's run may still be replaying
    assert is_dead(Leftover("x", "another-host", 1234, now - timedelta(days=2)), now)
    assert parse_comment("mydb", "poststack shadow of h:1 at 2026-01-01T00:00:00+00:00") is None  # not ours by name
    assert parse_comment(f"{SHADOW_PREFIX}x", "some comment") is None


def test_a_shadow_killed_before_its_comment_is_dropped_by_its_name(target: Session) -> None:
    # SIGKILL between CREATE DATABASE and COMMENT ON DATABASE: the name alone says whose it was.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    name = shadow_name().replace(f"_{os.getpid()}_", f"_{int(gone.stdout)}_")
    target.query(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")
    try:
        leftover = parse_name(name)
        assert leftover is not None and is_dead(leftover)
        assert name in drop_leftovers(target)
    finally:
        target.query(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
    assert name not in databases(target)
    assert len(shadow_name()) <= 63  # PostgreSQL's limit: never cut short
