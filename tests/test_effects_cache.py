"""Each file's effects kept under .poststack/effects (desired.effects_cache): a history read with
what was kept is the history read from the files, whatever changed in between. Pure: no database."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reconciler.desired.effects as effects_module
import reconciler.desired.effects_cache as cache_module
from reconciler.config import DEFAULT_TRACKING, TrackingLocation
from reconciler.desired.effects_cache import EffectsCache, code_sources
from reconciler.desired.layouts import scan_migrations
from reconciler.observed.state import read_history
from tests.replay.churn import churn_history

# Files whose reading changes how later names resolve: temporary tables, schemas, SET search_path.
_RESOLUTION = [
    "CREATE SCHEMA app;\nCREATE TABLE app.accounts (id int);",
    "SET search_path TO app, public;\nCREATE TABLE ledger (id int);\nRESET search_path;",
    "CREATE TEMP TABLE staging (id int);\nINSERT INTO staging VALUES (1);\nDROP TABLE staging;",
    "CREATE TEMP TABLE scratch (id int);",
    "CREATE TABLE scratch (id int);\nDROP TABLE scratch;",
    "CREATE SCHEMA AUTHORIZATION CURRENT_USER;",
    "DROP SCHEMA app CASCADE;",
    "-- only a comment: the file is kept as a no-op\n",
    "CREATE TABLE broken (",  # does not parse: its error is kept too
]


def _write(directory: Path, texts: list[str]) -> None:
    for old in directory.glob("*.sql"):
        old.unlink()
    for i, text in enumerate(texts, start=1):
        (directory / f"{i:03d}_m{i}.sql").write_text(text)


def _read(directory: Path, search_path, location: TrackingLocation = DEFAULT_TRACKING, *, cached: bool):
    migrations = scan_migrations(directory).migrations
    return read_history(migrations, search_path, location, cached=cached)


def _texts(rng: random.Random, length: int) -> list[str]:
    texts = [m.sql for m in churn_history(rng, length)]
    for text in rng.sample(_RESOLUTION, rng.randint(0, 4)):
        texts.insert(rng.randint(0, len(texts)), text)
    return texts


_SEARCH_PATHS = [
    (("public",), frozenset({"public"}), "postgres"),
    (("app", "public"), frozenset({"public", "app"}), "owner"),
    (("public",), frozenset(), None),
    # each differs from the first in one thing alone: the path, the schemas that exist, the role
    (("app", "public"), frozenset({"public"}), "postgres"),
    (("public",), frozenset({"public", "app"}), "postgres"),
    (("public",), frozenset({"public"}), "owner"),
]


@settings(
    derandomize=True,  # the same histories on every run: CI is not a lottery
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    length=st.integers(3, 25),
    changes=st.lists(st.sampled_from(["append", "edit", "insert", "remove", "context", "none"]), max_size=5),
)
def test_kept_effects_read_as_the_files_do(seed, length, changes, tmp_path_factory):
    rng = random.Random(seed)
    directory = tmp_path_factory.mktemp("history") / "migrations"
    directory.mkdir()
    texts = _texts(rng, length)
    search_path = _SEARCH_PATHS[0]
    _write(directory, texts)
    assert _read(directory, search_path, cached=True) == _read(directory, search_path, cached=False)
    for change in changes:
        at = rng.randrange(len(texts))
        if change == "append":
            texts.append(rng.choice(_RESOLUTION + [m.sql for m in churn_history(rng, 3)]))
        elif change == "edit":
            texts[at] = texts[at] + "\nCREATE TABLE edited_" + str(at) + " (id int);"
        elif change == "insert":
            texts.insert(at, rng.choice(_RESOLUTION))
        elif change == "remove" and len(texts) > 1:
            del texts[at]
        elif change == "context":
            search_path = rng.choice(_SEARCH_PATHS)
        _write(directory, texts)
        kept = _read(directory, search_path, cached=True)
        assert kept == _read(directory, search_path, cached=False), change
        assert _read(directory, search_path, cached=True) == kept  # now all of it from the cache


def _counting_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    parsed: list[str] = []
    real = effects_module.parse

    def counted(text: str):
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(effects_module, "parse", counted)
    monkeypatch.setattr(cache_module, "parse", counted)
    return parsed


def test_an_unchanged_history_is_not_parsed_again_and_an_edit_reads_from_the_edited_file_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    directory = tmp_path / "migrations"
    directory.mkdir()
    texts = [f"CREATE TABLE t{i} (id int);" for i in range(1, 11)]
    _write(directory, texts)
    parsed = _counting_parses(monkeypatch)
    first = _read(directory, _SEARCH_PATHS[0], cached=True)
    assert len(parsed) == 10
    parsed.clear()
    assert _read(directory, _SEARCH_PATHS[0], cached=True) == first
    assert parsed == []

    texts[6] = "CREATE TABLE t7 (id int, note text);"
    _write(directory, texts)
    parsed.clear()
    _read(directory, _SEARCH_PATHS[0], cached=True)
    # 007 is read again, and so is every file after it (the names they resolve may differ);
    # of the files before it, nothing.
    assert parsed == texts[6:]

    parsed.clear()
    _read(directory, _SEARCH_PATHS[1], cached=True)  # another search_path: read from the files
    assert len(parsed) == 10


def test_a_damaged_or_unwritable_cache_is_read_past(tmp_path: Path):
    directory = tmp_path / "migrations"
    directory.mkdir()
    _write(directory, _RESOLUTION)
    expected = _read(directory, _SEARCH_PATHS[0], cached=False)
    assert _read(directory, _SEARCH_PATHS[0], cached=True) == expected
    (kept,) = (tmp_path / ".poststack" / "effects").glob("*.json")
    digest, _, payload = kept.read_text().partition("\n")
    steps = json.loads(payload)

    def signed(text: str) -> str:  # a file whose digest holds: only its content can be wrong
        return f"{hashlib.sha256(text.encode()).hexdigest()}\n{text}"

    edited = json.loads(payload)
    edited[0][2][1][0][1][0][2] = "renamed"  # an object 001 creates, edited by hand
    journal_entry_missing = json.loads(payload)
    journal_entry_missing[0][3].append([])
    short_entry = json.loads(payload)
    short_entry[0][3].append(["+"])
    key_without_colon = json.loads(payload)
    key_without_colon[1][0] = "nocolon"
    line_as_text = json.loads(payload)
    line_as_text[0][2][1][0][0] = "1"
    damages = [
        "",
        "not json",
        payload,  # no digest line
        f"{digest}\n{json.dumps(edited)}",  # edited: the digest no longer holds
        signed('{"steps": 5}'),
        signed("[[1, 2, 3, 4]]"),
        signed(json.dumps(journal_entry_missing)),
        signed(json.dumps(short_entry)),
        signed(json.dumps(key_without_colon)),
        signed(json.dumps(line_as_text)),
        signed("[" * 100_000 + "]" * 100_000),
    ]
    assert steps and len(damages) == 11
    for damage in damages:
        kept.write_text(damage)
        assert _read(directory, _SEARCH_PATHS[0], cached=True) == expected, damage[:80]
        assert kept.read_text().partition("\n")[0] == digest  # read past, and written again whole

    # Writable by others than its owner: whoever could write it decides nothing.
    _read(directory, _SEARCH_PATHS[0], cached=True)
    kept.chmod(0o666)
    parsed = []
    real = cache_module.parse
    cache_module.parse = lambda text: parsed.append(text) or real(text)
    try:
        assert _read(directory, _SEARCH_PATHS[0], cached=True) == expected
    finally:
        cache_module.parse = real
    assert parsed  # read from the files

    # Nowhere to write (here .poststack is a file: no user may make a directory in it): the
    # files are read, and nothing else happens.
    shutil.rmtree(tmp_path / ".poststack")
    (tmp_path / ".poststack").write_text("")
    assert _read(directory, _SEARCH_PATHS[0], cached=True) == expected


def test_another_tracking_location_is_another_cache(tmp_path: Path):
    """poststack's own tables decide which statements conflict with them."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    _write(directory, ["CREATE TABLE app_migrations (id int);", "DROP TABLE app_migrations;"])
    here = TrackingLocation(schema="public", prefix="app_")
    plain = _read(directory, _SEARCH_PATHS[0], cached=True)
    conflicting = _read(directory, _SEARCH_PATHS[0], here, cached=True)
    assert conflicting == _read(directory, _SEARCH_PATHS[0], here, cached=False)
    assert conflicting.effects["002"].conflicts and not plain.effects["002"].conflicts


def test_new_code_does_not_trust_an_old_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    directory = tmp_path / "migrations"
    directory.mkdir()
    _write(directory, ["CREATE TABLE t (id int);"])
    _read(directory, _SEARCH_PATHS[0], cached=True)
    cache = EffectsCache.beside(directory)
    before = {p.name for p in cache.directory.iterdir()}
    monkeypatch.setattr("reconciler.desired.effects_cache._code", lambda: "anotherbuild")
    parsed = _counting_parses(monkeypatch)
    _read(directory, _SEARCH_PATHS[0], cached=True)
    assert len(parsed) == 1
    after = {p.name for p in cache.directory.iterdir() if p.suffix == ".json"}
    assert after and all(name.startswith("anotherbuild-") for name in after)  # the old build's went
    assert not before & after

    # The digest covers sources that exist: a renamed module would otherwise go unnoticed.
    assert all(source.is_file() for source in code_sources()) and len(code_sources()) == 4
    monkeypatch.undo()
    assert cache_module._code() is not None


def test_two_directories_beside_each_other_keep_apart(tmp_path: Path):
    """Two histories with one parent (a monorepo) each keep their own file, not one another's."""
    for name in ("billing", "accounts"):
        (tmp_path / name).mkdir()
        _write(tmp_path / name, [f"CREATE TABLE {name} (id int);"])
        _read(tmp_path / name, _SEARCH_PATHS[0], cached=True)
    assert len(list((tmp_path / ".poststack" / "effects").glob("*.json"))) == 2


def _history_of(directory: Path, texts: list[str], search_path) -> Any:
    _write(directory, texts)
    kept = _read(directory, search_path, cached=True)
    assert kept == _read(directory, search_path, cached=False)
    return kept


def test_a_schema_made_later_moves_what_came_before_it(tmp_path: Path):
    """With app on the path and existing now, 001's table lands in app; once 002 creates app,
    app did not exist when 001 ran, so 001's table landed in public. Kept readings of 001 must
    not survive that."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    search_path = (("app", "public"), frozenset({"public", "app"}), "postgres")
    first = _history_of(directory, ["CREATE TABLE t (id int);"], search_path)
    assert [r.display() for r in first.effects["001"].creates] == ["table app.t", "column app.t.id"]
    both = _history_of(directory, ["CREATE TABLE t (id int);", "CREATE SCHEMA app;"], search_path)
    assert [r.display() for r in both.effects["001"].creates] == ["table public.t", "column public.t.id"]


def test_a_renumbered_file_is_read_under_its_new_version(tmp_path: Path):
    directory = tmp_path / "migrations"
    directory.mkdir()
    _write(directory, ["CREATE TABLE a (id int);", "CREATE TABLE b (id int);"])
    _read(directory, _SEARCH_PATHS[0], cached=True)
    for old in sorted(directory.glob("*.sql")):
        old.rename(directory / f"{int(old.name[:3]) * 10:03d}{old.name[3:]}")
    kept = _read(directory, _SEARCH_PATHS[0], cached=True)
    assert kept == _read(directory, _SEARCH_PATHS[0], cached=False)
    assert sorted(kept.effects) == ["010", "020"]


def test_a_drop_in_a_kept_file_still_counts_for_the_files_after_it(tmp_path: Path):
    """Once app.t is dropped, DROP TABLE t finds public.t: the drop must be replayed from the
    journal, not only the creations."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    search_path = (("app", "public"), frozenset({"public", "app"}), "postgres")
    texts = ["CREATE TABLE public.t (id int);", "CREATE TABLE app.t (id int);", "DROP TABLE app.t;"]
    _history_of(directory, texts, search_path)
    after = _history_of(directory, [*texts, "DROP TABLE t;"], search_path)
    assert [r.display() for r in after.effects["004"].touches] == ["table public.t"]


@pytest.mark.parametrize("spelling", ["CREATE SCHEMA s", "create schema s", "CrEaTe ScHeMa s", "CREATE\nSCHEMA s"])
def test_the_schema_shortcut_never_misses_a_schema(tmp_path: Path, spelling: str):
    """Only a file that says SCHEMA (in any case) is read for the schemas it creates; one that
    creates s means s did not exist before it, so 001's table landed in public, not in s."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    search_path = (("s", "public"), frozenset({"public", "s"}), "postgres")
    history = _history_of(directory, ["CREATE TABLE t (id int);", f"{spelling};"], search_path)
    assert [r.display() for r in history.effects["001"].creates] == ["table public.t", "column public.t.id"]


def test_one_database_lets_each_parse_tree_go_and_a_fleet_keeps_them(tmp_path: Path):
    """A tree is large: a history's 500 held at once were most of a migrate's memory. A fleet
    reads the same files for every tenant, so it keeps each file's, parsed once."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    _write(directory, _RESOLUTION)
    migrations = scan_migrations(directory).migrations
    read_history(migrations, _SEARCH_PATHS[0], cached=True)
    assert not any("tree" in vars(m.file) for m in migrations.migrations)
    read_history(migrations, _SEARCH_PATHS[1], cached=False)
    assert all("tree" in vars(m.file) for m in migrations.migrations)


def test_what_is_kept_is_ignored_by_git_and_readable_by_the_project(tmp_path: Path):
    """A db migrate must not leave a project with files to commit, nor with files only the one
    who ran it can read (mkstemp's 0600)."""
    import subprocess

    directory = tmp_path / "migrations"
    directory.mkdir()
    _write(directory, ["CREATE TABLE t (id int);"])
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    old = os.umask(0o022)
    try:
        _read(directory, _SEARCH_PATHS[0], cached=True)
    finally:
        os.umask(old)
    (kept,) = (tmp_path / ".poststack" / "effects").glob("*.json")
    assert kept.stat().st_mode & 0o777 == 0o644
    untracked = subprocess.run(
        ["git", "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert untracked.splitlines() == ["?? migrations/001_m1.sql"]
