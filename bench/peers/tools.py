"""The tools measured, one registry entry each: how it lays out the same migrations, and the
commands its users run for each workload. The same migration N everywhere: table bench_N
with an index; down, the table dropped."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bench.peers.install import Installed

Commands = list[list[str]]


def up_sql(n: int) -> str:
    return f"CREATE TABLE bench_{n} (id bigint PRIMARY KEY, name text NOT NULL);\nCREATE INDEX bench_{n}_name_idx ON bench_{n} (name);\n"


def down_sql(n: int) -> str:
    return f"DROP TABLE bench_{n};\n"


def stem(n: int) -> str:
    return f"{n:05d}_table_{n}"


def write_with_rollbacks(directory: Path, first: int, last: int) -> None:
    """NNNNN_table_N.sql and NNNNN_table_N.rollback.sql: poststack's layout, and yoyo's."""
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(first, last + 1):
        (directory / f"{stem(n)}.sql").write_text(up_sql(n))
        (directory / f"{stem(n)}.rollback.sql").write_text(down_sql(n))


@dataclass(frozen=True)
class Server:
    """Where the databases are, as libpq keywords (host may be a socket directory)."""

    host: str
    port: str
    user: str
    password: str

    def url(self, database: str, scheme: str = "postgresql", query: str = "") -> str:
        auth = quote(self.user, safe="") + (":" + quote(self.password, safe="") if self.password else "")
        if self.host.startswith("/"):  # a socket directory: libpq, lib/pq and node-postgres take it as ?host=
            params = [f"host={quote(self.host, safe='')}", f"port={self.port}"] + ([query] if query else [])
            return f"{scheme}://{auth}@/{database}?{'&'.join(params)}"
        return f"{scheme}://{auth}@{self.host}:{self.port}/{database}" + (f"?{query}" if query else "")


class Peer:
    """A tool: ``write`` lays out migrations first..last in ``project``; the others are the
    commands (each a whole process) for a workload on ``database``."""

    name: str = ""
    label: str = ""  # with its version, for the table

    def __init__(self, installed: Installed, server: Server, project: Path) -> None:
        self.installed = installed
        self.server = server
        self.project = project

    def write(self, first: int, last: int) -> None:
        raise NotImplementedError

    def apply(self, database: str) -> Commands:
        raise NotImplementedError

    def status(self, database: str) -> Commands:
        raise NotImplementedError

    def rollback(self, database: str, count: int, total: int) -> Commands:
        raise NotImplementedError

    def env(self, database: str) -> dict[str, str]:
        return dict(os.environ)

    def forget(self) -> None:
        """Drop what the tool keeps between runs beside the project, so that the next run is as
        on a fresh clone (W1)."""

    @contextmanager
    def grown(self, count: int) -> Iterator[None]:
        """The project with migration ``count`` + 1 added in place, as whoever adds a file does
        (W3): whatever the tool kept from earlier runs stays; the file goes afterwards."""
        before = {p for p in self.project.rglob("*") if p.is_file()}
        self.write(count + 1, count + 1)
        added = [p for p in self.project.rglob("*") if p.is_file() and p not in before]
        try:
            yield
        finally:
            for path in added:
                path.unlink()


class Poststack(Peer):
    name, label = "poststack", "poststack"

    def write(self, first: int, last: int) -> None:
        write_with_rollbacks(self.project / "migrations", first, last)

    def _cli(self, database: str, *args: str) -> list[str]:
        from bench.common import poststack_argv

        url = self.server.url(database)
        return poststack_argv(*args, "--database-url", url, "--migrations-dir", str(self.project / "migrations"))

    def apply(self, database: str) -> Commands:
        return [self._cli(database, "db", "migrate")]

    def status(self, database: str) -> Commands:
        return [self._cli(database, "db", "migration-status")]

    def rollback(self, database: str, count: int, total: int) -> Commands:
        return [self._cli(database, "db", "rollback", f"{total - count:05d}")]

    def env(self, database: str) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("POSTSTACK_")}

    def forget(self) -> None:
        shutil.rmtree(self.project / ".poststack", ignore_errors=True)  # each file's effects, kept


class Dbmate(Peer):
    name, label = "dbmate", "dbmate 2.36 (Go)"

    def write(self, first: int, last: int) -> None:
        directory = self.project / "db" / "migrations"
        directory.mkdir(parents=True, exist_ok=True)
        for n in range(first, last + 1):
            (directory / f"{stem(n)}.sql").write_text(f"-- migrate:up\n{up_sql(n)}\n-- migrate:down\n{down_sql(n)}")

    def _cli(self, database: str, *args: str) -> list[str]:
        url = self.server.url(database, "postgres", "sslmode=disable")
        # --no-dump-schema: by default dbmate runs pg_dump after every change.
        return [str(self.installed.dbmate), "--url", url, "--no-dump-schema", *args]

    def apply(self, database: str) -> Commands:
        return [self._cli(database, "up")]

    def status(self, database: str) -> Commands:
        return [self._cli(database, "status")]

    def rollback(self, database: str, count: int, total: int) -> Commands:
        return [self._cli(database, "rollback") for _ in range(count)]  # one migration per command


class NodePgMigrate(Peer):
    name, label = "node-pg-migrate", "node-pg-migrate 9"

    def write(self, first: int, last: int) -> None:
        directory = self.project / "migrations"
        directory.mkdir(parents=True, exist_ok=True)
        for n in range(first, last + 1):
            text = f"-- Up Migration\n{up_sql(n)}\n-- Down Migration\n{down_sql(n)}"
            (directory / f"{stem(n)}.sql").write_text(text)

    def env(self, database: str) -> dict[str, str]:
        return {**os.environ, "DATABASE_URL": self.server.url(database, "postgres", "sslmode=disable")}

    def _cli(self, *args: str) -> list[str]:
        return [str(self.installed.node_pg_migrate), *args, "--migrations-dir", "migrations"]

    def apply(self, database: str) -> Commands:
        return [self._cli("up")]

    def status(self, database: str) -> Commands:
        return [self._cli("up", "--dry-run")]  # it has no status command: what up would run

    def rollback(self, database: str, count: int, total: int) -> Commands:
        return [self._cli("down", str(count))]


ALEMBIC_ENV = """\
import os

from alembic import context
from sqlalchemy import create_engine

engine = create_engine(os.environ["BENCH_DATABASE_URL"])
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

ALEMBIC_REVISION = '''\
from alembic import op

revision = "{revision}"
down_revision = {down}


def upgrade():
    op.execute("""{up}""")


def downgrade():
    op.execute("""{down_sql}""")
'''


class Alembic(Peer):
    name, label = "alembic", "alembic 1.20"

    def write(self, first: int, last: int) -> None:
        versions = self.project / "alembic" / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        (self.project / "alembic.ini").write_text("[alembic]\nscript_location = alembic\n")
        (self.project / "alembic" / "env.py").write_text(ALEMBIC_ENV)
        (self.project / "alembic" / "script.py.mako").write_text("")
        for n in range(first, last + 1):
            down = f'"r{n - 1:05d}"' if n > 1 else "None"
            text = ALEMBIC_REVISION.format(revision=f"r{n:05d}", down=down, up=up_sql(n), down_sql=down_sql(n))
            (versions / f"r{n:05d}_table_{n}.py").write_text(text)

    def env(self, database: str) -> dict[str, str]:
        return {**os.environ, "BENCH_DATABASE_URL": self.server.url(database, "postgresql+psycopg2")}

    def _cli(self, *args: str) -> list[str]:
        return [str(self.installed.alembic), "-c", "alembic.ini", *args]

    def apply(self, database: str) -> Commands:
        return [self._cli("upgrade", "head")]

    def status(self, database: str) -> Commands:
        return [self._cli("current")]

    def rollback(self, database: str, count: int, total: int) -> Commands:
        return [self._cli("downgrade", f"-{count}")]


class Yoyo(Peer):
    name, label = "yoyo", "yoyo 9"

    def write(self, first: int, last: int) -> None:
        write_with_rollbacks(self.project / "migrations", first, last)

    def _cli(self, database: str, verb: str, *args: str) -> list[str]:
        url = self.server.url(database)
        return [str(self.installed.yoyo), verb, "--no-config-file", "--database", url, *args, "migrations"]

    def apply(self, database: str) -> Commands:
        return [self._cli(database, "apply", "--batch")]

    def status(self, database: str) -> Commands:
        return [self._cli(database, "list")]

    def rollback(self, database: str, count: int, total: int) -> Commands:
        # --revision: that migration and every one applied after it.
        return [self._cli(database, "rollback", "--batch", "--revision", stem(total - count + 1))]


PEERS: dict[str, Callable[[Installed, Server, Path], Peer]] = {
    peer.name: peer for peer in (Poststack, Dbmate, NodePgMigrate, Alembic, Yoyo)
}
PYTHON = sys.executable
