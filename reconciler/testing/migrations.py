"""Testing the migrations themselves: an empty database to walk the history on, a step at a time.

    def test_backfill(poststack_migrations):
        poststack_migrations.migrate(to="003")
        poststack_migrations.execute("INSERT INTO users (name) VALUES ('ada')")
        poststack_migrations.migrate(to="004")  # the data migration
        assert poststack_migrations.execute("SELECT handle FROM users") == [("ada",)]

Migrations run as ``poststack db migrate --target`` runs them (tracked, each in its own
transaction); rollbacks as ``db rollback``. Schemas are compared as the replay machinery reads
them (desired/replay/snapshot.py): every object's definition, as PostgreSQL prints it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extensions

from reconciler import commands
from reconciler.config import Settings
from reconciler.db import Session, open_raw
from reconciler.desired.layouts import load_migrations

if TYPE_CHECKING:
    from reconciler.desired.replay.snapshot import Snapshot
    from reconciler.remediation.runner import RunResult


@contextlib.contextmanager
def _as_test_failure() -> Iterator[None]:
    """A refusal (no such version, a missing rollback file) fails the test in one line; a
    Ctrl-C that stopped a migration stops pytest."""
    from reconciler.errors import PoststackError, stopping_as_keyboard_interrupt

    try:
        with stopping_as_keyboard_interrupt():
            yield
    except PoststackError as e:
        raise AssertionError(f"poststack: {e.summary}") from None


@dataclass
class MigrationSteps:
    """The project's migrations and a database they have not run on yet (``url``)."""

    url: str
    settings: Settings
    # Another empty database, for the whole history's round trip: given by the plugin.
    scratch: Callable[[], contextlib.AbstractContextManager[str]]
    _connection: psycopg2.extensions.connection | None = field(default=None, repr=False)

    @property
    def versions(self) -> tuple[str, ...]:
        """The versioned migrations, in the order they apply."""
        migrations = load_migrations(self.settings.migrations_dir, self.settings.layout)
        return tuple(m.version for m in migrations.migrations if not m.key.is_repeatable)

    def migrate(self, to: str | None = None) -> RunResult:
        """Apply the pending migrations up to ``to`` (all of them: None). Fails the test, naming
        the migration, the file and line and the server's error, when one fails."""
        from reconciler.testing.templates import run_failure

        with _as_test_failure():
            result = commands.migrate(self._settings(), target=to, dry_run=False)
        if not result.ok:
            raise AssertionError(f"poststack db migrate{f' --target {to}' if to else ''}: {run_failure(result)}")
        return result

    def rollback(self, to: str) -> RunResult:
        """Undo every applied migration above ``to`` ("0": all of them), newest first."""
        from reconciler.testing.templates import run_failure

        with _as_test_failure():
            result = commands.rollback(self._settings(), to, dry_run=False)
        if not result.ok:
            raise AssertionError(f"poststack db rollback {to}: {run_failure(result)}")
        return result

    @property
    def connection(self) -> psycopg2.extensions.connection:
        """A connection of the test's own to the database (autocommit), closed after the test."""
        if self._connection is None or self._connection.closed:
            self._connection = psycopg2.connect(self.url)
            self._connection.autocommit = True
        return self._connection

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement; its rows (none for a statement that returns none)."""
        with self.connection.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    def snapshot(self) -> Snapshot:
        """The database's schema now (poststack's tracking tables left out)."""
        from reconciler.desired.replay.snapshot import read_snapshot

        with self._session() as session:
            return read_snapshot(session, self.settings.tracking)

    def assert_rollback_round_trip(self, version: str | None = None) -> None:
        """``version``'s rollback leaves the schema as it was before the migration, and the
        migration then applies again to what it made the first time. The database is walked
        to the version before it first (forward, or back with the rollbacks), and is left at
        ``version``. Without a version: every rollback in the history, each in the state its
        history gives it, in a scratch database (the walk of ``poststack db validate
        --check-rollbacks --round-trip``); this one is left alone."""
        if version is None:
            self._round_trip_history()
            return
        from reconciler.desired.replay.roundtrip import describe, differences

        versions = self.versions
        if version not in versions:
            raise AssertionError(f"no migration {version} in {self.settings.migrations_dir}")
        before_version = versions[versions.index(version) - 1] if versions.index(version) else "0"
        self._walk_to(before_version)
        before = self.snapshot()
        self.migrate(to=version)
        made = self.snapshot()
        self.rollback(before_version)
        undone = before.diff(self.snapshot())
        if not undone.empty:
            raise AssertionError(
                f"Rollback of migration {version} does not restore the schema: {describe(differences(undone))}"
            )
        self.migrate(to=version)
        redone = made.diff(self.snapshot())
        if not redone.empty:
            raise AssertionError(
                f"Migration {version} does not re-apply after its rollback to what it made the first time: "
                f"{describe(differences(redone))}"
            )

    def _walk_to(self, version: str) -> None:
        """Migrate or roll back to ``version`` ("0": nothing applied)."""
        from reconciler.desired.versions import parse_version

        limit = parse_version(version)
        applied = commands.migration_status(self._settings()).applied
        if any(
            parse_version(entry.version) > limit and not parse_version(entry.version).is_repeatable for entry in applied
        ):
            self.rollback(version)
        if version != "0":
            self.migrate(to=version)

    def _round_trip_history(self) -> None:
        from reconciler.desired.replay.roundtrip import round_trip

        migrations = load_migrations(self.settings.migrations_dir, self.settings.layout)
        with self.scratch() as url, self._session(url) as shadow:
            checked = round_trip(shadow, migrations.migrations, self.settings.tracking)
        messages = [p.message for p in checked.problems]
        if checked.stopped is not None:
            messages.append(f"The walk stopped at migration {checked.stopped.version}: {checked.stopped.reason}")
        if messages:
            raise AssertionError("\n".join(messages))

    def close(self) -> None:
        """Close the test's connection (the plugin does, after the test)."""
        if self._connection is not None and not self._connection.closed:
            self._connection.close()

    def _settings(self) -> Settings:
        return replace(self.settings, database_url=self.url)

    @contextlib.contextmanager
    def _session(self, url: str | None = None) -> Iterator[Session]:
        target = url or self.url
        session = Session(open_raw(target), target)
        try:
            yield session
        finally:
            session.close()
