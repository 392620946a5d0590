"""Replay: the history run in a scratch shadow, PostgreSQL's catalog read after each
migration. What each migration did is the difference between two states, as the server
prints the objects' definitions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.config import DEFAULT_TRACKING
from reconciler.db import Session, open_raw
from reconciler.desired.layouts import load_migrations
from reconciler.desired.replay.cache import ReplayCache
from reconciler.desired.replay.replay import replay
from reconciler.desired.replay.shadow import scratch_session
from reconciler.desired.replay.snapshot import read_snapshot
from tests.conftest import run_cli
from tests.layouts.histories import write_history


@pytest.fixture
def target(database_url: str):  # type: ignore[no-untyped-def]
    session = Session(open_raw(database_url), database_url)
    yield session
    session.close()


def replayed(target: Session, directory: Path, cache: ReplayCache | None = None):  # type: ignore[no-untyped-def]
    migrations = load_migrations(directory).migrations
    return replay(lambda: scratch_session(target.url), migrations, DEFAULT_TRACKING, cache)


def test_each_migrations_effect_is_what_the_server_says(tmp_path: Path, target: Session) -> None:
    versions = write_history("poststack", tmp_path / "m")
    result = replayed(target, tmp_path / "m")
    assert result.stopped is None and list(result.versions) == versions

    def effect(index: int) -> tuple[set[tuple[str, str]], set[tuple[str, str]], set[tuple[str, str]]]:
        diff = result.effect(versions[index])
        assert diff is not None
        return (
            {(o.kind, o.identity) for o in diff.added},
            {(o.kind, o.identity) for o in diff.removed},
            {(old.kind, old.identity) for old, _ in diff.changed},
        )

    added, removed, changed = effect(0)
    assert ("table", "public.users") in added and ("column", "public.users.name") in added
    assert effect(1) == ({("column", "public.users.email")}, set(), set())
    assert effect(2) == (set(), set(), set())  # the data migration: no schema effect
    assert effect(3) == (set(), set(), set())  # comment-only
    added, _, _ = effect(4)
    assert {("enum", "public.user_status"), ("column", "public.users.status")} <= added
    assert effect(7) == (set(), set(), {("enum", "public.user_status")})  # the enum grew
    diff = result.effect(versions[7])
    assert diff is not None and "'archived'" in diff.changed[0][1].definition
    added, removed, changed = effect(8)  # the rename: the view and the function replaced around it
    assert ("column", "public.users.full_name") in added and ("column", "public.users.name") in removed
    assert {("view", "public.active_users"), ("function", "public.user_count()")} <= changed


def test_the_replayed_state_is_the_migrated_databases(tmp_path: Path, target: Session, database_url: str) -> None:
    write_history("dbmate", tmp_path / "m")
    result = replayed(target, tmp_path / "m")
    migrated = run_cli("db", "migrate", "--database-url", database_url, "--migrations-dir", str(tmp_path / "m"))
    assert migrated.exit_code == 0, migrated.output
    assert read_snapshot(target, DEFAULT_TRACKING) == result.final  # poststack's own tables left out


def test_a_migration_that_fails_in_the_shadow_stops_the_replay_there(tmp_path: Path, target: Session) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "001_a.sql").write_text("CREATE TABLE a (id int);\n")
    (directory / "002_ext.sql").write_text("-- needs an extension the shadow lacks\nCREATE EXTENSION no_such_ext;\n")
    (directory / "003_b.sql").write_text("CREATE TABLE b (id int);\n")
    (directory / "004_idx.sql").write_text("CREATE INDEX CONCURRENTLY b_id ON b (id);\n")
    result = replayed(target, directory)
    assert result.versions == ("001",)
    assert result.stopped is not None and result.stopped.version == "002"
    assert "002_ext.sql:2: " in result.stopped.reason and "no_such_ext" in result.stopped.reason


def test_a_no_transaction_migration_replays_as_it_runs(tmp_path: Path, target: Session) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "001_a.sql").write_text("CREATE TABLE a (id int);\n")
    (directory / "002_idx.sql").write_text("CREATE INDEX CONCURRENTLY a_id ON a (id);\n")
    (directory / "003_path.sql").write_text("SET search_path TO nowhere;\n")  # reset before the next one
    (directory / "004_b.sql").write_text("CREATE TABLE b (id int);\n")
    result = replayed(target, directory)
    assert result.stopped is None
    diff = result.effect("002")
    assert diff is not None and [o.identity for o in diff.added] == ["public.a_id"]
    assert ("table", "public.b") in result.final.objects


def test_an_unchanged_history_is_not_replayed_again_and_an_edit_replays_what_follows(
    tmp_path: Path, target: Session
) -> None:
    versions = write_history("poststack", tmp_path / "m")
    cache = ReplayCache(tmp_path / ".poststack" / "replay", target.server_info().major)
    cold = replayed(target, tmp_path / "m", cache)
    assert not cold.from_cache
    (kept,) = (tmp_path / ".poststack" / "replay").rglob("*.json")  # one file a history
    mask = os.umask(0o022)
    os.umask(mask)
    assert kept.stat().st_mode & 0o777 == 0o666 & ~mask  # as any file the person writes, not 0600

    def no_shadow():  # type: ignore[no-untyped-def]
        raise AssertionError("a warm replay opens no shadow")

    warm = replay(no_shadow, load_migrations(tmp_path / "m").migrations, DEFAULT_TRACKING, cache)
    assert warm.from_cache and warm.steps == cold.steps and warm.start == cold.start

    # An edit to the second migration: the state before it stays valid, the rest are new.
    edited = tmp_path / "m" / f"{versions[1]}_add_email.sql"
    edited.write_text(edited.read_text().replace("email text", "email varchar(200)"))
    after = replayed(target, tmp_path / "m", cache)
    assert not after.from_cache and after.stopped is None and after.steps[:1] == cold.steps[:1]
    assert after.reused == 2  # the start, and what the first migration changed
    assert after.final.objects[("column", "public.users.email")] == "character varying(200)"
    assert len(list((tmp_path / ".poststack" / "replay").rglob("*.json"))) == 1
    assert not list((tmp_path / ".poststack" / "replay").rglob(".tmp-*"))

    # A cache file that cannot be read counts as absent, never as a state.
    for path in (tmp_path / ".poststack" / "replay").rglob("*.json"):
        path.write_text("{not json")
    again = replayed(target, tmp_path / "m", cache)
    assert not again.from_cache and again.steps == after.steps and again.reused == 0
    for broken in ('{"start": [["table"]], "steps": []}', '{"start": [], "steps": [[1]]}', "[]"):
        for path in (tmp_path / ".poststack" / "replay").rglob("*.json"):
            path.write_text(broken)
        assert replayed(target, tmp_path / "m", cache).steps == after.steps

    # Back to the first text (another branch): what precedes the edit is still known.
    edited.write_text(edited.read_text().replace("email varchar(200)", "email text"))
    back = replayed(target, tmp_path / "m", cache)
    assert back.reused == 2 and back.steps == cold.steps
