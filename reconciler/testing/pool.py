"""Where a test's database comes from: cloned while the tests before it run, dropped after it
while the tests after it run.

A ``CREATE DATABASE … TEMPLATE`` is the server creating a file for every fork of every
relation, the catalog's included: tens of milliseconds on a fast disk, hundreds on a slow one
(docs/performance.md). Made ahead on connections of their own, in threads, a test finds its
database ready unless the tests before it took less time than a clone; dropped behind, the
drop costs it nothing. Each pytest process (each xdist worker) has its own, and names its
databases by host, process and start (server.clone_name), so a killed session's are known.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import psycopg2.extensions

from reconciler.testing import templates
from reconciler.testing.server import TestServer, clone_name

AHEAD = 2  # databases made ahead, and connections making them: this machine's two cores' worth


class Clones(Protocol):
    def take(self) -> str: ...
    def give_back(self, name: str) -> None: ...


class ClonesOnDemand:
    """Cloned when asked, dropped when given back, on the session's admin connection: for the
    occasional database (an empty one, for walking the migrations)."""

    def __init__(self, admin: psycopg2.extensions.connection, template: str) -> None:
        self.admin = admin
        self.template = template

    def take(self) -> str:
        name = clone_name()
        templates.clone(self.admin, self.template, name)
        return name

    def give_back(self, name: str) -> None:
        templates.drop(self.admin, name)


class ClonePool:
    """Clones of ``template`` made ``ahead`` of the tests that take them."""

    def __init__(self, server: TestServer, template: str, ahead: int = AHEAD) -> None:
        self.server = server
        self.template = template
        self.ahead = ahead
        self._work = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="poststack-clones")
        self._ready: deque[Future[str]] = deque()
        self._drops: list[Future[None]] = []
        self._local = threading.local()
        self._connections: list[psycopg2.extensions.connection] = []
        self._guard = threading.Lock()

    def take(self) -> str:
        """A clone for a test: made already, or the one being made; the next ones are started."""
        if not self._ready:
            self._ready.append(self._work.submit(self._clone))
        made = self._ready.popleft()
        while len(self._ready) < self.ahead:
            self._ready.append(self._work.submit(self._clone))
        return made.result()

    def give_back(self, name: str) -> None:
        """Dropped behind the test (WITH (FORCE): a connection the test left open is ended)."""
        self._drops.append(self._work.submit(self._drop, name))

    def close(self) -> None:
        """Drop what was made and not taken; wait for the drops; close the connections."""
        for made in self._ready:
            with contextlib.suppress(Exception):  # a clone that failed left nothing to drop
                self.give_back(made.result())
        self._ready.clear()
        for drop in self._drops:
            drop.exception()  # waited for; a drop that failed leaves a database named by this pid
        self._work.shutdown(wait=True)
        for conn in self._connections:
            conn.close()

    def _admin(self) -> psycopg2.extensions.connection:
        conn: psycopg2.extensions.connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self.server.admin()
            self._local.conn = conn
            with self._guard:
                self._connections.append(conn)
        return conn

    def _clone(self) -> str:
        name = clone_name()
        templates.clone(self._admin(), self.template, name)
        return name

    def _drop(self, name: str) -> None:
        templates.drop(self._admin(), name)
